package miniotest_test

import (
	"context"
	"testing"

	"github.com/batchpipe/batchpipe/internal/miniotest"
)

func TestMain(m *testing.M) { miniotest.Main(m) }

func TestNewBucketIsCreatedAndRemoved(t *testing.T) {
	srv := miniotest.Endpoint(t)
	if again := miniotest.Endpoint(t); again != srv {
		t.Fatalf("second Endpoint = %+v, want the same server %+v", again, srv)
	}
	client, err := srv.Client()
	if err != nil {
		t.Fatal(err)
	}
	var name string
	t.Run("create", func(t *testing.T) {
		name = miniotest.NewBucket(t, srv)
		if ok, err := client.BucketExists(context.Background(), name); !ok || err != nil {
			t.Fatalf("BucketExists(%s) = %v, %v", name, ok, err)
		}
	})
	if ok, err := client.BucketExists(context.Background(), name); ok || err != nil {
		t.Fatalf("after the subtest, BucketExists(%s) = %v, %v; want removed", name, ok, err)
	}
}
