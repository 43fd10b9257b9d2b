package batchpipe

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"

	"github.com/batchpipe/batchpipe/blobstore"
	"github.com/batchpipe/batchpipe/manifests"
	"github.com/batchpipe/batchpipe/pipeline"
)

// Batch is a handle on one batch, running or finished.
type Batch struct {
	c    *Client
	id   string
	spec pipeline.BatchInput

	// Attached is true when Submit found the batch under way or done
	// (same id, same input) instead of starting it.
	Attached bool
	// Finished is true when the batch had finished before Submit.
	Finished bool
}

func (c *Client) newBatch(id string, spec pipeline.BatchInput, attached, finished bool) *Batch {
	return &Batch{c: c, id: id, spec: spec, Attached: attached, Finished: finished}
}

// Batch returns a handle on the batch with that id, or ErrNotFound when
// neither the store nor Temporal knows it.
func (c *Client) Batch(ctx context.Context, id string) (*Batch, error) {
	if err := manifests.ValidateBatchID(id); err != nil {
		return nil, &Error{Kind: ErrInvalid, Err: err}
	}
	spec, ok, err := c.knownBatch(ctx, id)
	if err != nil && !errors.Is(err, ErrConflict) {
		return nil, err
	}
	if !ok {
		tc, terr := c.Temporal(ctx)
		if terr != nil {
			return nil, fmt.Errorf("batch %s is not in %s and Temporal cannot be asked: %w", id, c.store.URL(), terr)
		}
		in, serr := pipeline.StartedInput(ctx, tc, id)
		var nf *serviceerror.NotFound
		if errors.As(serr, &nf) {
			return nil, kindf(ErrNotFound, "unknown batch %q: no such batch in %s or on Temporal", id, c.store.URL())
		}
		if serr != nil {
			return nil, serr
		}
		spec = in
	}
	return c.newBatch(id, spec, true, false), nil
}

// ID is the batch id (the BatchWorkflow's workflow id).
func (b *Batch) ID() string { return b.id }

// Items is the batch's item count, 0 while a worker still stages its input.
func (b *Batch) Items() int64 { return b.spec.Items }

// Shards is the batch's shard count, 0 while a worker still stages its input.
func (b *Batch) Shards() int { return b.spec.Shards }

// Options are the batch's options, as it was started.
func (b *Batch) Options() pipeline.Options { return b.spec.Options }

// Source names the batch's input.
func (b *Batch) Source() string { return b.spec.Source }

// Result is how a batch ended: its opened manifest (Manifest, and Results,
// Failures and Verify to read and check its objects) and the manifest's key.
type Result struct {
	*manifests.Batch
	// ManifestKey is the manifest's key in the store (prefix included).
	ManifestKey string
}

// progressInterval is how often Wait asks a running batch for progress,
// and inFlightInterval how often it also describes the shards in flight
// (their heartbeats move every few seconds).
const (
	progressInterval = 500 * time.Millisecond
	inFlightInterval = 2 * time.Second
)

// withInFlight is p with the items the running shards reported and the
// running/waiting split. The query is answered before the shards are
// described, so a shard that finishes in between is counted at most once
// (by neither, until the next query); Done never moves back from last's.
func withInFlight(ctx context.Context, tc client.Client, p pipeline.Progress, last Progress) Progress {
	next := Progress{Progress: p, Running: last.Running, Waiting: last.Waiting}
	if in, err := pipeline.DescribeInFlight(ctx, tc, p.BatchID); err == nil {
		next.Done = min(p.Done+in.Items, max(p.Items, p.Done))
		next.Running, next.Waiting = in.Running, in.Waiting
	}
	next.Done = max(next.Done, last.Done)
	return next
}

