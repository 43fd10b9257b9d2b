// Package miniotest gives tests a real MinIO server.
//
// Endpoint returns the server of BATCHPIPE_MINIO_ENDPOINT when that is set
// (credentials from MINIO_ROOT_USER/MINIO_ROOT_PASSWORD); otherwise it starts
// the repository's bin/minio (built by `make minio-bin` or
// `deploy/minio/run.sh --build-only`) once per test process, on a free
// loopback port with a throwaway data directory. Test packages that use it
// stop that server from TestMain:
//
//	func TestMain(m *testing.M) { miniotest.Main(m) }
//
// When MinIO is unavailable, tests are skipped, except under CI=true where
// they fail: CI never silently skips the MinIO-backed tests. With -short
// they are always skipped.
package miniotest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// Server is a reachable MinIO server.
type Server struct {
	Endpoint  string // host:port, plain HTTP, e.g. "127.0.0.1:9000"
	AccessKey string
	SecretKey string
}

// Environment variables read by Endpoint.
const (
	// EnvEndpoint names an already running MinIO (host:port) to use instead
	// of starting one.
	EnvEndpoint = "BATCHPIPE_MINIO_ENDPOINT"
	// EnvBinary overrides the MinIO binary to start (default <repo>/bin/minio,
	// then minio on PATH).
	EnvBinary = "BATCHPIPE_MINIO_BIN"
)

// Credentials of the server this package starts.
const (
	testAccessKey = "batchpipe"
	testSecretKey = "batchpipe-test-secret"
)

var (
	once     sync.Once
	srv      Server
	startErr error

	procMu  sync.Mutex
	proc    *exec.Cmd
	exited  chan struct{}
	dataDir string
)

// Endpoint returns a running MinIO server, starting one on first use. It
// skips the test (fails it when CI=true) if MinIO is unavailable.
func Endpoint(tb testing.TB) Server {
	tb.Helper()
	if testing.Short() {
		tb.Skip("MinIO-backed test skipped in -short mode")
	}
	if ep := os.Getenv(EnvEndpoint); ep != "" {
		ep = strings.TrimSuffix(strings.TrimPrefix(strings.TrimPrefix(ep, "http://"), "https://"), "/")
		user, pass := os.Getenv("MINIO_ROOT_USER"), os.Getenv("MINIO_ROOT_PASSWORD")
		if user == "" || pass == "" {
			user, pass = "minioadmin", "minioadmin"
		}
		return Server{Endpoint: ep, AccessKey: user, SecretKey: pass}
	}
	once.Do(func() { srv, startErr = start() })
	if startErr != nil {
		unavailable(tb, startErr)
	}
	return srv
}

func unavailable(tb testing.TB, err error) {
	tb.Helper()
	if ci, _ := strconv.ParseBool(os.Getenv("CI")); ci {
		tb.Fatalf("MinIO is required when CI=true but is unavailable: %v\n"+
			"build it with `make minio-bin` (or deploy/minio/run.sh --build-only), or set %s", err, EnvEndpoint)
	}
	tb.Skipf("MinIO unavailable (%v); to run these tests build it with `make minio-bin` "+
		"(or deploy/minio/run.sh --build-only), or point %s at a running server", err, EnvEndpoint)
}

// Main runs the tests of a package and then stops the MinIO server this
// package may have started. Call it from TestMain.
func Main(m *testing.M) {
	code := m.Run()
	Stop()
	os.Exit(code)
}

// Stop stops the MinIO server started by Endpoint, if any, and removes its
// data. It is safe to call more than once.
func Stop() {
	procMu.Lock()
	defer procMu.Unlock()
	if proc != nil && proc.Process != nil {
		proc.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			proc.Process.Kill()
			<-exited
		}
		proc = nil
	}
	if dataDir != "" {
		os.RemoveAll(dataDir)
		dataDir = ""
	}
}

// RepoRoot returns the directory of the batchpipe module's go.mod, found by
// walking up from the working directory.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if data, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil &&
			bytes.Contains(data, []byte("module github.com/batchpipe/batchpipe\n")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod of github.com/batchpipe/batchpipe above the working directory")
		}
		dir = parent
	}
}

