package pipeline_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/mock"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"
	"go.temporal.io/sdk/workflow"

	"github.com/batchpipe/batchpipe/manifests"
	"github.com/batchpipe/batchpipe/pipeline"
)

// Unit tests of BatchWorkflow's paths with the SDK's test environment:
// children and activities are mocked; the real-server tests elsewhere in
// this package run the same paths end to end.

type wfEnv struct {
	*testsuite.TestWorkflowEnvironment
	mu        sync.Mutex
	started   []int // shards started, in order
	inputs    []pipeline.ShardInput
	finalized *pipeline.FinalizeInput
	// shardTime, if set, is how long a shard runs (1 s otherwise).
	shardTime func(in pipeline.ShardInput) time.Duration
}

func newWFEnv(t *testing.T, shard func(in pipeline.ShardInput) (pipeline.ShardResult, error)) *wfEnv {
	var s testsuite.WorkflowTestSuite
	e := &wfEnv{TestWorkflowEnvironment: s.NewTestWorkflowEnvironment()}
	e.RegisterWorkflowWithOptions(pipeline.BatchWorkflow, workflow.RegisterOptions{Name: pipeline.BatchWorkflowName})
	e.RegisterWorkflowWithOptions(pipeline.ShardWorkflow, workflow.RegisterOptions{Name: pipeline.ShardWorkflowName})
	a := &pipeline.Activities{}
	e.RegisterActivityWithOptions(a.Finalize, activity.RegisterOptions{Name: "FinalizeBatch"})
	e.RegisterActivityWithOptions(a.StageInput, activity.RegisterOptions{Name: "StageInput"})
	e.RegisterActivityWithOptions(a.ShardsToRedrive, activity.RegisterOptions{Name: "ShardsToRedrive"})
	e.RegisterActivityWithOptions(a.CanaryErrors, activity.RegisterOptions{Name: "CanaryErrors"})
	e.OnWorkflow(pipeline.ShardWorkflowName, mock.Anything, mock.Anything).Return(
		func(ctx workflow.Context, in pipeline.ShardInput) (pipeline.ShardResult, error) {
			e.mu.Lock()
			e.started = append(e.started, in.Shard)
			e.inputs = append(e.inputs, in)
			d := time.Second
			if e.shardTime != nil {
				d = e.shardTime(in)
			}
			e.mu.Unlock()
			if err := workflow.Sleep(ctx, d); err != nil {
				return pipeline.ShardResult{}, err
			}
			return shard(in)
		})
	e.OnActivity("FinalizeBatch", mock.Anything, mock.Anything).Return(
		func(_ context.Context, in pipeline.FinalizeInput) (pipeline.BatchResult, error) {
			e.mu.Lock()
			e.finalized = &in
			e.mu.Unlock()
			status := in.Status
			if status == "" {
				status = manifests.StatusSucceeded
			}
			return pipeline.BatchResult{Status: status, ManifestKey: "batches/" + in.Batch.BatchID + "/manifest.json"}, nil
		})
	return e
}

func okShard(in pipeline.ShardInput) (pipeline.ShardResult, error) {
	return pipeline.ShardResult{Items: int64(in.Items), Succeeded: int64(in.Items)}, nil
}

func stagedInput(shards, size, perRun, concurrency int) pipeline.BatchInput {
	o := pipeline.DefaultOptions()
	o.Processor, o.ShardSize, o.ShardsPerRun, o.Concurrency = "echo", size, perRun, concurrency
	return pipeline.BatchInput{BatchID: "wf", Store: "mem://wf", Source: "in.jsonl",
		Items: int64(shards * size), Shards: shards, InputDir: "s-1", Options: o}
}

func TestWorkflowRunsEveryShardOnce(t *testing.T) {
	e := newWFEnv(t, okShard)
	e.ExecuteWorkflow(pipeline.BatchWorkflowName, stagedInput(9, 10, 100, 3))
	if err := e.GetWorkflowError(); err != nil {
		t.Fatal(err)
	}
	slices.Sort(e.started)
	if !slices.Equal(e.started, []int{0, 1, 2, 3, 4, 5, 6, 7, 8}) {
		t.Fatalf("shards started %v, want 0..8 once each", e.started)
	}
	if e.finalized == nil || e.finalized.Status != "" || e.finalized.Batch.InputDir != "s-1" {
		t.Fatalf("finalize input %+v, want a plain finish of the staged input s-1", e.finalized)
	}
}

