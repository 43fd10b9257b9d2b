package pipeline

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/temporal"
	"golang.org/x/sync/errgroup"

	"github.com/batchpipe/batchpipe/blobstore"
	"github.com/batchpipe/batchpipe/layout"
	"github.com/batchpipe/batchpipe/manifests"
	"github.com/batchpipe/batchpipe/zjsonl"
)

const (
	activityProcessShard    = "ProcessShard"
	activityFinalize        = "FinalizeBatch"
	activityShardsToRedrive = "ShardsToRedrive"
	activityStageInput      = "StageInput"
	// ErrTypeBadInput marks an input that failed validation: no retry helps.
	ErrTypeBadInput = "BadInput"
	// ErrTypeBatchFailed is the failure of a batch workflow whose manifest
	// (written before) says failed; its details are the BatchResult.
	ErrTypeBatchFailed = "BatchFailed"
	// errTypeBadShard marks a shard no retry can fix (unknown processor,
	// corrupt input shard).
	errTypeBadShard = "BadShard"
)

// Item error types in result lines.
const (
	ItemErrorTimeout   = "timeout"
	ItemErrorPanic     = "panic"
	ItemErrorPermanent = "permanent"
	ItemErrorRetryable = "error"
	ItemErrorOutput    = "invalid_output"
)

// Stores opens each store URL once and shares the bucket.
type Stores struct {
	mu sync.Mutex
	m  map[string]blobstore.Bucket
	// Metrics, if set, counts every operation on the opened buckets.
	Metrics *Metrics
	// Trust's Schemes are the GatedSchemes (file) Open accepts; the zero
	// value accepts none of them.
	Trust Trust
}

// Open returns the bucket for url, opening it on first use. Every URL a
// batch names (its store, its input) is opened here: a URL of a gated
// scheme that s.Trust does not allow is refused with a non-retryable
// ErrTypeNotAllowed error.
func (s *Stores) Open(ctx context.Context, url string) (blobstore.Bucket, error) {
	if err := s.Trust.checkURL(url); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if b, ok := s.m[url]; ok {
		return b, nil
	}
	b, err := blobstore.Open(ctx, url)
	if err != nil {
		return nil, err
	}
	if s.Metrics != nil {
		b = blobstore.Instrument(b, s.Metrics.observeStore)
	}
	if s.m == nil {
		s.m = map[string]blobstore.Bucket{}
	}
	s.m[url] = b
	return b, nil
}

// Close closes every opened bucket.
func (s *Stores) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	for _, b := range s.m {
		errs = append(errs, b.Close())
	}
	s.m = nil
	return errors.Join(errs...)
}

// Activities holds what the activities need; register it with a worker
// through NewWorker.
type Activities struct {
	Processors *Registry
	Stores     *Stores
	Logger     *slog.Logger
	Metrics    *Metrics // nil records nothing
	// Trust decides which exec: processors (not registered under their
	// name) the batches may run; the zero value allows none. Stores has
	// its own, for URLs; NewWorker gives both WorkerOptions.Trust.
	Trust Trust

	// overLimit holds the batch runs (ShardInput.BatchRun) of which a
	// shard on this worker stopped at its failure budget, with that
	// shard's number: such a run is over its limit, so its other shards
	// stop before handing out an item.
	overLimit sync.Map

	// pauseWatches holds one pauseWatch per batch that this worker runs
	// shards of (WatchPause).
	pauseMu      sync.Mutex
	pauseWatches map[string]*pauseWatch
}

func badShard(format string, args ...any) error {
	return temporal.NewNonRetryableApplicationError(fmt.Sprintf(format, args...), errTypeBadShard, nil)
}

