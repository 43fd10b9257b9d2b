package pipeline

import (
	"context"
	"errors"
	"fmt"
	"time"

	commonpb "go.temporal.io/api/common/v1"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"

	"github.com/batchpipe/batchpipe/blobstore"
	"github.com/batchpipe/batchpipe/layout"
)

// DefaultOptions are the knobs a batch gets unless told otherwise; the
// README's "Defaults" section says how they were chosen.
func DefaultOptions() Options {
	return Options{
		Processor:       "example",
		ShardSize:       DefaultShardSize,
		Concurrency:     DefaultConcurrency,
		ShardsPerRun:    DefaultShardsPerRun,
		ItemTimeout:     time.Minute,
		ItemAttempts:    3,
		ItemBackoff:     time.Second,
		ItemParallelism: 8,
	}
}

// ErrAlreadyStarted is returned by Start when a workflow with the batch id
// exists already (running or closed).
var ErrAlreadyStarted = errors.New("a batch with this id was started before")

// Start starts BatchWorkflow for in under the workflow id in.BatchID. The
// start is the claim on the id: if a workflow with that id exists, running
// or closed, nothing starts and Start returns ErrAlreadyStarted (the caller
// compares that batch's input, StartedInput, with its own).
func Start(ctx context.Context, c client.Client, taskQueue string, in BatchInput) (client.WorkflowRun, error) {
	run, err := startWithSearchAttributes(in.BatchID, client.StartWorkflowOptions{
		ID:                       in.BatchID,
		TaskQueue:                taskQueue,
		WorkflowIDReusePolicy:    enumspb.WORKFLOW_ID_REUSE_POLICY_REJECT_DUPLICATE,
		WorkflowIDConflictPolicy: enumspb.WORKFLOW_ID_CONFLICT_POLICY_FAIL,
		// Without this the SDK hands back a closed run as if it were new.
		WorkflowExecutionErrorWhenAlreadyStarted: true,
		Memo: map[string]any{"status": "running", "items": in.Items, "shards": in.Shards,
			"processor": in.Options.Processor, "source": in.Source},
		// The batch's own workflow tasks come before those of batches of
		// a lower priority too (its shards get it from BatchWorkflow).
		Priority: in.Options.TaskPriority(in.BatchID),
	}, func(o client.StartWorkflowOptions) (client.WorkflowRun, error) {
		return c.ExecuteWorkflow(ctx, o, BatchWorkflowName, in)
	})
	var started *serviceerror.WorkflowExecutionAlreadyStarted
	if errors.As(err, &started) {
		return nil, ErrAlreadyStarted
	}
	return run, err
}