func TestWorkflowContinuesAsNewWithCursor(t *testing.T) {
	e := newWFEnv(t, okShard)
	e.ExecuteWorkflow(pipeline.BatchWorkflowName, stagedInput(9, 10, 4, 3))
	var can *workflow.ContinueAsNewError
	if err := e.GetWorkflowError(); !errors.As(err, &can) {
		t.Fatalf("error %v, want continue-as-new after 4 shards", err)
	}
	if len(e.started) != 4 || e.finalized != nil {
		t.Fatalf("started %v, finalized %v; want 4 shards and no manifest yet", e.started, e.finalized)
	}
}

func TestWorkflowStopsAtFailureLimit(t *testing.T) {
	e := newWFEnv(t, func(in pipeline.ShardInput) (pipeline.ShardResult, error) {
		return pipeline.ShardResult{Items: int64(in.Items), Failed: 2, Succeeded: int64(in.Items) - 2}, nil
	})
	in := stagedInput(20, 10, 100, 2)
	in.Options.MaxFailures = pipeline.MaxFailedItems(0)
	e.ExecuteWorkflow(pipeline.BatchWorkflowName, in)
	wantBatchFailed(t, e.GetWorkflowError())
	if len(e.started) != 2 {
		t.Errorf("started %v; want the window of 2 and no more", e.started)
	}
	if e.finalized.Status != manifests.StatusFailed || !strings.Contains(e.finalized.Error, "over the limit") {
		t.Errorf("finalize: %q %q, want failed over the limit", e.finalized.Status, e.finalized.Error)
	}
}

func TestWorkflowFailedShardFailsBatch(t *testing.T) {
	e := newWFEnv(t, func(in pipeline.ShardInput) (pipeline.ShardResult, error) {
		if in.Shard == 1 {
			return pipeline.ShardResult{}, temporal.NewNonRetryableApplicationError("unknown processor \"x\"", "BadShard", nil)
		}
		return okShard(in)
	})
	e.ExecuteWorkflow(pipeline.BatchWorkflowName, stagedInput(6, 10, 100, 1))
	wantBatchFailed(t, e.GetWorkflowError())
	if !slices.Equal(e.started, []int{0, 1}) {
		t.Errorf("started %v, want 0 and 1 (window 1), then stop", e.started)
	}
	if e.finalized.Status != manifests.StatusFailed || !strings.Contains(e.finalized.Error, `shard 1 failed: unknown processor "x"`) {
		t.Errorf("finalize: %q %q", e.finalized.Status, e.finalized.Error)
	}
}

func TestWorkflowCancelMidChunk(t *testing.T) {
	e := newWFEnv(t, okShard)
	e.RegisterDelayedCallback(e.CancelWorkflow, 2500*time.Millisecond)
	e.ExecuteWorkflow(pipeline.BatchWorkflowName, stagedInput(20, 10, 100, 2))
	if err := e.GetWorkflowError(); !temporal.IsCanceledError(err) {
		t.Fatalf("error %v, want canceled", err)
	}
	if len(e.started) >= 20 {
		t.Errorf("all %d shards started despite the cancel", len(e.started))
	}
	if e.finalized == nil || e.finalized.Status != manifests.StatusCanceled {
		t.Fatalf("finalize %+v, want a canceled manifest", e.finalized)
	}
}

func TestWorkflowRedriveRunsOnlyListedShards(t *testing.T) {
	e := newWFEnv(t, okShard)
	e.OnActivity("ShardsToRedrive", mock.Anything, mock.Anything).Return(
		func(_ context.Context, q pipeline.RedriveQuery) ([]int, error) {
			var out []int
			for s := q.From; s < q.To; s++ {
				if s%3 == 1 {
					out = append(out, s)
				}
			}
			return out, nil
		})
	in := stagedInput(10, 10, 4, 8)
	in.Redrive = 1
	e.ExecuteWorkflow(pipeline.BatchWorkflowName, in)
	var can *workflow.ContinueAsNewError
	if err := e.GetWorkflowError(); !errors.As(err, &can) {
		t.Fatalf("error %v, want continue-as-new after the first chunk", err)
	}
	if !slices.Equal(e.started, []int{1}) {
		t.Errorf("first chunk [0,4) started %v, want [1]", e.started)
	}
}

func remoteInput() pipeline.BatchInput {
	o := pipeline.DefaultOptions()
	o.Processor = "echo"
	o.ShardSize = 0
	return pipeline.BatchInput{BatchID: "wf", Store: "mem://wf", Source: "mem://wf/in.jsonl", InputURL: "mem://wf/in.jsonl", Options: o}
}

