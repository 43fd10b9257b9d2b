package batchpipe_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.temporal.io/sdk/client"

	"github.com/batchpipe/batchpipe"
	"github.com/batchpipe/batchpipe/embedded"
	"github.com/batchpipe/batchpipe/manifests"
	"github.com/batchpipe/batchpipe/pipeline"
)

// server is one in-process Temporal server with a worker, shared by the
// tests of this package; each test gets clients of its own on it.
var server struct {
	once  sync.Once
	c     *batchpipe.Client
	store string
	err   error
}

func sharedServer(t *testing.T) (client.Client, string) {
	t.Helper()
	server.once.Do(func() {
		dir, err := os.MkdirTemp("", "batchpipe-test-")
		if err != nil {
			server.err = err
			return
		}
		server.store = "file://" + dir
		server.c, server.err = embedded.Open(context.Background(), embedded.Options{Store: server.store})
		if server.err == nil {
			_, server.err = server.c.Temporal(context.Background())
		}
	})
	if server.err != nil {
		t.Fatal(server.err)
	}
	tc, _ := server.c.Temporal(context.Background())
	return tc, server.store
}

func newClient(t *testing.T) *batchpipe.Client {
	t.Helper()
	tc, store := sharedServer(t)
	c, err := batchpipe.NewClient(context.Background(), batchpipe.Config{Store: store, Temporal: tc})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func writeItems(t *testing.T, name, tag string, n int) string {
	t.Helper()
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "{\"arg1\":\"%s %d\",\"arg2\":\"x\"}\n", tag, i)
	}
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// outputsOf reads every result line of a finished batch: index → arg1 output.
func outputsOf(t *testing.T, res batchpipe.Result) map[int64]string {
	t.Helper()
	out := map[int64]string{}
	for l, err := range res.Results(context.Background()) {
		if err != nil {
			t.Fatal(err)
		}
		out[l.Index] = string(l.Output)
	}
	return out
}