// ProcessShard runs every item of one input shard through the processor and
// writes the shard's result object, failures part and receipt. It streams
// (see shardItems): items are read ahead, processed ItemParallelism calls at
// a time, and written in order as they finish, so memory does not grow with
// the shard size and a slow item holds up no call but its own. It
// checkpoints as it goes (see shardOutput): a retried attempt goes on after
// the last checkpoint its predecessor's heartbeat named.
//
// A shard given a FailureBudget stops handing out items once more of its
// items failed than that: the calls in flight finish, and it commits what
// it has — a result object of the items from its first up to the first one
// never handed out (a redrive's, whole: items it no longer ran keep their
// earlier lines) — and returns Stopped. Such a receipt has failed items, so
// a redrive runs the shard again, keeping what succeeded. The batch is then
// over its limit, so the shards of the same run that start on this worker
// after it return Stopped at once, with nothing committed.
func (a *Activities) ProcessShard(ctx context.Context, in ShardInput) (res ShardResult, err error) {
	log := a.Logger.With("batch_id", in.BatchID, "shard", in.Shard)
	if cmd, isExec := strings.CutPrefix(in.Options.Processor, ExecPrefix); isExec && !a.Processors.registered(in.Options.Processor) {
		if err := a.Trust.checkExec(cmd); err != nil {
			return ShardResult{}, err
		}
	}
	proc, err := a.Processors.Lookup(in.Options.Processor, in.Options)
	if err != nil {
		return ShardResult{}, badShard("this worker cannot run the batch: %v", err)
	}
	resumeAt := in.FirstIndex // where a shard that commits nothing resumes
	if in.Resume != nil {
		resumeAt = in.Resume.From
	}
	if in.FailureBudget != nil && in.BatchRun != "" {
		if by, ok := a.overLimit.Load(in.BatchRun); ok && by != in.Shard {
			// Another shard of this run went over the batch's limit: stop
			// before the first item, committing nothing (a redrive runs
			// the shard, as one the batch never started).
			log.Debug("shard not run: the batch is over its failure limit", "stopped_by_shard", by)
			return ShardResult{Stopped: true, ResumeAt: resumeAt}, nil
		}
	}
	// A paused batch: the shard stops handing out items within
	// pauseInterval of the pause (see pauseWatch).
	var pauseSeen atomic.Bool
	var onPause func() // halts the runner once there is one
	var pauseMu sync.Mutex
	if in.WatchPause {
		stop := a.watchPause(ctx, in.BatchID, in.Pauses, func() {
			pauseMu.Lock()
			defer pauseMu.Unlock()
			pauseSeen.Store(true)
			if onPause != nil {
				onPause()
			}
		})
		defer stop()
		if pauseSeen.Load() {
			log.Debug("shard not run: the batch is paused")
			return ShardResult{Paused: true, ResumeAt: resumeAt}, nil
		}
	}
	b, err := a.Stores.Open(ctx, in.Store)
	if err != nil {
		return ShardResult{}, err
	}
	inputKey := manifests.InputShardKey(in.BatchID, in.InputDir, in.Shard)
	input, err := openLines(ctx, b, inputKey)
	if errors.Is(err, blobstore.ErrNotFound) {
		return ShardResult{}, badShard("input shard %s is missing: %v", inputKey, err)
	}
	if err != nil {
		return ShardResult{}, err
	}
	defer input.Close()
	resultKey := manifests.ResultKey(in.BatchID, in.Shard)
	var prev *lineReader // a redrive's (or paused run's) committed lines, read alongside the input
	if in.Redrive > 0 {
		resultKey = manifests.RedriveResultKey(in.BatchID, in.Shard, in.Redrive)
	}
	if in.Resume != nil {
		resultKey = continuedResultKey(in.BatchID, in.Shard, in.Redrive, in.Resume.Seq)
	}
	if in.Redrive > 0 || in.Resume != nil {
		if prev, err = openPreviousLines(ctx, b, in); err != nil {
			return ShardResult{}, err
		}
		if prev != nil {
			defer prev.Close()
		}
	}
	defer a.Metrics.shardStarted(in.Options.Processor)()

	rec := layout.Receipt{Shard: in.Shard, FirstIndex: in.FirstIndex}
	failKey := manifests.ShardFailuresKey(in.BatchID, in.Shard)
	var finished atomic.Int64
	// Heartbeats: the items done (for progress), then the newest
	// checkpoint; one at each checkpoint, and every heartbeatInterval
	// when there was none.
	var last atomic.Pointer[shardCheckpoint]
	var lastBeat atomic.Int64
	beat := func() []any {
		lastBeat.Store(time.Now().UnixNano())
		if ck := last.Load(); ck != nil {
			return []any{finished.Load(), *ck}
		}
		return []any{finished.Load()}
	}
	partsPrefix := shardPartsPrefix(in)
	ck := resumeCheckpoint(ctx, b, in, partsPrefix)
	out := newShardOutput(ctx, b, partsPrefix, ck, func(ck shardCheckpoint) {
		last.Store(&ck)
		activity.RecordHeartbeat(ctx, beat()...)
	})
	defer func() {
		if err != nil {
			out.release()
		}
	}()
	var failedNow atomic.Int64 // items failed in this run, for the budget
	if ck != nil {
		log.Debug("shard resumed from its checkpoint", "next", ck.Next, "parts", ck.Parts)
		last.Store(ck)
		rec.Items, rec.Succeeded, rec.Failed = ck.Items, ck.Succeeded, ck.Failed
		finished.Store(ck.Items)
		failedNow.Store(ck.FailedNow)
	}
	stopBeat := heartbeatEvery(ctx, heartbeatInterval, func() []any {
		if time.Since(time.Unix(0, lastBeat.Load())) < heartbeatInterval/2 {
			return nil // a checkpoint's heartbeat just went
		}
		return beat()
	})
	defer stopBeat()

	runner := newItemRunner(proc, in)
	if ck != nil {
		runner.skipTo = ck.Next
	}
	pauseMu.Lock()
	onPause = runner.halt
	if pauseSeen.Load() {
		runner.halt()
	}
	pauseMu.Unlock()
	var overBudget atomic.Bool
	groups, wait := runner.stream(ctx, in, input, prev, func(l manifests.ResultLine) {
		a.Metrics.item(in.Options.Processor, l)
		finished.Add(1)
		if l.Status != manifests.ItemSucceeded && in.FailureBudget != nil && failedNow.Add(1) > *in.FailureBudget {
			if in.BatchRun != "" {
				a.overLimit.LoadOrStore(in.BatchRun, in.Shard)
			}
			overBudget.Store(true)
			runner.halt()
		}
	})
	defer wait() // on an early return too: stops the reader and the calls
groups:
	for g := range groups {
		select {
		case <-g.done:
		case <-ctx.Done():
			return ShardResult{}, ctx.Err()
		}
		for i, l := range g.lines {
			if l.Status == "" {
				break groups // never handed out (halt): the results end here
			}
			l.Index, l.Input = g.first+int64(i), nil // a redrive's kept line may carry one
			if in.Options.ResultsIncludeInput {
				l.Input = g.items[i]
			}
			if err := out.res.writeResult(l); err != nil {
				return ShardResult{}, err
			}
			rec.Items++
			if l.Status == manifests.ItemSucceeded {
				rec.Succeeded++
				continue
			}
			log.Debug("item failed", "index", l.Index, "error_type", l.Error.Type, "error", l.Error.Message, "attempts", l.Attempts)
			rec.Failed++
			if err := out.fail.write(manifests.FailureLine{Index: l.Index, Input: g.items[i], Error: l.Error}); err != nil {
				return ShardResult{}, err
			}
		}
		if err := out.maybeCheckpoint(rec, g.first+int64(len(g.lines)), failedNow.Load()); err != nil {
			return ShardResult{}, err
		}
	}
	if err := wait(); err != nil {
		return ShardResult{}, err
	}
	if err := ctx.Err(); err != nil {
		return ShardResult{}, err
	}
	halted := runner.isHalted()
	if rec.Items != int64(in.Items) && !(halted && rec.Items < int64(in.Items)) {
		return ShardResult{}, badShard("input shard %s holds %d items, want %d", inputKey, rec.Items, in.Items)
	}
	if rec.Size, rec.SHA256, err = out.commitResults(resultKey); err != nil {
		return ShardResult{}, err
	}
	rec.Key = blobstore.Prefix(b) + resultKey
	if out.hasFailures() {
		if err := out.commitFailures(failKey); err != nil {
			return ShardResult{}, err
		}
		rec.FailuresKey = failKey
	} else if err := b.Delete(ctx, failKey); err != nil { // a stale part from an earlier attempt
		return ShardResult{}, err
	}
	if err := layout.WriteReceipt(ctx, b, in.BatchID, rec); err != nil {
		return ShardResult{}, err
	}
	out.cleanup(activity.GetInfo(ctx).Attempt > 1, log)
	// Stopped at the budget, or paused before its last item was handed out
	// (a pause that came after it is no stop).
	stopped := halted && overBudget.Load()
	end := in.FirstIndex + int64(in.Items)
	if halted && runner.stoppedAt >= 0 && runner.stoppedAt < end {
		resumeAt = max(resumeAt, runner.stoppedAt)
	} else {
		resumeAt = end
	}
	paused := halted && !stopped && pauseSeen.Load() && resumeAt < end
	log.Debug("shard done", "items", rec.Items, "failed", rec.Failed, "stopped", stopped, "paused", paused)
	return ShardResult{Key: rec.Key, Items: rec.Items, Succeeded: rec.Succeeded, Failed: rec.Failed, Size: rec.Size, SHA256: rec.SHA256,
		Stopped: stopped, Paused: paused, ResumeAt: resumeAt}, nil
}

