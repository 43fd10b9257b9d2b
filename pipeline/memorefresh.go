package pipeline

import (
	"context"
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"
)

// activityInFlightItems names the local activity the memo refresh runs.
const activityInFlightItems = "InFlightItems"

// Memo refresh: workflow code cannot read its shards' heartbeats, so a
// running batch asks a local activity for them (DescribeInFlight) on a
// timer and upserts the sum into its memo, which the Web UI shows. Each
// refresh costs a timer, a marker and a memo upsert (about seven events),
// so its interval grows with the run's age: every memoRefreshMin at first,
// then every hundredth of the time the run has run. A run that lasts a day
// then refreshes about 550 times, a few thousand events: the history stays
// bounded by the shards a run starts, not by how long they take.
const (
	memoRefreshMin   = 10 * time.Second
	memoRefreshShare = 100
)

// memoRefreshInterval is the wait before the next refresh of a run that
// has run for elapsed.
func memoRefreshInterval(elapsed time.Duration) time.Duration {
	return max(memoRefreshMin, elapsed/memoRefreshShare)
}

// InFlightItems is the items the batch's running shards reported done by
// heartbeat (a local activity of the batch workflow's memo refresh).
func (a *Activities) InFlightItems(ctx context.Context, batchID string) (int64, error) {
	c := workerClient(ctx)
	if c == nil {
		return 0, nil
	}
	in, err := DescribeInFlight(ctx, c, batchID)
	return in.Items, err
}

// refreshMemo runs until ctx is cancelled (the run stops fanning out):
// while shards are in flight, it puts their heartbeat items into the memo's
// "done" at memoRefreshInterval. A refresh that fails is skipped.
func (r *batchRun) refreshMemo(ctx workflow.Context) {
	lctx := workflow.WithLocalActivityOptions(ctx, workflow.LocalActivityOptions{
		StartToCloseTimeout: 10 * time.Second,
		RetryPolicy:         &temporal.RetryPolicy{MaximumAttempts: 1},
	})
	started := workflow.Now(ctx)
	for {
		if workflow.Sleep(ctx, memoRefreshInterval(workflow.Now(ctx).Sub(started))) != nil {
			return
		}
		if r.inFlight == 0 || r.finishing {
			continue
		}
		var items int64
		if workflow.ExecuteLocalActivity(lctx, activityInFlightItems, r.in.BatchID).Get(ctx, &items) != nil {
			if ctx.Err() != nil {
				return
			}
			continue
		}
		r.inFlightItems = items
		r.upsertProgress(ctx, r.runStatus())
	}
}
