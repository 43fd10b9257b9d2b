package testinfra

import (
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
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// A real MinIO for tests.
//
// MinIOEndpoint returns the server of BATCHPIPE_MINIO_ENDPOINT when that is
// set (credentials from MINIO_ROOT_USER/MINIO_ROOT_PASSWORD); otherwise it
// starts the repository's bin/minio (built by `make minio-bin` or
// `deploy/minio/run.sh --build-only`) once per test process, on free
// loopback ports with a throwaway data directory. Test packages that use it
// stop that server from TestMain with Main (or StopMinIO).
//
// When MinIO is unavailable, tests are skipped, except under CI=true where
// they fail: CI never silently skips the MinIO-backed tests. With -short
// they are always skipped.
//
// StartMinIO starts a server of the caller's own, which Kill and Restart
// take down and bring back on the same ports and data directory (the fault
// suite's store outage); the bench program uses it too.

// Environment variables read by the MinIO helpers.
const (
	// EnvMinIOEndpoint names an already running MinIO (host:port) to use
	// instead of starting one.
	EnvMinIOEndpoint = "BATCHPIPE_MINIO_ENDPOINT"
	// EnvMinIOBinary overrides the MinIO binary to start (default
	// <repo>/bin/minio, then minio on PATH).
	EnvMinIOBinary = "BATCHPIPE_MINIO_BIN"
)

// Credentials of the servers StartMinIO starts unless told others.
const (
	minioAccessKey = "batchpipe"
	minioSecretKey = "batchpipe-test-secret"
)

// MinIOServer is a reachable MinIO server.
type MinIOServer struct {
	Endpoint  string // host:port, plain HTTP, e.g. "127.0.0.1:9000"
	AccessKey string
	SecretKey string
}

// Client returns a minio-go client for s.
func (s MinIOServer) Client() (*minio.Client, error) {
	return minio.New(s.Endpoint, &minio.Options{
		Creds:        credentials.NewStaticV4(s.AccessKey, s.SecretKey, ""),
		BucketLookup: minio.BucketLookupPath,
	})
}

// MakeBucket creates the bucket name on s.
func (s MinIOServer) MakeBucket(ctx context.Context, name string) error {
	client, err := s.Client()
	if err != nil {
		return err
	}
	return client.MakeBucket(ctx, name, minio.MakeBucketOptions{})
}

// CreateBucket creates the bucket name on s, failing tb if it cannot (the
// bucket existing already included), and returns name. The bucket is left
// in place when the test ends; NewBucket makes one that is removed.
func (s MinIOServer) CreateBucket(tb testing.TB, name string) string {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.MakeBucket(ctx, name); err != nil {
		tb.Fatalf("creating bucket %s on %s: %v", name, s.Endpoint, err)
	}
	return name
}

// StoreURL is the minio:// store URL of prefix in bucket on s. It carries
// no credentials: the minio:// driver reads them from the environment
// (see RootEnv).
func (s MinIOServer) StoreURL(bucket, prefix string) string {
	return fmt.Sprintf("minio://%s/%s/%s?secure=false", s.Endpoint, bucket, prefix)
}

// RootEnv is s's credentials as the environment variables the minio://
// driver (and MinIO itself) read.
func (s MinIOServer) RootEnv() []string {
	return []string{"MINIO_ROOT_USER=" + s.AccessKey, "MINIO_ROOT_PASSWORD=" + s.SecretKey}
}

// MinIOFromEnv returns the server BATCHPIPE_MINIO_ENDPOINT names, if it is
// set, with the credentials of MINIO_ROOT_USER and MINIO_ROOT_PASSWORD
// (minioadmin/minioadmin unless both are set).
func MinIOFromEnv() (MinIOServer, bool) {
	ep := os.Getenv(EnvMinIOEndpoint)
	if ep == "" {
		return MinIOServer{}, false
	}
	ep = strings.TrimSuffix(strings.TrimPrefix(strings.TrimPrefix(ep, "http://"), "https://"), "/")
	user, pass := os.Getenv("MINIO_ROOT_USER"), os.Getenv("MINIO_ROOT_PASSWORD")
	if user == "" || pass == "" {
		user, pass = "minioadmin", "minioadmin"
	}
	return MinIOServer{Endpoint: ep, AccessKey: user, SecretKey: pass}, true
}

// MinIOBinary returns the MinIO binary to start: BATCHPIPE_MINIO_BIN if
// set, else the repository's bin/minio, else minio on PATH.
func MinIOBinary() (string, error) {
	if b := os.Getenv(EnvMinIOBinary); b != "" {
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

// MinIOUnavailable ends tb because MinIO cannot be had (err says why): it
// skips the test, except under CI=true, where it fails it.
func MinIOUnavailable(tb testing.TB, err error) {
	tb.Helper()
	if ci, _ := strconv.ParseBool(os.Getenv("CI")); ci {
		tb.Fatalf("MinIO is required when CI=true but is unavailable: %v\n"+
			"build it with `make minio-bin` (or deploy/minio/run.sh --build-only), or set %s", err, EnvMinIOEndpoint)
	}
	tb.Skipf("MinIO unavailable (%v); to run these tests build it with `make minio-bin` "+
		"(or deploy/minio/run.sh --build-only), or point %s at a running server", err, EnvMinIOEndpoint)
}

// shared is the server MinIOEndpoint starts, once per test process.
var shared struct {
	once sync.Once
	mu   sync.Mutex // guards m against StopMinIO
	m    *MinIOProcess
	err  error
}

// MinIOEndpoint returns a running MinIO server, starting one on first use.
// It skips the test (fails it when CI=true) if MinIO is unavailable.
func MinIOEndpoint(tb testing.TB) MinIOServer {
	tb.Helper()
	if testing.Short() {
		tb.Skip("MinIO-backed test skipped in -short mode")
	}
	if s, ok := MinIOFromEnv(); ok {
		return s
	}
	shared.once.Do(func() {
		bin, err := MinIOBinary()
		if err != nil {
			shared.err = err
			return
		}
		m, err := StartMinIO(MinIOOptions{Binary: bin})
		shared.mu.Lock()
		shared.m, shared.err = m, err
		shared.mu.Unlock()
	})
	if shared.err != nil {
		MinIOUnavailable(tb, shared.err)
	}
	return shared.m.MinIOServer
}

// StopMinIO stops the MinIO server started by MinIOEndpoint, if any, and
// removes its data. It is safe to call more than once.
func StopMinIO() {
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.m != nil {
		shared.m.Stop()
	}
}

// NewBucket creates a fresh, uniquely named bucket on s and removes it, with
// everything in it, when the test ends. It returns the bucket's name.
func NewBucket(tb testing.TB, s MinIOServer) string {
	tb.Helper()
	client, err := s.Client()
	if err != nil {
		tb.Fatalf("testinfra: %v", err)
	}
	var rnd [6]byte
	rand.Read(rnd[:])
	name := "bptest-" + hex.EncodeToString(rnd[:])
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := client.MakeBucket(ctx, name, minio.MakeBucketOptions{}); err != nil {
		tb.Fatalf("testinfra: creating bucket %s on %s: %v", name, s.Endpoint, err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := client.RemoveBucketWithOptions(ctx, name, minio.RemoveBucketOptions{ForceDelete: true}); err != nil {
			tb.Logf("testinfra: removing bucket %s: %v", name, err)
		}
	})
	return name
}

// MinIOOptions configures StartMinIO.
type MinIOOptions struct {
	// Binary is the MinIO binary (see MinIOBinary). Required.
	Binary string
	// Dir is the server's directory: its data is in Dir/data and the
	// process runs in Dir, which is created if missing and kept. An empty
	// Dir is a fresh temporary directory that Stop removes.
	Dir string
	// AccessKey and SecretKey are the root credentials; defaults
	// "batchpipe" and "batchpipe-test-secret".
	AccessKey, SecretKey string
	// Env is the process's environment, to which the credentials and the
	// settings that keep MinIO quiet are added; nil means os.Environ().
	Env []string
	// StartTimeout bounds each start (until the server answers its liveness
	// check); default 60 s.
	StartTimeout time.Duration
}

// MinIOProcess is a MinIO server process started by StartMinIO, on ports and
// a data directory of its own that it keeps across Kill and Restart.
type MinIOProcess struct {
	MinIOServer
	opts        MinIOOptions
	consoleAddr string
	removeDir   bool // Dir is a temporary directory of StartMinIO's

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
	out  *Buffer
}

// StartMinIO starts MinIO on free loopback ports and waits until it is
// live. Stop (or Kill) it when done; the process also gets SIGKILL from the
// kernel if this one dies (on Linux).
func StartMinIO(opts MinIOOptions) (*MinIOProcess, error) {
	if opts.Binary == "" {
		return nil, errors.New("testinfra: StartMinIO: no MinIO binary")
	}
	if filepath.Base(opts.Binary) != opts.Binary {
		// A path, not a name to look up on PATH: make it absolute, as
		// the process runs in Dir.
		bin, err := filepath.Abs(opts.Binary)
		if err != nil {
			return nil, err
		}
		opts.Binary = bin
	}
	if opts.AccessKey == "" || opts.SecretKey == "" {
		opts.AccessKey, opts.SecretKey = minioAccessKey, minioSecretKey
	}
	if opts.Env == nil {
		opts.Env = os.Environ()
	}
	if opts.StartTimeout <= 0 {
		opts.StartTimeout = 60 * time.Second
	}
	removeDir := false
	if opts.Dir == "" {
		dir, err := os.MkdirTemp("", "batchpipe-minio-")
		if err != nil {
			return nil, err
		}
		opts.Dir, removeDir = dir, true
	} else if dir, err := filepath.Abs(opts.Dir); err != nil {
		return nil, err
	} else {
		opts.Dir = dir
	}
	var lastErr error
	for range 3 { // a port picked free may be taken before MinIO binds it
		ports, err := freePorts(2)
		if err != nil {
			lastErr = err
			break
		}
		m := &MinIOProcess{
			MinIOServer: MinIOServer{
				Endpoint:  net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0])),
				AccessKey: opts.AccessKey,
				SecretKey: opts.SecretKey,
			},
			opts:        opts,
			consoleAddr: net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[1])),
			removeDir:   removeDir,
		}
		if lastErr = m.Restart(); lastErr == nil {
			return m, nil
		}
	}
	if removeDir {
		os.RemoveAll(opts.Dir)
	}
	return nil, lastErr
}

