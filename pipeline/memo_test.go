package pipeline_test

import (
	"testing"
	"time"

	"github.com/batchpipe/batchpipe/manifests"
)

// memoCount reads a number of the batch's memo (JSON numbers decode as
// float64).
func memoCount(t *testing.T, id, key string) int64 {
	t.Helper()
	v, _ := memoOf(t, id)[key].(float64)
	return int64(v)
}

// The memo (the Web UI's view) moves while shards run, not only when they
// finish: two shards of 20 s each, and "done" is above 0 before either
// ends. At the end it is the batch's items.
func TestMemoMovesWithinShards(t *testing.T) {
	if testing.Short() {
		t.Skip("20 s shards")
	}
	o := smallOpts("slow", 1000, 4) // 20 ms an item, one at a time: 20 s a shard
	o.ItemParallelism = 1
	bt, wait := startBatchOn(t, startWorker(t), fileStore(t), "memo-moves", makeItems(2000, nil), o)
	var done int64
	waitFor(t, 19*time.Second, "memo done still 0 with no shard finished", func() bool {
		if memoCount(t, bt.id, "shards_done") > 0 {
			t.Fatal("a shard finished before the memo moved")
		}
		done = memoCount(t, bt.id, "done")
		return done > 0
	})
	t.Logf("memo done %d of 2000 mid-shard", done)
	bt = wait()
	if bt.err != nil {
		t.Fatal(bt.err)
	}
	if d, s := memoCount(t, bt.id, "done"), memoOf(t, bt.id)["status"]; d != 2000 || s != manifests.StatusSucceeded {
		t.Fatalf("memo at the end: done %d, status %v", d, s)
	}
}

// A redrive's memo ends with the batch's counts, not only the redriven
// shards'.
func TestMemoAfterRedrive(t *testing.T) {
	gateClosed.Store(true)
	defer gateClosed.Store(false)
	input := makeItems(100, func(i int) string {
		if i == 7 {
			return `,"gated":true`
		}
		return ""
	})
	bt := runBatch(t, fileStore(t), "memo-redrive", input, smallOpts("gate", 10, 4))
	if bt.err != nil {
		t.Fatal(bt.err)
	}
	if f := memoCount(t, bt.id, "failed"); f != 1 {
		t.Fatalf("memo failed %d after the first run, want 1", f)
	}
	gateClosed.Store(false)
	redrive(t, bt, nil)
	if d, f := memoCount(t, bt.id, "done"), memoCount(t, bt.id, "failed"); d != 100 || f != 0 {
		t.Fatalf("memo after the redrive: done %d failed %d, want 100 and 0", d, f)
	}
}
