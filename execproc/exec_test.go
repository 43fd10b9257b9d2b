package execproc_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/batchpipe/batchpipe/execproc"
	"github.com/batchpipe/batchpipe/internal/testinfra"
	"github.com/batchpipe/batchpipe/pipeline"
)

// newPool is a Pool of f's script with o, closed when t ends.
var quietLog = slog.New(slog.DiscardHandler)

func newPool(t testing.TB, f testinfra.ExecScript, o execproc.Options, extra ...string) *execproc.Pool {
	t.Helper()
	if o.Logger == nil {
		o.Logger = quietLog
	}
	e, err := execproc.New(f.Command(extra...), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

func callExec(t *testing.T, p pipeline.Processor, timeout time.Duration, item string) (json.RawMessage, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return p.Process(ctx, json.RawMessage(item))
}

func alive(pid int) bool {
	p, err := os.FindProcess(pid)
	if err != nil {
		return false
	}
	return p.Signal(syscall.Signal(0)) == nil
}

func TestExecRoundTrip(t *testing.T) {
	f := testinfra.NewExecScript(t)
	e := newPool(t, f, execproc.Options{PoolSize: 2})
	for i := range 20 {
		// Items with newlines inside are sent compacted, on one line.
		out, err := callExec(t, e, 10*time.Second, fmt.Sprintf("{\n \"n\": %d,\n \"text\": \"a\\nb ü %d\"\n}", i, i))
		if err != nil {
			t.Fatalf("item %d: %v", i, err)
		}
		var got struct {
			N, Twice int
			Echo     string
		}
		if err := json.Unmarshal(out, &got); err != nil {
			t.Fatalf("item %d: %s: %v", i, out, err)
		}
		if got.N != i || got.Twice != 2*i || got.Echo != fmt.Sprintf("a\nb ü %d", i) {
			t.Fatalf("item %d: got %s", i, out)
		}
	}
	if pids := f.Pids(t); len(pids) != 1 {
		t.Fatalf("sequential items started %d processes, want 1 reused: %v", len(pids), pids)
	}
	if out, err := callExec(t, e, 10*time.Second, `{"n":1,"mode":"stderr"}`); err != nil || string(out) != "null" {
		t.Fatalf(`{"output": null}: %s, %v`, out, err)
	}
}

func TestExecErrorShape(t *testing.T) {
	f := testinfra.NewExecScript(t)
	e := newPool(t, f, execproc.Options{PoolSize: 1})
	_, err := callExec(t, e, 10*time.Second, `{"n":7,"mode":"perm"}`)
	if err == nil || !pipeline.IsPermanent(err) || err.Error() != "item 7 is bad" {
		t.Fatalf("permanent error: %v (permanent %v)", err, pipeline.IsPermanent(err))
	}
	_, err = callExec(t, e, 10*time.Second, `{"n":8,"mode":"retry"}`)
	if err == nil || pipeline.IsPermanent(err) || err.Error() != "item 8: try again" {
		t.Fatalf("retryable error: %v (permanent %v)", err, pipeline.IsPermanent(err))
	}
	_, err = callExec(t, e, 10*time.Second, `{"n":9,"mode":"bare"}`)
	if err == nil || pipeline.IsPermanent(err) || err.Error() != "plain message" {
		t.Fatalf("bare string error: %v", err)
	}
	if _, err := callExec(t, e, 10*time.Second, `{"n":10}`); err != nil {
		t.Fatal(err)
	}
	// Errors are answers: the same process served them all.
	if pids := f.Pids(t); len(pids) != 1 {
		t.Fatalf("error answers restarted the process: %v", pids)
	}
}

func TestExecRestartsAfterExit(t *testing.T) {
	f := testinfra.NewExecScript(t)
	// Each process exits (status 0) after 3 items: the item handed to one
	// that is exiting goes to a new process without failing.
	e := newPool(t, f, execproc.Options{PoolSize: 1}, "3")
	for i := range 12 {
		if _, err := callExec(t, e, 10*time.Second, fmt.Sprintf(`{"n":%d}`, i)); err != nil {
			t.Fatalf("item %d: %v", i, err)
		}
	}
	if pids := f.Pids(t); len(pids) != 4 {
		t.Fatalf("12 items at 3 per process started %d processes, want 4", len(pids))
	}

	// Several idle processes that all ended their lives between items:
	// each served 1, then closed its pipes and lingers before exiting 0,
	// the one put back last (it slept longest) lingering shortest, so
	// the others are still idle and alive when it is found gone. The
	// next item passes through every one of them to a new process
	// without failing.
	f = testinfra.NewExecScript(t)
	e = newPool(t, f, execproc.Options{PoolSize: 3}, "1")
	var wg sync.WaitGroup
	for i := range 3 {
		wg.Go(func() {
			item := fmt.Sprintf(`{"n":%d,"sleep":%.1f,"linger":%.1f}`, i, 0.2*float64(i+1), 0.4*float64(3-i))
			if _, err := callExec(t, e, 10*time.Second, item); err != nil {
				t.Errorf("item %d: %v", i, err)
			}
		})
	}
	wg.Wait()
	if _, err := callExec(t, e, 10*time.Second, `{"n":3}`); err != nil {
		t.Fatalf("item after 3 processes ended between items: %v", err)
	}
	if pids := f.Pids(t); len(pids) != 4 {
		t.Fatalf("4 items at 1 per process started %d processes, want 4", len(pids))
	}

	// A process dying mid-item: the item fails (retryably) with its exit
	// status and stderr; the next one succeeds on a new process.
	e = newPool(t, f, execproc.Options{PoolSize: 1})
	for _, c := range []struct{ item, want string }{
		{`{"n":100,"mode":"crash"}`, "exit status 1"},
		{`{"n":101,"mode":"exit"}`, "exit status 3"},
	} {
		if _, err := callExec(t, e, 10*time.Second, `{"n":99}`); err != nil {
			t.Fatal(err)
		}
		_, err := callExec(t, e, 10*time.Second, c.item)
		if err == nil || pipeline.IsPermanent(err) || !strings.Contains(err.Error(), c.want) {
			t.Fatalf("%s: %v, want a retryable error with %q", c.item, err, c.want)
		}
		if c.want == "exit status 1" && !strings.Contains(err.Error(), "RuntimeError: boom on item 100") {
			t.Fatalf("crash without its stderr: %v", err)
		}
		if _, err := callExec(t, e, 10*time.Second, `{"n":102}`); err != nil {
			t.Fatal(err)
		}
	}
	if pids := f.Pids(t); len(pids) != 4+3 {
		t.Fatalf("processes: %v", pids)
	}

	// A fresh process that exits at once, even with status 0, fails the item.
	e0, err := execproc.New("sh -c 'echo starting up >&2; exit 0'", execproc.Options{Logger: quietLog})
	if err != nil {
		t.Fatal(err)
	}
	defer e0.Close()
	_, err = callExec(t, e0, 10*time.Second, `{"n":1}`)
	if err == nil || pipeline.IsPermanent(err) || !strings.Contains(err.Error(), "exit status 0") || !strings.Contains(err.Error(), "starting up") {
		t.Fatalf("process exiting at once: %v", err)
	}
}

func TestExecTimeoutKillsProcess(t *testing.T) {
	f := testinfra.NewExecScript(t)
	e := newPool(t, f, execproc.Options{PoolSize: 1})
	if _, err := callExec(t, e, 10*time.Second, `{"n":1}`); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err := callExec(t, e, 500*time.Millisecond, `{"n":2,"mode":"hang"}`)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("hang: %v, want a deadline error", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("hang returned after %v", d)
	}
	pids := f.Pids(t)
	if len(pids) != 1 || alive(pids[0]) {
		t.Fatalf("the hung process %v is still alive", pids)
	}
	out, err := callExec(t, e, 10*time.Second, `{"n":3,"mode":"pid"}`)
	if err != nil {
		t.Fatal(err)
	}
	if pids := f.Pids(t); len(pids) != 2 || !bytes.Contains(out, []byte(strconv.Itoa(pids[1]))) {
		t.Fatalf("after the timeout: %s from pids %v", out, pids)
	}
	// A context cancelled while waiting for a free process.
	e2 := newPool(t, f, execproc.Options{PoolSize: 1})
	go callExec(t, e2, 2*time.Second, `{"n":4,"mode":"hang"}`)
	time.Sleep(300 * time.Millisecond)
	if _, err := callExec(t, e2, 200*time.Millisecond, `{"n":5}`); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("waiting for the busy pool: %v", err)
	}
}

func TestExecGarbageOutput(t *testing.T) {
	f := testinfra.NewExecScript(t)
	e := newPool(t, f, execproc.Options{PoolSize: 1, MaxLine: 1 << 10})
	for _, c := range []struct{ item, want string }{
		{`{"n":1,"mode":"garbage"}`, `answered "Loading model... done", not a JSON object`},
		{`{"n":2,"mode":"noshape"}`, `with neither "output" nor "error"`},
	} {
		_, err := callExec(t, e, 10*time.Second, c.item)
		if err == nil || pipeline.IsPermanent(err) || !strings.Contains(err.Error(), c.want) {
			t.Fatalf("%s: %v, want a retryable error saying %s", c.item, err, c.want)
		}
		if _, err := callExec(t, e, 10*time.Second, `{"n":3}`); err != nil {
			t.Fatalf("after %s: %v", c.item, err)
		}
	}
	// Every bad answer replaced the process.
	if pids := f.Pids(t); len(pids) != 3 {
		t.Fatalf("processes started: %v, want 3", pids)
	}
	// Lines past MaxLine, either way, fail permanently.
	if _, err := callExec(t, e, 10*time.Second, `{"n":4,"mode":"big","size":2000}`); !pipeline.IsPermanent(err) || !strings.Contains(err.Error(), "longer than") {
		t.Fatalf("long answer: %v", err)
	}
	if _, err := callExec(t, e, 10*time.Second, `{"n":5,"pad":"`+strings.Repeat("y", 2000)+`"}`); !pipeline.IsPermanent(err) || !strings.Contains(err.Error(), "longer than") {
		t.Fatalf("long input: %v", err)
	}
	if _, err := callExec(t, e, 10*time.Second, `{"n":6,"mode":"big","size":900}`); err != nil {
		t.Fatalf("answer under the limit: %v", err)
	}
}

// execStrayScript answers each item {"n": N} with {"output": {"n": N}}
// and, depending on its first argument, writes more than that to stdout:
// "same" the answer twice in one write, "late" a copy of the answer 300 ms
// after it, "slow" the same and then 1 s before reading the next item, "first" a line of its own before the answer of the very
// first item of all its processes (a marker file next to the pid file
// tells).
const execStrayScript = `
import json, os, sys, time
how, pidfile = sys.argv[1], sys.argv[2]
with open(pidfile, "a") as f:
    f.write("%d\n" % os.getpid())
for line in sys.stdin:
    answer = json.dumps({"output": {"n": json.loads(line)["n"]}}) + "\n"
    if how == "same":
        sys.stdout.write(answer + answer)
    elif how in ("late", "slow"):
        sys.stdout.write(answer)
        sys.stdout.flush()
        time.sleep(0.3)
        sys.stdout.write(answer)
        sys.stdout.flush()
        if how == "slow":
            time.sleep(1)
    elif how == "first" and not os.path.exists(pidfile + ".first"):
        open(pidfile + ".first", "w").close()
        sys.stdout.write(json.dumps({"output": "debug: model loaded"}) + "\n" + answer)
    else:
        sys.stdout.write(answer)
    sys.stdout.flush()
`

// strayPool is an Exec of execStrayScript (how says what it writes) or of
// a shell command line, and its fixture.
func strayPool(t *testing.T, how string) (*execproc.Pool, testinfra.ExecScript) {
	t.Helper()
	f := testinfra.NewExecScript(t)
	if err := os.WriteFile(f.Script, []byte(execStrayScript), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := fmt.Sprintf("python3 '%s' %s '%s'", f.Script, how, f.Pidfile)
	if strings.HasPrefix(how, "sh ") {
		cmd = how
	}
	e, err := execproc.New(cmd, execproc.Options{PoolSize: 1, Logger: quietLog})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e, f
}

// checkStray calls item {"n": n} and checks that it got its own answer or
// failed, retryably, with a protocol error containing want; it reports
// whether the item succeeded.
func checkStray(t *testing.T, e *execproc.Pool, n int, want string) bool {
	t.Helper()
	out, err := callExec(t, e, 10*time.Second, fmt.Sprintf(`{"n":%d}`, n))
	if err != nil {
		if pipeline.IsPermanent(err) || !strings.Contains(err.Error(), want) {
			t.Fatalf("item %d: %v (permanent %v), want a retryable error with %q", n, err, pipeline.IsPermanent(err), want)
		}
		return false
	}
	if string(out) != fmt.Sprintf(`{"n": %d}`, n) && string(out) != fmt.Sprintf(`{"n":%d}`, n) {
		t.Fatalf("item %d was answered %s: another item's answer", n, out)
	}
	return true
}

// A process that writes more than one line for an item never has a stray
// line taken for an answer: each item gets its own answer or fails with a
// protocol error (and the process is replaced).
func TestExecExtraLines(t *testing.T) {
	const more = "wrote more than one line for one item"
	t.Run("same write", func(t *testing.T) {
		// Both lines arrive in one read: every item fails.
		e, f := strayPool(t, "same")
		for n := range 5 {
			if checkStray(t, e, n, more+`: "{\"output\": {\"n\": `+strconv.Itoa(n)+`}}" and then`) {
				t.Fatalf("item %d succeeded", n)
			}
		}
		if pids := f.Pids(t); len(pids) != 5 {
			t.Fatalf("%d processes for 5 items that each failed", len(pids))
		}
	})
	t.Run("between items", func(t *testing.T) {
		// The copy arrives after the answer (300 ms later: under load the
		// answer must still be read alone), before the next item: the
		// item on a fresh process succeeds, the next one fails, and so on.
		e, f := strayPool(t, "late")
		for n := range 6 {
			ok := checkStray(t, e, n, more+`: "{\"output\": {\"n\": `+strconv.Itoa(n-1)+`}}" came after its answer, before the next item`)
			if ok != (n%2 == 0) {
				t.Fatalf("item %d: succeeded %v", n, ok)
			}
			time.Sleep(time.Second)
		}
		if pids := f.Pids(t); len(pids) != 3 {
			t.Fatalf("%d processes for 6 items, 3 failed", len(pids))
		}
	})
	t.Run("before reading the next item", func(t *testing.T) {
		// Items back to back: the copy comes after the next item was
		// written (300 ms after the answer: under load the next item must
		// still be written first), and while the process has not read it
		// yet.
		e, _ := strayPool(t, "slow")
		for n := range 4 {
			ok := checkStray(t, e, n, more+`: "{\"output\": {\"n\": `+strconv.Itoa(n-1)+`}}" came before it read the next item`)
			if ok != (n%2 == 0) {
				t.Fatalf("item %d: succeeded %v", n, ok)
			}
		}
	})
	t.Run("shell", func(t *testing.T) {
		// A shell printing each answer twice: every item fails.
		e, _ := strayPool(t, `sh -c 'while IFS= read -r l; do printf "%s\n%s\n" "{\"output\":$l}" "{\"output\":$l}"; done'`)
		for n := range 10 {
			if checkStray(t, e, n, more) {
				t.Fatalf("item %d succeeded", n)
			}
		}
	})
	t.Run("first item only", func(t *testing.T) {
		// A line before the very first answer: that item fails once and,
		// retried on a new process, gets its answer like all the others.
		e, f := strayPool(t, "first")
		failures := 0
		for n := range 10 {
			for try := 0; ; try++ {
				if checkStray(t, e, n, more+`: "{\"output\": \"debug: model loaded\"}" and then "{\"output\": {\"n\": 0}}"`) {
					break
				}
				failures++
				if try == 2 {
					t.Fatalf("item %d failed 3 times", n)
				}
			}
		}
		if pids := f.Pids(t); failures != 1 || len(pids) != 2 {
			t.Fatalf("%d failures, %d processes; want 1 and 2", failures, len(pids))
		}
	})
}

// groupGone reports whether no live (non-zombie) process is left with pid
// pid or in the process group pgid, by /proc.
func groupGone(pid, pgid int) bool {
	dirs, _ := os.ReadDir("/proc")
	for _, d := range dirs {
		p, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", d.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid pgrp ...
		i := bytes.LastIndexByte(stat, ')')
		if i < 0 {
			continue
		}
		fields := strings.Fields(string(stat[i+1:]))
		if len(fields) < 3 || fields[0] == "Z" || fields[0] == "X" {
			continue
		}
		if p == pid || fields[2] == strconv.Itoa(pgid) {
			return false
		}
	}
	return true
}

// A process's children die with it, at an item's timeout and at Close.
func TestExecKillsProcessGroup(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("process groups are killed on Linux only")
	}
	dir := t.TempDir()
	// Each script writes its own pid and its child's to its pid file.
	for _, c := range []struct {
		name, script string
		timeout      time.Duration
		wantErr      error
	}{
		// The item hangs waiting for its child, past its timeout.
		{"timeout", `while read -r l; do sleep 300 & echo $$ $! >> "$0"; wait; done`, 500 * time.Millisecond, context.DeadlineExceeded},
		// The child was started beside the read loop; the process exits
		// at EOF on stdin (at Close), leaving it behind.
		{"close", `sleep 300 & echo $$ $! >> "$0"; while read -r l; do echo "{\"output\":1}"; done`, 10 * time.Second, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			pidfile := filepath.Join(dir, c.name)
			e, err := execproc.New(fmt.Sprintf("sh -c '%s' '%s'", c.script, pidfile), execproc.Options{PoolSize: 1, Logger: quietLog})
			if err != nil {
				t.Fatal(err)
			}
			defer e.Close()
			if _, err := callExec(t, e, c.timeout, `{"n":1}`); !errors.Is(err, c.wantErr) {
				t.Fatalf("item: %v, want %v", err, c.wantErr)
			}
			e.Close()
			data, err := os.ReadFile(pidfile)
			if err != nil {
				t.Fatal(err)
			}
			var sh, child int
			if _, err := fmt.Sscan(string(data), &sh, &child); err != nil {
				t.Fatalf("pid file %q: %v", data, err)
			}
			t.Cleanup(func() {
				if p, err := os.FindProcess(child); err == nil {
					p.Kill()
				}
			})
			deadline := time.Now().Add(5 * time.Second)
			for !groupGone(child, sh) {
				if time.Now().After(deadline) {
					t.Fatalf("the child %d of process %d (its group) survived the %s", child, sh, c.name)
				}
				time.Sleep(20 * time.Millisecond)
			}
		})
	}
}

