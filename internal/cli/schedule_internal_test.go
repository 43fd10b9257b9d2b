package cli

import (
	"testing"
	"time"

	"go.temporal.io/sdk/client"
)

// TestNotStarted: the spec's nominal times without a run are those not
// started, each with the batch that was running then — one still running,
// or one that started late (after downtime) so that the later time fell
// due while it ran — and none when nothing was (a pause, or Temporal down
// past the catch-up window).
func TestNotStarted(t *testing.T) {
	t.Parallel()
	day := func(d int) time.Time { return time.Date(2026, 11, d, 2, 0, 0, 0, time.UTC) }
	var matching []time.Time
	for d := 20; d <= 28; d++ {
		matching = append(matching, day(d))
	}
	h := time.Hour
	runs := []scheduleRun{
		{nominal: day(20), started: day(20), closed: day(20).Add(h), batch: "n-20"},
		// 21 ran 30 hours: 22 was skipped for overlap.
		{nominal: day(21), started: day(21), closed: day(21).Add(30 * h), batch: "n-21"},
		// 23 and 24 passed while Temporal was down; 24 started late, on the 25th
		// at 01:00, and ran past the 25th's 02:00.
		{nominal: day(24), started: day(25).Add(-h), closed: day(25).Add(2 * h), batch: "n-24"},
		// 26 ran; 27 was paused; 28 runs now.
		{nominal: day(26), started: day(26), closed: day(26).Add(h), batch: "n-26"},
		{nominal: day(28), started: day(28), closed: day(28).Add(5 * h), batch: "n-28"},
	}
	got := notStarted(matching, runs, day(20).Add(-time.Second), day(28).Add(h))
	want := []notStartedRun{{day(22), "n-21"}, {day(23), ""}, {day(25), "n-24"}, {day(27), ""}}
	if len(got) != len(want) {
		t.Fatalf("notStarted = %+v, want %+v", got, want)
	}
	for i := range want {
		if !got[i].nominal.Equal(want[i].nominal) || got[i].during != want[i].during {
			t.Errorf("notStarted[%d] = %+v, want %+v", i, got[i], want[i])
		}
	}
	// The window bounds it: only (from, to].
	if got := notStarted(matching, runs, day(22), day(25)); len(got) != 2 || !got[0].nominal.Equal(day(23)) || !got[1].nominal.Equal(day(25)) {
		t.Errorf("notStarted within (22nd, 25th] = %+v, want the 23rd and the 25th", got)
	}

	// The pause note carries its time.
	at := time.Date(2026, 12, 1, 3, 4, 5, 6, time.UTC)
	if got, ok := pausedSince(&client.ScheduleState{Paused: true, Note: pauseNotePrefix + at.Format(time.RFC3339Nano)}); !ok || !got.Equal(at) {
		t.Errorf("pausedSince = %v, %v; want %v", got, ok, at)
	}
	if _, ok := pausedSince(&client.ScheduleState{Paused: true, Note: "paused in the Web UI"}); ok {
		t.Errorf("pausedSince reads a time from a note without one")
	}
}
