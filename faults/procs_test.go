package faults_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.temporal.io/sdk/client"
	sdklog "go.temporal.io/sdk/log"

	"github.com/batchpipe/batchpipe/internal/testinfra"
)

// proc is a process started by a case.
type proc struct {
	name           string
	cmd            *exec.Cmd
	stdout, stderr *testinfra.Buffer
	done           chan struct{}
	started        time.Time
	ended          time.Time
}

// env builds a child's environment: this process's, without any Temporal,
// store or batchpipe settings, plus kv ("KEY=value").
func env(kv ...string) []string {
	var e []string
	for _, s := range os.Environ() {
		k, _, _ := strings.Cut(s, "=")
		if strings.HasPrefix(k, "TEMPORAL_") || strings.HasPrefix(k, "MINIO_") || strings.HasPrefix(k, "AWS_") || strings.HasPrefix(k, "BATCHPIPE_") || k == "CI" {
			continue
		}
		e = append(e, s)
	}
	return append(e, kv...)
}

// minioEnv is the store credentials every MinIO of the suite accepts.
func minioEnv() []string {
	return []string{"MINIO_ROOT_USER=" + minioUser, "MINIO_ROOT_PASSWORD=" + minioSecret}
}

// temporalEnv points a process at a Temporal frontend.
func temporalEnv(addr string) []string { return []string{"TEMPORAL_ADDRESS=" + addr} }

// start runs bin in dir. The process is killed when the test ends (and by
// the kernel if this process dies).
func start(t testing.TB, name, dir string, environ []string, bin string, args ...string) *proc {
	t.Helper()
	p, err := startProc(name, dir, environ, bin, args...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.stop(20 * time.Second)
		if t.Failed() {
			t.Logf("%s: exit %s\n--- stdout:\n%s\n--- stderr:\n%s", p.name, p.exitString(), testinfra.Tail(p.stdout.String(), 3000), testinfra.Tail(p.stderr.String(), 6000))
		}
	})
	return p
}

func startProc(name, dir string, environ []string, bin string, args ...string) (*proc, error) {
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Env = environ
	p := &proc{name: name, cmd: cmd, stdout: &testinfra.Buffer{Limit: 256 << 20}, stderr: &testinfra.Buffer{Limit: 256 << 20}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.stdout, p.stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	p.started = time.Now()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	go func() {
		cmd.Wait()
		p.ended = time.Now()
		close(p.done)
	}()
	return p, nil
}

func (p *proc) running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

// kill sends SIGKILL and waits for the process to be gone.
func (p *proc) kill() {
	p.cmd.Process.Kill()
	<-p.done
}

// stop sends SIGTERM, waits up to grace, then kills.
func (p *proc) stop(grace time.Duration) {
	if !p.running() {
		return
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		p.kill()
	}
}

// wait waits for the process to exit, up to timeout (then kills it), and
// returns its exit code (-1 when killed).
func (p *proc) wait(timeout time.Duration) (code int, timedOut bool) {
	select {
	case <-p.done:
	case <-time.After(timeout):
		p.kill()
		timedOut = true
	}
	return p.cmd.ProcessState.ExitCode(), timedOut
}

func (p *proc) exitString() string {
	if p.running() {
		return "still running"
	}
	return p.cmd.ProcessState.String()
}

// maxRSS is the peak resident memory of an exited process, in bytes.
func (p *proc) maxRSS() int64 {
	if ru, ok := p.cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		return ru.Maxrss * 1024
	}
	return 0
}

// waitOutput waits until the process's stderr contains s.
func (p *proc) waitOutput(s string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for !strings.Contains(p.stderr.String(), s) {
		if !p.running() {
			return fmt.Errorf("%s exited (%s) before printing %q\n%s", p.name, p.exitString(), s, testinfra.Tail(p.stderr.String(), 4000))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not print %q within %v\n%s", p.name, s, timeout, testinfra.Tail(p.stderr.String(), 4000))
		}
		time.Sleep(50 * time.Millisecond)
	}
	return nil
}

// run is a finished process.
type run struct {
	code           int
	stdout, stderr string
	dur            time.Duration
	maxRSS         int64
	timedOut       bool
}

func (r run) String() string {
	return fmt.Sprintf("exit %d after %.1fs (timed out: %v)\n--- stdout:\n%s\n--- stderr:\n%s", r.code, r.dur.Seconds(), r.timedOut, testinfra.Tail(r.stdout, 3000), testinfra.Tail(r.stderr, 3000))
}

// result waits for p and returns what it did.
func (p *proc) result(timeout time.Duration) run {
	code, to := p.wait(timeout)
	return run{code: code, stdout: p.stdout.String(), stderr: p.stderr.String(), dur: p.ended.Sub(p.started), maxRSS: p.maxRSS(), timedOut: to}
}

// submit runs the submit binary to its end (at most timeout).
func submit(t testing.TB, dir string, environ []string, timeout time.Duration, args ...string) run {
	t.Helper()
	p := start(t, "submit "+strings.Join(args, " "), dir, environ, submitBin, args...)
	r := p.result(timeout)
	t.Logf("submit %s: exit %d in %.1fs", strings.Join(args, " "), r.code, r.dur.Seconds())
	return r
}

// ---- Temporal servers ----

// freeBase picks a frontend port whose devserver.PortSpan (8) consecutive
// ports are free, below the ephemeral port range (as devserver does).
func freeBase() (int, error) { return testinfra.FreePortSpan(8) }