// Wait waits for the batch to finish and returns its manifest, calling
// progress (if not nil) about twice a second while it runs. A batch that
// failed, or was canceled, also returns its Result; err is nil unless its
// input failed validation (ErrInvalid) or it left no readable manifest.
func (b *Batch) Wait(ctx context.Context, progress func(Progress)) (Result, error) {
	var werr error // the workflow's failure, if it failed
	if !b.Finished {
		tc, err := b.c.Temporal(ctx)
		if err != nil {
			return Result{}, err
		}
		done := make(chan error, 1)
		go func() { done <- tc.GetWorkflow(ctx, b.id, "").Get(ctx, nil) }()
		tick := time.NewTicker(progressInterval)
		defer tick.Stop()
		var (
			shown     Progress  // what progress was last given
			described time.Time // when the shards in flight were last asked
		)
	loop:
		for {
			select {
			case werr = <-done:
				if ctx.Err() != nil {
					return Result{}, ctx.Err()
				}
				var appErr interface{ Type() string }
				if errors.As(werr, &appErr) && appErr.Type() == pipeline.ErrTypeInvalidInput {
					return Result{}, &Error{Kind: ErrInvalid, Err: werr}
				}
				break loop
			case <-tick.C:
				if progress == nil {
					continue
				}
				qctx, cancel := context.WithTimeout(ctx, 2*time.Second)
				p, err := pipeline.QueryProgress(qctx, tc, b.id)
				if err == nil && time.Since(described) >= inFlightInterval {
					described = time.Now()
					shown = withInFlight(qctx, tc, p, shown)
				} else if err == nil {
					shown.Progress, shown.Done = p, max(p.Done, shown.Done)
				}
				cancel()
				if err == nil { // between runs, or the worker is busy: ask again
					if p.Items > 0 {
						b.spec.Items, b.spec.Shards = p.Items, p.Shards
					}
					progress(shown)
				}
			}
		}
	}
	res, err := b.result(context.WithoutCancel(ctx))
	if err != nil && werr != nil && res.Batch == nil {
		// It failed before it could write a manifest (a worker that
		// refuses the batch's store, say): what it failed with says why.
		return res, fmt.Errorf("batch %s failed without a manifest: %s", b.id, workflowFailure(werr))
	}
	if progress != nil && res.Batch != nil {
		// The last word: what the manifest counts (a batch that finished
		// between two queries would otherwise never show its end).
		m := res.Manifest
		progress(Progress{Progress: pipeline.Progress{BatchID: m.BatchID, Items: m.Input.Items, Done: m.Counts.Items, Succeeded: m.Counts.Succeeded,
			Failed: m.Counts.Failed, Shards: m.Input.Shards, ShardsDone: len(m.Results), StartedAt: m.StartedAt}})
	}
	return res, err
}

// workflowFailure is the message of the innermost application error of a
// failed workflow (what the activity said), else the error itself.
func workflowFailure(err error) string {
	msg := err.Error()
	for e := err; e != nil; e = errors.Unwrap(e) {
		if a, ok := e.(interface{ Message() string }); ok && a.Message() != "" {
			msg = a.Message()
		}
	}
	return msg
}

// result reads the finished batch's manifest.
func (b *Batch) result(ctx context.Context) (Result, error) {
	store := b.c.store
	mb, err := manifests.Open(ctx, store, b.id)
	if err != nil {
		if ok, _ := blobstore.Exists(ctx, store, manifests.CollectedKey(b.id)); ok {
			return Result{}, kindf(ErrConflict, "batch %s finished and its results were deleted by gc (its input was kept); choose another batch id", b.id)
		}
		return Result{}, fmt.Errorf("batch %s left no readable manifest: %w", b.id, err)
	}
	res := Result{Batch: mb, ManifestKey: mb.ManifestKey()}
	if res.Manifest.StopReason == manifests.StopBadInput {
		// A worker's staging refused the input: nothing ran.
		return res, invalidf("%s", strings.TrimPrefix(res.Manifest.Error, "bad input: "))
	}
	return res, nil
}

