package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/batchpipe/batchpipe/blobstore"
	"github.com/batchpipe/batchpipe/internal/testinfra"
	"github.com/batchpipe/batchpipe/manifests"
	"github.com/batchpipe/batchpipe/zjsonl"
)

func TestMain(m *testing.M) { testinfra.Main(m) }

// TestReadManifest runs the example against a small batch written to a
// local store.
func TestReadManifest(t *testing.T) {
	dir := t.TempDir()
	runExample(t, "file://"+dir, "file://"+dir+"/batches/demo/manifest.json")
}

// TestReadManifestS3 runs it against the real MinIO through an s3:// URL,
// as a downstream job reading results from S3 would.
func TestReadManifestS3(t *testing.T) {
	srv := testinfra.MinIOEndpoint(t)
	bucket := testinfra.NewBucket(t, srv)
	t.Setenv("AWS_ACCESS_KEY_ID", srv.AccessKey)
	t.Setenv("AWS_SECRET_ACCESS_KEY", srv.SecretKey)
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	q := "?endpoint=http://" + srv.Endpoint + "&path_style=true&region=us-east-1"
	runExample(t, "s3://"+bucket+"/nightly"+q, "s3://"+bucket+"/nightly/batches/demo/manifest.json"+q)
}

// runExample writes a small batch into storeURL and runs the example on
// manifestURL.
func runExample(t *testing.T, storeURL, manifestURL string) {
	ctx := context.Background()
	b, err := blobstore.Open(ctx, storeURL)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	m := manifests.Manifest{Format: manifests.Format, BatchID: "demo", Status: manifests.StatusSucceeded,
		Store: storeURL, Input: manifests.Input{Items: 4, Shards: 2, ShardSize: 2}, Counts: manifests.Counts{Items: 4, Succeeded: 4}}
	for shard := range 2 {
		key := manifests.ResultKey("demo", shard)
		bw := blobstore.NewWriter(ctx, b, key)
		zw := zjsonl.NewWriter(bw)
		for i := shard * 2; i < shard*2+2; i++ {
			zw.Write(manifests.ResultLine{Index: int64(i), Status: manifests.ItemSucceeded, Output: json.RawMessage(fmt.Sprint(i * i)), Attempts: 1})
		}
		if err := zw.Close(); err != nil {
			t.Fatal(err)
		}
		if err := bw.Close(); err != nil {
			t.Fatal(err)
		}
		m.Results = append(m.Results, manifests.Result{Key: blobstore.Prefix(b) + key, FirstIndex: int64(shard * 2), Items: 2, Succeeded: 2, Size: bw.Size(), SHA256: bw.SHA256()})
	}
	data, _ := json.Marshal(m)
	if err := b.Put(ctx, manifests.ManifestKey("demo"), strings.NewReader(string(data))); err != nil {
		t.Fatal(err)
	}

	out, err := os.Create(filepath.Join(t.TempDir(), "stdout"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	stdout, args := os.Stdout, os.Args
	os.Stdout, os.Args = out, []string{"read-manifest", manifestURL}
	defer func() { os.Stdout, os.Args = stdout, args }()
	main()

	got, err := os.ReadFile(out.Name())
	if err != nil {
		t.Fatal(err)
	}
	want := `{"index":0,"status":"succeeded","output":0,"error":null,"attempts":1,"duration_ms":0}
{"index":1,"status":"succeeded","output":1,"error":null,"attempts":1,"duration_ms":0}
{"index":2,"status":"succeeded","output":4,"error":null,"attempts":1,"duration_ms":0}
{"index":3,"status":"succeeded","output":9,"error":null,"attempts":1,"duration_ms":0}
`
	if string(got) != want {
		t.Fatalf("printed\n%s\nwant\n%s", got, want)
	}
}
