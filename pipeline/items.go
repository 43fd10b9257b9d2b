package pipeline

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/batchpipe/batchpipe/manifests"
)

// Item execution: a shard's items go to its processor in calls (one item
// each, or up to Options.ItemsPerCall for a BatchProcessor), ItemParallelism
// calls at once, paced by the batch's rate; every item has its own attempts,
// backoff, outcome and result line.

// Item is one attempt at one item of a batch, as a processor sees it. Items
// run at least once (a retried shard or attempt runs them again), so a
// processor with side effects keys them by Key.
type Item struct {
	BatchID string
	Shard   int
	Index   int64 // the item's position in the batch's input, from 0
	Attempt int   // 1 for the first call with this item
	Input   json.RawMessage
}

// Key is "<batch_id>/<index>": the same for every attempt at the item, and
// for no other item of any batch.
func (it Item) Key() string { return it.BatchID + "/" + strconv.FormatInt(it.Index, 10) }

type itemKey struct{}

// ItemFrom returns the item a Processor's Process was called for.
func ItemFrom(ctx context.Context) (Item, bool) {
	it, ok := ctx.Value(itemKey{}).(Item)
	return it, ok
}

// WithItem returns ctx carrying it, as Process's context carries its item
// (for tests of processors).
func WithItem(ctx context.Context, it Item) context.Context {
	return context.WithValue(ctx, itemKey{}, it)
}

// Outcome is the result of one item of a BatchProcessor call: its output,
// or an error (Permanent, RetryAfter or plain, as Process returns).
type Outcome struct {
	Output json.RawMessage
	Err    error
}

// A BatchProcessor takes many items in one call: a batch with
// Options.ItemsPerCall N hands it up to N items at a time (the last call of
// a shard, and retries, may have fewer), and it returns one Outcome per
// item, in their order. A processor that is not one gets one item per call
// whatever ItemsPerCall says.
type BatchProcessor interface {
	Processor
	ProcessBatch(ctx context.Context, items []Item) []Outcome
}

// Batched adapts a function over many items to a BatchProcessor (Process
// calls it with one item).
func Batched(f func(ctx context.Context, items []Item) []Outcome) BatchProcessor {
	return batchFunc(f)
}

type batchFunc func(ctx context.Context, items []Item) []Outcome

func (f batchFunc) ProcessBatch(ctx context.Context, items []Item) []Outcome { return f(ctx, items) }

func (f batchFunc) Process(ctx context.Context, input json.RawMessage) (json.RawMessage, error) {
	it, _ := ItemFrom(ctx)
	it.Input = input
	out := f(ctx, []Item{it})
	if len(out) != 1 {
		return nil, fmt.Errorf("processor returned %d outcomes for 1 item", len(out))
	}
	return out[0].Output, out[0].Err
}

// A Pool is a processor that serves a bounded number of calls at once (the
// exec family's processes). The shard waits with Acquire for a free place
// before a call's timeout starts, so that --item-timeout bounds the work
// on an item and not its wait behind others; the call then goes to the
// returned processor, and release frees the place.
type Pool interface {
	Acquire(ctx context.Context) (p Processor, release func(), err error)
}

// retryAfterError asks for the item's next attempt no sooner than after.
type retryAfterError struct {
	err   error
	after time.Duration
}

func (e retryAfterError) Error() string { return e.err.Error() }
func (e retryAfterError) Unwrap() error { return e.err }

// RetryAfter marks err as "slow down": the item is tried again no sooner
// than after d, and the attempt does not count against the batch's item
// attempts (up to MaxItemAttempts such waits per item).
func RetryAfter(err error, d time.Duration) error {
	if err == nil {
		return nil
	}
	return retryAfterError{err, d}
}

// RetryAfterOf returns the wait RetryAfter put on err.
func RetryAfterOf(err error) (time.Duration, bool) {
	var ra retryAfterError
	if errors.As(err, &ra) {
		return ra.after, true
	}
	return 0, false
}

// itemRunner runs the items of one shard.
type itemRunner struct {
	proc    Processor
	o       Options
	batchID string
	shard   int
	perCall int           // items per call: 1 unless proc is a BatchProcessor
	limiter *rate.Limiter // nil: no rate limit
	// halted closes when the shard stops handing out items (halt).
	halted   chan struct{}
	haltOnce sync.Once
	// stoppedAt is the index of the first item that was not handed out
	// because of halt (and whose line is therefore not final), -1 when
	// every item was; set by stream's reader, read after its wait.
	stoppedAt int64
	// calls hands a call to an idle caller goroutine (dispatch); closed
	// ends the idle ones (close).
	calls     chan *callReq
	closed    chan struct{}
	closeOnce sync.Once
	// skipTo is the index stream starts at: the items before it are in
	// the shard's checkpoint parts already (resumeCheckpoint).
	skipTo int64
}

