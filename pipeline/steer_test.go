package pipeline_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"

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

// newTestWorker starts a worker on tq as startWorker does, for a test
// that stops it.
func newTestWorker(t *testing.T, tq string) worker.Worker {
	t.Helper()
	return newTestWorkerWith(t, tq, worker.Options{MaxConcurrentActivityExecutionSize: 64})
}

// newTestWorkerWith is newTestWorker with the SDK worker options wo.
func newTestWorkerWith(t *testing.T, tq string, wo worker.Options) worker.Worker {
	t.Helper()
	if temporalClient == nil {
		t.Skip("needs the Temporal server (not in -short mode)")
	}
	w := pipeline.NewWorker(temporalClient, tq, pipeline.WorkerOptions{
		Processors: testProcessors(), Logger: quietLog, Worker: wo,
		Trust: pipeline.Trust{Schemes: []string{"file"}},
	})
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	return w
}

func resetSteer() {
	steerCalls.Store(0)
	steerMu.Lock()
	steerSeen = map[int]int{}
	steerMu.Unlock()
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
	// A query can meet a worker that is stopping (it answers "context
	// canceled"); the next one goes to a worker that is not.
	var err error
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		var p pipeline.Progress
		if p, err = pipeline.QueryProgress(context.Background(), temporalClient, id); err == nil {
			return p
		}
	}
	t.Fatal(err)
	return pipeline.Progress{}
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
	o := smallOpts("steer", 200, 4) // 4 s a shard: the pause stops them part way
	o.Concurrency, o.ItemParallelism = 3, 2
	const n = 1800
	tq := fmt.Sprintf("test-%s-%d", t.Name(), queueSeq.Add(1))
	w1 := newTestWorker(t, tq)
	defer w1.Stop()
	bt, wait := startBatchOn(t, tq, fileStore(t), "steer-pause", makeItems(n, nil), o)
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
	d, err := temporalClient.DescribeWorkflowExecution(ctx, bt.id, "")
	if err != nil {
		t.Fatal(err)
	}
	if st, since, why := pipeline.MemoState(d.GetWorkflowExecutionInfo().GetMemo()); st != "paused" || since == nil || !since.Equal(*pp.PausedSince) || why != "maintenance window" {
		t.Fatalf("MemoState: %q %v %q", st, since, why)
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
	// The worker restarts (a new one replays the paused run, updates
	// and all): the pause is the workflow's state, not a worker's.
	w1.Stop()
	w2 := newTestWorker(t, tq)
	defer w2.Stop()
	if p := progressOf(t, bt.id); !p.Paused {
		t.Fatalf("not paused any more: %+v", p)
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
	continued := 0
	for _, r := range m.Results {
		if strings.Contains(r.Key, ".p1.") {
			continued++
		}
	}
	if continued == 0 {
		t.Error("no shard was stopped part way and continued (results/*.p1.jsonl.zst)")
	}
	t.Logf("%d shards stopped part way and continued after the resume", continued)
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
	took = waitFor(t, 15*time.Second, "the window did not widen to 6", func() bool {
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

// update sends an update in the test environment and returns its error
// (rejected or failed) once it completed.
func update(e *wfEnv, name string, args ...any) func() error {
	var err error
	done := false
	e.UpdateWorkflow(name, "", &testsuite.TestUpdateCallback{
		OnAccept:   func() {},
		OnReject:   func(e error) { err, done = e, true },
		OnComplete: func(_ any, e error) { err, done = e, true },
	}, args...)
	return func() error {
		if !done {
			return errors.New("update not completed")
		}
		return err
	}
}

// nextInput is the input a continue-as-new error carries.
func nextInput(t *testing.T, err error) pipeline.BatchInput {
	t.Helper()
	var can *workflow.ContinueAsNewError
	if !errors.As(err, &can) {
		t.Fatalf("error %v, want continue-as-new", err)
	}
	var in pipeline.BatchInput
	if err := converter.GetDefaultDataConverter().FromPayloads(can.Input, &in); err != nil {
		t.Fatal(err)
	}
	return in
}

// The pause and the shards it stopped part way are carried across
// continue-as-new; the next run starts nothing until resumed, then runs
// the rest of the stopped shards (from where they stopped, counted once)
// before the others. Updates carry too. Refusals change nothing.
func TestWorkflowPauseAcrossContinueAsNew(t *testing.T) {
	var paused atomic.Bool
	shard := func(in pipeline.ShardInput) (pipeline.ShardResult, error) {
		if paused.Load() && in.Resume == nil {
			return pipeline.ShardResult{Key: "k", Items: 4, Succeeded: 3, Failed: 1, Paused: true, ResumeAt: in.FirstIndex + 4}, nil
		}
		return pipeline.ShardResult{Key: "k", Items: int64(in.Items), Succeeded: int64(in.Items) - 1, Failed: 1}, nil
	}
	e := newWFEnv(t, shard)
	in := stagedInput(6, 10, 2, 2)
	var resumeEarly, pause, pauseAgain, badUpdate, goodUpdate func() error
	e.RegisterDelayedCallback(func() {
		resumeEarly = update(e, pipeline.ResumeUpdate)
		paused.Store(true)
		pause = update(e, pipeline.PauseUpdate, pipeline.PauseRequest{Reason: "night"})
		pauseAgain = update(e, pipeline.PauseUpdate, pipeline.PauseRequest{})
		badUpdate = update(e, pipeline.OptionsUpdate, pipeline.OptionsChange{Concurrency: -2})
		goodUpdate = update(e, pipeline.OptionsUpdate, pipeline.OptionsChange{Concurrency: 3})
	}, 500*time.Millisecond)
	e.ExecuteWorkflow(pipeline.BatchWorkflowName, in)
	next := nextInput(t, e.GetWorkflowError())
	if resumeEarly() == nil || pause() != nil || pauseAgain() == nil || badUpdate() == nil || goodUpdate() != nil {
		t.Fatalf("updates: resume %v, pause %v, second pause %v, concurrency -2 %v, concurrency 3 %v",
			resumeEarly(), pause(), pauseAgain(), badUpdate(), goodUpdate())
	}
	c := next.Cursor
	if c == nil || !c.Paused || c.PauseReason != "night" || c.PausedSince == nil || c.Pauses != 1 || len(c.Partial) != 2 ||
		c.Succeeded != 6 || c.Failed != 2 || c.ShardsDone != 0 || c.NextShard != 2 || next.Options.Concurrency != 3 {
		t.Fatalf("cursor %+v, options %+v", c, next.Options)
	}

	e2 := newWFEnv(t, shard)
	var resume func() error
	var before int
	e2.RegisterDelayedCallback(func() {
		e2.mu.Lock()
		before = len(e2.started)
		e2.mu.Unlock()
		paused.Store(false)
		resume = update(e2, pipeline.ResumeUpdate)
	}, time.Hour)
	e2.ExecuteWorkflow(pipeline.BatchWorkflowName, next)
	next2 := nextInput(t, e2.GetWorkflowError())
	if before != 0 || resume() != nil {
		t.Fatalf("%d shards started while paused; resume: %v", before, resume())
	}
	if len(e2.inputs) != 2 {
		t.Fatalf("started %v, want the two stopped shards (2 a run)", e2.started)
	}
	// Both start in one workflow task: the test environment runs them in
	// any order.
	slices.SortFunc(e2.inputs, func(a, b pipeline.ShardInput) int { return a.Shard - b.Shard })
	for i, si := range e2.inputs {
		if si.Shard != i || si.Resume == nil || si.Resume.From != int64(i*10+4) || si.Resume.Seq != 1 || si.Pauses != 1 || !si.WatchPause {
			t.Errorf("shard input %+v, want shard %d resumed from %d", si, i, i*10+4)
		}
	}
	c = next2.Cursor
	if c.Paused || len(c.Partial) != 0 || c.ShardsDone != 2 || c.Succeeded != 18 || c.Failed != 2 || c.NextShard != 2 || next2.Options.Concurrency != 3 {
		t.Fatalf("cursor after resume %+v", c)
	}
}

// A batch cancelled while paused ends with a canceled manifest of what was
// committed, the stopped shards' first items included; a redrive then
// runs exactly the items never processed.
func TestPauseCancelRedrive(t *testing.T) {
	resetSteer()
	ctx := context.Background()
	o := smallOpts("steer", 100, pipeline.DefaultShardsPerRun)
	o.Concurrency, o.ItemParallelism = 2, 1
	const n = 600
	bt, wait := startBatchOn(t, startWorker(t), fileStore(t), "steer-cancel", makeItems(n, nil), o)
	waitFor(t, time.Minute, "no items processed", func() bool { return steerCalls.Load() >= 20 })
	if _, err := pipeline.Pause(ctx, temporalClient, bt.id, ""); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 15*time.Second, "shards still running", func() bool { return progressOf(t, bt.id).InFlight == 0 })
	if err := temporalClient.CancelWorkflow(ctx, bt.id, ""); err != nil {
		t.Fatal(err)
	}
	bt = wait()
	m := bt.manifest(t)
	if m.Status != manifests.StatusCanceled || m.Counts.Items == 0 || m.Counts.Items >= n {
		t.Fatalf("status %s, counts %+v", m.Status, m.Counts)
	}
	if m.Counts.Items != steerCalls.Load() {
		t.Fatalf("canceled manifest lists %d items, %d were processed", m.Counts.Items, steerCalls.Load())
	}
	redrive(t, bt, nil)
	m = bt.manifest(t)
	if m.Status != manifests.StatusSucceeded {
		t.Fatalf("after redrive: %s %+v", m.Status, m.Counts)
	}
	checkAgainstInput(t, bt, m, echo)
	if c := steerCalls.Load(); c != n {
		t.Errorf("%d processor calls for %d items", c, n)
	}
}
