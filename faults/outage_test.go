package faults_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/batchpipe/batchpipe/internal/testinfra"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
)

// pendingShards describes the pending activities of a batch's running
// shard workflows: the highest attempt and one last failure message.
func pendingShards(ctx context.Context, tc client.Client, batchID string) (running, maxAttempt int, lastFailure string) {
	resp, err := tc.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{
		Query: fmt.Sprintf("WorkflowId STARTS_WITH '%s/' AND ExecutionStatus = 'Running'", batchID),
	})
	if err != nil {
		return 0, 0, ""
	}
	for _, e := range resp.Executions {
		running++
		d, err := tc.DescribeWorkflowExecution(ctx, e.GetExecution().GetWorkflowId(), e.GetExecution().GetRunId())
		if err != nil {
			continue
		}
		for _, pa := range d.PendingActivities {
			if int(pa.GetAttempt()) > maxAttempt {
				maxAttempt = int(pa.GetAttempt())
				if f := pa.GetLastFailure(); f != nil {
					lastFailure = f.GetMessage()
				}
			}
		}
	}
	return running, maxAttempt, lastFailure
}

func TestMinIOOutage(t *testing.T) {
	c := track(t, "2")
	addr, tc := sharedServer(c)
	mio := newMinIO(c)
	bucket := mio.CreateBucket(c, "faults-2")
	store := mio.StoreURL(bucket, "outage")
	dir := c.TempDir()
	const n = 3000
	in := items(n, "m2", nil)
	writeItems(c, filepath.Join(dir, "in.jsonl"), in)
	logPath := filepath.Join(dir, "proc.log")
	const queue, id = "faults-2", "outage-2"
	w := startWorker(c, "worker", dir, addr, queue, nil, allowExec(slowProcessor(killSleep, logPath))...)
	t0 := time.Now()
	sub := start(c, "submit", dir, env(append(temporalEnv(addr), minioEnv()...)...), submitBin,
		"--store", store, "--task-queue", queue, "--batch-id", id, "--processor", slowProcessor(killSleep, logPath),
		"--shard-size", "50", "--concurrency", "4", "in.jsonl")
	waitProcessed(c, logPath, 600, 3*time.Minute, w, sub)

	mio.Kill()
	down := time.Now()
	atStop := processed(logPath)
	ctx := context.Background()
	maxAttempt, lastFailure := 0, ""
	for time.Since(down) < 20*time.Second {
		time.Sleep(2 * time.Second)
		if _, a, f := pendingShards(ctx, tc, id); a > maxAttempt {
			maxAttempt, lastFailure = a, f
		}
		if !sub.running() || !w.running() {
			c.Fatalf("a process exited during the outage: submit %s, worker %s\n%s", sub.exitString(), w.exitString(), testinfra.Tail(sub.stderr.String(), 2000))
		}
	}
	if err := mio.Restart(); err != nil {
		c.Fatalf("starting MinIO again: %v", err)
	}
	up := time.Now()
	atStart := processed(logPath)
	r := sub.result(6 * time.Minute)
	if r.code != 0 {
		c.Fatalf("submit: %s", r)
	}
	finished := time.Since(up)
	if !w.running() {
		c.Fatalf("worker exited: %s", w.exitString())
	}
	if maxAttempt < 2 {
		c.Errorf("no shard activity was retried during the 20 s outage (highest attempt %d)", maxAttempt)
	}
	ck := checkBatch(c, store, id, in, want{})
	// Multipart uploads left open by the outage are not objects (nothing
	// reads them), but count them.
	mc, err := mio.Client()
	if err != nil {
		c.Fatal(err)
	}
	open := 0
	for u := range mc.ListIncompleteUploads(ctx, bucket, "", true) {
		if u.Err == nil {
			open++
		}
	}
	pl := readProcLog(c, logPath)
	if len(pl.perItem) != n {
		c.Errorf("faultproc saw %d distinct items, want %d", len(pl.perItem), n)
	}
	if len(lastFailure) > 120 {
		lastFailure = lastFailure[:120] + "…"
	}
	c.Note("MinIO killed after %d items processed, down %.0f s; during it shards processed items until they could not write (%d more), then ProcessShard retried with backoff, up to attempt %d (%q); after the restart the batch finished in %.0f s (%.0f s in all); %d repeated processings; manifest: every index once, outputs right; %d objects under the batch, each decodes whole (no half-written object); %d incomplete multipart uploads",
		atStop, up.Sub(down).Seconds(), atStart-atStop, maxAttempt, strings.TrimSpace(lastFailure), finished.Seconds(), time.Since(t0).Seconds(), pl.repeated, ck.objects, open)
}
