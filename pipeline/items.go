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
	"sync/atomic"
	"time"
	"unicode/utf8"

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
// on an item and not its wait behind others (an exec pool handing cheap
// items over in rounds lets a call wait behind a round's few
// milliseconds); the call then goes to the returned processor, and
// release frees the place.
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
	// slots are the goroutines that make calls, each showing the call it
	// is in, for the watchdog; appended to only (addSlot).
	slotsMu sync.Mutex
	slots   []*callSlot
	// skipTo is the index stream starts at: the items before it are in
	// the shard's checkpoint parts already (resumeCheckpoint).
	skipTo int64
}

func newItemRunner(proc Processor, in ShardInput) *itemRunner {
	r := &itemRunner{proc: proc, o: in.Options, batchID: in.BatchID, shard: in.Shard, perCall: 1, halted: make(chan struct{}), stoppedAt: -1}
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
	r.startCallers(ctx, &wg, par, work, counted)
	var once sync.Once
	return ordered, func() error {
		once.Do(func() {
			cancel()
			for range ordered { // let a blocked reader go
			}
			wg.Wait()
		})
		return readErr
	}
}

// startCallers starts n goroutines that run the calls of the groups from
// work, until it closes, and the watchdog that gives up calls past the
// item timeout, until ctx ends; wg counts them.
func (r *itemRunner) startCallers(ctx context.Context, wg *sync.WaitGroup, n int, work <-chan *group, counted func(manifests.ResultLine)) {
	wg.Go(func() { r.watchdog(ctx) })
	for range n {
		c := &caller{r: r, ctx: ctx, work: work, counted: counted, wg: wg}
		c.slot.goOn = func(run *callRun, outs []callOutcome) { c.loop(run, outs) }
		r.addSlot(&c.slot)
		wg.Add(1)
		go c.loop(nil, nil)
	}
}

// caller is a goroutine that makes the calls of groups from work. When a
// call of its own is given up to the timeout, the goroutine ends with that
// call and another takes its place (goOn, started by the watchdog): the
// WaitGroup's count goes with the role, not with the goroutine.
type caller struct {
	r       *itemRunner
	ctx     context.Context
	work    <-chan *group
	counted func(manifests.ResultLine)
	wg      *sync.WaitGroup
	slot    callSlot
}

// loop runs run to its end first, going on with outs (the outcomes of its
// call given up to the timeout) when not nil, then the groups from work.
func (c *caller) loop(run *callRun, outs []callOutcome) {
	for {
		if run != nil {
			if !c.r.run(run, &c.slot, outs) {
				return // given up: another goroutine goes on in this role
			}
			close(run.g.done)
		}
		g, ok := <-c.work
		if !ok {
			c.wg.Done()
			return
		}
		run, outs = c.r.newCallRun(c.ctx, g, c.counted), nil
	}
}

// pending is an item of a call still to be answered.
type pending struct {
	i         int // position in the group
	calls     int // calls made with it
	failures  int // failed calls that count against ItemAttempts
	throttles int // RetryAfter waits
	line      manifests.ResultLine
}

// callRun is a group's items on their way to their outcomes: the items a
// call fails with a retryable error are called again (together) after the
// backoff or the longest retry-after asked for, until they succeed or run
// out of attempts. Its state is kept here rather than on a goroutine's
// stack, so that another goroutine can go on with it when a call is given
// up to the item timeout (watchdog).
type callRun struct {
	ctx     context.Context
	g       *group
	left    []*pending
	backoff time.Duration
	start   time.Time
	counted func(manifests.ResultLine)
	// one and oneLeft hold a one-item group's state without allocations
	// of its own (most groups: one item per call).
	one     pending
	oneLeft [1]*pending
}

func (r *itemRunner) newCallRun(ctx context.Context, g *group, counted func(manifests.ResultLine)) *callRun {
	c := &callRun{ctx: ctx, g: g, backoff: r.o.ItemBackoff, start: time.Now(), counted: counted}
	if len(g.todo) == 1 {
		c.one.i = g.todo[0]
		c.oneLeft[0] = &c.one
		c.left = c.oneLeft[:]
		return c
	}
	ps := make([]pending, len(g.todo))
	c.left = make([]*pending, len(g.todo))
	for k, i := range g.todo {
		ps[k].i = i
		c.left[k] = &ps[k]
	}
	return c
}