func TestWorkflowBadStagingInput(t *testing.T) {
	e := newWFEnv(t, okShard)
	e.OnActivity("StageInput", mock.Anything, mock.Anything).Return(pipeline.Staged{},
		temporal.NewNonRetryableApplicationError("in.jsonl:3: invalid JSON", pipeline.ErrTypeBadInput, nil))
	e.ExecuteWorkflow(pipeline.BatchWorkflowName, remoteInput())
	wantBatchFailed(t, e.GetWorkflowError())
	if len(e.started) != 0 || e.finalized.Status != manifests.StatusFailed || e.finalized.Error != "bad input: in.jsonl:3: invalid JSON" {
		t.Fatalf("started %v, finalize %q %q", e.started, e.finalized.Status, e.finalized.Error)
	}
}

func TestWorkflowCancelDuringStaging(t *testing.T) {
	e := newWFEnv(t, okShard)
	e.OnActivity("StageInput", mock.Anything, mock.Anything).Return(
		func(ctx context.Context, in pipeline.BatchInput) (pipeline.Staged, error) {
			select {
			case <-ctx.Done():
				return pipeline.Staged{}, ctx.Err()
			case <-time.After(time.Minute):
				return pipeline.Staged{Items: 10, Shards: 1, ShardSize: 10}, nil
			}
		})
	e.RegisterDelayedCallback(e.CancelWorkflow, time.Second)
	e.ExecuteWorkflow(pipeline.BatchWorkflowName, remoteInput())
	if err := e.GetWorkflowError(); !temporal.IsCanceledError(err) {
		t.Fatalf("error %v, want canceled", err)
	}
	if len(e.started) != 0 || e.finalized == nil || e.finalized.Status != manifests.StatusCanceled {
		t.Fatalf("started %v, finalize %+v; want no shard and a canceled manifest", e.started, e.finalized)
	}
}

func TestWorkflowRefusesInvalidInput(t *testing.T) {
	e := newWFEnv(t, okShard)
	in := stagedInput(3, 10, 100, 2)
	in.Options.Processor = ""
	e.ExecuteWorkflow(pipeline.BatchWorkflowName, in)
	err := e.GetWorkflowError()
	var appErr *temporal.ApplicationError
	if !errors.As(err, &appErr) || appErr.Type() != pipeline.ErrTypeInvalidInput || !strings.Contains(err.Error(), "options.processor") {
		t.Fatalf("error %v, want %s naming options.processor", err, pipeline.ErrTypeInvalidInput)
	}
	if len(e.started) != 0 || e.finalized != nil {
		t.Fatal("an invalid batch started shards or wrote a manifest")
	}
}

