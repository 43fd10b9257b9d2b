package batchpipe_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/workflowservice/v1"

	"github.com/batchpipe/batchpipe"
	"github.com/batchpipe/batchpipe/manifests"
	"github.com/batchpipe/batchpipe/pipeline"
)

// TestFailedBatchIsAFailedWorkflow: a batch whose manifest says failed ends
// as a failed workflow, and the search attributes find it, and its shards,
// in one query each.
func TestFailedBatchIsAFailedWorkflow(t *testing.T) {
	ctx := context.Background()
	c := newClient(t)
	tc, _ := c.Temporal(ctx)
	// Item 3 lacks "arg2": the example processor fails it permanently.
	path := filepath.Join(t.TempDir(), "in.jsonl")
	var lines []byte
	for i := range 50 {
		if i == 3 {
			lines = append(lines, `{"arg1":"x"}`+"\n"...)
			continue
		}
		lines = append(lines, fmt.Sprintf(`{"arg1":"a %d","arg2":"b"}`+"\n", i)...)
	}
	if err := os.WriteFile(path, lines, 0o644); err != nil {
		t.Fatal(err)
	}
	id := "sa-failed-" + fmt.Sprint(os.Getpid())
	limit, _ := pipeline.ParseFailureLimit("0")
	b, err := c.Submit(ctx, batchpipe.Request{Input: path, BatchID: id, ShardSize: 10, MaxFailures: limit})
	if err != nil {
		t.Fatal(err)
	}
	res, err := b.Wait(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Manifest.Status != manifests.StatusFailed {
		t.Fatalf("manifest status %s, want failed", res.Manifest.Status)
	}
	desc, err := tc.DescribeWorkflowExecution(ctx, id, "")
	if err != nil {
		t.Fatal(err)
	}
	if got := desc.GetWorkflowExecutionInfo().GetStatus(); got != enumspb.WORKFLOW_EXECUTION_STATUS_FAILED {
		t.Errorf("workflow status %s, want FAILED", got)
	}
	// Visibility is written after the workflow closes, asynchronously: a
	// query right after Wait can still see the running batch. Poll until
	// the count is as wanted or ten seconds have passed.
	countUntil := func(query string, want func(int64) bool) (int64, bool) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
			r, err := tc.CountWorkflow(ctx, &workflowservice.CountWorkflowExecutionsRequest{Query: query})
			if err != nil {
				t.Fatalf("%s: %v", query, err)
			}
			if n := r.GetCount(); want(n) || time.Now().After(deadline) {
				return n, want(n)
			}
		}
	}
	if n, ok := countUntil(fmt.Sprintf(`BatchpipeRole = "batch" AND BatchpipeStatus = "failed" AND BatchpipeBatchId = %q`, id),
		func(n int64) bool { return n == 1 }); !ok {
		t.Errorf("batches of id %s with status failed: %d, want 1", id, n)
	}
	if n, ok := countUntil(fmt.Sprintf(`BatchpipeRole = "shard" AND BatchpipeBatchId = %q`, id),
		func(n int64) bool { return n >= 1 && n <= 5 }); !ok {
		t.Errorf("shards of batch %s: %d, want 1..5", id, n)
	}
}
