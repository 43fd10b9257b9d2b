package bench

import (
	"context"
	"fmt"
	"os"

	"github.com/batchpipe/batchpipe/internal/testinfra"
)

// minioServer is the MinIO the minio scenarios use: BATCHPIPE_MINIO_ENDPOINT
// if set (credentials from MINIO_ROOT_USER/MINIO_ROOT_PASSWORD), otherwise
// bin/minio started on a free loopback port with its data under the bench's
// work directory.
type minioServer struct {
	testinfra.MinIOServer
	proc *testinfra.MinIOProcess // nil for BATCHPIPE_MINIO_ENDPOINT's
}

const (
	benchMinioUser     = "batchpipe"
	benchMinioPassword = "batchpipe-bench-secret"
	benchBucket        = "bench"
)

func startMinio(ctx context.Context, bin, dataDir string) (*minioServer, error) {
	if srv, ok := testinfra.MinIOFromEnv(); ok {
		s := &minioServer{MinIOServer: srv}
		return s, s.makeBucket(ctx)
	}
	if _, err := os.Stat(bin); err != nil {
		return nil, fmt.Errorf("no MinIO binary at %s (build it with `make minio-bin`, or set %s): %w", bin, testinfra.EnvMinIOEndpoint, err)
	}
	proc, err := testinfra.StartMinIO(testinfra.MinIOOptions{Binary: bin, Dir: dataDir, AccessKey: benchMinioUser, SecretKey: benchMinioPassword})
	if err != nil {
		return nil, err
	}
	s := &minioServer{MinIOServer: proc.MinIOServer, proc: proc}
	return s, s.makeBucket(ctx)
}

// makeBucket creates the bench bucket unless it exists (a running server of
// BATCHPIPE_MINIO_ENDPOINT may have it from an earlier run).
func (s *minioServer) makeBucket(ctx context.Context) error {
	c, err := s.Client()
	if err != nil {
		return err
	}
	if ok, err := c.BucketExists(ctx, benchBucket); err == nil && ok {
		return nil
	}
	return s.MakeBucket(ctx, benchBucket)
}

// storeURL is the minio:// store URL of a prefix in the bench bucket; the
// credentials go to the environment (inherited by worker processes), never
// into the URL.
func (s *minioServer) storeURL(prefix string) string { return s.StoreURL(benchBucket, prefix) }

func (s *minioServer) env() []string { return s.RootEnv() }

func (s *minioServer) stop() {
	if s == nil || s.proc == nil {
		return
	}
	s.proc.Stop()
}
