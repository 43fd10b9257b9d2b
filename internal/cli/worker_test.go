package cli_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/batchpipe/batchpipe/internal/cli"
	"github.com/batchpipe/batchpipe/internal/devserver"
	"github.com/batchpipe/batchpipe/internal/testinfra"
	"github.com/batchpipe/batchpipe/internal/testinfra/temporaltest"
	"github.com/batchpipe/batchpipe/pipeline"
)

// startDevWorker runs `worker --dev` in-process on free ports and returns
// the Temporal address; the worker stops when the test ends.
func startDevWorker(t *testing.T, dir string, extra ...string) (addr string, stderr *testinfra.Buffer) {
	t.Helper()
	port := testinfra.FreeDevServerPort(t)
	if !slices.Contains(extra, "--ui-port") && !slices.Contains(extra, "--no-ui") {
		extra = append(extra, "--no-ui")
	}
	stderr = &testinfra.Buffer{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	args := append([]string{"--dev", "--dev-port", fmt.Sprint(port), "--dev-dir", dir + "/dev"}, extra...)
	go func() {
		done <- cli.Worker(ctx, &cli.IO{Stdin: strings.NewReader(""), Stdout: io.Discard, Stderr: stderr, Getenv: noEnv, Dir: dir}, args)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case code := <-done:
			if code != 0 {
				t.Errorf("worker exited %d: %s", code, stderr)
			}
		case <-time.After(30 * time.Second):
			t.Error("worker did not stop within 30 s of SIGINT-equivalent cancel")
		}
	})
	addr = fmt.Sprintf("127.0.0.1:%d", port)
	deadline := time.Now().Add(60 * time.Second)
	for !strings.Contains(stderr.String(), "worker polling") {
		if time.Now().After(deadline) {
			t.Fatalf("worker --dev did not start: %s", stderr)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return addr, stderr
}

func submitTo(t *testing.T, dir, addr string, args ...string) submitResult {
	t.Helper()
	var stdout, stderr testinfra.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	env := func(k string) string {
		if k == "TEMPORAL_ADDRESS" {
			return addr
		}
		return ""
	}
	code := cli.Submit(ctx, &cli.IO{Stdin: strings.NewReader(""), Stdout: &stdout, Stderr: &stderr, Getenv: env, Dir: dir}, args)
	return submitResult{code: code, stdout: stdout.String(), stderr: stderr.String()}
}

// A batch through `worker --dev --metrics-addr` leaves batchpipe_ item
// counters and temporal_ SDK series at /metrics.
func TestWorkerDevMetrics(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a Temporal server")
	}
	dir := t.TempDir()
	metricsPort := testinfra.FreeTCPPort(t)
	uiPort := testinfra.FreeTCPPort(t)
	addr, _ := startDevWorker(t, dir, "--metrics-addr", fmt.Sprintf("127.0.0.1:%d", metricsPort), "--ui-port", fmt.Sprint(uiPort))
	writeLines(t, dir+"/in.jsonl", exampleItems(120, "m", 5, 17))
	r := submitTo(t, dir, addr, "--batch-id", "met1", "--shard-size", "40", "in.jsonl")
	if r.code != cli.ExitWithFailures {
		t.Fatalf("submit: %s", r)
	}
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", metricsPort))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	text := string(body)
	for _, want := range []string{
		`batchpipe_items_total{processor="example",status="succeeded"} 118`,
		`batchpipe_items_total{processor="example",status="failed"} 2`,
		`batchpipe_shard_duration_seconds_count{processor="example"} 3`,
		`batchpipe_store_operations_total{operation="put",result="ok"}`,
		`batchpipe_store_bytes_total{operation="put"}`,
		"batchpipe_batches_running",
		"temporal_workflow_completed",
		"temporal_activity_execution_latency",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if t.Failed() {
		t.Logf("/metrics:\n%s", text)
	}
	// The Web UI answers and its API lists the batch and its shards.
	for path, want := range map[string]string{
		"/":                                    "<html",
		"/api/v1/namespaces/default/workflows": `"met1"`,
	} {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d%s", uiPort, path))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(body), want) {
			t.Errorf("Web UI %s: %d, body lacks %q", path, resp.StatusCode, want)
		}
	}
}

func TestWorkerBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"--log-format", "xml"},
		{"extra-arg"},
		{"--metrics-addr", "not-an-address"},
		{"--max-concurrent-shards", "0"},
		{"--exec-processes", "-1"},
	} {
		var stderr testinfra.Buffer
		code := cli.Worker(context.Background(), &cli.IO{Stdin: strings.NewReader(""), Stdout: io.Discard, Stderr: &stderr, Getenv: noEnv, Dir: t.TempDir()}, args)
		if code != cli.ExitUsage {
			t.Errorf("worker %v: exit %d, want 2: %s", args, code, stderr.String())
		}
	}
	// No Temporal configured and no --dev: a clear error at once.
	var stderr testinfra.Buffer
	code := cli.Worker(context.Background(), &cli.IO{Stdin: strings.NewReader(""), Stdout: io.Discard, Stderr: &stderr, Getenv: noEnv, Dir: t.TempDir()}, nil)
	if code != cli.ExitUsage || !strings.Contains(stderr.String(), "TEMPORAL_ADDRESS") {
		t.Errorf("worker without Temporal: exit %d: %s", code, stderr.String())
	}
}

// The Grafana dashboard in deploy/ parses and queries only series that
// a worker with --metrics-addr exports (batchpipe_ ones are checked by name).
func TestGrafanaDashboardMatchesMetrics(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(repoRoot(t), "deploy", "grafana", "batchpipe-dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
	}
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	pipeline.NewMetrics(reg)
	known := map[string]bool{"batchpipe_batches_running": true}
	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		known[mf.GetName()] = true
	}
	for _, name := range []string{"batchpipe_items_total", "batchpipe_item_duration_seconds", "batchpipe_shard_duration_seconds", "batchpipe_shards_in_progress", "batchpipe_store_operations_total", "batchpipe_store_bytes_total"} {
		known[name] = true // vectors without samples are not gathered
	}
	series := regexp.MustCompile(`batchpipe_[a-z_]+`)
	if len(dash.Panels) < 6 {
		t.Fatalf("dashboard has %d panels", len(dash.Panels))
	}
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			for _, s := range series.FindAllString(tg.Expr, -1) {
				base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(s, "_bucket"), "_count"), "_sum")
				if !known[base] {
					t.Errorf("panel %q queries %s, which no worker exports", p.Title, s)
				}
			}
		}
	}
}

// A processor only a custom worker registers runs through `submit` when a
// Temporal service is configured: submit notes that it does not know the
// name and the worker runs it. A name no worker has fails the batch at its
// first shard, naming the processor.
func TestSubmitCustomWorkerProcessor(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a Temporal server")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	srv := temporaltest.New(ctx, t, devserver.Options{Port: testinfra.FreeDevServerPort(t)})
	c := srv.Client
	custom := &pipeline.Registry{}
	custom.Register("shout", pipeline.ProcessorFunc(func(_ context.Context, in json.RawMessage) (json.RawMessage, error) {
		return json.RawMessage(strings.ToUpper(string(in))), nil
	}))
	w := pipeline.NewWorker(c, pipeline.DefaultTaskQueue, pipeline.WorkerOptions{Processors: custom, Logger: slog.New(slog.DiscardHandler),
		Trust: pipeline.Trust{Schemes: []string{"file"}}}) // submit's default store is file://
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	defer w.Stop()

	dir := t.TempDir()
	writeLines(t, filepath.Join(dir, "in.jsonl"), [][]byte{[]byte(`{"text":"abc"}`), []byte(`{"text":"héllo"}`)})
	r := submitTo(t, dir, srv.FrontendAddr(), "--batch-id", "custom1", "--processor", "shout", "in.jsonl")
	if r.code != cli.ExitOK || !strings.Contains(r.stderr, `processor "shout" is not built into submit`) {
		t.Fatalf("submit --processor shout: %s", r)
	}
	r = submitTo(t, dir, srv.FrontendAddr(), "results", "custom1")
	var outputs []string
	for _, line := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
		var res struct{ Output json.RawMessage }
		if err := json.Unmarshal([]byte(line), &res); err != nil {
			t.Fatalf("results line %q: %v", line, err)
		}
		outputs = append(outputs, string(res.Output))
	}
	if want := []string{`{"TEXT":"ABC"}`, `{"TEXT":"HÉLLO"}`}; r.code != cli.ExitOK || !slices.Equal(outputs, want) {
		t.Fatalf("results: outputs %q, want %q (%s)", outputs, want, r)
	}

	r = submitTo(t, dir, srv.FrontendAddr(), "--batch-id", "custom2", "--processor", "no-such", "in.jsonl")
	if r.code != cli.ExitFailed || !strings.Contains(r.stdout, `reason: shard 0 failed: this worker cannot run the batch: unknown processor "no-such" (known: [shout]`) {
		t.Fatalf("submit --processor no-such: want exit %d naming the processor: %s", cli.ExitFailed, r)
	}
}
