package pipeline

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
)

// ExecPrefix names the exec processor family: the processor
// "exec:python3 score.py" runs `python3 score.py` as long-lived processes
// speaking JSON lines (see Exec). Registry.Lookup recognises it.
const ExecPrefix = "exec:"

// DefaultExecMaxLine is the longest line, in bytes, an exec processor sends
// or accepts (64 MiB).
const DefaultExecMaxLine = 64 << 20

// ExecOptions configure an Exec pool. The zero value is ready to use.
type ExecOptions struct {
	// PoolSize is the most processes running at once, each serving one
	// item at a time; 0 means DefaultExecPoolSize().
	PoolSize int
	// Logger receives the processes' stderr, one record per line at level
	// Warn with the command and pid; nil means slog.Default().
	Logger *slog.Logger
	// MaxLine is the longest line in bytes (without its newline) sent to or
	// read from a process; 0 means DefaultExecMaxLine.
	MaxLine int
	// Env names the variables of the worker's environment that processes
	// get besides ExecBaseEnv (a name ending in "*" stands for every name
	// with that prefix; "*" alone passes the whole environment). Nothing
	// else of it reaches them: not the worker's store credentials, not
	// TEMPORAL_API_KEY. See ValidateEnvName.
	Env []string
}

// DefaultExecPoolSize is the pool size of an exec processor unless told
// otherwise: the number of CPUs, at least 8.
func DefaultExecPoolSize() int { return max(8, runtime.NumCPU()) }

// Exec is a Processor that hands items to a pool of long-lived processes
// of one command, speaking JSON lines over stdin and stdout.
//
// The protocol: batchpipe writes each item to a process's stdin as one
// line of compact JSON and waits for exactly one line on its stdout, the
// answer to that item (a process gets the next item only after answering).
// The answer is a JSON object, either
//
//	{"output": <any JSON value>}
//	{"error": {"message": "why", "permanent": true}}
//
// An error is retried (with backoff, up to the batch's item attempts)
// unless "permanent" is true; "error" may also be a bare string, a
// retryable error with that message. Other keys are ignored. The process
// must flush stdout after each line and should write diagnostics to
// stderr, which goes to the worker's log, line by line.
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
// read some of it, cannot be told from that item's answer; the real answer
// is then the stray output that fails the item after.) Either way the
// next item gets a fresh process. A process
// that served items may also end its life between items: when it exits
// with status 0 without answering the item just handed to it, the item
// goes to a new process, once, without failing. A command that cannot be
// started (not found, not executable) fails items permanently. At Close
// each process gets EOF on stdin and a moment to exit before it is killed.
// On Linux each process runs in a process group of its own, which is
// killed as soon as the process ends, killed or not: the children it
// started (say, under sh -c) are not left behind. A process's environment
// is ExecBaseEnv's part of the worker's plus the variables ExecOptions.Env
// names, nothing more (its stderr goes to the log, so a process that
// printed the worker's credentials would leak them).
type Exec struct {
	command string   // as given, for messages
	argv    []string // split command line
	opts    ExecOptions
	log     *slog.Logger

	slots chan struct{} // one token per request in flight (≤ PoolSize)

	mu     sync.Mutex
	idle   []*execProc            // started, waiting for an item (a stack)
	procs  map[*execProc]struct{} // every live process, idle or busy
	closed bool
}

// NewExec returns an exec processor for command, a command line split into
// program and arguments like a shell would split words (see Lookup's
// "exec:CMD"), run without a shell. No process starts until the first item.
func NewExec(command string, opts ExecOptions) (*Exec, error) {
	argv, err := splitCommand(command)
	if err != nil {
		return nil, fmt.Errorf("exec processor %q: %v", command, err)
	}
	if len(argv) == 0 {
		return nil, fmt.Errorf("exec processor: empty command (use exec:PROGRAM ARGS...)")
	}
	if opts.PoolSize <= 0 {
		opts.PoolSize = DefaultExecPoolSize()
	}
	if opts.MaxLine <= 0 {
		opts.MaxLine = DefaultExecMaxLine
	}
	lg := opts.Logger
	if lg == nil {
		lg = slog.Default()
	}
	return &Exec{
		command: command, argv: argv, opts: opts,
		log:   lg.With("command", command),
		slots: make(chan struct{}, opts.PoolSize),
		procs: map[*execProc]struct{}{},
	}, nil
}

// Process sends input to an idle process (starting one if fewer than
// PoolSize run) and returns its answer.
func (e *Exec) Process(ctx context.Context, input json.RawMessage) (json.RawMessage, error) {
	release, err := e.acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer release()
	return e.processAcquired(ctx, input)
}

// pooled is a processor that serves a bounded number of items at once. The
// shard activity takes a slot (acquire) before an attempt's timeout starts
// and then calls processAcquired, so that --item-timeout bounds the work on
// an item and not its wait behind others.
type pooled interface {
	acquire(ctx context.Context) (release func(), err error)
	processAcquired(ctx context.Context, input json.RawMessage) (json.RawMessage, error)
}

