package devserver

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/client"
	sdklog "go.temporal.io/sdk/log"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"
)

// greetActivity and greetWorkflow are the trivial workload of these tests.
func greetActivity(ctx context.Context, name string) (string, error) {
	return "hello, " + name + " from " + activity.GetInfo(ctx).ActivityType.Name, nil
}

func greetWorkflow(ctx workflow.Context, name string) (string, error) {
	ctx = workflow.WithActivityOptions(ctx, workflow.ActivityOptions{StartToCloseTimeout: 10 * time.Second})
	var out string
	err := workflow.ExecuteActivity(ctx, greetActivity, name).Get(ctx, &out)
	return out, err
}

const wantGreeting = "hello, %s from greetActivity"

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(newTWriter(t), &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// tWriter sends log output to t.Log, so that it shows only for failures
// and -v, until the test ends: background goroutines of SDK workers may
// still log then, and t.Log would panic.
type tWriter struct {
	t    *testing.T
	mu   sync.Mutex
	done bool
}

func newTWriter(t *testing.T) *tWriter {
	w := &tWriter{t: t}
	t.Cleanup(func() {
		w.mu.Lock()
		w.done = true
		w.mu.Unlock()
	})
	return w
}

func (w *tWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

func startServer(t *testing.T, opts Options) *Server {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = testLogger(t)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	begin := time.Now()
	s, err := Start(ctx, opts)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { _ = s.Stop() })
	t.Logf("server on %s (namespace %s) ready in %v", s.FrontendAddr(), s.Namespace(), time.Since(begin).Round(time.Millisecond))
	return s
}

// runner is an SDK client and a worker serving greetWorkflow on one task queue.
type runner struct {
	c     client.Client
	w     worker.Worker
	tq    string
	close func()
}

func newRunner(t *testing.T, s *Server) *runner {
	t.Helper()
	c, err := client.Dial(client.Options{
		HostPort:  s.FrontendAddr(),
		Namespace: s.Namespace(),
		Logger:    sdklog.NewStructuredLogger(testLogger(t)),
	})
	if err != nil {
		t.Fatalf("dial %s: %v", s.FrontendAddr(), err)
	}
	tq := "devserver-test-" + t.Name()
	w := worker.New(c, tq, worker.Options{})
	w.RegisterWorkflow(greetWorkflow)
	w.RegisterActivity(greetActivity)
	if err := w.Start(); err != nil {
		c.Close()
		t.Fatalf("start worker: %v", err)
	}
	r := &runner{c: c, w: w, tq: tq}
	r.close = sync.OnceFunc(func() {
		w.Stop()
		c.Close()
	})
	t.Cleanup(r.close) // runs before the server's cleanup
	return r
}

// greet runs greetWorkflow to completion and checks its result.
func (r *runner) greet(t *testing.T, id, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	run, err := r.c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: id, TaskQueue: r.tq}, greetWorkflow, name)
	if err != nil {
		t.Fatalf("start workflow %s: %v", id, err)
	}
	var got string
	if err := run.Get(ctx, &got); err != nil {
		t.Fatalf("workflow %s: %v", id, err)
	}
	if want := strings.Replace(wantGreeting, "%s", name, 1); got != want {
		t.Fatalf("workflow %s returned %q, want %q", id, got, want)
	}
}

func stopServer(t *testing.T, s *Server) {
	t.Helper()
	if err := s.Stop(); err != nil {
		t.Errorf("Stop: %v", err)
	}
}

// TestPersistentRestart runs a workflow on a server with a state directory,
// restarts the server on the same directory and checks that it comes back
// on the same address with its state, and runs new work at once.
func TestPersistentRestart(t *testing.T) {
	dir := t.TempDir()

	s := startServer(t, Options{Dir: dir})
	addr := s.FrontendAddr()
	r := newRunner(t, s)
	r.greet(t, "before-restart", "first")
	r.close()
	stopServer(t, s)

	if _, err := os.Stat(filepath.Join(dir, DatabaseFile)); err != nil {
		t.Fatalf("database file: %v", err)
	}
	remembered, err := readPorts(filepath.Join(dir, PortsFile))
	if err != nil || remembered == nil {
		t.Fatalf("ports file: %v %v", remembered, err)
	}
	if got := net.JoinHostPort(DefaultHost, strconv.Itoa(remembered.Frontend)); got != addr {
		t.Fatalf("remembered frontend %s, server was on %s", got, addr)
	}

	begin := time.Now()
	s = startServer(t, Options{Dir: dir})
	defer stopServer(t, s)
	if got := s.FrontendAddr(); got != addr {
		t.Fatalf("after restart the frontend is on %s, before it was on %s", got, addr)
	}
	r = newRunner(t, s)
	defer r.close()
	r.greet(t, "after-restart", "second")
	t.Logf("restart: Start to first completed workflow took %v", time.Since(begin).Round(time.Millisecond))

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	desc, err := r.c.DescribeWorkflowExecution(ctx, "before-restart", "")
	if err != nil {
		t.Fatalf("describe workflow from before the restart: %v", err)
	}
	if st := desc.GetWorkflowExecutionInfo().GetStatus(); st != enumspb.WORKFLOW_EXECUTION_STATUS_COMPLETED {
		t.Fatalf("workflow from before the restart has status %v, want completed", st)
	}
	var got string
	if err := r.c.GetWorkflow(ctx, "before-restart", "").Get(ctx, &got); err != nil {
		t.Fatalf("result of workflow from before the restart: %v", err)
	}
	if want := strings.Replace(wantGreeting, "%s", "first", 1); got != want {
		t.Fatalf("workflow from before the restart returned %q after it, want %q", got, want)
	}
}

