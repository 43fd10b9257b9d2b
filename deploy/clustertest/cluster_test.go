package clustertest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
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

	"github.com/batchpipe/batchpipe/internal/testinfra"
	"github.com/batchpipe/batchpipe/manifests"
)

// Sizes of the cluster run.
const (
	clusterItems     = 20000
	clusterShardSize = 200
	clusterWorkers   = 3
)

// workerFlags are the flags every worker process of the cluster gets (after
// --store); deploy/compose.yaml's worker must use a subset of them, so that
// what is tested here is what the compose file runs.
var workerFlags = []string{"--metrics-addr", "127.0.0.1:0", "--log-format", "json", "-v"}

func TestMain(m *testing.M) {
	code := m.Run()
	testinfra.StopMinIO()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

// binaries builds cmd/worker and cmd/submit once per test process into a
// temporary directory and returns it.
func binaries(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		root, err := testinfra.RepoRoot()
		if err != nil {
			buildErr = err
			return
		}
		if binDir, err = os.MkdirTemp("", "batchpipe-clustertest-"); err != nil {
			buildErr = err
			return
		}
		start := time.Now()
		cmd := exec.Command("go", "build", "-o", binDir+string(filepath.Separator), "./cmd/worker", "./cmd/submit")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build ./cmd/worker ./cmd/submit: %v\n%s", err, out)
			return
		}
		fmt.Fprintf(os.Stderr, "clustertest: built worker and submit in %.1fs\n", time.Since(start).Seconds())
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binDir
}

// baseEnv is the test's environment without any Temporal or AWS settings
// and without a home directory's config files (Temporal profiles, ~/.aws):
// each process gets only what the test gives it, as in a deployment.
func baseEnv(home string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "TEMPORAL_") || strings.HasPrefix(kv, "AWS_") || strings.HasPrefix(kv, "MINIO_") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, "HOME="+home, "XDG_CONFIG_HOME="+filepath.Join(home, ".config"))
}

// process is a child process whose combined output is kept (and written to
// a log file) for the test to read.
type process struct {
	name string
	cmd  *exec.Cmd
	out  *output
	done chan struct{}
	err  error // Wait's result, set before done is closed
}

type output struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	file io.Writer
	cond *sync.Cond
}

func (o *output) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.buf.Write(p)
	o.file.Write(p)
	o.cond.Broadcast()
	return len(p), nil
}

func (o *output) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.buf.String()
}

func (p *process) tail() string { return testinfra.Tail(p.out.String(), 4000) }

// start runs bin with args in dir; the process is stopped (SIGTERM) when the
// test ends if it is still running.
func start(t *testing.T, name, dir string, env []string, bin string, args ...string) *process {
	t.Helper()
	logFile, err := os.Create(filepath.Join(dir, name+".log"))
	if err != nil {
		t.Fatal(err)
	}
	out := &output{file: logFile}
	out.cond = sync.NewCond(&out.mu)
	cmd := exec.Command(bin, args...)
	cmd.Dir, cmd.Env, cmd.Stdout, cmd.Stderr = dir, env, out, out
	p := &process{name: name, cmd: cmd, out: out, done: make(chan struct{})}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	go func() {
		p.err = cmd.Wait()
		logFile.Close()
		close(p.done)
		out.mu.Lock()
		out.cond.Broadcast()
		out.mu.Unlock()
	}()
	t.Cleanup(func() { p.stop(t) })
	return p
}

// waitFor waits until the process has printed a line containing s and
// returns that line; it fails the test if the process exits first or the
// line does not come within timeout.
func (p *process) waitFor(t *testing.T, s string, timeout time.Duration) string {
	t.Helper()
	line, err := p.waitLine(s, timeout)
	if err != nil {
		t.Fatalf("%v:\n%s", err, p.tail())
	}
	return line
}

// waitLine is waitFor returning an error.
func (p *process) waitLine(s string, timeout time.Duration) (string, error) {
	timer := time.AfterFunc(timeout, func() {
		p.out.mu.Lock()
		p.out.cond.Broadcast()
		p.out.mu.Unlock()
	})
	defer timer.Stop()
	deadline := time.Now().Add(timeout)
	p.out.mu.Lock()
	defer p.out.mu.Unlock()
	for {
		for line := range strings.Lines(p.out.buf.String()) {
			if strings.Contains(line, s) {
				return strings.TrimSpace(line), nil
			}
		}
		select {
		case <-p.done:
			return "", fmt.Errorf("%s exited (%v) before printing %q", p.name, p.err, s)
		default:
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("%s did not print %q within %v", p.name, s, timeout)
		}
		p.out.cond.Wait()
	}
}

