package pipeline_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"go.temporal.io/sdk/log"
	"go.temporal.io/sdk/testsuite"
	"go.temporal.io/sdk/worker"

	"github.com/batchpipe/batchpipe/blobstore"
	"github.com/batchpipe/batchpipe/manifests"
	"github.com/batchpipe/batchpipe/pipeline"
	"github.com/batchpipe/batchpipe/zjsonl"
)

// checkpointWorker starts a worker on tq whose heartbeats reach the server
// within 100 ms (NewWorker's default: 2 s), so that the test's bound is the
// checkpoint interval's.
func checkpointWorker(t *testing.T, tq string) worker.Worker {
	t.Helper()
	return newTestWorkerWith(t, tq, worker.Options{MaxHeartbeatThrottleInterval: 100 * time.Millisecond})
}

// finishOnNewWorker has a new worker on tq take over the batch (its first
// one stopped) and waits for it to succeed.
func finishOnNewWorker(t *testing.T, tq string, wait func() *batch) *batch {
	t.Helper()
	w := checkpointWorker(t, tq)
	t.Cleanup(w.Stop)
	bt := wait()
	if bt.err != nil {
		t.Fatal(bt.err)
	}
	return bt
}

// partsOf counts the checkpoint parts of a batch in the store.
func partsOf(t *testing.T, b blobstore.Bucket, id string) int {
	t.Helper()
	n := 0
	for _, err := range b.List(context.Background(), manifests.PartsPrefix(id)) {
		if err != nil {
			t.Fatal(err)
		}
		n++
	}
	return n
}

// TestStoppedWorkerShardResumesFromCheckpoint stops the worker that runs
// two shards part way (its activities are cancelled, as on a shutdown) and
// lets a second worker retry them: each retry starts from its shard's last
// checkpoint, so only the items since it (one checkpoint interval's worth
// and the calls in flight) run again; the manifest holds every index once,
// and the parts are gone after the receipts.
func TestStoppedWorkerShardResumesFromCheckpoint(t *testing.T) {
	if temporalClient == nil {
		t.Skip("needs the Temporal server (not in -short mode)")
	}
	const interval = 300 * time.Millisecond
	defer pipeline.SetCheckpointInterval(interval)()
	resetSteer()
	ctx := context.Background()
	const n, shardSize, par = 1600, 800, 8
	o := smallOpts("steer", shardSize, 4) // 40 ms an item, 8 at once: 4 s a shard
	o.Concurrency, o.ItemParallelism = 2, par
	tq := fmt.Sprintf("test-%s-%d", t.Name(), queueSeq.Add(1))
	w1 := checkpointWorker(t, tq)
	bt, wait := startBatchOn(t, tq, fileStore(t), "checkpoint-stop", makeItems(n, nil), o)
	waitFor(t, time.Minute, "items processed", func() bool { return steerCalls.Load() >= 700 })
	if p := partsOf(t, bt.bucket, bt.id); p == 0 {
		t.Error("no checkpoint part while the shards run")
	}
	w1.Stop()
	before := steerCalls.Load()
	bt = finishOnNewWorker(t, tq, wait)
	m := bt.manifest(t)
	checkAgainstInput(t, bt, m, echo)
	batch, err := manifests.Open(ctx, bt.bucket, bt.id)
	if err != nil {
		t.Fatal(err)
	}
	if err := batch.Verify(ctx); err != nil {
		t.Fatal(err)
	}
	steerMu.Lock()
	redone := 0
	for i := range n {
		switch k := steerSeen[i]; {
		case k == 0:
			t.Errorf("item %d never processed", i)
		case k > 1:
			redone += k - 1
		}
	}
	steerMu.Unlock()
	// Per shard: the items of one interval and the heartbeat throttle (8
	// calls of 40 ms at once: 200 a second), one interval more for a slow
	// heartbeat or part write on a loaded machine, and the calls in flight.
	// Without checkpoints it would be every item processed before the stop.
	perShard := int(200*(2*interval+100*time.Millisecond).Seconds()) + 3*par
	t.Logf("%d items processed before the stop, %d processed again after it (bound %d)", before, redone, 2*perShard)
	if redone > 2*perShard {
		t.Errorf("%d items processed again, want at most %d (a checkpoint every %v)", redone, 2*perShard, interval)
	}
	if p := partsOf(t, bt.bucket, bt.id); p != 0 {
		t.Errorf("%d checkpoint parts left after the batch", p)
	}
}

