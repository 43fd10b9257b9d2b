package startfromtypescript_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/batchpipe/batchpipe/internal/testinfra"
	"github.com/batchpipe/batchpipe/manifests"
)

// cleanEnv is the test's environment without the variables start.mjs and the
// worker read, so the developer's own settings do not leak in.
func cleanEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "TEMPORAL_") || strings.HasPrefix(k, "BATCHPIPE_") || k == "EXTRA_OPTIONS_JSON" || k == "BATCH_ID" {
			continue
		}
		env = append(env, kv)
	}
	return append(env, extra...)
}

// startWorker runs `worker --dev` on a free port with its state in dir and
// returns the Temporal address; it is stopped (SIGINT, then killed) when the
// test ends.
func startWorker(t *testing.T, bin, dir, store string) string {
	t.Helper()
	port := testinfra.FreeDevServerPort(t)
	var out testinfra.Buffer
	cmd := exec.Command(bin, "--dev", "--no-ui", "--dev-dir", filepath.Join(dir, "dev"),
		"--dev-port", strconv.Itoa(port), "--store", store)
	cmd.Dir = dir // its default state directory, .batchpipe/, stays out of the repo
	cmd.Env = cleanEnv()
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGINT)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			t.Errorf("worker did not stop within 30 s of SIGINT; killing it")
			_ = cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("worker output:\n%s", out.String())
		}
	})
	deadline := time.After(2 * time.Minute)
	for !strings.Contains(out.String(), "worker polling") {
		select {
		case err := <-exited:
			exited <- err
			t.Fatalf("worker exited before it polled (%v):\n%s", err, out.String())
		case <-deadline:
			t.Fatalf("worker did not start polling within 2 minutes:\n%s", out.String())
		case <-time.After(100 * time.Millisecond):
		}
	}
	return fmt.Sprintf("127.0.0.1:%d", port)
}

type nodeRun struct {
	code     int
	out      string
	duration time.Duration
}

// runStart runs start.mjs with args and extra environment variables.
func runStart(t *testing.T, node, addr string, timeout time.Duration, env []string, args ...string) nodeRun {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, append([]string{"start.mjs"}, args...)...)
	cmd.Env = cleanEnv(append([]string{"TEMPORAL_ADDRESS=" + addr}, env...)...)
	cmd.WaitDelay = 5 * time.Second
	var out testinfra.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	begin := time.Now()
	err := cmd.Run()
	r := nodeRun{out: out.String(), duration: time.Since(begin)}
	var exit *exec.ExitError
	switch {
	case ctx.Err() != nil:
		t.Fatalf("node start.mjs %v did not finish within %v:\n%s", args, timeout, r.out)
	case errors.As(err, &exit):
		r.code = exit.ExitCode()
	case err != nil:
		t.Fatalf("node start.mjs: %v", err)
	}
	return r
}

var (
	progressLine = regexp.MustCompile(`(?m)^progress: (\d+)/(\d+) items`)
	manifestLine = regexp.MustCompile(`(?m)^manifest key: (\S+)$`)
)

