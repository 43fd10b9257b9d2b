package execproc

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/batchpipe/batchpipe/pipeline"
)

// DefaultMaxLine is the longest line, in bytes, an exec processor sends
// or accepts (64 MiB).
const DefaultMaxLine = 64 << 20

// Options configure a Pool. The zero value is ready to use.
type Options struct {
	// PoolSize is the most processes running at once, each serving one
	// item at a time; 0 means DefaultPoolSize().
	PoolSize int
	// Logger receives the processes' stderr, one record per line at level
	// Warn with the command and pid; nil means slog.Default().
	Logger *slog.Logger
	// MaxLine is the longest line in bytes (without its newline) sent to or
	// read from a process; 0 means DefaultMaxLine.
	MaxLine int
	// Env names the variables of the worker's environment that processes
	// get besides BaseEnv (a name ending in "*" stands for every name
	// with that prefix; "*" alone passes the whole environment). Nothing
	// else of it reaches them: not the worker's store credentials, not
	// TEMPORAL_API_KEY. See ValidateEnvName.
	Env []string
}

// DefaultPoolSize is the pool size of an exec processor unless told
// otherwise: the number of CPUs, at least 8.
func DefaultPoolSize() int { return max(8, runtime.NumCPU()) }

// Pool is a processor that hands items to a pool of long-lived processes
// of one command, speaking JSON lines over stdin and stdout.
//
// The protocol: batchpipe writes each item to a process's stdin as one
// line of compact JSON, and the process writes exactly one line on its
// stdout for each, the answer to that item, in the order of the items.
// While items are cheap (under 5 ms a line) and answers echo their item's
// index (item context, below), a process may be handed up to 16 lines
// (32 KiB) in one write, before it answered the first: a process that
// reads a line, answers it and reads the next serves them all, and a round
// trip through the pipes is paid per write, not per item; other items go
// one at a time. The answer is a JSON object, either
//
//	{"output": <any JSON value>}
//	{"error": {"message": "why", "permanent": true}}
//	{"error": {"message": "quota", "retry_after_ms": 2000}}
//
// An error is retried (with backoff, up to the batch's item attempts)
// unless "permanent" is true; "retry_after_ms" asks for the next attempt no
// sooner than that, without counting it against the attempts (see
// pipeline.RetryAfter); "error" may also be a bare string, a retryable
// error with that message. Other keys are ignored. The process must flush
// its answers before it waits for more input (after each line, or after
// the answers to all the lines it has read) and should write diagnostics
// to stderr, which goes to the worker's log, line by line.
//
// With a batch's item context (pipeline.Options.ItemContext) each line is
// an envelope instead of the bare item:
//
//	{"batch_id": "b", "shard": 0, "index": 7, "attempt": 1, "key": "b/7", "input": <item>}
//
// and an answer may echo "index": an index other than the item's is a
// protocol error, so an answer can never be taken for another item's.
// With items per call N > 1 (pipeline.Options.ItemsPerCall) each line is a
// JSON array of up to N items (or envelopes) and the answer one line, a
// JSON array of as many answers in the same order; an answer that is not
// such an array fails the call's items, saying what came back.
//
// A process is started on demand, up to PoolSize at once, and then kept
// for the next items. When an attempt passes its timeout (or its context
// ends) the process serving it is killed, since its state is unknown; when
// a process exits, or answers with anything but one line of the shape
// above, the item fails with a retryable error and the process is
// discarded. So it is when a process writes anything to stdout besides
// its one answer line per item: a second line read with the answer,
// output that arrives between items (found when the next item is about to
// be written), or a line found written before the process read a byte of
// the item it would be taken for. (A line written after the next item was
// handed over cannot be told from that item's answer for certain without
// the item context's index echo: whether the item was still unread is
// checked after the line is read, and the process may have read it since.
// The real answer is then the stray output that fails the item after.
// Once a command's answers have echoed their index, an "output" answer
// without one is refused.) Either way the next item gets a fresh process. A process that served items may also end its life between
// items: when it exits with status 0 without answering the item just
// handed to it, the item goes to a new process, once, without failing. A
// command that cannot be started (not found, not executable) fails items
// permanently. At Close each process gets EOF on stdin and a moment to
// exit before it is killed. On Linux each process runs in a process group
// of its own, which is killed as soon as the process ends, killed or not:
// the children it started (say, under sh -c) are not left behind. A
// process's environment is BaseEnv's part of the worker's plus the
// variables Options.Env names, nothing more (its stderr goes to the log,
// so a process that printed the worker's credentials would leak them).
type Pool struct {
	command string   // as given, for messages
	argv    []string // split command line
	opts    Options
	log     *slog.Logger

	// Calls in flight: each holds a slots token (up to PoolSize ×
	// maxRoundLines, for rounds) and, while rounds are off, a lockstep
	// token too (up to PoolSize: one call per process); see acquire.
	slots    chan struct{}
	lockstep chan struct{}
	fast     atomic.Bool // the last round took under fastLine a line
	echoes   atomic.Bool // answers echo their item's index (item context)
	// echoSeen: some answer of this command echoed its index; from then on
	// an "output" answer without one is refused (a stray line, not an
	// answer). It is never unset.
	echoSeen atomic.Bool

	mu     sync.Mutex
	idle   []*execProc            // started, waiting for an item (a stack)
	procs  map[*execProc]struct{} // every live process, idle or busy
	places int                    // processes running or being started (≤ PoolSize)
	queue  []*request             // calls waiting for a process, oldest first
	closed bool
}