// StartedInput returns the input the latest run of batchID was started with
// (after continue-as-new, the cursor's run), read from its history: what a
// batch is, authoritatively, whatever the store holds.
func StartedInput(ctx context.Context, c client.Client, batchID string) (BatchInput, error) {
	var in BatchInput
	it := c.GetWorkflowHistory(ctx, batchID, "", false, enumspb.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
	if !it.HasNext() {
		return in, fmt.Errorf("batch %s: workflow has no history", batchID)
	}
	ev, err := it.Next()
	if err != nil {
		return in, err
	}
	attrs := ev.GetWorkflowExecutionStartedEventAttributes()
	if attrs == nil || len(attrs.GetInput().GetPayloads()) == 0 {
		return in, fmt.Errorf("batch %s: first event is not a start with an input", batchID)
	}
	if err := converter.GetDefaultDataConverter().FromPayload(attrs.GetInput().GetPayloads()[0], &in); err != nil {
		return in, fmt.Errorf("batch %s: reading its input: %w", batchID, err)
	}
	return in, nil
}

// QueryProgress asks a running batch for its progress.
func QueryProgress(ctx context.Context, c client.Client, batchID string) (Progress, error) {
	var p Progress
	v, err := c.QueryWorkflow(ctx, batchID, "", ProgressQuery)
	if err != nil {
		return p, err
	}
	return p, v.Get(&p)
}

// StartRedrive starts a redrive of a finished batch: spec is the batch as it
// was first started (see manifests.BatchSpecKey) and n the redrive's number.
// It fails if the batch is running.
func StartRedrive(ctx context.Context, c client.Client, taskQueue string, spec BatchInput, n int) (client.WorkflowRun, error) {
	spec.Redrive, spec.Cursor = n, nil
	return startWithSearchAttributes(spec.BatchID, client.StartWorkflowOptions{
		ID:                       spec.BatchID,
		TaskQueue:                taskQueue,
		WorkflowIDReusePolicy:    enumspb.WORKFLOW_ID_REUSE_POLICY_ALLOW_DUPLICATE,
		WorkflowIDConflictPolicy: enumspb.WORKFLOW_ID_CONFLICT_POLICY_FAIL,
		Priority:                 spec.Options.TaskPriority(spec.BatchID),
	}, func(o client.StartWorkflowOptions) (client.WorkflowRun, error) {
		return c.ExecuteWorkflow(ctx, o, BatchWorkflowName, spec)
	})
}

// SaveSpec stores the batch's start parameters, so it can be redriven.
func SaveSpec(ctx context.Context, b blobstore.Bucket, in BatchInput) error {
	return layout.WriteSpec(ctx, b, in.BatchID, in)
}

// ReadSpec reads what SaveSpec stored.
func ReadSpec(ctx context.Context, b blobstore.Bucket, batchID string) (BatchInput, error) {
	var in BatchInput
	return in, layout.ReadSpec(ctx, b, batchID, &in)
}

// Pause pauses the running batch (PauseUpdate): no shard starts, and the
// running ones stop at an item boundary within seconds, committing what
// they processed. The error of a refused pause (finished, stopping,
// paused already) is a *temporal.ApplicationError of type
// ErrTypeNotSteerable.
func Pause(ctx context.Context, c client.Client, batchID, reason string) (Progress, error) {
	return steer(ctx, c, batchID, PauseUpdate, PauseRequest{Reason: reason})
}

// Resume resumes a paused batch (ResumeUpdate): the shards that stopped
// at the pause run their remaining items first, then the rest.
func Resume(ctx context.Context, c client.Client, batchID string) (Progress, error) {
	return steer(ctx, c, batchID, ResumeUpdate)
}

// UpdateOptions changes a running batch's concurrency, failure limit or
// rate (OptionsUpdate); a bad value is refused with an error of type
// ErrTypeInvalidInput and changes nothing.
func UpdateOptions(ctx context.Context, c client.Client, batchID string, ch OptionsChange) (Progress, error) {
	return steer(ctx, c, batchID, OptionsUpdate, ch)
}

func steer(ctx context.Context, c client.Client, batchID, update string, args ...any) (Progress, error) {
	var p Progress
	h, err := c.UpdateWorkflow(ctx, client.UpdateWorkflowOptions{
		WorkflowID: batchID, UpdateName: update, Args: args,
		WaitForStage: client.WorkflowUpdateStageCompleted,
	})
	if err != nil {
		return p, err
	}
	return p, h.Get(ctx, &p)
}

// MemoState reads what a batch workflow's memo says of its state, for a
// running batch whose progress no worker answers: its status ("running",
// "paused", or how it ended; "" when the memo has none) and, while
// paused, since when and why.
func MemoState(memo *commonpb.Memo) (status string, pausedSince *time.Time, pauseReason string) {
	dc := converter.GetDefaultDataConverter()
	f := memo.GetFields()
	if p := f["status"]; p != nil {
		_ = dc.FromPayload(p, &status)
	}
	if p := f["paused_since"]; p != nil {
		var t time.Time
		if dc.FromPayload(p, &t) == nil && !t.IsZero() {
			pausedSince = &t
		}
	}
	if p := f["pause_reason"]; p != nil {
		_ = dc.FromPayload(p, &pauseReason)
	}
	return status, pausedSince, pauseReason
}

// MemoCanary reads where a batch's canary is (CanaryRunning…) from its
// workflow memo; "" for a batch without one.
func MemoCanary(memo *commonpb.Memo) string {
	var c string
	if p := memo.GetFields()["canary"]; p != nil {
		_ = converter.GetDefaultDataConverter().FromPayload(p, &c)
	}
	return c
}
