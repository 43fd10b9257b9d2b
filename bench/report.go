package bench

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Markdown renders the report: the machine, the main table, the actions
// breakdown and the sweep.
func (rep *Report) Markdown() string {
	var b strings.Builder
	m := rep.Machine
	fmt.Fprintf(&b, "## batchpipe bench\n\n")
	fmt.Fprintf(&b, "Machine: %d CPUs (%s), %s memory, %s, %s; load average %s before, %s after. Command: `%s`. Started %s, took %s.\n\n",
		m.CPUs, orDash(m.CPUModel), fmtMiB(m.MemoryMiB), m.OS, m.Go, orDash(m.LoadBefore), orDash(m.LoadAfter), rep.Command,
		rep.StartedAt.Format("2006-01-02 15:04 UTC"), fmtSeconds(rep.Seconds))

	if len(rep.Rows) > 0 {
		b.WriteString("| scenario | items | items/s | wall | runs (parent + children) | largest run: events / bytes | actions / 1k items | peak RSS (anon) | vs naive | time vs direct |\n")
		b.WriteString("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n")
		for _, r := range rep.Rows {
			fmt.Fprintf(&b, "| %s | %s | %s |\n", r.Scenario, fmtInt(r.Items), strings.Join(rowCells(r), " | "))
		}
		b.WriteString("\n")
		writeLegend(&b)
	}

	if rows := temporalRows(rep.Rows); len(rows) > 0 {
		b.WriteString("\nTemporal actions (the unit Temporal Cloud bills), by kind:\n\n")
		b.WriteString("| scenario | items | workflow starts | continue-as-new | child starts + child executions | activities | heartbeats | queries | signals | other | total | per 1k items |\n")
		b.WriteString("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n")
		for _, r := range rows {
			a := r.Actions
			other := a.Timers + a.Updates + a.SearchAttributeUpserts + a.SideEffects + a.LocalActivities
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %s + %s | %s | %s | %s | %s | %s | %s | %s |\n",
				r.Scenario, fmtInt(r.Items), fmtInt(a.WorkflowStarts), fmtInt(a.ContinueAsNew),
				fmtInt(a.ChildStarts), fmtInt(a.ChildExecutions), fmtInt(a.Activities), fmtInt(a.Heartbeats),
				fmtInt(a.Queries), fmtInt(a.Signals), fmtInt(other), fmtInt(r.ActionsTotal), fmtFloat(r.ActionsPer1000))
		}
	}

	if len(rep.Sweep) > 0 {
		writeSweep(&b, rep.Sweep)
	}
	if rep.Python != nil && len(rep.Python.Rows) > 0 {
		writePython(&b, rep.Python)
	}
	if rep.IO != nil {
		writeIO(&b, rep.IO)
	}

	var notes []string
	for _, r := range append(slices.Clone(rep.Rows), rep.Sweep...) {
		for _, n := range r.Notes {
			notes = append(notes, fmt.Sprintf("%s at %s items: %s", r.Scenario, fmtInt(r.Items), n))
		}
	}
	if len(notes) > 0 {
		b.WriteString("\nNotes:\n\n")
		for _, n := range slices.Compact(notes) {
			fmt.Fprintf(&b, "- %s\n", n)
		}
	}
	if len(rep.Errors) > 0 {
		b.WriteString("\nErrors (runs left out of the tables):\n\n")
		for _, e := range rep.Errors {
			fmt.Fprintf(&b, "- %s\n", e)
		}
	}
	return b.String()
}

func writeLegend(b *strings.Builder) {
	b.WriteString("Wall time: batchpipe rows from staging to the manifest (server already up, worker already polling); " +
		"`submit` is the whole `submit` process (embedded server start included); direct is its own process's run. " +
		"Peak RSS (in parentheses its anonymous part: heap and stacks, without the pages of the executable itself, over 100 MB for a binary that links the Temporal server): the worker process for naive and batchpipe rows, the whole process for submit and direct. " +
		"vs naive: items/s over naive's at the same count (or, marked @N, at the largest count naive finished). " +
		"time vs direct: wall time over direct's at the same count and store.\n")
}

