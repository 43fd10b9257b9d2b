package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"go.temporal.io/sdk/client"

	"github.com/batchpipe/batchpipe"
	"github.com/batchpipe/batchpipe/blobstore"
	"github.com/batchpipe/batchpipe/manifests"
	"github.com/batchpipe/batchpipe/pipeline"
)

// childSampleAbove is the number of children above which only a sample of
// childSample children's histories is read (every child has the same
// shape: a start and one activity).
const (
	childSampleAbove = 300
	childSample      = 100
)

// batchOpts are a batchpipe run's settings; zero values keep the
// product's defaults (and the bench's -processor).
type batchOpts struct {
	ShardSize       int // 0: the automatic shard size submit picks
	Concurrency     int
	ItemParallelism int
	ItemsPerCall    int
	Processor       string
	// WorkerShards is the worker's MaxConcurrentActivityExecutionSize
	// (worker --max-concurrent-shards); 0 leaves pipeline.NewWorker's.
	WorkerShards int
}

// runBatchpipe runs one batch the way `submit` does (stage the input into
// the store, save the spec, start BatchWorkflow, wait while querying
// progress every 500 ms, read the manifest) against the bench's embedded
// server, with the worker in its own process.
func runBatchpipe(ctx context.Context, env *env, scenario string, n int, input, storeURL string, bo batchOpts) (Row, error) {
	opts := pipeline.DefaultOptions()
	opts.Processor = env.cfg.Processor
	if bo.Processor != "" {
		opts.Processor = bo.Processor
	}
	if bo.Concurrency > 0 {
		opts.Concurrency = bo.Concurrency
	}
	opts.ShardSize = bo.ShardSize
	if opts.ShardSize <= 0 {
		opts.ShardSize = embeddedShardSize(n, opts.Concurrency) // what submit picks for an n-line file
	}
	if bo.ItemParallelism > 0 {
		opts.ItemParallelism = bo.ItemParallelism
	}
	if bo.ItemsPerCall > 1 {
		opts.ItemsPerCall = bo.ItemsPerCall
	}
	row := Row{Scenario: scenario, Items: int64(n), ShardSize: opts.ShardSize, Concurrency: opts.Concurrency, RSSOf: "worker process"}
	name := fmt.Sprintf("%s-%d-s%d-c%d", scenario, n, opts.ShardSize, opts.Concurrency)
	tq := env.taskQueue(scenario, n)
	var workerArgs []string
	if bo.WorkerShards > 0 {
		workerArgs = append(workerArgs, "-max-concurrent-shards", fmt.Sprint(bo.WorkerShards))
	}
	w, err := startWorker(ctx, env, tq, name, workerArgs...)
	if err != nil {
		return row, err
	}
	defer func() {
		if w != nil {
			w.kill()
		}
	}()
	batchID := fmt.Sprintf("%s-%d-%s", name, env.seq, env.runTag) // env.taskQueue counted this run
	queriesBefore := env.calls.get("QueryWorkflow")

	start := time.Now()
	c, err := batchpipe.NewClient(ctx, batchpipe.Config{Store: storeURL, TaskQueue: tq, Temporal: env.client})
	if err != nil {
		return row, err
	}
	defer c.Close()
	b, err := c.Submit(ctx, batchpipe.Request{BatchID: batchID, Input: input, Processor: opts.Processor,
		ShardSize: opts.ShardSize, Concurrency: opts.Concurrency, ItemParallelism: opts.ItemParallelism,
		ItemsPerCall: opts.ItemsPerCall})
	if err != nil {
		return row, fmt.Errorf("submitting: %w", err)
	}
	stageDone := time.Now()
	// Wait queries progress every 500 ms, as submit's progress bar does.
	res, err := b.Wait(ctx, func(batchpipe.Progress) {})
	if err != nil {
		return row, fmt.Errorf("batch %s: %w", batchID, err)
	}
	m := res.Manifest
	row.Wall = time.Since(start)
	row.Phases = map[string]float64{"stage": stageDone.Sub(start).Seconds(), "run": time.Since(stageDone).Seconds()}
	if m.Counts.Items != int64(n) || m.Status != manifests.StatusSucceeded {
		return row, fmt.Errorf("batch %s: manifest says %s with %d items, want succeeded with %d", batchID, m.Status, m.Counts.Items, n)
	}

	rep, rss, err := w.stop()
	w = nil
	if err != nil {
		return row, err
	}
	row.WorkerRSS, row.AnonRSS = rss, rep.PeakAnonRSS
	row.WorkerCPUSeconds = rep.CPUSeconds
	row.gauge = rep.Gauge
	row.Actions.Heartbeats = rep.heartbeats()
	row.Actions.Queries = env.calls.get("QueryWorkflow") - queriesBefore
	if err := walkBatch(ctx, env.client, &row, batchID, b.Shards()); err != nil {
		return row, err
	}
	return row, nil
}