// stop sends SIGTERM and waits for the process to exit; it reports whether
// it exited cleanly (status 0) within 30 s.
func (p *process) stop(t *testing.T) error {
	select {
	case <-p.done:
		return p.err
	default:
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return p.err
	case <-time.After(30 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("%s did not stop within 30 s of SIGTERM", p.name)
	}
}

// TestCluster runs the topology of deploy/compose.yaml as processes: one
// Temporal server, MinIO, three workers, and a 20,000-item batch submitted
// over s3://; then it checks the manifest item by item and that every
// worker did some of the work.
func TestCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a Temporal server, MinIO and four batchpipe processes")
	}
	began := time.Now()
	minio := testinfra.MinIOEndpoint(t)
	bucket := testinfra.NewBucket(t, minio)
	bin := binaries(t)
	dir := t.TempDir()
	env := baseEnv(dir)

	// Temporal: the embedded server alone, as `temporal server start-dev`
	// would be in a deployment. Its ports are picked at random, so retry
	// if one was taken between the check and the start.
	var temporal *process
	var temporalAddr string
	for attempt := 1; ; attempt++ {
		port, err := testinfra.FreePortSpan(8)
		if err != nil {
			t.Fatal(err)
		}
		name := "temporal"
		if attempt > 1 {
			name += strconv.Itoa(attempt)
		}
		temporal = start(t, name, dir, env, filepath.Join(bin, "worker"),
			"--dev", "--dev-server-only", "--no-ui", "--dev-port", strconv.Itoa(port), "--dev-dir", filepath.Join(dir, "temporal-state-"+strconv.Itoa(attempt)))
		line, err := temporal.waitLine("embedded Temporal server on ", 90*time.Second)
		if err == nil {
			_, after, _ := strings.Cut(line, "embedded Temporal server on ")
			temporalAddr, _, _ = strings.Cut(after, " ")
			break
		}
		if attempt == 3 {
			t.Fatalf("temporal: %v\n%s", err, temporal.tail())
		}
		t.Logf("temporal did not start (attempt %d): %v; retrying on other ports", attempt, err)
		temporal.stop(t)
	}
	t.Logf("Temporal on %s, MinIO on %s (%.1fs)", temporalAddr, minio.Endpoint, time.Since(began).Seconds())

	store := fmt.Sprintf("s3://%s/cluster?endpoint=http://%s&path_style=true&region=us-east-1", bucket, minio.Endpoint)
	clusterEnv := append(env,
		"TEMPORAL_ADDRESS="+temporalAddr,
		"TEMPORAL_NAMESPACE=default",
		"AWS_ACCESS_KEY_ID="+minio.AccessKey,
		"AWS_SECRET_ACCESS_KEY="+minio.SecretKey,
		"AWS_REGION=us-east-1",
		"AWS_EC2_METADATA_DISABLED=true",
	)

	workers := make([]*process, clusterWorkers)
	metricsURLs := make([]string, clusterWorkers)
	for i := range workers {
		args := append([]string{"--store", store}, workerFlags...)
		workers[i] = start(t, fmt.Sprintf("worker%d", i+1), dir, clusterEnv, filepath.Join(bin, "worker"), args...)
	}
	for i, w := range workers {
		line := w.waitFor(t, "metrics on http://", 60*time.Second)
		metricsURLs[i] = line[strings.Index(line, "http://"):]
		w.waitFor(t, "worker polling task queue", 60*time.Second)
	}
	t.Logf("%d workers polling (%.1fs)", clusterWorkers, time.Since(began).Seconds())

	// The input: 20,000 items for the built-in example processor.
	inputPath := filepath.Join(dir, "inputs.jsonl")
	var input bytes.Buffer
	for i := range clusterItems {
		fmt.Fprintf(&input, `{"arg1":"item %d","arg2":"%x"}`+"\n", i, i*7919)
	}
	if err := os.WriteFile(inputPath, input.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	var rnd [3]byte
	rand.Read(rnd[:])
	batchID := "cluster-" + hex.EncodeToString(rnd[:])

	submitStart := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	sub := exec.CommandContext(ctx, filepath.Join(bin, "submit"),
		"--store", store, "--shard-size", strconv.Itoa(clusterShardSize), "--batch-id", batchID, inputPath)
	sub.Dir, sub.Env, sub.Stdout, sub.Stderr = dir, clusterEnv, &stdout, &stderr
	if err := sub.Run(); err != nil {
		t.Fatalf("submit: %v\n--- stdout:\n%s--- stderr:\n%s", err, stdout.String(), stderr.String())
	}
	t.Logf("submit of %d items took %.1fs:\n%s", clusterItems, time.Since(submitStart).Seconds(), stdout.String())

	manifestKey := "cluster/" + manifests.ManifestKey(batchID)
	if !strings.Contains(stdout.String(), "manifest: "+manifestKey+"\n") {
		t.Errorf("submit's output does not name the manifest %s:\n%s", manifestKey, stdout.String())
	}
	checkManifest(t, ctx, fmt.Sprintf("s3://%s/%s?endpoint=http://%s&path_style=true&region=us-east-1", bucket, manifestKey, minio.Endpoint), minio, batchID)

	// Every worker did part of the work: its batchpipe_items_total and its
	// "shard done" log records.
	var items, shards float64
	for i, w := range workers {
		n := scrapeItems(t, metricsURLs[i])
		s := shardsDone(t, w)
		t.Logf("%s: %v items, %d shards", w.name, n, s)
		if n <= 0 || s <= 0 {
			t.Errorf("%s processed %v items in %d shards; every worker should have done some of the batch", w.name, n, s)
		}
		items += n
		shards += float64(s)
	}
	if items < clusterItems || shards < clusterItems/clusterShardSize {
		t.Errorf("workers processed %v items in %v shards in all, want at least %d in %d", items, shards, clusterItems, clusterItems/clusterShardSize)
	}

	for _, w := range append(workers, temporal) {
		if err := w.stop(t); err != nil {
			t.Errorf("%s did not stop cleanly on SIGTERM: %v\n%s", w.name, err, w.tail())
		}
	}
	t.Logf("cluster test took %.1fs", time.Since(began).Seconds())
}

