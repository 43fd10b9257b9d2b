package pipeline_test

import (
	"bytes"
	"context"
	"fmt"
	"testing"

	"github.com/batchpipe/batchpipe/blobstore"
	"github.com/batchpipe/batchpipe/inputs"
	"github.com/batchpipe/batchpipe/pipeline"
)

// BenchmarkStage is what `submit` does before a batch starts: read,
// validate, hash and compress 1,000,000 JSONL items into input shards of a
// file store (ns/op is per item).
//
//	go test ./pipeline -run '^$' -bench 'Stage$' -benchtime 3x
func BenchmarkStage(b *testing.B) {
	const items = 1_000_000
	var in bytes.Buffer
	for i := range items {
		fmt.Fprintf(&in, `{"id":%d,"name":"item %d","text":"the quick brown fox jumps over the lazy dog"}`+"\n", i, i)
	}
	ctx := context.Background()
	bucket, err := blobstore.Open(ctx, "file://"+b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(in.Len()) / items)
	b.ResetTimer()
	for n := range b.N {
		r, err := inputs.NewReader("in.jsonl", bytes.NewReader(in.Bytes()), inputs.Options{})
		if err != nil {
			b.Fatal(err)
		}
		st, err := pipeline.Stage(ctx, bucket, fmt.Sprintf("bench-%d", n), "s", "in.jsonl", r, 100_000, nil)
		if err != nil || st.Items != items {
			b.Fatalf("staged %d items: %v", st.Items, err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*items), "ns/item")
}
