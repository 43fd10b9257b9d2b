package bench

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestPythonCompare(t *testing.T) {
	p := &PythonReport{Python: "/usr/bin/python3", PythonVer: "3.11.7", Items: 200000, Rows: []ProcRow{
		{Name: PyPlain, Items: 200000, WallSeconds: 2, UserSeconds: 1.5, SysSeconds: 0.5, PeakRSS: 40e6, PeakPSS: 20e6, Processes: 3,
			Command: "python3 plain_upper.py items-200000.jsonl out.jsonl"},
		{Name: PySubmitExecBatch, Items: 200000, ShardSize: 1000, Shards: 200, WallSeconds: 10, UserSeconds: 6, SysSeconds: 2,
			PeakRSS: 400e6, PeakPSS: 300e6, Processes: 9, LoadBefore: "1.00 0.50 0.25", LoadAfter: "2.00 1.00 0.50",
			Command: "submit --processor 'exec:python3 upper.py' --items-per-call 100 items-200000.jsonl"},
	}}
	p.compare()
	plain, sub := p.Rows[0], p.Rows[1]
	if plain.WallVsPlain != 0 || plain.ItemsPerSecond != 100000 {
		t.Errorf("plain row: %+v", plain)
	}
	if sub.WallVsPlain != 5 || sub.CPUVsPlain != 4 || sub.RSSVsPlain != 15 || sub.ItemsPerSecond != 20000 {
		t.Errorf("submit row: %.2f× wall, %.2f× CPU, %.2f× PSS, %v items/s; want 5×, 4×, 15×, 20,000",
			sub.WallVsPlain, sub.CPUVsPlain, sub.RSSVsPlain, sub.ItemsPerSecond)
	}
	var b strings.Builder
	writePython(&b, p)
	md := b.String()
	for _, want := range []string{
		"over 200,000 items",
		"Python 3.11.7 at `/usr/bin/python3`",
		"| " + PyPlain + " | — | 2.00 s | 100,000 | 2.00 s (1.50 s + 0.50 s) | 40 MB (20 MB) | 3 | — | — | — |",
		"| " + PySubmitExecBatch + " | 200 × 1,000 | 10.0 s | 20,000 | 8.00 s (6.00 s + 2.00 s) | 400 MB (300 MB) | 9 | 5.00× | 4.00× | 15.0× | 1.00 0.50 0.25 → 2.00 1.00 0.50 |",
		"- " + PySubmitExecBatch + ": `submit --processor 'exec:python3 upper.py' --items-per-call 100 items-200000.jsonl`",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}
}

func TestPythonRuns(t *testing.T) {
	runs := pythonRuns("/py", "/x/upper.py")
	if runs[0].name != PyPlain || runs[0].processor != "" {
		t.Errorf("first run %+v, want the plain script", runs[0])
	}
	got := map[string]string{}
	for _, r := range runs[1:] {
		got[r.name] = shellQuote(r.submitArgs("bin/submit", "in.jsonl"))
	}
	want := map[string]string{
		PySubmitExec:      "bin/submit --processor 'exec:/py /x/upper.py' in.jsonl",
		PySubmitExecCtx:   "bin/submit --processor 'exec:/py /x/upper.py' --item-context --item-parallelism 32 in.jsonl",
		PySubmitExecBatch: "bin/submit --processor 'exec:/py /x/upper.py' --items-per-call 100 in.jsonl",
		PySubmitExecLarge: "bin/submit --processor 'exec:/py /x/upper.py' --items-per-call 100 --shard-size 50000 in.jsonl",
		PySubmitEcho:      "bin/submit --processor echo in.jsonl",
		PySubmitEchoLarge: "bin/submit --processor echo --shard-size 50000 in.jsonl",
	}
	for name, w := range want {
		if got[name] != w {
			t.Errorf("%s: got %q, want %q", name, got[name], w)
		}
	}
	if len(got) != len(want) {
		t.Errorf("runs %v, want %d", got, len(want))
	}
}

func TestShellQuote(t *testing.T) {
	for _, c := range []struct {
		argv []string
		want string
	}{
		{[]string{"a", "b/c.py", "--x=1"}, "a b/c.py --x=1"},
		{[]string{"exec:python3 u.py"}, "'exec:python3 u.py'"},
		{[]string{"it's"}, `'it'\''s'`},
		{[]string{""}, "''"},
	} {
		if got := shellQuote(c.argv); got != c.want {
			t.Errorf("shellQuote(%q) = %q, want %q", c.argv, got, c.want)
		}
	}
}

