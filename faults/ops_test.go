package faults_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"

	"github.com/batchpipe/batchpipe/manifests"
)

// parent runs a test whose subtests are cases: in parallel with the rest.
func parent(t *testing.T) {
	if testing.Short() {
		t.Skip("fault suite: runs processes and servers; skipped in -short mode")
	}
	t.Parallel()
}

// executions counts the workflow executions (every run) with this id.
func executions(t testing.TB, tc client.Client, query string) int {
	t.Helper()
	resp, err := tc.ListWorkflow(context.Background(), &workflowservice.ListWorkflowExecutionsRequest{Query: query})
	if err != nil {
		t.Fatalf("listing workflows (%s): %v", query, err)
	}
	return len(resp.Executions)
}

// executionsSettle is executions polled until it is want or ten seconds
// have passed: visibility is written asynchronously, after a workflow
// starts or closes.
func executionsSettle(t testing.TB, tc client.Client, query string, want int) int {
	t.Helper()
	k := executions(t, tc, query)
	for deadline := time.Now().Add(10 * time.Second); k != want && time.Now().Before(deadline); k = executions(t, tc, query) {
		time.Sleep(200 * time.Millisecond)
	}
	return k
}

// Case 4. internal/cli's TestSubmitSameBatchID covers resubmitting an id
// (same input attaches or reports, another input is refused) one submit
// after the other; here two submit processes race from the start.
func TestSameBatchTwiceAtOnce(t *testing.T) {
	parent(t)
	t.Run("server", func(t *testing.T) {
		c := track(t, "4a")
		addr, tc := sharedServer(c)
		dir := c.TempDir()
		store := fileStore(c, filepath.Join(dir, "store"))
		const queue, n = "faults-4a", 600
		// Each round's processor logs to a file of its own: the worker is
		// given the three command lines.
		roundLog := func(round int) string { return filepath.Join(dir, fmt.Sprintf("same-4a-%d.log", round)) }
		trust := append([]string{}, allowFile...)
		for round := 1; round <= 3; round++ {
			trust = append(trust, allowExec(slowProcessor(5*time.Millisecond, roundLog(round)))...)
		}
		startWorker(c, "worker", dir, addr, queue, nil, trust...)
		environ := env(temporalEnv(addr)...)
		var notes []string
		for round := 1; round <= 3; round++ {
			id := fmt.Sprintf("same-4a-%d", round)
			in := items(n, id, nil)
			writeItems(c, filepath.Join(dir, id+".jsonl"), in)
			logPath := roundLog(round)
			args := []string{"--store", store, "--task-queue", queue, "--batch-id", id, "--processor", slowProcessor(5*time.Millisecond, logPath), "--shard-size", "60", id + ".jsonl"}
			a := start(c, "submit A", dir, environ, submitBin, args...)
			b := start(c, "submit B", dir, environ, submitBin, args...)
			ra, rb := a.result(3*time.Minute), b.result(3*time.Minute)
			for _, r := range []run{ra, rb} {
				if r.code != 0 || !strings.Contains(r.stdout, fmt.Sprintf("batch %s succeeded: %d items", id, n)) {
					c.Fatalf("round %d: both submits must report the one batch as succeeded: %s", round, r)
				}
			}
			if k := executionsSettle(c, tc, fmt.Sprintf("WorkflowId = '%s'", id), 1); k != 1 {
				c.Fatalf("round %d: %d workflow executions with id %s, want 1", round, k, id)
			}
			checkBatch(c, store, id, in, want{})
			pl := readProcLog(c, logPath)
			if pl.total != n || len(pl.perItem) != n {
				c.Fatalf("round %d: items processed %d times (%d distinct), want each once: one batch", round, pl.total, len(pl.perItem))
			}
			how := func(r run) string {
				switch {
				case strings.Contains(r.stderr, "already finished"):
					return "reported the finished batch"
				case strings.Contains(r.stderr, "attaching"):
					return "found it staged and attached"
				}
				return "staged and started it"
			}
			notes = append(notes, fmt.Sprintf("%s/%s", how(ra), how(rb)))
		}
		c.Note("3 rounds of two concurrent submits (A/B: %s): each time both exited 0 reporting the same batch, 1 workflow execution, each item processed once; manifest checked in full", strings.Join(notes, ", "))
	})
	t.Run("embedded", func(t *testing.T) {
		c := track(t, "4b")
		dir := c.TempDir()
		const n, id = 600, "same-4b"
		in := items(n, id, nil)
		writeItems(c, filepath.Join(dir, "in.jsonl"), in)
		logPath := filepath.Join(dir, "proc.log")
		args := []string{"--batch-id", id, "--processor", slowProcessor(5*time.Millisecond, logPath), "--shard-size", "60", "in.jsonl"}
		a := start(c, "submit A", dir, env(), submitBin, args...)
		b := start(c, "submit B", dir, env(), submitBin, args...)
		ra, rb := a.result(3*time.Minute), b.result(3*time.Minute)
		ok, busy := 0, 0
		for _, r := range []run{ra, rb} {
			switch {
			case r.code == 0 && strings.Contains(r.stdout, fmt.Sprintf("batch %s succeeded: %d items", id, n)):
				ok++
			case r.code == 2 && strings.Contains(r.stderr, "another submit is running in this directory"):
				busy++
			default:
				c.Fatalf("a submit neither reported the batch nor said the directory is in use: %s", r)
			}
		}
		if ok == 0 {
			c.Fatalf("no submit ran the batch:\n%s\n%s", ra, rb)
		}
		store := "file://" + filepath.Join(dir, ".batchpipe", "blobs")
		checkBatch(c, store, id, in, want{})
		pl := readProcLog(c, logPath)
		if pl.total != n || len(pl.perItem) != n {
			c.Fatalf("items processed %d times (%d distinct), want each once: one batch", pl.total, len(pl.perItem))
		}
		// Run again, it reports the finished batch without processing anything.
		r := submit(c, dir, env(), 2*time.Minute, args...)
		if r.code != 0 || !strings.Contains(r.stderr, "already finished") || processed(logPath) != n {
			c.Fatalf("a third submit of the finished batch: %s", r)
		}
		c.Note("two concurrent submits in one directory: %d ran or reported the batch, %d exited 2 at once saying the directory is in use (documented: use `worker --dev` to share a server); each item processed once; a third submit reported the finished batch; manifest checked in full", ok, busy)
	})
}

