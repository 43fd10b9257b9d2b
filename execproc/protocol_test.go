package execproc_test

import (
	"context"
	"encoding/json"
	"strings"
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