// continuedResultKey is the result object of a shard continued after its
// seq-th pause (of redrive n, or of the batch itself for 0): a new object
// each time, as the continuation reads the one before.
func continuedResultKey(batchID string, shard, redrive, seq int) string {
	base := strings.TrimSuffix(manifests.ResultKey(batchID, shard), ".jsonl.zst")
	if redrive > 0 {
		base += fmt.Sprintf(".r%d", redrive)
	}
	return fmt.Sprintf("%s.p%d.jsonl.zst", base, seq)
}

// pauseInterval is how often a worker asks Temporal for the pause count of
// a batch it runs shards of: one describe of the batch's workflow per
// batch and worker (not per shard), every 2 s while its shards run, so a
// shard stops handing out items about 2 s after a pause.
const pauseInterval = 2 * time.Second

// pauseWatch follows one batch's pause count (the "pauses" key of its
// workflow's memo, which BatchWorkflow upserts in the same workflow task
// as it accepts the pause) for the shards of it that run on this worker.
type pauseWatch struct {
	pauses int // last seen; -1 before the first answer
	subs   map[*pauseSub]bool
}

type pauseSub struct {
	after int // the pause count the shard started under
	halt  func()
}

// watchPause calls halt (once) when the pause count of batchID goes above
// after, until stop is called. The first shard of a batch on this worker
// asks at once, so a shard that starts late, after a pause, hands out
// nothing; the others share its answers. Without a client (a test's
// activity environment) or an answer, nothing is halted.
func (a *Activities) watchPause(ctx context.Context, batchID string, after int, halt func()) (stop func()) {
	c := workerClient(ctx)
	if c == nil {
		return func() {}
	}
	sub := &pauseSub{after: after, halt: halt}
	a.pauseMu.Lock()
	w, running := a.pauseWatches[batchID]
	if !running {
		w = &pauseWatch{pauses: -1, subs: map[*pauseSub]bool{}}
		if a.pauseWatches == nil {
			a.pauseWatches = map[string]*pauseWatch{}
		}
		a.pauseWatches[batchID] = w
	}
	w.subs[sub] = true
	a.pauseMu.Unlock()
	if !running {
		a.pollPauses(c, batchID, w)
		go func() {
			t := time.NewTicker(pauseInterval)
			defer t.Stop()
			for range t.C {
				a.pauseMu.Lock()
				if len(w.subs) == 0 {
					delete(a.pauseWatches, batchID)
					a.pauseMu.Unlock()
					return
				}
				a.pauseMu.Unlock()
				a.pollPauses(c, batchID, w)
			}
		}()
	} else {
		a.pauseMu.Lock()
		a.notePauses(w, w.pauses)
		a.pauseMu.Unlock()
	}
	return func() {
		a.pauseMu.Lock()
		delete(w.subs, sub)
		a.pauseMu.Unlock()
	}
}

