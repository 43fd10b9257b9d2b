package execproc_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/batchpipe/batchpipe/execproc"
	"github.com/batchpipe/batchpipe/internal/testinfra"
	"github.com/batchpipe/batchpipe/pipeline"
)

// scriptPool is a pool of one Python process running body, which reads
// the lines it is sent from the variable line.
func scriptPool(t *testing.T, body string) *execproc.Pool {
	t.Helper()
	e, err := execproc.New(testinfra.Python()+" -c '"+strings.ReplaceAll(body, "'", `'\''`)+"'", execproc.Options{PoolSize: 1, Logger: quietLog})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

// "retry_after_ms" becomes a pipeline.RetryAfter error of that wait.
func TestExecRetryAfter(t *testing.T) {
	e := scriptPool(t, `
import json, sys
for line in sys.stdin:
    print(json.dumps({"error": {"message": "quota", "retry_after_ms": 2500}}), flush=True)
`)
	_, err := callExec(t, e, 10*time.Second, `{"n":1}`)
	if d, ok := pipeline.RetryAfterOf(err); !ok || d != 2500*time.Millisecond || err.Error() != "quota" || pipeline.IsPermanent(err) {
		t.Fatalf("error %v: retry after %v %v", err, d, ok)
	}
}

// With item context a process gets the envelope, and an answer echoing
// another index is refused (and the process replaced).
func TestExecItemContextEnvelope(t *testing.T) {
	e := scriptPool(t, `
import json, sys
for line in sys.stdin:
    env = json.loads(line)
    idx = env["index"] + env["input"].get("skew", 0)
    print(json.dumps({"index": idx, "output": env}), flush=True)
`)
	p := e.ForBatch(pipeline.Options{ItemContext: true})
	it := pipeline.Item{BatchID: "b1", Shard: 2, Index: 41, Attempt: 3}
	out, err := p.Process(pipeline.WithItem(context.Background(), it), json.RawMessage(`{"x": 1}`))
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"batch_id": "b1", "shard": 2, "index": 41, "attempt": 3, "key": "b1/41", "input": {"x": 1}}`; string(out) != want {
		t.Fatalf("envelope %s, want %s", out, want)
	}
	_, err = p.Process(pipeline.WithItem(context.Background(), it), json.RawMessage(`{"skew": 1}`))
	if err == nil || !strings.Contains(err.Error(), "answered for index 42 while given index 41") {
		t.Fatalf("skewed answer: %v", err)
	}
	if _, err := p.Process(pipeline.WithItem(context.Background(), it), json.RawMessage(`{}`)); err != nil {
		t.Fatalf("after a refused answer: %v", err)
	}
}

// A call of many items is one array line, answered by one array; other
// answers fail every item of the call, saying what came back.
func TestExecArrays(t *testing.T) {
	e := scriptPool(t, `
import json, sys
for line in sys.stdin:
    items = json.loads(line)
    mode = items[0].get("mode")
    out = [{"output": x["n"] * 2} for x in items]
    if mode == "short":
        out = out[1:]
    if mode == "object":
        out = {"output": 1}
    if mode == "mixed":
        out[1] = {"error": {"message": "second is bad", "permanent": True}}
    print(json.dumps(out), flush=True)
`)
	call := func(items ...string) []pipeline.Outcome {
		var its []pipeline.Item
		for i, s := range items {
			its = append(its, pipeline.Item{Index: int64(i), Input: json.RawMessage(s)})
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return e.ProcessBatch(ctx, its)
	}
	got := call(`{"n":1}`, `{"n":2}`, `{"n":3}`)
	if len(got) != 3 || string(got[0].Output) != "2" || string(got[2].Output) != "6" || got[1].Err != nil {
		t.Fatalf("outcomes %+v", got)
	}
	got = call(`{"n":1,"mode":"mixed"}`, `{"n":2}`, `{"n":3}`)
	if got[0].Err != nil || !pipeline.IsPermanent(got[1].Err) || got[2].Err != nil {
		t.Fatalf("mixed outcomes %+v", got)
	}
	for mode, want := range map[string]string{"short": "answered 2 answers to a call of 3 items", "object": "not a JSON array of 3 answers"} {
		for i, o := range call(`{"n":1,"mode":"`+mode+`"}`, `{"n":2}`, `{"n":3}`) {
			if o.Err == nil || !strings.Contains(o.Err.Error(), want) {
				t.Fatalf("%s, item %d: %v, want %q", mode, i, o.Err, want)
			}
		}
	}
	// An item that is not JSON fails alone; the others are sent.
	got = call(`{"n":1}`, `{"n":`, `{"n":3}`)
	if got[0].Err != nil || !pipeline.IsPermanent(got[1].Err) || string(got[2].Output) != "6" {
		t.Fatalf("outcomes with a broken item %+v", got)
	}
}

// roundsScript reads stdin in chunks and answers each line, echoing its
// index (item context), saying how many lines came in the same read.
// Item 7 is answered twice when "twice" is set; "hang" hangs; "s" sleeps.
const roundsScript = `
import json, os, sys, time
buf = b""
while True:
    chunk = os.read(0, 1 << 16)
    if not chunk:
        break
    buf += chunk
    lines = buf.split(b"\n")
    buf = lines.pop()
    for line in lines:
        env = json.loads(line)
        item = env["input"]
        if item.get("hang"):
            time.sleep(60)
        time.sleep(item.get("s", 0.001))
        out = {"n": item["n"], "together": len(lines), "pid": os.getpid(), "batch": env["batch_id"]}
        a = json.dumps({"index": env["index"], "output": out}) + "\n"
        sys.stdout.write(a)
        if item["n"] == 7 and item.get("twice"):
            sys.stdout.write(a)
        sys.stdout.flush()
`

type roundAnswer struct {
	N, Together, Pid int
	Batch            string
}

// roundCall makes one call to p as the pipeline does: Acquire first (not
// under the item's timeout), then Process under it, with item context
// whose index is the item's n; an answer "retry after" (rounds ending
// under load) is waited out and the call made again, no attempt counted,
// as the pipeline does.
func roundCall(t *testing.T, e *execproc.Pool, batch string, timeout time.Duration, n int, extra string) (roundAnswer, error) {
	t.Helper()
	for range 1000 { // a call sent back a thousand times is an error
		a, err := roundCallOnce(e, batch, timeout, n, extra)
		if d, retry := pipeline.RetryAfterOf(err); retry {
			time.Sleep(d)
			continue
		}
		return a, err
	}
	return roundAnswer{}, fmt.Errorf("item %d: sent back to wait for a process 1000 times", n)
}

func roundCallOnce(e *execproc.Pool, batch string, timeout time.Duration, n int, extra string) (roundAnswer, error) {
	p, release, err := e.ForBatch(pipeline.Options{ItemContext: true}).(pipeline.Pool).Acquire(context.Background())
	if err != nil {
		return roundAnswer{}, err
	}
	defer release()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	ctx = pipeline.WithItem(ctx, pipeline.Item{BatchID: batch, Index: int64(n), Attempt: 1})
	var a roundAnswer
	out, err := p.Process(ctx, json.RawMessage(fmt.Sprintf(`{"n":%d%s}`, n, extra)))
	if err == nil {
		err = json.Unmarshal(out, &a)
	}
	return a, err
}

// Calls that wait for a busy process go to it together, in one write (a
// round), each getting its own answer, when the process echoes every
// item's index; an item the process hangs on fails alone: the items after
// it in its round go again, unblamed, on a new process.
func TestExecRounds(t *testing.T) {
	e := scriptPool(t, roundsScript)
	// One item first: rounds come only once items prove cheap and
	// answers echo their index.
	if _, err := roundCall(t, e, "b", 10*time.Second, 100000, ""); err != nil {
		t.Fatal(err)
	}
	const callers, each = 16, 20
	var mu sync.Mutex
	maxTogether := 0
	var wg sync.WaitGroup
	for c := range callers {
		wg.Go(func() {
			for i := range each {
				n := c*1000 + i
				a, err := roundCall(t, e, "b", 20*time.Second, n, "")
				if err != nil || a.N != n {
					t.Errorf("item %d: %+v %v", n, a, err)
					return
				}
				mu.Lock()
				maxTogether = max(maxTogether, a.Together)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if maxTogether < 2 {
		t.Fatalf("%d callers on one process: at most %d lines came in one read, want rounds of several", callers, maxTogether)
	}
	t.Logf("up to %d lines in one read", maxTogether)

	// A round with an item that hangs: it times out, every other item
	// succeeds, unblamed, and the process is replaced. Rounds of 4-ms
	// items keep the process busy while items 0-11 queue up in order, to
	// go in one round (3 in its middle) when it is free. (Under load
	// rounds may end and the items go one at a time, item 3 last, sent
	// back to wait: the outcomes are the same, so they are what is
	// checked.)
	first, err := roundCall(t, e, "b", 10*time.Second, 100001, "")
	if err != nil {
		t.Fatal(err)
	}
	for i := range 15 {
		wg.Go(func() { roundCall(t, e, "b", 10*time.Second, 200000+i, `,"s":0.004`) })
	}
	time.Sleep(10 * time.Millisecond)
	errs := make([]error, 12)
	for i := range errs {
		wg.Go(func() {
			extra, timeout := "", 20*time.Second
			if i == 3 {
				extra, timeout = `,"hang":true`, 3*time.Second
			}
			_, errs[i] = roundCall(t, e, "b", timeout, i, extra)
		})
		time.Sleep(time.Millisecond)
	}
	wg.Wait()
	for i, err := range errs {
		if (i == 3) != (err != nil) || (i == 3 && !errors.Is(err, context.DeadlineExceeded)) {
			t.Fatalf("item %d: %v (only item 3, which hangs, should fail, with a deadline error)", i, err)
		}
	}
	// The pool has one process: the one item 3 hung on was killed.
	after, err := roundCall(t, e, "b", 10*time.Second, 100002, "")
	if err != nil {
		t.Fatal(err)
	}
	if after.Pid == first.Pid {
		t.Fatalf("process %d, which hung on item 3, still answers after its timeout", first.Pid)
	}
}

// A process that answers one item twice, in rounds: no item is ever given
// another item's answer (the echoed index gives the extra line away, and
// the items after it go again).
func TestExecRoundsExtraLine(t *testing.T) {
	e := scriptPool(t, roundsScript)
	if _, err := roundCall(t, e, "b", 10*time.Second, 100000, ""); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var wrong, failed atomic.Int64
	for c := range 16 {
		wg.Go(func() {
			for i := range 30 {
				n := c*1000 + i
				if i%10 == 0 {
					n = 7 // answered twice
				}
				a, err := roundCall(t, e, "b", 20*time.Second, n, `,"twice":true`)
				switch {
				case err != nil:
					failed.Add(1)
				case a.N != n:
					wrong.Add(1)
					t.Errorf("item %d got item %d's answer", n, a.N)
				}
			}
		})
	}
	wg.Wait()
	if wrong.Load() > 0 {
		t.Fatalf("%d items got another item's answer", wrong.Load())
	}
	if failed.Load() == 0 {
		t.Fatalf("no item failed though item 7 is answered twice, 48 times")
	}
	t.Logf("%d of 480 calls failed (item 7's extra line), none got a wrong answer", failed.Load())

	// Two batches on one process, their indexes the same: item 7's extra
	// line, with its index, never passes for the other batch's item 7.
	var wrongBatch atomic.Int64
	for c := range 16 {
		wg.Go(func() {
			batch := []string{"a", "b"}[c%2]
			for i := range 30 {
				n := 1 + i%10 // items 1-10 of both batches, 7 answered twice
				a, err := roundCall(t, e, batch, 20*time.Second, n, `,"twice":true`)
				if err == nil && (a.N != n || a.Batch != batch) {
					wrongBatch.Add(1)
					t.Errorf("item %d of batch %s got item %d of batch %s's answer", n, batch, a.N, a.Batch)
				}
			}
		})
	}
	wg.Wait()
	if wrongBatch.Load() > 0 {
		t.Fatalf("%d items got another batch's answer", wrongBatch.Load())
	}
}

// Cheap items (10 s timeout), then slow ones (300 ms, 2 s timeout, 2
// processes; a round of 16 takes 4.8 s): the
// calls let in for rounds do not wait out their timeouts behind slow
// items; they go back to wait for a process one at a time, unblamed.
func TestExecRoundsTurnSlow(t *testing.T) {
	e, err := execproc.New(testinfra.Python()+" -c '"+strings.ReplaceAll(roundsScript, "'", `'\''`)+"'", execproc.Options{PoolSize: 2, Logger: quietLog})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	call := func(n int, extra string, timeout time.Duration) error {
		_, err := roundCall(t, e, "b", timeout, n, extra)
		return err
	}
	var wg sync.WaitGroup
	for c := range 8 {
		wg.Go(func() {
			for i := range 50 {
				if err := call(c*1000+i, "", 10*time.Second); err != nil {
					t.Errorf("cheap item: %v", err)
				}
			}
		})
	}
	wg.Wait()
	var failed atomic.Int64
	for c := range 24 {
		wg.Go(func() {
			for i := range 2 {
				if err := call(c*1000+i, `,"s":0.3`, 2*time.Second); err != nil {
					failed.Add(1)
					t.Errorf("slow item: %v", err)
				}
			}
		})
	}
	wg.Wait()
	if failed.Load() > 0 {
		t.Fatalf("%d of 48 slow calls failed", failed.Load())
	}
}

// Once a command's answers have echoed their index, an "output" answer
// without one is refused (a stray line would otherwise be taken for the
// item's answer) and the process replaced; an "error" answer without one
// still fails only its item, as the process said.
func TestExecEchoOnceEchoAlways(t *testing.T) {
	e := scriptPool(t, `
import json, os, sys
for line in sys.stdin:
    env = json.loads(line)
    item = env["input"]
    a = {"output": {"n": item["n"], "pid": os.getpid()}}
    if item.get("err"):
        a = {"error": {"message": "bad item %d" % item["n"], "permanent": True}}
    if not item.get("bare"):
        a["index"] = env["index"]
    print(json.dumps(a), flush=True)
`)
	// Before any answer echoed, one without the index is taken.
	a, err := roundCall(t, e, "b", 10*time.Second, 1, `,"bare":true`)
	if err != nil || a.N != 1 {
		t.Fatalf("item 1 (no echo seen yet): %+v, %v", a, err)
	}
	if a, err = roundCall(t, e, "b", 10*time.Second, 2, ""); err != nil || a.N != 2 {
		t.Fatalf("item 2: %+v, %v", a, err)
	}
	first := a.Pid
	_, err = roundCall(t, e, "b", 10*time.Second, 3, `,"bare":true`)
	if err == nil || pipeline.IsPermanent(err) || !strings.Contains(err.Error(), `without the "index"`) {
		t.Fatalf("item 3 answered without its index after echoes: %v (permanent %v), want a retryable protocol error", err, pipeline.IsPermanent(err))
	}
	if a, err = roundCall(t, e, "b", 10*time.Second, 4, ""); err != nil || a.N != 4 || a.Pid == first {
		t.Fatalf("item 4: %+v, %v; want its answer from a new process (not pid %d)", a, err, first)
	}
	_, err = roundCall(t, e, "b", 10*time.Second, 5, `,"bare":true,"err":true`)
	if err == nil || !pipeline.IsPermanent(err) || !strings.Contains(err.Error(), "bad item 5") {
		t.Fatalf("item 5's own error without an index: %v, want it as the process said", err)
	}
}

// A process that prints an answer-shaped line of its own before each
// answer gets that line taken for an item's answer only until its real
// answers, out of step, show that the command echoes the index: from then
// on no item takes such a line.
func TestExecLineBeforeEachAnswer(t *testing.T) {
	e := scriptPool(t, `
import json, sys, time
for line in sys.stdin:
    env = json.loads(line)
    print(json.dumps({"output": {"n": -1}}), flush=True)
    time.sleep(0.3)
    print(json.dumps({"index": env["index"], "output": {"n": env["input"]["n"]}}), flush=True)
`)
	taken := 0
	for n := 1; n <= 5; n++ {
		a, err := roundCall(t, e, "b", 10*time.Second, n, "")
		switch {
		case err == nil && a.N == -1:
			taken++
			if n > 2 {
				t.Fatalf("item %d took the line before the answer for its answer after echoes were seen", n)
			}
		case err == nil:
			t.Fatalf("item %d answered %+v", n, a)
		case pipeline.IsPermanent(err):
			t.Fatalf("item %d: %v, want a retryable protocol error", n, err)
		}
	}
	t.Logf("%d of the first items took the line before the answer", taken)
}
