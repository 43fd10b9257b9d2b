package blobstore_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/batchpipe/batchpipe/blobstore"
	"github.com/batchpipe/batchpipe/blobstore/blobstoretest"
)

func TestFileConformance(t *testing.T) {
	blobstoretest.Run(t, blobstoretest.Harness{
		NewURL: func(t *testing.T) string { return "file://" + t.TempDir() },
		WithPrefix: func(t *testing.T, base, prefix string) string {
			dir := filepath.Join(strings.TrimPrefix(base, "file://"), prefix)
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			return "file://" + dir
		},
		MissingBucketURL: func(t *testing.T) string { return "file://" + t.TempDir() + "/missing" },
	})
}

func TestMemConformance(t *testing.T) {
	blobstoretest.Run(t, blobstoretest.Harness{
		NewURL:   func(t *testing.T) string { return "mem://" + strings.ReplaceAll(t.Name(), "/", "_") },
		InMemory: true,
	})
}

// The file driver never leaves temporary files behind a failed write, and
// never shows them while a write is under way.
func TestFileNoTempLeftovers(t *testing.T) {
	dir := t.TempDir()
	b, err := blobstore.Open(context.Background(), "file://"+dir)
	if err != nil {
		t.Fatal(err)
	}
	r := &errAfter{n: 1000}
	if err := b.Put(context.Background(), "x/y", r); err == nil {
		t.Fatal("Put with a failing reader succeeded")
	}
	var names []string
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if !d.IsDir() {
			names = append(names, p)
		}
		return nil
	})
	if len(names) != 0 {
		t.Fatalf("files left after a failed write: %v", names)
	}
}

type errAfter struct{ n int }

func (e *errAfter) Read(p []byte) (int, error) {
	if e.n <= 0 {
		return 0, errors.New("boom")
	}
	k := min(len(p), e.n)
	e.n -= k
	return k, nil
}

func TestFileURLMustBeAbsolute(t *testing.T) {
	for _, u := range []string{"file://relative/dir", "file:rel", "file://"} {
		if _, err := blobstore.Open(context.Background(), u); err == nil {
			t.Errorf("Open(%q) succeeded, want an error", u)
		}
	}
}

func TestOpenUnknownScheme(t *testing.T) {
	_, err := blobstore.Open(context.Background(), "gs://bucket/x")
	if err == nil || !strings.Contains(err.Error(), `unknown scheme "gs"`) || !strings.Contains(err.Error(), "file") {
		t.Fatalf("Open(gs://) = %v; want an error naming the scheme and the known ones", err)
	}
}

func TestRedact(t *testing.T) {
	got := blobstore.Redact("s3://AKIAXXX:supersecret@bucket/p?region=us-east-1&secret_key=abc&X-Amz-Signature=zz")
	for _, secret := range []string{"supersecret", "AKIAXXX", "abc", "zz"} {
		if strings.Contains(got, secret) {
			t.Errorf("Redact left %q in %q", secret, got)
		}
	}
	if !strings.Contains(got, "region=us-east-1") || !strings.HasPrefix(got, "s3://bucket/p") {
		t.Errorf("Redact dropped too much: %q", got)
	}
}

func TestPrefix(t *testing.T) {
	b, err := blobstore.Open(context.Background(), "mem://prefix-test/a/b")
	if err != nil {
		t.Fatal(err)
	}
	if got := blobstore.Prefix(b); got != "a/b/" {
		t.Fatalf("Prefix = %q, want a/b/", got)
	}
}

func TestWriter(t *testing.T) {
	ctx := context.Background()
	b, err := blobstore.Open(ctx, "mem://writer-test")
	if err != nil {
		t.Fatal(err)
	}
	w := blobstore.NewWriter(ctx, b, "obj")
	w.Write([]byte("hello "))
	w.Write([]byte("world"))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if got, _ := blobstore.ReadAll(ctx, b, "obj"); string(got) != "hello world" {
		t.Fatalf("stored %q", got)
	}
	if w.Size() != 11 || w.SHA256() != "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9" {
		t.Fatalf("size %d sha %s", w.Size(), w.SHA256())
	}
	a := blobstore.NewWriter(ctx, b, "aborted")
	a.Write([]byte("partial"))
	a.Abort(errors.New("stop"))
	if ok, _ := blobstore.Exists(ctx, b, "aborted"); ok {
		t.Fatal("an aborted write left an object")
	}
}

func BenchmarkFilePut(b *testing.B) { benchPut(b, "file://"+b.TempDir()) }

func BenchmarkFileGet(b *testing.B) { benchGet(b, "file://"+b.TempDir()) }

func TestSplitObjectURL(t *testing.T) {
	for _, c := range []struct{ in, store, key string }{
		{"file:///data/in/inputs.jsonl", "file:///data/in", "inputs.jsonl"},
		{"file:///inputs.jsonl", "file:///", "inputs.jsonl"},
		{"s3://bkt/nightly/in.jsonl.zst?region=eu-west-1", "s3://bkt?region=eu-west-1", "nightly/in.jsonl.zst"},
		{"minio://127.0.0.1:9000/bkt/a/b.csv?secure=false", "minio://127.0.0.1:9000/bkt?secure=false", "a/b.csv"},
		{"mem://x/in.jsonl", "mem://x", "in.jsonl"},
	} {
		store, key, err := blobstore.SplitObjectURL(c.in)
		if err != nil || store != c.store || key != c.key {
			t.Errorf("SplitObjectURL(%q) = %q, %q, %v; want %q, %q", c.in, store, key, err, c.store, c.key)
		}
	}
	for _, bad := range []string{"s3://bkt", "minio://h:1/bkt", "file:///dir/", "s3://bkt/../x"} {
		if _, _, err := blobstore.SplitObjectURL(bad); err == nil {
			t.Errorf("SplitObjectURL(%q) succeeded", bad)
		}
	}
}

func TestInstrument(t *testing.T) {
	ctx := context.Background()
	inner, _ := blobstore.Open(ctx, "mem://instrument/pre")
	ops := map[string]int64{}
	var failed int
	b := blobstore.Instrument(inner, func(op string, n int64, err error) {
		ops[op] += n + 1
		if err != nil {
			failed++
		}
	})
	b.Put(ctx, "k", strings.NewReader("hello"))
	data, _ := blobstore.ReadAll(ctx, b, "k")
	b.Stat(ctx, "missing")
	for range b.List(ctx, "") {
	}
	b.Delete(ctx, "k")
	if string(data) != "hello" || ops["put"] != 6 || ops["get"] != 6 || ops["stat"] != 1 || ops["list"] != 1 || ops["delete"] != 1 || failed != 1 {
		t.Fatalf("observed %v, %d failures", ops, failed)
	}
	if blobstore.Prefix(b) != "pre/" {
		t.Fatalf("Prefix through the wrapper = %q", blobstore.Prefix(b))
	}
}

type failingReader struct{}

func (failingReader) Read([]byte) (int, error) { return 0, errors.New("input went bad") }

// A failed first write into a new directory leaves no empty directories
// behind (a bad input used to leave batches/<id>/input/<dir>/).
func TestFilePutFailureLeavesNoDirectories(t *testing.T) {
	root := t.TempDir()
	b, err := blobstore.Open(context.Background(), "file://"+root)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := b.Put(context.Background(), "batches/x/input/s-1/000000.jsonl.zst", failingReader{}); err == nil {
		t.Fatal("Put of a failing reader succeeded")
	}
	entries, _ := os.ReadDir(root)
	if len(entries) != 0 {
		t.Fatalf("left %d entries in the store root (%s…)", len(entries), entries[0].Name())
	}
}