// TestStartFromNode installs the example's npm dependencies (npm ci), runs a
// real `worker --dev` and starts batches with start.mjs, as a client in
// another language would: a 250-item batch runs to a succeeded manifest with
// progress printed on the way; a misspelt option fails at once naming the
// key; a second start of a batch id is refused.
func TestStartFromNode(t *testing.T) {
	if testing.Short() {
		t.Skip("installs npm packages, builds the worker and runs a Temporal server")
	}
	node := testinfra.LookPath(t, "node", "install Node.js (apt-get install nodejs npm)")
	npm := testinfra.LookPath(t, "npm", "install npm (apt-get install npm)")
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("repository root: %v", err)
	}
	tmp := t.TempDir()
	bin := filepath.Join(tmp, "worker")

	// npm ci and the worker's build run side by side.
	setup, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	var npmErr, buildErr error
	var npmOut, buildOut []byte
	wg.Add(2)
	go func() {
		defer wg.Done()
		cmd := exec.CommandContext(setup, npm, "ci", "--no-audit", "--no-fund", "--loglevel=error")
		cmd.Env = cleanEnv()
		npmOut, npmErr = cmd.CombinedOutput()
	}()
	go func() {
		defer wg.Done()
		cmd := exec.CommandContext(setup, "go", "build", "-o", bin, "./cmd/worker")
		cmd.Dir = root
		buildOut, buildErr = cmd.CombinedOutput()
	}()
	wg.Wait()
	if npmErr != nil {
		t.Fatalf("npm ci: %v\n%s", npmErr, npmOut)
	}
	if buildErr != nil {
		t.Fatalf("go build ./cmd/worker: %v\n%s", buildErr, buildOut)
	}

	blobs := filepath.Join(tmp, "blobs")
	if err := os.MkdirAll(blobs, 0o755); err != nil {
		t.Fatal(err)
	}
	store := "file://" + blobs
	const items = 250
	var input bytes.Buffer
	for i := range items {
		line, _ := json.Marshal(map[string]string{"arg1": fmt.Sprintf("a%d", i), "arg2": fmt.Sprintf("b%d", i)})
		input.Write(append(line, '\n'))
	}
	if err := os.WriteFile(filepath.Join(blobs, "in.jsonl"), input.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	inputURL := store + "/in.jsonl"
	addr := startWorker(t, bin, tmp, store)

	t.Run("batch", func(t *testing.T) {
		r := runStart(t, node, addr, 3*time.Minute, nil, "--store", store, "--processor", "example",
			"--batch-id", "ts-ok", "--shard-size", "25", "--concurrency", "1", "--poll-interval", "200", inputURL)
		t.Logf("start.mjs took %v:\n%s", r.duration.Round(time.Millisecond), r.out)
		if r.code != 0 {
			t.Fatalf("exit code %d, want 0", r.code)
		}
		// Ten shards one at a time, polled every 200 ms: progress shows
		// the staged item count on the way.
		progress := progressLine.FindAllStringSubmatch(r.out, -1)
		staged := false
		for _, p := range progress {
			done, _ := strconv.Atoi(p[1])
			total, _ := strconv.Atoi(p[2])
			if total != 0 && total != items || done > total {
				t.Errorf("progress line %q: want done ≤ items, items 0 (staging) or %d", p[0], items)
			}
			staged = staged || total == items
		}
		if len(progress) < 2 || !staged {
			t.Errorf("%d progress lines printed, want some, with the %d staged items", len(progress), items)
		}
		m := manifestLine.FindStringSubmatch(r.out)
		if m == nil {
			t.Fatalf("no manifest key printed")
		}
		if want := manifests.ManifestKey("ts-ok"); m[1] != want {
			t.Errorf("manifest key %q, want %q", m[1], want)
		}
		data, err := os.ReadFile(filepath.Join(blobs, filepath.FromSlash(m[1])))
		if err != nil {
			t.Fatalf("the printed manifest key is not in the store: %v", err)
		}
		var man manifests.Manifest
		if err := json.Unmarshal(data, &man); err != nil {
			t.Fatalf("manifest: %v\n%s", err, data)
		}
		want := manifests.Counts{Items: items, Succeeded: items}
		if man.Format != manifests.Format || man.BatchID != "ts-ok" || man.Status != manifests.StatusSucceeded || man.Counts != want {
			t.Errorf("manifest: format %q, batch %q, status %q, counts %+v; want %s, ts-ok, succeeded, %+v",
				man.Format, man.BatchID, man.Status, man.Counts, manifests.Format, want)
		}
		if man.Processor != "example" || man.Input.Items != items || man.Input.Shards != items/25 || len(man.Results) != items/25 {
			t.Errorf("manifest: processor %q, input %+v, %d result objects; want example, %d items in %d shards",
				man.Processor, man.Input, len(man.Results), items, items/25)
		}
	})

	t.Run("misspelt option", func(t *testing.T) {
		r := runStart(t, node, addr, time.Minute, []string{`EXTRA_OPTIONS_JSON={"shard_sizee":5}`},
			"--store", store, "--processor", "example", "--batch-id", "ts-bad", inputURL)
		t.Logf("start.mjs took %v:\n%s", r.duration.Round(time.Millisecond), r.out)
		if r.code != 2 {
			t.Errorf("exit code %d, want 2 (input refused)", r.code)
		}
		for _, want := range []string{"InvalidBatchInput", `unknown field "shard_sizee"`} {
			if !strings.Contains(r.out, want) {
				t.Errorf("output does not say %q", want)
			}
		}
		if r.duration > 30*time.Second {
			t.Errorf("took %v to fail; a refused input fails the workflow at once", r.duration)
		}
		if _, err := os.Stat(filepath.Join(blobs, "batches", "ts-bad")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("a refused batch wrote to the store: %v", err)
		}
	})

	t.Run("batch id taken", func(t *testing.T) {
		r := runStart(t, node, addr, time.Minute, nil, "--store", store, "--processor", "example", "--batch-id", "ts-ok", inputURL)
		if r.code != 1 || !strings.Contains(r.out, "WorkflowExecutionAlreadyStarted") {
			t.Errorf("second start of ts-ok: exit code %d, want 1 saying WorkflowExecutionAlreadyStarted:\n%s", r.code, r.out)
		}
	})
}