// running reports whether the process is up; m.mu must be held.
func (m *MinIOProcess) running() bool {
	if m.done == nil {
		return false
	}
	select {
	case <-m.done:
		return false
	default:
		return true
	}
}

// Restart starts MinIO again, after Kill or Stop, on the same ports and
// data directory, and waits until it is live (StartMinIO's first start is
// the same). It fails while the server is running.
func (m *MinIOProcess) Restart() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.running() {
		return fmt.Errorf("testinfra: MinIO on %s is running: Kill or Stop it before Restart", m.Endpoint)
	}
	data := filepath.Join(m.opts.Dir, "data")
	if err := os.MkdirAll(data, 0o755); err != nil {
		return err
	}
	bin := m.opts.Binary
	cmd := exec.Command(bin, "server", "--quiet", "--address", m.Endpoint, "--console-address", m.consoleAddr, data)
	cmd.Dir = m.opts.Dir
	cmd.Env = slices.Concat(m.opts.Env, m.RootEnv(), []string{"MINIO_BROWSER=off", "MINIO_UPDATE=off"})
	out := &Buffer{Limit: 1 << 20}
	cmd.Stdout, cmd.Stderr = out, out
	setDeathSignal(cmd)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %s: %w", bin, err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	m.cmd, m.done, m.out = cmd, done, out

	if err := waitLive(m.Endpoint, done, m.opts.StartTimeout); err != nil {
		m.kill()
		return fmt.Errorf("%s on %s did not start: %v\n%s", bin, m.Endpoint, err, Tail(out.String(), 2000))
	}
	return nil
}

// Kill kills MinIO with SIGKILL, as a crash would, and waits until it is
// gone; its data directory stays for Restart.
func (m *MinIOProcess) Kill() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.kill()
}

// kill is Kill with m.mu held.
func (m *MinIOProcess) kill() {
	if m.running() {
		m.cmd.Process.Kill()
		<-m.done
	}
}

// Stop stops MinIO (SIGTERM, then SIGKILL after 5 s) and removes its
// directory if StartMinIO made it. It is safe to call more than once.
func (m *MinIOProcess) Stop() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.running() {
		m.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-m.done:
		case <-time.After(5 * time.Second):
			m.kill()
		}
	}
	if m.removeDir {
		os.RemoveAll(m.opts.Dir)
	}
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