var _ pooled = (*Exec)(nil)

// acquire waits for one of the PoolSize slots.
func (e *Exec) acquire(ctx context.Context) (func(), error) {
	select {
	case e.slots <- struct{}{}:
		return func() { <-e.slots }, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("exec %q: waiting for a free process: %w", e.command, ctx.Err())
	}
}

// processAcquired is Process for a caller that holds a slot.
func (e *Exec) processAcquired(ctx context.Context, input json.RawMessage) (json.RawMessage, error) {
	line := []byte(input)
	if bytes.ContainsAny(line, "\r\n") {
		var buf bytes.Buffer
		if err := json.Compact(&buf, line); err != nil {
			return nil, Permanent(fmt.Errorf("exec %q: input is not valid JSON: %v", e.command, err))
		}
		line = buf.Bytes()
	}
	if len(line) > e.opts.MaxLine {
		return nil, Permanent(fmt.Errorf("exec %q: input of %d bytes is longer than the %d-byte line limit", e.command, len(line), e.opts.MaxLine))
	}
	for try := 0; ; try++ {
		p, err := e.take()
		if err != nil {
			return nil, err
		}
		out, err, healthy := p.roundTrip(ctx, line)
		if healthy {
			p.served++
			e.put(p)
			return out, err
		}
		e.discard(p)
		if try == 0 && p.served > 0 && p.leftCleanly && ctx.Err() == nil {
			// It served items and exited with status 0 without a word
			// on this one: it ended its life between items (say, after
			// serving a number of them), so the item is not to blame.
			e.log.Debug("exec processor process exited between items; using a new one", "pid", p.cmd.Process.Pid, "served", p.served)
			continue
		}
		return out, err
	}
}

