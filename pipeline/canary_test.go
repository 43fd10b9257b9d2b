package pipeline_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/mock"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/worker"

	"github.com/batchpipe/batchpipe/manifests"
	"github.com/batchpipe/batchpipe/pipeline"
)

// The "canary" processor counts its calls per batch and index and fails
// items marked "fail" permanently; "timed" records when each shard of each
// batch got its first item (then takes "ms" milliseconds, 25 by default).
var (
	canaryMu    sync.Mutex
	canaryCalls = map[string]map[int64]int{} // batch id → index → calls
	shardStarts []shardStart
)

type shardStart struct {
	batch string
	shard int
	at    time.Time
}

func registerCanaryProcessors(r *pipeline.Registry) {
	r.Register("canary", pipeline.ProcessorFunc(func(ctx context.Context, in json.RawMessage) (json.RawMessage, error) {
		it, _ := pipeline.ItemFrom(ctx)
		canaryMu.Lock()
		if canaryCalls[it.BatchID] == nil {
			canaryCalls[it.BatchID] = map[int64]int{}
		}
		canaryCalls[it.BatchID][it.Index]++
		canaryMu.Unlock()
		var v struct{ Fail bool }
		json.Unmarshal(in, &v)
		if v.Fail {
			return nil, pipeline.Permanent(fmt.Errorf("item %d is marked to fail", it.Index))
		}
		return in, nil
	}))
	r.Register("timed", pipeline.ProcessorFunc(func(ctx context.Context, in json.RawMessage) (json.RawMessage, error) {
		it, _ := pipeline.ItemFrom(ctx)
		canaryMu.Lock()
		if it.Index == int64(it.Shard)*timedShardSize {
			shardStarts = append(shardStarts, shardStart{it.BatchID, it.Shard, time.Now()})
		}
		canaryMu.Unlock()
		var v struct{ MS int }
		json.Unmarshal(in, &v)
		select {
		case <-time.After(time.Duration(max(v.MS, 25)) * time.Millisecond):
			return in, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}))
}

// timedShardSize is the shard size of the batches run by "timed".
const timedShardSize = 4

func canaryCallsOf(id string) map[int64]int {
	canaryMu.Lock()
	defer canaryMu.Unlock()
	out := map[int64]int{}
	for k, v := range canaryCalls[id] {
		out[k] = v
	}
	return out
}

// A canary that passes: shard 0 (one failed item, within
// --canary-max-failures 1) runs alone, then the rest of the batch; every
// index is processed once, and the memo says the canary passed.
func TestCanaryPasses(t *testing.T) {
	input := makeItems(120, func(i int) string {
		if i == 3 {
			return `,"fail":true`
		}
		return ""
	})
	o := smallOpts("canary", 10, 5) // across continue-as-new
	o.Canary, o.CanaryMaxFailures = true, pipeline.MaxFailedItems(1)
	bt := runBatch(t, fileStore(t), "canary-pass", input, o)
	if bt.err != nil || bt.failed {
		t.Fatalf("batch ended with %v (failed %v)", bt.err, bt.failed)
	}
	m := bt.manifest(t)
	if m.Status != manifests.StatusCompletedWithFailures || m.Counts.Items != 120 || m.Counts.Failed != 1 {
		t.Fatalf("status %s counts %+v", m.Status, m.Counts)
	}
	calls := canaryCallsOf(bt.id)
	for i := range int64(120) {
		if calls[i] != 1 {
			t.Errorf("index %d processed %d times", i, calls[i])
		}
	}
	if memo := memoOf(t, bt.id); memo["canary"] != pipeline.CanaryPassed {
		t.Errorf("memo canary %v, want passed", memo["canary"])
	}
	// Shard 0 ran alone: it finished before any other shard started.
	hist := fetchHistory(t, bt.id, historyRuns(t, bt.id)[0].runID)
	var started []string
	for _, e := range hist.Events {
		if a := e.GetStartChildWorkflowExecutionInitiatedEventAttributes(); a != nil {
			started = append(started, a.GetWorkflowId())
		}
		if a := e.GetChildWorkflowExecutionCompletedEventAttributes(); a != nil && len(started) == 1 {
			started = append(started, "done:"+a.GetWorkflowExecution().GetWorkflowId())
		}
	}
	if len(started) < 3 || started[0] != bt.id+"/shard-0" || started[1] != "done:"+bt.id+"/shard-0" {
		t.Fatalf("children of the first run: %v; want shard 0 started and done before any other", started)
	}
}

// A canary that fails: shard 0 has two failed items, the default
// --canary-max-failures is 0; only shard 0 is processed (it stops at its
// first failure), and the batch fails with the canary's errors in its
// message and manifest.
func TestCanaryFails(t *testing.T) {
	input := makeItems(100, func(i int) string {
		if i == 2 || i == 5 {
			return `,"fail":true`
		}
		return ""
	})
	o := smallOpts("canary", 10, 50)
	o.Canary = true
	o.ItemParallelism = 1
	bt := runBatch(t, fileStore(t), "canary-fail", input, o)
	if bt.err != nil || !bt.failed {
		t.Fatalf("batch ended with %v (failed %v), want a failed batch", bt.err, bt.failed)
	}
	calls := canaryCallsOf(bt.id)
	for i, n := range calls {
		if i >= 10 {
			t.Errorf("index %d (not in shard 0) processed %d times", i, n)
		}
	}
	if len(calls) < 3 || len(calls) > 4 { // items 0..2, stopped at the first failure
		t.Errorf("%d items processed, want 3 (shard 0 up to its first failure): %v", len(calls), calls)
	}
	m := bt.manifest(t)
	if m.Status != manifests.StatusFailed || m.StopReason != manifests.StopMaxFailures ||
		!strings.Contains(m.Error, "canary (shard 0) failed") || !strings.Contains(m.Error, "item 2: item 2 is marked to fail") {
		t.Fatalf("status %s stop reason %s error %q", m.Status, m.StopReason, m.Error)
	}
	err := bt.run.Get(context.Background(), nil)
	if err == nil || !strings.Contains(err.Error(), "canary (shard 0) failed") || !strings.Contains(err.Error(), "first errors: item 2") {
		t.Fatalf("workflow error %v, want the canary's", err)
	}
	t.Logf("failed as: %v", m.Error)
	if memo := memoOf(t, bt.id); memo["canary"] != pipeline.CanaryFailed {
		t.Errorf("memo canary %v, want failed", memo["canary"])
	}
	// A redrive of it runs the canary again (shard 0 has failed items):
	// still failing, it fails again before the rest runs.
	ctx := context.Background()
	spec, err := pipeline.ReadSpec(ctx, bt.bucket, bt.id)
	if err != nil {
		t.Fatal(err)
	}
	run, err := pipeline.StartRedrive(ctx, temporalClient, bt.tq, spec, 1)
	if err != nil {
		t.Fatal(err)
	}
	err = run.Get(ctx, nil)
	var appErr *temporal.ApplicationError
	if !errors.As(err, &appErr) || appErr.Type() != pipeline.ErrTypeBatchFailed || !strings.Contains(err.Error(), "canary (shard 0) failed") {
		t.Fatalf("redrive ended with %v, want the canary failed again", err)
	}
	for i := range canaryCallsOf(bt.id) {
		if i >= 10 {
			t.Errorf("the redrive processed index %d, beyond the canary", i)
		}
	}
}

// A pause while the canary runs stops shard 0 part way; the canary is
// still running (status and memo say so, and paused), nothing else starts;
// resume runs the rest of shard 0 alone, then the batch. Every index is
// processed once.
func TestCanaryPausedAndResumed(t *testing.T) {
	resetSteer()
	o := smallOpts("steer", 100, 50) // 4 s a shard
	o.Concurrency, o.ItemParallelism, o.Canary = 3, 1, true
	tq := startWorker(t)
	bt, wait := startBatchOn(t, tq, fileStore(t), "canary-pause", makeItems(300, nil), o)
	waitFor(t, 30*time.Second, "no items processed", func() bool { return steerCalls.Load() >= 3 })
	if p := progressOf(t, bt.id); p.Canary != pipeline.CanaryRunning || p.InFlight != 1 {
		t.Fatalf("progress %+v, want the canary running alone", p)
	}
	if _, err := pipeline.Pause(context.Background(), temporalClient, bt.id, "look at the canary"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 15*time.Second, "canary still running", func() bool { return progressOf(t, bt.id).InFlight == 0 })
	p := progressOf(t, bt.id)
	if p.Canary != pipeline.CanaryRunning || !p.Paused || p.ShardsDone != 0 {
		t.Fatalf("paused canary: progress %+v", p)
	}
	if memo := memoOf(t, bt.id); memo["canary"] != pipeline.CanaryRunning || memo["paused"] != true {
		t.Errorf("memo %v, want the canary running and paused", memo)
	}
	steerMu.Lock()
	for n := range steerSeen {
		if n >= 100 {
			t.Errorf("index %d (beyond shard 0) processed during the canary", n)
		}
	}
	steerMu.Unlock()
	if _, err := pipeline.Resume(context.Background(), temporalClient, bt.id); err != nil {
		t.Fatal(err)
	}
	if bt = wait(); bt.err != nil || bt.failed {
		t.Fatalf("batch: %v (failed %v)", bt.err, bt.failed)
	}
	steerMu.Lock()
	defer steerMu.Unlock()
	for i := range 300 {
		if steerSeen[i] != 1 {
			t.Errorf("index %d processed %d times", i, steerSeen[i])
		}
	}
	if m := bt.manifest(t); m.Status != manifests.StatusSucceeded || m.Counts.Succeeded != 300 {
		t.Fatalf("manifest %s %+v", m.Status, m.Counts)
	}
}

// startOneSlotWorker starts a worker that runs one activity at a time on a
// fresh task queue, so that shards queue up in Temporal's matching.
func startOneSlotWorker(t *testing.T) string {
	t.Helper()
	if temporalClient == nil {
		t.Skip("needs the Temporal server (not in -short mode)")
	}
	tq := fmt.Sprintf("test-%s-%d", t.Name(), queueSeq.Add(1))
	w := pipeline.NewWorker(temporalClient, tq, pipeline.WorkerOptions{
		Processors: testProcessors(), Logger: quietLog,
		Worker: worker.Options{MaxConcurrentActivityExecutionSize: 1},
		Trust:  pipeline.Trust{Schemes: []string{"file"}},
	})
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Stop)
	return tq
}