func TestExecMissingCommand(t *testing.T) {
	for _, cmd := range []string{"batchpipe-no-such-command --flag", "/nonexistent/dir/proc"} {
		e, err := execproc.New(cmd, execproc.Options{Logger: quietLog})
		if err != nil {
			t.Fatal(err)
		}
		_, err = callExec(t, e, 10*time.Second, `{"n":1}`)
		if err == nil || !pipeline.IsPermanent(err) || !strings.Contains(err.Error(), strings.Fields(cmd)[0]) {
			t.Fatalf("%s: %v (permanent %v), want a permanent error naming the command", cmd, err, pipeline.IsPermanent(err))
		}
		e.Close()
	}
	for _, bad := range []string{"", "   ", "python3 'unterminated", `sh -c "x`} {
		if err := execproc.NewRegistry(execproc.Options{}).Check("exec:" + bad); err == nil {
			t.Fatalf("exec:%s: no error", bad)
		}
	}
}

func TestExecParallelNeverExceedsPool(t *testing.T) {
	f := testinfra.NewExecScript(t)
	const pool, workers, each = 4, 16, 25
	e := newPool(t, f, execproc.Options{PoolSize: pool})
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	var mu sync.Mutex
	used := map[int]int{}
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				n := w*1000 + i
				out, err := callExec(t, e, 20*time.Second, fmt.Sprintf(`{"n":%d,"mode":"pid","sleep":0.002}`, n))
				if err != nil {
					errs <- fmt.Errorf("item %d: %v", n, err)
					return
				}
				var got struct{ N, Pid int }
				if err := json.Unmarshal(out, &got); err != nil || got.N != n {
					errs <- fmt.Errorf("item %d: got %s", n, out)
					return
				}
				mu.Lock()
				used[got.Pid]++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	pids := f.Pids(t)
	if len(pids) > pool || len(used) > pool {
		t.Fatalf("%d processes started (%d answered) with a pool of %d", len(pids), len(used), pool)
	}
	total := 0
	for _, n := range used {
		total += n
	}
	if total != workers*each {
		t.Fatalf("%d answers, want %d", total, workers*each)
	}
	t.Logf("%d processes served %v", len(pids), used)

	// Close ends them all.
	e.Close()
	for _, pid := range pids {
		if alive(pid) {
			t.Fatalf("pid %d alive after Close", pid)
		}
	}
	if _, err := callExec(t, e, time.Second, `{"n":1}`); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Fatalf("after Close: %v", err)
	}
}

