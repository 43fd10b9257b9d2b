package pipeline_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	historypb "go.temporal.io/api/history/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	enumspb "go.temporal.io/api/enums/v1"

	"github.com/batchpipe/batchpipe/blobstore"
	"github.com/batchpipe/batchpipe/manifests"
	"github.com/batchpipe/batchpipe/pipeline"
)

// fetchHistory returns one run's whole history.
func fetchHistory(t *testing.T, id, runID string) *historypb.History {
	t.Helper()
	it := temporalClient.GetWorkflowHistory(context.Background(), id, runID, false, enumspb.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
	h := &historypb.History{}
	for it.HasNext() {
		e, err := it.Next()
		if err != nil {
			t.Fatal(err)
		}
		h.Events = append(h.Events, e)
	}
	return h
}

// historyRuns follows a batch's continue-as-new chain from its first run.
func historyRuns(t *testing.T, id string) []runStats {
	t.Helper()
	desc, err := temporalClient.DescribeWorkflowExecution(context.Background(), id, "")
	if err != nil {
		t.Fatal(err)
	}
	runID := desc.WorkflowExecutionInfo.GetFirstRunId()
	if runID == "" {
		t.Fatal("no first run id")
	}
	var runs []runStats
	for runID != "" {
		h := fetchHistory(t, id, runID)
		runs = append(runs, runStats{runID: runID, events: len(h.Events), bytes: proto.Size(h)})
		last := h.Events[len(h.Events)-1]
		runID = last.GetWorkflowExecutionContinuedAsNewEventAttributes().GetNewExecutionRunId()
	}
	return runs
}

// A batch of 2,000 children (shard size 1): every run's history stays
// within 10,000 events and 4 MB.
func TestHistoryStaysBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("2,000 child workflows")
	}
	o := smallOpts("echo", 1, pipeline.DefaultShardsPerRun)
	o.Concurrency = 64
	bt := runBatch(t, fileStore(t), "bounded", makeItems(2000, nil), o)
	if bt.err != nil {
		t.Fatal(bt.err)
	}
	m := bt.manifest(t)
	if m.Status != manifests.StatusSucceeded || len(m.Results) != 2000 {
		t.Fatalf("status %s with %d results", m.Status, len(m.Results))
	}
	runs := historyRuns(t, bt.id)
	if len(runs) < 4 {
		t.Fatalf("%d runs for 2,000 shards at %d per run", len(runs), pipeline.DefaultShardsPerRun)
	}
	for i, r := range runs {
		t.Logf("run %d: %d events, %d bytes", i+1, r.events, r.bytes)
		if r.events > 10000 || r.bytes > 4<<20 {
			t.Errorf("run %d has %d events and %d bytes; bounds are 10,000 and 4 MB", i+1, r.events, r.bytes)
		}
	}
}

// Replay: recorded histories in testdata/ must replay against today's
// workflow code, so a change that would break running batches fails here.
// BATCHPIPE_RECORD_HISTORIES=1 records them anew from a real run.
func TestReplayRecordedHistories(t *testing.T) {
	dir := filepath.Join("testdata", "histories")
	if os.Getenv("BATCHPIPE_RECORD_HISTORIES") != "" {
		recordHistories(t, dir)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*.json"))
	if len(files) < 3 {
		t.Fatalf("want at least 3 recorded histories in %s, found %d", dir, len(files))
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			r := worker.NewWorkflowReplayer()
			r.RegisterWorkflowWithOptions(pipeline.BatchWorkflow, workflowOpts(pipeline.BatchWorkflowName))
			r.RegisterWorkflowWithOptions(pipeline.ShardWorkflow, workflowOpts(pipeline.ShardWorkflowName))
			r.RegisterWorkflowWithOptions(pipeline.ScheduledBatchWorkflow, workflowOpts(pipeline.ScheduledBatchWorkflowName))
			if err := r.ReplayWorkflowHistoryFromJSONFile(nil, f); err != nil {
				t.Fatalf("replaying %s: %v", f, err)
			}
		})
	}
}