// Rounds: a process is handed the lines of the calls waiting for it
// together, up to maxRoundLines lines and maxRoundBytes bytes in one
// write, and answers them in order, so that cheap items do not each pay a
// pipe round trip (a write that wakes the process, a line it flushes back,
// a wake-up of ours). The bytes stay under half the pipe's capacity, so
// the write never waits on a process that is itself waiting for us to read
// its answers; a longer line goes alone. Only answers that can be told
// apart are taken in rounds: those of a batch with item context whose
// process echoes each item's index (an answer out of step, say a line
// written twice, then names the wrong index, where a bare answer would be
// taken for the next item's). A round's calls get their outcomes when it
// ends.
const (
	maxRoundLines = 16
	maxRoundBytes = 32 << 10
	// fastLine is the time a line of a round may take, on average, for
	// calls to be let in up to maxRoundLines per process: a call waiting
	// behind a round then waits at most ~80 ms, not a slow item's time
	// again and again (its --item-timeout runs from the start of the wait).
	fastLine = 5 * time.Millisecond
	// slowRound is how long a round may take before rounds end for the
	// time being (at most maxRoundLines × fastLine is expected).
	slowRound = 50 * fastLine
)

// fastProcs is the most processes busy at once while items are cheap.
var fastProcs = max(2, runtime.NumCPU())

// New returns an exec processor for command, a command line split into
// program and arguments like a shell would split words (see pipeline.SplitCommand; the name
// "exec:CMD"), run without a shell. No process starts until the first item.
func New(command string, opts Options) (*Pool, error) {
	argv, err := pipeline.SplitCommand(command)
	if err != nil {
		return nil, fmt.Errorf("exec processor %q: %v", command, err)
	}
	if len(argv) == 0 {
		return nil, fmt.Errorf("exec processor: empty command (use exec:PROGRAM ARGS...)")
	}
	if opts.PoolSize <= 0 {
		opts.PoolSize = DefaultPoolSize()
	}
	if opts.MaxLine <= 0 {
		opts.MaxLine = DefaultMaxLine
	}
	lg := opts.Logger
	if lg == nil {
		lg = slog.Default()
	}
	return &Pool{
		command: command, argv: argv, opts: opts,
		log:      lg.With("command", command),
		slots:    make(chan struct{}, opts.PoolSize*maxRoundLines),
		lockstep: make(chan struct{}, opts.PoolSize),
		procs:    map[*execProc]struct{}{},
	}, nil
}

// Process sends input, the bare item, to an idle process (starting one if
// fewer than PoolSize run) and returns its answer.
func (e *Pool) Process(ctx context.Context, input json.RawMessage) (json.RawMessage, error) {
	return view{e: e}.Process(ctx, input)
}

// ProcessBatch sends items to one process as one JSON array and returns
// its answers (see Pool's protocol).
func (e *Pool) ProcessBatch(ctx context.Context, items []pipeline.Item) []pipeline.Outcome {
	return view{e: e}.ProcessBatch(ctx, items)
}

// Acquire waits for a free process, for one call (see pipeline.Pool).
func (e *Pool) Acquire(ctx context.Context) (pipeline.Processor, func(), error) {
	return view{e: e}.Acquire(ctx)
}

// ForBatch returns the processor that serves a batch with options o from
// e's processes: items go in envelopes when o.ItemContext is set.
func (e *Pool) ForBatch(o pipeline.Options) pipeline.BatchProcessor {
	return view{e: e, itemContext: o.ItemContext}
}

// view is a Pool serving one batch: with or without item context, and
// holding a slot already (held) or not.
type view struct {
	e           *Pool
	itemContext bool
	held        bool
}

var (
	_ pipeline.BatchProcessor = view{}
	_ pipeline.Pool           = view{}
)

// Acquire waits for one of the PoolSize slots and returns a view that
// uses it without waiting again.
func (v view) Acquire(ctx context.Context) (pipeline.Processor, func(), error) {
	release, err := v.e.acquire(ctx)
	if err != nil {
		return nil, nil, err
	}
	v.held = true
	return v, release, nil
}

func (e *Pool) acquire(ctx context.Context) (func(), error) {
	select {
	case e.slots <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("exec %q: waiting for a free process: %w", e.command, ctx.Err())
	}
	if e.rounds() {
		return func() { <-e.slots }, nil
	}
	select {
	case e.lockstep <- struct{}{}:
		return func() { <-e.lockstep; <-e.slots }, nil
	case <-ctx.Done():
		<-e.slots
		return nil, fmt.Errorf("exec %q: waiting for a free process: %w", e.command, ctx.Err())
	}
}

// Process sends one item (from pipeline.ItemFrom(ctx) for its envelope).
func (v view) Process(ctx context.Context, input json.RawMessage) (json.RawMessage, error) {
	if !v.held {
		release, err := v.e.acquire(ctx)
		if err != nil {
			return nil, err
		}
		defer release()
	}
	it, _ := pipeline.ItemFrom(ctx)
	it.Input = input
	line, err := v.encode(it)
	if err != nil {
		return nil, err
	}
	var got pipeline.Outcome
	err = v.e.exchange(ctx, line, v.batchOf(it), func(p *execProc, answer []byte, strict bool) verdict {
		o, verdict := v.decode(p, answer, it.Index, strict)
		if verdict != answerUnsure {
			got = o
		}
		return verdict
	})
	if err != nil {
		return nil, err
	}
	return got.Output, got.Err
}

