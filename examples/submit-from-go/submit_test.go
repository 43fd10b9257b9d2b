package submitfromgo

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/batchpipe/batchpipe/blobstore"
	"github.com/batchpipe/batchpipe/internal/testinfra"
	"github.com/batchpipe/batchpipe/manifests"
)

// TestSubmitFromGo builds the worker from the root module and the example
// program from its own module (offline, leaving its go.mod and go.sum as
// they are), runs `worker --dev` on a free port with a file store, runs the
// program on 5,000 items through TEMPORAL_ADDRESS, and checks what it printed
// and, independently, the batch's manifest and every result line.
func TestSubmitFromGo(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the worker and the example and runs a Temporal server")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	tmp := t.TempDir()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	app, err := filepath.Abs("app")
	if err != nil {
		t.Fatal(err)
	}

	workerBin := filepath.Join(tmp, "worker")
	goBuild(ctx, t, root, nil, "-o", workerBin, "./cmd/worker")

	// The example builds from the module cache alone (GOPROXY=off), as
	// another module would, without touching its go.mod or go.sum.
	modBefore, sumBefore := readFile(t, filepath.Join(app, "go.mod")), readFile(t, filepath.Join(app, "go.sum"))
	appBin := filepath.Join(tmp, "submit-from-go")
	goBuild(ctx, t, app, []string{"GOWORK=off", "GOPROXY=off", "GOFLAGS=" + strings.TrimSpace(os.Getenv("GOFLAGS")+" -mod=readonly")}, "-o", appBin, ".")
	if !bytes.Equal(modBefore, readFile(t, filepath.Join(app, "go.mod"))) || !bytes.Equal(sumBefore, readFile(t, filepath.Join(app, "go.sum"))) {
		t.Fatal("building the example changed app/go.mod or app/go.sum")
	}

	storeDir := filepath.Join(tmp, "store")
	if err := os.MkdirAll(storeDir, 0o755); err != nil {
		t.Fatal(err)
	}
	store := "file://" + storeDir
	// The processes see only the environment a user's would: no TEMPORAL_*
	// or BATCHPIPE_* of the test's own, no Temporal config file.
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "TEMPORAL_") && !strings.HasPrefix(kv, "BATCHPIPE_") {
			env = append(env, kv)
		}
	}
	env = append(env, "HOME="+tmp, "XDG_CONFIG_HOME="+filepath.Join(tmp, "config"))

	addr := startWorker(ctx, t, workerBin, tmp, env, "--dev", "--no-ui", "--dev-port", "0",
		"--dev-dir", filepath.Join(tmp, "dev"), "--store", store)

	const n = 5000
	var input bytes.Buffer
	for i := range n {
		fmt.Fprintf(&input, `{"arg1":"a %d","arg2":"b %d"}`+"\n", i, i)
	}
	items := filepath.Join(tmp, "items.jsonl")
	if err := os.WriteFile(items, input.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}

	rctx, rcancel := context.WithTimeout(ctx, 3*time.Minute)
	defer rcancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(rctx, appBin, "-store", store, items)
	cmd.Dir, cmd.Env, cmd.Stdout, cmd.Stderr = tmp, append(env, "TEMPORAL_ADDRESS="+addr), &stdout, &stderr
	cmd.WaitDelay = 10 * time.Second
	start := time.Now()
	if err := cmd.Run(); err != nil {
		t.Fatalf("submit-from-go: %v (after %v)\nstdout:\n%s\nstderr:\n%s", err, time.Since(start), stdout.String(), stderr.String())
	}
	t.Logf("submit-from-go ran %d items in %v\nstdout: %sstderr:\n%s", n, time.Since(start).Round(time.Millisecond), stdout.String(), stderr.String())

	// Progress: lines that never go back, the last one at 5000/5000.
	progress := regexp.MustCompile(`(?m)^progress: (\d+)/(\d+) done, 0 failed$`).FindAllStringSubmatch(stderr.String(), -1)
	if len(progress) == 0 {
		t.Fatalf("no progress line on stderr:\n%s", stderr.String())
	}
	prev := -1
	for _, p := range progress {
		var done int
		fmt.Sscan(p[1], &done)
		if done < prev || p[2] != "5000" && p[2] != "0" {
			t.Errorf("progress line %q after %d done", p[0], prev)
		}
		prev = done
	}
	if last := progress[len(progress)-1][0]; last != "progress: 5000/5000 done, 0 failed" {
		t.Errorf("last progress line %q, want 5000/5000", last)
	}
	m := regexp.MustCompile(`^batch (\S+) succeeded: 5000 succeeded, 0 failed; manifest (\S+)\n$`).FindStringSubmatch(stdout.String())
	if m == nil {
		t.Fatalf("summary %q; want \"batch <id> succeeded: 5000 succeeded, 0 failed; manifest <key>\"", stdout.String())
	}
	id, key := m[1], m[2]
	if key != manifests.ManifestKey(id) {
		t.Errorf("summary names manifest %s, want %s", key, manifests.ManifestKey(id))
	}

	// Independently of the program: the manifest in the store, and every
	// result line in input order.
	bucket, err := blobstore.Open(ctx, store)
	if err != nil {
		t.Fatal(err)
	}
	defer bucket.Close()
	batch, err := manifests.Open(ctx, bucket, id)
	if err != nil {
		t.Fatal(err)
	}
	defer batch.Close()
	if got := batch.Manifest; got.Status != manifests.StatusSucceeded || got.Counts != (manifests.Counts{Items: n, Succeeded: n}) || got.Input.Items != n {
		t.Errorf("manifest: status %s, counts %+v, input %+v; want succeeded, %d items all succeeded", got.Status, got.Counts, got.Input, n)
	}
	var lines int64
	for line, err := range batch.Results(ctx) {
		if err != nil {
			t.Fatal(err)
		}
		if line.Index != lines || line.Status != manifests.ItemSucceeded {
			t.Fatalf("result line %d: index %d, status %s", lines, line.Index, line.Status)
		}
		var out struct{ Arg1, Arg2 string }
		if err := json.Unmarshal(line.Output, &out); err != nil || out.Arg1 != fmt.Sprintf("activity arg1: a %d", lines) || out.Arg2 != fmt.Sprintf("activity arg2: b %d", lines) {
			t.Fatalf("result line %d: output %s (%v)", lines, line.Output, err)
		}
		lines++
	}
	if lines != n {
		t.Errorf("read %d result lines, want %d", lines, n)
	}
	if err := batch.Verify(ctx); err != nil {
		t.Error(err)
	}
}

