package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/batchpipe/batchpipe/blobstore"
	"github.com/batchpipe/batchpipe/inputs"
	"github.com/batchpipe/batchpipe/layout"
	"github.com/batchpipe/batchpipe/manifests"
	"github.com/batchpipe/batchpipe/pipeline"
	"github.com/batchpipe/batchpipe/zjsonl"
)

// directResult is what a direct run reports.
type directResult struct {
	WallSeconds float64 `json:"wall_seconds"`
	Items       int64   `json:"items"`
	Failed      int64   `json:"failed"`
	Shards      int     `json:"shards"`
	PeakRSS     int64   `json:"peak_rss"`
	PeakAnonRSS int64   `json:"peak_anon_rss"`
}

// direct is the ceiling without Temporal: it reads the input, runs the
// processor on every item and writes the same objects a batch would (one
// zstd JSON-lines result object per shard, the failures object if any item
// failed, the manifest last) to the store, with parallel shard workers.
func direct(ctx context.Context, storeURL, input, batchID, processor string, shardSize, parallel int) (manifests.Manifest, error) {
	var m manifests.Manifest
	proc, err := processors.Lookup(processor, pipeline.Options{})
	if err != nil {
		return m, err
	}
	b, err := blobstore.Open(ctx, storeURL)
	if err != nil {
		return m, err
	}
	defer b.Close()
	r, err := inputs.Open(input, inputs.Options{})
	if err != nil {
		return m, err
	}
	defer r.Close()
	started := time.Now().UTC()

	type job struct {
		shard int
		first int64
		items []json.RawMessage
	}
	var (
		mu       sync.Mutex
		results  []manifests.Result
		failures []manifests.FailureLine
		firstErr error
		wg       sync.WaitGroup
	)
	jobs := make(chan job)
	prefix := blobstore.Prefix(b)
	for range parallel {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				res, failed, err := directShard(ctx, b, proc, batchID, j.shard, j.first, j.items)
				mu.Lock()
				if err != nil && firstErr == nil {
					firstErr = err
				}
				res.Key = prefix + res.Key
				results = append(results, res)
				failures = append(failures, failed...)
				mu.Unlock()
			}
		}()
	}
	var (
		items   int64
		shards  int
		pending []json.RawMessage
		readErr error
	)
	for {
		it, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			readErr = err
			break
		}
		pending = append(pending, bytes.Clone(it.JSON))
		items++
		if len(pending) == shardSize {
			jobs <- job{shard: shards, first: items - int64(len(pending)), items: pending}
			shards++
			pending = nil
		}
	}
	if readErr == nil && len(pending) > 0 {
		jobs <- job{shard: shards, first: items - int64(len(pending)), items: pending}
		shards++
	}
	close(jobs)
	wg.Wait()
	if err := errors.Join(readErr, firstErr); err != nil {
		return m, err
	}

	slices.SortFunc(results, func(x, y manifests.Result) int { return int(x.FirstIndex - y.FirstIndex) })
	receipts := make([]layout.Receipt, len(results))
	for i, r := range results {
		receipts[i] = layout.Receipt{Shard: i, FirstIndex: r.FirstIndex, Key: r.Key, Items: r.Items,
			Succeeded: r.Succeeded, Failed: r.Failed, Size: r.Size, SHA256: r.SHA256}
	}
	m, _ = layout.Assemble(manifests.Manifest{
		BatchID: batchID, Status: manifests.StatusSucceeded, Processor: processor,
		Store: storeURL, Input: manifests.Input{Source: input, Items: items, Shards: shards, ShardSize: shardSize},
		StartedAt: started,
	}, receipts)
	if len(failures) > 0 {
		m.Status = manifests.StatusCompletedWithFailures
		slices.SortFunc(failures, func(x, y manifests.FailureLine) int { return int(x.Index - y.Index) })
		key := manifests.FailuresKey(batchID)
		if err := writeLines(ctx, b, key, failures); err != nil {
			return m, err
		}
		m.Failures = &manifests.Failures{Key: prefix + key, Items: int64(len(failures))}
	}
	m.FinishedAt = time.Now().UTC()
	return m, layout.WriteManifest(ctx, b, m)
}

