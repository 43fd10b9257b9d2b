package pipeline

import (
	"errors"
	"fmt"
	"math"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/batchpipe/batchpipe/manifests"
)

// Names under which the workflows, activities and queries are registered.
const (
	BatchWorkflowName   = "BatchWorkflow"
	ShardWorkflowName   = "ShardWorkflow"
	ProgressQuery       = "progress"
	DefaultTaskQueue    = "batchpipe"
	DefaultConcurrency  = 32
	DefaultShardsPerRun = 500
	// Updates that steer a running batch (see steer.go of the root
	// package): each has a validator, so a refusal comes back at once and
	// changes nothing.
	PauseUpdate   = "pause"
	ResumeUpdate  = "resume"
	OptionsUpdate = "update"
)

// Options are a batch's knobs; they travel unchanged across continue-as-new.
type Options struct {
	Processor       string        `json:"processor"`
	ShardSize       int           `json:"shard_size"`
	Concurrency     int           `json:"concurrency"`      // child workflows in flight
	ShardsPerRun    int           `json:"shards_per_run"`   // shards started before continue-as-new
	MaxFailures     FailureLimit  `json:"max_failures"`     // stop early once exceeded
	ItemTimeout     time.Duration `json:"item_timeout"`     // per attempt
	ItemAttempts    int           `json:"item_attempts"`    // including the first
	ItemBackoff     time.Duration `json:"item_backoff"`     // before the second attempt; doubles
	ItemParallelism int           `json:"item_parallelism"` // calls to the processor at once in one shard
	// ItemsPerCall is how many items a BatchProcessor (an exec processor
	// speaking arrays) gets in one call; 0 means 1.
	ItemsPerCall int `json:"items_per_call,omitempty"`
	// ItemContext has exec processors receive each item in an envelope
	// with its batch id, index, attempt and key (Go processors read it
	// with ItemFrom either way).
	ItemContext bool `json:"item_context,omitempty"`
	// Rate is the most items per second handed to processors across the
	// whole batch (every shard and worker together); 0 means no limit.
	Rate float64 `json:"rate,omitempty"`
	// ResultsIncludeInput has each result line carry its item's input,
	// as "input".
	ResultsIncludeInput bool `json:"results_include_input,omitempty"`
	// KeepSuperseded keeps the result objects a finished batch's manifest
	// no longer lists (those a redrive replaced), which its finalize
	// otherwise deletes once the manifest is written.
	KeepSuperseded bool `json:"keep_superseded,omitempty"`
	// Canary runs shard 0 alone first; the rest of the batch starts only
	// if no more of its items failed than CanaryMaxFailures allows (a
	// count, or a percent of shard 0's items; the zero value allows none),
	// otherwise the batch ends failed.
	Canary            bool         `json:"canary,omitempty"`
	CanaryMaxFailures FailureLimit `json:"canary_max_failures,omitzero"`
	// Priority is the Temporal task priority of the batch's shards and
	// their activities: 1 (highest) to 5; 0 is Temporal's default, 3.
	Priority int `json:"priority,omitempty"`
	// FairnessKey groups batches that share the workers evenly (Temporal
	// fairness, weighted by FairnessWeight); "" is the batch id, so two
	// batches on one task queue share it. FairnessWeight 0 means 1.
	FairnessKey    string  `json:"fairness_key,omitempty"`
	FairnessWeight float64 `json:"fairness_weight,omitempty"`

	invalid string // why the JSON it was read from is refused (Validate)
}

// TaskPriority is the Temporal priority of a batch's shard workflows and
// their activities: its Priority, and its FairnessKey (batchID when
// unset) with its weight.
func (o Options) TaskPriority(batchID string) temporal.Priority {
	key := o.FairnessKey
	if key == "" {
		key = batchID
	}
	if len(key) > MaxFairnessKeyBytes { // a long batch id: its first 64 bytes
		key = key[:MaxFairnessKeyBytes]
	}
	return temporal.Priority{PriorityKey: o.Priority, FairnessKey: key, FairnessWeight: float32(o.FairnessWeight)}
}

// FailureLimit stops a batch once more items failed than it allows: more
// than Count items, or more than Percent of the batch's items. Neither set
// (the zero value, NoFailureLimit) means no limit; a limit of 0 stops the
// batch at its first failure. Build one with MaxFailedItems,
// MaxFailedPercent or ParseFailureLimit.
type FailureLimit struct {
	Count   *int64   `json:"count,omitempty"`
	Percent *float64 `json:"percent,omitempty"` // of the batch's items
}

// Exceeded reports whether failed items out of total break the limit.
func (l FailureLimit) Exceeded(failed, total int64) bool {
	if l.Count != nil && failed > *l.Count {
		return true
	}
	return l.Percent != nil && total > 0 && float64(failed)*100/float64(total) > *l.Percent
}

// isNone reports whether l sets no limit.
func (l FailureLimit) isNone() bool { return l.Count == nil && l.Percent == nil }

// Allowed returns the most failed items out of total that the limit lets
// pass (one more is Exceeded), and false when no count up to total exceeds
// it (no limit, or one above total). A percent is of total: 1% of
// 50,000 items allows 500.
func (l FailureLimit) Allowed(total int64) (int64, bool) {
	if total < 0 || !l.Exceeded(total, total) {
		return 0, false
	}
	// The smallest count that exceeds, by bisection over Exceeded itself
	// (so no rounding of a percent can disagree with it).
	lo, hi := int64(0), total // Exceeded(hi) holds
	for lo < hi {
		mid := lo + (hi-lo)/2
		if l.Exceeded(mid, total) {
			hi = mid
		} else {
			lo = mid + 1
		}
	}
	return lo - 1, true
}