// take returns an idle live process or starts one. The caller holds a slot,
// so at most PoolSize processes exist.
func (e *Exec) take() (*execProc, error) {
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

func (e *Exec) put(p *execProc) {
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
func (e *Exec) discard(p *execProc) {
	e.mu.Lock()
	delete(e.procs, p)
	e.mu.Unlock()
	p.stop(0)
}

// Close stops every process: stdin is closed, and a process still running
// a second later is killed. Items in flight fail; later ones fail too.
func (e *Exec) Close() error {
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

// execProc is one running process of an Exec.
type execProc struct {
	e      *Exec
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
	served      int  // items answered
	leftCleanly bool // exited with status 0 before reading a byte of an answer
}

func (e *Exec) start() (*execProc, error) {
	cmd := exec.Command(e.argv[0], e.argv[1:]...)
	cmd.Env = execEnviron(os.Environ(), e.opts.Env)
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
			return nil, Permanent(fmt.Errorf("exec %q: cannot start: %v", e.command, err))
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

// roundTrip writes one line and reads one answer. healthy reports whether
// the process can serve another item.
func (p *execProc) roundTrip(ctx context.Context, line []byte) (out json.RawMessage, err error, healthy bool) {
	// Whatever the process wrote since its last answer (or since it
	// started) is no answer to this item, nor to any: a protocol error.
	if p.outputWaiting() {
		return nil, p.strayOutput(nil, "after"), false
	}
	type answer struct {
		line []byte
		werr error // writing the item
		rerr error // reading the answer
	}
	ch := make(chan answer, 1)
	go func() {
		msg := make([]byte, len(line)+1)
		copy(msg, line)
		msg[len(line)] = '\n'
		if _, err := p.stdin.Write(msg); err != nil {
			ch <- answer{werr: err}
			return
		}
		l, err := readLine(p.r, p.e.opts.MaxLine)
		ch <- answer{line: l, rerr: err}
	}()
	var a answer
	select {
	case a = <-ch:
	case <-ctx.Done():
		// Its state is unknown: kill it (unblocking the goroutine) and let
		// the next item start afresh.
		p.stop(0)
		<-ch
		return nil, fmt.Errorf("exec %q: no answer from pid %d (killed): %w", p.e.command, p.cmd.Process.Pid, ctx.Err()), false
	}
	switch {
	case a.werr != nil || (a.rerr != nil && !errors.Is(a.rerr, errLineTooLong)):
		return nil, p.died(a.werr != nil, a.rerr), false
	case a.rerr != nil:
		p.stop(0)
		return nil, Permanent(fmt.Errorf("exec %q: answer line longer than %d bytes (pid %d killed)", p.e.command, p.e.opts.MaxLine, p.cmd.Process.Pid)), false
	}
	// The answer is the one line the process wrote for the item: anything
	// read with it makes it suspect (what comes later is found before the
	// next item), and so does an item still wholly unread (the line was
	// written before the process read a byte of the item, so it answers
	// something else). The checks cost one system call per item, and the
	// one before writing another (the Buffered checks cost none).
	if p.r.Buffered() > 0 {
		return nil, p.strayOutput(a.line, "with"), false
	}
	if n, ok := pipeUnread(p.stdinRC); ok && n == len(line)+1 {
		return nil, p.strayOutput(a.line, "before"), false
	}
	return p.decode(a.line)
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
	case <-time.After(time.Second): // closed stdout but still running
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

// decode turns an answer line into the item's output or error.
func (p *execProc) decode(line []byte) (json.RawMessage, error, bool) {
	var ans map[string]json.RawMessage
	if err := json.Unmarshal(line, &ans); err != nil || ans == nil {
		p.stop(0)
		return nil, fmt.Errorf(`exec %q: process %d answered %s, not a JSON object like {"output": ...} or {"error": {...}} (it was killed and will be restarted; write logs to stderr, not stdout)`,
			p.e.command, p.cmd.Process.Pid, snippet(line)), false
	}
	if raw, ok := ans["error"]; ok && !bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
		var msg string
		var obj struct {
			Message   string `json:"message"`
			Permanent bool   `json:"permanent"`
		}
		if json.Unmarshal(raw, &msg) == nil {
			obj.Message = msg
		} else if err := json.Unmarshal(raw, &obj); err != nil {
			p.stop(0)
			return nil, fmt.Errorf(`exec %q: process %d answered with "error": %s; want {"message": "...", "permanent": true|false} or a string (it was killed and will be restarted)`,
				p.e.command, p.cmd.Process.Pid, snippet(raw)), false
		}
		if obj.Message == "" {
			obj.Message = fmt.Sprintf("exec %q: the process reported an error without a message", p.e.command)
		}
		if obj.Permanent {
			return nil, Permanent(errors.New(obj.Message)), true
		}
		return nil, errors.New(obj.Message), true
	}
	out, ok := ans["output"]
	if !ok {
		p.stop(0)
		return nil, fmt.Errorf(`exec %q: process %d answered %s, with neither "output" nor "error" (it was killed and will be restarted)`,
			p.e.command, p.cmd.Process.Pid, snippet(line)), false
	}
	return out, nil, true
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

// splitCommand splits a command line into words the way a POSIX shell
// splits simple words: blanks separate words, 'single quotes' keep
// everything literally, "double quotes" keep everything but \" \\ \$ \`
// escapes, and a backslash outside quotes escapes the next character.
// There is no expansion of variables, globs or ~, and no pipes or
// redirections: for those, run a shell (exec:sh -c '...').
func splitCommand(s string) ([]string, error) {
	var words []string
	var w strings.Builder
	inWord := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			if inWord {
				words = append(words, w.String())
				w.Reset()
				inWord = false
			}
		case c == '\'':
			inWord = true
			j := strings.IndexByte(s[i+1:], '\'')
			if j < 0 {
				return nil, errors.New("unterminated single quote")
			}
			w.WriteString(s[i+1 : i+1+j])
			i += j + 1
		case c == '"':
			inWord = true
			i++
			for ; i < len(s) && s[i] != '"'; i++ {
				if s[i] == '\\' && i+1 < len(s) && strings.IndexByte("\"\\$`", s[i+1]) >= 0 {
					i++
				}
				w.WriteByte(s[i])
			}
			if i >= len(s) {
				return nil, errors.New("unterminated double quote")
			}
		case c == '\\':
			inWord = true
			if i+1 >= len(s) {
				return nil, errors.New("trailing backslash")
			}
			i++
			w.WriteByte(s[i])
		default:
			inWord = true
			w.WriteByte(c)
		}
	}
	if inWord {
		words = append(words, w.String())
	}
	return words, nil
}

// execPools caches a Registry's exec processors, one pool per command.
type execPools struct {
	mu    sync.Mutex
	opts  ExecOptions
	pools map[string]*Exec
}

// exec returns the pool for command, creating it on first use.
func (x *execPools) exec(command string) (*Exec, error) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if e, ok := x.pools[command]; ok {
		return e, nil
	}
	e, err := NewExec(command, x.opts)
	if err != nil {
		return nil, err
	}
	if x.pools == nil {
		x.pools = map[string]*Exec{}
	}
	x.pools[command] = e
	return e, nil
}

// SetExecOptions sets the options of the exec processors (names
// "exec:CMD") that Lookup creates from now on; pools already created keep
// theirs.
func (r *Registry) SetExecOptions(o ExecOptions) {
	r.exec.mu.Lock()
	defer r.exec.mu.Unlock()
	r.exec.opts = o
}

// Close stops the processes of every exec processor Lookup created (see
// Exec.Close). Call it when the worker has stopped; the registry stays
// usable, and a later Lookup starts new pools.
func (r *Registry) Close() error {
	r.exec.mu.Lock()
	pools := r.exec.pools
	r.exec.pools = nil
	r.exec.mu.Unlock()
	var errs []error
	for _, e := range pools {
		errs = append(errs, e.Close())
	}
	return errors.Join(errs...)
}