func newItemRunner(proc Processor, in ShardInput) *itemRunner {
	r := &itemRunner{proc: proc, o: in.Options, batchID: in.BatchID, shard: in.Shard, perCall: 1, halted: make(chan struct{}), stoppedAt: -1,
		calls: make(chan *callReq), closed: make(chan struct{})}
	if _, ok := proc.(BatchProcessor); ok {
		r.perCall = max(1, in.Options.ItemsPerCall)
	}
	if in.Rate > 0 {
		// A bucket as deep as one call, starting empty: no second sees
		// more than the shard's rate and one call's items.
		r.limiter = rate.NewLimiter(rate.Limit(in.Rate), r.perCall)
		r.limiter.AllowN(time.Now(), r.perCall)
	}
	return r
}

// halt stops the shard handing out items: calls already made run to their
// outcomes (retries included), no item is handed to the processor after,
// and the stream ends (see stream). Safe to call more than once, from any
// goroutine.
func (r *itemRunner) halt() { r.haltOnce.Do(func() { close(r.halted) }) }

// isHalted reports whether halt was called.
func (r *itemRunner) isHalted() bool {
	select {
	case <-r.halted:
		return true
	default:
		return false
	}
}

// group is one call's worth of consecutive items of a shard (fewer at the
// shard's end), in input order; done closes when the group is settled:
// every line set, or (after halt) the items never handed out keep the
// lines they came with — a redrive's earlier failed line, or none (a zero
// Status), where the shard's results end.
type group struct {
	first int64 // index of the first item
	items []json.RawMessage
	lines []manifests.ResultLine
	todo  []int // positions of the items to process (a redrive keeps what succeeded)
	done  chan struct{}
}

// stream reads the shard's items from input (and a redrive's committed
// lines from prev, in step) into groups, runs their calls ItemParallelism
// at a time, and sends the groups in input order on the channel, which
// closes after the last. Reading runs ahead of the oldest unfinished group
// by at most two groups per call in flight, so memory is bounded and a
// slow call holds up only the writing, not the other calls. counted is
// called for each line processed. wait stops everything and returns the
// first error of reading; call it when done (more than once is fine).
//
// After halt no group is handed to the calls any more: the reader goes on
// only while a redrive's earlier lines cover the items (they keep those
// lines, failed ones too, so a redrive that stops keeps its shard's
// results whole), then ends the stream.
//
// A shard continued after a pause (in.Resume) keeps every earlier line
// before in.Resume.From as it is, failed ones too: those items were
// processed in this batch (or redrive) already.
func (r *itemRunner) stream(ctx context.Context, in ShardInput, input, prev *lineReader, counted func(manifests.ResultLine)) (<-chan *group, func() error) {
	ctx, cancel := context.WithCancel(ctx)
	par := max(1, r.o.ItemParallelism)
	ordered := make(chan *group, 2*par)
	work := make(chan *group)
	var readErr error
	var wg sync.WaitGroup
	wg.Go(func() { // the reader
		defer close(work)
		defer close(ordered)
		next := in.FirstIndex
		var prevRead int64       // lines read from prev
		covered := func() bool { // prev holds a line for the next item
			return prev != nil && prevRead < prev.lines
		}
		stopAt := func(i int64) {
			if r.stoppedAt < 0 {
				r.stoppedAt = i
			}
		}
		for ; next < r.skipTo; next++ { // in the checkpoint's parts
			if _, err := input.Next(); err != nil {
				readErr = fmt.Errorf("reading input shard %d up to its checkpoint at %d: %w", in.Shard, r.skipTo, err)
				return
			}
			if covered() {
				if _, err := prev.Next(); err != nil {
					readErr = badShard("previous results of shard %d: %v", in.Shard, err)
					return
				}
				prevRead++
			}
		}
		for {
			halted := r.isHalted()
			if halted {
				stopAt(next)
			}
			if halted && !covered() {
				return
			}
			g := &group{first: next, done: make(chan struct{})}
			for len(g.items) < r.perCall {
				if halted && !covered() {
					break
				}
				item, err := input.Next()
				if err == io.EOF {
					break
				}
				if err != nil {
					readErr = fmt.Errorf("reading input shard %d: %w", in.Shard, err)
					return
				}
				var kept manifests.ResultLine
				if covered() {
					if err := prev.Decode(&kept); err != nil {
						readErr = badShard("previous results of shard %d: %v", in.Shard, err)
						return
					}
					prevRead++
				}
				final := in.Resume != nil && next+int64(len(g.items)) < in.Resume.From
				if kept.Status != manifests.ItemSucceeded && !halted && !final {
					// Processed again; the earlier (failed) line stays
					// until then, in case the shard stops first.
					g.todo = append(g.todo, len(g.items))
				}
				g.items, g.lines = append(g.items, bytes.Clone(item)), append(g.lines, kept)
			}
			if len(g.items) == 0 {
				return
			}
			next += int64(len(g.items))
			select {
			case ordered <- g:
			case <-ctx.Done():
				return
			}
			if len(g.todo) == 0 {
				close(g.done)
			} else {
				select {
				case work <- g:
				case <-r.halted:
					// Never handed out: its items keep the lines they
					// came with.
					stopAt(g.first)
					close(g.done)
					continue
				case <-ctx.Done():
					return
				}
			}
			if len(g.items) < r.perCall {
				return // the input ended
			}
		}
	})
	for range par {
		wg.Go(func() {
			for g := range work {
				r.runCall(ctx, g.first, g.items, g.todo, func(i int, l manifests.ResultLine) {
					g.lines[i] = l
					counted(l)
				})
				close(g.done)
			}
		})
	}
	var once sync.Once
	return ordered, func() error {
		once.Do(func() {
			cancel()
			for range ordered { // let a blocked reader go
			}
			wg.Wait()
			r.close()
		})
		return readErr
	}
}