// ProcessBatch sends items as one array line and reads one array of
// answers. An item that cannot be sent (not JSON, too long) fails alone.
func (v view) ProcessBatch(ctx context.Context, items []pipeline.Item) []pipeline.Outcome {
	outs := make([]pipeline.Outcome, len(items))
	failAll := func(sent []int, err error) []pipeline.Outcome {
		for _, k := range sent {
			outs[k].Err = err
		}
		return outs
	}
	if !v.held {
		release, err := v.e.acquire(ctx)
		if err != nil {
			return failAll(allIndexes(len(items)), err)
		}
		defer release()
	}
	var line bytes.Buffer
	line.WriteByte('[')
	var sent []int // positions in items of the array's elements
	for k, it := range items {
		b, err := v.encode(it)
		if err != nil {
			outs[k].Err = err
			continue
		}
		if len(sent) > 0 {
			line.WriteByte(',')
		}
		line.Write(b)
		sent = append(sent, k)
	}
	line.WriteByte(']')
	if len(sent) == 0 {
		return outs
	}
	if line.Len() > v.e.opts.MaxLine {
		return failAll(sent, pipeline.Permanent(fmt.Errorf("exec %q: a call of %d items is %d bytes, longer than the %d-byte line limit (lower --items-per-call)", v.e.command, len(sent), line.Len(), v.e.opts.MaxLine)))
	}
	var callErr error
	err := v.e.exchange(ctx, line.Bytes(), v.batchOf(items[sent[0]]), func(p *execProc, answer []byte, strict bool) verdict {
		callErr = nil
		var arr []json.RawMessage
		if json.Unmarshal(answer, &arr) != nil || arr == nil {
			callErr = fmt.Errorf(`exec %q: process %d answered %s to a call of %d items, not a JSON array of %d answers like [{"output": ...}, ...] (it was killed and will be restarted)`,
				v.e.command, p.cmd.Process.Pid, snippet(answer), len(sent), len(sent))
			return answerBad
		}
		if len(arr) != len(sent) {
			if strict { // out of step or not, it cannot be told
				return answerUnsure
			}
			callErr = fmt.Errorf("exec %q: process %d answered %d answers to a call of %d items: %s", v.e.command, p.cmd.Process.Pid, len(arr), len(sent), snippet(answer))
			return answerTaken
		}
		all := answerEchoed
		for n, raw := range arr {
			o, verdict := v.decode(p, raw, items[sent[n]].Index, strict)
			switch verdict {
			case answerBad:
				callErr = o.Err
				return answerBad
			case answerUnsure:
				return answerUnsure
			case answerTaken, answerSilent:
				if all != answerSilent {
					all = verdict
				}
			}
			outs[sent[n]] = o
		}
		return all
	})
	if err == nil {
		err = callErr
	}
	if err != nil {
		return failAll(sent, err)
	}
	return outs
}

func allIndexes(n int) []int {
	idx := make([]int, n)
	for i := range idx {
		idx[i] = i
	}
	return idx
}

// batchOf is the batch whose calls it may share a round with: its own
// with item context, none ("") without.
func (v view) batchOf(it pipeline.Item) string {
	if !v.itemContext {
		return ""
	}
	return it.BatchID
}

// envelope is an item with its context, as a batch with item context
// sends it.
type envelope struct {
	BatchID string          `json:"batch_id"`
	Shard   int             `json:"shard"`
	Index   int64           `json:"index"`
	Attempt int             `json:"attempt"`
	Key     string          `json:"key"`
	Input   json.RawMessage `json:"input"`
}

// encode returns the compact JSON sent for it, the item or its envelope,
// or a permanent error for an item that is not JSON (in an array it would
// spoil the call's other items).
func (v view) encode(it pipeline.Item) ([]byte, error) {
	line := []byte(it.Input)
	var err error
	switch {
	case v.itemContext: // Marshal checks and compacts the input
		line, err = json.Marshal(envelope{BatchID: it.BatchID, Shard: it.Shard, Index: it.Index, Attempt: it.Attempt, Key: it.Key(), Input: line})
	case bytes.ContainsAny(line, "\r\n"):
		var buf bytes.Buffer
		err = json.Compact(&buf, line)
		line = buf.Bytes()
	case !json.Valid(line):
		err = errors.New("not a JSON value")
	}
	if err != nil {
		return nil, pipeline.Permanent(fmt.Errorf("exec %q: input is not valid JSON: %v", v.e.command, err))
	}
	if len(line) > v.e.opts.MaxLine {
		return nil, pipeline.Permanent(fmt.Errorf("exec %q: input of %d bytes is longer than the %d-byte line limit", v.e.command, len(line), v.e.opts.MaxLine))
	}
	return line, nil
}

// request is one call's line on its way to a process and back.
type request struct {
	ctx    context.Context
	line   []byte
	batch  string // with item context, the item's batch ("" without)
	alone  bool   // to go alone: its answer did not echo its index in a round
	decode answerFunc
	err    error // the exchange's own error, once settled

	// Set under Pool.mu when a queued request is let go (woken closes):
	woken chan struct{}
	lead  bool      // to lead a round: with proc, or on a new process if nil
	proc  *execProc // (lead) an idle process handed over
}

// answerFunc takes the answer line to a call. In a round of many (strict)
// the answer must echo its item's index to be taken.
type answerFunc func(p *execProc, answer []byte, strict bool) verdict

// verdict is what an answerFunc made of an answer.
type verdict int

const (
	answerTaken  verdict = iota // the call's outcome is set
	answerEchoed                // taken, and it echoed its item's index
	answerSilent                // taken; item context, but no index echoed
	answerBad                   // malformed: p killed, the outcome says why
	answerUnsure                // strict and no index echoed: nothing taken
)

// rounds reports whether calls may go to a process many at once.
func (e *Pool) rounds() bool { return e.fast.Load() && e.echoes.Load() }