// Status is what Batch.Status and Client.List report of one batch.
type Status struct {
	BatchID    string     `json:"batch_id"`
	Status     string     `json:"status"` // running, staged, collected, or a manifest status
	Items      int64      `json:"items"`
	Done       int64      `json:"done"`
	Succeeded  int64      `json:"succeeded"`
	Failed     int64      `json:"failed"`
	Shards     int        `json:"shards,omitempty"`
	InFlight   int        `json:"shards_in_flight,omitempty"` // started, running or waiting
	Running    int        `json:"shards_running,omitempty"`   // processing on a worker
	Waiting    int        `json:"shards_waiting,omitempty"`   // waiting for a worker's free slot
	Run        int        `json:"run,omitempty"`
	Rate       float64    `json:"items_per_second,omitempty"`
	ETASeconds float64    `json:"eta_seconds,omitempty"`
	Started    *time.Time `json:"started_at,omitempty"`
	Finished   *time.Time `json:"finished_at,omitempty"`
	Manifest   string     `json:"manifest,omitempty"`
	// Paused, since when and why (status "paused"); the window, failure
	// limit and rate the batch runs with now (submit update changes them).
	Paused      bool       `json:"paused,omitempty"`
	PausedSince *time.Time `json:"paused_since,omitempty"`
	PauseReason string     `json:"pause_reason,omitempty"`
	Concurrency int        `json:"concurrency,omitempty"`
	MaxFailures string     `json:"max_failures,omitempty"`
	RateLimit   float64    `json:"rate_limit,omitempty"`
	// Canary is running (shard 0 alone; the rest waits), passed or failed,
	// for a batch with a canary; Priority (0: the default, 3) and
	// FairnessKey are what its shards run with.
	Canary      string `json:"canary,omitempty"`
	Priority    int    `json:"priority,omitempty"`
	FairnessKey string `json:"fairness_key,omitempty"`
	// Error says why a batch's manifest could not be read (list).
	Error string `json:"error,omitempty"`
}

// StatusFromManifest is a finished batch's Status.
func StatusFromManifest(m manifests.Manifest, key string) Status {
	s, f := m.StartedAt, m.FinishedAt
	return Status{BatchID: m.BatchID, Status: m.Status, Items: m.Input.Items, Done: m.Counts.Items,
		Succeeded: m.Counts.Succeeded, Failed: m.Counts.Failed, Shards: m.Input.Shards, Started: &s, Finished: &f, Manifest: key}
}

// StatusFromProgress is a running batch's Status. Rate and ETA are the
// average since the start, once there is one (5 s and an item done).
func StatusFromProgress(p Progress) Status {
	st := Status{BatchID: p.BatchID, Status: "running", Items: p.Items, Done: p.Done, Succeeded: p.Succeeded,
		Failed: p.Failed, Shards: p.Shards, InFlight: p.InFlight, Running: p.Running, Waiting: p.Waiting, Run: p.Run}
	st.Paused, st.PausedSince, st.PauseReason = p.Paused, p.PausedSince, p.PauseReason
	if p.Paused {
		st.Status = "paused"
	}
	st.Concurrency, st.RateLimit = p.Concurrency, p.Rate
	st.Canary, st.Priority, st.FairnessKey = p.Canary, p.Priority, p.FairnessKey
	if p.MaxFailures != nil && p.MaxFailures.Set() {
		st.MaxFailures = p.MaxFailures.String()
	}
	if !p.StartedAt.IsZero() {
		s := p.StartedAt
		st.Started = &s
		if el := time.Since(s).Seconds(); el >= 5 && p.Done > 0 && !p.Paused {
			st.Rate = float64(p.Done) / el
			st.ETASeconds = float64(p.Items-p.Done) / st.Rate
		}
	}
	return st
}

// Status reports the batch's progress (running) or its manifest (finished).
// A running batch whose progress no worker answers has Run 0.
func (b *Batch) Status(ctx context.Context) (Status, error) {
	tc, cerr := b.c.Temporal(ctx)
	if cerr == nil {
		// Ask for progress only while the batch runs: a query on a closed
		// workflow waits for a worker to replay it, for nothing.
		if desc, derr := tc.DescribeWorkflowExecution(ctx, b.id, ""); derr == nil && desc.WorkflowExecutionInfo.GetCloseTime() == nil {
			qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			p, err := pipeline.QueryProgress(qctx, tc, b.id)
			if err == nil {
				return StatusFromProgress(withInFlight(qctx, tc, p, Progress{})), nil
			}
			// Started, but no worker answers (in embedded mode nothing runs
			// a batch once its submit exited): running (or paused, as its
			// memo says), progress unknown.
			st := Status{BatchID: b.id, Status: "running", Items: b.spec.Items, Shards: b.spec.Shards}
			st.Canary = pipeline.MemoCanary(desc.WorkflowExecutionInfo.GetMemo())
			if status, since, reason := pipeline.MemoState(desc.WorkflowExecutionInfo.GetMemo()); status == "paused" {
				st.Status, st.Paused, st.PausedSince, st.PauseReason = status, true, since, reason
			}
			return st, nil
		}
	}
	store := b.c.store
	mb, err := manifests.Open(ctx, store, b.id)
	if err == nil {
		mb.Close()
		return StatusFromManifest(mb.Manifest, blobstore.Prefix(store)+manifests.ManifestKey(b.id)), nil
	}
	if !errors.Is(err, blobstore.ErrNotFound) {
		return Status{}, err
	}
	if ok, _ := blobstore.Exists(ctx, store, manifests.CollectedKey(b.id)); ok {
		return Status{BatchID: b.id, Status: "collected"}, nil
	}
	if b.spec.Shards > 0 {
		return Status{BatchID: b.id, Status: "staged", Items: b.spec.Items, Shards: b.spec.Shards}, nil
	}
	if cerr != nil {
		return Status{}, fmt.Errorf("batch %s has no manifest in %s and Temporal cannot be asked: %w", b.id, store.URL(), cerr)
	}
	return Status{}, kindf(ErrNotFound, "unknown batch %q: no such batch in %s or on Temporal", b.id, store.URL())
}

