package cli_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.temporal.io/sdk/client"
	sdklog "go.temporal.io/sdk/log"

	"github.com/batchpipe/batchpipe/internal/cli"
	"github.com/batchpipe/batchpipe/manifests"
	"github.com/batchpipe/batchpipe/pipeline"
)

// TestScheduleNameLimit: schedule create accepts a name only if the batch
// ids it derives (NAME-<UTC nominal time>) are valid batch ids. The limit is
// found from manifests.ValidateBatchID here, so the two cannot drift apart.
// Names that pass get as far as connecting to Temporal, which the test
// environment does not configure.
func TestScheduleNameLimit(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "in.jsonl"), []byte(`{"arg1":"a","arg2":"b"}`+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	maxID := 0
	for n := 1; n < 10000; n++ {
		if manifests.ValidateBatchID(strings.Repeat("a", n)) != nil {
			break
		}
		maxID = n
	}
	nominal := time.Date(2026, 11, 25, 2, 0, 0, 0, time.UTC)
	suffix := len(pipeline.ScheduledBatchID("", nominal))
	if suffix != len("-20261125T020000Z") {
		t.Fatalf("scheduled batch id suffix is %d characters: %s", suffix, pipeline.ScheduledBatchID("x", nominal))
	}
	limit := maxID - suffix
	create := func(name string) (string, submitResult) {
		what := "schedule create " + name
		if len(name) > 20 {
			what = "schedule create <" + strconv.Itoa(len(name)) + " characters>"
		}
		return what, submit(t, dir, nil, "schedule", "create", "--cron", "0 2 * * *", "--", name, "in.jsonl")
	}

	for _, name := range []string{"nightly", "team_a.nightly-2", "N", strings.Repeat("x", limit)} {
		if err := manifests.ValidateBatchID(pipeline.ScheduledBatchID(name, nominal)); err != nil {
			t.Fatalf("the test's valid name %q makes an invalid batch id: %v", name, err)
		}
		what, r := create(name)
		wantExit(t, what, r, cli.ExitUsage, "schedules need a Temporal server")
		if strings.Contains(r.stderr, "schedule name") {
			t.Errorf("%s: the name is refused:\n%s", what, r)
		}
	}

	long := strings.Repeat("x", limit+1)
	if manifests.ValidateBatchID(pipeline.ScheduledBatchID(long, nominal)) == nil {
		t.Fatalf("a name of %d characters still makes valid batch ids: the limit is not %d", limit+1, limit)
	}
	for _, name := range []string{long, strings.Repeat("y", maxID), strings.Repeat("z", 1000)} {
		what, r := create(name)
		wantExit(t, what, r, cli.ExitUsage, "schedule name", "limit of "+strconv.Itoa(limit))
	}

	for _, name := range []string{"", ".hidden", "-dash", "a b", "a/b", "../x", "nächtlich", "a:b"} {
		what, r := create(name)
		wantExit(t, what, r, cli.ExitUsage, "schedule name")
	}
}

// TestScheduleDescribeSkipped: a schedule whose batches run longer than
// its interval skips runs for overlap, and `schedule describe` lists each
// skipped run's nominal time and batch id, with the batch that was still
// running — the times Temporal counts (NumActionsSkippedOverlap) but does
// not keep — and none from after `schedule pause`.
func TestScheduleDescribeSkipped(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a Temporal server and a schedule")
	}
	t.Parallel()
	dir := t.TempDir()
	addr, _ := startDevWorker(t, dir)
	writeLines(t, filepath.Join(dir, "in.jsonl"), exampleItems(8, "tick"))
	// One shard of 8 items at 2 items/s: each batch runs ~4 s; a run is due
	// every 2 s.
	r := submitTo(t, dir, addr, "schedule", "create", "tick", "--cron", "@every 2s", "--rate", "2", "--concurrency", "1", "--shard-size", "8",
		"file://"+filepath.Join(dir, "in.jsonl"))
	wantExit(t, "schedule create", r, cli.ExitOK)
	c, err := client.Dial(client.Options{HostPort: addr, Logger: sdklog.NewStructuredLogger(slog.New(slog.DiscardHandler))})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	h := c.ScheduleClient().GetHandle(ctx, pipeline.ScheduleID("tick"))
	deadline := time.Now().Add(90 * time.Second)
	for {
		d, err := h.Describe(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if d.Info.NumActionsSkippedOverlap >= 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no 3 runs skipped for overlap within 90 s: %+v", d.Info)
		}
		time.Sleep(250 * time.Millisecond)
	}
	before := time.Now()
	r = submitTo(t, dir, addr, "schedule", "pause", "tick")
	wantExit(t, "schedule pause", r, cli.ExitOK)
	after := time.Now()
	time.Sleep(4 * time.Second) // due times pass while paused: not to be listed
	r = submitTo(t, dir, addr, "schedule", "describe", "tick")
	wantExit(t, "schedule describe", r, cli.ExitOK)
	t.Logf("schedule describe:\n%s", r.stdout)
	d, err := h.Describe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	skipped := d.Info.NumActionsSkippedOverlap
	if !strings.Contains(r.stdout, "paused: true (since ") || !strings.Contains(r.stdout, fmt.Sprintf("Temporal counts %d skipped", skipped)) {
		t.Errorf("describe does not say since when it is paused and how many runs Temporal counts skipped (%d):\n%s", skipped, r)
	}
	ran := map[int64]bool{}
	for _, a := range d.Info.RecentActions {
		ran[a.ScheduleTime.Unix()] = true
	}
	line := regexp.MustCompile(`(?m)^  (\S+)  batch (tick-\S+)  (skipped: batch (tick-\S+) was still running|not started: .*)$`)
	var listed, overlap int
	for _, m := range line.FindAllStringSubmatch(r.stdout, -1) {
		nominal, err := time.Parse(time.RFC3339, m[1])
		if err != nil {
			t.Errorf("describe: bad nominal time %q in %q", m[1], m[0])
			continue
		}
		listed++
		switch {
		case m[2] != pipeline.ScheduledBatchID("tick", nominal):
			t.Errorf("describe: %q names batch %s, want %s", m[0], m[2], pipeline.ScheduledBatchID("tick", nominal))
		case nominal.Unix()%2 != 0:
			t.Errorf("describe: %q is not a nominal time of @every 2s", m[0])
		case ran[nominal.Unix()]:
			t.Errorf("describe: %q lists a time that started a run", m[0])
		case nominal.After(after):
			t.Errorf("describe: %q lists a time after the pause (%s)", m[0], before.UTC().Format(time.RFC3339Nano))
		}
		if m[4] != "" {
			overlap++
			if running, err := time.Parse("20060102T150405Z", strings.TrimPrefix(m[4], "tick-")); err != nil || !running.Before(nominal) {
				t.Errorf("describe: %q names as running a batch that is not an earlier run", m[0])
			}
		}
	}
	// The pause note's time is taken just before the pause: a run skipped
	// between the two is counted but not listed.
	if overlap < skipped-1 || listed > skipped+d.Info.NumActionsMissedCatchupWindow {
		t.Errorf("describe lists %d times (%d skipped for overlap); Temporal counts %d skipped and %d missed:\n%s",
			listed, overlap, skipped, d.Info.NumActionsMissedCatchupWindow, r)
	}
	r = submitTo(t, dir, addr, "schedule", "delete", "tick")
	wantExit(t, "schedule delete", r, cli.ExitOK)
}
