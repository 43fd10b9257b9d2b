package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// minioServer is the MinIO the minio scenarios use: BATCHPIPE_MINIO_ENDPOINT
// if set (credentials from MINIO_ROOT_USER/MINIO_ROOT_PASSWORD), otherwise
// bin/minio started on a free loopback port with a throwaway data directory.
type minioServer struct {
	endpoint, user, password string
	cmd                      *exec.Cmd
	done                     chan struct{}
}

const (
	benchMinioUser     = "batchpipe"
	benchMinioPassword = "batchpipe-bench-secret"
	benchBucket        = "bench"
)

func startMinio(ctx context.Context, bin, dataDir string) (*minioServer, error) {
	if ep := os.Getenv("BATCHPIPE_MINIO_ENDPOINT"); ep != "" {
		user, pass := os.Getenv("MINIO_ROOT_USER"), os.Getenv("MINIO_ROOT_PASSWORD")
		if user == "" || pass == "" {
			user, pass = "minioadmin", "minioadmin"
		}
		s := &minioServer{endpoint: strings.TrimPrefix(ep, "http://"), user: user, password: pass}
		return s, s.makeBucket(ctx)
	}
	if _, err := os.Stat(bin); err != nil {
		return nil, fmt.Errorf("no MinIO binary at %s (build it with `make minio-bin`, or set BATCHPIPE_MINIO_ENDPOINT): %w", bin, err)
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	console, err := freePort()
	if err != nil {
		return nil, err
	}
	s := &minioServer{endpoint: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), user: benchMinioUser,
		password: benchMinioPassword, done: make(chan struct{})}
	s.cmd = exec.Command(bin, "server", "--quiet", "--address", s.endpoint,
		"--console-address", net.JoinHostPort("127.0.0.1", strconv.Itoa(console)), filepath.Join(dataDir, "data"))
	s.cmd.Env = append(os.Environ(), "MINIO_ROOT_USER="+s.user, "MINIO_ROOT_PASSWORD="+s.password,
		"MINIO_BROWSER=off", "MINIO_UPDATE=off")
	s.cmd.SysProcAttr = deathSignal()
	if err := s.cmd.Start(); err != nil {
		return nil, err
	}
	go func() { s.cmd.Wait(); close(s.done) }()
	if err := s.waitLive(60 * time.Second); err != nil {
		s.stop()
		return nil, err
	}
	return s, s.makeBucket(ctx)
}

func (s *minioServer) waitLive(timeout time.Duration) error {
	hc := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		select {
		case <-s.done:
			return errors.New("minio exited at start")
		default:
		}
		if resp, err := hc.Get("http://" + s.endpoint + "/minio/health/live"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("minio not live on %s within %v", s.endpoint, timeout)
}

func (s *minioServer) makeBucket(ctx context.Context) error {
	c, err := minio.New(s.endpoint, &minio.Options{Creds: credentials.NewStaticV4(s.user, s.password, ""), BucketLookup: minio.BucketLookupPath})
	if err != nil {
		return err
	}
	if ok, err := c.BucketExists(ctx, benchBucket); err == nil && ok {
		return nil
	}
	return c.MakeBucket(ctx, benchBucket, minio.MakeBucketOptions{})
}

// storeURL is the minio:// store URL of a prefix in the bench bucket; the
// credentials go to the environment (inherited by worker processes), never
// into the URL.
func (s *minioServer) storeURL(prefix string) string {
	return fmt.Sprintf("minio://%s/%s/%s?secure=false", s.endpoint, benchBucket, prefix)
}

func (s *minioServer) env() []string {
	return []string{"MINIO_ROOT_USER=" + s.user, "MINIO_ROOT_PASSWORD=" + s.password}
}

func (s *minioServer) stop() {
	if s == nil || s.cmd == nil {
		return
	}
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(5 * time.Second):
		s.cmd.Process.Kill()
		<-s.done
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