// BatchInput starts a batch. Only counts travel; items live in the store.
type BatchInput struct {
	BatchID string  `json:"batch_id"`
	Store   string  `json:"store"` // store URL, credentials never included
	Source  string  `json:"source"`
	Items   int64   `json:"items"`
	Shards  int     `json:"shards"`
	Options Options `json:"options"`
	// InputURL, when set, names an input object in a blob store that the
	// batch stages itself (in an activity on a worker) before fanning out;
	// Items and Shards are then filled in from what was staged.
	InputURL     string `json:"input_url,omitempty"`
	InputFormat  string `json:"input_format,omitempty"`
	MaxItemBytes int    `json:"max_item_bytes,omitempty"`
	// Schedule names the schedule that started the batch; its
	// schedules/<name>/latest.json is updated when the batch finishes.
	Schedule string `json:"schedule,omitempty"`
	// Redrive numbers a redrive of a finished batch (1 for the first); 0
	// for the original run. A redrive runs only failed or missing shards.
	Redrive int `json:"redrive,omitempty"`
	// InputDir names the staging directory (batches/<id>/input/<dir>/) of
	// an input the library staged; "" for the batch's input/ itself (inputs
	// staged by a worker, and batches staged before staging directories).
	InputDir string `json:"input_dir,omitempty"`
	// InputSHA256 is the staged input's identity (Staged.SHA256), so that a
	// second submit of the id can tell the same input from another.
	InputSHA256 string `json:"input_sha256,omitempty"`
	// Cursor is set by continue-as-new; nil on the first run.
	Cursor *Cursor `json:"cursor,omitempty"`

	invalid string // why the JSON it was read from is refused (Validate)
}

// Cursor is what one run hands the next: O(1) in the batch size.
type Cursor struct {
	NextShard  int       `json:"next_shard"`
	ShardsDone int       `json:"shards_done"`
	Succeeded  int64     `json:"succeeded"`
	Failed     int64     `json:"failed"`
	Run        int       `json:"run"` // 1 for the first run
	StartedAt  time.Time `json:"started_at"`
	// Paused holds the batch's pause (PauseUpdate) across continue-as-new:
	// since when, why, and how many pauses it had (each shard is told the
	// count it started under, and stops when it sees a higher one).
	Paused      bool       `json:"paused,omitempty"`
	PausedSince *time.Time `json:"paused_since,omitempty"`
	PauseReason string     `json:"pause_reason,omitempty"`
	Pauses      int        `json:"pauses,omitempty"`
	// Partial lists the shards that stopped at a pause part way: each
	// committed its first items, and runs the rest on resume. At most the
	// batch's concurrency of them.
	Partial []PartialShard `json:"partial,omitempty"`
	// Canary is where the batch's canary (Options.Canary) is: running
	// (shard 0 runs alone), passed, or failed; "" for a batch or a
	// redrive without one.
	Canary string `json:"canary,omitempty"`
}

// States of a batch's canary (Cursor.Canary, Progress.Canary, the memo's
// "canary").
const (
	CanaryRunning = "running"
	CanaryPassed  = "passed"
	CanaryFailed  = "failed"
)

// PartialShard is a shard that stopped at a pause: its results up to From
// are committed (counted in the cursor already), the rest still to run.
type PartialShard struct {
	Shard     int   `json:"shard"`
	From      int64 `json:"from"` // index of its first item not processed
	Seq       int   `json:"seq"`  // how many times it stopped (names its next result object)
	Succeeded int64 `json:"succeeded"`
	Failed    int64 `json:"failed"`
}

// ShardInput is one child's work.
type ShardInput struct {
	BatchID    string  `json:"batch_id"`
	Store      string  `json:"store"`
	Shard      int     `json:"shard"`
	FirstIndex int64   `json:"first_index"`
	Items      int     `json:"items"`
	Options    Options `json:"options"`
	Redrive    int     `json:"redrive,omitempty"`
	InputDir   string  `json:"input_dir,omitempty"` // BatchInput.InputDir
	// Rate is this shard's share of the batch's Options.Rate, in items
	// per second (0: none).
	Rate float64 `json:"rate,omitempty"`
	// FailureBudget, when set, is how many of this shard's items may fail
	// before the batch's failure limit is exceeded by them alone (the
	// limit in items, less what failed in the shards finished before it
	// started): once more failed, the shard stops handing out items and
	// returns what it has, Stopped. Nil: no limit (and batches started
	// before the budget existed).
	FailureBudget *int64 `json:"failure_budget,omitempty"`
	// BatchRun names the batch's workflow run (its first run id: the same
	// across continue-as-new, another for each redrive) when the shard
	// has a FailureBudget: once one shard of it stops at its budget, the
	// batch is over its limit, and its shards that start on the same
	// worker after stop at once.
	BatchRun string `json:"batch_run,omitempty"`
	// WatchPause has the shard watch the batch's pauses: it stops handing
	// out items once the batch's pause count (in its workflow's memo) goes
	// above Pauses, and commits the items it processed (ShardResult.Paused).
	WatchPause bool `json:"watch_pause,omitempty"`
	Pauses     int  `json:"pauses,omitempty"`
	// Resume continues a shard that stopped at a pause: its committed lines
	// before Resume.From are kept as they are, the items after run.
	Resume *ShardResume `json:"resume,omitempty"`
}

// ShardResume says where a paused shard continues.
type ShardResume struct {
	From int64 `json:"from"` // index of the first item not yet processed
	Seq  int   `json:"seq"`  // 1 for the first continuation: names the result object
}

// RedriveQuery asks which shards in [From, To) a redrive must run.
type RedriveQuery struct {
	BatchID string `json:"batch_id"`
	Store   string `json:"store"`
	From    int    `json:"from"`
	To      int    `json:"to"`
	// Items and ShardSize, when set, let a receipt of fewer items than
	// its shard's (a shard stopped at a pause, then the batch cancelled)
	// count as unfinished.
	Items     int64 `json:"items,omitempty"`
	ShardSize int   `json:"shard_size,omitempty"`
}

// ShardResult is all a child returns: where its results are and their counts.
type ShardResult struct {
	Key       string `json:"key"`
	Items     int64  `json:"items"`
	Succeeded int64  `json:"succeeded"`
	Failed    int64  `json:"failed"`
	Size      int64  `json:"size"`
	SHA256    string `json:"sha256"`
	// Stopped says the shard's failures went over its FailureBudget: it
	// handed out no item after, and Items may be fewer than the shard's
	// (its results cover its first Items items).
	Stopped bool `json:"stopped,omitempty"`
	// Paused says the shard stopped because the batch was paused (and not
	// at its failure budget): its results cover its items before ResumeAt,
	// and a continuation (ShardInput.Resume) runs the rest.
	Paused   bool  `json:"paused,omitempty"`
	ResumeAt int64 `json:"resume_at,omitempty"`
}