func binary() (string, error) {
	if b := os.Getenv(EnvBinary); b != "" {
		return b, nil
	}
	if root, err := RepoRoot(); err == nil {
		b := filepath.Join(root, "bin", "minio")
		if _, err := os.Stat(b); err == nil {
			return b, nil
		}
	}
	if b, err := exec.LookPath("minio"); err == nil {
		return b, nil
	}
	return "", errors.New("no MinIO binary in bin/minio or on PATH")
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func start() (Server, error) {
	bin, err := binary()
	if err != nil {
		return Server{}, err
	}
	var lastErr error
	for range 3 { // a port picked free may be taken before MinIO binds it
		s, err := startOnce(bin)
		if err == nil {
			return s, nil
		}
		lastErr = err
	}
	return Server{}, lastErr
}

func startOnce(bin string) (Server, error) {
	port, err := freePort()
	if err != nil {
		return Server{}, err
	}
	consolePort, err := freePort()
	if err != nil {
		return Server{}, err
	}
	dir, err := os.MkdirTemp("", "batchpipe-miniotest-")
	if err != nil {
		return Server{}, err
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	cmd := exec.Command(bin, "server", "--quiet",
		"--address", addr,
		"--console-address", net.JoinHostPort("127.0.0.1", strconv.Itoa(consolePort)),
		filepath.Join(dir, "data"))
	cmd.Env = append(os.Environ(),
		"MINIO_ROOT_USER="+testAccessKey,
		"MINIO_ROOT_PASSWORD="+testSecretKey,
		"MINIO_BROWSER=off",
		"MINIO_UPDATE=off",
	)
	var out lockedBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	setDeathSignal(cmd)
	if err := cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return Server{}, fmt.Errorf("starting %s: %w", bin, err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()

	procMu.Lock()
	proc, exited, dataDir = cmd, done, dir
	procMu.Unlock()

	if err := waitLive(addr, done, 60*time.Second); err != nil {
		Stop()
		return Server{}, fmt.Errorf("%s did not start: %v\n%s", bin, err, out.tail(2000))
	}
	return Server{Endpoint: addr, AccessKey: testAccessKey, SecretKey: testSecretKey}, nil
}

// waitLive polls MinIO's liveness endpoint until it answers 200.
func waitLive(addr string, exited <-chan struct{}, timeout time.Duration) error {
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return errors.New("the process exited")
		default:
		}
		resp, err := client.Get("http://" + addr + "/minio/health/live")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("no answer on %s within %v", addr, timeout)
}

// Client returns a minio-go client for s.
func (s Server) Client() (*minio.Client, error) {
	return minio.New(s.Endpoint, &minio.Options{
		Creds:        credentials.NewStaticV4(s.AccessKey, s.SecretKey, ""),
		BucketLookup: minio.BucketLookupPath,
	})
}

// NewBucket creates a fresh, uniquely named bucket on s and removes it, with
// everything in it, when the test ends. It returns the bucket's name.
func NewBucket(tb testing.TB, s Server) string {
	tb.Helper()
	client, err := s.Client()
	if err != nil {
		tb.Fatalf("miniotest: %v", err)
	}
	var rnd [6]byte
	rand.Read(rnd[:])
	name := "bptest-" + hex.EncodeToString(rnd[:])
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := client.MakeBucket(ctx, name, minio.MakeBucketOptions{}); err != nil {
		tb.Fatalf("miniotest: creating bucket %s on %s: %v", name, s.Endpoint, err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := client.RemoveBucketWithOptions(ctx, name, minio.RemoveBucketOptions{ForceDelete: true}); err != nil {
			tb.Logf("miniotest: removing bucket %s: %v", name, err)
		}
	})
	return name
}

// lockedBuffer collects a child's output for error messages.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.buf.Len() < 1<<20 {
		b.buf.Write(p)
	}
	return len(p), nil
}

func (b *lockedBuffer) tail(n int) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.buf.String()
	if len(s) > n {
		s = "…" + s[len(s)-n:]
	}
	return s
}
