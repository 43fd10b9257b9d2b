package pipeline

import (
	"context"
	"sync"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"
)

// InFlight is what a batch's shards in flight are doing, as Temporal
// describes them. Workflow code cannot read its children's heartbeats, so
// clients ask: the parent's pending children, then each child's shard
// activity.
type InFlight struct {
	// Running shards are processing on a worker now (their activity started).
	Running int `json:"running"`
	// Waiting shards were started but wait for a worker's free slot (their
	// activity is scheduled, or their first workflow task has not run).
	Waiting int `json:"waiting"`
	// Items is the items the running shards reported done, by heartbeat
	// (every few seconds; a shard's last seconds show when it finishes).
	Items int64 `json:"items"`
	// Shards maps each shard workflow in flight to its items done.
	Shards map[string]int64 `json:"-"`
}

// describeParallel bounds the describes DescribeInFlight has in flight.
const describeParallel = 8

// DescribeInFlight describes the running batch's shards in flight. A shard
// that cannot be described (it just finished) counts as neither running
// nor waiting.
func DescribeInFlight(ctx context.Context, c client.Client, batchID string) (InFlight, error) {
	desc, err := c.DescribeWorkflowExecution(ctx, batchID, "")
	if err != nil {
		return InFlight{}, err
	}
	children := desc.GetPendingChildren()
	var (
		mu  sync.Mutex
		wg  sync.WaitGroup
		sem = make(chan struct{}, describeParallel)
		in  = InFlight{Shards: make(map[string]int64, len(children))}
	)
	for _, ch := range children {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			running, items, ok := describeShard(ctx, c, ch.GetWorkflowId(), ch.GetRunId())
			if !ok {
				return
			}
			mu.Lock()
			defer mu.Unlock()
			in.Shards[ch.GetWorkflowId()] = items
			in.Items += items
			if running {
				in.Running++
			} else {
				in.Waiting++
			}
		}()
	}
	wg.Wait()
	return in, nil
}

// describeShard says whether the shard workflow's activity runs on a worker
// and the items it reported done.
func describeShard(ctx context.Context, c client.Client, id, runID string) (running bool, items int64, ok bool) {
	d, err := c.DescribeWorkflowExecution(ctx, id, runID)
	if err != nil || d.GetWorkflowExecutionInfo().GetCloseTime() != nil {
		return false, 0, false
	}
	for _, a := range d.GetPendingActivities() {
		if a.GetActivityType().GetName() != activityProcessShard {
			continue
		}
		if a.GetState() != enumspb.PENDING_ACTIVITY_STATE_STARTED {
			return false, 0, true // scheduled: waiting for a slot, or between attempts
		}
		var n int64
		if a.GetHeartbeatDetails() != nil {
			_ = converter.GetDefaultDataConverter().FromPayloads(a.GetHeartbeatDetails(), &n)
		}
		return true, n, true
	}
	return false, 0, true // its workflow task has not run yet
}