// TestStoppedWorkerCheckpointKeepsFailures is the same with failing items:
// the failure lines of the checkpointed items come from the parts, so the
// failures object lists each failed item once.
func TestStoppedWorkerCheckpointKeepsFailures(t *testing.T) {
	if temporalClient == nil {
		t.Skip("needs the Temporal server (not in -short mode)")
	}
	defer pipeline.SetCheckpointInterval(300 * time.Millisecond)()
	ctx := context.Background()
	const n, shardSize = 800, 400
	o := smallOpts("fail-or-slow", shardSize, 4) // 100 ms an item, 8 at once: 5 s a shard
	o.Concurrency = 2
	failed := func(i int) bool { return i%7 == 3 }
	input := makeItems(n, func(i int) string {
		if failed(i) {
			return `,"fail":true`
		}
		return ""
	})
	tq := fmt.Sprintf("test-%s-%d", t.Name(), queueSeq.Add(1))
	w1 := checkpointWorker(t, tq)
	start := failOrSlowCalls.Load()
	bt, wait := startBatchOn(t, tq, fileStore(t), "checkpoint-failures", input, o)
	waitFor(t, time.Minute, "items processed", func() bool { return failOrSlowCalls.Load()-start >= 350 })
	w1.Stop()
	bt = finishOnNewWorker(t, tq, wait)
	m := bt.manifest(t)
	want := 0
	for i := range n {
		if failed(i) {
			want++
		}
	}
	if m.Counts.Items != n || m.Counts.Failed != int64(want) || m.Failures == nil || m.Failures.Items != int64(want) {
		t.Fatalf("manifest counts %+v, failures %+v; want %d items, %d failed", m.Counts, m.Failures, n, want)
	}
	batch, err := manifests.Open(ctx, bt.bucket, bt.id)
	if err != nil {
		t.Fatal(err)
	}
	if err := batch.Verify(ctx); err != nil {
		t.Fatal(err)
	}
	calls := failOrSlowCalls.Load() - start
	t.Logf("%d calls for %d items", calls, n)
	// Per shard: 80 calls a second over an interval, the throttle and one
	// interval more for a loaded machine, and the calls in flight.
	if calls > n+2*(int64(80*0.7)+24) {
		t.Errorf("%d calls for %d items: the retries did not resume from their checkpoints", calls, n)
	}
	if p := partsOf(t, bt.bucket, bt.id); p != 0 {
		t.Errorf("%d checkpoint parts left after the batch", p)
	}
}

// BenchmarkProcessShardCheckpoints runs one shard of 200,000 echo items in
// an activity environment on a file store, checkpointing never (an hour),
// every second and every 100 ms: what the parts and the final copy cost.
//
//	go test -run '^$' -bench ProcessShardCheckpoints -benchtime 5x ./pipeline/
func BenchmarkProcessShardCheckpoints(b *testing.B) {
	const n = 200_000
	ctx := context.Background()
	store := "file://" + b.TempDir()
	bucket, err := blobstore.Open(ctx, store)
	if err != nil {
		b.Fatal(err)
	}
	bw := blobstore.NewWriter(ctx, bucket, manifests.InputShardKey("bench", "", 0))
	zw := zjsonl.NewWriter(bw)
	for i := range n {
		zw.WriteRaw(fmt.Appendf(nil, `{"arg1":"hello %d","arg2":"world %d"}`, i, i))
	}
	if err := zw.Close(); err != nil {
		b.Fatal(err)
	}
	if err := bw.Close(); err != nil {
		b.Fatal(err)
	}
	a := &pipeline.Activities{Processors: testProcessors(), Stores: &pipeline.Stores{Trust: pipeline.Trust{Schemes: []string{"file"}}}, Logger: quietLog}
	o := pipeline.DefaultOptions()
	o.Processor, o.ShardSize = "echo", n
	in := pipeline.ShardInput{BatchID: "bench", Store: store, Shard: 0, Items: n, Options: o}
	for _, every := range []time.Duration{time.Hour, time.Second, 100 * time.Millisecond} {
		b.Run("every="+every.String(), func(b *testing.B) {
			defer pipeline.SetCheckpointInterval(every)()
			var s testsuite.WorkflowTestSuite
			s.SetLogger(log.NewStructuredLogger(quietLog))
			for b.Loop() {
				env := s.NewTestActivityEnvironment()
				env.RegisterActivity(a.ProcessShard)
				v, err := env.ExecuteActivity(a.ProcessShard, in)
				if err != nil {
					b.Fatal(err)
				}
				var res pipeline.ShardResult
				if err := v.Get(&res); err != nil || res.Items != n {
					b.Fatalf("%+v %v", res, err)
				}
			}
			b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "items/s")
		})
	}
}
