package pipeline

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"
)

// ScheduledBatchWorkflowName is what a schedule starts.
const ScheduledBatchWorkflowName = "ScheduledBatchWorkflow"

// scheduledStartTime is the search attribute Temporal Schedules set to a
// run's nominal time.
var scheduledStartTime = temporal.NewSearchAttributeKeyTime("TemporalScheduledStartTime")

// ScheduledBatchID is the batch id of a schedule's run at nominal time t:
// <name>-<UTC time, 20261125T020000Z>, so its manifest key is predictable.
func ScheduledBatchID(schedule string, t time.Time) string {
	return fmt.Sprintf("%s-%s", schedule, t.UTC().Format("20060102T150405Z"))
}

// ScheduledBatchWorkflow is what a schedule starts: it names the batch after
// the schedule and the run's nominal time and runs BatchWorkflow as a child
// under that id (so `submit status ID` finds it), waiting for it so the
// schedule's overlap policy sees the batch running.
func ScheduledBatchWorkflow(ctx workflow.Context, in BatchInput) (BatchResult, error) {
	nominal, ok := workflow.GetTypedSearchAttributes(ctx).GetTime(scheduledStartTime)
	if !ok {
		nominal = workflow.Now(ctx) // started by hand, not by a schedule
	}
	in.BatchID = ScheduledBatchID(in.Schedule, nominal)
	if err := in.Validate(); err != nil {
		return BatchResult{}, temporal.NewNonRetryableApplicationError("invalid batch input: "+err.Error(), ErrTypeInvalidInput, nil)
	}
	co := workflow.ChildWorkflowOptions{
		WorkflowID:            in.BatchID,
		TaskQueue:             workflow.GetInfo(ctx).TaskQueueName,
		ParentClosePolicy:     enumspb.PARENT_CLOSE_POLICY_REQUEST_CANCEL,
		WorkflowIDReusePolicy: enumspb.WORKFLOW_ID_REUSE_POLICY_REJECT_DUPLICATE,
		WaitForCancellation:   true,
		Memo:                  map[string]any{"status": "running", "schedule": in.Schedule, "source": in.Source},
	}
	if _, ok := workflow.GetTypedSearchAttributes(ctx).GetKeyword(SearchAttrRole); ok &&
		workflow.GetVersion(ctx, "search-attributes", workflow.DefaultVersion, 1) >= 1 {
		co.TypedSearchAttributes = temporal.NewSearchAttributes(SearchAttrBatchID.ValueSet(in.BatchID),
			SearchAttrStatus.ValueSet("running"), SearchAttrRole.ValueSet("batch"))
	}
	cctx := workflow.WithChildOptions(ctx, co)
	var res BatchResult
	err := workflow.ExecuteChildWorkflow(cctx, BatchWorkflowName, in).Get(ctx, &res)
	return res, err
}

// ScheduleSpec describes a nightly (or any cron) batch.
type ScheduleSpec struct {
	Name          string
	Cron          string
	TimeZone      string
	Overlap       enumspb.ScheduleOverlapPolicy
	CatchupWindow time.Duration
	TaskQueue     string
	Batch         BatchInput // InputURL, Store, Options; BatchID is set per run
}

// ScheduleID is the Temporal schedule id of a batchpipe schedule.
func ScheduleID(name string) string { return "batchpipe-" + name }

// CreateSchedule creates a Temporal Schedule that starts
// ScheduledBatchWorkflow on spec.Cron.
func CreateSchedule(ctx context.Context, c client.Client, spec ScheduleSpec) (client.ScheduleHandle, error) {
	in := spec.Batch
	in.Schedule = spec.Name
	o := client.ScheduleOptions{
		ID: ScheduleID(spec.Name),
		Spec: client.ScheduleSpec{
			CronExpressions: []string{spec.Cron},
			TimeZoneName:    spec.TimeZone,
		},
		Action: &client.ScheduleWorkflowAction{
			ID:        "batchpipe-schedule-" + spec.Name,
			Workflow:  ScheduledBatchWorkflowName,
			Args:      []any{in},
			TaskQueue: spec.TaskQueue,
		},
		Overlap:       spec.Overlap,
		CatchupWindow: spec.CatchupWindow,
		Memo: map[string]any{"cron": spec.Cron, "timezone": spec.TimeZone, "input": in.Source,
			"store": in.Store, "processor": in.Options.Processor},
	}
	// With the role set, each night's batch gets its search attributes
	// (ScheduledBatchWorkflow); a server without them gets none.
	action := *o.Action.(*client.ScheduleWorkflowAction)
	action.TypedSearchAttributes = temporal.NewSearchAttributes(SearchAttrRole.ValueSet("schedule"))
	with := o
	with.Action = &action
	h, err := c.ScheduleClient().Create(ctx, with)
	var invalid *serviceerror.InvalidArgument
	if errors.As(err, &invalid) && strings.Contains(strings.ToLower(invalid.Message), "search attribute") {
		return c.ScheduleClient().Create(ctx, o)
	}
	return h, err
}