// Progress answers the progress query.
type Progress struct {
	BatchID    string    `json:"batch_id"`
	Items      int64     `json:"items"`
	Done       int64     `json:"done"`
	Succeeded  int64     `json:"succeeded"`
	Failed     int64     `json:"failed"`
	Shards     int       `json:"shards"`
	ShardsDone int       `json:"shards_done"`
	InFlight   int       `json:"in_flight"`
	Run        int       `json:"run"`
	StartedAt  time.Time `json:"started_at"`
	Stopping   string    `json:"stopping,omitempty"`
	// Paused says no shard starts and the running ones stop (PauseUpdate),
	// since PausedSince, for PauseReason.
	Paused      bool       `json:"paused,omitempty"`
	PausedSince *time.Time `json:"paused_since,omitempty"`
	PauseReason string     `json:"pause_reason,omitempty"`
	// The batch's knobs as they are now (OptionsUpdate changes them).
	Concurrency int           `json:"concurrency,omitempty"`
	MaxFailures *FailureLimit `json:"max_failures,omitempty"`
	Rate        float64       `json:"rate,omitempty"`
	// Canary: running, passed or failed (CanaryRunning…), for a batch with
	// a canary; the rest of the batch waits while it runs.
	Canary string `json:"canary,omitempty"`
	// The Temporal priority and fairness key its shards run with
	// (Options.TaskPriority): 0 is the default priority, 3.
	Priority       int     `json:"priority,omitempty"`
	FairnessKey    string  `json:"fairness_key,omitempty"`
	FairnessWeight float64 `json:"fairness_weight,omitempty"`
}

// PauseRequest is PauseUpdate's argument.
type PauseRequest struct {
	Reason string `json:"reason,omitempty"`
}

// OptionsChange is OptionsUpdate's argument: the knobs to change, the
// others kept. Concurrency 0 and a nil Rate or MaxFailures keep theirs;
// a Rate of 0 lifts the rate limit, a MaxFailures with neither count nor
// percent lifts the failure limit.
type OptionsChange struct {
	Concurrency int           `json:"concurrency,omitempty"`
	MaxFailures *FailureLimit `json:"max_failures,omitempty"`
	Rate        *float64      `json:"rate,omitempty"`
}

// ErrTypeNotSteerable is the type of an update refused because of the
// batch's state (finishing, already paused, not paused, started by older
// workflow code); ErrTypeInvalidInput one refused for its values.
const ErrTypeNotSteerable = "BatchNotSteerable"

// BatchResult is what BatchWorkflow returns: the manifest's place and counts.
type BatchResult struct {
	ManifestKey string           `json:"manifest_key"`
	Status      string           `json:"status"`
	Counts      manifests.Counts `json:"counts"`
	Runs        int              `json:"runs"`
}

// FinalizeInput tells the finalize activity how the batch ended.
type FinalizeInput struct {
	Batch  BatchInput `json:"batch"`
	Status string     `json:"status"` // failed or canceled; "" lets finalize decide from counts
	Error  string     `json:"error,omitempty"`
	// StopReason says why a batch stopped early (manifests.Stop*).
	StopReason string    `json:"stop_reason,omitempty"`
	StartedAt  time.Time `json:"started_at"`
}

func shardItems(in BatchInput, shard int) int {
	first := int64(shard) * int64(in.Options.ShardSize)
	return int(min(int64(in.Options.ShardSize), in.Items-first))
}

// BatchWorkflow is the parent: it walks shard numbers with a sliding window
// of at most Concurrency children, continues-as-new after ShardsPerRun
// shards (or when the server suggests it), and finalizes the manifest when
// every shard is done, the failure limit is exceeded, or it is cancelled.
// Each run goes through the phases of batchRun in order: stage (a worker
// stages the input object, first run only), plan the chunk (a redrive asks
// which shards need it), fan out, drain, then continue as new or finalize.
func BatchWorkflow(ctx workflow.Context, in BatchInput) (BatchResult, error) {
	// A bad input (from any client: the contract is public) fails the batch
	// at once, naming the field; zero options get their defaults.
	if err := in.Validate(); err != nil {
		return BatchResult{}, temporal.NewNonRetryableApplicationError("invalid batch input: "+err.Error(), ErrTypeInvalidInput, nil)
	}
	r := &batchRun{ctx: ctx, in: in, cur: Cursor{Run: 1, StartedAt: workflow.Now(ctx)}}
	if in.Cursor != nil {
		r.cur = *in.Cursor
		r.cur.Run++
	}
	// Pause, resume and live option updates (steer.go): runs started
	// before them replay without (their updates are refused).
	r.steer = workflow.GetVersion(ctx, "steer", workflow.DefaultVersion, 1) >= 1
	// Shards with the batch's priority and fairness key; a canary (only
	// batches that ask for one mark it). Both need the steered fan-out.
	if r.steer {
		r.priority = workflow.GetVersion(ctx, "priority", workflow.DefaultVersion, 1) >= 1
		if in.Options.Canary {
			r.canary = workflow.GetVersion(ctx, "canary", workflow.DefaultVersion, 1) >= 1
		}
	}
	if _, ok := workflow.GetTypedSearchAttributes(ctx).GetKeyword(SearchAttrRole); ok {
		r.searchAttrs = workflow.GetVersion(ctx, "search-attributes", workflow.DefaultVersion, 1) >= 1
	}
	if err := workflow.SetQueryHandler(ctx, ProgressQuery, r.progress); err != nil {
		return BatchResult{}, err
	}
	if err := r.setUpdateHandlers(); err != nil {
		return BatchResult{}, err
	}
	if err := r.stage(); err != nil {
		return BatchResult{}, err
	}
	r.memoProgress = workflow.GetVersion(ctx, "memo-progress", workflow.DefaultVersion, 1) >= 1
	if r.steer {
		r.memoRefresh = workflow.GetVersion(ctx, "memo-refresh", workflow.DefaultVersion, 1) >= 1
	}
	r.upsertProgress(ctx, r.runStatus())
	r.waitForCancellation = workflow.GetVersion(ctx, "wait-for-cancellation", workflow.DefaultVersion, 1) >= 1
	// Shards get a failure budget and stop themselves; the batch cancels
	// its running shards once the limit is exceeded (only when it waits
	// for them, so nothing commits after the manifest). A steered batch
	// can get a limit later (OptionsUpdate), so it asks whatever its limit.
	if r.steer {
		r.promptFailureStop = r.waitForCancellation &&
			workflow.GetVersion(ctx, "prompt-failure-stop", workflow.DefaultVersion, 1) >= 1
	} else {
		r.promptFailureStop = r.waitForCancellation && !r.in.Options.MaxFailures.isNone() &&
			workflow.GetVersion(ctx, "prompt-failure-stop", workflow.DefaultVersion, 1) >= 1
	}
	if err := r.planChunk(); err != nil {
		return BatchResult{}, err
	}
	if r.steer {
		r.fanOutSteered()
		r.drainSteered()
	} else {
		r.fanOut()
		r.drain()
	}
	if r.stopping == "" && (r.cur.NextShard < r.in.Shards || len(r.cur.Partial) > 0) {
		next := r.in
		next.Cursor = &r.cur
		return BatchResult{}, workflow.NewContinueAsNewError(ctx, BatchWorkflowName, next)
	}
	r.finishing = true
	return r.finalize()
}

