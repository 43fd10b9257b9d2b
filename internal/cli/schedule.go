package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	commonpb "go.temporal.io/api/common/v1"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"
	sdklog "go.temporal.io/sdk/log"
	"go.temporal.io/sdk/temporal"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/batchpipe/batchpipe"
	"github.com/batchpipe/batchpipe/blobstore"
	"github.com/batchpipe/batchpipe/manifests"
	"github.com/batchpipe/batchpipe/pipeline"
)

var overlapPolicies = map[string]enumspb.ScheduleOverlapPolicy{
	"skip":            enumspb.SCHEDULE_OVERLAP_POLICY_SKIP,
	"buffer-one":      enumspb.SCHEDULE_OVERLAP_POLICY_BUFFER_ONE,
	"buffer-all":      enumspb.SCHEDULE_OVERLAP_POLICY_BUFFER_ALL,
	"cancel-other":    enumspb.SCHEDULE_OVERLAP_POLICY_CANCEL_OTHER,
	"terminate-other": enumspb.SCHEDULE_OVERLAP_POLICY_TERMINATE_OTHER,
	"allow-all":       enumspb.SCHEDULE_OVERLAP_POLICY_ALLOW_ALL,
}

// scheduleConnect dials Temporal for schedule commands: schedules need a
// server that keeps running, so the embedded default does not do.
func scheduleConnect(ctx context.Context, o *IO, verbose bool) (client.Client, error) {
	opts, err := batchpipe.TemporalOptions(envLookup{o})
	if err != nil {
		return nil, usageError{err}
	}
	if opts.HostPort == "" {
		return nil, usagef("schedules need a Temporal server that keeps running: start `worker --dev` (or use a cluster) and set TEMPORAL_ADDRESS, e.g. TEMPORAL_ADDRESS=127.0.0.1:7233")
	}
	opts.Logger = sdklog.NewStructuredLogger(newLogger(o.Stderr, verbose))
	dctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	c, err := client.DialContext(dctx, opts)
	if err != nil {
		return nil, fmt.Errorf("cannot reach Temporal at %s: %v", opts.HostPort, err)
	}
	return c, nil
}

func scheduleHandle(ctx context.Context, c client.Client, name string) (client.ScheduleHandle, error) {
	h := c.ScheduleClient().GetHandle(ctx, pipeline.ScheduleID(name))
	if _, err := h.Describe(ctx); err != nil {
		var nf *serviceerror.NotFound
		if errors.As(err, &nf) {
			return nil, usagef("unknown schedule %q (see `submit schedule list`)", name)
		}
		return nil, err
	}
	return h, nil
}

