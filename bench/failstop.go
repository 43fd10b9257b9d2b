package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/batchpipe/batchpipe"
	"github.com/batchpipe/batchpipe/manifests"
	"github.com/batchpipe/batchpipe/pipeline"
)

// The failure-stop scenario: a processor that fails every item, with a
// failure limit (--max-failures): how many items the batch hands out
// before it stops, and how long that takes. The worker runs in the bench
// process (the processor counts its calls), with pipeline.NewWorker's
// defaults unless -failstop-worker-shards says otherwise, as `submit`'s
// embedded default runs one.

// ProcessorAlwaysFail fails every item permanently.
const ProcessorAlwaysFail = "always-fail"

// FailStopReport is the failure-stop scenario's run.
type FailStopReport struct {
	Items       int   `json:"items"`
	ShardSize   int   `json:"shard_size"`
	Concurrency int   `json:"concurrency"`
	MaxFailures int64 `json:"max_failures"`
	// WorkerShards is the worker's MaxConcurrentActivityExecutionSize
	// (shards running at once); 0 in the flag means NewWorker's default,
	// recorded here as the number it is.
	WorkerShards int `json:"worker_shards"`
	// HandedOut counts the processor's calls: items handed out.
	HandedOut int64 `json:"items_handed_out"`
	// WallSeconds is from the submit (staging included) to the manifest
	// read; StageSeconds the staging part.
	WallSeconds  float64 `json:"wall_seconds"`
	StageSeconds float64 `json:"stage_seconds"`
	// What the manifest says.
	Status     string           `json:"status"`
	StopReason string           `json:"stop_reason"`
	Counts     manifests.Counts `json:"counts"`
	Results    int              `json:"results"`
	LoadBefore string           `json:"load_before,omitempty"`
	LoadAfter  string           `json:"load_after,omitempty"`
}

// runFailStop runs n always-failing items of input with the scenario's
// settings from env.cfg.
func runFailStop(ctx context.Context, env *env, n int, input, storeURL string) (*FailStopReport, error) {
	c := env.cfg
	rep := &FailStopReport{Items: n, ShardSize: c.FailStopShardSize, Concurrency: c.FailStopConcurrency,
		MaxFailures: c.FailStopMaxFailures, WorkerShards: c.FailStopWorkerShards, LoadBefore: loadAverage()}
	if rep.WorkerShards <= 0 {
		rep.WorkerShards = pipeline.DefaultConcurrentShards()
	}
	var calls atomic.Int64
	reg := pipeline.NewRegistry()
	reg.Register(ProcessorAlwaysFail, pipeline.ProcessorFunc(func(context.Context, json.RawMessage) (json.RawMessage, error) {
		calls.Add(1)
		return nil, pipeline.Permanent(errors.New("fails on purpose"))
	}))
	tq := env.taskQueue("failstop", n)
	quiet := slog.New(slog.DiscardHandler)
	wo := pipeline.WorkerOptions{Processors: reg, Logger: quiet, Trust: pipeline.TrustAll()}
	wo.Worker.MaxConcurrentActivityExecutionSize = rep.WorkerShards
	w := pipeline.NewWorker(env.client, tq, wo)
	if err := w.Start(); err != nil {
		return rep, err
	}
	defer w.Stop()

	batchID := fmt.Sprintf("failstop-%d-%d-%s", n, env.seq, env.runTag)
	start := time.Now()
	bc, err := batchpipe.NewClient(ctx, batchpipe.Config{Store: storeURL, TaskQueue: tq, Temporal: env.client})
	if err != nil {
		return rep, err
	}
	defer bc.Close()
	b, err := bc.Submit(ctx, batchpipe.Request{BatchID: batchID, Input: input, Processor: ProcessorAlwaysFail,
		ShardSize: rep.ShardSize, Concurrency: rep.Concurrency, MaxFailures: pipeline.MaxFailedItems(rep.MaxFailures)})
	if err != nil {
		return rep, fmt.Errorf("submitting: %w", err)
	}
	rep.StageSeconds = time.Since(start).Seconds()
	res, err := b.Wait(ctx, func(batchpipe.Progress) {})
	if err != nil {
		return rep, fmt.Errorf("batch %s: %w", batchID, err)
	}
	rep.WallSeconds = time.Since(start).Seconds()
	rep.HandedOut = calls.Load()
	rep.LoadAfter = loadAverage()
	m := res.Manifest
	rep.Status, rep.StopReason, rep.Counts, rep.Results = m.Status, m.StopReason, m.Counts, len(m.Results)
	if m.Status != manifests.StatusFailed || m.StopReason != manifests.StopMaxFailures {
		return rep, fmt.Errorf("batch %s: manifest says %s (stop reason %q), want failed by max_failures", batchID, m.Status, m.StopReason)
	}
	return rep, nil
}

// summary is the one-line progress report of the run.
func (r *FailStopReport) summary() string {
	return fmt.Sprintf("%s of %s items handed out (%.1f%%) before the stop, %.2f s wall (%.2f s staging); manifest: %s by %s, %d result objects, %s items listed (%s failed); %d shards at once on the worker",
		fmtInt(r.HandedOut), fmtInt(int64(r.Items)), 100*float64(r.HandedOut)/float64(max(1, r.Items)),
		r.WallSeconds, r.StageSeconds, r.Status, r.StopReason, r.Results, fmtInt(r.Counts.Items), fmtInt(r.Counts.Failed), r.WorkerShards)
}
