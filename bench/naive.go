package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	historypb "go.temporal.io/api/history/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"

	"github.com/batchpipe/batchpipe/pipeline"
)

// The naive pattern (the seed's, in Go): one parent workflow gets every item
// in its input, starts one child workflow per item at once, each child runs
// one activity with the processor, and every result comes back to the
// parent, so items and results all travel through history.
const (
	naiveParentName   = "NaiveParent"
	naiveChildName    = "NaiveChild"
	naiveActivityName = "NaiveProcess"
)

// NaiveInput is the naive parent's input: the items themselves.
type NaiveInput struct {
	Processor string            `json:"processor"`
	Items     []json.RawMessage `json:"items"`
}

// NaiveChildInput is one child's input.
type NaiveChildInput struct {
	Processor string          `json:"processor"`
	Item      json.RawMessage `json:"item"`
}

// NaiveParent starts one child per item and returns all their results.
func NaiveParent(ctx workflow.Context, in NaiveInput) ([]json.RawMessage, error) {
	id := workflow.GetInfo(ctx).WorkflowExecution.ID
	futures := make([]workflow.ChildWorkflowFuture, len(in.Items))
	for i, item := range in.Items {
		cctx := workflow.WithChildOptions(ctx, workflow.ChildWorkflowOptions{WorkflowID: naiveChildID(id, i)})
		futures[i] = workflow.ExecuteChildWorkflow(cctx, naiveChildName, NaiveChildInput{Processor: in.Processor, Item: item})
	}
	results := make([]json.RawMessage, len(futures))
	for i, f := range futures {
		if err := f.Get(ctx, &results[i]); err != nil {
			return nil, err
		}
	}
	return results, nil
}

func naiveChildID(parent string, i int) string { return fmt.Sprintf("%s/item-%d", parent, i) }

// NaiveChild runs one activity on its item.
func NaiveChild(ctx workflow.Context, in NaiveChildInput) (json.RawMessage, error) {
	actx := workflow.WithActivityOptions(ctx, workflow.ActivityOptions{StartToCloseTimeout: time.Minute})
	var out json.RawMessage
	err := workflow.ExecuteActivity(actx, naiveActivityName, in).Get(ctx, &out)
	return out, err
}

// processors are the processors the naive and direct patterns run in this
// process (the bench's workers run the same): see newProcessors.
var processors = newProcessors()

// naiveProcess runs the processor on one item.
func naiveProcess(ctx context.Context, in NaiveChildInput) (json.RawMessage, error) {
	p, err := processors.Lookup(in.Processor, pipeline.Options{})
	if err != nil {
		return nil, err
	}
	return p.Process(ctx, in.Item)
}

func registerNaive(w worker.Registry) {
	w.RegisterWorkflowWithOptions(NaiveParent, workflow.RegisterOptions{Name: naiveParentName})
	w.RegisterWorkflowWithOptions(NaiveChild, workflow.RegisterOptions{Name: naiveChildName})
	w.RegisterActivityWithOptions(naiveProcess, activity.RegisterOptions{Name: naiveActivityName})
}

// naiveChildSample is how many children's histories are read; the parent's
// is read whole. Every child has the same shape (start, one activity).
const naiveChildSample = 20

