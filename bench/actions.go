package bench

import (
	enumspb "go.temporal.io/api/enums/v1"
	historypb "go.temporal.io/api/history/v1"
)

// Actions counts Temporal Cloud's billable actions
// (https://docs.temporal.io/cloud/actions), by kind. Everything but
// Heartbeats and Queries is read from event histories; those two never
// appear in a history and are counted on the wire (gRPC calls that reached
// the server).
type Actions struct {
	// WorkflowStarts are runs started by a client (not a parent, not
	// continue-as-new).
	WorkflowStarts int64 `json:"workflow_starts"`
	// ContinueAsNew are runs started by continue-as-new: one action each.
	ContinueAsNew int64 `json:"continue_as_new"`
	// ChildStarts are StartChildWorkflowExecutionInitiated events and
	// ChildExecutions the children's own WorkflowExecutionStarted events:
	// Temporal Cloud bills a child as two actions, one for each.
	ChildStarts     int64 `json:"child_starts"`
	ChildExecutions int64 `json:"child_executions"`
	// Activities are activity attempts (started or retried).
	Activities int64 `json:"activities"`
	// Heartbeats are RecordActivityTaskHeartbeat calls that reached the
	// server (after the SDK's throttling).
	Heartbeats int64 `json:"heartbeats"`
	Timers     int64 `json:"timers"`
	// Signals counts signals received (WorkflowExecutionSignaled).
	Signals int64 `json:"signals"`
	// Queries answered by a worker.
	Queries int64 `json:"queries"`
	Updates int64 `json:"updates"`
	// SearchAttributeUpserts excludes the TemporalChangeVersion upserts of
	// workflow versioning, which are not billed.
	SearchAttributeUpserts int64 `json:"search_attribute_upserts"`
	SideEffects            int64 `json:"side_effects"`
	// LocalActivities counts workflow tasks that recorded local activity
	// markers: all of one task's local activities are one action.
	LocalActivities int64 `json:"local_activities"`
}

// Total is the number of billable actions.
func (a Actions) Total() int64 {
	return a.WorkflowStarts + a.ContinueAsNew + a.ChildStarts + a.ChildExecutions + a.Activities +
		a.Heartbeats + a.Timers + a.Signals + a.Queries + a.Updates + a.SearchAttributeUpserts + a.SideEffects + a.LocalActivities
}

// Add returns a+b.
func (a Actions) Add(b Actions) Actions {
	return Actions{
		WorkflowStarts:         a.WorkflowStarts + b.WorkflowStarts,
		ContinueAsNew:          a.ContinueAsNew + b.ContinueAsNew,
		ChildStarts:            a.ChildStarts + b.ChildStarts,
		ChildExecutions:        a.ChildExecutions + b.ChildExecutions,
		Activities:             a.Activities + b.Activities,
		Heartbeats:             a.Heartbeats + b.Heartbeats,
		Timers:                 a.Timers + b.Timers,
		Signals:                a.Signals + b.Signals,
		Queries:                a.Queries + b.Queries,
		Updates:                a.Updates + b.Updates,
		SearchAttributeUpserts: a.SearchAttributeUpserts + b.SearchAttributeUpserts,
		SideEffects:            a.SideEffects + b.SideEffects,
		LocalActivities:        a.LocalActivities + b.LocalActivities,
	}
}

// Scale returns a with every count multiplied by num/den (rounded), for
// extrapolating from a sample of similar runs to all of them.
func (a Actions) Scale(num, den int64) Actions {
	if den == 0 || num == den {
		return a
	}
	s := func(v int64) int64 { return (v*num + den/2) / den }
	return Actions{
		WorkflowStarts:         s(a.WorkflowStarts),
		ContinueAsNew:          s(a.ContinueAsNew),
		ChildStarts:            s(a.ChildStarts),
		ChildExecutions:        s(a.ChildExecutions),
		Activities:             s(a.Activities),
		Heartbeats:             s(a.Heartbeats),
		Timers:                 s(a.Timers),
		Signals:                s(a.Signals),
		Queries:                s(a.Queries),
		Updates:                s(a.Updates),
		SearchAttributeUpserts: s(a.SearchAttributeUpserts),
		SideEffects:            s(a.SideEffects),
		LocalActivities:        s(a.LocalActivities),
	}
}

// changeVersionAttribute is the search attribute workflow.GetVersion
// upserts; Temporal Cloud does not bill it.
const changeVersionAttribute = "TemporalChangeVersion"

// HistoryActions counts the billable actions recorded in one run's history.
// A child's start is counted twice, as Temporal Cloud bills it: once in the
// parent's history (StartChildWorkflowExecutionInitiated) and once in the
// child's (its WorkflowExecutionStarted), so count every run's history once
// and add the results. A continue-as-new is counted in the new run's
// history (its WorkflowExecutionStarted), not in the closing one's.
func HistoryActions(h *historypb.History) Actions {
	var a Actions
	var task, taskWithLocal int64 = 0, -1 // last WorkflowTaskCompleted event id; the last one with local activities
	for _, e := range h.GetEvents() {
		switch e.GetEventType() {
		case enumspb.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
			task = e.GetEventId()
		case enumspb.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED:
			attrs := e.GetWorkflowExecutionStartedEventAttributes()
			switch {
			case attrs.GetContinuedExecutionRunId() != "":
				a.ContinueAsNew++
			case attrs.GetParentWorkflowExecution() != nil:
				a.ChildExecutions++
			default:
				a.WorkflowStarts++
			}
		case enumspb.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED:
			a.ChildStarts++
		case enumspb.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
			a.Activities++
		case enumspb.EVENT_TYPE_ACTIVITY_TASK_STARTED:
			// Retries leave no event of their own: the started event of the
			// last attempt carries the attempt number.
			if n := e.GetActivityTaskStartedEventAttributes().GetAttempt(); n > 1 {
				a.Activities += int64(n - 1)
			}
		case enumspb.EVENT_TYPE_TIMER_STARTED:
			a.Timers++
		case enumspb.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED:
			a.Signals++
		case enumspb.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED, enumspb.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_REJECTED:
			a.Updates++
		case enumspb.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES:
			fields := e.GetUpsertWorkflowSearchAttributesEventAttributes().GetSearchAttributes().GetIndexedFields()
			for k := range fields {
				if k != changeVersionAttribute {
					a.SearchAttributeUpserts++
					break
				}
			}
		case enumspb.EVENT_TYPE_MARKER_RECORDED:
			switch e.GetMarkerRecordedEventAttributes().GetMarkerName() {
			case "SideEffect", "MutableSideEffect":
				a.SideEffects++
			case "LocalActivity":
				if task != taskWithLocal {
					a.LocalActivities++
					taskWithLocal = task
				}
			}
		}
	}
	return a
}
