package clustertest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
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
	clusterItems     = 100000
	clusterShardSize = 500
	clusterWorkers   = 3
)

// workerFlags are the flags every worker process of the cluster gets (after
// --store); deploy/compose.yaml's worker must use a subset of them, so that
// what is tested here is what the compose file runs.
var workerFlags = []string{"--metrics-addr", "127.0.0.1:0", "--log-format", "json", "-v"}

func TestMain(m *testing.M) {
	code := m.Run()
	testinfra.StopMinIO()
	for _, d := range []string{binDir, temporalBuild.dir} {
		if d != "" {
			os.RemoveAll(d)
		}
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
func binaries(t testing.TB) string {
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

var temporalBuild struct {
	once sync.Once
	dir  string
	bins testinfra.TemporalBinaries
	err  error
}

// temporalBinaries builds the Temporal server and its SQL tool once per
// test process. A build that fails skips the test, or fails it under CI.
func temporalBinaries(t testing.TB) testinfra.TemporalBinaries {
	t.Helper()
	b := &temporalBuild
	b.once.Do(func() {
		if b.dir, b.err = os.MkdirTemp("", "batchpipe-temporal-"); b.err != nil {
			return
		}
		start := time.Now()
		b.bins, b.err = testinfra.BuildTemporal(b.dir)
		fmt.Fprintf(os.Stderr, "clustertest: built the Temporal server and SQL tool in %.1fs\n", time.Since(start).Seconds())
	})
	if b.err != nil {
		testinfra.Missing(t, "the Temporal server", b.err,
			"it is built from go.temporal.io/server in go.mod (cmd/server, cmd/tools/sql); the first build needs the module proxy")
	}
	return b.bins
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

// start runs bin with args in dir (its output also in dir/<name>.log); it
// is stopped (SIGTERM, then its process group killed) when the test ends.
func start(t testing.TB, name, dir string, env []string, bin string, args ...string) *testinfra.Process {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Dir, cmd.Env = dir, env
	p, err := testinfra.StartProcess(name, filepath.Join(dir, name+".log"), cmd)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Stop(syscall.SIGTERM, 30*time.Second) })
	return p
}

// waitFor waits until p has printed a line containing s and returns it.
func waitFor(t testing.TB, p *testinfra.Process, s string, timeout time.Duration) string {
	t.Helper()
	line, err := p.WaitFor(s, timeout)
	if err != nil {
		t.Fatal(err)
	}
	return line
}

// TestCluster runs the topology of deploy/compose.yaml as processes:
// PostgreSQL, a Temporal cluster on it (frontend, history, matching and
// worker services, one process each), MinIO and three workers; a
// 100,000-item batch is submitted over s3://, one worker is killed with
// SIGKILL and the history service restarted while it runs, and the
// manifest is then checked item by item.
func TestCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL, a Temporal cluster, MinIO and four batchpipe processes")
	}
	began := time.Now()
	step := func(format string, args ...any) {
		t.Logf("%s (%.1fs)", fmt.Sprintf(format, args...), time.Since(began).Seconds())
	}
	d := startDeployment(t, step)
	dir, bin, pg, cluster, minio, bucket, store, clusterEnv := d.dir, d.bin, d.pg, d.temporal, d.minio, d.bucket, d.store, d.env

	workers := make([]*testinfra.Process, clusterWorkers)
	metricsURLs := make([]string, clusterWorkers)
	for i := range workers {
		args := append([]string{"--store", store}, workerFlags...)
		workers[i] = start(t, fmt.Sprintf("worker%d", i+1), dir, clusterEnv, filepath.Join(bin, "worker"), args...)
	}
	for i, w := range workers {
		line := waitFor(t, w, "metrics on http://", 60*time.Second)
		metricsURLs[i] = line[strings.Index(line, "http://"):]
		waitFor(t, w, "worker polling task queue", 60*time.Second)
	}
	step("%d workers polling", clusterWorkers)

	// The input: 100,000 items for the built-in example processor.
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
	sub := start(t, "submit", dir, clusterEnv, filepath.Join(bin, "submit"),
		"--store", store, "--shard-size", strconv.Itoa(clusterShardSize), "--batch-id", batchID, inputPath)
	logs := func() string {
		var b strings.Builder
		for _, p := range append([]*testinfra.Process{sub}, workers...) {
			fmt.Fprintf(&b, "--- %s:\n%s\n", p.Name, testinfra.Tail(p.Output(), 2000))
		}
		return b.String() + cluster.Logs()
	}
	victim, doneAtRestart := injectFaults(t, sub, workers, cluster, logs)
	select {
	case <-sub.Done():
	case <-time.After(6 * time.Minute):
		t.Fatalf("the batch did not finish within 6 minutes\n%s", logs())
	}
	if _, err := sub.Exited(); err != nil {
		t.Fatalf("submit: %v\n%s", err, logs())
	}
	step("submit of %d items took %.1fs", clusterItems, time.Since(submitStart).Seconds())
	t.Logf("submit:\n%s", sub.Output())

	manifestKey := "cluster/" + manifests.ManifestKey(batchID)
	if !strings.Contains(sub.Output(), "manifest: "+manifestKey+"\n") {
		t.Errorf("submit's output does not name the manifest %s:\n%s", manifestKey, sub.Output())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	checkManifest(t, ctx, fmt.Sprintf("s3://%s/%s?endpoint=http://%s&path_style=true&region=us-east-1", bucket, manifestKey, minio.Endpoint), minio, batchID)

	// Every worker did part of the work (the killed one before it was
	// killed): its "shard done" log records, and for the others their
	// batchpipe_items_total; and shards finished after the restart.
	var items, shards int
	for i, w := range workers {
		s, n := shardsDone(t, w)
		items, shards = items+n, shards+s
		if w == victim {
			t.Logf("%s (killed): %d items in %d shards", w.Name, n, s)
			if s == 0 {
				t.Errorf("%s finished no shard before it was killed", w.Name)
			}
			continue
		}
		m := scrapeItems(t, metricsURLs[i])
		t.Logf("%s: %d items in %d shards, batchpipe_items_total %v", w.Name, n, s, m)
		if s == 0 || m <= 0 {
			t.Errorf("%s processed %v items in %d shards; every worker should have done some of the batch", w.Name, m, s)
		}
	}
	if items < clusterItems || shards < clusterItems/clusterShardSize {
		t.Errorf("workers logged %d items in %d shards in all, want at least %d in %d", items, shards, clusterItems, clusterItems/clusterShardSize)
	}
	if shards <= doneAtRestart {
		t.Errorf("no shard finished after the history service was restarted (%d before, %d in all)", doneAtRestart, shards)
	}

	for _, w := range workers {
		if w == victim {
			continue
		}
		if err := w.Stop(syscall.SIGTERM, 30*time.Second); err != nil {
			t.Errorf("%s did not stop cleanly on SIGTERM: %v\n%s", w.Name, err, w.Tail())
		}
	}
	if err := cluster.Stop(); err != nil {
		t.Errorf("%v\n%s", err, cluster.Logs())
	}
	if err := pg.Stop(); err != nil {
		t.Errorf("postgres did not stop cleanly: %v\n%s", err, pg.Tail())
	}
	step("cluster test done")
}

// injectFaults waits for the batch to get going, kills the last worker
// with SIGKILL once a fifth of the shards are done (and it did one of
// them), then restarts Temporal's history service at two fifths. It
// returns the killed worker and how many shards were done at the restart;
// the batch ending before both faults fails the test.
func injectFaults(t *testing.T, sub *testinfra.Process, workers []*testinfra.Process, cluster *testinfra.TemporalCluster, logs func() string) (*testinfra.Process, int) {
	t.Helper()
	total := clusterItems / clusterShardSize
	done := func() int {
		n := 0
		for _, w := range workers {
			n += strings.Count(w.Output(), `"msg":"shard done"`)
		}
		return n
	}
	victim := workers[len(workers)-1]
	deadline := time.Now().Add(4 * time.Minute)
	killed := false
	for {
		if exited, _ := sub.Exited(); exited || time.Now().After(deadline) {
			t.Fatalf("the batch ended or stalled before the faults (%d of %d shards done, worker killed: %v)\n%s", done(), total, killed, logs())
		}
		n := done()
		switch {
		case !killed && n >= total/5 && strings.Contains(victim.Output(), `"msg":"shard done"`):
			victim.Kill()
			killed = true
			t.Logf("killed %s (kill -9) with %d of %d shards done", victim.Name, n, total)
		case killed && n >= 2*total/5:
			began := time.Now()
			if err := cluster.Restart("history"); err != nil {
				t.Fatalf("restarting history: %v\n%s", err, logs())
			}
			t.Logf("restarted the history service with %d of %d shards done (%.1fs)", n, total, time.Since(began).Seconds())
			return victim, n
		}
		time.Sleep(50 * time.Millisecond)
	}
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

// shardsDone counts the worker's "shard done" debug records (JSON logs)
// and the items they name.
func shardsDone(t *testing.T, p *testinfra.Process) (shards, items int) {
	t.Helper()
	for line := range strings.Lines(p.Output()) {
		if !strings.HasPrefix(line, "{") || !strings.HasSuffix(line, "\n") { // a killed worker's last line may be cut
			continue
		}
		var rec struct {
			Msg   string `json:"msg"`
			Items int    `json:"items"`
		}
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Errorf("%s: a log line that is not JSON: %q", p.Name, line)
			continue
		}
		if rec.Msg == "shard done" {
			shards, items = shards+1, items+rec.Items
		}
	}
	return shards, items
}