func TestSubmitWaitReadsEveryResult(t *testing.T) {
	ctx := context.Background()
	c := newClient(t)
	in := writeItems(t, "items.jsonl", "a", 250)
	b, err := c.Submit(ctx, batchpipe.Request{Input: in, Processor: "echo", ShardSize: 40})
	if err != nil {
		t.Fatal(err)
	}
	if b.Attached || b.Items() != 250 || b.Shards() != 7 {
		t.Fatalf("submitted batch: attached %v, %d items in %d shards; want a new batch of 250 in 7", b.Attached, b.Items(), b.Shards())
	}
	var calls int
	res, err := b.Wait(ctx, func(p batchpipe.Progress) {
		calls++
		if p.Items != 250 || p.Done > 250 {
			t.Errorf("progress %+v", p)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Manifest.Status != manifests.StatusSucceeded || res.Manifest.Counts.Succeeded != 250 {
		t.Fatalf("manifest: %s, %+v", res.Manifest.Status, res.Manifest.Counts)
	}
	out := outputsOf(t, res)
	for i := range int64(250) {
		if !strings.Contains(out[i], fmt.Sprintf(`"a %d"`, i)) {
			t.Fatalf("result %d = %s, want item %d echoed", i, out[i], i)
		}
	}
	if err := res.Verify(ctx); err != nil {
		t.Fatal(err)
	}
	// The same id again: attached, finished, same manifest; no second batch.
	again, err := c.Submit(ctx, batchpipe.Request{Input: in, BatchID: b.ID()})
	if err != nil {
		t.Fatal(err)
	}
	if !again.Attached || !again.Finished {
		t.Fatalf("resubmit: attached %v finished %v, want both", again.Attached, again.Finished)
	}
	// Another processor for the same id is refused, naming both.
	_, err = c.Submit(ctx, batchpipe.Request{Input: in, BatchID: b.ID(), Processor: "example"})
	if !errors.Is(err, batchpipe.ErrConflict) || !strings.Contains(err.Error(), "processor echo") {
		t.Fatalf("resubmit with another processor: %v, want ErrConflict naming processor echo", err)
	}
}

// TestRacingSubmitsOneWinner: two submits of one id with different inputs
// at once, on one server and store. Exactly one owns the id; the other
// fails with ErrConflict; the results are all the winner's items.
func TestRacingSubmitsOneWinner(t *testing.T) {
	ctx := context.Background()
	a := writeItems(t, "A.jsonl", "A", 300)
	bIn := writeItems(t, "B.jsonl", "B", 300)
	rounds := 20
	if testing.Short() {
		rounds = 3
	}
	for round := range rounds {
		id := fmt.Sprintf("race-%d-%d", round, time.Now().UnixNano())
		c1, c2 := newClient(t), newClient(t)
		type outcome struct {
			b   *batchpipe.Batch
			err error
		}
		var wg sync.WaitGroup
		res := make([]outcome, 2)
		for i, pair := range []struct {
			c  *batchpipe.Client
			in string
		}{{c1, a}, {c2, bIn}} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				b, err := pair.c.Submit(ctx, batchpipe.Request{BatchID: id, Input: pair.in, Processor: "echo", ShardSize: 50})
				res[i] = outcome{b, err}
			}()
		}
		wg.Wait()
		var winner *batchpipe.Batch
		var winTag string
		for i, r := range res {
			switch {
			case r.err == nil && winner == nil:
				winner, winTag = r.b, []string{"A", "B"}[i]
			case r.err == nil:
				t.Fatalf("round %d: both submits succeeded", round)
			case !errors.Is(r.err, batchpipe.ErrConflict):
				t.Fatalf("round %d: loser's error %v, want ErrConflict", round, r.err)
			}
		}
		if winner == nil {
			t.Fatalf("round %d: no submit won: %v / %v", round, res[0].err, res[1].err)
		}
		done, err := winner.Wait(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		out := outputsOf(t, done)
		if len(out) != 300 {
			t.Fatalf("round %d: %d results, want 300", round, len(out))
		}
		for i, o := range out {
			if !strings.Contains(o, fmt.Sprintf(`"%s %d"`, winTag, i)) {
				t.Fatalf("round %d: result %d = %s, want the winner's (%s) item %d", round, i, o, winTag, i)
			}
		}
		if err := done.Verify(ctx); err != nil {
			t.Fatal(err)
		}
		// The loser left no staging behind: one input directory only.
		dirs := map[string]bool{}
		for a, err := range c1.Store().List(ctx, manifests.BatchPrefix(id)+"input/") {
			if err != nil {
				t.Fatal(err)
			}
			rest := strings.TrimPrefix(a.Key, manifests.BatchPrefix(id)+"input/")
			dirs[strings.SplitN(rest, "/", 2)[0]] = true
		}
		if len(dirs) != 1 {
			t.Fatalf("round %d: input directories %v, want the winner's alone", round, dirs)
		}
	}
}

func TestRacingSubmitsSameInputAttach(t *testing.T) {
	ctx := context.Background()
	in := writeItems(t, "same.jsonl", "S", 120)
	id := fmt.Sprintf("same-%d", time.Now().UnixNano())
	var wg sync.WaitGroup
	batches := make([]*batchpipe.Batch, 2)
	errs := make([]error, 2)
	for i := range 2 {
		c := newClient(t)
		wg.Add(1)
		go func() {
			defer wg.Done()
			batches[i], errs[i] = c.Submit(ctx, batchpipe.Request{BatchID: id, Input: in, Processor: "echo", ShardSize: 30})
		}()
	}
	wg.Wait()
	if errs[0] != nil || errs[1] != nil {
		t.Fatalf("same input twice: %v / %v, want both to succeed", errs[0], errs[1])
	}
	if batches[0].Attached == batches[1].Attached {
		t.Fatalf("attached: %v and %v, want exactly one to have attached", batches[0].Attached, batches[1].Attached)
	}
	for _, b := range batches {
		res, err := b.Wait(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		if res.Manifest.Counts.Succeeded != 120 {
			t.Fatalf("counts %+v", res.Manifest.Counts)
		}
	}
}

func TestSubmitRefusesBadRequestsWritingNothing(t *testing.T) {
	ctx := context.Background()
	c := newClient(t)
	good := writeItems(t, "good.jsonl", "g", 3)
	bad := filepath.Join(t.TempDir(), "bad.jsonl")
	os.WriteFile(bad, []byte("{\"a\":1}\n{\"a\":\n"), 0o644)
	cases := []struct {
		name string
		r    batchpipe.Request
		want string
	}{
		{"bad line", batchpipe.Request{Input: bad, BatchID: "bad-line"}, "bad.jsonl:2"},
		{"negative shard size", batchpipe.Request{Input: good, BatchID: "neg", ShardSize: -1}, "shard size"},
		{"NaN percent", batchpipe.Request{Input: good, BatchID: "nan", MaxFailures: pipeline.MaxFailedPercent(nanValue())}, "max_failures"},
		{"too many attempts", batchpipe.Request{Input: good, BatchID: "att", ItemAttempts: 1000}, "item_attempts"},
		{"bad id", batchpipe.Request{Input: good, BatchID: "../x"}, "batch_id"},
		{"no input", batchpipe.Request{BatchID: "none"}, "no input"},
		{"missing file", batchpipe.Request{Input: "/nonexistent/in.jsonl", BatchID: "missing"}, "nonexistent"},
		{"priority 9", batchpipe.Request{Input: good, BatchID: "prio", Priority: 9}, "options.priority"},
		{"fairness weight", batchpipe.Request{Input: good, BatchID: "fw", FairnessWeight: -1}, "options.fairness_weight"},
		{"canary limit without canary", batchpipe.Request{Input: good, BatchID: "cl", CanaryMaxFailures: pipeline.MaxFailedItems(2)}, "options.canary_max_failures needs options.canary"},
	}
	for _, tc := range cases {
		_, err := c.Submit(ctx, tc.r)
		if !errors.Is(err, batchpipe.ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want ErrInvalid mentioning %q", tc.name, err, tc.want)
			continue
		}
		for a, err := range c.Store().List(ctx, "batches/"+tc.r.BatchID+"/") {
			if err == nil {
				t.Errorf("%s: left %s in the store", tc.name, a.Key)
			}
		}
	}
}

func nanValue() float64 {
	var zero float64
	return zero / zero
}

// TestWorkflowContract starts BatchWorkflow as a client in another language
// would: a JSON object, no Go types. A misspelt key fails the batch at once,
// naming it; the minimal input (id, store, input URL, processor) runs.
func TestWorkflowContract(t *testing.T) {
	ctx := context.Background()
	tc, store := sharedServer(t)
	in := writeItems(t, "contract.jsonl", "c", 30)
	start := func(id string, input map[string]any) error {
		run, err := tc.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: id, TaskQueue: pipeline.DefaultTaskQueue}, pipeline.BatchWorkflowName, input)
		if err != nil {
			t.Fatal(err)
		}
		wctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		return run.Get(wctx, nil)
	}
	id := fmt.Sprintf("contract-bad-%d", time.Now().UnixNano())
	err := start(id, map[string]any{"batch_id": id, "store": store, "input_url": "file://" + in,
		"options": map[string]any{"processor": "echo", "shard_sizee": 5}})
	if err == nil || !strings.Contains(err.Error(), `unknown field "shard_sizee"`) {
		t.Fatalf("misspelt key: %v, want the batch to fail naming shard_sizee", err)
	}
	id = fmt.Sprintf("contract-min-%d", time.Now().UnixNano())
	if err := start(id, map[string]any{"batch_id": id, "store": store, "input_url": "file://" + in,
		"options": map[string]any{"processor": "echo", "item_timeout": "30s"}}); err != nil {
		t.Fatalf("minimal input: %v", err)
	}
	c := newClient(t)
	b, err := c.Batch(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	res, err := b.Wait(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Manifest.Status != manifests.StatusSucceeded || res.Manifest.Counts.Succeeded != 30 {
		t.Fatalf("minimal input: %s %+v", res.Manifest.Status, res.Manifest.Counts)
	}
}