// exchange sends line to a process and hands its answer line to decode,
// which reports whether the answer was well formed (else the process is
// discarded). The error is the exchange's own: the process died, wrote
// stray output, or the context ended. A call that finds every process
// busy waits in the queue, and the next round of a process takes it along
// (see maxRoundLines).
func (e *Pool) exchange(ctx context.Context, line []byte, batch string, decode answerFunc) error {
	req := &request{ctx: ctx, line: line, batch: batch, decode: decode}
	p, lead, err := e.enter(req)
	if err != nil {
		return err
	}
	if !lead {
		select {
		case <-req.woken:
		case <-ctx.Done():
			if e.leave(req) {
				return fmt.Errorf("exec %q: waiting for a free process: %w", e.command, ctx.Err())
			}
			<-req.woken // a round has it already: it ends soon, ctx ending
		}
		if !req.lead {
			return req.err
		}
		p = req.proc
	}
	round := []*request{req}
	if p != nil && req.batch != "" && p.lastBatch == req.batch && e.rounds() {
		round = e.gather(req, p.roundBytes)
	}
	p = e.serve(p, round)
	e.release(p)
	for _, r := range round[1:] {
		close(r.woken)
	}
	return req.err
}

// enter returns an idle process for req to lead a round with, or lead
// with a nil process when one may be started; otherwise it queues req.
func (e *Pool) enter(req *request) (*execProc, bool, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	// Cheap items: a round each for as many processes as CPUs, and rounds
	// of many lines, beat more processes with shorter rounds. (Dropping a
	// process that died while idle leaves the number busy as it is.)
	enoughBusy := e.rounds() && e.places-len(e.idle) >= fastProcs
	for !e.closed && len(e.queue) == 0 && len(e.idle) > 0 && !enoughBusy {
		p := e.idle[len(e.idle)-1]
		e.idle = e.idle[:len(e.idle)-1]
		select {
		case <-p.exited: // died while idle: replace it
			delete(e.procs, p)
			e.places--
			go p.stop(0)
			continue
		default:
		}
		return p, true, nil
	}
	switch {
	case e.closed:
		return nil, false, e.closedErr()
	case enoughBusy: // wait for one of them
	case len(e.queue) == 0 && e.places < e.opts.PoolSize:
		e.places++
		return nil, true, nil
	}
	req.woken = make(chan struct{})
	e.queue = append(e.queue, req)
	return nil, false, nil
}

// leave takes req out of the queue, unless a round has taken it.
func (e *Pool) leave(req *request) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	for i, r := range e.queue {
		if r == req {
			e.queue = append(e.queue[:i], e.queue[i+1:]...)
			return true
		}
	}
	return false
}

// gather returns the round led by first: first and the queued calls of
// its batch that follow it and fit with it (maxRoundLines, maxBytes).
// Indexes are told apart only within a batch: a round, and the round
// before it on the same process, hold one batch's items (see serve).
func (e *Pool) gather(first *request, maxBytes int) []*request {
	round := []*request{first}
	size := len(first.line) + 1
	e.mu.Lock()
	defer e.mu.Unlock()
	for len(e.queue) > 0 && len(round) < maxRoundLines && e.queue[0].batch == first.batch {
		r := e.queue[0]
		if size+len(r.line)+1 > maxBytes {
			break
		}
		e.queue = e.queue[1:]
		round = append(round, r)
		size += len(r.line) + 1
	}
	return round
}

// release hands p, or its place when p is nil (discarded), to the oldest
// queued call, which leads the next round; with none waiting p goes idle.
func (e *Pool) release(p *execProc) {
	e.mu.Lock()
	if e.closed {
		if p != nil {
			delete(e.procs, p)
		}
		e.mu.Unlock()
		if p != nil {
			p.stop(0)
		}
		return
	}
	if len(e.queue) > 0 {
		next := e.queue[0]
		e.queue = e.queue[1:]
		next.lead, next.proc = true, p
		e.mu.Unlock()
		close(next.woken)
		return
	}
	if p != nil {
		e.idle = append(e.idle, p)
	} else {
		e.places--
	}
	e.mu.Unlock()
}