// runNaive runs the naive pattern over the n items of input. It stops at
// the first sign that the pattern cannot finish (a refused start, a
// workflow task failing again and again, e.g. on the limit of pending
// children) or at the timeout, and reports why.
func runNaive(ctx context.Context, env *env, n int, input string) (Row, error) {
	row := Row{Scenario: "naive", Items: int64(n)}
	items, err := readItems(input)
	if err != nil {
		return row, err
	}
	tq := env.taskQueue("naive", n)
	w, err := startWorker(ctx, env, tq, fmt.Sprintf("naive-%d", n))
	if err != nil {
		return row, err
	}
	defer func() {
		if w != nil {
			w.kill()
		}
	}()
	id := fmt.Sprintf("naive-%d-%s", n, env.runTag)
	start := time.Now()
	run, err := env.client.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: id, TaskQueue: tq}, naiveParentName,
		NaiveInput{Processor: env.cfg.Processor, Items: items})
	if err != nil {
		row.Stopped = "start refused: " + shortError(err)
		row.Wall = time.Since(start)
		rep, rss, _ := w.stop()
		w = nil
		row.WorkerRSS, row.AnonRSS, row.Actions.Heartbeats = rss, rep.PeakAnonRSS, rep.heartbeats()
		return row, nil
	}
	stopped := watchNaive(ctx, env, run, n, env.cfg.NaiveTimeout)
	row.Wall = time.Since(start)
	if stopped != "" {
		row.Stopped = stopped
		tctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		env.client.TerminateWorkflow(tctx, id, run.GetRunID(), "bench: "+stopped)
		cancel()
	}
	rep, rss, err := w.stop()
	w = nil
	if err != nil {
		return row, err
	}
	row.WorkerRSS, row.AnonRSS = rss, rep.PeakAnonRSS
	row.Actions.Heartbeats = rep.heartbeats()

	// Histories: the parent's whole, a sample of the children.
	ph, err := fetchHistory(ctx, env.client, id, run.GetRunID())
	if err != nil {
		return row, err
	}
	row.observe(ph)
	row.ParentRuns = 1
	started := childrenStarted(ph)
	row.ChildRuns = started
	if started > 0 {
		var sample Actions
		k := min(naiveChildSample, started)
		for j := range k {
			i := j * started / k
			h, err := fetchHistory(ctx, env.client, naiveChildID(id, i), "")
			if err != nil {
				return row, err
			}
			row.observe(h)
			sample = sample.Add(HistoryActions(h))
		}
		row.Actions = row.Actions.Add(sample.Scale(int64(started), int64(k)))
		if k < started {
			row.Notes = append(row.Notes, fmt.Sprintf("children's actions extrapolated from %d of %d child histories", k, started))
		}
	}
	row.Actions = row.Actions.Add(HistoryActions(ph))
	if row.Stopped == "" {
		var results []json.RawMessage
		if err := run.Get(ctx, &results); err != nil {
			return row, err
		}
		if len(results) != n {
			return row, fmt.Errorf("naive: %d results for %d items", len(results), n)
		}
	}
	return row, nil
}

// childrenStarted counts the children a parent's history shows started.
func childrenStarted(h *historypb.History) int {
	n := 0
	for _, e := range h.GetEvents() {
		if e.GetEventType() == enumspb.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_STARTED {
			n++
		}
	}
	return n
}

// watchNaive waits for the naive parent to close. It returns "" when it
// completed, or why it stopped.
func watchNaive(ctx context.Context, env *env, run client.WorkflowRun, n int, timeout time.Duration) string {
	done := make(chan error, 1)
	go func() { done <- run.Get(ctx, nil) }()
	deadline := time.After(timeout)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case err := <-done:
			if err != nil {
				return "failed: " + shortError(err)
			}
			return ""
		case <-deadline:
			return fmt.Sprintf("timed out after %v with %s", timeout, naiveProgress(ctx, env, run, n))
		case <-ctx.Done():
			return "interrupted"
		case <-tick.C:
			d, err := env.client.DescribeWorkflowExecution(ctx, run.GetID(), run.GetRunID())
			if err != nil {
				continue
			}
			// A workflow task that keeps failing never recovers by itself:
			// the parent makes the same commands on every attempt.
			if pt := d.GetPendingWorkflowTask(); pt != nil && pt.GetAttempt() >= 3 {
				cause := lastTaskFailure(ctx, env, run)
				return fmt.Sprintf("%s (workflow task attempt %d; %s)", cause, pt.GetAttempt(), naiveProgress(ctx, env, run, n))
			}
		}
	}
}

func naiveProgress(ctx context.Context, env *env, run client.WorkflowRun, n int) string {
	h, err := fetchHistory(ctx, env.client, run.GetID(), run.GetRunID())
	if err != nil {
		return "progress unknown"
	}
	done := 0
	for _, e := range h.GetEvents() {
		if e.GetEventType() == enumspb.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_COMPLETED {
			done++
		}
	}
	return fmt.Sprintf("%s of %s children started, %s completed", fmtInt(int64(childrenStarted(h))), fmtInt(int64(n)), fmtInt(int64(done)))
}

// lastTaskFailure describes the last WorkflowTaskFailed event of a run.
func lastTaskFailure(ctx context.Context, env *env, run client.WorkflowRun) string {
	h, err := fetchHistory(ctx, env.client, run.GetID(), run.GetRunID())
	if err != nil {
		return "cause unknown"
	}
	events := h.GetEvents()
	for i := len(events) - 1; i >= 0; i-- {
		if a := events[i].GetWorkflowTaskFailedEventAttributes(); a != nil {
			if msg := a.GetFailure().GetMessage(); msg != "" {
				return msg
			}
			return a.GetCause().String()
		}
	}
	return "no WorkflowTaskFailed event recorded"
}

// shortError keeps the first line of an error, at most 200 bytes.
func shortError(err error) string {
	var inv *serviceerror.InvalidArgument
	msg := err.Error()
	if errors.As(err, &inv) {
		msg = "InvalidArgument: " + inv.Message
	}
	for i, c := range msg {
		if c == '\n' {
			msg = msg[:i]
			break
		}
	}
	if len(msg) > 200 {
		msg = msg[:200] + "…"
	}
	return msg
}
