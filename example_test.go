package batchpipe_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"strings"

	"github.com/batchpipe/batchpipe"
	"github.com/batchpipe/batchpipe/embedded"
)

// A batch run end to end in-process: an embedded Temporal server, a worker
// and a local store. With a Temporal service, batchpipe.Dial takes the place
// of embedded.Open and the rest stays the same.
func Example() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "batchpipe-example-")
	defer os.RemoveAll(dir)
	input := filepath.Join(dir, "items.jsonl")
	os.WriteFile(input, []byte(strings.Repeat(`{"arg1":"a","arg2":"b"}`+"\n", 5)), 0o644)

	c, err := embedded.Open(ctx, embedded.Options{Dir: dir})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	b, err := c.Submit(ctx, batchpipe.Request{Input: input, BatchID: "example-1", Processor: "echo", ShardSize: 2})
	if err != nil {
		log.Fatal(err)
	}
	res, err := b.Wait(ctx, func(p batchpipe.Progress) { /* p.Done of p.Items */ })
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(res.Manifest.Status, res.Manifest.Counts.Succeeded, "items in", len(res.Manifest.Results), "result objects")
	for line, err := range res.Results(ctx) {
		if err != nil {
			log.Fatal(err)
		}
		if line.Index == 0 {
			fmt.Println(line.Index, string(line.Output))
		}
	}
	// Output:
	// succeeded 5 items in 3 result objects
	// 0 {"arg1":"a","arg2":"b"}
}

// Following a batch that was started elsewhere, by id.
func ExampleClient_Batch() {
	ctx := context.Background()
	c, err := batchpipe.Dial(ctx, batchpipe.Config{Store: "s3://bucket/prefix"}) // Temporal from TEMPORAL_ADDRESS
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	b, err := c.Batch(ctx, "nightly-20261201T020000Z")
	if err != nil {
		log.Fatal(err) // errors.Is(err, batchpipe.ErrNotFound) for an unknown id
	}
	st, err := b.Status(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(st.Status, st.Done, "of", st.Items)
}

// Every batch of a store, with the running ones' progress.
func ExampleClient_List() {
	ctx := context.Background()
	c, err := batchpipe.Dial(ctx, batchpipe.Config{Store: "s3://bucket/prefix"})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	for st, err := range c.List(ctx) {
		if err != nil {
			log.Print(err) // batchpipe.ErrRunningNotListed: the store's batches were listed
			continue
		}
		fmt.Println(st.BatchID, st.Status)
	}
}
