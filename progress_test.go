package batchpipe_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/batchpipe/batchpipe"
	"github.com/batchpipe/batchpipe/embedded"
	"github.com/batchpipe/batchpipe/manifests"
	"github.com/batchpipe/batchpipe/pipeline"
)

// TestProgressMovesWithinShards: a batch of 8 slow shards, 4 at a time on
// the one worker: progress counts items of running shards (by heartbeat)
// before any shard finishes, says 4 shards run and 4 wait, and Status
// agrees.
func TestProgressMovesWithinShards(t *testing.T) {
	ctx := context.Background()
	reg := pipeline.NewRegistry()
	reg.Register("slow", pipeline.ProcessorFunc(func(ctx context.Context, in json.RawMessage) (json.RawMessage, error) {
		select {
		case <-time.After(20 * time.Millisecond):
			return in, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}))
	defer reg.Close()
	c, err := embedded.Open(ctx, embedded.Options{Dir: t.TempDir(), Processors: reg})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const shardSize, shards = 500, 8 // 10 s a shard, one item at a time: heartbeats come every 5 s
	in := writeItems(t, "slow.jsonl", "s", shardSize*shards)
	b, err := c.Submit(ctx, batchpipe.Request{Input: in, Processor: "slow", ShardSize: shardSize, Concurrency: shards, ItemParallelism: 1})
	if err != nil {
		t.Fatal(err)
	}
	var (
		midShard    int64 // a Done seen while no shard had finished, not a whole number of shards
		split       bool  // 4 running and 4 waiting seen
		last        int64
		wentBack    bool
		statusMoved bool
	)
	res, err := b.Wait(ctx, func(p batchpipe.Progress) {
		if p.Done < last {
			wentBack = true
		}
		last = p.Done
		if p.ShardsDone == 0 && p.Done > 0 && p.Done%shardSize != 0 {
			midShard = p.Done
		}
		if p.Running == pipeline.DefaultConcurrentShards() && p.Waiting == shards-p.Running {
			split = true
		}
		if midShard > 0 && !statusMoved {
			st, err := b.Status(ctx)
			statusMoved = err == nil && st.Done > 0 && st.Running > 0 && st.Running+st.Waiting <= shards
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Manifest.Status != manifests.StatusSucceeded || res.Manifest.Counts.Succeeded != shardSize*shards {
		t.Fatalf("manifest %s %+v", res.Manifest.Status, res.Manifest.Counts)
	}
	if midShard == 0 {
		t.Error("progress moved only when whole shards finished")
	}
	if !split {
		t.Errorf("never saw %d shards running and %d waiting", pipeline.DefaultConcurrentShards(), shards-pipeline.DefaultConcurrentShards())
	}
	if wentBack {
		t.Error("progress went back")
	}
	if !statusMoved {
		t.Error("Status did not count running shards' items")
	}
}