// serve runs the calls of round on p (a new process if nil) until every
// one is settled, many at a time while rounds are allowed and one at a
// time otherwise, and returns the process, or nil when it was discarded.
// Calls that a failure of another one's left unanswered (the process died
// on an earlier line, or was killed for an ended context) go again on a
// new process without blame; the one the process failed on gets the
// error.
func (e *Pool) serve(p *execProc, round []*request) *execProc {
	for len(round) > 0 {
		round = e.dropEnded(round)
		if len(round) == 0 {
			break
		}
		if p == nil {
			var err error
			if p, err = e.startPlace(); err != nil {
				for _, r := range round {
					r.err = err
				}
				return nil
			}
		}
		cur := round
		if len(cur) > 1 && (!e.rounds() || cur[0].alone || p.lastBatch != cur[0].batch) {
			cur = cur[:1]
		}
		start := time.Now()
		answers, err := p.roundTrip(cur)
		if k, unsure := e.decodeAll(p, cur, answers); k < len(answers) {
			// round[k]'s answer was malformed (p was killed and the
			// outcome says why) or, in a round, did not echo its index:
			// then it goes again, alone, and the calls after it too.
			if unsure {
				round[k].alone = true
				k--
			}
			e.discard(p)
			p, round = nil, round[k+1:]
			e.setRounds(&e.fast, false)
			continue
		}
		if err == nil {
			e.setRounds(&e.fast, time.Since(start) < fastLine*time.Duration(len(cur)))
			p.lastBatch = cur[0].batch
			round = round[len(cur):]
			continue
		}
		e.setRounds(&e.fast, false)
		e.discard(p)
		round = round[len(answers):]
		switch {
		case isStray(err) && len(cur) > 1:
			// Every answer of the round echoed its index, so they stand
			// (or, found before the round was written, there are none):
			// the process goes for what it wrote besides, and none of
			// the items is to blame.
			e.log.Warn("exec processor process replaced", "error", err)
		case isStray(err):
			for _, r := range cur[len(answers):] {
				r.err = err
			}
			round = round[len(cur)-len(answers):]
		case errors.Is(err, errContextEnded):
			for _, r := range cur[len(answers):] {
				if r.ctx.Err() != nil { // dropEnded takes them out
					r.err = fmt.Errorf("exec %q: no answer from pid %d (killed): %w", e.command, p.cmd.Process.Pid, r.ctx.Err())
				}
			}
		case p.served > 0 && p.leftCleanly:
			// It served items and exited with status 0 without a word
			// on this one: it ended its life between items (say, after
			// serving a number of them), so the item is not to blame.
			// More idle processes may have ended alike; a new one has
			// served none, so this ends there at the latest.
			e.log.Debug("exec processor process exited between items; using a new one", "pid", p.cmd.Process.Pid, "served", p.served)
		default:
			round[0].err = err
			round = round[1:]
		}
		p = nil
	}
	return p
}

// dropEnded settles the calls of round whose context has ended, which
// would only have the process killed (unless an error settled them
// already), and returns the others, in a new slice if any was dropped:
// round's array is the caller's (exchange wakes its calls from it).
func (e *Pool) dropEnded(round []*request) []*request {
	if !slices.ContainsFunc(round, func(r *request) bool { return r.err != nil || r.ctx.Err() != nil }) {
		return round
	}
	var live []*request
	for _, r := range round {
		switch {
		case r.err != nil:
		case r.ctx.Err() != nil:
			r.err = fmt.Errorf("exec %q: no answer (the call ended before it was answered): %w", e.command, r.ctx.Err())
		default:
			live = append(live, r)
		}
	}
	return live
}

// setRounds sets one of the conditions of rounds, e.fast or e.echoes.
// When rounds end, the calls let in to wait for them go back to wait for a
// process one at a time: they are answered "retry after 1 ms", which costs
// no attempt, rather than waiting in the queue on their timeouts.
func (e *Pool) setRounds(cond *atomic.Bool, v bool) {
	if cond.Load() == v {
		return
	}
	was := e.rounds()
	cond.Store(v)
	if !was || e.rounds() {
		return
	}
	e.mu.Lock()
	queued := e.queue
	e.queue = nil
	e.mu.Unlock()
	for _, r := range queued {
		r.err = pipeline.RetryAfter(fmt.Errorf("exec %q: items turned slow or answers unchecked; waiting for a process again", e.command), time.Millisecond)
		close(r.woken)
	}
}

// decodeAll hands the answers to their calls' decode in order, counting
// them served, and returns how many were taken: k < len(answers) when the
// k-th was malformed or, unsure, did not echo its index in a round.
func (e *Pool) decodeAll(p *execProc, round []*request, answers [][]byte) (k int, unsure bool) {
	strict := len(round) > 1
	for k, a := range answers {
		switch round[k].decode(p, a, strict) {
		case answerBad:
			return k, false
		case answerUnsure:
			e.setRounds(&e.echoes, false)
			return k, true
		case answerEchoed:
			e.setRounds(&e.echoes, true)
		case answerSilent:
			e.setRounds(&e.echoes, false)
		}
		p.served++
	}
	return len(answers), false
}

// startPlace starts a process in a place the caller holds.
func (e *Pool) startPlace() (*execProc, error) {
	e.mu.Lock()
	closed := e.closed
	e.mu.Unlock()
	if closed {
		return nil, e.closedErr()
	}
	p, err := e.start()
	if err != nil {
		return nil, err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		go p.stop(0)
		return nil, e.closedErr()
	}
	e.procs[p] = struct{}{}
	return p, nil
}

func (e *Pool) closedErr() error {
	return fmt.Errorf("exec %q: the processor is closed (worker shutting down)", e.command)
}

// discard kills p and waits for it, so a replacement never runs beside
// it; its place stays with the caller.
func (e *Pool) discard(p *execProc) {
	e.mu.Lock()
	delete(e.procs, p)
	e.mu.Unlock()
	p.stop(0)
}

// Close stops every process: stdin is closed, and a process still running
// a second later is killed. Items in flight fail; later ones fail too.
func (e *Pool) Close() error {
	e.mu.Lock()
	e.closed = true
	procs := make([]*execProc, 0, len(e.procs))
	for p := range e.procs {
		procs = append(procs, p)
	}
	e.procs, e.idle = map[*execProc]struct{}{}, nil
	queued := e.queue
	e.queue = nil
	e.mu.Unlock()
	for _, r := range queued {
		r.err = e.closedErr()
		close(r.woken)
	}
	var wg sync.WaitGroup
	for _, p := range procs {
		wg.Go(func() { p.stop(time.Second) })
	}
	wg.Wait()
	return nil
}