func newScheduleCommand(o *IO) *cobra.Command {
	cmd := groupCommand(o, &cobra.Command{Use: "schedule", Short: "Run a batch on a cron schedule (Temporal Schedules)", SilenceUsage: true, SilenceErrors: true})
	cmd.AddCommand(newScheduleCreate(o))
	var verbose bool
	simple := func(use, short string, run func(ctx context.Context, c client.Client, h client.ScheduleHandle, name string) error) *cobra.Command {
		sc := subcommand(use+" NAME", short, cobra.ExactArgs(1), func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			c, err := scheduleConnect(ctx, o, verbose)
			if err != nil {
				return err
			}
			defer c.Close()
			h, err := scheduleHandle(ctx, c, args[0])
			if err != nil {
				return err
			}
			return run(ctx, c, h, args[0])
		})
		sc.Flags().BoolVarP(&verbose, "verbose", "v", false, "log debug details")
		return sc
	}
	cmd.AddCommand(
		simple("describe", "Show a schedule: its spec, next runs, recent runs with their status, and the nominal times of runs skipped or missed", func(ctx context.Context, c client.Client, h client.ScheduleHandle, name string) error {
			return describeSchedule(ctx, o, c, h, name)
		}),
		simple("trigger", "Run a schedule's batch now", func(ctx context.Context, _ client.Client, h client.ScheduleHandle, name string) error {
			if err := h.Trigger(ctx, client.ScheduleTriggerOptions{}); err != nil {
				return err
			}
			fmt.Fprintf(o.Stdout, "triggered schedule %s; its batch id is %s-<UTC time of now>\n", name, name)
			return nil
		}),
		simple("pause", "Pause a schedule", func(ctx context.Context, _ client.Client, h client.ScheduleHandle, name string) error {
			if err := h.Pause(ctx, client.SchedulePauseOptions{Note: pauseNotePrefix + time.Now().UTC().Format(time.RFC3339Nano)}); err != nil {
				return err
			}
			fmt.Fprintf(o.Stdout, "paused schedule %s\n", name)
			return nil
		}),
		simple("unpause", "Unpause a schedule", func(ctx context.Context, _ client.Client, h client.ScheduleHandle, name string) error {
			if err := h.Unpause(ctx, client.ScheduleUnpauseOptions{Note: "unpaused with batchpipe"}); err != nil {
				return err
			}
			fmt.Fprintf(o.Stdout, "unpaused schedule %s\n", name)
			return nil
		}),
		simple("delete", "Delete a schedule (running batches and stored results stay)", func(ctx context.Context, _ client.Client, h client.ScheduleHandle, name string) error {
			if err := h.Delete(ctx); err != nil {
				return err
			}
			fmt.Fprintf(o.Stdout, "deleted schedule %s\n", name)
			return nil
		}),
	)
	list := subcommand("list", "List schedules", cobra.NoArgs, func(cmd *cobra.Command, _ []string) error {
		ctx := cmd.Context()
		c, err := scheduleConnect(ctx, o, verbose)
		if err != nil {
			return err
		}
		defer c.Close()
		it, err := c.ScheduleClient().List(ctx, client.ScheduleListOptions{})
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(o.Stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NAME\tCRON\tPAUSED\tNEXT RUN")
		for it.HasNext() {
			e, err := it.Next()
			if err != nil {
				return err
			}
			name, ok := strings.CutPrefix(e.ID, "batchpipe-")
			if !ok {
				continue
			}
			cron, next := memoString(e.Memo, "cron"), "-"
			if len(e.NextActionTimes) > 0 {
				next = e.NextActionTimes[0].UTC().Format(time.RFC3339)
			}
			fmt.Fprintf(tw, "%s\t%s\t%v\t%s\n", name, cron, e.Paused, next)
		}
		return tw.Flush()
	})
	list.Flags().BoolVarP(&verbose, "verbose", "v", false, "log debug details")
	cmd.AddCommand(list)
	return cmd
}

// maxBatchIDLen is the longest batch id manifests.ValidateBatchID accepts
// (TestScheduleNameLimit checks that it still is).
const maxBatchIDLen = 200

// scheduledIDSuffixLen is how much a schedule's batch ids add to its name:
// "-" and the UTC nominal time, like -20261125T020000Z.
var scheduledIDSuffixLen = len(pipeline.ScheduledBatchID("", sampleNominalTime))

// sampleNominalTime stands for any nominal time of a scheduled run: all
// format to the same length.
var sampleNominalTime = time.Date(2026, 11, 25, 2, 0, 0, 0, time.UTC)

// maxScheduleNameLen is the longest schedule name whose batch ids are valid.
var maxScheduleNameLen = maxBatchIDLen - scheduledIDSuffixLen

// validateScheduleName accepts a name only if every batch id the schedule
// derives from it (NAME-<UTC nominal time>) is a valid batch id, so that
// status, results --schedule, list and gc can name its batches.
func validateScheduleName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("schedule name is empty")
	case len(name) > maxScheduleNameLen:
		return fmt.Errorf("schedule name %q is %d characters, longer than the limit of %d: its batch ids (NAME-<UTC time>, %d more characters) may be at most %d",
			name, len(name), maxScheduleNameLen, scheduledIDSuffixLen, maxBatchIDLen)
	}
	if err := manifests.ValidateBatchID(pipeline.ScheduledBatchID(name, sampleNominalTime)); err != nil {
		return fmt.Errorf("schedule name %q (at most %d characters) makes invalid batch ids: %v", name, maxScheduleNameLen, err)
	}
	return nil
}