// pollPauses asks Temporal for the batch's pause count and halts the
// shards started under a lower one.
func (a *Activities) pollPauses(c client.Client, batchID string, w *pauseWatch) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	d, err := c.DescribeWorkflowExecution(ctx, batchID, "")
	if err != nil {
		return // asked again at the next tick
	}
	n := 0
	if p := d.GetWorkflowExecutionInfo().GetMemo().GetFields()["pauses"]; p != nil {
		if converter.GetDefaultDataConverter().FromPayload(p, &n) != nil {
			return
		}
	}
	a.pauseMu.Lock()
	defer a.pauseMu.Unlock()
	w.pauses = n
	a.notePauses(w, n)
}

// notePauses halts the subscribers of w started under fewer than n
// pauses (a.pauseMu held).
func (a *Activities) notePauses(w *pauseWatch, n int) {
	for s := range w.subs {
		if n > s.after {
			s.halt()
			delete(w.subs, s)
		}
	}
}

// workerClient is the client of the worker running the activity, nil
// where there is none (activity test environments).
func workerClient(ctx context.Context) (c client.Client) {
	defer func() {
		if recover() != nil {
			c = nil
		}
	}()
	return activity.GetClient(ctx)
}

// lineReader reads the zstd JSON lines of one object.
type lineReader struct {
	*zjsonl.Reader
	body io.Closer
	// lines is how many lines a redrive's earlier results hold (its
	// receipt's items: fewer than the shard's when it stopped early).
	lines int64
}