// finish gives p its final line.
func (c *callRun) finish(p *pending) {
	p.line.Attempts = p.calls
	p.line.DurationMS = time.Since(c.start).Milliseconds()
	c.g.lines[p.i] = p.line
	c.counted(p.line)
}

// run makes c's calls on slot s until every item has its line, after
// settling outs first when not nil (the outcomes of c's last call). It
// returns false when a call was given up to the timeout: the watchdog then
// has another goroutine go on with c, and this one must end.
func (r *itemRunner) run(c *callRun, s *callSlot, outs []callOutcome) bool {
	if outs != nil && !r.settle(c, outs) {
		return true
	}
	for len(c.left) > 0 {
		if r.limiter != nil && r.limiter.WaitN(c.ctx, len(c.left)) != nil {
			return true // the shard is ending (WaitN fails only past ctx's end)
		}
		call := make([]Item, len(c.left))
		for k, p := range c.left {
			p.calls++
			call[k] = Item{BatchID: r.batchID, Shard: r.shard, Index: c.g.first + int64(p.i), Attempt: p.calls, Input: c.g.items[p.i]}
		}
		outs, ok := r.callOnce(c, s, call)
		if !ok {
			return false
		}
		if !r.settle(c, outs) {
			return true
		}
	}
	return true
}

// settle gives the items of c's last call (outs, in c.left's order) their
// lines, or keeps them in c.left to be called again, and waits their
// backoff; false when the shard ended (every item then has its line).
func (r *itemRunner) settle(c *callRun, outs []callOutcome) bool {
	var next []*pending
	var wait time.Duration
	retried := false
	for k, p := range c.left {
		o := outs[k]
		if o.err == nil {
			p.line = manifests.ResultLine{Status: manifests.ItemSucceeded, Output: o.out}
			c.finish(p)
			continue
		}
		p.line = manifests.ResultLine{Status: manifests.ItemFailed, Error: o.err}
		t := o.err.Type
		switch {
		case c.ctx.Err() != nil || t == ItemErrorPermanent || t == ItemErrorOutput || t == ItemErrorPanic:
			c.finish(p)
		case o.retryAfter > 0 && p.throttles < MaxItemAttempts:
			p.throttles++
			wait = max(wait, o.retryAfter)
			next = append(next, p)
		case p.failures+1 >= max(1, r.o.ItemAttempts):
			c.finish(p)
		default:
			p.failures++
			wait, retried = max(wait, c.backoff), true
			next = append(next, p)
		}
	}
	c.left = next
	if len(next) > 0 {
		t := time.NewTimer(wait)
		defer t.Stop()
		select {
		case <-c.ctx.Done():
			for _, p := range next {
				c.finish(p)
			}
			c.left = nil
			return false
		case <-t.C:
		}
	}
	if retried {
		c.backoff = min(c.backoff*2, time.Minute)
	}
	return true
}

// callOutcome is one item's outcome of one call.
type callOutcome struct {
	out        json.RawMessage
	err        *manifests.ItemError
	retryAfter time.Duration
}

// callOnce makes one call of c with items, on this goroutine, shown in
// slot s. A panic becomes an error of every item. It returns false when the
// watchdog gave the call up (past its timeout, or the shard ended): the
// processor kept the call past it, and the goroutine must end.
func (r *itemRunner) callOnce(c *callRun, s *callSlot, items []Item) ([]callOutcome, bool) {
	proc, release := r.proc, func() {}
	if pool, ok := proc.(Pool); ok {
		// Wait for a free place before the call's clock starts: time
		// queued behind other items is not the items' fault.
		var err error
		if proc, release, err = pool.Acquire(c.ctx); err != nil {
			return sameOutcome(len(items), callOutcome{err: &manifests.ItemError{Type: ItemErrorRetryable, Message: err.Error()}}), true
		}
	}
	ic := &itemCall{parent: c.ctx, run: c, n: len(items)}
	if !r.batchCall(proc) {
		ic.item, ic.hasItem = items[0], true
	}
	if r.o.ItemTimeout > 0 {
		ic.deadline = time.Now().Add(r.o.ItemTimeout)
	}
	s.cur.Store(ic)
	var outs []callOutcome
	if c.ctx.Err() != nil {
		// The shard ended, and the watchdog may have ended with it: no
		// call. (One shown before its end is given up by it.)
		outs = sameOutcome(len(items), r.timedOut())
	} else {
		outs = r.invoke(ic, proc, items)
	}
	release() // when the call ends, even past the timeout
	if !ic.state.CompareAndSwap(callRunning, callReturned) {
		return nil, false
	}
	s.cur.Store(nil)
	ic.stop()
	return outs, true
}