// startsOf returns the shard starts recorded for the batches ids, in order.
func startsOf(ids ...string) []shardStart {
	canaryMu.Lock()
	defer canaryMu.Unlock()
	var out []shardStart
	for _, s := range shardStarts {
		for _, id := range ids {
			if s.batch == id {
				out = append(out, s)
			}
		}
	}
	return out
}

// slowItems are n items that "timed" takes 150 ms each for: 600 ms a shard.
func slowItems(n int) []byte {
	return makeItems(n, func(int) string { return `,"ms":150` })
}

func timedOpts(shards, priority int) pipeline.Options {
	o := smallOpts("timed", timedShardSize, 50)
	o.Concurrency, o.ItemParallelism, o.Priority = shards, 1, priority
	return o
}

// Two batches on one worker that runs one shard at a time: a nightly one
// (priority 5) with its shards queued, then an interactive one (priority
// 1). Once the interactive batch's first shard runs, every one of its
// shards runs before the nightly batch's next.
func TestPriorityOvertakes(t *testing.T) {
	tq := startOneSlotWorker(t)
	low, waitLow := startBatchOn(t, tq, fileStore(t), "prio-nightly", slowItems(8*timedShardSize), timedOpts(8, 5))
	waitFor(t, 30*time.Second, "nightly batch not started", func() bool { return len(startsOf(low.id)) >= 1 })
	high, waitHigh := startBatchOn(t, tq, fileStore(t), "prio-interactive", makeItems(3*timedShardSize, nil), timedOpts(3, 1))
	if p := progressOf(t, high.id); p.Priority != 1 || p.FairnessKey != high.id {
		t.Errorf("progress says priority %d fairness key %q", p.Priority, p.FairnessKey)
	}
	for _, bt := range []*batch{waitHigh(), waitLow()} {
		if bt.err != nil || bt.failed {
			t.Fatalf("batch %s: %v (failed %v)", bt.id, bt.err, bt.failed)
		}
	}
	starts := startsOf(low.id, high.id)
	var order []string
	first, last := -1, -1
	for i, s := range starts {
		order = append(order, fmt.Sprintf("%s/%d", strings.TrimPrefix(s.batch, "prio-"), s.shard))
		if s.batch == high.id {
			last = i
			if first < 0 {
				first = i
			}
		}
	}
	t.Logf("shard starts: %v", order)
	if len(starts) != 11 || first < 0 {
		t.Fatalf("%d shard starts, want 11", len(starts))
	}
	if last-first != 2 {
		t.Errorf("nightly shards ran between the interactive ones: %v", order)
	}
	// First in first out it would start after all 8 nightly shards; the
	// slack is for staging and starting it on a loaded machine.
	if first > 6 {
		t.Errorf("the interactive batch waited for %d nightly shards: %v", first, order)
	}
}

