// Package bench measures batchpipe against the naive one-child-per-item
// Temporal pattern and against a direct run without Temporal, all on one
// embedded Temporal server (state in a SQLite file, as `submit` runs it).
//
// Scenarios, each run at every item count asked for:
//
//   - naive: one parent workflow holding every item starts one child per
//     item at once; each child runs one activity; every result returns to
//     the parent. It stops where Temporal stops it (the 2,000 pending
//     children limit, the 2 MB payload limit), and the table says so.
//   - batchpipe: the product path with its defaults and the file store:
//     stage, start BatchWorkflow, wait while querying progress, read the
//     manifest. The worker (pipeline.NewWorker) runs in its own process, so
//     its peak RSS is its own.
//   - batchpipe-minio: the same against a real MinIO.
//   - direct, direct-minio: the ceiling without Temporal: read the input,
//     run the processor, write the same result objects and manifest.
//   - submit: the whole `submit` program exec'd in a fresh directory (its
//     own embedded server, worker and file store), wall time and peak RSS
//     of that process.
//
// A sweep of shard size × concurrency runs the batchpipe path at one item
// count. Then two comparisons (python.go, iobound.go):
//
//   - a Python function (examples/processors/upper.py's upper) over
//     -python-items items: a plain multiprocessing script
//     (bench/plain_upper.py) against whole `submit` processes running it as
//     an exec processor, one item and 100 items per call, with a large
//     shard size, and the in-process echo processor; wall, CPU and the
//     process tree's peak memory of each, and their ratios to the script;
//   - an I/O-bound Go processor (ProcessorSleep, 50 ms per item) over
//     -io-items items on one worker with -io-item-parallelism ×
//     -io-shards items in flight: items/s against the ideal, and where
//     the rest goes (the shards' timeline, the processor's in-flight
//     gauge).
//
// And a failure stop (failstop.go): -failstop-items items that all fail,
// with a failure limit: the items handed out before the batch stops, and
// its wall time.
//
// Results are printed as a table and written as JSON and Markdown.
package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.temporal.io/sdk/client"

	"github.com/batchpipe/batchpipe/internal/devserver"
)

// Scenario names.
const (
	ScenarioNaive          = "naive"
	ScenarioBatchpipe      = "batchpipe"
	ScenarioBatchpipeMinio = "batchpipe-minio"
	ScenarioDirect         = "direct"
	ScenarioDirectMinio    = "direct-minio"
	ScenarioSubmit         = "submit"
)

// AllScenarios in the order they run at each item count (naive runs last,
// after every other item count and the sweep, so that its thousands of
// workflows do not weigh on the others' measurements).
var AllScenarios = []string{ScenarioDirect, ScenarioDirectMinio, ScenarioBatchpipe, ScenarioBatchpipeMinio, ScenarioSubmit, ScenarioNaive}

// Config says what to run.
type Config struct {
	Items            []int
	Scenarios        []string
	SweepItems       int
	SweepShardSizes  []int
	SweepConcurrency []int
	NaiveTimeout     time.Duration
	Repeat           int // runs of each measurement but naive; the median by wall time is kept
	Processor        string
	ItemsPerCall     int    // of the batchpipe scenarios and the sweep (for exec: processors)
	OutDir           string // results.json and results.md go here
	SubmitBin        string // "" builds ./cmd/submit
	MinioBin         string
	PprofDir         string // CPU profiles of the bench process (the server) and of each worker
	WorkDir          string // "" makes a temporary one
	Keep             bool   // keep WorkDir
	Command          string // the command line, for the report

	// The Python comparison (PythonReport): PythonItems items (0: not
	// run), the interpreter Python resolves to, upper.py and the plain
	// script.
	PythonItems int
	Python      string
	UpperPy     string
	PlainPy     string
	// The I/O-bound scenario (IOReport): IOItems items (0: not run),
	// IOItemParallelism items at once per shard, IOShards shards at once
	// on one worker, IOShardSize items per shard (0: automatic).
	IOItems           int
	IOItemParallelism int
	IOShards          int
	IOConcurrency     int // the batch's; 0 means IOShards
	IOShardSize       int
	// The failure-stop scenario (FailStopReport): FailStopItems items (0:
	// not run) failing every one, with a limit of FailStopMaxFailures
	// items; FailStopWorkerShards shards at once on its worker (0: the
	// worker's default).
	FailStopItems        int
	FailStopShardSize    int
	FailStopConcurrency  int
	FailStopMaxFailures  int64
	FailStopWorkerShards int
}