// batchRun is one run of BatchWorkflow: its input, the cursor it carries
// to the next run, and why it stops starting shards, if it does.
type batchRun struct {
	ctx      workflow.Context
	in       BatchInput
	cur      Cursor
	inFlight int
	// searchAttrs: the batch was started with batchpipe's search
	// attributes (the server has them), so its shards get them too and it
	// sets its status at the end.
	searchAttrs bool
	// stopping says why no more shards start ("" while they do), and
	// stopReason classifies it (manifests.Stop*; see stopStatus).
	stopping, stopReason string
	// redo lists the shards of this run's chunk a redrive runs; chunkEnd
	// is where the chunk ends.
	redo     []int
	chunkEnd int
	sel      workflow.Selector
	// cancelShards cancels the children in flight (promptFailureStop).
	cancelShards workflow.CancelFunc

	memoProgress, waitForCancellation, promptFailureStop, steer, priority, canary bool // version gates
	// canaryVerdict says how the canary failed (Cursor.Canary failed),
	// for canaryFailed to stop the batch with.
	canaryVerdict string
	// finishing is set once the run writes the manifest: too late to steer.
	finishing bool
	// childCtx starts the shards (fanOutSteered).
	childCtx workflow.Context
	// memoRefresh: the memo shows the running shards' items (refreshMemo,
	// gated); inFlightItems is what they reported at the last refresh, and
	// memoDone the memo's last "done", which never goes back.
	memoRefresh   bool
	inFlightItems int64
	memoDone      int64
	stopRefresh   workflow.CancelFunc
	final         *manifests.Counts // the manifest's, once written
}

func (r *batchRun) progress() (Progress, error) {
	p := Progress{
		BatchID: r.in.BatchID, Items: r.in.Items, Done: r.cur.Succeeded + r.cur.Failed,
		Succeeded: r.cur.Succeeded, Failed: r.cur.Failed, Shards: r.in.Shards, ShardsDone: r.cur.ShardsDone,
		InFlight: r.inFlight, Run: r.cur.Run, StartedAt: r.cur.StartedAt, Stopping: r.stopping,
	}
	if r.steer {
		o := r.in.Options
		p.Paused, p.PausedSince, p.PauseReason = r.cur.Paused, r.cur.PausedSince, r.cur.PauseReason
		p.Concurrency, p.Rate = o.Concurrency, o.Rate
		if o.MaxFailures.Set() {
			l := o.MaxFailures
			p.MaxFailures = &l
		}
		p.Canary = r.cur.Canary
		if r.priority {
			tp := o.TaskPriority(r.in.BatchID)
			p.Priority, p.FairnessKey, p.FairnessWeight = tp.PriorityKey, tp.FairnessKey, o.FairnessWeight
		}
	}
	return p, nil
}

// runStatus is the memo's status while the batch runs.
func (r *batchRun) runStatus() string {
	if r.cur.Paused {
		return "paused"
	}
	return "running"
}

// stop records the first reason the batch stops.
func (r *batchRun) stop(why, reason string) {
	if r.stopping == "" {
		r.stopping, r.stopReason = why, reason
	}
}

// stopStatus is the status a stopped batch ends with: canceled or failed;
// "" while it runs on (finalize then decides from the counts).
func (r *batchRun) stopStatus() string {
	switch r.stopReason {
	case "":
		return ""
	case manifests.StopCanceled:
		return manifests.StatusCanceled
	}
	return manifests.StatusFailed
}

// stage has a worker stage the batch's input object on its first run; an
// input that fails validation stops the batch as failed.
func (r *batchRun) stage() error {
	in := &r.in
	if in.Cursor != nil || in.InputURL == "" || in.Shards != 0 {
		return nil
	}
	actx := workflow.WithActivityOptions(r.ctx, workflow.ActivityOptions{
		StartToCloseTimeout: 24 * time.Hour,
		HeartbeatTimeout:    time.Minute,
		RetryPolicy: &temporal.RetryPolicy{InitialInterval: time.Second, MaximumInterval: time.Minute,
			NonRetryableErrorTypes: []string{ErrTypeBadInput}},
	})
	var st Staged
	err := workflow.ExecuteActivity(actx, activityStageInput, *in).Get(r.ctx, &st)
	var appErr *temporal.ApplicationError
	switch {
	case errors.As(err, &appErr) && appErr.Type() == ErrTypeBadInput:
		r.stop("bad input: "+appErr.Message(), manifests.StopBadInput)
	case err != nil && r.ctx.Err() != nil &&
		workflow.GetVersion(r.ctx, "canceled-while-staging", workflow.DefaultVersion, 1) >= 1:
		// Cancelled while a worker staged the input: end with a canceled
		// manifest, as a cancel at any later point does.
		r.stop("canceled", manifests.StopCanceled)
	case err != nil:
		return err
	default:
		in.Items, in.Shards, in.Source, in.Options.ShardSize = st.Items, st.Shards, st.Source, st.ShardSize
	}
	return nil
}

// upsertProgress shows progress in the Web UI and `temporal workflow
// describe`; called once per run and at the end, so it costs two events a run.
// withShardSearchAttributes gives the shards started from ctx the batch
// id and role "shard", when the batch has search attributes.
func (r *batchRun) withShardSearchAttributes(ctx workflow.Context) workflow.Context {
	if !r.searchAttrs {
		return ctx
	}
	o := workflow.GetChildWorkflowOptions(ctx)
	o.TypedSearchAttributes = temporal.NewSearchAttributes(SearchAttrBatchID.ValueSet(r.in.BatchID), SearchAttrRole.ValueSet("shard"))
	return workflow.WithChildOptions(ctx, o)
}