func openLines(ctx context.Context, b blobstore.Bucket, key string) (*lineReader, error) {
	r, err := b.NewReader(ctx, key)
	if err != nil {
		return nil, err
	}
	zr, err := zjsonl.NewReader(r)
	if err != nil {
		r.Close()
		return nil, fmt.Errorf("%s: %w", key, err)
	}
	return &lineReader{Reader: zr, body: r}, nil
}

func (l *lineReader) Close() error {
	l.Reader.Close()
	return l.body.Close()
}

// openPreviousLines opens the committed result lines of a shard a redrive
// re-runs, or returns nil when the shard never committed results. A shard
// that stopped at its failure budget committed the lines of its first
// items only; the items after them are run as never run before.
func openPreviousLines(ctx context.Context, b blobstore.Bucket, in ShardInput) (*lineReader, error) {
	rec, err := layout.ReadReceipt(ctx, b, in.BatchID, in.Shard)
	if errors.Is(err, blobstore.ErrNotFound) {
		return nil, nil
	}
	if errors.Is(err, layout.ErrCorrupt) {
		return nil, badShard("receipt of shard %d is corrupt: %v", in.Shard, err)
	}
	if err != nil {
		return nil, err
	}
	key, ok := strings.CutPrefix(rec.Key, blobstore.Prefix(b))
	if !ok {
		return nil, badShard("receipt of shard %d names %s, outside the store's prefix", in.Shard, rec.Key)
	}
	if rec.Items > int64(in.Items) || rec.Items < 0 || rec.FirstIndex != in.FirstIndex {
		return nil, badShard("%s holds %d lines from index %d, want at most %d from %d", key, rec.Items, rec.FirstIndex, in.Items, in.FirstIndex)
	}
	lines, err := openLines(ctx, b, key)
	if errors.Is(err, blobstore.ErrNotFound) {
		// Retrying cannot bring a deleted object back: fail the shard, naming it.
		return nil, badShard("redrive of shard %d needs its earlier results %s, which are missing: %v", in.Shard, rec.Key, err)
	}
	if err != nil {
		return nil, err
	}
	lines.lines = rec.Items
	return lines, nil
}

// ShardsToRedrive lists the shards in [From, To) with failed items, no
// committed results, or (given the shard size) results of fewer items
// than the shard's. (A shard that stopped at its failure budget before
// its last item has failed items, so it is listed; one cancelled when the
// batch stopped committed nothing.)
func (a *Activities) ShardsToRedrive(ctx context.Context, q RedriveQuery) ([]int, error) {
	b, err := a.Stores.Open(ctx, q.Store)
	if err != nil {
		return nil, err
	}
	need := make([]bool, max(0, q.To-q.From))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(16)
	for i := range need {
		g.Go(func() error {
			rec, err := layout.ReadReceipt(gctx, b, q.BatchID, q.From+i)
			switch {
			case errors.Is(err, blobstore.ErrNotFound):
				need[i] = true
			case err != nil:
				return err
			default:
				need[i] = rec.Failed > 0
				if q.ShardSize > 0 { // a shard that stopped part way
					first := int64(q.From+i) * int64(q.ShardSize)
					need[i] = need[i] || rec.Items < min(int64(q.ShardSize), q.Items-first)
				}
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	shards := []int{}
	for i, n := range need {
		if n {
			shards = append(shards, q.From+i)
		}
	}
	return shards, nil
}

// heartbeatInterval is how often a running shard heartbeats.
const heartbeatInterval = 5 * time.Second

// heartbeatEvery records a heartbeat with details() every interval (none
// when they are nil) until the returned stop function is called.
func heartbeatEvery(ctx context.Context, interval time.Duration, details func() []any) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-t.C:
				if d := details(); d != nil {
					activity.RecordHeartbeat(ctx, d...)
				}
			}
		}
	}()
	return func() { close(done); wg.Wait() }
}