// Row is one measured run.
type Row struct {
	Scenario    string `json:"scenario"`
	Items       int64  `json:"items"`
	ShardSize   int    `json:"shard_size,omitempty"`
	Concurrency int    `json:"concurrency,omitempty"`
	// Stopped says why a run could not finish; empty when it did.
	Stopped     string        `json:"stopped,omitempty"`
	Wall        time.Duration `json:"-"`
	WallSeconds float64       `json:"wall_seconds"`
	// AllWallSeconds lists every repetition's wall time when a measurement
	// was repeated; the row is the median one.
	AllWallSeconds []float64          `json:"all_wall_seconds,omitempty"`
	ItemsPerSecond float64            `json:"items_per_second"`
	Phases         map[string]float64 `json:"phases_seconds,omitempty"`
	// Timeline is read from the histories, in seconds from the parent's
	// start (child figures are means over the children read).
	Timeline map[string]float64 `json:"timeline_seconds,omitempty"`
	// ParentRuns counts the parent's runs (continue-as-new), ChildRuns the
	// child workflows.
	ParentRuns int `json:"parent_runs"`
	ChildRuns  int `json:"child_runs"`
	// Largest history of any run read, in events and in bytes (the two
	// maxima may come from different runs).
	MaxEvents       int     `json:"max_history_events"`
	MaxHistoryBytes int     `json:"max_history_bytes"`
	Actions         Actions `json:"actions"`
	ActionsTotal    int64   `json:"actions_total"`
	ActionsPer1000  float64 `json:"actions_per_1000_items"`
	WorkerRSS       int64   `json:"peak_rss_bytes"`
	// WorkerCPUSeconds is the worker process's user + system time, for the
	// rows with a worker process of their own.
	WorkerCPUSeconds float64       `json:"worker_cpu_seconds,omitempty"`
	gauge            *gaugeSummary // the worker's, for IOReport
	// AnonRSS is the peak of the anonymous resident set (heap, stacks),
	// sampled every 20 ms: the part that can grow with the work, without
	// the executable's own pages.
	AnonRSS int64  `json:"peak_anon_rss_bytes"`
	RSSOf   string `json:"peak_rss_of"`
	// SpeedupVsNaive is items/s over naive's items/s at NaiveItems items
	// (the same count when naive finished there, else the largest count at
	// which it finished).
	SpeedupVsNaive float64 `json:"speedup_vs_naive,omitempty"`
	NaiveItems     int64   `json:"naive_items,omitempty"`
	// TimeVsDirect is wall time over the direct run's at the same count and
	// store kind.
	TimeVsDirect float64  `json:"time_vs_direct,omitempty"`
	Notes        []string `json:"notes,omitempty"`
}

func (r *Row) finish() {
	r.WallSeconds = r.Wall.Seconds()
	if r.Stopped == "" && r.WallSeconds > 0 {
		r.ItemsPerSecond = float64(r.Items) / r.WallSeconds
	}
	r.ActionsTotal = r.Actions.Total()
	if r.Items > 0 {
		r.ActionsPer1000 = float64(r.ActionsTotal) * 1000 / float64(r.Items)
	}
}

// isTemporal reports whether the row ran on Temporal.
func (r *Row) isTemporal() bool {
	return r.Scenario != ScenarioDirect && r.Scenario != ScenarioDirectMinio
}