func (r *batchRun) upsertProgress(ctx workflow.Context, status string) {
	if !r.memoProgress && !r.steer {
		return
	}
	done, failed := r.cur.Succeeded+r.cur.Failed, r.cur.Failed
	if r.memoRefresh {
		done = max(r.memoDone, min(r.in.Items, done+r.inFlightItems))
		if r.final != nil { // the manifest's counts: a redrive's cursor has only its own shards
			done, failed = r.final.Succeeded+r.final.Failed, r.final.Failed
		}
		r.memoDone = done
	}
	memo := map[string]any{
		"status": status, "items": r.in.Items, "done": done,
		"failed": failed, "shards": r.in.Shards, "shards_done": r.cur.ShardsDone, "run": r.cur.Run,
	}
	o := r.in.Options
	if r.steer {
		// The pause count is also what running shards watch (pauseWatch).
		paused := r.cur.Paused && !r.finishing
		memo["paused"], memo["pauses"] = paused, r.cur.Pauses
		memo["paused_since"], memo["pause_reason"] = nil, nil // nil removes the key
		if paused {
			memo["paused_since"], memo["pause_reason"] = r.cur.PausedSince, r.cur.PauseReason
		}
		memo["concurrency"], memo["rate"], memo["max_failures"] = o.Concurrency, o.Rate, o.MaxFailures.String()
	}
	if r.canary {
		memo["canary"] = r.cur.Canary
	}
	if r.priority {
		memo["priority"], memo["fairness_key"] = o.Priority, o.TaskPriority(r.in.BatchID).FairnessKey
	}
	_ = workflow.UpsertMemo(ctx, memo)
}

// planChunk sets the chunk this run covers; a redrive runs only the
// chunk's shards that have failed items or no committed results, which an
// activity reads from their receipts.
func (r *batchRun) planChunk() error {
	r.chunkEnd = min(r.in.Shards, r.cur.NextShard+r.in.Options.ShardsPerRun)
	if r.in.Redrive == 0 || r.cur.NextShard >= r.in.Shards {
		return nil
	}
	actx := workflow.WithActivityOptions(r.ctx, workflow.ActivityOptions{
		StartToCloseTimeout: 10 * time.Minute,
		RetryPolicy:         &temporal.RetryPolicy{InitialInterval: time.Second, MaximumInterval: time.Minute},
	})
	req := RedriveQuery{BatchID: r.in.BatchID, Store: r.in.Store, From: r.cur.NextShard, To: r.chunkEnd,
		Items: r.in.Items, ShardSize: r.in.Options.ShardSize}
	return workflow.ExecuteActivity(actx, activityShardsToRedrive, req).Get(r.ctx, &r.redo)
}

// fanOut starts the chunk's shards as children, at most Concurrency in
// flight, until the chunk ends or the batch stops.
func (r *batchRun) fanOut() {
	ctx, o := r.ctx, r.in.Options
	childCtx := workflow.WithChildOptions(ctx, workflow.ChildWorkflowOptions{
		TaskQueue:             workflow.GetInfo(ctx).TaskQueueName,
		ParentClosePolicy:     enumspb.PARENT_CLOSE_POLICY_REQUEST_CANCEL,
		WorkflowIDReusePolicy: enumspb.WORKFLOW_ID_REUSE_POLICY_ALLOW_DUPLICATE,
		// A cancelled batch waits for its children to stop before it
		// writes the canceled manifest (gated: runs started before this
		// replay without it).
		WaitForCancellation: r.waitForCancellation,
	})
	childCtx = r.withShardSearchAttributes(childCtx)
	var allowed int64 // the failure limit in items (promptFailureStop)
	if r.promptFailureStop {
		var limited bool
		if allowed, limited = o.MaxFailures.Allowed(r.in.Items); !limited {
			r.promptFailureStop = false // no shard can go over it
		}
		childCtx, r.cancelShards = workflow.WithCancel(childCtx)
	}
	r.sel = workflow.NewSelector(ctx)
	started := 0
	for r.cur.NextShard < r.in.Shards && r.stopping == "" {
		if started >= o.ShardsPerRun || workflow.GetInfo(ctx).GetContinueAsNewSuggested() {
			break
		}
		if ctx.Err() != nil {
			r.stop("canceled", manifests.StopCanceled)
			break
		}
		shard := r.cur.NextShard
		if r.in.Redrive > 0 {
			if len(r.redo) == 0 {
				r.cur.NextShard = r.chunkEnd
				break
			}
			shard, r.redo = r.redo[0], r.redo[1:]
		}
		sin := ShardInput{
			BatchID: r.in.BatchID, Store: r.in.Store, Shard: shard,
			FirstIndex: int64(shard) * int64(o.ShardSize), Items: shardItems(r.in, shard), Options: o,
			Redrive: r.in.Redrive, InputDir: r.in.InputDir, Rate: shardRate(o, r.in.Shards),
		}
		if r.promptFailureStop {
			// What the shard may fail before the batch is over its limit
			// (never negative: the batch stopped starting shards then).
			budget := max(0, allowed-r.cur.Failed)
			sin.FailureBudget, sin.BatchRun = &budget, workflow.GetInfo(ctx).FirstRunID
		}
		cctx := workflow.WithWorkflowID(childCtx, fmt.Sprintf("%s/shard-%d", r.in.BatchID, shard))
		f := workflow.ExecuteChildWorkflow(cctx, ShardWorkflowName, sin)
		r.cur.NextShard = shard + 1
		started++
		r.inFlight++
		r.sel.AddFuture(f, func(f workflow.Future) { r.shardDone(shard, f) })
		for r.inFlight >= o.Concurrency && r.stopping == "" {
			r.sel.Select(ctx)
		}
	}
}

// shardRate is one shard's share of the batch's rate: the batch runs up to
// Concurrency shards at once, each at Rate/Concurrency, so together they
// hand out at most Rate items a second (fewer while fewer shards run: the
// last ones, or when the workers run fewer shards at once than the batch's
// concurrency).
func shardRate(o Options, shards int) float64 {
	if o.Rate <= 0 {
		return 0
	}
	return o.Rate / float64(max(1, min(o.Concurrency, shards)))
}

