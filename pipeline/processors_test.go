package pipeline_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.temporal.io/sdk/worker"

	"github.com/batchpipe/batchpipe/internal/testinfra"
	"github.com/batchpipe/batchpipe/manifests"
	"github.com/batchpipe/batchpipe/pipeline"
)

// callLog records the processor calls of the test processors below.
type callLog struct {
	mu    sync.Mutex
	times []time.Time // one per item handed out
	sizes []int       // one per call
}

func (l *callLog) add(items int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	for range items {
		l.times = append(l.times, now)
	}
	l.sizes = append(l.sizes, items)
}

func (l *callLog) reset() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.times, l.sizes = nil, nil
}

var (
	rateLog  callLog // "counted"
	batchLog callLog // "typed-batch"
)

type nIn struct {
	N int `json:"n"`
}

type nOut struct {
	Double int `json:"double"`
}

// registerContextProcessors adds the processors of this file to r:
// "itemctx" answers what ItemFrom says, "throttle" asks once to slow down
// on items marked "throttle", "counted" logs each call in rateLog, and
// "typed-batch" doubles n in calls of many items, logged in batchLog.
func registerContextProcessors(r *pipeline.Registry) {
	r.Register("itemctx", pipeline.ProcessorFunc(func(ctx context.Context, in json.RawMessage) (json.RawMessage, error) {
		it, ok := pipeline.ItemFrom(ctx)
		if !ok {
			return nil, pipeline.Permanent(errors.New("no item in the context"))
		}
		return json.Marshal(map[string]any{"batch_id": it.BatchID, "index": it.Index, "key": it.Key(), "input": it.Input})
	}))
	r.Register("throttle", pipeline.ProcessorFunc(func(ctx context.Context, in json.RawMessage) (json.RawMessage, error) {
		it, _ := pipeline.ItemFrom(ctx)
		var v struct{ Throttle bool }
		json.Unmarshal(in, &v)
		if v.Throttle && it.Attempt == 1 {
			return nil, pipeline.RetryAfter(errors.New("quota exceeded"), 1500*time.Millisecond)
		}
		return in, nil
	}))
	r.Register("counted", pipeline.ProcessorFunc(func(_ context.Context, in json.RawMessage) (json.RawMessage, error) {
		rateLog.add(1)
		return in, nil
	}))
	r.Register("typed-batch", pipeline.TypedBatch(func(_ context.Context, in []nIn) ([]nOut, error) {
		batchLog.add(len(in))
		out := make([]nOut, len(in))
		for i, v := range in {
			out[i].Double = 2 * v.N
		}
		return out, nil
	}))
}

func itemN(in json.RawMessage) int {
	var v nIn
	json.Unmarshal(in, &v)
	return v.N
}

// Every result of a batch carries its own batch id, index and key, as Go
// processors read them (ItemFrom) and exec processors get them
// (--item-context, with the index echoed in the answer).
func TestItemContextKeys(t *testing.T) {
	const n = 300
	input := makeItems(n, nil)
	want := func(id string) func(json.RawMessage) json.RawMessage {
		return func(in json.RawMessage) json.RawMessage {
			i := itemN(in)
			out, _ := json.Marshal(map[string]any{"batch_id": id, "index": i, "key": fmt.Sprintf("%s/%d", id, i), "input": json.RawMessage(in)})
			return out
		}
	}
	t.Run("go", func(t *testing.T) {
		tq := startWorker(t)
		o := smallOpts("itemctx", 40, 100)
		bt := runBatchOn(t, tq, fileStore(t), "ctx-go", input, o)
		if bt.err != nil {
			t.Fatal(bt.err)
		}
		checkAgainstInput(t, bt, bt.manifest(t), want("ctx-go"))
	})
	t.Run("exec", func(t *testing.T) {
		script := writeScript(t, "ctx.py", `
import json, sys
for line in sys.stdin:
    env = json.loads(line)
    out = {"batch_id": env["batch_id"], "index": env["index"], "key": env["key"], "input": env["input"]}
    print(json.dumps({"index": env["index"], "output": out}, sort_keys=True), flush=True)
`)
		tq := startExecWorker(t, 4, worker.Options{})
		o := smallOpts("exec:"+testinfra.Python()+" "+script, 40, 100)
		o.ItemContext = true
		bt := runBatchOn(t, tq, fileStore(t), "ctx-exec", input, o)
		if bt.err != nil {
			t.Fatal(bt.err)
		}
		checkAgainstInput(t, bt, bt.manifest(t), want("ctx-exec"))
	})
}

