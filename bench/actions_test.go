package bench

import (
	"os"
	"path/filepath"
	"testing"

	commonpb "go.temporal.io/api/common/v1"
	enumspb "go.temporal.io/api/enums/v1"
	historypb "go.temporal.io/api/history/v1"
	"google.golang.org/protobuf/encoding/protojson"
)

func loadHistory(t *testing.T, name string) *historypb.History {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "pipeline", "testdata", "histories", name))
	if err != nil {
		t.Fatal(err)
	}
	h := &historypb.History{}
	if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(data, h); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return h
}

// The recorded histories of a real 120-item batch (shard size 10, 5 shards
// per run: 3 runs, 12 children).
func TestHistoryActionsRecorded(t *testing.T) {
	cases := []struct {
		file string
		want Actions
	}{
		// The client's start and 5 children; the TemporalChangeVersion
		// upsert of workflow.GetVersion and the memo are not billed.
		{"g2-memo-batch-run1.json", Actions{WorkflowStarts: 1, ChildStarts: 5}},
		{"g2-memo-batch-run2.json", Actions{ContinueAsNew: 1, ChildStarts: 5}},
		// The last run also runs the finalize activity.
		{"g2-memo-batch-run3.json", Actions{ContinueAsNew: 1, ChildStarts: 2, Activities: 1}},
		{"g2-memo-shard.json", Actions{ChildExecutions: 1, Activities: 1}},
		{"g1-batch-run1.json", Actions{WorkflowStarts: 1, ChildStarts: 5}},
	}
	for _, c := range cases {
		if got := HistoryActions(loadHistory(t, c.file)); got != c.want {
			t.Errorf("%s: got %+v, want %+v", c.file, got, c.want)
		}
	}

	// The whole batch: three parent runs, and the one recorded child taken
	// as a sample of all 12.
	var parent Actions
	for _, f := range []string{"g2-memo-batch-run1.json", "g2-memo-batch-run2.json", "g2-memo-batch-run3.json"} {
		parent = parent.Add(HistoryActions(loadHistory(t, f)))
	}
	total := parent.Add(HistoryActions(loadHistory(t, "g2-memo-shard.json")).Scale(12, 1))
	// 1 start + 2 continue-as-new + 12 × (child start + child execution +
	// activity) + 1 finalize activity.
	if got, want := total.Total(), int64(1+2+12*3+1); got != want {
		t.Errorf("batch total %d (%+v), want %d", got, total, want)
	}
}

func event(id int64, typ enumspb.EventType, attrs any) *historypb.HistoryEvent {
	e := &historypb.HistoryEvent{EventId: id, EventType: typ}
	switch a := attrs.(type) {
	case *historypb.ActivityTaskStartedEventAttributes:
		e.Attributes = &historypb.HistoryEvent_ActivityTaskStartedEventAttributes{ActivityTaskStartedEventAttributes: a}
	case *historypb.UpsertWorkflowSearchAttributesEventAttributes:
		e.Attributes = &historypb.HistoryEvent_UpsertWorkflowSearchAttributesEventAttributes{UpsertWorkflowSearchAttributesEventAttributes: a}
	case *historypb.MarkerRecordedEventAttributes:
		e.Attributes = &historypb.HistoryEvent_MarkerRecordedEventAttributes{MarkerRecordedEventAttributes: a}
	case *historypb.WorkflowExecutionStartedEventAttributes:
		e.Attributes = &historypb.HistoryEvent_WorkflowExecutionStartedEventAttributes{WorkflowExecutionStartedEventAttributes: a}
	}
	return e
}

func TestHistoryActionsKinds(t *testing.T) {
	sa := func(names ...string) *historypb.UpsertWorkflowSearchAttributesEventAttributes {
		f := map[string]*commonpb.Payload{}
		for _, n := range names {
			f[n] = &commonpb.Payload{}
		}
		return &historypb.UpsertWorkflowSearchAttributesEventAttributes{SearchAttributes: &commonpb.SearchAttributes{IndexedFields: f}}
	}
	marker := func(name string) *historypb.MarkerRecordedEventAttributes {
		return &historypb.MarkerRecordedEventAttributes{MarkerName: name}
	}
	h := &historypb.History{Events: []*historypb.HistoryEvent{
		event(1, enumspb.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED, &historypb.WorkflowExecutionStartedEventAttributes{
			ParentWorkflowExecution: &commonpb.WorkflowExecution{WorkflowId: "parent"}}),
		event(4, enumspb.EVENT_TYPE_WORKFLOW_TASK_COMPLETED, nil),
		// An activity that took three attempts: three actions.
		event(5, enumspb.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED, nil),
		event(6, enumspb.EVENT_TYPE_ACTIVITY_TASK_STARTED, &historypb.ActivityTaskStartedEventAttributes{Attempt: 3}),
		event(7, enumspb.EVENT_TYPE_TIMER_STARTED, nil),
		event(8, enumspb.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES, sa(changeVersionAttribute)),
		event(9, enumspb.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES, sa(changeVersionAttribute, "CustomKeyword")),
		event(10, enumspb.EVENT_TYPE_MARKER_RECORDED, marker("Version")),
		event(11, enumspb.EVENT_TYPE_MARKER_RECORDED, marker("SideEffect")),
		// Two local activities in one workflow task are one action.
		event(12, enumspb.EVENT_TYPE_MARKER_RECORDED, marker("LocalActivity")),
		event(13, enumspb.EVENT_TYPE_MARKER_RECORDED, marker("LocalActivity")),
		event(14, enumspb.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED, nil),
		event(17, enumspb.EVENT_TYPE_WORKFLOW_TASK_COMPLETED, nil),
		event(18, enumspb.EVENT_TYPE_MARKER_RECORDED, marker("LocalActivity")),
		event(19, enumspb.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED, nil),
		event(20, enumspb.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW, nil),
	}}
	want := Actions{ChildExecutions: 1, Activities: 3, Timers: 1, SearchAttributeUpserts: 1, SideEffects: 1,
		LocalActivities: 2, Signals: 1, Updates: 1}
	if got := HistoryActions(h); got != want {
		t.Errorf("got %+v, want %+v", got, want)
	}
	if got := want.Total(); got != 11 {
		t.Errorf("total %d, want 11", got)
	}
}

func TestActionsScale(t *testing.T) {
	a := Actions{ChildExecutions: 3, Activities: 4}
	if got, want := a.Scale(1000, 3), (Actions{ChildExecutions: 1000, Activities: 1333}); got != want {
		t.Errorf("got %+v, want %+v", got, want)
	}
	if got := a.Scale(5, 0); got != a {
		t.Errorf("scale by 5/0 changed %+v to %+v", a, got)
	}
}