func TestParseStatPPID(t *testing.T) {
	for _, c := range []struct {
		stat string
		ppid int
		ok   bool
	}{
		{"1234 (python3) S 1200 1234 1200 0 -1 4194560", 1200, true},
		// comm may hold spaces and parentheses.
		{"77 (a (b) c) R 5 77 77 0", 5, true},
		{"garbage", 0, false},
		{"9 (x)", 0, false},
	} {
		ppid, ok := parseStatPPID(c.stat)
		if ppid != c.ppid || ok != c.ok {
			t.Errorf("parseStatPPID(%q) = %d, %v; want %d, %v", c.stat, ppid, ok, c.ppid, c.ok)
		}
	}
}

func TestDescendants(t *testing.T) {
	parents := map[int]int{1: 0, 10: 1, 11: 10, 12: 10, 13: 11, 20: 1}
	got := descendants(10, parents)
	slices.Sort(got[1:])
	if !slices.Equal(got, []int{10, 11, 12, 13}) {
		t.Errorf("descendants of 10: %v", got)
	}
	if got := descendants(99, parents); got != nil {
		t.Errorf("descendants of a missing process: %v", got)
	}
}

func TestIOIdealAndFinish(t *testing.T) {
	if n, rate := ioIdeal(250, 32, 4, 50*time.Millisecond); n != 1000 || rate != 20000 {
		t.Errorf("250 × min(32, 4) at 50 ms: %d in flight, %v/s; want 1000, 20000", n, rate)
	}
	if n, _ := ioIdeal(100, 2, 8, 0); n != 200 {
		t.Errorf("100 × min(2, 8): %d in flight, want 200", n)
	}
	r := &IOReport{Row: Row{Items: 60000, Wall: 4 * time.Second, Concurrency: 4, ChildRuns: 60,
		Timeline: map[string]float64{"first_child_started": 0.5, "last_child_closed": 3.5, "child_mean_activity_run": 0.15}},
		ItemLatencySeconds: 0.05, ItemParallelism: 250, WorkerShards: 4}
	r.finishIO()
	if r.ItemsPerSecond != 15000 || r.PercentOfIdeal != 75 {
		t.Errorf("%v items/s, %v%% of ideal; want 15,000 and 75%%", r.ItemsPerSecond, r.PercentOfIdeal)
	}
	if r.SpanSeconds != 3 || r.SpanItemsPerSecond != 20000 || r.SpanPercentOfIdeal != 100 {
		t.Errorf("span %v s, %v items/s, %v%%; want 3 s, 20,000, 100%%", r.SpanSeconds, r.SpanItemsPerSecond, r.SpanPercentOfIdeal)
	}
	// Activities ran 60 × 0.15 s = 9 s of 4 slots × 3 s; their items
	// ideally take 60,000 × 50 ms / 250 = 12 s.
	if r.ActivityShare != 0.75 || r.ActivityEfficiency < 1.333 || r.ActivityEfficiency > 1.334 {
		t.Errorf("activity share %v, efficiency %v; want 0.75, 1.333", r.ActivityShare, r.ActivityEfficiency)
	}
	var b strings.Builder
	writeIO(&b, r)
	if want := "| 60,000 | 1,000 (250 × 4) |"; !strings.Contains(b.String(), want) {
		t.Errorf("markdown lacks %q:\n%s", want, b.String())
	}
}

func TestInFlightGauge(t *testing.T) {
	var g inFlightGauge
	if g.summary() != nil {
		t.Error("a gauge with no calls has a summary")
	}
	ctx := context.Background()
	done := make(chan struct{})
	for range 3 {
		go func() {
			g.enter()
			sleepFor(ctx, 20*time.Millisecond, nil)
			g.exit()
			done <- struct{}{}
		}()
	}
	for range 3 {
		<-done
	}
	s := g.summary()
	if s.Calls != 3 || s.MeanLatencySeconds < 0.02 || s.MeanInFlight <= 0 || s.MeanInFlight > 3 {
		t.Errorf("summary %+v", s)
	}
	var sum float64
	for _, v := range s.LevelSeconds {
		sum += v
	}
	if d := sum - s.SpanSeconds; d > 1e-6 || d < -1e-6 {
		t.Errorf("levels add up to %v s over a span of %v s", sum, s.SpanSeconds)
	}
	if got := s.atLeast(0); got < 0.999 || got > 1.001 {
		t.Errorf("share of time with at least 0 in flight: %v", got)
	}
	if data, err := json.Marshal(s); err != nil || !strings.Contains(string(data), `"mean_in_flight"`) {
		t.Errorf("JSON %s, %v", data, err)
	}
}

func TestSleepHonoursContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	start := time.Now()
	if _, err := sleepFor(ctx, time.Hour, nil); err == nil || time.Since(start) > time.Second {
		t.Errorf("sleepFor on a cancelled ctx: %v after %v", err, time.Since(start))
	}
}