// execProc is one running process of a Pool.
type execProc struct {
	e      *Pool
	cmd    *exec.Cmd
	stdin  *os.File // our end of its stdin
	stdout *os.File // our end of its stdout
	r      *bufio.Reader
	stderr *stderrLog
	exited chan struct{} // closed once Wait returned
	err    error         // Wait's result, set before exited closes
	once   sync.Once

	// Our pipe ends again, to ask how much waits unread in them.
	stdinRC, stdoutRC syscall.RawConn

	roundBytes int    // the most bytes a round writes: under half of stdin's pipe
	lastBatch  string // the batch of its last round, when it had item context

	// Used only by the request holding the process:
	msg         []byte // the lines being sent, newlines included
	served      int    // items answered
	leftCleanly bool   // exited with status 0 before reading a byte of an answer
}

func (e *Pool) start() (*execProc, error) {
	cmd := exec.Command(e.argv[0], e.argv[1:]...)
	cmd.Env = environ(os.Environ(), e.opts.Env)
	inR, inW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("exec %q: %v", e.command, err)
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		inR.Close()
		inW.Close()
		return nil, fmt.Errorf("exec %q: %v", e.command, err)
	}
	// Our own pipes (not StdinPipe/StdoutPipe) so that Wait, run as soon as
	// the process starts, never closes stdout under a pending read.
	cmd.Stdin, cmd.Stdout = inR, outW
	se := &stderrLog{log: e.log}
	cmd.Stderr = se
	cmd.WaitDelay = time.Second // children that keep stderr open don't stall Wait
	// A process group of its own, killed when the process ends, so that
	// no child it started (sh -c '...', a program's helpers) is orphaned.
	ownProcessGroup(cmd)
	err = cmd.Start()
	inR.Close()
	outW.Close()
	if err != nil {
		inW.Close()
		outR.Close()
		if errors.Is(err, exec.ErrNotFound) || errors.Is(err, exec.ErrDot) || errors.Is(err, fs.ErrNotExist) ||
			errors.Is(err, fs.ErrPermission) || errors.Is(err, syscall.ENOEXEC) {
			return nil, pipeline.Permanent(fmt.Errorf("exec %q: cannot start: %v", e.command, err))
		}
		return nil, fmt.Errorf("exec %q: cannot start: %v", e.command, err)
	}
	se.mu.Lock()
	se.pid = cmd.Process.Pid
	se.mu.Unlock()
	p := &execProc{e: e, cmd: cmd, stdin: inW, stdout: outR, r: bufio.NewReaderSize(outR, 64<<10), stderr: se, exited: make(chan struct{})}
	p.stdinRC, _ = inW.SyscallConn()
	p.stdoutRC, _ = outR.SyscallConn()
	p.roundBytes = 2 << 10 // PIPE_BUF's half: what any pipe holds
	if n, ok := pipeSize(p.stdinRC); ok {
		p.roundBytes = min(maxRoundBytes, n/2)
	}
	go func() {
		// However it ends (killed by stop or on its own), what it started
		// and left running dies with it, killed while its zombie still
		// holds the group's id.
		if waitExited(cmd.Process) {
			killProcessGroup(cmd.Process.Pid)
		}
		p.err = cmd.Wait()
		close(p.exited)
	}()
	e.log.Debug("exec processor started a process", "pid", cmd.Process.Pid)
	return p, nil
}

// stop closes the process's stdin, gives it grace to exit, then kills it
// (and so its process group, see start), closes our pipe ends and waits
// for it. It is safe to call more than once.
func (p *execProc) stop(grace time.Duration) {
	p.once.Do(func() {
		p.stdin.Close()
		if grace > 0 {
			select {
			case <-p.exited:
			case <-time.After(grace):
			}
		}
		p.cmd.Process.Kill()
		p.stdout.Close()
		<-p.exited
	})
}

// errLineTooLong is returned by readLine for an over-long line.
var errLineTooLong = errors.New("line too long")

// errContextEnded is roundTrip's error when a call's context ended (see
// serve, which says whose).
var errContextEnded = errors.New("context ended")

// strayError is stray output on a process's stdout (strayOutput).
type strayError struct{ error }

func isStray(err error) bool {
	var se strayError
	return errors.As(err, &se)
}

// roundTrip writes the lines of round's calls in one write and reads an
// answer line for each. On an error it returns the answers read before it
// (for the first calls, in order); a strayError spoils a
// lone call (a round's answers, each checked by its index, stand), and one
// wrapping errContextEnded means some call's context
// ended (the process was killed). After an error the process cannot serve
// again.
func (p *execProc) roundTrip(round []*request) ([][]byte, error) {
	// Whatever the process wrote since its last answer (or since it
	// started) is no answer to these items, nor to any: a protocol error.
	if p.outputWaiting() {
		return nil, p.strayOutput(nil, "after")
	}
	// Write and read here, with no goroutine of their own: the end of a
	// call's context sets the pipes' deadlines to now, which ends a
	// blocked write or read.
	stops := make([]func() bool, len(round))
	for k, r := range round {
		stops[k] = context.AfterFunc(r.ctx, func() {
			now := time.Now()
			p.stdin.SetWriteDeadline(now)
			p.stdout.SetReadDeadline(now)
		})
	}
	p.msg = p.msg[:0]
	for _, r := range round {
		p.msg = append(append(p.msg, r.line...), '\n')
	}
	if len(round) > 1 {
		// A round far slower than cheap items: the calls queued for
		// the next ones go back to wait one at a time (setRounds) now,
		// not when this one ends.
		t := time.AfterFunc(slowRound, func() { p.e.setRounds(&p.e.fast, false) })
		defer t.Stop()
	}
	var (
		answers    [][]byte
		werr, rerr error
	)
	if _, werr = p.stdin.Write(p.msg); werr == nil {
		for len(answers) < len(round) {
			var a []byte
			if a, rerr = readLine(p.r, p.e.opts.MaxLine); rerr != nil {
				break
			}
			answers = append(answers, a)
		}
	}
	ended := false
	for _, stop := range stops {
		if !stop() {
			ended = true
		}
	}
	if ended {
		// Its state is unknown: kill it and let the next items start afresh.
		p.stop(0)
		return answers, fmt.Errorf("exec %q: pid %d killed: %w", p.e.command, p.cmd.Process.Pid, errContextEnded)
	}
	switch {
	case werr != nil || (rerr != nil && !errors.Is(rerr, errLineTooLong)):
		return answers, p.died(werr != nil, rerr)
	case rerr != nil:
		p.stop(0)
		return answers, pipeline.Permanent(fmt.Errorf("exec %q: answer line longer than %d bytes (pid %d killed)", p.e.command, p.e.opts.MaxLine, p.cmd.Process.Pid))
	}
	// The answers are the lines the process wrote for the items: anything
	// read with them makes them suspect (what comes later is found before
	// the next round), and so does a last item still wholly unread (its
	// line was written before the process read a byte of it, so it
	// answers something else). The checks cost one system call per round,
	// and the one before writing another (the Buffered checks cost none).
	// (In a round of many, every answer echoes its index: they stand, and
	// only the process goes.)
	taken := answers
	if len(round) == 1 {
		taken = nil
	}
	last := answers[len(answers)-1]
	if p.r.Buffered() > 0 {
		return taken, p.strayOutput(last, "with")
	}
	if n, ok := pipeUnread(p.stdinRC); ok && n >= len(round[len(round)-1].line)+1 {
		return taken, p.strayOutput(last, "before")
	}
	return answers, nil
}