// Case 6. pipeline's TestCancelThenRedriveCoversEveryItem (in process) and
// internal/cli's TestOpsCancelRunning (embedded, nothing running the batch)
// cover the logic; here the batch runs on a worker process when `submit
// cancel` stops it, and `submit redrive` finishes it.
func TestCancelThenRedrive(t *testing.T) {
	c := track(t, "6")
	addr, tc := sharedServer(c)
	dir := c.TempDir()
	store := fileStore(c, filepath.Join(dir, "store"))
	const queue, id, n = "faults-6", "cancel-6", 1000
	in := items(n, "c6", nil)
	writeItems(c, filepath.Join(dir, "in.jsonl"), in)
	logPath := filepath.Join(dir, "proc.log")
	w := startWorker(c, "worker", dir, addr, queue, nil, append(allowExec(slowProcessor(100*time.Millisecond, logPath)), allowFile...)...)
	environ := env(temporalEnv(addr)...)
	// 100 ms an item: 4 shards of 50 share 8 processes and finish in waves
	// of ~200 items every 2.5 s, so the cancel (sent at 300, after the
	// half second `submit cancel` takes to start) lands mid-shard.
	sub := start(c, "submit", dir, environ, submitBin, "--store", store, "--task-queue", queue, "--batch-id", id,
		"--processor", slowProcessor(100*time.Millisecond, logPath), "--shard-size", "50", "--concurrency", "4", "in.jsonl")
	waitProcessed(c, logPath, 300, 3*time.Minute, w, sub)
	atCancel := processed(logPath)

	rc := submit(c, dir, environ, 2*time.Minute, "cancel", id, "--store", store, "--task-queue", queue)
	if rc.code != 0 || !strings.Contains(rc.stdout, "canceled") {
		c.Fatalf("submit cancel: %s", rc)
	}
	canceled := time.Now()
	rs := sub.result(2 * time.Minute)
	if rs.code != 1 || !strings.Contains(rs.stdout, "canceled") {
		c.Fatalf("the waiting submit after the cancel: want exit 1 reporting canceled: %s", rs)
	}
	if k := executionsSettle(c, tc, fmt.Sprintf("WorkflowId STARTS_WITH '%s/' AND ExecutionStatus = 'Running'", id), 0); k != 0 {
		c.Fatalf("%d shard workflows still running 10 s after the cancel", k)
	}
	ctx := context.Background()
	b1, err := manifests.Open(ctx, openStore(c, store), id)
	if err != nil {
		c.Fatal(err)
	}
	m1 := b1.Manifest
	if m1.Status != manifests.StatusCanceled || m1.Counts.Items >= n || m1.Counts.Failed != 0 {
		c.Fatalf("canceled manifest: status %s, counts %+v", m1.Status, m1.Counts)
	}
	if err := b1.Verify(ctx); err != nil {
		c.Fatalf("canceled manifest does not verify: %v", err)
	}

	time.Sleep(2 * time.Second) // anything still running shows in faultproc's log
	redriveAt := time.Now()
	rr := submit(c, dir, environ, 5*time.Minute, "redrive", id, "--store", store, "--task-queue", queue)
	if rr.code != 0 {
		c.Fatalf("submit redrive: %s", rr)
	}
	ck := checkBatch(c, store, id, in, want{})
	if ck.m.Redrives != 1 {
		c.Errorf("redrives = %d, want 1", ck.m.Redrives)
	}
	// The union: the canceled manifest's objects are kept as they were; a
	// shard whose activity finished after the cancel (it hears of it only at
	// a heartbeat) committed its own object late, which the redrive keeps;
	// the others are the redrive's. Together: every item, once.
	kept := map[string]manifests.Result{}
	for _, r := range m1.Results {
		kept[r.Key] = r
	}
	var keptItems, lateItems, newItems int64
	lateShards := 0
	for _, r := range ck.m.Results {
		shard := int(r.FirstIndex / int64(m1.Input.ShardSize))
		if old, ok := kept[r.Key]; ok {
			if old != r {
				c.Errorf("result %s changed by the redrive: %+v, was %+v", r.Key, r, old)
			}
			keptItems += r.Items
			delete(kept, r.Key)
			continue
		}
		switch r.Key {
		case manifests.ResultKey(id, shard):
			lateItems += r.Items
			lateShards++
		case manifests.RedriveResultKey(id, shard, 1):
			newItems += r.Items
		default:
			c.Errorf("result %s is neither the canceled run's nor the redrive's", r.Key)
		}
	}
	if len(kept) != 0 || keptItems != m1.Counts.Items || keptItems+lateItems+newItems != n {
		c.Fatalf("union: %d results of the canceled run missing; %d kept + %d committed late + %d redriven items, want %d", len(kept), keptItems, lateItems, newItems, n)
	}
	pl := readProcLog(c, logPath)
	late, last := pl.between(canceled, redriveAt)
	lateNote := "nothing was processed after `submit cancel` returned"
	if late > 0 {
		lateNote = fmt.Sprintf("%d items were still processed after `submit cancel` returned, the last %.1f s after (shards in flight run until their activity hears of the cancel at a heartbeat, or finish)", late, last.Sub(canceled).Seconds())
	}
	c.Note("cancel sent after %d items processed: the canceled manifest listed %d items in %d objects (verified), no shard workflow left running, the waiting submit exited 1; %s; %d shards (%d items) committed after the canceled manifest and were kept; redrive re-ran the %d items of the other unfinished shards: the union covers all %d once (the canceled manifest's objects unchanged); %d processings in all were repeats; manifest checked in full",
		atCancel, m1.Counts.Items, len(m1.Results), lateNote, lateShards, lateItems, newItems, n, pl.repeated)
}
