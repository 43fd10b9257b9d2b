package blobstore_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/batchpipe/batchpipe/blobstore"
	"github.com/batchpipe/batchpipe/blobstore/blobstoretest"
	"github.com/batchpipe/batchpipe/internal/testinfra"
)

// TestMain stops the MinIO server the s3 and minio tests may have started.
func TestMain(m *testing.M) { testinfra.Main(m) }

// useMinIOCreds points both drivers' credential lookups at srv. It uses
// os.Setenv rather than t.Setenv so the suite's subtests may run in parallel;
// the values are the same for every test of the process.
func useMinIOCreds(t testing.TB, srv testinfra.MinIOServer) {
	t.Helper()
	for k, v := range map[string]string{
		"MINIO_ROOT_USER":       srv.AccessKey,
		"MINIO_ROOT_PASSWORD":   srv.SecretKey,
		"AWS_ACCESS_KEY_ID":     srv.AccessKey,
		"AWS_SECRET_ACCESS_KEY": srv.SecretKey,
		"AWS_SESSION_TOKEN":     "",
		// Never wait for an EC2 metadata service that is not there.
		"AWS_EC2_METADATA_DISABLED": "true",
	} {
		if err := os.Setenv(k, v); err != nil {
			t.Fatal(err)
		}
	}
}

func minioURL(srv testinfra.MinIOServer, bucket string) string {
	return fmt.Sprintf("minio://%s/%s?secure=false", srv.Endpoint, bucket)
}

func TestMinIOConformance(t *testing.T) {
	srv := testinfra.MinIOEndpoint(t)
	useMinIOCreds(t, srv)
	blobstoretest.Run(t, blobstoretest.Harness{
		NewURL: func(t *testing.T) string { return minioURL(srv, testinfra.NewBucket(t, srv)) },
		MissingBucketURL: func(t *testing.T) string {
			return minioURL(srv, "batchpipe-no-such-bucket")
		},
	})
}

// wrongCredsErrors opens rawURL and runs one of each kind of operation,
// returning their errors.
func wrongCredsErrors(t *testing.T, rawURL string) map[string]error {
	t.Helper()
	ctx := context.Background()
	b, err := blobstore.Open(ctx, rawURL)
	if err != nil {
		return map[string]error{"open": err}
	}
	defer b.Close()
	errs := map[string]error{}
	errs["put"] = b.Put(ctx, "k", strings.NewReader("x"))
	_, errs["stat"] = b.Stat(ctx, "k")
	if r, err := b.NewReader(ctx, "k"); err == nil {
		r.Close()
	} else {
		errs["get"] = err
	}
	for _, err := range b.List(ctx, "") {
		errs["list"] = err
		break
	}
	errs["delete"] = b.Delete(ctx, "k")
	return errs
}

func checkAccessDenied(t *testing.T, errs map[string]error, secret string) {
	t.Helper()
	for _, op := range []string{"put", "stat", "get", "list", "delete"} {
		err := errs[op]
		if !errors.Is(err, blobstore.ErrAccessDenied) {
			t.Errorf("%s with wrong credentials = %v, want ErrAccessDenied", op, err)
			continue
		}
		if strings.Contains(err.Error(), secret) {
			t.Errorf("%s error reveals the secret key: %v", op, err)
		}
	}
}

func TestMinIOWrongCredentials(t *testing.T) {
	srv := testinfra.MinIOEndpoint(t)
	bucket := testinfra.NewBucket(t, srv)
	t.Run("UnknownUser", func(t *testing.T) {
		t.Setenv("MINIO_ROOT_USER", "nobody-here")
		t.Setenv("MINIO_ROOT_PASSWORD", "not-the-password-1")
		checkAccessDenied(t, wrongCredsErrors(t, minioURL(srv, bucket)), "not-the-password-1")
	})
	t.Run("WrongSecret", func(t *testing.T) {
		t.Setenv("MINIO_ROOT_USER", srv.AccessKey)
		t.Setenv("MINIO_ROOT_PASSWORD", "not-the-password-2")
		checkAccessDenied(t, wrongCredsErrors(t, minioURL(srv, bucket)), "not-the-password-2")
	})
	t.Run("AWSVariablesAreUsed", func(t *testing.T) {
		t.Setenv("MINIO_ROOT_USER", "")
		t.Setenv("MINIO_ROOT_PASSWORD", "")
		t.Setenv("AWS_ACCESS_KEY_ID", srv.AccessKey)
		t.Setenv("AWS_SECRET_ACCESS_KEY", "not-the-password-3")
		checkAccessDenied(t, wrongCredsErrors(t, minioURL(srv, bucket)), "not-the-password-3")
	})
}

