package batchpipe

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"

	"github.com/batchpipe/batchpipe/pipeline"
)

// Steering a running batch: Pause, Resume and Update go to the batch's
// workflow as Temporal Updates, whose validators refuse at once, changing
// nothing, what the batch cannot do now.

// Pause pauses the running batch: no shard starts, and the running shards
// stop handing out items within a few seconds (calls in flight finish),
// committing what they processed, which resume does not run again. It
// returns the batch's progress, paused. A paused batch stays paused across
// continue-as-new and restarts of workers and server; cancel ends it as
// usual. Errors: ErrNotFound (unknown batch), ErrNotRunning (finished,
// stopping, or paused already).
func (b *Batch) Pause(ctx context.Context, reason string) (Progress, error) {
	return b.steer(ctx, func(ctx context.Context, tc client.Client) (pipeline.Progress, error) {
		return pipeline.Pause(ctx, tc, b.id, reason)
	})
}

// Resume resumes a paused batch: the shards that stopped at the pause run
// their remaining items first, then the shards not yet started.
// ErrNotRunning if it is not paused (or finished).
func (b *Batch) Resume(ctx context.Context) (Progress, error) {
	return b.steer(ctx, func(ctx context.Context, tc client.Client) (pipeline.Progress, error) {
		return pipeline.Resume(ctx, tc, b.id)
	})
}

// Update changes what a running batch runs with, without restarting it:
// fields left zero (nil) keep their values.
type Update struct {
	// Concurrency is the shards in flight. A narrower window takes
	// effect as running shards finish, a wider one at once.
	Concurrency int
	// MaxFailures replaces the failure limit; a FailureLimit with
	// neither count nor percent (pipeline.NoFailureLimit) lifts it. A
	// limit the batch is over already stops it as failed.
	MaxFailures *pipeline.FailureLimit
	// Rate replaces the items per second across the batch; 0 lifts it.
	// Shards started after the update get their share of it; running
	// ones keep theirs.
	Rate *float64
}

// Update applies u to the running batch and returns its progress, which
// shows the new values (Progress.Concurrency, MaxFailures, Rate); they
// hold across continue-as-new. A bad value is ErrInvalid, a batch that is
// not running ErrNotRunning; either way nothing changed.
func (b *Batch) Update(ctx context.Context, u Update) (Progress, error) {
	ch := pipeline.OptionsChange{Concurrency: u.Concurrency, MaxFailures: u.MaxFailures, Rate: u.Rate}
	if err := ch.Validate(); err != nil {
		return Progress{}, &Error{Kind: ErrInvalid, Err: err}
	}
	return b.steer(ctx, func(ctx context.Context, tc client.Client) (pipeline.Progress, error) {
		return pipeline.UpdateOptions(ctx, tc, b.id, ch)
	})
}

// steer checks that the batch's workflow runs, sends it the update, and
// maps a refusal to ErrNotRunning (its state) or ErrInvalid (its values).
func (b *Batch) steer(ctx context.Context, send func(context.Context, client.Client) (pipeline.Progress, error)) (Progress, error) {
	tc, err := b.c.Temporal(ctx)
	if err != nil {
		return Progress{}, err
	}
	desc, err := tc.DescribeWorkflowExecution(ctx, b.id, "")
	var nf *serviceerror.NotFound
	if errors.As(err, &nf) {
		return Progress{}, kindf(ErrNotFound, "unknown batch %q: no such workflow on Temporal", b.id)
	}
	if err != nil {
		return Progress{}, err
	}
	if desc.WorkflowExecutionInfo.GetCloseTime() != nil {
		return Progress{}, notRunning(b.id, desc.WorkflowExecutionInfo.GetStatus().String())
	}
	uctx, cancel := context.WithTimeout(ctx, steerTimeout)
	defer cancel()
	p, err := send(uctx, tc)
	var appErr *temporal.ApplicationError
	switch {
	case errors.As(err, &appErr) && appErr.Type() == pipeline.ErrTypeNotSteerable:
		return Progress{}, kindf(ErrNotRunning, "%s", appErr.Message())
	case errors.As(err, &appErr) && appErr.Type() == pipeline.ErrTypeInvalidInput:
		return Progress{}, invalidf("%s", appErr.Message())
	case errors.As(err, &nf):
		// It closed between the describe and the update.
		return Progress{}, notRunning(b.id, "completed")
	case err != nil && uctx.Err() != nil && ctx.Err() == nil:
		return Progress{}, fmt.Errorf("batch %s: no worker took the update within %v (is a worker running?): %w", b.id, steerTimeout, err)
	case err != nil:
		return Progress{}, err
	}
	b.Finished = false
	return Progress{Progress: p}, nil
}

// steerTimeout bounds the wait for a worker to take an update: with none
// running (the embedded server once its submit exited) it never would.
const steerTimeout = 30 * time.Second

func notRunning(id, status string) error {
	status = strings.ToLower(strings.TrimPrefix(status, "WORKFLOW_EXECUTION_STATUS_"))
	return kindf(ErrNotRunning, "batch %s is not running (it ended as %s)", id, status)
}
