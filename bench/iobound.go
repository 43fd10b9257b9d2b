package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/batchpipe/batchpipe/execproc"
	"github.com/batchpipe/batchpipe/pipeline"
)

// The I/O-bound scenario: a Go processor that waits 50 ms per item, as a
// call to an HTTP service would (honouring ctx), run by one worker process
// with many items in flight. A worker holds ItemParallelism × (shards
// running on it at once) items in flight, so with a latency of L the ideal
// rate is that product over L.

// ProcessorSleep is the I/O-bound processor: it answers each item with the
// item itself after SleepLatency, or fails with ctx's error if ctx ends
// first.
const (
	ProcessorSleep = "sleep-50ms"
	SleepLatency   = 50 * time.Millisecond
)

// newProcessors returns the processors of the bench's own processes and
// workers: the built-in ones, the exec family and ProcessorSleep.
func newProcessors() *pipeline.Registry {
	r := execproc.NewRegistry(execproc.Options{})
	r.Register(ProcessorSleep, pipeline.ProcessorFunc(func(ctx context.Context, in json.RawMessage) (json.RawMessage, error) {
		sleepGauge.enter()
		defer sleepGauge.exit()
		return sleepFor(ctx, SleepLatency, in)
	}))
	return r
}

// sleepGauge measures, in the worker process, how many items are inside
// ProcessorSleep over time: by Little's law the rate is the mean number in
// flight over the mean time each spends there, so the two say whether a
// shortfall is items not handed to the processor (in flight) or the
// processor's calls lasting longer than SleepLatency (latency).
var sleepGauge inFlightGauge

// inFlightGauge integrates the number of calls in flight over time.
type inFlightGauge struct {
	mu          sync.Mutex
	inFlight    int
	calls       int64
	first, last time.Time     // first entry, last exit
	at          time.Time     // last change
	area        float64       // ∫ in flight dt, in item-seconds
	busy        time.Duration // Σ time inside, over calls
	starts      []time.Time   // entry times of the calls in flight, oldest first
	levels      [gaugeLevels]time.Duration
}

// gaugeLevels buckets the time spent at each in-flight level, in steps of
// gaugeStep items (the last bucket holds everything above).
const (
	gaugeLevels = 17
	gaugeStep   = 64
)

func (g *inFlightGauge) enter() {
	now := time.Now()
	g.mu.Lock()
	defer g.mu.Unlock()
	g.advance(now)
	if g.first.IsZero() {
		g.first = now
	}
	g.inFlight++
	g.starts = append(g.starts, now)
}

func (g *inFlightGauge) exit() {
	now := time.Now()
	g.mu.Lock()
	defer g.mu.Unlock()
	g.advance(now)
	g.inFlight--
	g.calls++
	g.last = now
	// Calls end in about the order they start; the mean latency needs only
	// the sum of the durations, which any pairing of entries with exits
	// gives exactly.
	g.busy += now.Sub(g.starts[0])
	g.starts = g.starts[1:]
}

func (g *inFlightGauge) advance(now time.Time) {
	if !g.at.IsZero() {
		d := now.Sub(g.at)
		g.area += float64(g.inFlight) * d.Seconds()
		g.levels[min(g.inFlight/gaugeStep, gaugeLevels-1)] += d
	}
	g.at = now
}

// gaugeSummary is what the worker process reports of sleepGauge.
type gaugeSummary struct {
	Calls int64 `json:"calls"`
	// SpanSeconds is from the first call's start to the last one's end.
	SpanSeconds        float64 `json:"span_seconds"`
	MeanInFlight       float64 `json:"mean_in_flight"`
	MeanLatencySeconds float64 `json:"mean_latency_seconds"`
	// LevelSeconds[i] is the time spent with i×64 to i×64+63 calls in
	// flight (the last entry: 1,024 or more).
	LevelSeconds []float64 `json:"level_seconds"`
}

func (g *inFlightGauge) summary() *gaugeSummary {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.calls == 0 {
		return nil
	}
	s := &gaugeSummary{Calls: g.calls, SpanSeconds: g.last.Sub(g.first).Seconds(),
		MeanLatencySeconds: g.busy.Seconds() / float64(g.calls)}
	if s.SpanSeconds > 0 {
		s.MeanInFlight = g.area / s.SpanSeconds
	}
	for _, d := range g.levels {
		s.LevelSeconds = append(s.LevelSeconds, d.Seconds())
	}
	return s
}

// atLeast returns the share of the span spent with at least n calls in
// flight, counting whole 64-item buckets (n rounded down to one).
func (s *gaugeSummary) atLeast(n int) float64 {
	if s == nil || s.SpanSeconds <= 0 {
		return 0
	}
	var t float64
	for i := min(n/gaugeStep, gaugeLevels-1); i < len(s.LevelSeconds); i++ {
		t += s.LevelSeconds[i]
	}
	return t / s.SpanSeconds
}