// rowCells are a row's cells after its scenario and item count: items/s,
// wall, runs, largest history, actions per 1k items, peak RSS, vs naive,
// time vs direct.
func rowCells(r Row) []string {
	rate, wall := fmtFloat(r.ItemsPerSecond), fmtSeconds(r.WallSeconds)
	if r.Stopped != "" {
		rate = "stopped: " + r.Stopped
	}
	runs, hist, actions := "—", "—", "—"
	if r.isTemporal() && (r.ParentRuns > 0 || r.ChildRuns > 0) {
		runs = fmt.Sprintf("%s + %s", fmtInt(int64(r.ParentRuns)), fmtInt(int64(r.ChildRuns)))
		hist = fmt.Sprintf("%s / %s", fmtInt(int64(r.MaxEvents)), fmtBytes(int64(r.MaxHistoryBytes)))
		actions = fmtFloat(r.ActionsPer1000)
	}
	vsNaive, vsDirect := "—", "—"
	if r.SpeedupVsNaive > 0 {
		vsNaive = fmtFloat(r.SpeedupVsNaive) + "×"
		if r.NaiveItems != r.Items {
			vsNaive += " @" + fmtInt(r.NaiveItems)
		}
	}
	if r.TimeVsDirect > 0 {
		vsDirect = strconv.FormatFloat(r.TimeVsDirect, 'f', 1, 64) + "×"
	}
	rss := fmtBytes(r.WorkerRSS)
	if r.AnonRSS > 0 {
		rss += " (" + fmtBytes(r.AnonRSS) + ")"
	}
	return []string{rate, wall, runs, hist, actions, rss, vsNaive, vsDirect}
}

func writeSweep(b *strings.Builder, rows []Row) {
	var sizes, concs []int
	for _, r := range rows {
		if !slices.Contains(sizes, r.ShardSize) {
			sizes = append(sizes, r.ShardSize)
		}
		if !slices.Contains(concs, r.Concurrency) {
			concs = append(concs, r.Concurrency)
		}
	}
	slices.Sort(sizes)
	slices.Sort(concs)
	fmt.Fprintf(b, "\nSweep at %s items (batchpipe, file store): items/s (wall time)\n\n", fmtInt(rows[0].Items))
	b.WriteString("| shard size \\ concurrency |")
	for _, c := range concs {
		fmt.Fprintf(b, " %d |", c)
	}
	b.WriteString("\n|---|")
	for range concs {
		b.WriteString("--:|")
	}
	b.WriteString("\n")
	for _, s := range sizes {
		shards := (rows[0].Items + int64(s) - 1) / int64(s)
		fmt.Fprintf(b, "| %s (%s children) |", fmtInt(int64(s)), fmtInt(shards))
		for _, c := range concs {
			cell := "—"
			for _, r := range rows {
				if r.ShardSize == s && r.Concurrency == c {
					cell = fmt.Sprintf("%s (%s)", fmtFloat(r.ItemsPerSecond), fmtSeconds(r.WallSeconds))
				}
			}
			fmt.Fprintf(b, " %s |", cell)
		}
		b.WriteString("\n")
	}
	b.WriteString("\n| shard size | concurrency | items/s | wall | runs (parent + children) | largest run: events / bytes | actions / 1k items | peak RSS (anon) | vs naive | time vs direct |\n")
	b.WriteString("|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n")
	for _, r := range rows {
		fmt.Fprintf(b, "| %s | %d | %s |\n", fmtInt(int64(r.ShardSize)), r.Concurrency, strings.Join(rowCells(r), " | "))
	}
}

func temporalRows(rows []Row) []Row {
	var out []Row
	for _, r := range rows {
		if r.isTemporal() && (r.ParentRuns > 0 || r.ChildRuns > 0 || r.ActionsTotal > 0) {
			out = append(out, r)
		}
	}
	return out
}

// summary is the one-line progress report of a run.
func (r *Row) summary() string {
	s := fmtSeconds(r.WallSeconds)
	if r.Stopped != "" {
		s = "stopped: " + r.Stopped + " after " + s
	} else {
		s = fmt.Sprintf("%s items/s, %s", fmtFloat(r.ItemsPerSecond), s)
	}
	if r.isTemporal() {
		s += fmt.Sprintf(", runs %d+%d, largest %d events / %s, %s actions/1k", r.ParentRuns, r.ChildRuns,
			r.MaxEvents, fmtBytes(int64(r.MaxHistoryBytes)), fmtFloat(r.ActionsPer1000))
	}
	return s + ", peak RSS " + fmtBytes(r.WorkerRSS) + " (anon " + fmtBytes(r.AnonRSS) + ")"
}