// captureHandler records log records.
type captureHandler struct {
	mu   sync.Mutex
	recs []string
}

func (h *captureHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *captureHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &attrHandler{h: h, attrs: as}
}
func (h *captureHandler) WithGroup(string) slog.Handler { return h }
func (h *captureHandler) Handle(_ context.Context, r slog.Record) error {
	return h.add(r, nil)
}
func (h *captureHandler) add(r slog.Record, pre []slog.Attr) error {
	var b strings.Builder
	b.WriteString(r.Level.String() + " " + r.Message)
	for _, a := range pre {
		b.WriteString(" " + a.String())
	}
	r.Attrs(func(a slog.Attr) bool { b.WriteString(" " + a.String()); return true })
	h.mu.Lock()
	h.recs = append(h.recs, b.String())
	h.mu.Unlock()
	return nil
}

type attrHandler struct {
	h     *captureHandler
	attrs []slog.Attr
}

func (a *attrHandler) Enabled(context.Context, slog.Level) bool { return true }
func (a *attrHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &attrHandler{h: a.h, attrs: append(a.attrs[:len(a.attrs):len(a.attrs)], as...)}
}
func (a *attrHandler) WithGroup(string) slog.Handler                 { return a }
func (a *attrHandler) Handle(_ context.Context, r slog.Record) error { return a.h.add(r, a.attrs) }