// TestMinIOMultipartAbortLeavesNoUpload checks that a failed streamed write
// aborts its multipart upload instead of leaving parts behind on the server.
func TestMinIOMultipartAbortLeavesNoUpload(t *testing.T) {
	srv := testinfra.MinIOEndpoint(t)
	useMinIOCreds(t, srv)
	bucket := testinfra.NewBucket(t, srv)
	for _, u := range []string{
		minioURL(srv, bucket),
		fmt.Sprintf("s3://%s/?endpoint=http://%s&path_style=true&region=us-east-1", bucket, srv.Endpoint),
	} {
		ctx := context.Background()
		b, err := blobstore.Open(ctx, u)
		if err != nil {
			t.Fatal(err)
		}
		// 40 MiB of body, failing after 30 MiB: several parts are uploaded first.
		err = b.Put(ctx, "aborted", io.MultiReader(io.LimitReader(zeros{}, 30<<20), errReader{}))
		if err == nil {
			t.Fatalf("%s: Put with a failing reader succeeded", u)
		}
		// And a context cancelled after 30 MiB.
		cctx, cancel := context.WithCancel(ctx)
		err = b.Put(cctx, "cancelled", io.MultiReader(io.LimitReader(zeros{}, 30<<20), cancelOnRead{cancel}, io.LimitReader(zeros{}, 10<<20)))
		cancel()
		if err == nil {
			t.Fatalf("%s: Put with a cancelled context succeeded", u)
		}
		b.Close()
	}
	client, err := srv.Client()
	if err != nil {
		t.Fatal(err)
	}
	for up := range client.ListIncompleteUploads(context.Background(), bucket, "", true) {
		if up.Err != nil {
			t.Fatal(up.Err)
		}
		t.Errorf("multipart upload of %q left behind", up.Key)
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("broken reader") }

type cancelOnRead struct{ cancel func() }

func (c cancelOnRead) Read([]byte) (int, error) { c.cancel(); return 0, io.EOF }

// Benchmarks: go test ./blobstore -run '^$' -bench 'MinIO|S3' -benchtime 3s

var benchSizes = []struct {
	name string
	size int
}{{"4KiB", 4 << 10}, {"1MiB", 1 << 20}}

// benchWriters is how many goroutines the parallel variants run.
const benchWriters = 16

func openBench(b *testing.B, rawURL string) blobstore.Bucket {
	b.Helper()
	bkt, err := blobstore.Open(context.Background(), rawURL)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { bkt.Close() })
	return bkt
}

func setParallel(b *testing.B) {
	b.SetParallelism(max(1, (benchWriters+runtime.GOMAXPROCS(0)-1)/runtime.GOMAXPROCS(0)))
}

// benchPut writes objects of each size; keys cycle over 64 names so disk use
// stays bounded.
func benchPut(b *testing.B, rawURL string) {
	for _, sz := range benchSizes {
		data := bytes.Repeat([]byte("x"), sz.size)
		b.Run(sz.name, func(b *testing.B) {
			bkt := openBench(b, rawURL)
			ctx := context.Background()
			b.SetBytes(int64(sz.size))
			for i := 0; b.Loop(); i++ {
				if err := bkt.Put(ctx, fmt.Sprintf("bench/put-%d", i%64), bytes.NewReader(data)); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(sz.name+"/parallel16", func(b *testing.B) {
			bkt := openBench(b, rawURL)
			ctx := context.Background()
			b.SetBytes(int64(sz.size))
			setParallel(b)
			var n atomic.Int64
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					i := n.Add(1)
					if err := bkt.Put(ctx, fmt.Sprintf("bench/pput-%d", i%64), bytes.NewReader(data)); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

// benchGet reads a whole object of each size.
func benchGet(b *testing.B, rawURL string) {
	for _, sz := range benchSizes {
		data := bytes.Repeat([]byte("y"), sz.size)
		key := "bench/get-" + sz.name
		read := func(bkt blobstore.Bucket) error {
			r, err := bkt.NewReader(context.Background(), key)
			if err != nil {
				return err
			}
			defer r.Close()
			n, err := io.Copy(io.Discard, r)
			if err == nil && n != int64(sz.size) {
				err = fmt.Errorf("read %d bytes, want %d", n, sz.size)
			}
			return err
		}
		b.Run(sz.name, func(b *testing.B) {
			bkt := openBench(b, rawURL)
			if err := bkt.Put(context.Background(), key, bytes.NewReader(data)); err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(sz.size))
			for b.Loop() {
				if err := read(bkt); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(sz.name+"/parallel16", func(b *testing.B) {
			bkt := openBench(b, rawURL)
			if err := bkt.Put(context.Background(), key, bytes.NewReader(data)); err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(sz.size))
			setParallel(b)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := read(bkt); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

func BenchmarkMinIOPut(b *testing.B) {
	srv := testinfra.MinIOEndpoint(b)
	useMinIOCreds(b, srv)
	benchPut(b, minioURL(srv, testinfra.NewBucket(b, srv)))
}

func BenchmarkMinIOGet(b *testing.B) {
	srv := testinfra.MinIOEndpoint(b)
	useMinIOCreds(b, srv)
	benchGet(b, minioURL(srv, testinfra.NewBucket(b, srv)))
}