// goBuild runs `go build args...` in dir with the test's environment plus
// extra.
func goBuild(ctx context.Context, t *testing.T, dir string, extra []string, args ...string) {
	t.Helper()
	bctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(bctx, "go", append([]string{"build"}, args...)...)
	cmd.Dir, cmd.Env = dir, append(os.Environ(), extra...)
	start := time.Now()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s in %s: %v\n%s", strings.Join(args, " "), dir, err, out)
	}
	t.Logf("go build %s in %s: %v", strings.Join(args, " "), dir, time.Since(start).Round(time.Millisecond))
}

func readFile(t *testing.T, name string) []byte {
	t.Helper()
	data, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

var serverLine = regexp.MustCompile(`embedded Temporal server on (\S+) `)

// startWorker runs the worker until the test ends (SIGINT, then a kill if it
// has not stopped within 30 s) and returns its frontend address once the
// worker polls and the frontend accepts connections.
func startWorker(ctx context.Context, t *testing.T, bin, dir string, env []string, args ...string) string {
	t.Helper()
	var logs testinfra.Buffer
	w := exec.Command(bin, args...)
	w.Dir, w.Env, w.Stdout, w.Stderr = dir, env, &logs, &logs
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- w.Wait() }()
	t.Cleanup(func() {
		w.Process.Signal(syscall.SIGINT)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			w.Process.Kill()
			<-exited
			t.Errorf("worker did not stop within 30 s of SIGINT\n%s", logs.String())
		}
		if t.Failed() {
			t.Logf("worker output:\n%s", logs.String())
		}
	})

	deadline := time.After(2 * time.Minute)
	for {
		if s := logs.String(); strings.Contains(s, "worker polling") {
			m := serverLine.FindStringSubmatch(s)
			if m == nil {
				t.Fatalf("worker polls but did not say where its server is:\n%s", s)
			}
			conn, err := net.DialTimeout("tcp", m[1], 5*time.Second)
			if err != nil {
				t.Fatalf("worker's server at %s does not answer: %v", m[1], err)
			}
			conn.Close()
			return m[1]
		}
		select {
		case err := <-exited:
			exited <- err // for the cleanup
			t.Fatalf("worker exited before polling: %v\n%s", err, logs.String())
		case <-deadline:
			t.Fatalf("worker not polling within 2 minutes:\n%s", logs.String())
		case <-ctx.Done():
			t.Fatalf("worker not polling: %v\n%s", ctx.Err(), logs.String())
		case <-time.After(100 * time.Millisecond):
		}
	}
}