func newScheduleCreate(o *IO) *cobra.Command {
	f := &submitFlags{}
	var cron, tz, overlap string
	var catchup time.Duration
	cmd := subcommand("create NAME INPUT_URL", "Create a schedule that runs a batch over INPUT_URL on a cron spec", cobra.ExactArgs(2),
		func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			name, input := args[0], args[1]
			if err := validateScheduleName(name); err != nil {
				return usageError{err}
			}
			if cron == "" {
				return usagef("--cron is required, e.g. --cron \"0 2 * * *\"")
			}
			pol, ok := overlapPolicies[overlap]
			if !ok {
				return usagef("--overlap %q: want one of skip, buffer-one, buffer-all, cancel-other, terminate-other, allow-all", overlap)
			}
			if tz != "" {
				if _, err := time.LoadLocation(tz); err != nil {
					return usagef("--timezone %q: %v", tz, err)
				}
			}
			if !strings.Contains(input, "://") {
				abs, err := filepath.Abs(filepath.Join(o.workDir(), input))
				if err != nil || filepath.IsAbs(input) {
					abs = input
				}
				input = "file://" + abs
			}
			if f.fromFailures {
				return usagef("--from-failures reads local files; download %s first", blobstore.Redact(input))
			}
			if err := batchpipe.CheckInputURL(input); err != nil {
				return err
			}
			req, err := f.request(cmd, o.Stderr, true) // schedules live on a Temporal service
			if err != nil {
				return err
			}
			opts, err := req.BatchOptions()
			if err != nil {
				return err
			}
			b, storeURL, err := openStore(ctx, o, f.store)
			if err != nil {
				return err
			}
			b.Close()
			c, err := scheduleConnect(ctx, o, f.verbose)
			if err != nil {
				return err
			}
			defer c.Close()
			_, err = pipeline.CreateSchedule(ctx, c, pipeline.ScheduleSpec{
				Name: name, Cron: cron, TimeZone: tz, Overlap: pol, CatchupWindow: catchup, TaskQueue: f.taskQueue,
				Batch: pipeline.BatchInput{Store: storeURL, Source: blobstore.Redact(input), InputURL: input,
					InputFormat: f.format, MaxItemBytes: f.maxItemSize, Options: opts},
			})
			var invalid *serviceerror.InvalidArgument
			switch {
			case errors.As(err, &invalid):
				// A spec the server refuses (a bad cron line, say) is bad
				// usage, like a bad flag.
				return usagef("creating schedule %s: %v", name, invalid.Message)
			case errors.Is(err, temporal.ErrScheduleAlreadyRunning):
				return usagef("schedule %s exists already: delete it first (submit schedule delete %s) or choose another name", name, name)
			case err != nil:
				return fmt.Errorf("creating schedule %s: %w", name, err)
			}
			fmt.Fprintf(o.Stdout, "created schedule %s: %q (%s) over %s\n", name, cron, zoneName(tz), input)
			fmt.Fprintf(o.Stdout, "each run is batch %s-<nominal UTC time>; the newest finished one is named by %s in %s\n", name, manifests.LatestKey(name), storeURL)
			return nil
		})
	f.registerBatchFlags(cmd)
	fl := cmd.Flags()
	fl.StringVar(&cron, "cron", "", "cron `SPEC`, e.g. \"0 2 * * *\" for 02:00 every day")
	fl.StringVar(&tz, "timezone", "", "time `ZONE` of the cron spec, e.g. Europe/Berlin (default UTC)")
	fl.StringVar(&overlap, "overlap", "skip", "what to do (`POLICY`) when a run is due while the previous batch still runs: skip, buffer-one, buffer-all, cancel-other, terminate-other, allow-all")
	fl.DurationVar(&catchup, "catchup-window", 24*time.Hour, "after downtime, runs missed within this window are started late; older ones are skipped")
	return cmd
}

func zoneName(tz string) string {
	if tz == "" {
		return "UTC"
	}
	return tz
}