// outputWaiting reports whether anything the process wrote to stdout is
// waiting to be read, in our buffer or in the pipe.
func (p *execProc) outputWaiting() bool {
	if p.r.Buffered() > 0 {
		return true
	}
	n, ok := pipeUnread(p.stdoutRC)
	return ok && n > 0
}

// strayOutput kills a process that wrote more to stdout than one line per
// item and describes that: extra output waiting "after" its last answer
// (before the next item was written), the answer line given and output
// read "with" it, or the line given written "before" the process read the
// item at all.
func (p *execProc) strayOutput(line []byte, when string) error {
	var extra []byte
	if when != "before" {
		if p.r.Buffered() == 0 {
			p.r.Peek(1) // what waits in the pipe: this read does not block
		}
		extra, _ = p.r.Peek(p.r.Buffered())
		if i := bytes.IndexByte(extra, '\n'); i >= 0 {
			extra = extra[:i]
		}
	}
	// A stray line that echoes an index shows that this command's answers
	// do: from now on an answer without one is refused (a process that
	// prints a line of its own before each first answer cannot make its
	// real answers stray output for ever).
	for _, l := range [][]byte{line, extra} {
		var ans map[string]json.RawMessage
		if json.Unmarshal(l, &ans) == nil {
			if _, echoes := echoedIndex(ans["index"]); echoes {
				p.e.echoSeen.Store(true)
			}
		}
	}
	pid := p.cmd.Process.Pid
	p.stop(0)
	var what string
	switch {
	case when == "with":
		what = fmt.Sprintf("wrote more than one line for one item: %s and then %s", snippet(line), snippet(extra))
	case when == "before":
		what = fmt.Sprintf("wrote more than one line for one item: %s came before it read the next item", snippet(line))
	case p.served == 0:
		what = fmt.Sprintf("wrote %s to stdout before it was given an item", snippet(extra))
	default:
		what = fmt.Sprintf("wrote more than one line for one item: %s came after its answer, before the next item", snippet(extra))
	}
	return strayError{fmt.Errorf("exec %q: process %d %s (it was killed and will be restarted; stdout is for answers, one line per item: write logs to stderr)", p.e.command, pid, what)}
}

// died describes a process that stopped reading or writing mid-item, with
// its exit status and the tail of its stderr.
func (p *execProc) died(writing bool, rerr error) error {
	select {
	case <-p.exited:
	case <-time.After(5 * time.Second): // closed stdout but still running (a loaded box can take seconds to reap an exit)
	}
	p.stop(0)
	what := "exited before answering"
	switch {
	case writing:
		what = "stopped reading its input"
	case errors.Is(rerr, io.ErrUnexpectedEOF):
		what = "exited in the middle of an answer line"
	case rerr != nil && !errors.Is(rerr, io.EOF):
		what = "answer unreadable: " + rerr.Error()
	}
	p.leftCleanly = p.err == nil && (writing || errors.Is(rerr, io.EOF))
	status := "running"
	if p.err != nil {
		status = p.err.Error()
	} else if p.cmd.ProcessState != nil {
		status = p.cmd.ProcessState.String()
	}
	msg := fmt.Sprintf("exec %q: process %d %s (%s)", p.e.command, p.cmd.Process.Pid, what, status)
	if tail := p.stderr.tail(); tail != "" {
		msg += "; stderr: " + tail
	}
	return errors.New(msg + "; restarting it")
}

