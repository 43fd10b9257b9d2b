package testinfra_test

import (
	"context"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/batchpipe/batchpipe/internal/testinfra"
)

func TestMain(m *testing.M) { testinfra.Main(m) }

func TestNewBucketIsCreatedAndRemoved(t *testing.T) {
	srv := testinfra.MinIOEndpoint(t)
	if again := testinfra.MinIOEndpoint(t); again != srv {
		t.Fatalf("second MinIOEndpoint = %+v, want the same server %+v", again, srv)
	}
	client, err := srv.Client()
	if err != nil {
		t.Fatal(err)
	}
	var name string
	t.Run("create", func(t *testing.T) {
		name = testinfra.NewBucket(t, srv)
		if ok, err := client.BucketExists(context.Background(), name); !ok || err != nil {
			t.Fatalf("BucketExists(%s) = %v, %v", name, ok, err)
		}
	})
	if ok, err := client.BucketExists(context.Background(), name); ok || err != nil {
		t.Fatalf("after the subtest, BucketExists(%s) = %v, %v; want removed", name, ok, err)
	}
}

// A server of one's own survives Kill and Restart on the same endpoint with
// its data, as the fault suite's store outage needs.
func TestMinIOKillAndRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("starts MinIO")
	}
	bin, err := testinfra.MinIOBinary()
	if err != nil {
		testinfra.MinIOUnavailable(t, err)
	}
	// A relative binary path (as the bench's -minio-bin bin/minio) is
	// relative to the working directory, not to the server's directory.
	if wd, err := os.Getwd(); err == nil && filepath.IsAbs(bin) {
		if rel, err := filepath.Rel(wd, bin); err == nil {
			bin = rel
		}
	}
	dir := t.TempDir()
	m, err := testinfra.StartMinIO(testinfra.MinIOOptions{Binary: bin, Dir: dir, AccessKey: "own-user", SecretKey: "own-secret-1234"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Stop)
	if m.AccessKey != "own-user" || m.SecretKey != "own-secret-1234" {
		t.Fatalf("credentials %s/%s, want the options'", m.AccessKey, m.SecretKey)
	}
	bucket := m.CreateBucket(t, "own-bucket")
	if got, want := m.StoreURL(bucket, "p"), "minio://"+m.Endpoint+"/own-bucket/p?secure=false"; got != want {
		t.Errorf("StoreURL = %s, want %s", got, want)
	}
	client, err := m.Client()
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := client.PutObject(ctx, bucket, "k", strings.NewReader("kept"), 4, minio.PutObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := m.Restart(); err == nil {
		t.Fatal("Restart of a running server succeeded")
	}

	endpoint := m.Endpoint
	m.Kill()
	if conn, err := net.DialTimeout("tcp", endpoint, time.Second); err == nil {
		conn.Close()
		t.Fatalf("%s still accepts connections after Kill", endpoint)
	}
	m.Kill() // a second Kill is harmless
	if err := m.Restart(); err != nil {
		t.Fatalf("Restart: %v", err)
	}
	if m.Endpoint != endpoint {
		t.Fatalf("endpoint after Restart %s, want %s", m.Endpoint, endpoint)
	}
	obj, err := client.GetObject(ctx, bucket, "k", minio.GetObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	data, err := io.ReadAll(obj)
	obj.Close()
	if err != nil || string(data) != "kept" {
		t.Fatalf("object after Restart: %q, %v; want %q", data, err, "kept")
	}

	m.Stop()
	m.Stop()
	if conn, err := net.DialTimeout("tcp", endpoint, time.Second); err == nil {
		conn.Close()
		t.Fatalf("%s still accepts connections after Stop", endpoint)
	}
	if _, err := os.Stat(filepath.Join(dir, "data")); err != nil {
		t.Errorf("the data directory of an explicit Dir is gone after Stop: %v", err)
	}
}

// Without a binary there is nothing to start.
func TestStartMinIONeedsABinary(t *testing.T) {
	if _, err := testinfra.StartMinIO(testinfra.MinIOOptions{}); err == nil {
		t.Fatal("StartMinIO without a binary succeeded")
	}
	_, err := testinfra.StartMinIO(testinfra.MinIOOptions{Binary: filepath.Join(t.TempDir(), "no-such-minio")})
	if err == nil || !strings.Contains(err.Error(), "no-such-minio") {
		t.Fatalf("StartMinIO of a missing binary: %v, want an error naming it", err)
	}
}

func TestMinIOFromEnv(t *testing.T) {
	t.Setenv(testinfra.EnvMinIOEndpoint, "")
	if _, ok := testinfra.MinIOFromEnv(); ok {
		t.Fatal("MinIOFromEnv with the variable empty: ok")
	}
	t.Setenv(testinfra.EnvMinIOEndpoint, "http://minio.example:9000/")
	t.Setenv("MINIO_ROOT_USER", "u")
	t.Setenv("MINIO_ROOT_PASSWORD", "")
	s, ok := testinfra.MinIOFromEnv()
	if want := (testinfra.MinIOServer{Endpoint: "minio.example:9000", AccessKey: "minioadmin", SecretKey: "minioadmin"}); !ok || s != want {
		t.Fatalf("MinIOFromEnv = %+v, %v; want %+v", s, ok, want)
	}
	t.Setenv("MINIO_ROOT_PASSWORD", "p")
	if s, _ := testinfra.MinIOFromEnv(); s.AccessKey != "u" || s.SecretKey != "p" {
		t.Fatalf("credentials %s/%s, want u/p", s.AccessKey, s.SecretKey)
	}
	if got := strings.Join(s.RootEnv(), " "); got != "MINIO_ROOT_USER=minioadmin MINIO_ROOT_PASSWORD=minioadmin" {
		t.Errorf("RootEnv = %s", got)
	}
}
