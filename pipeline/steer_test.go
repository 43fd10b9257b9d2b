package pipeline_test

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/temporal"

	"github.com/batchpipe/batchpipe"
	"github.com/batchpipe/batchpipe/manifests"
	"github.com/batchpipe/batchpipe/pipeline"
)

// steerCalls counts the calls of the "steer" processor (40 ms an item,
// echoing it), and steerSeen how often each index ("n") was called.
var (
	steerCalls atomic.Int64
	steerMu    sync.Mutex
	steerSeen  map[int]int
)

func registerSteerProcessors(r *pipeline.Registry) {
	r.Register("steer", pipeline.ProcessorFunc(func(ctx context.Context, in json.RawMessage) (json.RawMessage, error) {
		steerCalls.Add(1)
		var v struct{ N int }
		json.Unmarshal(in, &v)
		steerMu.Lock()
		if steerSeen != nil {
			steerSeen[v.N]++
		}
		steerMu.Unlock()
		select {
		case <-time.After(40 * time.Millisecond):
			return in, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}))
}

func resetSteer() {
	steerCalls.Store(0)
	steerMu.Lock()
	steerSeen = map[int]int{}
	steerMu.Unlock()
}

// startBatchOn submits a batch on the worker of tq and returns at once;
// wait() runs it to its end.
func startBatchOn(t *testing.T, tq, storeURL, id string, input []byte, opts pipeline.Options) (*batch, func() *batch) {
	t.Helper()
	ctx := context.Background()
	c, err := batchpipe.NewClient(ctx, batchpipe.Config{Store: storeURL, TaskQueue: tq, Temporal: temporalClient})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := c.Submit(ctx, requestFor(id, input, opts)); err != nil {
		t.Fatal(err)
	}
	bt := &batch{id: id, store: storeURL, bucket: c.Store(), input: input, opts: opts, tq: tq}
	bt.run = temporalClient.GetWorkflow(ctx, id, "")
	return bt, func() *batch {
		wctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
		defer cancel()
		bt.err = bt.run.Get(wctx, &bt.result)
		return bt
	}
}

// waitFor polls cond every 50 ms until it holds, failing after d.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > d {
			t.Fatalf("after %v: %s", d, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return time.Since(start)
}

func progressOf(t *testing.T, id string) pipeline.Progress {
	t.Helper()
	p, err := pipeline.QueryProgress(context.Background(), temporalClient, id)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// memoOf reads the batch workflow's memo.
func memoOf(t *testing.T, id string) map[string]any {
	t.Helper()
	d, err := temporalClient.DescribeWorkflowExecution(context.Background(), id, "")
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]any{}
	for k, p := range d.GetWorkflowExecutionInfo().GetMemo().GetFields() {
		var v any
		converter.GetDefaultDataConverter().FromPayload(p, &v)
		m[k] = v
	}
	return m
}

// refusedAs checks that err is an update refused with an application
// error of type typ.
func refusedAs(t *testing.T, err error, typ, what string) {
	t.Helper()
	var appErr *temporal.ApplicationError
	if !errors.As(err, &appErr) || appErr.Type() != typ {
		t.Fatalf("%s: error %v, want one of type %s", what, err, typ)
	}
	t.Logf("%s refused: %v", what, appErr.Message())
}

// A pause mid-batch: within 15 s no item is handed to the processor, and
// none for 30 s after; status and memo say paused, since when and why.
// A second pause is refused. Resume runs the rest of the stopped shards
// and then the others (across continue-as-new): every index is processed
// exactly once, and the manifest has each once.
func TestPauseAndResume(t *testing.T) {
	if testing.Short() {
		t.Skip("a 30 s pause")
	}
	resetSteer()
	ctx := context.Background()
	o := smallOpts("steer", 50, 4)
	o.Concurrency, o.ItemParallelism = 3, 2
	const n = 900
	bt, wait := startBatchOn(t, startWorker(t), fileStore(t), "steer-pause", makeItems(n, nil), o)
	waitFor(t, time.Minute, "no items processed", func() bool { return steerCalls.Load() >= 120 })

	paused := time.Now()
	p, err := pipeline.Pause(ctx, temporalClient, bt.id, "maintenance window")
	if err != nil {
		t.Fatal(err)
	}
	if !p.Paused || p.PauseReason != "maintenance window" || p.PausedSince == nil {
		t.Fatalf("pause answered %+v", p)
	}
	// The running shards stop at their next item boundary.
	var last int64 = -1
	var stable time.Time
	took := waitFor(t, 15*time.Second, "items still handed out 15 s after the pause", func() bool {
		c := steerCalls.Load()
		if c != last {
			last, stable = c, time.Now()
		}
		return time.Since(stable) > 2*time.Second && progressOf(t, bt.id).InFlight == 0
	})
	stopped := steerCalls.Load()
	t.Logf("pause: running shards stopped within %v (%d items handed out by then)", took, stopped)
	if stopped >= n {
		t.Fatal("the batch ran to its end: pause came too late to test")
	}
	pp := progressOf(t, bt.id)
	if !pp.Paused || pp.PauseReason != "maintenance window" || pp.PausedSince == nil || pp.PausedSince.After(time.Now()) || pp.PausedSince.Before(paused.Add(-time.Second)) {
		t.Fatalf("progress while paused %+v", pp)
	}
	memo := memoOf(t, bt.id)
	if memo["status"] != "paused" || memo["paused"] != true || memo["pause_reason"] != "maintenance window" || memo["paused_since"] == nil {
		t.Fatalf("memo while paused %v", memo)
	}
	_, err = pipeline.Pause(ctx, temporalClient, bt.id, "again")
	refusedAs(t, err, pipeline.ErrTypeNotSteerable, "a second pause")

	time.Sleep(30 * time.Second)
	if c := steerCalls.Load(); c != stopped {
		t.Fatalf("%d items handed out during the pause", c-stopped)
	}

	if p, err = pipeline.Resume(ctx, temporalClient, bt.id); err != nil || p.Paused {
		t.Fatalf("resume: %+v %v", p, err)
	}
	_, err = pipeline.Resume(ctx, temporalClient, bt.id)
	if err == nil {
		// It may have finished in between (then it is no workflow to update).
		t.Fatal("a second resume was not refused")
	}
	bt = wait()
	if bt.err != nil {
		t.Fatal(bt.err)
	}
	m := bt.manifest(t)
	if m.Status != manifests.StatusSucceeded {
		t.Fatalf("status %s, counts %+v", m.Status, m.Counts)
	}
	checkAgainstInput(t, bt, m, echo)
	if c := steerCalls.Load(); c != n {
		t.Errorf("%d processor calls for %d items: work was redone or lost", c, n)
	}
	steerMu.Lock()
	defer steerMu.Unlock()
	for i := range n {
		if steerSeen[i] != 1 {
			t.Errorf("index %d processed %d times", i, steerSeen[i])
		}
	}
	if memo := memoOf(t, bt.id); memo["paused"] != false || memo["status"] != manifests.StatusSucceeded {
		t.Errorf("memo at the end %v", memo)
	}
	_, err = pipeline.Pause(ctx, temporalClient, bt.id, "")
	if err == nil {
		t.Error("pausing a finished batch was not refused")
	}
}

// The window follows updates: narrowed from 4 to 1, the shards in flight
// fall to 1 as the running ones finish; widened to 6, they rise at once.
// The new concurrency is what progress shows, across continue-as-new. A
// bad value is refused and changes nothing.
func TestUpdateWindow(t *testing.T) {
	resetSteer()
	ctx := context.Background()
	o := smallOpts("steer", 20, 8) // 0.8 s a shard at parallelism 1
	o.Concurrency, o.ItemParallelism = 4, 1
	bt, wait := startBatchOn(t, startWorker(t), fileStore(t), "steer-window", makeItems(60*20, nil), o)
	inFlight := func() (int, int) {
		in, err := pipeline.DescribeInFlight(ctx, temporalClient, bt.id)
		if err != nil {
			return -1, -1
		}
		return in.Running + in.Waiting, in.Running
	}
	waitFor(t, time.Minute, "never 4 shards in flight", func() bool { f, _ := inFlight(); return f == 4 })

	_, err := pipeline.UpdateOptions(ctx, temporalClient, bt.id, pipeline.OptionsChange{Concurrency: -1})
	refusedAs(t, err, pipeline.ErrTypeInvalidInput, "concurrency -1")
	bad := pipeline.MaxFailedPercent(150)
	_, err = pipeline.UpdateOptions(ctx, temporalClient, bt.id, pipeline.OptionsChange{MaxFailures: &bad})
	refusedAs(t, err, pipeline.ErrTypeInvalidInput, "max failures 150%")
	if p := progressOf(t, bt.id); p.Concurrency != 4 || p.MaxFailures != nil {
		t.Fatalf("a refused update changed the batch: %+v", p)
	}

	p, err := pipeline.UpdateOptions(ctx, temporalClient, bt.id, pipeline.OptionsChange{Concurrency: 1})
	if err != nil || p.Concurrency != 1 {
		t.Fatalf("update to 1: %+v %v", p, err)
	}
	took := waitFor(t, 10*time.Second, "the window did not narrow to 1", func() bool {
		pr := progressOf(t, bt.id)
		return pr.InFlight <= 1
	})
	t.Logf("narrowed to 1 in %v (as the running shards finished)", took)
	for range 20 { // and stays there
		if p := progressOf(t, bt.id); p.InFlight > 1 {
			t.Fatalf("%d shards in flight with concurrency 1", p.InFlight)
		}
		if f, _ := inFlight(); f > 1 {
			t.Fatalf("%d shard workflows in flight with concurrency 1", f)
		}
		time.Sleep(100 * time.Millisecond)
	}

	limit := pipeline.MaxFailedItems(1000)
	if _, err := pipeline.UpdateOptions(ctx, temporalClient, bt.id, pipeline.OptionsChange{Concurrency: 6, MaxFailures: &limit}); err != nil {
		t.Fatal(err)
	}
	took = waitFor(t, 5*time.Second, "the window did not widen to 6", func() bool {
		f, running := inFlight()
		return f == 6 && running >= 5
	})
	t.Logf("widened to 6 in %v", took)
	run := progressOf(t, bt.id).Run
	waitFor(t, time.Minute, "no continue-as-new", func() bool { return progressOf(t, bt.id).Run > run })
	if p := progressOf(t, bt.id); p.Concurrency != 6 || p.MaxFailures == nil || p.MaxFailures.String() != "1000" {
		t.Fatalf("after continue-as-new: %+v", p)
	}
	waitFor(t, 10*time.Second, "never 6 in flight in the next run", func() bool { return progressOf(t, bt.id).InFlight == 6 })
	bt = wait()
	if bt.err != nil {
		t.Fatal(bt.err)
	}
	m := bt.manifest(t)
	checkAgainstInput(t, bt, m, echo)
}