// shardDone counts a finished child, and stops the batch when it failed,
// was cancelled, or took the failures over the limit; over the limit, the
// children still running are cancelled (promptFailureStop).
func (r *batchRun) shardDone(shard int, f workflow.Future) {
	r.inFlight--
	var res ShardResult
	if err := f.Get(r.ctx, &res); err != nil {
		if temporal.IsCanceledError(err) || r.ctx.Err() != nil {
			r.stop("canceled", manifests.StopCanceled)
		} else {
			r.stop(shardFailure(shard, err), manifests.StopShardFailed)
		}
		return
	}
	r.cur.ShardsDone++
	r.cur.Succeeded += res.Succeeded
	r.cur.Failed += res.Failed
	if r.in.Options.MaxFailures.Exceeded(r.cur.Failed, r.in.Items) || res.Stopped {
		r.stop(maxFailuresText(r.cur.Failed), manifests.StopMaxFailures)
		if r.promptFailureStop && r.stopReason == manifests.StopMaxFailures && r.inFlight > 0 {
			r.cancelShards()
		}
	}
	if r.promptFailureStop && r.stopReason == manifests.StopMaxFailures {
		// The count so far: shards that stop after the first one add theirs.
		r.stopping = maxFailuresText(r.cur.Failed)
	}
}

func maxFailuresText(failed int64) string {
	return fmt.Sprintf("%d items failed, over the limit (--max-failures)", failed)
}

// drain waits for every child in flight: children do not survive
// continue-as-new, and a stopping batch still wants the results its running
// children write.
func (r *batchRun) drain() {
	for r.inFlight > 0 {
		r.sel.Select(r.ctx)
	}
	if r.ctx.Err() != nil {
		r.stop("canceled", manifests.StopCanceled)
	}
	if r.in.Redrive > 0 && r.stopping == "" && len(r.redo) == 0 && r.cur.NextShard < r.chunkEnd {
		r.cur.NextShard = r.chunkEnd // the chunk's last shards needed no redrive
	}
}

// finalize writes the manifest (even when cancelled) and ends the batch.
func (r *batchRun) finalize() (BatchResult, error) {
	fctx := r.ctx
	if r.ctx.Err() != nil {
		fctx, _ = workflow.NewDisconnectedContext(r.ctx)
	}
	fctx = workflow.WithActivityOptions(fctx, workflow.ActivityOptions{
		StartToCloseTimeout: 30 * time.Minute,
		HeartbeatTimeout:    time.Minute,
		RetryPolicy:         &temporal.RetryPolicy{InitialInterval: time.Second, MaximumInterval: time.Minute},
	})
	var res BatchResult
	fin := FinalizeInput{Batch: r.in, Status: r.stopStatus(), Error: r.stopping, StopReason: r.stopReason, StartedAt: r.cur.StartedAt}
	if err := workflow.ExecuteActivity(fctx, activityFinalize, fin).Get(fctx, &res); err != nil {
		return BatchResult{}, err
	}
	res.Runs = r.cur.Run
	r.final = &res.Counts
	r.upsertProgress(fctx, res.Status)
	if r.searchAttrs {
		if err := workflow.UpsertTypedSearchAttributes(fctx, SearchAttrStatus.ValueSet(res.Status)); err != nil {
			return res, err
		}
	}
	if r.stopReason == manifests.StopCanceled {
		// Report the cancellation to Temporal as such, after the manifest is written.
		return res, temporal.NewCanceledError(res)
	}
	// A failed batch is a failed workflow (the Web UI's "Failed" filter),
	// after the manifest is written; runs before this completed.
	if res.Status == manifests.StatusFailed && workflow.GetVersion(fctx, "failed-batch-fails", workflow.DefaultVersion, 1) >= 1 {
		return res, temporal.NewNonRetryableApplicationError(fmt.Sprintf("batch %s failed: %s", r.in.BatchID, r.stopping), ErrTypeBatchFailed, nil, res)
	}
	return res, nil
}

// ShardWorkflow processes one shard in one activity and returns where its
// results are.
func ShardWorkflow(ctx workflow.Context, in ShardInput) (ShardResult, error) {
	waitForCancellation := workflow.GetVersion(ctx, "wait-for-cancellation", workflow.DefaultVersion, 1) >= 1
	actx := workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		// Item timeouts bound each item; the heartbeat timeout notices a
		// dead worker within a minute, so the overall bound is generous.
		StartToCloseTimeout: 24 * time.Hour,
		HeartbeatTimeout:    30 * time.Second,
		// A cancelled batch waits for its running shards to stop, so
		// nothing commits after the canceled manifest (gated as above).
		WaitForCancellation: waitForCancellation,
		RetryPolicy: &temporal.RetryPolicy{
			InitialInterval:        time.Second,
			BackoffCoefficient:     2,
			MaximumInterval:        time.Minute,
			NonRetryableErrorTypes: []string{errTypeBadShard},
		},
	})
	if workflow.GetVersion(ctx, "priority", workflow.DefaultVersion, 1) >= 1 {
		// The batch's priority and fairness key (the child has them from
		// its parent already; said again for shards started otherwise).
		o := workflow.GetActivityOptions(actx)
		o.Priority = in.Options.TaskPriority(in.BatchID)
		actx = workflow.WithActivityOptions(actx, o)
	}
	var r ShardResult
	err := workflow.ExecuteActivity(actx, activityProcessShard, in).Get(ctx, &r)
	return r, err
}

// shardFailure says why a shard's child failed: what the activity said (the
// innermost application error's message), not the chain of child-workflow and
// activity errors around it, which names nothing the shard number does not.
func shardFailure(shard int, err error) string {
	var appErr *temporal.ApplicationError
	if errors.As(err, &appErr) && appErr.Message() != "" {
		return fmt.Sprintf("shard %d failed: %s", shard, appErr.Message())
	}
	return fmt.Sprintf("shard %d failed: %v", shard, err)
}

// Steering: pause, resume and option updates of a running batch. A pause
// is a state the cursor carries across continue-as-new: while it holds, no
// shard starts, and the running ones, which watch the batch's pause count
// in its memo (ShardInput.WatchPause), stop at an item boundary within
// seconds and commit what they processed. They come back Paused and wait
// in the cursor's Partial list; resume runs the rest of each first, then
// the shards never started.