// Two batches at the same priority on one worker that runs one shard at a
// time, the second submitted with the first's 10 shards queued: they
// share the worker (fairness by batch id), so the second's shards run
// while the first's are still queued, not after all of them.
func TestFairnessShares(t *testing.T) {
	tq := startOneSlotWorker(t)
	a, waitA := startBatchOn(t, tq, fileStore(t), "fair-a", slowItems(10*timedShardSize), timedOpts(10, 0))
	waitFor(t, 30*time.Second, "first batch not started", func() bool { return len(startsOf(a.id)) >= 1 })
	b, waitB := startBatchOn(t, tq, fileStore(t), "fair-b", makeItems(4*timedShardSize, nil), timedOpts(4, 0))
	for _, bt := range []*batch{waitB(), waitA()} {
		if bt.err != nil || bt.failed {
			t.Fatalf("batch %s: %v (failed %v)", bt.id, bt.err, bt.failed)
		}
	}
	starts := startsOf(a.id, b.id)
	var order []string
	lastB, aBefore := -1, 0
	for i, s := range starts {
		order = append(order, fmt.Sprintf("%s/%d", strings.TrimPrefix(s.batch, "fair-"), s.shard))
		if s.batch == b.id {
			lastB = i
		}
	}
	for _, s := range starts[:lastB+1] {
		if s.batch == a.id {
			aBefore++
		}
	}
	t.Logf("shard starts: %v", order)
	// Alternating, b's 4 shards are done by about the 9th start; first in
	// first out, they would come after all 10 of a's (the slack is for
	// starting b on a loaded machine).
	if lastB < 0 || aBefore > 8 {
		t.Errorf("%d of the first batch's shards ran before the second's last: %v", aBefore, order)
	}
}