// TestLockedDir checks that a second server on a state directory in use is
// refused with a clear error, and that Stop releases the directory.
func TestLockedDir(t *testing.T) {
	dir := t.TempDir()
	s := startServer(t, Options{Dir: dir})

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s2, err := Start(ctx, Options{Dir: dir, Logger: testLogger(t)})
	if err == nil {
		_ = s2.Stop()
		stopServer(t, s)
		t.Fatal("second Start on a locked state directory succeeded")
	}
	if !errors.Is(err, ErrStateDirInUse) {
		t.Errorf("error %v is not ErrStateDirInUse", err)
	}
	want := "state directory " + dir + " is in use by another batchpipe process (pid " + strconv.Itoa(os.Getpid()) + ")"
	if err.Error() != want {
		t.Errorf("error %q, want %q", err, want)
	}

	// The refused Start must not have disturbed the running server.
	r := newRunner(t, s)
	r.greet(t, "still-running", "locked")
	r.close()

	stopServer(t, s)
	l, err := acquireDirLock(dir)
	if err != nil {
		t.Fatalf("lock after Stop: %v", err)
	}
	l.release()
}

// TestInMemory runs a workflow on a server without a state directory.
func TestInMemory(t *testing.T) {
	s := startServer(t, Options{Namespace: "batchpipe-test"})
	defer stopServer(t, s)
	if s.Namespace() != "batchpipe-test" {
		t.Fatalf("namespace %q", s.Namespace())
	}
	r := newRunner(t, s)
	defer r.close()
	r.greet(t, "in-memory", "memory")
}

// TestRememberedPortBusy checks the error when a port remembered in the
// state directory is taken by someone else.
func TestRememberedPortBusy(t *testing.T) {
	dir := t.TempDir()
	l, held, err := choosePorts(DefaultHost, 0)
	if err != nil {
		t.Fatal(err)
	}
	// Chosen ports are held until released: another server choosing them
	// meanwhile is refused, naming the port.
	if _, _, err := choosePorts(DefaultHost, l.Frontend); err == nil || !strings.Contains(err.Error(), fmt.Sprintf("port %d (frontend", l.Frontend)) {
		t.Fatalf("choosing held port %d again: %v, want it refused as not free", l.Frontend, err)
	}
	held.release()
	if err := writePorts(filepath.Join(dir, PortsFile), l); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(loopback, strconv.Itoa(l.Matching)))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := Start(ctx, Options{Dir: dir, Logger: testLogger(t)})
	if err == nil {
		_ = s.Stop()
		t.Fatal("Start succeeded with a remembered port in use")
	}
	for _, part := range []string{strconv.Itoa(l.Matching), "matching", dir} {
		if !strings.Contains(err.Error(), part) {
			t.Errorf("error %q does not mention %q", err, part)
		}
	}
	// The refused start released the directory.
	lock, err := acquireDirLock(dir)
	if err != nil {
		t.Fatalf("lock after failed Start: %v", err)
	}
	lock.release()
}

func TestLayout(t *testing.T) {
	l := layoutFrom(21000)
	seen := map[int]bool{}
	for _, p := range l.reserved(DefaultHost) {
		if p.port < 21000 || p.port >= 21000+PortSpan || seen[p.port] {
			t.Errorf("port %d (%s) outside [21000, %d) or repeated", p.port, p.name, 21000+PortSpan)
		}
		seen[p.port] = true
	}
	if len(seen) != PortSpan {
		t.Errorf("%d distinct ports, want %d", len(seen), PortSpan)
	}
	if layoutFrom(21000) != l {
		t.Error("layout is not deterministic")
	}
}

const helperDirEnv = "BATCHPIPE_DEVSERVER_HELPER_DIR"