// setUpdateHandlers registers PauseUpdate, ResumeUpdate and OptionsUpdate.
// Their validators refuse, changing nothing, a batch that is stopping or
// writing its manifest, a pause of a paused batch, a resume of a running
// one, bad values, and every update of a run from before steering (a
// batch started by older workflow code gets them from its next run).
func (r *batchRun) setUpdateHandlers() error {
	id := r.in.BatchID
	refuse := func(format string, args ...any) error {
		return temporal.NewNonRetryableApplicationError(fmt.Sprintf(format, args...), ErrTypeNotSteerable, nil)
	}
	steerable := func() error {
		switch {
		case !r.steer:
			return refuse("batch %s runs workflow code from before pause and update; they work from its next run (after continue-as-new)", id)
		case r.finishing:
			return refuse("batch %s is finishing: its manifest is being written", id)
		case r.stopping != "":
			return refuse("batch %s is stopping (%s)", id, r.stopping)
		}
		return nil
	}
	err := workflow.SetUpdateHandlerWithOptions(r.ctx, PauseUpdate,
		func(ctx workflow.Context, req PauseRequest) (Progress, error) {
			now := workflow.Now(ctx)
			r.cur.Paused, r.cur.PausedSince, r.cur.PauseReason = true, &now, req.Reason
			r.cur.Pauses++
			r.upsertProgress(ctx, r.runStatus())
			return r.progress()
		},
		workflow.UpdateHandlerOptions{Validator: func(req PauseRequest) error {
			if err := steerable(); err != nil {
				return err
			}
			if r.cur.Paused {
				why := ""
				if r.cur.PauseReason != "" {
					why = " (" + r.cur.PauseReason + ")"
				}
				return refuse("batch %s is paused already, since %s%s", id, r.cur.PausedSince.UTC().Format(time.RFC3339), why)
			}
			return nil
		}})
	if err != nil {
		return err
	}
	err = workflow.SetUpdateHandlerWithOptions(r.ctx, ResumeUpdate,
		func(ctx workflow.Context) (Progress, error) {
			r.cur.Paused, r.cur.PausedSince, r.cur.PauseReason = false, nil, ""
			r.upsertProgress(ctx, r.runStatus())
			return r.progress()
		},
		workflow.UpdateHandlerOptions{Validator: func() error {
			if err := steerable(); err != nil {
				return err
			}
			if !r.cur.Paused {
				return refuse("batch %s is not paused", id)
			}
			return nil
		}})
	if err != nil {
		return err
	}
	return workflow.SetUpdateHandlerWithOptions(r.ctx, OptionsUpdate,
		func(ctx workflow.Context, ch OptionsChange) (Progress, error) {
			r.in.Options = ch.apply(r.in.Options)
			r.upsertProgress(ctx, r.runStatus())
			if r.in.Options.MaxFailures.Exceeded(r.cur.Failed, r.in.Items) {
				// A limit below what failed already stops the batch, as
				// reaching it would have.
				r.stop(maxFailuresText(r.cur.Failed), manifests.StopMaxFailures)
				if r.promptFailureStop && r.cancelShards != nil && r.inFlight > 0 {
					r.cancelShards()
				}
			}
			return r.progress()
		},
		workflow.UpdateHandlerOptions{Validator: func(ch OptionsChange) error {
			if err := steerable(); err != nil {
				return err
			}
			if err := ch.Validate(); err != nil {
				return temporal.NewNonRetryableApplicationError(err.Error(), ErrTypeInvalidInput, nil)
			}
			return nil
		}})
}

// Validate refuses a change that changes nothing or sets a bad value.
func (ch OptionsChange) Validate() error {
	switch {
	case ch.Concurrency == 0 && ch.Rate == nil && ch.MaxFailures == nil:
		return errors.New("nothing to change: give a concurrency, a failure limit or a rate")
	case ch.Concurrency < 0:
		return fmt.Errorf("concurrency must be at least 1, got %d", ch.Concurrency)
	case ch.Rate != nil && (math.IsNaN(*ch.Rate) || math.IsInf(*ch.Rate, 0) || *ch.Rate < 0):
		return fmt.Errorf("rate must be a number of items per second, 0 or more (0: no limit), got %v", *ch.Rate)
	}
	if ch.MaxFailures != nil {
		return ch.MaxFailures.Validate()
	}
	return nil
}

// apply returns o changed by ch.
func (ch OptionsChange) apply(o Options) Options {
	if ch.Concurrency > 0 {
		o.Concurrency = ch.Concurrency
	}
	if ch.Rate != nil {
		o.Rate = *ch.Rate
	}
	if ch.MaxFailures != nil {
		o.MaxFailures = *ch.MaxFailures
	}
	return o
}

// fanOutSteered is fanOut for runs that can be steered: before each shard
// it waits while the batch is paused or the window (the concurrency as it
// is now) is full; shards that stopped at a pause run first. Children are
// followed by a coroutine each, so that an update wakes the wait at once
// (a wider window, a resume) without a child finishing.
func (r *batchRun) fanOutSteered() {
	ctx := r.ctx
	childCtx := workflow.WithChildOptions(ctx, workflow.ChildWorkflowOptions{
		TaskQueue:             workflow.GetInfo(ctx).TaskQueueName,
		ParentClosePolicy:     enumspb.PARENT_CLOSE_POLICY_REQUEST_CANCEL,
		WorkflowIDReusePolicy: enumspb.WORKFLOW_ID_REUSE_POLICY_ALLOW_DUPLICATE,
		WaitForCancellation:   r.waitForCancellation,
	})
	childCtx = r.withShardSearchAttributes(childCtx)
	if r.priority {
		o := workflow.GetChildWorkflowOptions(childCtx)
		o.Priority = r.in.Options.TaskPriority(r.in.BatchID)
		childCtx = workflow.WithChildOptions(childCtx, o)
	}
	if r.promptFailureStop {
		childCtx, r.cancelShards = workflow.WithCancel(childCtx)
	}
	r.childCtx = childCtx
	if r.memoRefresh {
		var rctx workflow.Context
		rctx, r.stopRefresh = workflow.WithCancel(ctx)
		workflow.Go(rctx, r.refreshMemo)
	}
	r.startCanary()
	started := 0
	for r.stopping == "" && r.hasWork() {
		if started >= r.in.Options.ShardsPerRun || workflow.GetInfo(ctx).GetContinueAsNewSuggested() {
			break
		}
		err := workflow.Await(ctx, func() bool {
			return r.stopping != "" || r.cur.Canary == CanaryFailed || (!r.cur.Paused && r.inFlight < r.window())
		})
		if err != nil {
			r.stop("canceled", manifests.StopCanceled)
			break
		}
		if r.stopping != "" || r.cur.Canary == CanaryFailed {
			break
		}
		if !r.startNext() {
			break
		}
		started++
	}
}

