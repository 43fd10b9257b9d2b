package pipeline

import (
	"context"
	"errors"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"
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

// Start starts BatchWorkflow for in under the workflow id in.BatchID. If a
// batch with that id is running, the returned run is that batch (a second
// submit attaches); if one finished, it returns ErrAlreadyStarted.
func Start(ctx context.Context, c client.Client, taskQueue string, in BatchInput) (client.WorkflowRun, error) {
	run, err := c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{
		ID:                       in.BatchID,
		TaskQueue:                taskQueue,
		WorkflowIDReusePolicy:    enumspb.WORKFLOW_ID_REUSE_POLICY_REJECT_DUPLICATE,
		WorkflowIDConflictPolicy: enumspb.WORKFLOW_ID_CONFLICT_POLICY_USE_EXISTING,
		// Without this the SDK hands back a closed run as if it were new.
		WorkflowExecutionErrorWhenAlreadyStarted: true,
	}, BatchWorkflowName, in)
	var started *serviceerror.WorkflowExecutionAlreadyStarted
	if errors.As(err, &started) {
		return nil, ErrAlreadyStarted
	}
	return run, err
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