// historyGeneration names the files recordHistories writes; bump it when
// the workflows change (behind workflow.GetVersion), so the histories of
// every earlier generation keep being replayed.
const historyGeneration = "g9-memo"

// recordHistories runs a small batch with failures across several
// continue-as-new runs and writes each run's history, and one shard's.
func recordHistories(t *testing.T, dir string) {
	if temporalClient == nil {
		t.Skip("needs the Temporal server")
	}
	input := makeItems(120, func(i int) string {
		if i%40 == 3 {
			return `,"fail":true`
		}
		return ""
	})
	bt := runBatch(t, fileStore(t), "replay", input, smallOpts("flaky", 10, 5))
	if bt.err != nil {
		t.Fatal(bt.err)
	}
	os.MkdirAll(dir, 0o755)
	for i, r := range historyRuns(t, bt.id) {
		writeHistory(t, filepath.Join(dir, fmt.Sprintf("%s-batch-run%d.json", historyGeneration, i+1)), fetchHistory(t, bt.id, r.runID))
	}
	writeHistory(t, filepath.Join(dir, historyGeneration+"-shard.json"), fetchHistory(t, bt.id+"/shard-0", ""))

	// A redrive of that batch.
	ctx := context.Background()
	run := redrive(t, bt, nil)
	writeHistory(t, filepath.Join(dir, historyGeneration+"-redrive.json"), fetchHistory(t, bt.id, run.GetRunID()))

	// A batch staging its own input object, started by hand through the
	// scheduled launcher.
	b, _ := blobstore.Open(ctx, bt.store)
	b.Put(ctx, "drop/in.jsonl", bytes.NewReader(input))
	in := pipeline.BatchInput{Store: bt.store, Source: "drop/in.jsonl", Schedule: "rec",
		InputURL: bt.store + "/drop/in.jsonl", Options: bt.opts}
	lrun, err := temporalClient.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: "rec-launcher", TaskQueue: bt.tq}, pipeline.ScheduledBatchWorkflowName, in)
	if err != nil {
		t.Fatal(err)
	}
	var res pipeline.BatchResult
	if err := lrun.Get(ctx, &res); err != nil {
		t.Fatal(err)
	}
	writeHistory(t, filepath.Join(dir, historyGeneration+"-launcher.json"), fetchHistory(t, "rec-launcher", lrun.GetRunID()))
	batchID := strings.TrimSuffix(strings.TrimPrefix(res.ManifestKey, "batches/"), "/manifest.json")
	writeHistory(t, filepath.Join(dir, historyGeneration+"-remote-input.json"), fetchHistory(t, batchID, ""))

	// The paths that stop a batch: the failure limit, a shard that fails,
	// a cancel in the middle of a chunk.
	o := smallOpts("flaky", 10, 5)
	o.MaxFailures = pipeline.MaxFailedItems(0)
	mf := runBatch(t, fileStore(t), "replay-maxfail", input, o)
	writeHistory(t, filepath.Join(dir, historyGeneration+"-maxfail.json"), fetchHistory(t, mf.id, ""))
	fs := runBatch(t, fileStore(t), "replay-failed-shard", input, smallOpts("no-such-processor", 10, 5))
	writeHistory(t, filepath.Join(dir, historyGeneration+"-failed-shard.json"), fetchHistory(t, fs.id, ""))
	co := smallOpts("slow", 10, 50)
	co.Concurrency, co.ItemParallelism = 2, 1
	done := make(chan *batch)
	go func() { done <- runBatch(t, fileStore(t), "replay-cancel", makeItems(300, nil), co) }()
	for {
		p, err := pipeline.QueryProgress(ctx, temporalClient, "replay-cancel")
		if err == nil && p.ShardsDone >= 2 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	temporalClient.CancelWorkflow(ctx, "replay-cancel", "")
	cb := <-done
	writeHistory(t, filepath.Join(dir, historyGeneration+"-cancel.json"), fetchHistory(t, cb.id, ""))
	writeHistory(t, filepath.Join(dir, historyGeneration+"-cancel-shard.json"), fetchHistory(t, cb.id+"/shard-2", ""))

	// The failure limit's prompt stop: shard 0 fails all its items and
	// stops itself at its budget; the batch cancels the slow shards still
	// running (each would take 5 s).
	fo := smallOpts("fail-or-slow", 50, 50)
	fo.Concurrency, fo.ItemParallelism = 4, 1
	fo.MaxFailures = pipeline.MaxFailedItems(5)
	fb := runBatch(t, fileStore(t), "replay-failstop", makeItems(400, func(i int) string {
		if i < 50 {
			return `,"fail":true`
		}
		return ""
	}), fo)
	if fb.err != nil {
		t.Fatal(fb.err)
	}
	writeHistory(t, filepath.Join(dir, historyGeneration+"-failstop.json"), fetchHistory(t, fb.id, ""))
	writeHistory(t, filepath.Join(dir, historyGeneration+"-failstop-shard.json"), fetchHistory(t, fb.id+"/shard-0", ""))
	writeHistory(t, filepath.Join(dir, historyGeneration+"-failstop-canceled-shard.json"), fetchHistory(t, fb.id+"/shard-1", ""))

	// Steering: a pause mid-batch (the running shards stop part way), a
	// refused second pause, updates of the window, the failure limit and
	// the rate while paused, a resume (the stopped shards continue), and
	// a narrower window, across continue-as-new.
	resetSteer()
	so := smallOpts("steer", 100, 3) // 4 s a shard: the pause stops them part way
	so.Concurrency, so.ItemParallelism = 2, 1
	sb, swait := startBatchOn(t, startWorker(t), fileStore(t), "replay-steer", makeItems(600, nil), so)
	waitFor(t, time.Minute, "no items processed", func() bool { return steerCalls.Load() >= 10 })
	if _, err := pipeline.Pause(ctx, temporalClient, sb.id, "recording"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 15*time.Second, "shards still running", func() bool { return progressOf(t, sb.id).InFlight == 0 })
	if _, err := pipeline.Pause(ctx, temporalClient, sb.id, "again"); err == nil {
		t.Fatal("second pause accepted")
	}
	limit, rate := pipeline.MaxFailedItems(50), 1000.0
	if _, err := pipeline.UpdateOptions(ctx, temporalClient, sb.id, pipeline.OptionsChange{Concurrency: 3, MaxFailures: &limit, Rate: &rate}); err != nil {
		t.Fatal(err)
	}
	if _, err := pipeline.Resume(ctx, temporalClient, sb.id); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Minute, "no continue-as-new", func() bool { return progressOf(t, sb.id).Run >= 2 })
	if _, err := pipeline.UpdateOptions(ctx, temporalClient, sb.id, pipeline.OptionsChange{Concurrency: 1}); err != nil {
		t.Fatal(err)
	}
	if sb = swait(); sb.err != nil {
		t.Fatal(sb.err)
	}
	for i, r := range historyRuns(t, sb.id) {
		writeHistory(t, filepath.Join(dir, fmt.Sprintf("%s-steer-run%d.json", historyGeneration, i+1)), fetchHistory(t, sb.id, r.runID))
	}
	writeHistory(t, filepath.Join(dir, historyGeneration+"-steer-shard.json"), fetchHistory(t, sb.id+"/shard-0", ""))

	// A canary that passes, paused while it runs (shard 0 stops part way,
	// then runs the rest of its items alone), across continue-as-new.
	resetSteer()
	po := smallOpts("steer", 100, 2) // 4 s a shard: the pause stops the canary part way
	po.Concurrency, po.ItemParallelism = 2, 1
	po.Canary = true
	pb, pwait := startBatchOn(t, startWorker(t), fileStore(t), "replay-canary-pass", makeItems(300, nil), po)
	waitFor(t, time.Minute, "no items processed", func() bool { return steerCalls.Load() >= 5 })
	if _, err := pipeline.Pause(ctx, temporalClient, pb.id, "canary"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 15*time.Second, "canary still running", func() bool { return progressOf(t, pb.id).InFlight == 0 })
	if p := progressOf(t, pb.id); p.Canary != pipeline.CanaryRunning || p.ShardsDone != 0 {
		t.Fatalf("paused canary: progress %+v, want the canary running part way", p)
	}
	if _, err := pipeline.Resume(ctx, temporalClient, pb.id); err != nil {
		t.Fatal(err)
	}
	if pb = pwait(); pb.err != nil || pb.failed {
		t.Fatalf("canary batch: %v (failed %v)", pb.err, pb.failed)
	}
	for i, r := range historyRuns(t, pb.id) {
		writeHistory(t, filepath.Join(dir, fmt.Sprintf("%s-canary-pass-run%d.json", historyGeneration, i+1)), fetchHistory(t, pb.id, r.runID))
	}

	// A canary that fails (shard 0 stops at its first failure), and a
	// redrive of it that runs the canary again.
	fco := smallOpts("canary", 10, 50)
	fco.Canary, fco.ItemParallelism = true, 1
	cf := runBatch(t, fileStore(t), "replay-canary-fail", makeItems(100, func(i int) string {
		if i == 2 {
			return `,"fail":true`
		}
		return ""
	}), fco)
	if !cf.failed {
		t.Fatalf("canary batch did not fail: %v", cf.err)
	}
	writeHistory(t, filepath.Join(dir, historyGeneration+"-canary-fail.json"), fetchHistory(t, cf.id, ""))
	writeHistory(t, filepath.Join(dir, historyGeneration+"-canary-fail-shard.json"), fetchHistory(t, cf.id+"/shard-0", ""))
	cspec, err := pipeline.ReadSpec(ctx, cf.bucket, cf.id)
	if err != nil {
		t.Fatal(err)
	}
	crun, err := pipeline.StartRedrive(ctx, temporalClient, cf.tq, cspec, 1)
	if err != nil {
		t.Fatal(err)
	}
	_ = crun.Get(ctx, nil) // fails again: its canary still fails
	writeHistory(t, filepath.Join(dir, historyGeneration+"-canary-redrive.json"), fetchHistory(t, cf.id, crun.GetRunID()))

	// A batch with a priority, a fairness key and weight of its own.
	pro := smallOpts("echo", 10, 50)
	pro.Priority, pro.FairnessKey, pro.FairnessWeight = 1, "interactive", 2
	pr := runBatch(t, fileStore(t), "replay-priority", makeItems(30, nil), pro)
	if pr.err != nil {
		t.Fatal(pr.err)
	}
	writeHistory(t, filepath.Join(dir, historyGeneration+"-priority.json"), fetchHistory(t, pr.id, ""))
	writeHistory(t, filepath.Join(dir, historyGeneration+"-priority-shard.json"), fetchHistory(t, pr.id+"/shard-0", ""))

	// Shards that run longer than a memo refresh (refreshMemo): two of
	// 14 s, each item 20 ms, one at a time.
	mo := smallOpts("slow", 700, 50)
	mo.ItemParallelism = 1
	mr := runBatch(t, fileStore(t), "replay-memo", makeItems(1400, nil), mo)
	if mr.err != nil {
		t.Fatal(mr.err)
	}
	writeHistory(t, filepath.Join(dir, historyGeneration+"-memo-refresh.json"), fetchHistory(t, mr.id, ""))
}

func writeHistory(t *testing.T, path string, h *historypb.History) {
	data, err := protojson.MarshalOptions{Indent: " "}.Marshal(h)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func workflowOpts(name string) workflow.RegisterOptions { return workflow.RegisterOptions{Name: name} }
