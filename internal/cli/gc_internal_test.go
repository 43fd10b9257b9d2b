package cli

import (
	"context"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/batchpipe/batchpipe/blobstore"
)

// TestGCTempPrefix: the temp files gc collects are named as the file
// store names the files it is writing (blobstore/file.go's tmpPrefix): a
// Put held open shows its temp file, and its name starts with
// fileTmpPrefix.
func TestGCTempPrefix(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ctx := context.Background()
	b, err := blobstore.Open(ctx, "file://"+dir)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() { done <- b.Put(ctx, "k", pr) }()
	pw.Write([]byte("half"))
	var names []string
	for deadline := time.Now().Add(10 * time.Second); len(names) == 0 && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		entries, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			names = append(names, e.Name())
		}
	}
	pw.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if len(names) != 1 || !strings.HasPrefix(names[0], fileTmpPrefix) {
		t.Errorf("a Put in progress shows %v in the store's directory, want one file named %s*", names, fileTmpPrefix)
	}
}
