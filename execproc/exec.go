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
	"strings"
	"sync"
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
// line of compact JSON and waits for exactly one line on its stdout, the
// answer to that item (a process gets the next item only after answering).
// The answer is a JSON object, either
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
// stdout after each line and should write diagnostics to stderr, which
// goes to the worker's log, line by line.
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
// be written), or a line written before the process read a byte of the
// item it would be taken for; none of these is taken for an answer. (A
// line written later still, once the process was handed the next item and
// read some of it, cannot be told from that item's answer without the
// item context's index echo; the real answer is then the stray output
// that fails the item after.) Either way the next item gets a fresh
// process. A process that served items may also end its life between
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

	slots chan struct{} // one token per request in flight (≤ PoolSize)

	mu     sync.Mutex
	idle   []*execProc            // started, waiting for an item (a stack)
	procs  map[*execProc]struct{} // every live process, idle or busy
	closed bool
}

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
		log:   lg.With("command", command),
		slots: make(chan struct{}, opts.PoolSize),
		procs: map[*execProc]struct{}{},
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
		return func() { <-e.slots }, nil
	case <-ctx.Done():
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
	err = v.e.exchange(ctx, line, func(p *execProc, answer []byte) bool {
		var ok bool
		got, ok = v.decode(p, answer, it.Index)
		return ok
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
	err := v.e.exchange(ctx, line.Bytes(), func(p *execProc, answer []byte) bool {
		var arr []json.RawMessage
		if json.Unmarshal(answer, &arr) != nil || arr == nil {
			callErr = fmt.Errorf(`exec %q: process %d answered %s to a call of %d items, not a JSON array of %d answers like [{"output": ...}, ...] (it was killed and will be restarted)`,
				v.e.command, p.cmd.Process.Pid, snippet(answer), len(sent), len(sent))
			return false
		}
		if len(arr) != len(sent) {
			callErr = fmt.Errorf("exec %q: process %d answered %d answers to a call of %d items: %s", v.e.command, p.cmd.Process.Pid, len(arr), len(sent), snippet(answer))
			return true
		}
		for n, raw := range arr {
			o, ok := v.decode(p, raw, items[sent[n]].Index)
			if !ok {
				callErr = o.Err
				return false
			}
			outs[sent[n]] = o
		}
		return true
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

// exchange sends line to a process and hands its answer line to decode,
// which reports whether the answer was well formed (else the process is
// discarded). The error is the exchange's own: the process died, wrote
// stray output, or the context ended.
func (e *Pool) exchange(ctx context.Context, line []byte, decode func(p *execProc, answer []byte) bool) error {
	for {
		p, err := e.take()
		if err != nil {
			return err
		}
		answer, err := p.roundTrip(ctx, line)
		if err == nil && decode(p, answer) {
			p.served++
			e.put(p)
			return nil
		}
		e.discard(p)
		if err == nil {
			return nil // decode has the error
		}
		if p.served > 0 && p.leftCleanly && ctx.Err() == nil {
			// It served items and exited with status 0 without a word
			// on this one: it ended its life between items (say, after
			// serving a number of them), so the item is not to blame.
			// More idle processes may have ended alike (they serve the
			// same number of items each); a new one has served none, so
			// this ends there at the latest.
			e.log.Debug("exec processor process exited between items; using a new one", "pid", p.cmd.Process.Pid, "served", p.served)
			continue
		}
		return err
	}
}

// take returns an idle live process or starts one. The caller holds a slot,
// so at most PoolSize processes exist.
func (e *Pool) take() (*execProc, error) {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil, fmt.Errorf("exec %q: the processor is closed (worker shutting down)", e.command)
	}
	for len(e.idle) > 0 {
		p := e.idle[len(e.idle)-1]
		e.idle = e.idle[:len(e.idle)-1]
		select {
		case <-p.exited: // died while idle: replace it
			delete(e.procs, p)
			e.mu.Unlock()
			p.stop(0)
			e.mu.Lock()
			if e.closed {
				e.mu.Unlock()
				return nil, fmt.Errorf("exec %q: the processor is closed (worker shutting down)", e.command)
			}
			continue
		default:
		}
		e.mu.Unlock()
		return p, nil
	}
	e.mu.Unlock()

	p, err := e.start()
	if err != nil {
		return nil, err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		go p.stop(0)
		return nil, fmt.Errorf("exec %q: the processor is closed (worker shutting down)", e.command)
	}
	e.procs[p] = struct{}{}
	return p, nil
}

func (e *Pool) put(p *execProc) {
	e.mu.Lock()
	if !e.closed {
		e.idle = append(e.idle, p)
		e.mu.Unlock()
		return
	}
	delete(e.procs, p)
	e.mu.Unlock()
	p.stop(0)
}

// discard kills p and waits for it, so a replacement never runs beside it.
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
	e.mu.Unlock()
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

	// Used only by the request holding the process:
	msg         []byte // the line being sent, newline included
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

// roundTrip writes one line and reads one answer line. After an error the
// process cannot serve again.
func (p *execProc) roundTrip(ctx context.Context, line []byte) ([]byte, error) {
	// Whatever the process wrote since its last answer (or since it
	// started) is no answer to this item, nor to any: a protocol error.
	if p.outputWaiting() {
		return nil, p.strayOutput(nil, "after")
	}
	type answer struct {
		line []byte
		werr error // writing the item
		rerr error // reading the answer
	}
	// Write and read here, with no goroutine of their own: the end of ctx
	// sets the pipes' deadlines to now, which ends a blocked write or read.
	stop := context.AfterFunc(ctx, func() {
		now := time.Now()
		p.stdin.SetWriteDeadline(now)
		p.stdout.SetReadDeadline(now)
	})
	p.msg = append(append(p.msg[:0], line...), '\n')
	var a answer
	if _, a.werr = p.stdin.Write(p.msg); a.werr == nil {
		a.line, a.rerr = readLine(p.r, p.e.opts.MaxLine)
	}
	if !stop() {
		// Its state is unknown: kill it and let the next item start afresh.
		p.stop(0)
		return nil, fmt.Errorf("exec %q: no answer from pid %d (killed): %w", p.e.command, p.cmd.Process.Pid, ctx.Err())
	}
	switch {
	case a.werr != nil || (a.rerr != nil && !errors.Is(a.rerr, errLineTooLong)):
		return nil, p.died(a.werr != nil, a.rerr)
	case a.rerr != nil:
		p.stop(0)
		return nil, pipeline.Permanent(fmt.Errorf("exec %q: answer line longer than %d bytes (pid %d killed)", p.e.command, p.e.opts.MaxLine, p.cmd.Process.Pid))
	}
	// The answer is the one line the process wrote for the item: anything
	// read with it makes it suspect (what comes later is found before the
	// next item), and so does an item still wholly unread (the line was
	// written before the process read a byte of the item, so it answers
	// something else). The checks cost one system call per item, and the
	// one before writing another (the Buffered checks cost none).
	if p.r.Buffered() > 0 {
		return nil, p.strayOutput(a.line, "with")
	}
	if n, ok := pipeUnread(p.stdinRC); ok && n == len(line)+1 {
		return nil, p.strayOutput(a.line, "before")
	}
	return a.line, nil
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
	return fmt.Errorf("exec %q: process %d %s (it was killed and will be restarted; stdout is for answers, one line per item: write logs to stderr)", p.e.command, pid, what)
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

// decode turns one answer into the item's outcome; ok is false when the
// answer is malformed (the outcome's error says how): p is then killed.
// With item context an answer that echoes another item's index is
// malformed.
func (v view) decode(p *execProc, raw []byte, index int64) (o pipeline.Outcome, ok bool) {
	bad := func(format string, args ...any) (pipeline.Outcome, bool) {
		p.stop(0)
		return pipeline.Outcome{Err: fmt.Errorf(format, args...)}, false
	}
	cmd, pid := v.e.command, p.cmd.Process.Pid
	var ans map[string]json.RawMessage
	if err := json.Unmarshal(raw, &ans); err != nil || ans == nil {
		return bad(`exec %q: process %d answered %s, not a JSON object like {"output": ...} or {"error": {...}} (it was killed and will be restarted; write logs to stderr, not stdout)`, cmd, pid, snippet(raw))
	}
	if echo, has := ans["index"]; has && v.itemContext {
		var got int64
		if json.Unmarshal(echo, &got) != nil || got != index {
			return bad("exec %q: process %d answered for index %.40s while given index %d: an answer out of step with its items (it was killed and will be restarted)", cmd, pid, echo, index)
		}
	}
	if e, has := ans["error"]; has && !bytes.Equal(bytes.TrimSpace(e), []byte("null")) {
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
		return pipeline.Outcome{Err: err}, true
	}
	out, has := ans["output"]
	if !has {
		return bad(`exec %q: process %d answered %s, with neither "output" nor "error" (it was killed and will be restarted)`, cmd, pid, snippet(raw))
	}
	return pipeline.Outcome{Output: out}, true
}

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