func sleepFor(ctx context.Context, d time.Duration, out json.RawMessage) (json.RawMessage, error) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return out, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// IOReport is the I/O-bound scenario's run.
type IOReport struct {
	Row
	Processor          string  `json:"processor"`
	ItemLatencySeconds float64 `json:"item_latency_seconds"`
	ItemParallelism    int     `json:"item_parallelism"`
	// WorkerShards is the worker's MaxConcurrentActivityExecutionSize
	// (worker --max-concurrent-shards): shards running on it at once.
	WorkerShards int `json:"worker_shards"`
	// InFlight is ItemParallelism × the shards that can run at once (the
	// smaller of the batch's concurrency and WorkerShards), and
	// IdealPerSecond InFlight over the latency.
	InFlight       int     `json:"in_flight"`
	IdealPerSecond float64 `json:"ideal_items_per_second"`
	PercentOfIdeal float64 `json:"percent_of_ideal"`
	// Span is from the first shard's start to the last shard's close (read
	// from the children's histories): the rate without staging, the
	// parent's start and finalize.
	SpanSeconds        float64 `json:"span_seconds,omitempty"`
	SpanItemsPerSecond float64 `json:"span_items_per_second,omitempty"`
	SpanPercentOfIdeal float64 `json:"span_percent_of_ideal,omitempty"`
	// ActivityShare is the time shard activities ran over the time the
	// worker's shard slots were there to run them (slots × span), and
	// ActivityEfficiency the ideal time of the items (items × latency /
	// item parallelism) over the time the activities ran: their product
	// is about the span's share of the ideal.
	ActivityShare      float64 `json:"activity_share,omitempty"`
	ActivityEfficiency float64 `json:"activity_efficiency,omitempty"`
	// Gauge is the worker's count of calls inside the processor.
	Gauge      *gaugeSummary `json:"processor_gauge,omitempty"`
	LoadBefore string        `json:"load_before,omitempty"`
	LoadAfter  string        `json:"load_after,omitempty"`
}

// ioIdeal returns the items in flight and the ideal items/s of a worker
// running shards (at most workerShards at once, at most concurrency
// offered by the batch) with par items each, every item taking latency.
func ioIdeal(par, concurrency, workerShards int, latency time.Duration) (int, float64) {
	inFlight := par * min(concurrency, workerShards)
	if latency <= 0 {
		return inFlight, 0
	}
	return inFlight, float64(inFlight) / latency.Seconds()
}

// finishIO fills in the rates and percentages from the row's figures.
func (r *IOReport) finishIO() {
	r.Row.finish()
	r.InFlight, r.IdealPerSecond = ioIdeal(r.ItemParallelism, r.Concurrency, r.WorkerShards,
		time.Duration(r.ItemLatencySeconds*float64(time.Second)))
	if r.IdealPerSecond > 0 {
		r.PercentOfIdeal = 100 * r.ItemsPerSecond / r.IdealPerSecond
	}
	if first, ok := r.Timeline["first_child_started"]; ok {
		if last, ok := r.Timeline["last_child_closed"]; ok && last > first {
			r.SpanSeconds = last - first
			r.SpanItemsPerSecond = float64(r.Items) / r.SpanSeconds
			if r.IdealPerSecond > 0 {
				r.SpanPercentOfIdeal = 100 * r.SpanItemsPerSecond / r.IdealPerSecond
			}
		}
	}
	slots := min(r.Concurrency, r.WorkerShards)
	if run, ok := r.Timeline["child_mean_activity_run"]; ok && run > 0 && r.SpanSeconds > 0 && slots > 0 && r.ItemParallelism > 0 {
		ran := run * float64(r.ChildRuns)
		r.ActivityShare = ran / (float64(slots) * r.SpanSeconds)
		r.ActivityEfficiency = float64(r.Items) * r.ItemLatencySeconds / float64(r.ItemParallelism) / ran
	}
}

// runIOBound runs the I/O-bound scenario over the n items of input.
func runIOBound(ctx context.Context, env *env, n int, input, storeURL string) (*IOReport, error) {
	c := env.cfg
	rep := &IOReport{Processor: ProcessorSleep, ItemLatencySeconds: SleepLatency.Seconds(),
		ItemParallelism: c.IOItemParallelism, WorkerShards: c.IOShards, LoadBefore: loadAverage()}
	conc := c.IOConcurrency
	if conc <= 0 {
		conc = c.IOShards
	}
	row, err := runBatchpipe(ctx, env, "io-bound", n, input, storeURL, batchOpts{
		Processor: ProcessorSleep, ShardSize: c.IOShardSize, Concurrency: conc,
		ItemParallelism: c.IOItemParallelism, WorkerShards: c.IOShards,
	})
	rep.LoadAfter = loadAverage()
	rep.Row = row
	rep.Gauge = row.gauge
	if err != nil {
		return rep, err
	}
	rep.finishIO()
	return rep, nil
}

// summary is the one-line progress report of the run.
func (r *IOReport) summary() string {
	s := fmt.Sprintf("%s items/s (%.1f%% of the ideal %s with %s in flight), span %s items/s (%.1f%%; activities %.0f%% of slot time, at %.0f%% efficiency), worker peak RSS %s, worker CPU %.2f s",
		fmtFloat(r.ItemsPerSecond), r.PercentOfIdeal, fmtFloat(r.IdealPerSecond), fmtInt(int64(r.InFlight)),
		fmtFloat(r.SpanItemsPerSecond), r.SpanPercentOfIdeal, 100*r.ActivityShare, 100*r.ActivityEfficiency,
		fmtBytes(r.WorkerRSS), r.WorkerCPUSeconds)
	if g := r.Gauge; g != nil {
		s += fmt.Sprintf("; processor: %.0f in flight on average, %.1f ms per call, ≥ 90%% of %d in flight %.0f%% of the time",
			g.MeanInFlight, 1000*g.MeanLatencySeconds, r.InFlight, 100*g.atLeast(r.InFlight*9/10))
	}
	return s
}