// Report is one bench run.
type Report struct {
	Machine   Machine         `json:"machine"`
	Command   string          `json:"command"`
	StartedAt time.Time       `json:"started_at"`
	Seconds   float64         `json:"seconds"`
	Rows      []Row           `json:"rows"`
	Sweep     []Row           `json:"sweep,omitempty"`
	Python    *PythonReport   `json:"python,omitempty"`
	IO        *IOReport       `json:"io_bound,omitempty"`
	FailStop  *FailStopReport `json:"failure_stop,omitempty"`
	Errors    []string        `json:"errors,omitempty"`
}

// env is what the scenarios share.
type env struct {
	cfg       Config
	self      string // this program, re-run as worker, direct and inspect processes
	work      string
	server    *devserver.Server
	client    client.Client
	calls     *callCounter
	stderr    io.Writer
	runTag    string
	submitBin string
	minio     *minioServer
	minioErr  error
	seq       int
}

func (e *env) tempPath(name string) string { return filepath.Join(e.work, name) }

func (e *env) pprofPath(name string) string { return filepath.Join(e.cfg.PprofDir, name) }

func (e *env) taskQueue(scenario string, n int) string {
	e.seq++
	return fmt.Sprintf("bench-%s-%d-%d-%s", scenario, n, e.seq, e.runTag)
}

func (e *env) minioServer(ctx context.Context) (*minioServer, error) {
	if e.minio == nil && e.minioErr == nil {
		e.minio, e.minioErr = startMinio(ctx, e.cfg.MinioBin, e.tempPath("minio"))
		if e.minioErr == nil {
			for _, kv := range e.minio.env() {
				k, v, _ := strings.Cut(kv, "=")
				os.Setenv(k, v) // for this process's store and the worker processes'
			}
		}
	}
	return e.minio, e.minioErr
}

// Main runs the bench command with args (without the program name) and
// returns the exit code. The subcommands worker, direct and inspect are the
// processes the bench starts itself.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		switch args[0] {
		case "worker":
			return runWorkerProcess(ctx, args[1:], stderr)
		case "direct":
			return runDirectProcess(ctx, args[1:], stdout, stderr)
		case "inspect":
			return runInspectProcess(ctx, args[1:], stdout, stderr)
		}
	}
	cfg, err := parseFlags(args, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	rep, err := Run(ctx, cfg, stderr)
	if rep != nil {
		fmt.Fprint(stdout, rep.Markdown())
		if cfg.OutDir != "" {
			if werr := rep.Write(cfg.OutDir); werr != nil {
				fmt.Fprintln(stderr, "bench:", werr)
				return 1
			}
			fmt.Fprintf(stderr, "wrote %s and %s\n", filepath.Join(cfg.OutDir, "results.json"), filepath.Join(cfg.OutDir, "results.md"))
		}
	}
	if err != nil {
		fmt.Fprintln(stderr, "bench:", err)
		return 1
	}
	if len(rep.Errors) > 0 {
		return 1
	}
	return 0
}