// A shard that stops at its failure budget stops the batch at once: the
// shards still running are cancelled, not waited for to their end, and
// every shard was given the limit in items as its budget. (The real
// ShardWorkflow runs here, with its activity mocked: the test environment
// does not cancel mocked child workflows.)
func TestWorkflowPromptFailureStop(t *testing.T) {
	e := newWFEnv(t, okShard)
	var s testsuite.WorkflowTestSuite
	env := s.NewTestWorkflowEnvironment()
	env.RegisterWorkflowWithOptions(pipeline.BatchWorkflow, workflow.RegisterOptions{Name: pipeline.BatchWorkflowName})
	env.RegisterWorkflowWithOptions(pipeline.ShardWorkflow, workflow.RegisterOptions{Name: pipeline.ShardWorkflowName})
	a := &pipeline.Activities{}
	env.RegisterActivityWithOptions(a.ProcessShard, activity.RegisterOptions{Name: "ProcessShard"})
	env.RegisterActivityWithOptions(a.Finalize, activity.RegisterOptions{Name: "FinalizeBatch"})
	var mu sync.Mutex
	var inputs []pipeline.ShardInput
	env.OnActivity("ProcessShard", mock.Anything, mock.Anything).Return(
		func(ctx context.Context, in pipeline.ShardInput) (pipeline.ShardResult, error) {
			mu.Lock()
			inputs = append(inputs, in)
			mu.Unlock()
			if in.Shard == 0 {
				return pipeline.ShardResult{Items: 6, Failed: 6, Stopped: true}, nil
			}
			select {
			case <-ctx.Done():
				return pipeline.ShardResult{}, ctx.Err()
			case <-time.After(time.Minute):
				return okShard(in)
			}
		})
	env.OnActivity("FinalizeBatch", mock.Anything, mock.Anything).Return(
		func(_ context.Context, in pipeline.FinalizeInput) (pipeline.BatchResult, error) {
			e.finalized = &in
			return pipeline.BatchResult{Status: in.Status}, nil
		})
	in := stagedInput(20, 10, 100, 4)
	in.Options.MaxFailures = pipeline.MaxFailedItems(5)
	began := time.Now()
	env.ExecuteWorkflow(pipeline.BatchWorkflowName, in)
	wantBatchFailed(t, env.GetWorkflowError())
	if took := time.Since(began); took > 30*time.Second {
		t.Errorf("batch took %v; the running shards were waited for to their end", took)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(inputs) < 1 || len(inputs) > 4 {
		t.Errorf("%d shards ran; want at most the window of 4", len(inputs))
	}
	for _, si := range inputs {
		if si.FailureBudget == nil || *si.FailureBudget != 5 {
			t.Errorf("shard %d: failure budget %v, want 5", si.Shard, si.FailureBudget)
		}
	}
	f := e.finalized
	if f == nil || f.Status != manifests.StatusFailed || f.StopReason != manifests.StopMaxFailures || !strings.Contains(f.Error, "6 items failed") {
		t.Fatalf("finalize %+v, want failed by max_failures with 6 items failed", f)
	}
}

// Each shard's budget is the limit less what failed in the shards that
// finished before it started.
func TestWorkflowFailureBudgetShrinks(t *testing.T) {
	e := newWFEnv(t, func(in pipeline.ShardInput) (pipeline.ShardResult, error) {
		return pipeline.ShardResult{Items: int64(in.Items), Failed: 2, Succeeded: int64(in.Items) - 2}, nil
	})
	in := stagedInput(10, 10, 100, 1)
	in.Options.MaxFailures = pipeline.MaxFailedItems(5)
	e.ExecuteWorkflow(pipeline.BatchWorkflowName, in)
	wantBatchFailed(t, e.GetWorkflowError())
	var budgets []int64
	for _, si := range e.inputs {
		budgets = append(budgets, *si.FailureBudget)
	}
	if !slices.Equal(budgets, []int64{5, 3, 1}) {
		t.Errorf("budgets %v, want [5 3 1] (2 failures a shard, limit 5)", budgets)
	}
	if e.finalized.StopReason != manifests.StopMaxFailures {
		t.Errorf("stop reason %q", e.finalized.StopReason)
	}
}

// Without a limit, shards get no budget (and the run records no version
// marker for it).
func TestWorkflowNoFailureBudgetWithoutLimit(t *testing.T) {
	e := newWFEnv(t, okShard)
	e.ExecuteWorkflow(pipeline.BatchWorkflowName, stagedInput(3, 10, 100, 2))
	if err := e.GetWorkflowError(); err != nil {
		t.Fatal(err)
	}
	for _, si := range e.inputs {
		if si.FailureBudget != nil {
			t.Errorf("shard %d has budget %d without a limit", si.Shard, *si.FailureBudget)
		}
	}
}

// Allowed is the largest failed count Exceeded lets pass; a percent is of
// the batch's items.
func TestFailureLimitAllowed(t *testing.T) {
	pct := pipeline.MaxFailedPercent
	for _, c := range []struct {
		l     pipeline.FailureLimit
		total int64
		want  int64
		ok    bool
	}{
		{pipeline.MaxFailedItems(100), 50000, 100, true},
		{pipeline.MaxFailedItems(0), 50000, 0, true},
		{pipeline.MaxFailedItems(100), 100, 0, false}, // 100 of 100 do not exceed 100
		{pipeline.MaxFailedItems(100), 101, 100, true},
		{pct(1), 50000, 500, true},
		{pct(0), 50000, 0, true},
		{pct(0.5), 20000, 100, true},
		{pct(1.5), 333, 4, true}, // 4.995 items: 5 exceed
		{pct(10), 1000, 100, true},
		{pct(100), 1000, 0, false},
		{pipeline.NoFailureLimit, 1000, 0, false},
	} {
		got, ok := c.l.Allowed(c.total)
		if got != c.want || ok != c.ok {
			t.Errorf("%+v of %d: Allowed = %d, %v; want %d, %v", c.l, c.total, got, ok, c.want, c.ok)
		}
		if ok && (c.l.Exceeded(got, c.total) || !c.l.Exceeded(got+1, c.total)) {
			t.Errorf("%+v of %d: Allowed %d disagrees with Exceeded", c.l, c.total, got)
		}
	}
}

// wantBatchFailed checks that a workflow ended as a failed batch does.
func wantBatchFailed(t *testing.T, err error) {
	t.Helper()
	var appErr *temporal.ApplicationError
	if !errors.As(err, &appErr) || appErr.Type() != pipeline.ErrTypeBatchFailed {
		t.Fatalf("workflow error %v, want one of type %s", err, pipeline.ErrTypeBatchFailed)
	}
}