// An exec answer that echoes another item's index is not taken for the
// item's answer: the item fails (after its attempts), naming the index.
func TestItemContextWrongIndexFails(t *testing.T) {
	script := writeScript(t, "lag.py", `
import json, sys
for line in sys.stdin:
    env = json.loads(line)
    i = env["index"] + (1 if env["input"].get("lag") else 0)
    print(json.dumps({"index": i, "output": env["input"]}), flush=True)
`)
	tq := startExecWorker(t, 2, worker.Options{})
	o := smallOpts("exec:"+testinfra.Python()+" "+script, 50, 100)
	o.ItemContext, o.ItemAttempts = true, 2
	bt := runBatchOn(t, tq, fileStore(t), "ctx-lag", makeItems(100, func(i int) string {
		if i == 17 {
			return `,"lag":true`
		}
		return ""
	}), o)
	if bt.err != nil {
		t.Fatal(bt.err)
	}
	checkAgainstInput(t, bt, bt.manifest(t), func(in json.RawMessage) json.RawMessage {
		if itemN(in) == 17 {
			return nil
		}
		return in
	})
	f := bt.failures(t)
	if len(f) != 1 || f[0].Index != 17 || !strings.Contains(f[0].Error.Message, "answered for index 18 while given index 17") {
		t.Fatalf("failures %+v", f)
	}
}

// An exec processor that echoes the index (so its process gets cheap items
// in rounds, several lines per write) and answers every hundredth item
// twice: the extra line never becomes another item's output. It is found
// (the item it lands on fails an attempt, naming the index) and the items
// go again: every item that succeeds has its own output.
func TestItemContextRoundsDoubleAnswer(t *testing.T) {
	script := writeScript(t, "double.py", `
import json, sys
for line in sys.stdin:
    env = json.loads(line)
    a = json.dumps({"index": env["index"], "output": env["input"]})
    print(a, flush=True)
    if env["input"]["n"] % 100 == 7:
        print(a, flush=True)
`)
	tq := startExecWorker(t, 2, worker.Options{})
	o := smallOpts("exec:"+testinfra.Python()+" "+script, 500, 100)
	o.ItemContext, o.ItemParallelism, o.ItemAttempts = true, 16, 5
	const n = 3000
	bt := runBatchOn(t, tq, fileStore(t), "ctx-double", makeItems(n, nil), o)
	if bt.err != nil {
		t.Fatal(bt.err)
	}
	input := bytes.Split(bytes.TrimSpace(bt.input), []byte("\n"))
	var seen, retried, failed int
	for _, r := range bt.manifest(t).Results {
		for _, l := range decodeLines[manifests.ResultLine](t, readObject(t, bt.bucket, r.Key, r.Size, r.SHA256)) {
			seen++
			switch in := input[l.Index]; {
			case l.Status == manifests.ItemSucceeded && !bytes.Equal(l.Output, in):
				t.Fatalf("item %d succeeded with %s, want its own input %s", l.Index, l.Output, in)
			case l.Status == manifests.ItemFailed:
				failed++
				t.Logf("item %d failed after %d attempts: %s", l.Index, l.Attempts, l.Error.Message)
				if !strings.Contains(l.Error.Message, "more than one line") && !strings.Contains(l.Error.Message, "while given index") {
					t.Fatalf("item %d failed: %+v", l.Index, l.Error)
				}
			}
			if l.Attempts > 1 {
				retried++
			}
		}
	}
	if seen != n || retried < n/100/2 {
		t.Fatalf("%d lines, %d items retried; want %d lines, the extra lines found (~%d)", seen, retried, n, n/100)
	}
	t.Logf("%d of %d items retried, %d failed (%d answered twice)", retried, n, failed, n/100)
}