func describeSchedule(ctx context.Context, o *IO, c client.Client, h client.ScheduleHandle, name string) error {
	d, err := h.Describe(ctx)
	if err != nil {
		return err
	}
	now := time.Now()
	fmt.Fprintf(o.Stdout, "schedule %s\n", name)
	fmt.Fprintf(o.Stdout, "cron: %s (%s)\n", memoString(d.Memo, "cron"), zoneName(memoString(d.Memo, "timezone")))
	if act, ok := d.Schedule.Action.(*client.ScheduleWorkflowAction); ok && len(act.Args) == 1 {
		var in pipeline.BatchInput
		if p, ok := act.Args[0].(interface{ GetData() []byte }); ok {
			json.Unmarshal(p.GetData(), &in)
		}
		if in.Source != "" {
			fmt.Fprintf(o.Stdout, "input: %s\nstore: %s\nprocessor: %s\n", in.Source, in.Store, in.Options.Processor)
		}
	}
	pausedAt, pausedKnown := pausedSince(d.Schedule.State)
	switch {
	case d.Schedule.State.Paused && pausedKnown:
		fmt.Fprintf(o.Stdout, "paused: true (since %s)\n", pausedAt.UTC().Format(time.RFC3339))
	default:
		fmt.Fprintf(o.Stdout, "paused: %v\n", d.Schedule.State.Paused)
	}
	overlap := strings.ToLower(strings.TrimPrefix(d.Schedule.Policy.Overlap.String(), "SCHEDULE_OVERLAP_POLICY_"))
	fmt.Fprintf(o.Stdout, "overlap: %s\n", overlap)
	fmt.Fprintln(o.Stdout, "next runs:")
	for _, t := range d.Info.NextActionTimes {
		fmt.Fprintf(o.Stdout, "  %s  (batch %s)\n", t.UTC().Format(time.RFC3339), pipeline.ScheduledBatchID(name, t))
	}
	fmt.Fprintln(o.Stdout, "recent runs:")
	runs := make([]scheduleRun, 0, len(d.Info.RecentActions))
	for _, a := range d.Info.RecentActions {
		run := scheduleRun{nominal: a.ScheduleTime, started: a.ActualTime, batch: pipeline.ScheduledBatchID(name, a.ScheduleTime)}
		status := "?"
		if r := a.StartWorkflowResult; r != nil {
			if desc, err := c.DescribeWorkflowExecution(ctx, r.WorkflowID, r.FirstExecutionRunID); err == nil {
				info := desc.WorkflowExecutionInfo
				status = strings.ToLower(info.GetStatus().String())
				status = strings.TrimPrefix(status, "workflow_execution_status_")
				if info.GetCloseTime() != nil {
					run.closed = info.GetCloseTime().AsTime()
				}
			}
		}
		if run.closed.IsZero() {
			run.closed = now // running, or unknown: as if still running
		}
		runs = append(runs, run)
		fmt.Fprintf(o.Stdout, "  %s  batch %s  %s\n", a.ScheduleTime.UTC().Format(time.RFC3339), run.batch, status)
	}
	printNotStarted(ctx, o, c, d, name, overlap, runs, now, pausedAt, pausedKnown)
	return nil
}

// scheduleRun is one of a schedule's recent runs: its nominal time, when it
// started and when it closed (now if it has not).
type scheduleRun struct {
	nominal, started, closed time.Time
	batch                    string
}

// notStartedRun is a nominal time of the schedule's spec with no run; during
// is the batch that was running then, if one was.
type notStartedRun struct {
	nominal time.Time
	during  string
}

// notStarted returns the times of matching (the spec's nominal times)
// within (from, to] that no run of runs has as its nominal time, each
// with the batch that was running at the time if there was one — a run of
// an earlier nominal time that closed after it, or that started only after
// it (a late start after downtime: the later time was then due while it
// ran).
func notStarted(matching []time.Time, runs []scheduleRun, from, to time.Time) []notStartedRun {
	ran := map[int64]bool{}
	for _, r := range runs {
		ran[r.nominal.Unix()] = true
	}
	var out []notStartedRun
	for _, t := range matching {
		if !t.After(from) || t.After(to) || ran[t.Unix()] {
			continue
		}
		n := notStartedRun{nominal: t}
		for _, r := range runs {
			if r.nominal.Before(t) && (r.closed.After(t) || r.started.After(t)) {
				n.during = r.batch
			}
		}
		out = append(out, n)
	}
	return out
}

// dueGrace is how long after a nominal time the schedule may take to start
// its run: younger times are not reported as not started.
const dueGrace = 5 * time.Second

