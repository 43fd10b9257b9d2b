package pipeline

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/batchpipe/batchpipe/blobstore"
	"github.com/batchpipe/batchpipe/manifests"
)

// A canary (Options.Canary) runs shard 0 alone before the rest of the
// batch: the batch goes on only if no more of its items failed than
// Options.CanaryMaxFailures allows (none, by default), and ends failed
// otherwise, naming the canary's first errors. Shard numbers and first
// indexes are those of a batch without one; only the order changes.
//
// It runs in the steered fan-out (fanOutSteered), so it pauses as any shard
// does: a pause during the canary stops shard 0 part way, and resume runs
// the rest of it, still alone. Its shard gets the smaller of the batch's
// failure budget and the canary's own, so a canary that cannot pass stops
// at once. A redrive runs the canary again only when shard 0 is among the
// shards it runs (a failed canary, or a passed one with failed items):
// shard 0 alone first, the rest of what the redrive runs after it passes.

// activityCanaryErrors reads the first failed items of the canary shard.
const activityCanaryErrors = "CanaryErrors"

// canaryErrorsShown is how many of the canary's errors its failure names.
const canaryErrorsShown = 3

// CanaryErrorsQuery asks for the first Max errors of one shard's failed
// items.
type CanaryErrorsQuery struct {
	BatchID string `json:"batch_id"`
	Store   string `json:"store"`
	Shard   int    `json:"shard"`
	Max     int    `json:"max"`
}

// CanaryErrors returns the first q.Max failed items of the shard, as
// "item <index>: <message>"; none when the shard wrote no failures.
func (a *Activities) CanaryErrors(ctx context.Context, q CanaryErrorsQuery) ([]string, error) {
	b, err := a.Stores.Open(ctx, q.Store)
	if err != nil {
		return nil, err
	}
	lines, err := openLines(ctx, b, manifests.ShardFailuresKey(q.BatchID, q.Shard))
	if errors.Is(err, blobstore.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer lines.Close()
	var out []string
	for len(out) < q.Max {
		var l manifests.FailureLine
		err := lines.Decode(&l)
		if err == io.EOF {
			break
		}
		if err != nil {
			return out, err
		}
		msg := "failed"
		if l.Error != nil {
			msg = l.Error.Message
		}
		out = append(out, fmt.Sprintf("item %d: %s", l.Index, msg))
	}
	return out, nil
}

// CanaryLimit is the failure limit of a batch's canary: its
// CanaryMaxFailures, none allowed when unset.
func (o Options) CanaryLimit() FailureLimit {
	if !o.CanaryMaxFailures.Set() {
		return MaxFailedItems(0)
	}
	return o.CanaryMaxFailures
}

// startCanary has the run start with the canary, when the batch asks for
// one and this is where it begins: the first shard of the batch, or of a
// redrive that runs shard 0.
func (r *batchRun) startCanary() {
	if !r.canary || r.cur.Canary != "" || r.stopping != "" || r.in.Shards == 0 || r.cur.NextShard != 0 || len(r.cur.Partial) > 0 {
		return
	}
	if r.in.Redrive > 0 && (len(r.redo) == 0 || r.redo[0] != 0) {
		return
	}
	r.cur.Canary = CanaryRunning
	r.upsertProgress(r.ctx, r.runStatus())
}

// isCanary reports whether shard is the canary, running.
func (r *batchRun) isCanary(shard int) bool {
	return r.cur.Canary == CanaryRunning && shard == 0
}

// window is how many shards may be in flight now: one while the canary
// runs, the batch's concurrency otherwise.
func (r *batchRun) window() int {
	if r.cur.Canary == CanaryRunning {
		return 1
	}
	return r.in.Options.Concurrency
}

// canaryBudget gives the canary shard the canary's failure budget when it
// is smaller than the batch's: it stops at the first failure the canary
// cannot pass (less what failed before a pause stopped it part way).
func (r *batchRun) canaryBudget(sin *ShardInput, resume *PartialShard) {
	allowed, limited := r.in.Options.CanaryLimit().Allowed(int64(sin.Items))
	if !limited {
		return
	}
	if resume != nil {
		allowed -= resume.Failed
	}
	budget := max(0, allowed)
	if sin.FailureBudget == nil || budget < *sin.FailureBudget {
		sin.FailureBudget, sin.BatchRun = &budget, workflow.GetInfo(r.ctx).FirstRunID+"/canary"
	}
}

// canaryDone judges the canary shard, finished (not stopped at a pause):
// passed, the batch goes on; failed (it returns true), the batch stops
// starting shards and canaryFailed ends it.
func (r *batchRun) canaryDone(sin ShardInput, res ShardResult) bool {
	limit := r.in.Options.CanaryLimit()
	total := int64(sin.Items)
	ownStop := res.Stopped && strings.HasSuffix(sin.BatchRun, "/canary")
	if res.Stopped && !ownStop && !limit.Exceeded(res.Failed, total) {
		// Stopped at the batch's budget: over the batch's limit (the
		// caller stops the batch), or at a limit changed since (the rest
		// of shard 0 runs later, still as the canary).
		if r.in.Options.MaxFailures.Exceeded(r.cur.Failed, r.in.Items) {
			r.cur.Canary = CanaryFailed
			r.canaryVerdict = maxFailuresText(r.cur.Failed)
		}
		return false
	}
	if !limit.Exceeded(res.Failed, total) && !ownStop {
		r.cur.Canary = CanaryPassed
		r.upsertProgress(r.ctx, r.runStatus())
		return false
	}
	r.cur.ShardsDone++
	r.cur.Canary = CanaryFailed
	ran := fmt.Sprintf("its %d items", total)
	if res.Items < total { // stopped at its budget
		ran = fmt.Sprintf("the first %d of its %d items", res.Items, total)
	}
	r.canaryVerdict = fmt.Sprintf("canary (shard 0) failed: %d of %s failed, over its limit of %s (--canary-max-failures); the rest of the batch did not run",
		res.Failed, ran, limit)
	return true
}

// canaryFailed stops the batch as failed, with the canary's first errors
// in the reason (read from its failures; left out if they cannot be read).
func (r *batchRun) canaryFailed() {
	if r.stopping != "" {
		return
	}
	why := r.canaryVerdict
	actx := workflow.WithActivityOptions(r.ctx, workflow.ActivityOptions{
		StartToCloseTimeout: time.Minute,
		RetryPolicy:         &temporal.RetryPolicy{InitialInterval: time.Second, MaximumAttempts: 3},
	})
	var errs []string
	q := CanaryErrorsQuery{BatchID: r.in.BatchID, Store: r.in.Store, Shard: 0, Max: canaryErrorsShown}
	if err := workflow.ExecuteActivity(actx, activityCanaryErrors, q).Get(r.ctx, &errs); err == nil && len(errs) > 0 {
		why += "; first errors: " + strings.Join(errs, "; ")
	}
	if r.ctx.Err() != nil {
		r.stop("canceled", manifests.StopCanceled)
		return
	}
	r.stop(why, manifests.StopMaxFailures)
}