// With the SDK's test environment: a canary over its limit is the only
// shard started, with the canary's budget (none failed allowed), and the
// batch fails naming the errors CanaryErrors read.
func TestWorkflowCanaryFailsAlone(t *testing.T) {
	e := newWFEnv(t, func(in pipeline.ShardInput) (pipeline.ShardResult, error) {
		return pipeline.ShardResult{Items: 3, Failed: 1, Succeeded: 2, Stopped: true}, nil
	})
	e.OnActivity("CanaryErrors", mock.Anything, mock.Anything).Return([]string{"item 2: boom"}, nil)
	in := stagedInput(20, 10, 100, 4)
	in.Options.Canary = true
	e.ExecuteWorkflow(pipeline.BatchWorkflowName, in)
	wantBatchFailed(t, e.GetWorkflowError())
	if !slices.Equal(e.started, []int{0}) {
		t.Fatalf("started %v, want the canary alone", e.started)
	}
	if b := e.inputs[0].FailureBudget; b == nil || *b != 0 || !strings.HasSuffix(e.inputs[0].BatchRun, "/canary") {
		t.Errorf("canary budget %v run %q, want 0 of its own", b, e.inputs[0].BatchRun)
	}
	want := "canary (shard 0) failed: 1 of the first 3 of its 10 items failed, over its limit of 0 (--canary-max-failures); the rest of the batch did not run; first errors: item 2: boom"
	if e.finalized.Status != manifests.StatusFailed || e.finalized.Error != want || e.finalized.StopReason != manifests.StopMaxFailures {
		t.Fatalf("finalize %q %q %q, want failed: %q", e.finalized.Status, e.finalized.StopReason, e.finalized.Error, want)
	}
}

// A canary within its percent limit (10% of its 10 items: one) passes:
// shard 0 runs alone, then the others in the window; the batch's own
// limit gives the later shards their budgets as usual.
func TestWorkflowCanaryPercentPasses(t *testing.T) {
	e := newWFEnv(t, func(in pipeline.ShardInput) (pipeline.ShardResult, error) {
		if in.Shard == 0 {
			return pipeline.ShardResult{Items: 10, Failed: 1, Succeeded: 9}, nil
		}
		return okShard(in)
	})
	var firstOthers time.Time
	var canaryDone time.Time
	e.shardTime = func(in pipeline.ShardInput) time.Duration {
		if in.Shard == 0 {
			canaryDone = e.Now().Add(time.Second)
		} else if firstOthers.IsZero() {
			firstOthers = e.Now()
		}
		return time.Second
	}
	in := stagedInput(6, 10, 100, 4)
	in.Options.Canary, in.Options.CanaryMaxFailures = true, pipeline.MaxFailedPercent(10)
	in.Options.MaxFailures = pipeline.MaxFailedItems(5)
	e.ExecuteWorkflow(pipeline.BatchWorkflowName, in)
	if err := e.GetWorkflowError(); err != nil {
		t.Fatal(err)
	}
	if len(e.started) != 6 || e.started[0] != 0 || firstOthers.Before(canaryDone) {
		t.Fatalf("started %v (others from %v, canary done %v), want shard 0 alone first", e.started, firstOthers, canaryDone)
	}
	if b := e.inputs[0].FailureBudget; b == nil || *b != 1 {
		t.Errorf("canary budget %v, want 1 (10%% of 10)", b)
	}
	if b := e.inputs[1].FailureBudget; b == nil || *b != 4 || strings.HasSuffix(e.inputs[1].BatchRun, "/canary") {
		t.Errorf("shard 1 budget %v run %q, want the batch's: 5 less the canary's 1", b, e.inputs[1].BatchRun)
	}
	var p pipeline.Progress
	if v, err := e.QueryWorkflow(pipeline.ProgressQuery); err != nil || v.Get(&p) != nil || p.Canary != pipeline.CanaryPassed {
		t.Errorf("progress canary %q (%v), want passed", p.Canary, err)
	}
}