// printNotStarted lists the schedule's nominal times that started no run,
// as far as Temporal lets them be known. Temporal keeps counts of the runs
// a schedule skipped for overlap and of those that missed the catch-up
// window, but not their times, and only its last ten runs; so the times
// are the spec's (ListScheduleMatchingTimes) since the oldest of those ten
// (since the schedule's creation while it has had ten runs at most),
// without those ten, up to now or to when the schedule was paused with
// `schedule pause` (times while it was paused before are listed too: the
// server does not record them).
func printNotStarted(ctx context.Context, o *IO, c client.Client, d *client.ScheduleDescription, name, overlap string,
	runs []scheduleRun, now, pausedAt time.Time, pausedKnown bool) {
	info := d.Info
	skipped, missed := info.NumActionsSkippedOverlap, info.NumActionsMissedCatchupWindow
	fmt.Fprintf(o.Stdout, "runs not started: Temporal counts %d skipped because the previous batch was still running (overlap %s), %d that missed the catch-up window\n",
		skipped, overlap, missed)
	// Temporal's scheduler starts counting when its workflow first runs,
	// a moment after the schedule's creation (seconds on a loaded server):
	// due times in that moment were never due for it.
	from := info.CreatedAt.Add(dueGrace)
	whole := info.NumActions <= len(runs)
	if !whole && len(runs) > 0 {
		from = runs[0].started // every run started after it is one of runs
		for _, r := range runs {
			if r.started.Before(from) {
				from = r.started
			}
		}
	}
	to := now.Add(-dueGrace)
	if d.Schedule.State.Paused {
		if !pausedKnown {
			fmt.Fprintln(o.Stdout, "  (the schedule was paused at a time Temporal does not record, so nominal times are not listed; pause it with `submit schedule pause` to record it)")
			return
		}
		to = pausedAt
	}
	if from.IsZero() || !to.After(from) {
		return
	}
	ns, err := scheduleNamespace(o)
	if err != nil {
		return
	}
	resp, err := c.WorkflowService().ListScheduleMatchingTimes(ctx, &workflowservice.ListScheduleMatchingTimesRequest{
		Namespace: ns, ScheduleId: pipeline.ScheduleID(name),
		StartTime: timestamppb.New(from.Add(-time.Second)), EndTime: timestamppb.New(to),
	})
	if err != nil {
		fmt.Fprintf(o.Stdout, "  (their nominal times cannot be listed: %v)\n", err)
		return
	}
	matching := make([]time.Time, 0, len(resp.GetStartTime()))
	for _, ts := range resp.GetStartTime() {
		matching = append(matching, ts.AsTime())
	}
	list := notStarted(matching, runs, from.Add(-time.Second), to)
	if len(list) == 0 {
		if skipped+missed > 0 {
			fmt.Fprintf(o.Stdout, "  none since %s; the counted ones are older (Temporal keeps only its last %d runs, and no time of a skipped one)\n",
				from.UTC().Format(time.RFC3339), len(runs))
		}
		return
	}
	since := "since the schedule was created"
	if !whole {
		since = fmt.Sprintf("since %s, the start of the oldest of the %d runs Temporal keeps; earlier ones are in the counts only", from.UTC().Format(time.RFC3339), len(runs))
	}
	fmt.Fprintf(o.Stdout, "  nominal times with no run, %s:\n", since)
	for _, n := range list {
		why := "not started: the schedule was paused, or Temporal was down past the catch-up window"
		if n.during != "" {
			why = "skipped: batch " + n.during + " was still running"
			if overlap != "skip" {
				why = "not started while batch " + n.during + " ran (buffered, or dropped from a full buffer)"
			}
		}
		fmt.Fprintf(o.Stdout, "  %s  batch %s  %s\n", n.nominal.UTC().Format(time.RFC3339), pipeline.ScheduledBatchID(name, n.nominal), why)
	}
}

// pauseNotePrefix starts the note `schedule pause` leaves, followed by the
// time: Temporal keeps a paused schedule's note but not when it was paused.
const pauseNotePrefix = "paused with batchpipe at "

// pausedSince reads the pause time from a schedule's note.
func pausedSince(st *client.ScheduleState) (time.Time, bool) {
	if st == nil || !st.Paused {
		return time.Time{}, false
	}
	s, ok := strings.CutPrefix(st.Note, pauseNotePrefix)
	if !ok {
		return time.Time{}, false
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	return t, err == nil
}

// scheduleNamespace is the Temporal namespace schedule commands use.
func scheduleNamespace(o *IO) (string, error) {
	opts, err := batchpipe.TemporalOptions(envLookup{o})
	if err != nil {
		return "", err
	}
	if opts.Namespace == "" {
		return client.DefaultNamespace, nil
	}
	return opts.Namespace, nil
}

// memoString reads a string field of a memo ("-" when absent; "" for the
// time zone, which then means UTC).
func memoString(m *commonpb.Memo, key string) string {
	var v string
	if p := m.GetFields()[key]; p != nil {
		if converter.GetDefaultDataConverter().FromPayload(p, &v) == nil && v != "" {
			return v
		}
	}
	if key == "timezone" {
		return ""
	}
	return "-"
}