// pending is an item of a call still to be answered.
type pending struct {
	i         int // position in the chunk
	calls     int // calls made with it
	failures  int // failed calls that count against ItemAttempts
	throttles int // RetryAfter waits
	line      manifests.ResultLine
}

// runCall runs one call's items to their outcomes: the items a call fails
// with a retryable error are called again (together) after the backoff or
// the longest retry-after asked for, until they succeed or run out of
// attempts.
func (r *itemRunner) runCall(ctx context.Context, first int64, items []json.RawMessage, idx []int, done func(int, manifests.ResultLine)) {
	start := time.Now()
	left := make([]*pending, len(idx))
	for k, i := range idx {
		left[k] = &pending{i: i}
	}
	finish := func(p *pending) {
		p.line.Attempts = p.calls
		p.line.DurationMS = time.Since(start).Milliseconds()
		done(p.i, p.line)
	}
	backoff := r.o.ItemBackoff
	for len(left) > 0 {
		if r.limiter != nil && r.limiter.WaitN(ctx, len(left)) != nil {
			return // the shard is ending (WaitN fails only past ctx's end)
		}
		call := make([]Item, len(left))
		for k, p := range left {
			p.calls++
			call[k] = Item{BatchID: r.batchID, Shard: r.shard, Index: first + int64(p.i), Attempt: p.calls, Input: items[p.i]}
		}
		outs := r.callOnce(ctx, call)
		var next []*pending
		var wait time.Duration
		retried := false
		for k, p := range left {
			o := outs[k]
			if o.err == nil {
				p.line = manifests.ResultLine{Status: manifests.ItemSucceeded, Output: o.out}
				finish(p)
				continue
			}
			p.line = manifests.ResultLine{Status: manifests.ItemFailed, Error: o.err}
			t := o.err.Type
			switch {
			case ctx.Err() != nil || t == ItemErrorPermanent || t == ItemErrorOutput || t == ItemErrorPanic:
				finish(p)
			case o.retryAfter > 0 && p.throttles < MaxItemAttempts:
				p.throttles++
				wait = max(wait, o.retryAfter)
				next = append(next, p)
			case p.failures+1 >= max(1, r.o.ItemAttempts):
				finish(p)
			default:
				p.failures++
				wait, retried = max(wait, backoff), true
				next = append(next, p)
			}
		}
		if len(next) > 0 {
			select {
			case <-ctx.Done():
				for _, p := range next {
					finish(p)
				}
				return
			case <-time.After(wait):
			}
		}
		if retried {
			backoff = min(backoff*2, time.Minute)
		}
		left = next
	}
}

// callOutcome is one item's outcome of one call.
type callOutcome struct {
	out        json.RawMessage
	err        *manifests.ItemError
	retryAfter time.Duration
}

