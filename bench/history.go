package bench

import (
	"context"
	"fmt"
	"time"

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

// timeline collects, from the histories of a batch's children, when they
// ran, to say where a batch's time goes.
type timeline struct {
	firstChildStart, lastChildClose time.Time
	children                        int
	scheduleToStart, activityRun    time.Duration // sums over children
	childTotal                      time.Duration
}

func (t *timeline) child(h *historypb.History) {
	events := h.GetEvents()
	if len(events) == 0 {
		return
	}
	start, end := events[0].GetEventTime().AsTime(), events[len(events)-1].GetEventTime().AsTime()
	if t.firstChildStart.IsZero() || start.Before(t.firstChildStart) {
		t.firstChildStart = start
	}
	if end.After(t.lastChildClose) {
		t.lastChildClose = end
	}
	sched, started, done := activityTimes(events)
	t.children++
	t.childTotal += end.Sub(start)
	if !started.IsZero() {
		t.scheduleToStart += started.Sub(sched)
		t.activityRun += done.Sub(started)
	}
}

// activityTimes returns when the first activity of a history was scheduled,
// started (its last attempt) and closed.
func activityTimes(events []*historypb.HistoryEvent) (sched, started, done time.Time) {
	for _, e := range events {
		switch e.GetEventType() {
		case enumspb.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
			if sched.IsZero() {
				sched = e.GetEventTime().AsTime()
			}
		case enumspb.EVENT_TYPE_ACTIVITY_TASK_STARTED:
			if started.IsZero() {
				started = e.GetEventTime().AsTime()
			}
		case enumspb.EVENT_TYPE_ACTIVITY_TASK_COMPLETED, enumspb.EVENT_TYPE_ACTIVITY_TASK_FAILED, enumspb.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT:
			if done.IsZero() {
				done = e.GetEventTime().AsTime()
			}
		}
	}
	return sched, started, done
}

// summary returns the timeline in seconds: from the parent's start to the
// first child's start, to the last child's close and to the parent's close;
// the finalize activity's run; and per child (mean) its whole life, the
// wait of its activity for a worker and the activity's run.
func (t *timeline) summary(runs []*historypb.History) map[string]float64 {
	if len(runs) == 0 || len(runs[0].GetEvents()) == 0 {
		return nil
	}
	begin := runs[0].GetEvents()[0].GetEventTime().AsTime()
	last := runs[len(runs)-1].GetEvents()
	m := map[string]float64{
		"parent_closed": last[len(last)-1].GetEventTime().AsTime().Sub(begin).Seconds(),
	}
	if sched, started, done := activityTimes(last); !done.IsZero() {
		m["finalize_schedule_to_start"] = started.Sub(sched).Seconds()
		m["finalize_run"] = done.Sub(started).Seconds()
	}
	if t.children > 0 {
		n := float64(t.children)
		m["first_child_started"] = t.firstChildStart.Sub(begin).Seconds()
		m["last_child_closed"] = t.lastChildClose.Sub(begin).Seconds()
		m["child_mean_life"] = t.childTotal.Seconds() / n
		m["child_mean_activity_schedule_to_start"] = t.scheduleToStart.Seconds() / n
		m["child_mean_activity_run"] = t.activityRun.Seconds() / n
	}
	return m
}