// TestHelperServerProcess is not a test: TestCrashRestart runs the test
// binary again with it to hold a server in a separate process.
func TestHelperServerProcess(t *testing.T) {
	dir := os.Getenv(helperDirEnv)
	if dir == "" {
		t.Skip("helper process for TestCrashRestart")
	}
	s := startServer(t, Options{Dir: dir})
	r := newRunner(t, s)
	r.greet(t, "in-child", "child")
	os.Stdout.WriteString("READY " + s.FrontendAddr() + "\n")
	select {} // until killed
}

// TestCrashRestart runs a server in another process, checks that the state
// directory is refused while that process holds it, kills the process and
// restarts the server on the directory here.
func TestCrashRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a second process")
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperServerProcess$")
	cmd.Env = append(os.Environ(), helperDirEnv+"="+dir)
	cmd.Stderr = newTWriter(t)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	killed := false
	defer func() {
		if !killed {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	}()
	var addr string
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if a, ok := strings.CutPrefix(sc.Text(), "READY "); ok {
			addr = a
			break
		}
	}
	if addr == "" {
		t.Fatalf("helper process exited before its server was ready: %v", sc.Err())
	}
	go func() { _, _ = io.Copy(io.Discard, out) }()

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := Start(ctx, Options{Dir: dir, Logger: testLogger(t)})
	if err == nil {
		_ = s.Stop()
		t.Fatal("Start succeeded on a state directory held by another process")
	}
	var inUse *InUseError
	if !errors.As(err, &inUse) || inUse.PID != cmd.Process.Pid {
		t.Fatalf("error %v, want an InUseError naming pid %d", err, cmd.Process.Pid)
	}
	t.Logf("refused as expected: %v", err)

	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	killed = true

	begin := time.Now()
	s = startServer(t, Options{Dir: dir})
	defer stopServer(t, s)
	if s.FrontendAddr() != addr {
		t.Fatalf("after the crash the frontend is on %s, before it was on %s", s.FrontendAddr(), addr)
	}
	r := newRunner(t, s)
	defer r.close()
	r.greet(t, "after-crash", "survivor")
	t.Logf("restart after kill -9: Start to first completed workflow took %v", time.Since(begin).Round(time.Millisecond))

	var got string
	if err := r.c.GetWorkflow(ctx, "in-child", "").Get(ctx, &got); err != nil {
		t.Fatalf("result of the workflow run by the killed process: %v", err)
	}
	if want := strings.Replace(wantGreeting, "%s", "child", 1); got != want {
		t.Fatalf("workflow run by the killed process returned %q, want %q", got, want)
	}
}

// TestInterruptedSchemaSetup checks that a database whose schema setup never
// finished (the marker file is still there) is created again.
func TestInterruptedSchemaSetup(t *testing.T) {
	dir := t.TempDir()
	dbPath := filepath.Join(dir, DatabaseFile)
	if err := os.WriteFile(dbPath, []byte("half a database"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, schemaMarkerFile), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := prepareFileDatabase(dir)
	if err != nil {
		t.Fatalf("prepareFileDatabase: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, schemaMarkerFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("marker file still there after setup: %v", err)
	}
	if err := registerNamespace(cfg, "after-interrupted-setup"); err != nil {
		t.Fatalf("database unusable after setup: %v", err)
	}
	// A complete database is left alone.
	info, err := os.Stat(dbPath)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := prepareFileDatabase(dir); err != nil {
		t.Fatalf("prepareFileDatabase on a complete database: %v", err)
	}
	if again, err := os.Stat(dbPath); err != nil || !os.SameFile(info, again) {
		t.Errorf("complete database was replaced (%v)", err)
	}
}

// A port taken between the moment it was found free and the server's
// build: the build logs it as fatal, and that record is what Start returns
// as its error, instead of starting a server that would crash on the
// listener it does not have.
func TestPortTakenBeforeBuild(t *testing.T) {
	l, held, err := choosePorts(DefaultHost, 0)
	if err != nil {
		t.Fatal(err)
	}
	held.release()
	ln, err := net.Listen("tcp", net.JoinHostPort(loopback, strconv.Itoa(l.Matching)))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	opts, err := Options{}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	sqlCfg := memoryDatabase()
	if err := registerNamespace(sqlCfg, opts.Namespace); err != nil {
		t.Fatal(err)
	}
	logger := newServerLogger(slog.New(slog.DiscardHandler), slog.LevelError)
	if _, err := newTemporalServer(opts, l, sqlCfg, logger); err != nil {
		t.Fatal(err)
	}
	defer logger.mute()
	if got, port := logger.fatalRecord(), strconv.Itoa(l.Matching); !strings.Contains(got, port) || !strings.Contains(got, "address already in use") {
		t.Fatalf("fatal record %q, want one naming port %s in use", got, port)
	}
}