// decode turns one answer into the item's outcome, answerBad when the
// answer is malformed (the outcome's error says how): p is then killed.
// With item context an answer that echoes another item's index is
// malformed, and in a round (strict) one that echoes none is not taken
// (answerUnsure).
func (v view) decode(p *execProc, raw []byte, index int64, strict bool) (pipeline.Outcome, verdict) {
	bad := func(format string, args ...any) (pipeline.Outcome, verdict) {
		p.stop(0)
		return pipeline.Outcome{Err: fmt.Errorf(format, args...)}, answerBad
	}
	cmd, pid := v.e.command, p.cmd.Process.Pid
	var ans map[string]json.RawMessage
	if err := json.Unmarshal(raw, &ans); err != nil || ans == nil {
		return bad(`exec %q: process %d answered %s, not a JSON object like {"output": ...} or {"error": {...}} (it was killed and will be restarted; write logs to stderr, not stdout)`, cmd, pid, snippet(raw))
	}
	taken := answerTaken
	if echo, has := ans["index"]; has && v.itemContext {
		got, echoes := echoedIndex(echo)
		if echoes {
			v.e.echoSeen.Store(true) // in step or not, this command echoes
		}
		if !echoes || got != index {
			return bad("exec %q: process %d answered for index %.40s while given index %d: an answer out of step with its items (it was killed and will be restarted)", cmd, pid, echo, index)
		}
		taken = answerEchoed
	} else if v.itemContext {
		if strict {
			return pipeline.Outcome{}, answerUnsure
		}
		taken = answerSilent
	}
	if e, has := ans["error"]; has && !isNull(e) {
		var msg string
		var obj struct {
			Message      string  `json:"message"`
			Permanent    bool    `json:"permanent"`
			RetryAfterMS float64 `json:"retry_after_ms"`
		}
		if json.Unmarshal(e, &msg) == nil {
			obj.Message = msg
		} else if err := json.Unmarshal(e, &obj); err != nil || obj.RetryAfterMS < 0 {
			return bad(`exec %q: process %d answered with "error": %s; want {"message": "...", "permanent": true|false, "retry_after_ms": N} or a string (it was killed and will be restarted)`, cmd, pid, snippet(e))
		}
		if obj.Message == "" {
			obj.Message = fmt.Sprintf("exec %q: the process reported an error without a message", cmd)
		}
		err := errors.New(obj.Message)
		switch {
		case obj.Permanent:
			err = pipeline.Permanent(err)
		case obj.RetryAfterMS > 0:
			err = pipeline.RetryAfter(err, time.Duration(obj.RetryAfterMS*float64(time.Millisecond)))
		}
		return pipeline.Outcome{Err: err}, taken
	}
	out, has := ans["output"]
	if !has {
		return bad(`exec %q: process %d answered %s, with neither "output" nor "error" (it was killed and will be restarted)`, cmd, pid, snippet(raw))
	}
	if taken == answerSilent && v.e.echoSeen.Load() {
		return bad(`exec %q: process %d answered %s without the "index" that this command's answers echo: a stray line or an answer out of step with its items, not taken for item %d's (it was killed and will be restarted)`, cmd, pid, snippet(raw), index)
	}
	return pipeline.Outcome{Output: out}, taken
}

// echoedIndex is the item index that an answer's "index" value echoes,
// and whether it is one (not absent, null or anything but an integer).
func echoedIndex(echo json.RawMessage) (int64, bool) {
	var got int64
	return got, len(echo) > 0 && !isNull(echo) && json.Unmarshal(echo, &got) == nil
}

// isNull reports whether raw, a value decoded from JSON, is null.
func isNull(raw json.RawMessage) bool { return string(raw) == "null" }

func snippet(b []byte) string {
	const n = 200
	if len(b) > n {
		return fmt.Sprintf("%q… (%d bytes)", b[:n], len(b))
	}
	return fmt.Sprintf("%q", b)
}

// readLine reads one line without its newline (and a trailing \r). It
// fails with errLineTooLong past max bytes, io.ErrUnexpectedEOF for a last
// line without a newline and io.EOF when nothing is left.
func readLine(r *bufio.Reader, max int) ([]byte, error) {
	var buf []byte
	for {
		frag, err := r.ReadSlice('\n')
		if len(buf)+len(frag) > max+2 {
			return nil, errLineTooLong
		}
		buf = append(buf, frag...)
		switch {
		case err == nil:
			buf = bytes.TrimSuffix(buf[:len(buf)-1], []byte("\r"))
			if len(buf) > max {
				return nil, errLineTooLong
			}
			return buf, nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF) && len(buf) > 0:
			return nil, io.ErrUnexpectedEOF
		default:
			return nil, err
		}
	}
}

// stderrLog logs a process's stderr line by line and keeps its last lines
// for error messages.
type stderrLog struct {
	log *slog.Logger
	pid int

	mu    sync.Mutex
	part  []byte   // an unfinished line
	lines []string // the last few lines
}

const (
	stderrMaxLine  = 8 << 10 // longer lines are logged in pieces
	stderrTailSize = 5
)

func (s *stderrLog) Write(b []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := len(b)
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			s.part = append(s.part, b...)
			if len(s.part) >= stderrMaxLine {
				s.emit(s.part)
				s.part = s.part[:0]
			}
			break
		}
		s.part = append(s.part, b[:i]...)
		s.emit(s.part)
		s.part = s.part[:0]
		b = b[i+1:]
	}
	return n, nil
}

func (s *stderrLog) emit(line []byte) {
	l := strings.TrimRight(string(line), "\r")
	s.log.Warn("processor stderr", "pid", s.pid, "line", l)
	if len(l) > 500 {
		l = l[:500] + "…"
	}
	s.lines = append(s.lines, l)
	if len(s.lines) > stderrTailSize {
		s.lines = s.lines[1:]
	}
}

// tail returns the last lines of stderr (an unfinished one included),
// joined with " | ".
func (s *stderrLog) tail() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	lines := s.lines
	if len(s.part) > 0 {
		lines = append(lines[:len(lines):len(lines)], string(s.part))
	}
	return strings.Join(lines, " | ")
}
