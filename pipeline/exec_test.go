package pipeline_test

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"go.temporal.io/sdk/worker"

	"github.com/batchpipe/batchpipe/execproc"
	"github.com/batchpipe/batchpipe/internal/testinfra"
	"github.com/batchpipe/batchpipe/manifests"
	"github.com/batchpipe/batchpipe/pipeline"
)

// startExecWorker starts a worker on a task queue of its own, whose exec
// processors run in pools of poolSize processes, and returns the queue.
func startExecWorker(t *testing.T, poolSize int, wo worker.Options) string {
	t.Helper()
	reg := execproc.NewRegistry(execproc.Options{PoolSize: poolSize, Logger: quietLog})
	tq := fmt.Sprintf("test-exec-%d", queueSeq.Add(1))
	w := pipeline.NewWorker(temporalClient, tq, pipeline.WorkerOptions{Processors: reg, Logger: quietLog, Worker: wo,
		Trust: pipeline.TrustAll()}) // the tests' exec: commands vary, and their stores are file://
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Stop(); reg.Close() })
	return tq
}

// TestExecBatchEndToEnd runs a real batch through exec:python3 with
// processes that exit every 20 items and items failing permanently.
func TestExecBatchEndToEnd(t *testing.T) {
	if temporalClient == nil {
		t.Skip("needs the Temporal server (not in -short mode)")
	}
	f := testinfra.NewExecScript(t)
	tq := startExecWorker(t, 6, worker.Options{MaxConcurrentActivityExecutionSize: 64})

	const n = 200
	input := makeItems(n, func(i int) string {
		if i%23 == 5 {
			return `,"mode":"perm"`
		}
		return ""
	})
	opts := smallOpts("exec:"+f.Command("20"), 50, 10)
	opts.ItemAttempts = 5
	bt := runBatchOn(t, tq, fileStore(t), fmt.Sprintf("exec-e2e-%d", queueSeq.Add(1)), input, opts)
	if bt.err != nil {
		t.Fatal(bt.err)
	}
	m := bt.manifest(t)
	if m.Processor != opts.Processor || m.Input.Shards != 4 || m.Status != manifests.StatusCompletedWithFailures {
		t.Fatalf("manifest: processor %q, %d shards, status %s", m.Processor, m.Input.Shards, m.Status)
	}
	checkAgainstInput(t, bt, m, func(in json.RawMessage) json.RawMessage {
		var v struct {
			N    int    `json:"n"`
			Name string `json:"name"`
		}
		json.Unmarshal(in, &v)
		if v.N%23 == 5 {
			return nil
		}
		return json.RawMessage(fmt.Sprintf(`{"n":%d,"twice":%d,"echo":null}`, v.N, 2*v.N))
	})
	// Failed items carry the processor's message as a permanent error,
	// after one attempt; the others succeeded at the first.
	for _, res := range m.Results {
		for _, l := range decodeLines[manifests.ResultLine](t, readObject(t, bt.bucket, res.Key, res.Size, res.SHA256)) {
			if l.Status != manifests.ItemFailed {
				// Processes exiting between items cost no attempts.
				if l.Attempts != 1 {
					t.Fatalf("item %d succeeded after %d attempts", l.Index, l.Attempts)
				}
				continue
			}
			if l.Error == nil || l.Error.Type != pipeline.ItemErrorPermanent || l.Error.Message != fmt.Sprintf("item %d is bad", l.Index) || l.Attempts != 1 {
				t.Fatalf("item %d: %+v attempts %d", l.Index, l.Error, l.Attempts)
			}
		}
	}
	pids := f.Pids(t)
	if len(pids) < n/20 {
		t.Fatalf("%d processes for %d items at 20 per process", len(pids), n)
	}
	t.Logf("%d items, %d failed, %d processes started", m.Counts.Items, m.Counts.Failed, len(pids))
}

// An item's --item-timeout starts when a process takes it, not while it
// waits for one: 4 items of 0.5 s each on a pool of 1 process, all 4 at
// once, with a 1.4 s timeout and a single attempt, all succeed (the last
// waits 1.5 s for the process; counted, the wait would fail the last two).
// The first item's time includes the process's start: 0.9 s is left for
// it on a loaded machine.
func TestExecQueueWaitIsNotItemTime(t *testing.T) {
	if temporalClient == nil {
		t.Skip("needs the Temporal server (not in -short mode)")
	}
	f := testinfra.NewExecScript(t)
	tq := startExecWorker(t, 1, worker.Options{})

	opts := smallOpts("exec:"+f.Command(), 10, 10)
	opts.ItemParallelism, opts.ItemTimeout, opts.ItemAttempts = 4, 1400*time.Millisecond, 1
	input := makeItems(4, func(int) string { return `,"sleep":0.5` })
	bt := runBatchOn(t, tq, fileStore(t), fmt.Sprintf("exec-queue-%d", queueSeq.Add(1)), input, opts)
	if bt.err != nil {
		t.Fatal(bt.err)
	}
	m := bt.manifest(t)
	if m.Status != manifests.StatusSucceeded || m.Counts.Succeeded != 4 {
		var why []string
		for _, res := range m.Results {
			for _, l := range decodeLines[manifests.ResultLine](t, readObject(t, bt.bucket, res.Key, res.Size, res.SHA256)) {
				if l.Error != nil {
					why = append(why, fmt.Sprintf("item %d: %s", l.Index, l.Error.Message))
				}
			}
		}
		t.Fatalf("status %s, counts %+v; want 4 succeeded: %v", m.Status, m.Counts, why)
	}
}
