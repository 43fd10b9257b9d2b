package blobstore_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/batchpipe/batchpipe/blobstore"
	"github.com/batchpipe/batchpipe/blobstore/blobstoretest"
	"github.com/batchpipe/batchpipe/internal/testinfra"
)

// s3URL names bucket on the MinIO server srv through the s3 driver.
func s3URL(srv testinfra.MinIOServer, bucket string) string {
	return fmt.Sprintf("s3://%s?endpoint=http://%s&path_style=true&region=us-east-1", bucket, srv.Endpoint)
}

func TestS3Conformance(t *testing.T) {
	srv := testinfra.MinIOEndpoint(t)
	useMinIOCreds(t, srv)
	blobstoretest.Run(t, blobstoretest.Harness{
		NewURL: func(t *testing.T) string { return s3URL(srv, testinfra.NewBucket(t, srv)) },
		MissingBucketURL: func(t *testing.T) string {
			return s3URL(srv, "batchpipe-no-such-bucket")
		},
	})
}

func TestS3WrongCredentials(t *testing.T) {
	srv := testinfra.MinIOEndpoint(t)
	bucket := testinfra.NewBucket(t, srv)
	for _, c := range []struct{ name, id, secret string }{
		{"UnknownKey", "AKIANOBODYHERE", "not-the-password-1"},
		{"WrongSecret", srv.AccessKey, "not-the-password-2"},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Setenv("AWS_ACCESS_KEY_ID", c.id)
			t.Setenv("AWS_SECRET_ACCESS_KEY", c.secret)
			t.Setenv("AWS_SESSION_TOKEN", "")
			t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
			checkAccessDenied(t, wrongCredsErrors(t, s3URL(srv, bucket)), c.secret)
		})
	}
}

// Credentials never belong in store URLs: Redact drops them, the drivers
// refuse them, and neither the error nor the bucket's URL repeats them.
func TestCredentialsInURLAreRedacted(t *testing.T) {
	const secret = "s3cr3t-Value"
	for _, raw := range []string{
		"s3://AKIAEXAMPLE:" + secret + "@bucket/prefix?endpoint=http://127.0.0.1:9000&path_style=true",
		"s3://bucket/prefix?endpoint=http://127.0.0.1:9000&secret_access_key=" + secret,
		"minio://admin:" + secret + "@127.0.0.1:9000/bucket/prefix?secure=false",
		"minio://127.0.0.1:9000/bucket?secure=false&password=" + secret,
	} {
		red := blobstore.Redact(raw)
		if strings.Contains(red, secret) || strings.Contains(red, "AKIAEXAMPLE") || strings.Contains(red, "admin:") {
			t.Errorf("Redact(%q) = %q still holds the credentials", raw, red)
		}
		b, err := blobstore.Open(context.Background(), raw)
		if err == nil {
			if strings.Contains(b.URL(), secret) {
				t.Errorf("URL() = %q holds the secret", b.URL())
			}
			b.Close()
			t.Errorf("Open(%s) accepted credentials in the URL", red)
			continue
		}
		if strings.Contains(err.Error(), secret) {
			t.Errorf("Open error reveals the secret: %v", err)
		}
	}
}

func BenchmarkS3Put(b *testing.B) {
	srv := testinfra.MinIOEndpoint(b)
	useMinIOCreds(b, srv)
	benchPut(b, s3URL(srv, testinfra.NewBucket(b, srv)))
}

func BenchmarkS3Get(b *testing.B) {
	srv := testinfra.MinIOEndpoint(b)
	useMinIOCreds(b, srv)
	benchGet(b, s3URL(srv, testinfra.NewBucket(b, srv)))
}