func parseFlags(args []string, stderr io.Writer) (Config, error) {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: bench [flags]\n\nRuns each scenario at each item count on one embedded Temporal server and prints one table.\n\nFlags:")
		fs.PrintDefaults()
	}
	items := fs.String("items", "1000,20000", "item counts, comma-separated")
	scenarios := fs.String("scenarios", strings.Join(AllScenarios, ","), "scenarios to run, comma-separated")
	sweepItems := fs.Int("sweep-items", 20000, "item count of the shard size × concurrency sweep")
	sweepShards := fs.String("sweep-shard-sizes", "100,1000,5000", "shard sizes of the sweep (empty: no sweep)")
	sweepConc := fs.String("sweep-concurrency", "8,32,128", "concurrencies of the sweep (empty: no sweep)")
	naiveTimeout := fs.Duration("naive-timeout", 10*time.Minute, "give up on a naive run after this long")
	repeat := fs.Int("repeat", 1, "run each measurement (but naive) this many times and keep the median")
	processor := fs.String("processor", "example", "processor run on every item")
	itemsPerCall := fs.Int("items-per-call", 1, "items per call of the batchpipe scenarios and the sweep, as submit --items-per-call (for exec: processors)")
	outDir := fs.String("out", "bench-results", "directory for results.json and results.md (empty: print only)")
	submitBin := fs.String("submit-bin", "", "the submit program to time (default: go build ./cmd/submit into the work directory)")
	minioBin := fs.String("minio-bin", "bin/minio", "MinIO binary for the minio scenarios (BATCHPIPE_MINIO_ENDPOINT uses a running one)")
	pprofDir := fs.String("pprof", "", "write CPU profiles of the bench process (embedded server) and of each worker process here")
	pythonItems := fs.Int("python-items", 200000, "items of the Python comparison: plain multiprocessing script vs submit with an exec processor (0: not run)")
	python := fs.String("python", "python3", "Python for the comparison, resolved once to sys.executable (a pyenv shim costs ~270 processes per start)")
	upperPy := fs.String("upper-py", "examples/processors/upper.py", "the exec processor of the Python comparison")
	plainPy := fs.String("plain-py", "bench/plain_upper.py", "the plain multiprocessing script of the Python comparison")
	ioItems := fs.Int("io-items", 200000, "items of the I/O-bound scenario (a processor waiting 50 ms per item; 0: not run)")
	ioPar := fs.Int("io-item-parallelism", 250, "I/O-bound scenario: items at once within a shard")
	ioShards := fs.Int("io-shards", 4, "I/O-bound scenario: shards at once on its one worker (the worker's --max-concurrent-shards and the batch's --concurrency)")
	ioConc := fs.Int("io-concurrency", 0, "I/O-bound scenario: the batch's --concurrency (0: -io-shards); above -io-shards, the next shard waits for a free slot")
	ioShardSize := fs.Int("io-shard-size", 0, "I/O-bound scenario: items per shard (0: the automatic size)")
	failItems := fs.Int("failstop-items", 50000, "items of the failure-stop scenario (every item fails; 0: not run)")
	failShardSize := fs.Int("failstop-shard-size", 1000, "failure-stop scenario: items per shard")
	failConc := fs.Int("failstop-concurrency", 32, "failure-stop scenario: the batch's --concurrency")
	failMax := fs.Int64("failstop-max-failures", 100, "failure-stop scenario: the batch's --max-failures (items)")
	failWorkerShards := fs.Int("failstop-worker-shards", 0, "failure-stop scenario: shards at once on its worker (0: the worker's default)")
	workDir := fs.String("work", "", "work directory (default: a temporary one, removed at the end)")
	keep := fs.Bool("keep", false, "keep the work directory")
	if err := fs.Parse(args); err != nil {
		return Config{}, err
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "bench: unexpected arguments %q\n", fs.Args())
		return Config{}, errors.New("usage")
	}
	cfg := Config{SweepItems: *sweepItems, NaiveTimeout: *naiveTimeout, Repeat: max(1, *repeat), Processor: *processor, ItemsPerCall: *itemsPerCall, OutDir: *outDir,
		SubmitBin: *submitBin, MinioBin: *minioBin, PprofDir: *pprofDir, WorkDir: *workDir, Keep: *keep,
		Command:     "bench " + strings.Join(args, " "),
		PythonItems: max(0, *pythonItems), Python: *python, UpperPy: *upperPy, PlainPy: *plainPy,
		IOItems: max(0, *ioItems), IOItemParallelism: max(1, *ioPar), IOShards: max(1, *ioShards), IOConcurrency: max(0, *ioConc), IOShardSize: max(0, *ioShardSize),
		FailStopItems: max(0, *failItems), FailStopShardSize: max(1, *failShardSize), FailStopConcurrency: max(1, *failConc),
		FailStopMaxFailures: max(0, *failMax), FailStopWorkerShards: max(0, *failWorkerShards)}
	var err error
	if cfg.Items, err = parseInts(*items); err != nil {
		return cfg, usage(stderr, "-items", err)
	}
	if cfg.SweepShardSizes, err = parseInts(*sweepShards); err != nil {
		return cfg, usage(stderr, "-sweep-shard-sizes", err)
	}
	if cfg.SweepConcurrency, err = parseInts(*sweepConc); err != nil {
		return cfg, usage(stderr, "-sweep-concurrency", err)
	}
	for _, s := range strings.Split(*scenarios, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		if !slices.Contains(AllScenarios, s) {
			return cfg, usage(stderr, "-scenarios", fmt.Errorf("unknown scenario %q (known: %s)", s, strings.Join(AllScenarios, ", ")))
		}
		cfg.Scenarios = append(cfg.Scenarios, s)
	}
	if err := processors.Check(cfg.Processor); err != nil {
		return cfg, usage(stderr, "-processor", err)
	}
	return cfg, nil
}