// Finalize writes the batch's failures object and then its manifest, from
// the shards' receipts: only committed objects are listed.
func (a *Activities) Finalize(ctx context.Context, in FinalizeInput) (BatchResult, error) {
	bin := in.Batch
	b, err := a.Stores.Open(ctx, bin.Store)
	if err != nil {
		return BatchResult{}, err
	}
	// The submit that started the batch saves its spec right after the
	// start; one that died in between left none, so redrive would be refused.
	if bin.Redrive == 0 && bin.Shards > 0 {
		if ok, err := blobstore.Exists(ctx, b, manifests.BatchSpecKey(bin.BatchID)); err == nil && !ok {
			spec := bin
			spec.Cursor = nil
			if err := SaveSpec(ctx, b, spec); err != nil {
				return BatchResult{}, err
			}
		}
	}
	receipts, err := layout.ReadReceipts(ctx, b, bin.BatchID, bin.Shards, func(i int) { activity.RecordHeartbeat(ctx, i) })
	if err != nil {
		return BatchResult{}, err
	}
	status := in.Status
	if status == "" && len(receipts) != bin.Shards {
		return BatchResult{}, fmt.Errorf("batch %s: only %d of %d shards have committed results", bin.BatchID, len(receipts), bin.Shards)
	}
	prefix := blobstore.Prefix(b)
	m, parts := layout.Assemble(manifests.Manifest{
		BatchID: bin.BatchID, Error: in.Error, StopReason: in.StopReason, Processor: bin.Options.Processor,
		Store:     bin.Store,
		Input:     manifests.Input{Source: bin.Source, Items: bin.Items, Shards: bin.Shards, ShardSize: bin.Options.ShardSize},
		StartedAt: in.StartedAt.UTC(), FinishedAt: time.Now().UTC(),
		Redrives: bin.Redrive,
	}, receipts)
	if status == "" {
		status = manifests.StatusSucceeded
		if m.Counts.Failed > 0 {
			status = manifests.StatusCompletedWithFailures
		}
	}
	m.Status = status
	failKey := manifests.FailuresKey(bin.BatchID)
	if len(parts) > 0 {
		if err := concatObjects(ctx, b, failKey, parts); err != nil {
			return BatchResult{}, err
		}
		m.Failures = &manifests.Failures{Key: prefix + failKey, Items: m.Counts.Failed}
	} else if err := b.Delete(ctx, failKey); err != nil {
		return BatchResult{}, err
	}
	if err := layout.WriteManifest(ctx, b, m); err != nil {
		return BatchResult{}, err
	}
	if bin.Schedule != "" {
		if err := layout.UpdateLatest(ctx, b, bin.Schedule, m); err != nil {
			return BatchResult{}, err
		}
	}
	if in.Status == "" && !bin.Options.KeepSuperseded {
		// Every shard committed and none runs: what the manifest and the
		// receipts do not name, no redrive reads.
		a.deleteSuperseded(ctx, b, m, receipts)
	}
	return BatchResult{ManifestKey: prefix + manifests.ManifestKey(bin.BatchID), Status: status, Counts: m.Counts}, nil
}

// deleteSuperseded deletes the objects of m's batch that layout.Superseded
// finds superseded (the result objects a redrive replaced, say), once m is
// written, so that a glob over results/ reads each item once. A failure is
// logged, never returned: gc collects what is left.
func (a *Activities) deleteSuperseded(ctx context.Context, b blobstore.Bucket, m manifests.Manifest, receipts []layout.Receipt) {
	log := a.Logger.With("batch_id", m.BatchID)
	bo := layout.BatchObjects{ID: m.BatchID}
	for _, p := range []string{manifests.BatchPrefix(m.BatchID) + "results/", manifests.ShardReceiptsPrefix(m.BatchID), manifests.PartsPrefix(m.BatchID)} {
		for o, err := range b.List(ctx, p) {
			if err != nil {
				log.Warn("superseded objects not deleted: listing failed (gc collects them)", "error", err)
				return
			}
			bo.Objects = append(bo.Objects, o)
		}
	}
	var g errgroup.Group
	g.SetLimit(16)
	var deleted atomic.Int64
	for _, o := range layout.Superseded(bo, m, receipts, blobstore.Prefix(b)) {
		g.Go(func() error {
			if err := b.Delete(ctx, o.Key); err != nil {
				log.Warn("superseded object not deleted (gc collects it)", "key", o.Key, "error", err)
				return nil
			}
			if n := deleted.Add(1); n%100 == 0 {
				activity.RecordHeartbeat(ctx, n)
			}
			return nil
		})
	}
	g.Wait()
	if n := deleted.Load(); n > 0 {
		log.Debug("deleted superseded objects", "objects", n)
	}
}

// concatObjects writes the bytes of parts, one after another, to key. zstd
// frames concatenate into a valid stream, so no re-encoding is needed.
func concatObjects(ctx context.Context, b blobstore.Bucket, key string, parts []string) error {
	bw := blobstore.NewWriter(ctx, b, key)
	for _, p := range parts {
		if err := copyObject(ctx, b, bw, p); err != nil {
			bw.Abort(err)
			return err
		}
	}
	return bw.Close()
}