// hasWork reports whether a shard is left to start in this run's chunk.
func (r *batchRun) hasWork() bool {
	if len(r.cur.Partial) > 0 {
		return true
	}
	if r.cur.NextShard >= r.in.Shards {
		return false
	}
	if r.in.Redrive > 0 && len(r.redo) == 0 {
		r.cur.NextShard = r.chunkEnd // the chunk's last shards need no redrive
		return false
	}
	return true
}

// startNext starts the next shard: one that stopped at a pause, else the
// next of the chunk (a redrive's next to redo).
func (r *batchRun) startNext() bool {
	if !r.hasWork() {
		return false
	}
	o := r.in.Options
	var resume *PartialShard
	shard := r.cur.NextShard
	switch {
	case len(r.cur.Partial) > 0:
		p := r.cur.Partial[0]
		r.cur.Partial = r.cur.Partial[1:]
		if len(r.cur.Partial) == 0 {
			r.cur.Partial = nil
		}
		resume, shard = &p, p.Shard
	case r.in.Redrive > 0:
		shard, r.redo = r.redo[0], r.redo[1:]
		r.cur.NextShard = shard + 1
	default:
		r.cur.NextShard = shard + 1
	}
	sin := ShardInput{
		BatchID: r.in.BatchID, Store: r.in.Store, Shard: shard,
		FirstIndex: int64(shard) * int64(o.ShardSize), Items: shardItems(r.in, shard), Options: o,
		Redrive: r.in.Redrive, InputDir: r.in.InputDir, Rate: shardRate(o, r.in.Shards),
		WatchPause: true, Pauses: r.cur.Pauses,
	}
	if resume != nil {
		sin.Resume = &ShardResume{From: resume.From, Seq: resume.Seq}
	}
	limit := o.MaxFailures.String()
	if allowed, limited := o.MaxFailures.Allowed(r.in.Items); r.promptFailureStop && limited {
		// The run id names the limit too: a shard stopped under an older
		// limit does not stop the shards started under a new one.
		budget := max(0, allowed-r.cur.Failed)
		sin.FailureBudget, sin.BatchRun = &budget, workflow.GetInfo(r.ctx).FirstRunID+"/"+limit
	}
	if r.isCanary(shard) {
		r.canaryBudget(&sin, resume)
	}
	cctx := workflow.WithWorkflowID(r.childCtx, fmt.Sprintf("%s/shard-%d", r.in.BatchID, shard))
	f := workflow.ExecuteChildWorkflow(cctx, ShardWorkflowName, sin)
	r.inFlight++
	workflow.Go(r.ctx, func(gctx workflow.Context) {
		var res ShardResult
		err := f.Get(gctx, &res)
		r.shardDoneSteered(sin, resume, limit, res, err)
	})
	return true
}

// shardDoneSteered is shardDone for steered runs: a shard that stopped at
// a pause (or at the budget of a limit changed since it started, which
// the batch is not over) joins the Partial list with what it committed.
func (r *batchRun) shardDoneSteered(sin ShardInput, resume *PartialShard, limit string, res ShardResult, err error) {
	r.inFlight--
	r.inFlightItems = 0 // counted twice until the next refresh otherwise
	if err != nil {
		if temporal.IsCanceledError(err) || r.ctx.Err() != nil {
			r.stop("canceled", manifests.StopCanceled)
		} else {
			r.stop(shardFailure(sin.Shard, err), manifests.StopShardFailed)
		}
		return
	}
	// A shard stopped before its first item commits nothing (and names no
	// object).
	committed := res.Key != "" || res.Items > 0
	if committed {
		if resume != nil { // its counts so far are in the cursor already
			r.cur.Succeeded -= resume.Succeeded
			r.cur.Failed -= resume.Failed
		}
		r.cur.Succeeded += res.Succeeded
		r.cur.Failed += res.Failed
	}
	o := r.in.Options
	if r.isCanary(sin.Shard) && !(res.Paused && !res.Stopped) && r.canaryDone(sin, res) {
		return // failed: canaryFailed stops the batch
	}
	over := o.MaxFailures.Exceeded(r.cur.Failed, r.in.Items)
	staleStop := res.Stopped && !over && limit != o.MaxFailures.String()
	switch {
	case (res.Paused && !res.Stopped) || staleStop:
		p := PartialShard{Shard: sin.Shard, From: sin.FirstIndex, Seq: 1}
		if resume != nil {
			p = *resume
			p.Seq++
		}
		if committed {
			p.From, p.Succeeded, p.Failed = res.ResumeAt, res.Succeeded, res.Failed
		}
		r.cur.Partial = append(r.cur.Partial, p)
		return
	case over || res.Stopped:
		r.stop(maxFailuresText(r.cur.Failed), manifests.StopMaxFailures)
		if r.promptFailureStop && r.stopReason == manifests.StopMaxFailures && r.inFlight > 0 {
			r.cancelShards()
		}
	}
	r.cur.ShardsDone++
	if r.promptFailureStop && r.stopReason == manifests.StopMaxFailures {
		// The count so far: shards that stop after the first one add theirs.
		r.stopping = maxFailuresText(r.cur.Failed)
	}
}

// drainSteered waits for every child in flight, as drain does.
func (r *batchRun) drainSteered() {
	dctx, _ := workflow.NewDisconnectedContext(r.ctx)
	_ = workflow.Await(dctx, func() bool { return r.inFlight == 0 })
	if r.stopRefresh != nil {
		r.stopRefresh()
	}
	if r.ctx.Err() != nil {
		r.stop("canceled", manifests.StopCanceled)
	}
	if r.cur.Canary == CanaryFailed {
		r.canaryFailed()
	}
	if r.in.Redrive > 0 && r.stopping == "" && len(r.redo) == 0 && r.cur.NextShard < r.chunkEnd {
		r.cur.NextShard = r.chunkEnd
	}
}
