package cli_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/batchpipe/batchpipe/internal/testinfra"
)

// buildSubmit builds cmd/submit into a temporary directory.
func buildSubmit(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "submit")
	build := exec.Command("go", "build", "-o", bin, "./cmd/submit")
	build.Dir = repoRoot(t)
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/submit: %v\n%s", err, out)
	}
	return bin
}

// Ctrl-C in a terminal sends SIGINT to the whole foreground process group:
// an embedded submit running a Python exec processor then prints one line
// saying how to resume and exits 130. The processor's processes, in their
// own process group, get EOF instead of SIGINT: no Python traceback, and no
// ERROR lines from the worker or server shutting down.
func TestCtrlCWithExecProcessor(t *testing.T) {
	if testing.Short() {
		t.Skip("builds cmd/submit")
	}
	python := testinfra.LookPath(t, "python3", "apt-get install python3")
	t.Parallel()
	bin := buildSubmit(t)
	dir := t.TempDir()
	started := filepath.Join(dir, "started")
	proc := filepath.Join(dir, "slow.py")
	script := fmt.Sprintf(`import json, os, sys, time
open(%q, "a").close()
for line in sys.stdin:
    time.sleep(0.1)
    print(json.dumps({"output": json.loads(line)}), flush=True)
`, started)
	if err := os.WriteFile(proc, []byte(script), 0o644); err != nil {
		t.Fatal(err)
	}
	in := filepath.Join(dir, "in.jsonl")
	var items bytes.Buffer
	for i := range 2000 {
		fmt.Fprintf(&items, `{"n":%d}`+"\n", i)
	}
	if err := os.WriteFile(in, items.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, "--batch-id", "ctrl-c", "--processor", "exec:"+python+" "+proc, in)
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "TEMPORAL_") && !strings.HasPrefix(kv, "BATCHPIPE_") {
			env = append(env, kv)
		}
	}
	cmd.Dir, cmd.Env, cmd.Stdout, cmd.Stderr = dir, env, &stdout, &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // its own group, as a terminal's job
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		if _, err := os.Stat(started); err == nil {
			break
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatalf("the processor never started\n%s", stderr.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(time.Second) // items in flight
	if err := syscall.Kill(-cmd.Process.Pid, syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	err := cmd.Wait()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 130 {
		t.Fatalf("interrupted submit: %v, want exit 130\n--- stderr:\n%s", err, stderr.String())
	}
	out := stderr.String()
	for _, bad := range []string{"Traceback", "KeyboardInterrupt", "ERROR", "level=ERROR", "panic"} {
		if strings.Contains(out, bad) {
			t.Errorf("stderr of an interrupted submit has %q:\n%s", bad, out)
		}
	}
	_, after, ok := strings.Cut(out, "interrupted; ")
	if !ok {
		t.Fatalf("no \"interrupted; …\" line:\n%s", out)
	}
	if lines := strings.Count(strings.TrimSpace(after), "\n"); lines > 0 {
		t.Errorf("%d lines after the interrupted line:\n%s", lines, out)
	}
	t.Logf("stderr ends: %q", tail(out, 200))
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[len(s)-n:]
}
