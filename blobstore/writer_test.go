package blobstore_test

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/batchpipe/batchpipe/blobstore"
)

// refusingBucket refuses every Put at once, as a read-only store does.
type refusingBucket struct{ blobstore.Bucket }

var errReadOnly = errors.New("access denied: the store is read-only")

func (refusingBucket) Put(context.Context, string, io.Reader) error { return errReadOnly }

// A Writer whose Put gave up reports Put's reason to the writer, not
// "io: read/write on closed pipe".
func TestWriterReportsWhyPutStopped(t *testing.T) {
	w := blobstore.NewWriter(context.Background(), refusingBucket{}, "k")
	var err error
	for range 100 {
		if _, err = w.Write(make([]byte, 1<<16)); err != nil {
			break
		}
	}
	if !errors.Is(err, errReadOnly) || strings.Contains(err.Error(), "closed pipe") {
		t.Fatalf("Write: %v, want the store's refusal alone", err)
	}
	if err := w.Close(); !errors.Is(err, errReadOnly) {
		t.Fatalf("Close: %v, want the store's refusal", err)
	}
}