// directShard processes one shard's items in order and writes its result
// object.
func directShard(ctx context.Context, b blobstore.Bucket, proc pipeline.Processor, batchID string, shard int, first int64, items []json.RawMessage) (manifests.Result, []manifests.FailureLine, error) {
	key := manifests.ResultKey(batchID, shard)
	res := manifests.Result{Key: key, FirstIndex: first, Items: int64(len(items))}
	var failures []manifests.FailureLine
	bw := blobstore.NewWriter(ctx, b, key)
	zw := zjsonl.NewWriter(bw)
	for i, item := range items {
		t := time.Now()
		out, err := proc.Process(ctx, item)
		line := manifests.ResultLine{Index: first + int64(i), Attempts: 1, DurationMS: time.Since(t).Milliseconds()}
		if err != nil {
			line.Status = manifests.ItemFailed
			line.Error = &manifests.ItemError{Type: pipeline.ItemErrorPermanent, Message: err.Error()}
			failures = append(failures, manifests.FailureLine{Index: line.Index, Input: item, Error: line.Error})
			res.Failed++
		} else {
			line.Status, line.Output = manifests.ItemSucceeded, out
			res.Succeeded++
		}
		if err := zw.Write(line); err != nil {
			zw.Close()
			bw.Abort(err)
			return res, nil, err
		}
	}
	if err := zw.Close(); err != nil {
		bw.Abort(err)
		return res, nil, err
	}
	if err := bw.Close(); err != nil {
		return res, nil, err
	}
	res.Size, res.SHA256 = bw.Size(), bw.SHA256()
	return res, failures, nil
}

func writeLines[T any](ctx context.Context, b blobstore.Bucket, key string, lines []T) error {
	bw := blobstore.NewWriter(ctx, b, key)
	zw := zjsonl.NewWriter(bw)
	for _, l := range lines {
		if err := zw.Write(l); err != nil {
			zw.Close()
			bw.Abort(err)
			return err
		}
	}
	if err := zw.Close(); err != nil {
		bw.Abort(err)
		return err
	}
	return bw.Close()
}

// runDirectProcess is the `direct` subcommand: one direct run, reported as
// JSON on stdout, so that its peak RSS is its own.
func runDirectProcess(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("bench direct", flag.ContinueOnError)
	fs.SetOutput(stderr)
	store := fs.String("store", "", "store URL")
	input := fs.String("input", "", "input file")
	batchID := fs.String("batch-id", "", "batch id")
	processor := fs.String("processor", "example", "processor")
	shardSize := fs.Int("shard-size", pipeline.DefaultShardSize, "items per result object")
	parallel := fs.Int("parallel", 2*runtime.GOMAXPROCS(0), "shards processed at once")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	rss := watchRSS("self", 20*time.Millisecond)
	start := time.Now()
	m, err := direct(ctx, *store, *input, *batchID, *processor, *shardSize, *parallel)
	wall := time.Since(start)
	_, anon := rss.Peak()
	if err != nil {
		fmt.Fprintln(stderr, "bench direct:", err)
		return 1
	}
	json.NewEncoder(stdout).Encode(directResult{WallSeconds: wall.Seconds(),
		Items: m.Counts.Items, Failed: m.Counts.Failed, Shards: m.Input.Shards, PeakRSS: peakRSS("self"), PeakAnonRSS: anon})
	return 0
}

// runDirect runs the direct scenario in a child process.
func runDirect(ctx context.Context, env *env, scenario string, n int, input, storeURL string) (Row, error) {
	shardSize := embeddedShardSize(n, pipeline.DefaultConcurrency)
	row := Row{Scenario: scenario, Items: int64(n), ShardSize: shardSize}
	cmd := exec.CommandContext(ctx, env.self, "direct", "-store", storeURL, "-input", input,
		"-batch-id", fmt.Sprintf("direct-%d-%s", n, env.runTag), "-processor", env.cfg.Processor,
		"-shard-size", fmt.Sprint(shardSize))
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, env.stderr
	cmd.SysProcAttr = deathSignal()
	if err := cmd.Run(); err != nil {
		return row, fmt.Errorf("%s: %w", scenario, err)
	}
	var res directResult
	if err := json.Unmarshal(out.Bytes(), &res); err != nil {
		return row, fmt.Errorf("%s: reading its report: %w", scenario, err)
	}
	if res.Items != int64(n) {
		return row, fmt.Errorf("%s: %d items written for %d", scenario, res.Items, n)
	}
	row.Wall = time.Duration(res.WallSeconds * float64(time.Second))
	row.WorkerRSS, row.AnonRSS = res.PeakRSS, res.PeakAnonRSS
	row.RSSOf = "direct process"
	return row, nil
}

// envFor returns os.Environ() without the variables that start with any of
// the prefixes, plus extra.
func envFor(drop []string, extra ...string) []string {
	var out []string
	for _, kv := range os.Environ() {
		keep := true
		for _, p := range drop {
			if len(kv) >= len(p) && kv[:len(p)] == p {
				keep = false
				break
			}
		}
		if keep {
			out = append(out, kv)
		}
	}
	return append(out, extra...)
}