// fmtInt writes n with thousands separators: 1,000,000.
func fmtInt(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

// fmtFloat keeps three significant digits below 100 and none above:
// 0.123, 9.87, 23.4, 1,234.
func fmtFloat(v float64) string {
	switch {
	case v == 0:
		return "0"
	case v >= 100:
		return fmtInt(int64(v + 0.5))
	case v >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	case v >= 1:
		return strconv.FormatFloat(v, 'f', 2, 64)
	default:
		return strconv.FormatFloat(v, 'f', 3, 64)
	}
}

func fmtSeconds(s float64) string {
	switch {
	case s >= 100:
		return fmt.Sprintf("%.0f s", s)
	case s >= 10:
		return fmt.Sprintf("%.1f s", s)
	default:
		return fmt.Sprintf("%.2f s", s)
	}
}

// fmtBytes writes n in KB or MB (powers of 1,000, like the limits Temporal
// states: 50 MB of history, 2 MB per payload).
func fmtBytes(n int64) string {
	switch {
	case n <= 0:
		return "—"
	case n >= 10_000_000:
		return fmt.Sprintf("%.0f MB", float64(n)/1e6)
	case n >= 1_000_000:
		return fmt.Sprintf("%.1f MB", float64(n)/1e6)
	case n >= 1000:
		return fmt.Sprintf("%.0f KB", float64(n)/1e3)
	default:
		return fmt.Sprintf("%d B", n)
	}
}

func fmtMiB(m int64) string {
	if m >= 1024 {
		return fmt.Sprintf("%.0f GiB", float64(m)/1024)
	}
	return fmt.Sprintf("%d MiB", m)
}

func orDash(s string) string {
	if s == "" {
		return "—"
	}
	return s
}

// writePython renders the Python comparison: one row per program run, its
// ratios to the plain script, then the exact command lines.
func writePython(b *strings.Builder, p *PythonReport) {
	fmt.Fprintf(b, "\nThe same Python function (upper.py's `upper`) over %s items: a plain multiprocessing script and whole `submit` processes (Python %s at `%s`, resolved once, for every process):\n\n",
		fmtInt(p.Items), p.PythonVer, p.Python)
	b.WriteString("| run | shards | wall | items/s | user + sys CPU | peak RSS of the process tree (PSS) | processes | wall vs plain | CPU vs plain | PSS vs plain | load before → after |\n")
	b.WriteString("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|\n")
	for _, r := range p.Rows {
		shards := "—"
		if r.Shards > 0 {
			shards = fmt.Sprintf("%s × %s", fmtInt(int64(r.Shards)), fmtInt(int64(r.ShardSize)))
		}
		fmt.Fprintf(b, "| %s | %s | %s | %s | %s (%s + %s) | %s (%s) | %d | %s | %s | %s | %s → %s |\n",
			r.Name, shards, fmtSeconds(r.WallSeconds), fmtFloat(r.ItemsPerSecond),
			fmtSeconds(r.CPUSeconds()), fmtSeconds(r.UserSeconds), fmtSeconds(r.SysSeconds),
			fmtBytes(r.PeakRSS), fmtBytes(r.PeakPSS), r.Processes,
			fmtRatio(r.WallVsPlain), fmtRatio(r.CPUVsPlain), fmtRatio(r.RSSVsPlain), orDash(r.LoadBefore), orDash(r.LoadAfter))
	}
	b.WriteString("\nCommands (each in a fresh directory holding the input):\n\n")
	for _, r := range p.Rows {
		fmt.Fprintf(b, "- %s: `%s`\n", r.Name, r.Command)
	}
}

// writeIO renders the I/O-bound scenario's run.
func writeIO(b *strings.Builder, r *IOReport) {
	fmt.Fprintf(b, "\nI/O-bound processor (`%s`: each item waits %s, honouring ctx) on one worker process:\n\n", r.Processor, fmtSeconds(r.ItemLatencySeconds))
	b.WriteString("| items | in flight (item parallelism × shards at once) | shard size (shards) | wall | items/s | % of ideal | first shard start → last shard close: items/s (% of ideal) | worker peak RSS (anon) | worker CPU | load before → after |\n")
	b.WriteString("|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|\n")
	fmt.Fprintf(b, "| %s | %s (%d × %d) | %s (%s) | %s | %s | %.1f%% of %s | %s (%.1f%%) in %s | %s (%s) | %s | %s → %s |\n",
		fmtInt(r.Items), fmtInt(int64(r.InFlight)), r.ItemParallelism, min(r.Concurrency, r.WorkerShards),
		fmtInt(int64(r.ShardSize)), fmtInt(int64(r.ChildRuns)), fmtSeconds(r.WallSeconds), fmtFloat(r.ItemsPerSecond),
		r.PercentOfIdeal, fmtFloat(r.IdealPerSecond), fmtFloat(r.SpanItemsPerSecond), r.SpanPercentOfIdeal, fmtSeconds(r.SpanSeconds),
		fmtBytes(r.WorkerRSS), fmtBytes(r.AnonRSS), fmtSeconds(r.WorkerCPUSeconds), orDash(r.LoadBefore), orDash(r.LoadAfter))
}

// fmtRatio writes a ratio as 2.5×, or — for none.
func fmtRatio(v float64) string {
	if v <= 0 {
		return "—"
	}
	return fmtFloat(v) + "×"
}