func usage(w io.Writer, flagName string, err error) error {
	fmt.Fprintf(w, "bench: %s: %v\n", flagName, err)
	return err
}

// parseInts reads "1000,20000" (underscores allowed: "1_000_000").
func parseInts(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		f = strings.ReplaceAll(strings.TrimSpace(f), "_", "")
		if f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 {
			return nil, fmt.Errorf("%q is not a positive integer", f)
		}
		out = append(out, n)
	}
	return out, nil
}

// Run runs every scenario of cfg and returns the report. Errors of single
// runs are recorded in the report (and the run left out); an error is
// returned only when the bench cannot run at all.
func Run(ctx context.Context, cfg Config, stderr io.Writer) (*Report, error) {
	rep := &Report{Machine: ReadMachine(), Command: cfg.Command, StartedAt: time.Now().UTC()}
	began := time.Now()
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	work := cfg.WorkDir
	if work == "" {
		if work, err = os.MkdirTemp("", "batchpipe-bench-"); err != nil {
			return nil, err
		}
	}
	if !cfg.Keep {
		defer os.RemoveAll(work)
	}
	if cfg.PprofDir != "" {
		if err := os.MkdirAll(cfg.PprofDir, 0o755); err != nil {
			return nil, err
		}
		f, err := os.Create(filepath.Join(cfg.PprofDir, "bench-server.cpu.pprof"))
		if err != nil {
			return nil, err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return nil, err
		}
		defer pprof.StopCPUProfile()
	}
	var tag [3]byte
	rand.Read(tag[:])
	e := &env{cfg: cfg, self: self, work: work, stderr: stderr, runTag: hex.EncodeToString(tag[:]), calls: &callCounter{}}
	defer func() { e.minio.stop() }()

	logf := func(format string, args ...any) {
		fmt.Fprintf(stderr, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
	}
	has := func(s string) bool { return slices.Contains(cfg.Scenarios, s) }
	if has(ScenarioSubmit) || cfg.PythonItems > 0 {
		e.submitBin = cfg.SubmitBin
		if e.submitBin == "" {
			e.submitBin = filepath.Join(work, "submit")
			logf("building ./cmd/submit")
			cmd := exec.CommandContext(ctx, "go", "build", "-o", e.submitBin, "./cmd/submit")
			cmd.Stdout, cmd.Stderr = stderr, stderr
			if err := cmd.Run(); err != nil {
				return nil, fmt.Errorf("building ./cmd/submit (or give -submit-bin): %w", err)
			}
		} else if e.submitBin, err = filepath.Abs(e.submitBin); err != nil {
			return nil, err
		}
	}

	logf("starting the embedded Temporal server (SQLite file in %s)", filepath.Join(work, "temporal"))
	quiet := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	e.server, err = devserver.Start(ctx, devserver.Options{Dir: filepath.Join(work, "temporal"), Logger: quiet, LogLevel: slog.LevelError + 8})
	if err != nil {
		return nil, err
	}
	defer e.server.Stop()
	e.client, err = client.Dial(dialOptions(e.server.FrontendAddr(), e.server.Namespace(), e.calls, quiet))
	if err != nil {
		return nil, err
	}
	defer e.client.Close()

	// repeated runs f cfg.Repeat times and keeps the median by wall time.
	repeated := func(f func() (Row, error)) (Row, error) {
		var rows []Row
		for range cfg.Repeat {
			row, err := f()
			if err != nil {
				return row, err
			}
			row.finish()
			rows = append(rows, row)
		}
		return median(rows), nil
	}
	record := func(rows *[]Row, what string, row Row, err error) {
		row.finish()
		if err != nil {
			msg := fmt.Sprintf("%s: %v", what, err)
			logf("ERROR %s", msg)
			rep.Errors = append(rep.Errors, msg)
			return
		}
		logf("%s: %s", what, row.summary())
		*rows = append(*rows, row)
	}
	fileStore := func(name string) string {
		dir := e.tempPath(name)
		os.MkdirAll(dir, 0o755)
		return "file://" + dir
	}
	inputFor := func(n int) (string, error) {
		path := filepath.Join(work, "inputs", fmt.Sprintf("items-%d.jsonl", n))
		if _, err := os.Stat(path); err == nil {
			return path, nil
		}
		return path, writeItems(path, n)
	}

	for _, n := range cfg.Items {
		input, err := inputFor(n)
		if err != nil {
			return rep, err
		}
		for _, s := range cfg.Scenarios {
			if ctx.Err() != nil {
				return rep, ctx.Err()
			}
			what := fmt.Sprintf("%s at %d items", s, n)
			var row Row
			var err error
			switch s {
			case ScenarioDirect:
				logf("running %s", what)
				row, err = repeated(func() (Row, error) {
					return runDirect(ctx, e, s, n, input, fileStore(fmt.Sprintf("store-direct-%d", n)))
				})
			case ScenarioDirectMinio, ScenarioBatchpipeMinio:
				var m *minioServer
				if m, err = e.minioServer(ctx); err != nil {
					break
				}
				logf("running %s", what)
				row, err = repeated(func() (Row, error) {
					if s == ScenarioDirectMinio {
						return runDirect(ctx, e, s, n, input, m.storeURL(fmt.Sprintf("direct-%d-%s", n, e.runTag)))
					}
					return runBatchpipe(ctx, e, s, n, input, m.storeURL(fmt.Sprintf("batchpipe-%d-%s", n, e.runTag)), batchOpts{ItemsPerCall: cfg.ItemsPerCall})
				})
			case ScenarioBatchpipe:
				logf("running %s", what)
				row, err = repeated(func() (Row, error) {
					return runBatchpipe(ctx, e, s, n, input, fileStore(fmt.Sprintf("store-batchpipe-%d", n)), batchOpts{ItemsPerCall: cfg.ItemsPerCall})
				})
			case ScenarioSubmit:
				logf("running %s", what)
				row, err = repeated(func() (Row, error) { return runSubmit(ctx, e, n, input) })
			default:
				continue // naive runs last
			}
			record(&rep.Rows, what, row, err)
		}
	}

	if len(cfg.SweepShardSizes) > 0 && len(cfg.SweepConcurrency) > 0 && cfg.SweepItems > 0 {
		input, err := inputFor(cfg.SweepItems)
		if err != nil {
			return rep, err
		}
		// Rounds: each round runs every cell once, so that repetitions of a
		// cell are spread over the sweep rather than run back to back.
		type cell struct{ size, conc int }
		var cells []cell
		for _, size := range cfg.SweepShardSizes {
			for _, conc := range cfg.SweepConcurrency {
				cells = append(cells, cell{size, conc})
			}
		}
		runs := make([][]Row, len(cells))
		failed := make([]bool, len(cells))
		for round := range cfg.Repeat {
			for i, c := range cells {
				if ctx.Err() != nil {
					return rep, ctx.Err()
				}
				if failed[i] {
					continue
				}
				what := fmt.Sprintf("sweep at %d items, shard size %d, concurrency %d", cfg.SweepItems, c.size, c.conc)
				if cfg.Repeat > 1 {
					what += fmt.Sprintf(" (round %d of %d)", round+1, cfg.Repeat)
				}
				logf("running %s", what)
				row, err := runBatchpipe(ctx, e, ScenarioBatchpipe, cfg.SweepItems, input,
					fileStore(fmt.Sprintf("store-sweep-%d-%d", c.size, c.conc)), batchOpts{ShardSize: c.size, Concurrency: c.conc, ItemsPerCall: cfg.ItemsPerCall})
				row.finish()
				if err != nil {
					failed[i] = true
					record(&rep.Sweep, what, row, err)
					continue
				}
				logf("%s: %s", what, row.summary())
				runs[i] = append(runs[i], row)
			}
		}
		for i := range cells {
			if len(runs[i]) > 0 {
				rep.Sweep = append(rep.Sweep, median(runs[i]))
			}
		}
	}

	if cfg.PythonItems > 0 && ctx.Err() == nil {
		input, err := inputFor(cfg.PythonItems)
		if err != nil {
			return rep, err
		}
		var errs []string
		rep.Python, errs = runPython(ctx, e, cfg.PythonItems, input, logf)
		rep.Errors = append(rep.Errors, errs...)
	}
	if cfg.IOItems > 0 && ctx.Err() == nil {
		input, err := inputFor(cfg.IOItems)
		if err != nil {
			return rep, err
		}
		what := fmt.Sprintf("I/O-bound (%s) at %d items", ProcessorSleep, cfg.IOItems)
		logf("running %s: item parallelism %d, %d shards at once", what, cfg.IOItemParallelism, cfg.IOShards)
		io, err := runIOBound(ctx, e, cfg.IOItems, input, fileStore(fmt.Sprintf("store-io-%d", cfg.IOItems)))
		if err != nil {
			msg := fmt.Sprintf("%s: %v", what, err)
			logf("ERROR %s", msg)
			rep.Errors = append(rep.Errors, msg)
		} else {
			logf("%s: %s", what, io.summary())
			rep.IO = io
		}
	}

	if cfg.FailStopItems > 0 && ctx.Err() == nil {
		input, err := inputFor(cfg.FailStopItems)
		if err != nil {
			return rep, err
		}
		what := fmt.Sprintf("failure stop at %d items (all fail, --max-failures %d)", cfg.FailStopItems, cfg.FailStopMaxFailures)
		logf("running %s: shard size %d, concurrency %d", what, cfg.FailStopShardSize, cfg.FailStopConcurrency)
		fsr, err := runFailStop(ctx, e, cfg.FailStopItems, input, fileStore(fmt.Sprintf("store-failstop-%d", cfg.FailStopItems)))
		if err != nil {
			msg := fmt.Sprintf("%s: %v", what, err)
			logf("ERROR %s", msg)
			rep.Errors = append(rep.Errors, msg)
		} else {
			logf("%s: %s", what, fsr.summary())
			rep.FailStop = fsr
		}
	}

	if slices.Contains(cfg.Scenarios, ScenarioNaive) {
		for _, n := range cfg.Items {
			if ctx.Err() != nil {
				return rep, ctx.Err()
			}
			input, err := inputFor(n)
			if err != nil {
				return rep, err
			}
			what := fmt.Sprintf("naive at %d items", n)
			logf("running %s (timeout %v)", what, cfg.NaiveTimeout)
			row, err := runNaive(ctx, e, n, input)
			row.RSSOf = "worker process"
			record(&rep.Rows, what, row, err)
		}
	}
	rep.compare()
	rep.Seconds = time.Since(began).Seconds()
	rep.Machine.LoadAfter = loadAverage()
	return rep, nil
}

// median returns the row with the median wall time, listing every row's
// wall time in it when there is more than one.
func median(rows []Row) Row {
	if len(rows) == 1 {
		return rows[0]
	}
	rows = slices.Clone(rows)
	slices.SortFunc(rows, func(a, b Row) int { return int(a.Wall - b.Wall) })
	med := rows[len(rows)/2]
	for _, r := range rows {
		med.AllWallSeconds = append(med.AllWallSeconds, r.WallSeconds)
	}
	return med
}

// compare fills in the ratios to naive and to direct.
func (rep *Report) compare() {
	find := func(scenario string, n int64) *Row {
		for i := range rep.Rows {
			if r := &rep.Rows[i]; r.Scenario == scenario && r.Items == n {
				return r
			}
		}
		return nil
	}
	// naiveAt is naive's row at n if it finished there, else its finished
	// row with the most items.
	naiveAt := func(n int64) *Row {
		if r := find(ScenarioNaive, n); r != nil && r.Stopped == "" {
			return r
		}
		var best *Row
		for i := range rep.Rows {
			r := &rep.Rows[i]
			if r.Scenario == ScenarioNaive && r.Stopped == "" && (best == nil || r.Items > best.Items) {
				best = r
			}
		}
		return best
	}
	fill := func(r *Row) {
		if r.Scenario == ScenarioNaive || !r.isTemporal() || r.Stopped != "" {
			return
		}
		if nv := naiveAt(r.Items); nv != nil && nv.ItemsPerSecond > 0 {
			r.SpeedupVsNaive, r.NaiveItems = r.ItemsPerSecond/nv.ItemsPerSecond, nv.Items
		}
		d := find(ScenarioDirect, r.Items)
		if r.Scenario == ScenarioBatchpipeMinio {
			d = find(ScenarioDirectMinio, r.Items)
		}
		if d != nil && d.WallSeconds > 0 {
			r.TimeVsDirect = r.WallSeconds / d.WallSeconds
		}
	}
	for i := range rep.Rows {
		fill(&rep.Rows[i])
	}
	for i := range rep.Sweep {
		fill(&rep.Sweep[i])
	}
}

// Write writes results.json and results.md into dir.
func (rep *Report) Write(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	data, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "results.json"), append(data, '\n'), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "results.md"), []byte(rep.Markdown()), 0o644)
}

// runInspectProcess is the `inspect` subcommand: it starts a server on the
// state directory a finished submit left and prints, as JSON, the runs,
// largest history and actions of one batch.
func runInspectProcess(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("bench inspect", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", "", "state directory of an embedded server")
	batchID := fs.String("batch-id", "", "batch id")
	shards := fs.Int("shards", 0, "the batch's shard count")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	quiet := slog.New(slog.DiscardHandler)
	srv, err := devserver.Start(ctx, devserver.Options{Dir: *dir, Logger: quiet, LogLevel: slog.LevelError + 8})
	if err != nil {
		fmt.Fprintln(stderr, "bench inspect:", err)
		return 1
	}
	defer srv.Stop()
	c, err := client.Dial(dialOptions(srv.FrontendAddr(), srv.Namespace(), &callCounter{}, quiet))
	if err != nil {
		fmt.Fprintln(stderr, "bench inspect:", err)
		return 1
	}
	defer c.Close()
	var row Row
	if err := walkBatch(ctx, c, &row, *batchID, *shards); err != nil {
		fmt.Fprintln(stderr, "bench inspect:", err)
		return 1
	}
	json.NewEncoder(stdout).Encode(row)
	return 0
}