// invoke calls proc with items: ProcessBatch when the batch has many items
// per call, Process otherwise; a panic is every item's outcome.
func (r *itemRunner) invoke(ic *itemCall, proc Processor, items []Item) (outs []callOutcome) {
	defer func() {
		if v := recover(); v != nil {
			outs = sameOutcome(len(items), callOutcome{err: &manifests.ItemError{Type: ItemErrorPanic, Message: fmt.Sprint(v)}})
		}
	}()
	timeout := r.o.ItemTimeout
	if r.batchCall(proc) {
		got := proc.(BatchProcessor).ProcessBatch(ic, items)
		if len(got) != len(items) {
			return sameOutcome(len(items), callOutcome{err: &manifests.ItemError{Type: ItemErrorOutput,
				Message: fmt.Sprintf("processor returned %d outcomes for a call of %d items", len(got), len(items))}})
		}
		outs = make([]callOutcome, len(items))
		for i, o := range got {
			outs[i] = classify(ic, o.Output, o.Err, timeout)
		}
		return outs
	}
	out, err := proc.Process(ic, items[0].Input)
	return []callOutcome{classify(ic, out, err, timeout)}
}

// batchCall reports whether calls to proc go to ProcessBatch.
func (r *itemRunner) batchCall(proc Processor) bool {
	_, ok := proc.(BatchProcessor)
	return ok && r.perCall > 1
}

// timedOut is the outcome of an item whose call was given up.
func (r *itemRunner) timedOut() callOutcome {
	return callOutcome{err: &manifests.ItemError{Type: ItemErrorTimeout, Message: fmt.Sprintf("no result within %v", r.o.ItemTimeout)}}
}

// sameOutcome is o for each of n items.
func sameOutcome(n int, o callOutcome) []callOutcome {
	outs := make([]callOutcome, n)
	for i := range outs {
		outs[i] = o
	}
	return outs
}

// callSlot shows the call a caller goroutine is in (nil between calls),
// for the watchdog; goOn goes on with a given-up call's run in the
// caller's role, on a new goroutine.
type callSlot struct {
	cur  atomic.Pointer[itemCall]
	goOn func(run *callRun, outs []callOutcome)
}

func (r *itemRunner) addSlot(s *callSlot) {
	r.slotsMu.Lock()
	r.slots = append(r.slots, s)
	r.slotsMu.Unlock()
}

// watchdog gives up the calls that run past their deadline, and when ctx
// ends every call still running: their items get a timeout outcome, and
// another goroutine goes on with their group (the slot's goOn), while the
// processor keeps the call's own goroutine until it returns (its outcome
// is then dropped). It sleeps until the earliest deadline of the calls in
// flight, or for one timeout when there are none: a call started later
// has a later deadline.
func (r *itemRunner) watchdog(ctx context.Context) {
	timeout := r.o.ItemTimeout
	if timeout <= 0 {
		timeout = time.Hour // no deadlines: only the end of ctx matters
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		ended := false
		select {
		case <-ctx.Done():
			ended = true
		case <-t.C:
		}
		now := time.Now()
		next := now.Add(timeout)
		r.slotsMu.Lock()
		slots := r.slots
		r.slotsMu.Unlock()
		for _, s := range slots {
			ic := s.cur.Load()
			switch {
			case ic == nil:
			case ended || (!ic.deadline.IsZero() && !ic.deadline.After(now)):
				r.giveUp(s, ic)
			case !ic.deadline.IsZero() && ic.deadline.Before(next):
				next = ic.deadline
			}
		}
		if ended {
			return
		}
		t.Reset(next.Sub(now))
	}
}