// callOnce makes one call with items on a caller goroutine (dispatch). A
// panic becomes an error of every item; a processor that ignores its
// context past the timeout is abandoned (its goroutine finishes on its own)
// and the call's items fail as timed out.
func (r *itemRunner) callOnce(ctx context.Context, items []Item) []callOutcome {
	proc, release := r.proc, func() {}
	if pool, ok := proc.(Pool); ok {
		// Wait for a free place before the call's clock starts: time
		// queued behind other items is not the items' fault.
		var err error
		if proc, release, err = pool.Acquire(ctx); err != nil {
			return sameOutcome(len(items), callOutcome{err: &manifests.ItemError{Type: ItemErrorRetryable, Message: err.Error()}})
		}
	}
	timeout := r.o.ItemTimeout
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	req := &callReq{ctx: ctx, proc: proc, items: items, timeout: timeout, release: release, out: make(chan []callOutcome, 1)}
	r.dispatch(req)
	ch := req.out
	select {
	case outs := <-ch:
		return outs
	case <-ctx.Done():
		return sameOutcome(len(items), callOutcome{err: &manifests.ItemError{Type: ItemErrorTimeout, Message: fmt.Sprintf("no result within %v", timeout)}})
	}
}

// sameOutcome is o for each of n items.
func sameOutcome(n int, o callOutcome) []callOutcome {
	outs := make([]callOutcome, n)
	for i := range outs {
		outs[i] = o
	}
	return outs
}

// callReq is one call for a caller goroutine; its outcomes go to out.
type callReq struct {
	ctx     context.Context
	proc    Processor
	items   []Item
	timeout time.Duration
	release func()
	out     chan []callOutcome
}

// dispatch hands req to an idle caller goroutine, or starts one. Callers
// are kept between calls, so a call costs no goroutine start nor the growth
// of a new stack (a fifth of the runner's CPU for a processor that does
// little). A caller stuck in a call past its timeout is abandoned to
// finish on its own; the next call finds another.
func (r *itemRunner) dispatch(req *callReq) {
	select {
	case r.calls <- req:
	default:
		go r.caller(req)
	}
}

// caller makes req, then the calls dispatch hands it, until close.
func (r *itemRunner) caller(req *callReq) {
	for {
		r.call(req)
		select {
		case req = <-r.calls:
		case <-r.closed:
			return
		}
	}
}

// close ends the idle callers; calls still running end on their own.
func (r *itemRunner) close() { r.closeOnce.Do(func() { close(r.closed) }) }

// call makes one call: a panic becomes an error of every item.
func (r *itemRunner) call(req *callReq) {
	ctx, items, timeout := req.ctx, req.items, req.timeout
	defer req.release() // when the call ends, even past the timeout
	defer func() {
		if v := recover(); v != nil {
			req.out <- sameOutcome(len(items), callOutcome{err: &manifests.ItemError{Type: ItemErrorPanic, Message: fmt.Sprint(v)}})
		}
	}()
	if bp, ok := req.proc.(BatchProcessor); ok && r.perCall > 1 {
		got := bp.ProcessBatch(ctx, items)
		if len(got) != len(items) {
			req.out <- sameOutcome(len(items), callOutcome{err: &manifests.ItemError{Type: ItemErrorOutput,
				Message: fmt.Sprintf("processor returned %d outcomes for a call of %d items", len(got), len(items))}})
			return
		}
		outs := make([]callOutcome, len(items))
		for i, o := range got {
			outs[i] = classify(ctx, o.Output, o.Err, timeout)
		}
		req.out <- outs
		return
	}
	out, err := req.proc.Process(WithItem(ctx, items[0]), items[0].Input)
	req.out <- []callOutcome{classify(ctx, out, err, timeout)}
}

// classify turns what a processor returned for one item into its outcome.
func classify(ctx context.Context, out json.RawMessage, err error, timeout time.Duration) callOutcome {
	ra, _ := RetryAfterOf(err)
	switch {
	case err != nil && errors.Is(err, context.DeadlineExceeded) && ctx.Err() != nil:
		return callOutcome{err: &manifests.ItemError{Type: ItemErrorTimeout, Message: fmt.Sprintf("no result within %v: %v", timeout, err)}}
	case err != nil && IsPermanent(err):
		return callOutcome{err: &manifests.ItemError{Type: ItemErrorPermanent, Message: err.Error()}}
	case err != nil:
		return callOutcome{err: &manifests.ItemError{Type: ItemErrorRetryable, Message: err.Error()}, retryAfter: ra}
	case len(out) == 0:
		return callOutcome{out: json.RawMessage("null")}
	}
	// One pass validates and compacts (a result line holds one line).
	buf := bytes.NewBuffer(make([]byte, 0, len(out)))
	if json.Compact(buf, out) != nil {
		return callOutcome{err: &manifests.ItemError{Type: ItemErrorOutput, Message: "processor returned invalid JSON"}}
	}
	return callOutcome{out: buf.Bytes()}
}
