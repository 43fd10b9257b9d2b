package blobstore_test

import (
	"context"
	"strings"
	"testing"

	"github.com/batchpipe/batchpipe/blobstore"
)

// A prefix with an empty segment used to open, write items, and then never
// find them again (finalize retried forever): it is refused at Open.
func TestOpenRefusesEmptyPrefixSegments(t *testing.T) {
	ctx := context.Background()
	for _, u := range []string{"mem://m1//x", "mem://m1/a//b", "mem://m1/a/./b", "mem://m1/../b",
		"s3://bkt//y?endpoint=http://127.0.0.1:1&region=us-east-1", "minio://127.0.0.1:1/bkt//x?secure=false"} {
		b, err := blobstore.Open(ctx, u)
		if err == nil {
			b.Close()
			t.Errorf("Open(%q) accepted a prefix with an empty segment", u)
			continue
		}
		if !strings.Contains(err.Error(), "segment") {
			t.Errorf("Open(%q): %v, want it to name the empty segment", u, err)
		}
	}
	for _, u := range []string{"mem://m2", "mem://m2/a/b", "mem://m2/a/b/"} {
		b, err := blobstore.Open(ctx, u)
		if err != nil {
			t.Errorf("Open(%q): %v", u, err)
			continue
		}
		b.Close()
	}
}