// A batched exec processor (Python, and sh with sed) gives the same result
// for every item as one item per call; Go's TypedBatch gets calls of up to
// ItemsPerCall items.
func TestItemsPerCallSameResults(t *testing.T) {
	const n = 503 // shards of 100: calls of 7 end short in every shard
	input := makeItems(n, nil)
	py := writeScript(t, "double.py", `
import json, sys
def answer(item):
    return {"output": {"double": 2 * item["n"]}}
for line in sys.stdin:
    v = json.loads(line)
    out = [answer(x) for x in v] if isinstance(v, list) else answer(v)
    print(json.dumps(out), flush=True)
`)
	// sed rewrites each {"n":N,"name":"item N"} as {"output":N}, in a line
	// of one item or in an array of many alike.
	sh := `exec:sh -c 'exec sed -u -e "s/{\"n\":\([0-9]*\),\"name\":\"item [0-9]*\"}/{\"output\":\1}/g"'`
	double := func(in json.RawMessage) json.RawMessage {
		return json.RawMessage(fmt.Sprintf(`{"double":%d}`, 2*itemN(in)))
	}
	bare := func(in json.RawMessage) json.RawMessage { return json.RawMessage(fmt.Sprint(itemN(in))) }
	tq := startExecWorker(t, 4, worker.Options{})
	for _, c := range []struct {
		name, processor string
		want            func(json.RawMessage) json.RawMessage
	}{{"python", "exec:" + testinfra.Python() + " " + py, double}, {"sh", sh, bare}} {
		for _, per := range []int{1, 7} {
			t.Run(fmt.Sprintf("%s/%d", c.name, per), func(t *testing.T) {
				o := smallOpts(c.processor, 100, 100)
				o.ItemsPerCall = per
				bt := runBatchOn(t, tq, fileStore(t), fmt.Sprintf("per-call-%s-%d", c.name, per), input, o)
				if bt.err != nil {
					t.Fatal(bt.err)
				}
				checkAgainstInput(t, bt, bt.manifest(t), c.want)
			})
		}
	}
	t.Run("go", func(t *testing.T) {
		batchLog.reset()
		o := smallOpts("typed-batch", 100, 100)
		o.ItemsPerCall = 10
		bt := runBatchOn(t, startWorker(t), fileStore(t), "per-call-go", input, o)
		if bt.err != nil {
			t.Fatal(bt.err)
		}
		checkAgainstInput(t, bt, bt.manifest(t), double)
		batchLog.mu.Lock()
		defer batchLog.mu.Unlock()
		if slices.Max(batchLog.sizes) != 10 || len(batchLog.sizes) != 5*10+1 {
			t.Fatalf("call sizes %v: want 51 calls of up to 10 (five shards of ten calls, and one of 3)", batchLog.sizes)
		}
	})
}

// The shipped example processor, examples/processors/upper.py, which
// answers every whole line it has read with one write: one item per call,
// several per call, and with item context at an item parallelism that
// gives it rounds, every item gets its own input upper-cased.
func TestUpperPyExample(t *testing.T) {
	const n = 1003
	upper, err := filepath.Abs("../examples/processors/upper.py")
	if err != nil {
		t.Fatal(err)
	}
	input := makeItems(n, nil)
	want := func(in json.RawMessage) json.RawMessage {
		i := itemN(in)
		return json.RawMessage(fmt.Sprintf(`{"n":%d,"name":"ITEM %d"}`, i, i))
	}
	tq := startExecWorker(t, 4, worker.Options{})
	for _, c := range []struct {
		name        string
		perCall     int
		itemContext bool
	}{{"one-per-call", 1, false}, {"seven-per-call", 7, false}, {"item-context", 1, true}, {"item-context-seven", 7, true}} {
		t.Run(c.name, func(t *testing.T) {
			o := smallOpts("exec:"+testinfra.Python()+" "+upper, 250, 100)
			o.ItemsPerCall, o.ItemContext, o.ItemParallelism = c.perCall, c.itemContext, 32
			bt := runBatchOn(t, tq, fileStore(t), "upper-"+c.name, input, o)
			if bt.err != nil {
				t.Fatal(bt.err)
			}
			checkAgainstInput(t, bt, bt.manifest(t), want)
		})
	}
}