// checkManifest opens the batch's manifest over s3:// (credentials from the
// AWS environment, as any reader's), verifies every object and checks every
// item's output.
func checkManifest(t *testing.T, ctx context.Context, manifestURL string, minio testinfra.MinIOServer, batchID string) {
	t.Helper()
	t.Setenv("AWS_ACCESS_KEY_ID", minio.AccessKey)
	t.Setenv("AWS_SECRET_ACCESS_KEY", minio.SecretKey)
	t.Setenv("AWS_REGION", "us-east-1")
	batch, err := manifests.OpenURL(ctx, manifestURL)
	if err != nil {
		t.Fatal(err)
	}
	defer batch.Close()
	if err := batch.Verify(ctx); err != nil {
		t.Fatalf("verify: %v", err)
	}
	m := batch.Manifest
	shards := clusterItems / clusterShardSize
	if m.BatchID != batchID || m.Status != manifests.StatusSucceeded || m.Processor != "example" ||
		m.Counts != (manifests.Counts{Items: clusterItems, Succeeded: clusterItems}) ||
		m.Input.Items != clusterItems || m.Input.Shards != shards || m.Input.ShardSize != clusterShardSize ||
		len(m.Results) != shards || m.Failures != nil {
		t.Fatalf("manifest: batch %s, status %s, processor %s, counts %+v, input %+v, %d result objects, failures %v; "+
			"want %s succeeded with processor example, %d items in %d shards of %d, no failures",
			m.BatchID, m.Status, m.Processor, m.Counts, m.Input, len(m.Results), m.Failures, batchID, clusterItems, shards, clusterShardSize)
	}
	next := int64(0)
	bad := 0
	for l, err := range batch.Results(ctx) {
		if err != nil {
			t.Fatal(err)
		}
		if l.Index != next {
			t.Fatalf("result line for index %d, want %d", l.Index, next)
		}
		next++
		var out struct {
			Arg1      string   `json:"arg1"`
			Arg2      string   `json:"arg2"`
			RandomVal *float64 `json:"random_val"`
		}
		err := json.Unmarshal(l.Output, &out)
		want1, want2 := fmt.Sprintf("activity arg1: item %d", l.Index), fmt.Sprintf("activity arg2: %x", l.Index*7919)
		if l.Status != manifests.ItemSucceeded || err != nil || out.Arg1 != want1 || out.Arg2 != want2 ||
			out.RandomVal == nil || *out.RandomVal < 0 || *out.RandomVal >= 1 || l.Attempts < 1 {
			if bad++; bad <= 10 {
				t.Errorf("item %d: %+v (output %s); want succeeded with arg1 %q, arg2 %q and a random_val in [0, 1)", l.Index, l, l.Output, want1, want2)
			}
		}
	}
	if next != clusterItems {
		t.Errorf("%d result lines, want %d", next, clusterItems)
	}
	if bad > 0 {
		t.Errorf("%d items with a wrong result", bad)
	}
}

// scrapeItems reads a worker's /metrics and returns its
// batchpipe_items_total, summed over processors and outcomes.
func scrapeItems(t *testing.T, url string) float64 {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("metrics: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("metrics: GET %s: %s", url, resp.Status)
	}
	var sum float64
	seen := false
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "batchpipe_items_total{") && !strings.HasPrefix(line, "batchpipe_items_total ") {
			continue
		}
		fields := strings.Fields(line)
		v, err := strconv.ParseFloat(fields[len(fields)-1], 64)
		if err != nil {
			t.Fatalf("metrics: bad line %q", line)
		}
		sum, seen = sum+v, true
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("metrics: %v", err)
	}
	if !seen {
		t.Logf("metrics at %s have no batchpipe_items_total", url)
	}
	return sum
}

// shardsDone counts the worker's "shard done" debug records (JSON logs).
func shardsDone(t *testing.T, p *process) int {
	t.Helper()
	n := 0
	for line := range strings.Lines(p.out.String()) {
		if !strings.HasPrefix(line, "{") {
			continue
		}
		var rec struct {
			Msg string `json:"msg"`
		}
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Errorf("%s: a log line that is not JSON: %q", p.name, line)
			continue
		}
		if rec.Msg == "shard done" {
			n++
		}
	}
	return n
}