// giveUp gives up ic, the call in s, unless it has just returned.
func (r *itemRunner) giveUp(s *callSlot, ic *itemCall) {
	if !ic.state.CompareAndSwap(callRunning, callGivenUp) {
		return
	}
	ic.stop()
	go s.goOn(ic.run, sameOutcome(ic.n, r.timedOut()))
}

// The states of an itemCall.
const (
	callRunning int32 = iota
	callReturned
	callGivenUp
)

// itemCall is one call in flight, and the context its processor gets: the
// shard's context with the call's deadline and, for Process, its item
// (ItemFrom). It makes a context.WithDeadline only when the processor asks
// for Done, so a processor that never waits on its context pays nothing
// for the timeout; the watchdog gives up calls past it either way.
type itemCall struct {
	parent   context.Context
	deadline time.Time // zero: none
	item     Item
	hasItem  bool
	run      *callRun
	n        int          // items in the call
	state    atomic.Int32 // callRunning, callReturned or callGivenUp

	mu     sync.Mutex
	lazy   context.Context // made by Done
	cancel context.CancelFunc
}

func (c *itemCall) Deadline() (time.Time, bool) { return c.deadline, !c.deadline.IsZero() }

func (c *itemCall) Done() <-chan struct{} { return c.ctx().Done() }

func (c *itemCall) Err() error {
	if l := c.made(); l != nil {
		return l.Err()
	}
	if err := c.parent.Err(); err != nil {
		return err
	}
	if !c.deadline.IsZero() && !time.Now().Before(c.deadline) {
		return context.DeadlineExceeded
	}
	return nil
}

func (c *itemCall) Value(key any) any {
	if _, ok := key.(itemKey); ok && c.hasItem {
		return c.item
	}
	if l := c.made(); l != nil {
		return l.Value(key) // the context package finds its own there
	}
	return c.parent.Value(key)
}

// made is the context Done made, or nil.
func (c *itemCall) made() context.Context {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lazy
}

// ctx is the context behind Done, made on first use.
func (c *itemCall) ctx() context.Context {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.lazy == nil {
		if c.deadline.IsZero() {
			c.lazy, c.cancel = context.WithCancel(c.parent)
		} else {
			c.lazy, c.cancel = context.WithDeadline(c.parent, c.deadline)
		}
	}
	return c.lazy
}

// stop ends the context Done made, if any.
func (c *itemCall) stop() {
	c.mu.Lock()
	cancel := c.cancel
	c.mu.Unlock()
	if cancel != nil {
		cancel()
	}
}

// classify turns what a processor returned for one item into its outcome.
func classify(ctx context.Context, out json.RawMessage, err error, timeout time.Duration) callOutcome {
	switch {
	case err != nil && errors.Is(err, context.DeadlineExceeded) && ctx.Err() != nil:
		return callOutcome{err: &manifests.ItemError{Type: ItemErrorTimeout, Message: fmt.Sprintf("no result within %v: %v", timeout, err)}}
	case err != nil && IsPermanent(err):
		return callOutcome{err: &manifests.ItemError{Type: ItemErrorPermanent, Message: err.Error()}}
	case err != nil:
		ra, _ := RetryAfterOf(err)
		return callOutcome{err: &manifests.ItemError{Type: ItemErrorRetryable, Message: err.Error()}, retryAfter: ra}
	case len(out) == 0:
		return callOutcome{out: json.RawMessage("null")}
	}
	// One pass validates and compacts (a result line holds one line).
	buf := bytes.NewBuffer(make([]byte, 0, len(out)))
	if json.Compact(buf, out) != nil {
		return callOutcome{err: &manifests.ItemError{Type: ItemErrorOutput, Message: "processor returned invalid JSON"}}
	}
	if !utf8.Valid(buf.Bytes()) {
		// JSON is UTF-8 (RFC 8259); inputs that are not are refused, and
		// so are outputs: readers of the results would choke on them.
		return callOutcome{err: &manifests.ItemError{Type: ItemErrorOutput, Message: "processor returned JSON that is not valid UTF-8: " + strconv.QuoteToASCII(string(out[:min(len(out), 80)]))}}
	}
	return callOutcome{out: buf.Bytes()}
}
