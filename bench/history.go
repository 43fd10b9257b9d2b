package bench

import (
	"context"
	"fmt"

	enumspb "go.temporal.io/api/enums/v1"
	historypb "go.temporal.io/api/history/v1"
	"go.temporal.io/sdk/client"
	"google.golang.org/protobuf/proto"
)

// fetchHistory reads one run's whole history (runID "" is the latest run).
func fetchHistory(ctx context.Context, c client.Client, id, runID string) (*historypb.History, error) {
	it := c.GetWorkflowHistory(ctx, id, runID, false, enumspb.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
	h := &historypb.History{}
	for it.HasNext() {
		e, err := it.Next()
		if err != nil {
			return nil, fmt.Errorf("history of %s: %w", id, err)
		}
		h.Events = append(h.Events, e)
	}
	return h, nil
}

// runChain reads every run of a workflow that continued-as-new, from its
// first run to the last.
func runChain(ctx context.Context, c client.Client, id string) ([]*historypb.History, error) {
	desc, err := c.DescribeWorkflowExecution(ctx, id, "")
	if err != nil {
		return nil, err
	}
	runID := desc.GetWorkflowExecutionInfo().GetFirstRunId()
	if runID == "" {
		runID = desc.GetWorkflowExecutionInfo().GetExecution().GetRunId()
	}
	var runs []*historypb.History
	for runID != "" {
		h, err := fetchHistory(ctx, c, id, runID)
		if err != nil {
			return nil, err
		}
		runs = append(runs, h)
		runID = ""
		if n := len(h.Events); n > 0 {
			runID = h.Events[n-1].GetWorkflowExecutionContinuedAsNewEventAttributes().GetNewExecutionRunId()
		}
	}
	return runs, nil
}

// observe records a run's history size in the row's largest-history figures.
func (r *Row) observe(h *historypb.History) {
	r.MaxEvents = max(r.MaxEvents, len(h.GetEvents()))
	r.MaxHistoryBytes = max(r.MaxHistoryBytes, proto.Size(h))
}