// walkBatch reads the histories of a batch (every parent run; every child,
// or a sample of them) into row: runs, largest history, actions.
func walkBatch(ctx context.Context, c client.Client, row *Row, batchID string, shards int) error {
	runs, err := runChain(ctx, c, batchID)
	if err != nil {
		return err
	}
	row.ParentRuns = len(runs)
	for _, h := range runs {
		row.observe(h)
		row.Actions = row.Actions.Add(HistoryActions(h))
	}
	var tl timeline
	row.ChildRuns = shards
	k := shards
	if shards > childSampleAbove {
		k = childSample
		row.Notes = append(row.Notes, fmt.Sprintf("children's actions extrapolated from %d of %d child histories", k, shards))
	}
	var sample Actions
	for j := range k {
		i := j * shards / k
		h, err := fetchHistory(ctx, c, fmt.Sprintf("%s/shard-%d", batchID, i), "")
		if err != nil {
			return err
		}
		row.observe(h)
		sample = sample.Add(HistoryActions(h))
		tl.child(h)
	}
	row.Actions = row.Actions.Add(sample.Scale(int64(shards), int64(k)))
	row.Timeline = tl.summary(runs)
	return nil
}

var submitSummary = regexp.MustCompile(`(?m)^batch (\S+) (\S+): (\d+) items`)

// runSubmit runs the whole `submit` program on the input in a fresh
// directory, as a user would on a fresh machine: its embedded Temporal
// server (SQLite file under .batchpipe/), in-process worker and the file
// store. Wall time and peak RSS are the process's. Its histories are then
// read by `bench inspect` on the state it left.
func runSubmit(ctx context.Context, env *env, n int, input string) (Row, error) {
	row := Row{Scenario: "submit", Items: int64(n), ShardSize: embeddedShardSize(n, pipeline.DefaultConcurrency),
		Concurrency: pipeline.DefaultConcurrency, RSSOf: "submit process (server + worker)"}
	dir := env.tempPath(fmt.Sprintf("submit-%d", n))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return row, err
	}
	cmd := exec.CommandContext(ctx, env.submitBin, input)
	cmd.Dir = dir
	cmd.Env = envFor([]string{"TEMPORAL_"})
	cmd.SysProcAttr = deathSignal()
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err := cmd.Start()
	if err == nil {
		rss := watchCmd(cmd, 20*time.Millisecond)
		err = cmd.Wait()
		row.Wall = time.Since(start)
		row.WorkerRSS, row.AnonRSS = rss.Peak()
	}
	if err != nil {
		return row, fmt.Errorf("submit: %v\n%s", err, tail(out.String(), 2000))
	}
	match := submitSummary.FindStringSubmatch(out.String())
	if match == nil || match[2] != manifests.StatusSucceeded || match[3] != fmt.Sprint(n) {
		return row, fmt.Errorf("submit: unexpected output:\n%s", tail(out.String(), 2000))
	}
	batchID := match[1]
	b, err := blobstore.Open(ctx, "file://"+filepath.Join(dir, ".batchpipe", "blobs"))
	if err != nil {
		return row, err
	}
	batch, err := manifests.Open(ctx, b, batchID)
	b.Close()
	if err != nil {
		return row, err
	}
	m := batch.Manifest
	if m.Counts.Items != int64(n) {
		return row, fmt.Errorf("submit: manifest counts %d items, want %d", m.Counts.Items, n)
	}
	row.ShardSize = m.Input.ShardSize
	if err := inspectSubmit(ctx, env, &row, filepath.Join(dir, ".batchpipe", "embedded"), batchID, m.Input.Shards); err != nil {
		row.Notes = append(row.Notes, "histories not read: "+err.Error())
	}
	return row, nil
}

// inspectSubmit reads the histories a finished submit left in its state
// directory, by running `bench inspect` (a server on that SQLite file in a
// process of its own).
func inspectSubmit(ctx context.Context, env *env, row *Row, stateDir, batchID string, shards int) error {
	cmd := exec.CommandContext(ctx, env.self, "inspect", "-dir", stateDir, "-batch-id", batchID, "-shards", fmt.Sprint(shards))
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%v: %s", err, tail(errOut.String(), 500))
	}
	var got Row
	if err := json.Unmarshal(out.Bytes(), &got); err != nil {
		return err
	}
	row.ParentRuns, row.ChildRuns = got.ParentRuns, got.ChildRuns
	row.MaxEvents, row.MaxHistoryBytes = got.MaxEvents, got.MaxHistoryBytes
	row.Actions = got.Actions
	row.Notes = append(row.Notes, got.Notes...)
	row.Notes = append(row.Notes, "heartbeats and progress queries of the submit process not counted (same code as the batchpipe row)")
	return nil
}

func tail(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

// embeddedShardSize is the shard size the embedded submit picks for n items
// at the given concurrency: sized for its one worker's slots.
func embeddedShardSize(n, concurrency int) int {
	return pipeline.ShardSizeFor(int64(n), min(concurrency, pipeline.DefaultConcurrentShards()))
}
