package bench

import (
	"strings"
	"testing"
	"time"
)

func TestCompare(t *testing.T) {
	rep := &Report{Rows: []Row{
		{Scenario: ScenarioDirect, Items: 1000, Wall: 100 * time.Millisecond},
		{Scenario: ScenarioBatchpipe, Items: 1000, Wall: 250 * time.Millisecond},
		{Scenario: ScenarioNaive, Items: 1000, Wall: 100 * time.Second},
		{Scenario: ScenarioDirect, Items: 20000, Wall: time.Second},
		{Scenario: ScenarioBatchpipe, Items: 20000, Wall: 2 * time.Second},
		{Scenario: ScenarioNaive, Items: 20000, Wall: 10 * time.Second, Stopped: "limit"},
	}}
	for i := range rep.Rows {
		rep.Rows[i].finish()
	}
	rep.compare()
	small, large := rep.Rows[1], rep.Rows[4]
	if small.TimeVsDirect != 2.5 || small.NaiveItems != 1000 || small.SpeedupVsNaive != 400 {
		t.Errorf("at 1,000: %.2f× direct's time, %.0f× naive@%d; want 2.5×, 400×@1000", small.TimeVsDirect, small.SpeedupVsNaive, small.NaiveItems)
	}
	// Naive stopped at 20,000: the comparison falls back on 1,000 items.
	if large.TimeVsDirect != 2 || large.NaiveItems != 1000 || large.SpeedupVsNaive != 1000 {
		t.Errorf("at 20,000: %.2f× direct's time, %.0f× naive@%d; want 2×, 1000×@1000", large.TimeVsDirect, large.SpeedupVsNaive, large.NaiveItems)
	}
	if rep.Rows[5].ItemsPerSecond != 0 {
		t.Errorf("a stopped run has a rate: %v", rep.Rows[5].ItemsPerSecond)
	}

	md := rep.Markdown()
	for _, want := range []string{"| batchpipe | 20,000 | 10,000 | 2.00 s |", "1,000× @1,000", "stopped: limit"} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}
}

func TestFormat(t *testing.T) {
	for _, c := range []struct {
		got, want string
	}{
		{fmtInt(0), "0"},
		{fmtInt(999), "999"},
		{fmtInt(1000), "1,000"},
		{fmtInt(-1234567), "-1,234,567"},
		{fmtFloat(0.1234), "0.123"},
		{fmtFloat(9.876), "9.88"},
		{fmtFloat(23.45), "23.4"},
		{fmtFloat(1234.4), "1,234"},
		{fmtBytes(0), "—"},
		{fmtBytes(999), "999 B"},
		{fmtBytes(29_400), "29 KB"},
		{fmtBytes(1_100_000), "1.1 MB"},
		{fmtBytes(150_000_000), "150 MB"},
		{fmtSeconds(0.123), "0.12 s"},
		{fmtSeconds(72.7), "72.7 s"},
	} {
		if c.got != c.want {
			t.Errorf("got %q, want %q", c.got, c.want)
		}
	}
}

func TestParseInts(t *testing.T) {
	got, err := parseInts("1000, 20_000,,1_000_000")
	if err != nil || len(got) != 3 || got[0] != 1000 || got[1] != 20000 || got[2] != 1000000 {
		t.Errorf("got %v, %v", got, err)
	}
	if _, err := parseInts("10,x"); err == nil {
		t.Error("no error for x")
	}
	if _, err := parseInts("0"); err == nil {
		t.Error("no error for 0")
	}
	if got, err := parseInts(""); err != nil || len(got) != 0 {
		t.Errorf("empty: %v, %v", got, err)
	}
}
