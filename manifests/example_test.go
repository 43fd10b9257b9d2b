package manifests_test

import (
	"context"
	"errors"
	"fmt"
	"log"

	"github.com/batchpipe/batchpipe/blobstore"
	"github.com/batchpipe/batchpipe/manifests"
)

// Reading a finished batch's results straight from S3 (credentials come from
// the AWS default chain). Results streams one result object at a time, so
// this works the same for a thousand items or a hundred million.
func ExampleOpenURL() {
	ctx := context.Background()
	batch, err := manifests.OpenURL(ctx, "s3://my-bucket/batchpipe/batches/nightly-20261125T020000Z/manifest.json?region=eu-west-1")
	if err != nil {
		log.Fatal(err)
	}
	defer batch.Close()
	fmt.Println(batch.Manifest.Status, batch.Manifest.Counts.Items, "items")
	for line, err := range batch.Results(ctx) {
		if err != nil {
			log.Fatal(err)
		}
		if line.Status == manifests.ItemSucceeded {
			fmt.Printf("%d: %s\n", line.Index, line.Output)
		}
	}
}

// Opening a batch by id in a store, checking it end to end, and listing
// what failed (each failure carries its input, ready to resubmit).
func ExampleOpen() {
	ctx := context.Background()
	store, err := blobstore.Open(ctx, "minio://127.0.0.1:9000/batches-bucket/team-a?secure=false")
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()
	batch, err := manifests.Open(ctx, store, "nightly-20261125T020000Z")
	if errors.Is(err, blobstore.ErrNotFound) {
		log.Fatal(err) // unknown batch, or not finished yet
	} else if err != nil {
		log.Fatal(err)
	}
	var bad *manifests.VerifyError
	if err := batch.Verify(ctx); errors.As(err, &bad) {
		log.Fatalf("corrupt batch: %s is bad: %s", bad.Key, bad.Problem)
	} else if err != nil {
		log.Fatal(err)
	}
	for f, err := range batch.Failures(ctx) {
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("item %d failed (%s): %s; input %s\n", f.Index, f.Error.Type, f.Error.Message, f.Input)
	}
}