// devArgs are the arguments of `worker --dev` on port and state directory.
func devArgs(port int, stateDir string, extra ...string) []string {
	return append([]string{"--dev", "--no-ui", "--dev-port", strconv.Itoa(port), "--dev-dir", stateDir}, extra...)
}

// startDev runs `worker --dev` (with --dev-server-only when serverOnly) and
// waits until it serves.
func startDev(t testing.TB, name, dir string, port int, stateDir string, serverOnly bool, environ []string, extra ...string) *proc {
	t.Helper()
	args := devArgs(port, stateDir, extra...)
	ready := "worker polling"
	if serverOnly {
		args = append(args, "--dev-server-only")
		ready = "embedded Temporal server on"
	}
	p := start(t, name, dir, environ, workerBin, args...)
	if err := p.waitOutput(ready, 2*time.Minute); err != nil {
		t.Fatal(err)
	}
	return p
}

// startWorker runs a plain `worker` on a Temporal frontend and task queue.
func startWorker(t testing.TB, name, dir, addr, queue string, extraEnv []string, extra ...string) *proc {
	t.Helper()
	environ := env(append(append(temporalEnv(addr), minioEnv()...), extraEnv...)...)
	p := start(t, name, dir, environ, workerBin, append([]string{"--task-queue", queue}, extra...)...)
	if err := p.waitOutput("worker polling", time.Minute); err != nil {
		t.Fatal(err)
	}
	return p
}

// shared is the Temporal server most cases share (each on its own task
// queue): `worker --dev --dev-server-only`, a separate server process.
var shared struct {
	once   sync.Once
	addr   string
	proc   *proc
	client client.Client
	err    error
}

func sharedServer(t testing.TB) (addr string, c client.Client) {
	t.Helper()
	shared.once.Do(func() {
		dir := filepath.Join(suiteDir, "shared-server")
		if shared.err = os.MkdirAll(dir, 0o755); shared.err != nil {
			return
		}
		for range 3 {
			var port int
			if port, shared.err = freeBase(); shared.err != nil {
				return
			}
			shared.proc, shared.err = startProc("shared server", dir, env(), workerBin, append(devArgs(port, filepath.Join(dir, "state")), "--dev-server-only")...)
			if shared.err != nil {
				return
			}
			if shared.err = shared.proc.waitOutput("embedded Temporal server on", 2*time.Minute); shared.err == nil {
				shared.addr = "127.0.0.1:" + strconv.Itoa(port)
				break
			}
			shared.proc.kill()
		}
		if shared.err != nil {
			return
		}
		shared.client, shared.err = dial(shared.addr)
	})
	if shared.err != nil {
		t.Fatalf("shared Temporal server: %v", shared.err)
	}
	return shared.addr, shared.client
}

// sharedServerLog is what the shared server printed so far.
func sharedServerLog() string {
	if shared.proc == nil {
		return ""
	}
	return shared.proc.stdout.String() + shared.proc.stderr.String()
}

var quietLog = slog.New(slog.NewTextHandler(io.Discard, nil))

func dial(addr string) (client.Client, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return client.DialContext(ctx, client.Options{HostPort: addr, Logger: sdklog.NewStructuredLogger(quietLog)})
}

func stopShared() {
	if shared.client != nil {
		shared.client.Close()
	}
	if shared.proc != nil {
		shared.proc.stop(30 * time.Second)
	}
	sharedMinIO.mu.Lock()
	if sharedMinIO.m != nil {
		sharedMinIO.m.Kill()
	}
	sharedMinIO.mu.Unlock()
}

// ---- MinIO ----

// needMinIO returns the MinIO binary, skipping the case when there is none
// (failing it under CI=true).
func needMinIO(t testing.TB) string {
	t.Helper()
	b, err := testinfra.MinIOBinary()
	if err != nil {
		testinfra.MinIOUnavailable(t, err)
	}
	return b
}

// launchMinIO starts a MinIO with the suite's credentials in dir (data in
// dir/data), on free ports it keeps across Kill and Restart.
func launchMinIO(bin, dir string) (*testinfra.MinIOProcess, error) {
	return testinfra.StartMinIO(testinfra.MinIOOptions{
		Binary: bin, Dir: dir, AccessKey: minioUser, SecretKey: minioSecret,
		Env: env(), StartTimeout: 90 * time.Second,
	})
}

// newMinIO starts a MinIO of the case's own; it is killed when the case ends.
func newMinIO(t testing.TB) *testinfra.MinIOProcess {
	t.Helper()
	m, err := launchMinIO(needMinIO(t), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Kill)
	return m
}

// sharedMinIO serves the cases that only need a store.
var sharedMinIO struct {
	mu  sync.Mutex
	m   *testinfra.MinIOProcess
	err error
}

func theMinIO(t testing.TB) *testinfra.MinIOProcess {
	t.Helper()
	bin := needMinIO(t)
	sharedMinIO.mu.Lock()
	defer sharedMinIO.mu.Unlock()
	if sharedMinIO.m == nil && sharedMinIO.err == nil {
		sharedMinIO.m, sharedMinIO.err = launchMinIO(bin, filepath.Join(suiteDir, "shared-minio"))
	}
	if sharedMinIO.err != nil {
		t.Fatalf("MinIO: %v", sharedMinIO.err)
	}
	return sharedMinIO.m
}