// An exec answer of the wrong length fails the items of that call, and only
// those, saying what came back.
func TestItemsPerCallWrongLength(t *testing.T) {
	script := writeScript(t, "short.py", `
import json, sys
for line in sys.stdin:
    items = json.loads(line)
    out = [{"output": x["n"]} for x in items]
    if any(x.get("short") for x in items):
        out = out[:-1]
    print(json.dumps(out), flush=True)
`)
	tq := startExecWorker(t, 2, worker.Options{})
	o := smallOpts("exec:"+testinfra.Python()+" "+script, 50, 100)
	o.ItemsPerCall, o.ItemAttempts = 5, 2
	bt := runBatchOn(t, tq, fileStore(t), "per-call-short", makeItems(100, func(i int) string {
		if i == 57 {
			return `,"short":true`
		}
		return ""
	}), o)
	if bt.err != nil {
		t.Fatal(bt.err)
	}
	// Shard 1 is items 50..99, called 50-54, 55-59, ...: 57 spoils 55-59.
	checkAgainstInput(t, bt, bt.manifest(t), func(in json.RawMessage) json.RawMessage {
		if n := itemN(in); n < 55 || n > 59 {
			return json.RawMessage(fmt.Sprint(n))
		}
		return nil
	})
	for _, f := range bt.failures(t) {
		if !strings.Contains(f.Error.Message, "answered 4 answers to a call of 5 items") {
			t.Fatalf("item %d: %q, want it to say what came back", f.Index, f.Error.Message)
		}
	}
}

// A batch at --rate 200 hands out at most ~200 items in any second, all
// shards together, and does not run far below it.
func TestRateLimitsTheWholeBatch(t *testing.T) {
	rateLog.reset()
	const n, rate = 3000, 200
	o := smallOpts("counted", 100, 100)
	o.Concurrency, o.Rate = 4, rate
	tq := startWorker(t)
	start := time.Now()
	bt := runBatchOn(t, tq, fileStore(t), "rate-200", makeItems(n, nil), o)
	took := time.Since(start)
	if bt.err != nil {
		t.Fatal(bt.err)
	}
	checkAgainstInput(t, bt, bt.manifest(t), echo)
	rateLog.mu.Lock()
	times := slices.Clone(rateLog.times)
	rateLog.mu.Unlock()
	slices.SortFunc(times, func(a, b time.Time) int { return a.Compare(b) })
	most, j := 0, 0
	for i := range times { // the most items in any window [times[j], times[j]+1s)
		for times[i].Sub(times[j]) >= time.Second {
			j++
		}
		most = max(most, i-j+1)
	}
	t.Logf("%d items in %v; at most %d in one second", len(times), took.Round(time.Millisecond), most)
	if most > rate*12/10 {
		t.Errorf("%d items within one second, want at most ~%d", most, rate)
	}
	if span := times[len(times)-1].Sub(times[0]); span < 12*time.Second || span > 30*time.Second {
		t.Errorf("items handed out over %v, want about %v", span, time.Duration(n/rate)*time.Second)
	}
}

// An item whose processor asks to slow down (RetryAfter) is tried again no
// sooner than asked, and does not fail, even with one attempt allowed.
func TestRetryAfterDelaysAndDoesNotFail(t *testing.T) {
	o := smallOpts("throttle", 20, 100)
	o.ItemAttempts = 1
	bt := runBatchOn(t, startWorker(t), fileStore(t), "retry-after", makeItems(40, func(i int) string {
		if i%10 == 3 {
			return `,"throttle":true`
		}
		return ""
	}), o)
	if bt.err != nil {
		t.Fatal(bt.err)
	}
	m := bt.manifest(t)
	checkAgainstInput(t, bt, m, echo)
	for _, l := range bt.results(t) {
		throttled := l.Index%10 == 3
		if throttled && (l.Attempts != 2 || l.DurationMS < 1500) || !throttled && l.Attempts != 1 {
			t.Fatalf("item %d: %d attempts in %d ms", l.Index, l.Attempts, l.DurationMS)
		}
	}
}

// results reads every result line of bt's manifest, in order.
func (bt *batch) results(t *testing.T) []manifests.ResultLine {
	t.Helper()
	var all []manifests.ResultLine
	for _, r := range bt.manifest(t).Results {
		all = append(all, decodeLines[manifests.ResultLine](t, readObject(t, bt.bucket, r.Key, r.Size, r.SHA256))...)
	}
	return all
}

// failures reads bt's failures object.
func (bt *batch) failures(t *testing.T) []manifests.FailureLine {
	t.Helper()
	m := bt.manifest(t)
	if m.Failures == nil {
		return nil
	}
	return decodeLines[manifests.FailureLine](t, readObject(t, bt.bucket, m.Failures.Key, -1, ""))
}

// writeScript writes a processor script into t's temporary directory.
func writeScript(t *testing.T, name, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}