// Cancel asks the running batch to stop: its shards stop at an item
// boundary and it ends with a canceled manifest listing what was written
// (Wait returns it). ErrNotRunning if it is not running.
func (b *Batch) Cancel(ctx context.Context) error {
	tc, err := b.c.Temporal(ctx)
	if err != nil {
		return err
	}
	desc, err := tc.DescribeWorkflowExecution(ctx, b.id, "")
	var nf *serviceerror.NotFound
	if errors.As(err, &nf) {
		return kindf(ErrNotFound, "unknown batch %q: no such workflow on Temporal", b.id)
	}
	if err != nil {
		return err
	}
	if desc.WorkflowExecutionInfo.GetCloseTime() != nil {
		return kindf(ErrNotRunning, "batch %s is not running (it ended as %s)", b.id, strings.ToLower(desc.WorkflowExecutionInfo.GetStatus().String()))
	}
	b.Finished = false
	return tc.CancelWorkflow(ctx, b.id, "")
}

// RedriveOptions change a redrive from the batch's own options.
type RedriveOptions struct {
	// Concurrency is the shards in flight; 0 keeps the batch's.
	Concurrency int
	// KeepSuperseded keeps the result objects the redrive's manifest
	// replaces; by default they are deleted once it is written.
	KeepSuperseded bool
}

// Redrive re-runs, in place, only the failed items of a finished batch and
// the shards that a cancel or failure left unfinished; succeeded items'
// objects are kept, and the objects its new ones replace are deleted when
// it finishes (unless o.KeepSuperseded). It returns the number of the redrive (1 for the first)
// and, with nothing to redrive (the batch succeeded), 0. Wait follows it.
func (b *Batch) Redrive(ctx context.Context, o RedriveOptions) (int, error) {
	store := b.c.store
	mb, err := manifests.Open(ctx, store, b.id)
	if errors.Is(err, blobstore.ErrNotFound) {
		return 0, kindf(ErrNotRunning, "batch %s has no manifest in %s: it is unknown or still running; only a finished batch can be redriven", b.id, store.URL())
	}
	if err != nil {
		return 0, err
	}
	mb.Close()
	m := mb.Manifest
	if m.Status == manifests.StatusSucceeded {
		return 0, nil
	}
	spec, err := pipeline.ReadSpec(ctx, store, b.id)
	if err != nil {
		return 0, fmt.Errorf("batch %s cannot be redriven: its start parameters (%s) cannot be read: %w", b.id, manifests.BatchSpecKey(b.id), err)
	}
	if o.Concurrency < 0 {
		return 0, invalidf("redrive concurrency must be at least 1, got %d", o.Concurrency)
	}
	if o.Concurrency > 0 {
		spec.Options.Concurrency = o.Concurrency
	}
	spec.Options.KeepSuperseded = o.KeepSuperseded
	tc, err := b.c.Temporal(ctx)
	if err != nil {
		return 0, err
	}
	n := m.Redrives + 1
	if _, err := pipeline.StartRedrive(ctx, tc, b.c.cfg.TaskQueue, spec, n); err != nil {
		return 0, fmt.Errorf("redriving batch %s: %w", b.id, err)
	}
	b.spec, b.Finished = spec, false
	return n, nil
}