func TestExecLookupAndStderr(t *testing.T) {
	f := testinfra.NewExecScript(t)
	h := &captureHandler{}
	r := &pipeline.Registry{}
	r.Register("echo", pipeline.ProcessorFunc(func(_ context.Context, in json.RawMessage) (json.RawMessage, error) { return in, nil }))
	execproc.Register(r, execproc.Options{PoolSize: 2, Logger: slog.New(h)})
	defer r.Close()
	name := "exec:" + f.Command()
	p1, err := r.Lookup(name, pipeline.Options{})
	if err != nil {
		t.Fatal(err)
	}
	p2, _ := r.Lookup(name, pipeline.Options{})
	if p1 != p2 {
		t.Fatal("two lookups of one exec: name gave two pools")
	}
	if names := r.Names(); len(names) != 1 || names[0] != "echo" {
		t.Fatalf("Names() = %v", names)
	}
	if _, err := r.Lookup("nope", pipeline.Options{}); err == nil || !strings.Contains(err.Error(), "exec:") || !strings.Contains(err.Error(), "echo") {
		t.Fatalf("unknown processor: %v", err)
	}
	if _, err := callExec(t, p1, 10*time.Second, `{"n":42,"mode":"stderr"}`); err != nil {
		t.Fatal(err)
	}
	// stderr reaches the log, with the command.
	deadline := time.Now().Add(5 * time.Second)
	for {
		h.mu.Lock()
		recs := strings.Join(h.recs, "\n")
		h.mu.Unlock()
		if strings.Contains(recs, "note about item 42") {
			if !strings.Contains(recs, "command="+f.Command()) {
				t.Fatalf("stderr logged without the command:\n%s", recs)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("stderr line not logged:\n%s", recs)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Close stops the processes; a later Lookup starts a new pool.
	pids := f.Pids(t)
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	for _, pid := range pids {
		if alive(pid) {
			t.Fatalf("pid %d alive after Registry.Close", pid)
		}
	}
	p3, err := r.Lookup(name, pipeline.Options{})
	if err != nil || p3 == p1 {
		t.Fatalf("lookup after Close: %v, same pool %v", err, p3 == p1)
	}
	if _, err := callExec(t, p3, 10*time.Second, `{"n":1}`); err != nil {
		t.Fatal(err)
	}
}

// BenchmarkExecRoundTrip measures one item's round trip through a process
// of the pool: the Python test processor, and cat (which answers an item
// {"output": ...} with itself) for the cost of the protocol alone.
func BenchmarkExecRoundTrip(b *testing.B) {
	run := func(b *testing.B, e *execproc.Pool, item string) {
		ctx := context.Background()
		if _, err := e.Process(ctx, json.RawMessage(item)); err != nil { // start the process
			b.Fatal(err)
		}
		for b.Loop() {
			if _, err := e.Process(ctx, json.RawMessage(item)); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.Run("python", func(b *testing.B) {
		f := testinfra.NewExecScript(b)
		run(b, newPool(b, f, execproc.Options{PoolSize: 1}), `{"n":1,"text":"some text"}`)
	})
	b.Run("cat", func(b *testing.B) {
		e, err := execproc.New("cat", execproc.Options{PoolSize: 1, Logger: quietLog})
		if err != nil {
			b.Fatal(err)
		}
		defer e.Close()
		run(b, e, `{"output":{"n":1,"text":"some text"}}`)
	})
}
