package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/batchpipe/batchpipe/blobstore"
	"github.com/batchpipe/batchpipe/manifests"
)

// The Python comparison: one Python function (examples/processors/upper.py's
// upper) over the same items, applied by a plain multiprocessing script
// (bench/plain_upper.py) and by whole `submit` processes running it as an
// exec processor, with the in-process echo processor for the cost of
// batchpipe alone. Every run is a whole program, timed from exec to exit;
// CPU is user + system of the process and every descendant it reaped
// (wait4's rusage), memory the peaks of the summed resident sets of its
// process tree (treeWatcher).

// Names of the Python comparison's runs.
const (
	PyPlain           = "plain Python (multiprocessing.Pool)"
	PySubmitExec      = "submit, exec upper.py, 1 item per call"
	PySubmitExecCtx   = "submit, exec upper.py, 1 item per call, --item-context --item-parallelism 32 (rounds)"
	PySubmitExecBatch = "submit, exec upper.py, --items-per-call 100"
	PySubmitExecLarge = "submit, exec upper.py, --items-per-call 100 --shard-size 50000"
	PySubmitEcho      = "submit, in-process echo"
	PySubmitEchoLarge = "submit, in-process echo, --shard-size 50000"
)

// ProcRow is one whole-program run of the Python comparison.
type ProcRow struct {
	Name string `json:"name"`
	// Command is what ran, with the bench's input named by its base name
	// (Dir is where it ran).
	Command        string  `json:"command"`
	Dir            string  `json:"-"`
	Items          int64   `json:"items"`
	ShardSize      int     `json:"shard_size,omitempty"`
	Shards         int     `json:"shards,omitempty"`
	ItemsPerCall   int     `json:"items_per_call,omitempty"`
	WallSeconds    float64 `json:"wall_seconds"`
	UserSeconds    float64 `json:"user_seconds"`
	SysSeconds     float64 `json:"sys_seconds"`
	ItemsPerSecond float64 `json:"items_per_second"`
	// Peak of the summed VmRSS and PSS of the process tree, sampled every
	// 50 ms, the top process's own VmHWM, and the most processes at once.
	PeakRSS   int64 `json:"peak_tree_rss_bytes"`
	PeakPSS   int64 `json:"peak_tree_pss_bytes"`
	RootRSS   int64 `json:"peak_root_rss_bytes"`
	Processes int   `json:"max_processes"`
	// Ratios to the plain script's run (0 for that run itself or when it
	// did not run).
	WallVsPlain float64 `json:"wall_vs_plain,omitempty"`
	CPUVsPlain  float64 `json:"cpu_vs_plain,omitempty"`
	RSSVsPlain  float64 `json:"rss_vs_plain,omitempty"`
	LoadBefore  string  `json:"load_before,omitempty"`
	LoadAfter   string  `json:"load_after,omitempty"`
}

// CPUSeconds is user + system time.
func (r ProcRow) CPUSeconds() float64 { return r.UserSeconds + r.SysSeconds }

// PythonReport is the Python comparison's section of the report.
type PythonReport struct {
	// Python is the interpreter every run used: what `python3 -c 'import
	// sys; print(sys.executable)'` printed, resolved once, so that no run
	// pays a launcher (a pyenv shim runs ~270 processes per start) for each
	// process it starts.
	Python    string    `json:"python"`
	PythonVer string    `json:"python_version"`
	Items     int64     `json:"items"`
	Rows      []ProcRow `json:"rows"`
}

// compare fills in every row's ratios to the plain script's run.
func (p *PythonReport) compare() {
	var plain *ProcRow
	for i := range p.Rows {
		if p.Rows[i].Name == PyPlain {
			plain = &p.Rows[i]
		}
	}
	for i := range p.Rows {
		r := &p.Rows[i]
		if r.WallSeconds > 0 {
			r.ItemsPerSecond = float64(r.Items) / r.WallSeconds
		}
		if plain == nil || r == plain {
			continue
		}
		if plain.WallSeconds > 0 {
			r.WallVsPlain = r.WallSeconds / plain.WallSeconds
		}
		if plain.CPUSeconds() > 0 {
			r.CPUVsPlain = r.CPUSeconds() / plain.CPUSeconds()
		}
		if plain.PeakPSS > 0 {
			r.RSSVsPlain = float64(r.PeakPSS) / float64(plain.PeakPSS)
		}
	}
}

// resolvePython returns the interpreter python names (a launcher such as a
// pyenv shim, or a path) runs, and its version.
func resolvePython(ctx context.Context, python string) (path, version string, err error) {
	out, err := exec.CommandContext(ctx, python, "-c", "import sys; print(sys.executable); print(sys.version.split()[0])").Output()
	if err != nil {
		return "", "", fmt.Errorf("resolving %s: %w", python, err)
	}
	f := strings.Fields(string(out))
	if len(f) != 2 || !filepath.IsAbs(f[0]) {
		return "", "", fmt.Errorf("resolving %s: unexpected output %q", python, out)
	}
	return f[0], f[1], nil
}

// runProgram runs argv in dir and measures it as a ProcRow.
func runProgram(ctx context.Context, row ProcRow, dir string, argv []string) (ProcRow, []byte, error) {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Dir = dir
	cmd.Env = envFor([]string{"TEMPORAL_"})
	cmd.SysProcAttr = deathSignal()
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	row.LoadBefore = loadAverage()
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return row, nil, err
	}
	tree := watchTree(cmd.Process.Pid, 50*time.Millisecond)
	err := cmd.Wait()
	wall := time.Since(start)
	peak := tree.Peak()
	row.LoadAfter = loadAverage()
	if err != nil {
		return row, out.Bytes(), fmt.Errorf("%v\n%s", err, tail(out.String(), 2000))
	}
	row.WallSeconds = wall.Seconds()
	row.UserSeconds = cmd.ProcessState.UserTime().Seconds()
	row.SysSeconds = cmd.ProcessState.SystemTime().Seconds()
	row.PeakRSS, row.PeakPSS, row.RootRSS, row.Processes = peak.RSS, peak.PSS, peak.RootHWM, peak.MaxProcs
	return row, out.Bytes(), nil
}

// pythonRun is one run of the comparison: its name and how to run it.
type pythonRun struct {
	name         string
	processor    string // "" for the plain script
	itemsPerCall int
	shardSize    int
	itemContext  bool
	// itemParallelism is --item-parallelism (0: the default): rounds
	// fill up only when enough calls wait for a process.
	itemParallelism int
}

// pythonRuns lists the comparison's runs, in the order they run.
func pythonRuns(python, upperPy string) []pythonRun {
	execProc := "exec:" + python + " " + upperPy
	return []pythonRun{
		{name: PyPlain},
		{name: PySubmitExec, processor: execProc},
		{name: PySubmitExecCtx, processor: execProc, itemContext: true, itemParallelism: 32},
		{name: PySubmitExecBatch, processor: execProc, itemsPerCall: 100},
		{name: PySubmitExecLarge, processor: execProc, itemsPerCall: 100, shardSize: 50000},
		{name: PySubmitEcho, processor: "echo"},
		{name: PySubmitEchoLarge, processor: "echo", shardSize: 50000},
	}
}

// submitArgs is the submit command line of a run (input last).
func (p pythonRun) submitArgs(submit, input string) []string {
	argv := []string{submit, "--processor", p.processor}
	if p.itemsPerCall > 1 {
		argv = append(argv, "--items-per-call", fmt.Sprint(p.itemsPerCall))
	}
	if p.shardSize > 0 {
		argv = append(argv, "--shard-size", fmt.Sprint(p.shardSize))
	}
	if p.itemContext {
		argv = append(argv, "--item-context")
	}
	if p.itemParallelism > 0 {
		argv = append(argv, "--item-parallelism", fmt.Sprint(p.itemParallelism))
	}
	return append(argv, input)
}

// shellQuote quotes argv for a POSIX shell where needed.
func shellQuote(argv []string) string {
	q := make([]string, len(argv))
	for i, a := range argv {
		if a != "" && strings.IndexFunc(a, func(r rune) bool {
			return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./:=,+@%", r))
		}) < 0 {
			q[i] = a
			continue
		}
		q[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
	}
	return strings.Join(q, " ")
}

// runPython runs the whole comparison over the n items of input.
func runPython(ctx context.Context, env *env, n int, input string, logf func(string, ...any)) (*PythonReport, []string) {
	var errs []string
	py, ver, err := resolvePython(ctx, env.cfg.Python)
	if err != nil {
		return nil, []string{err.Error()}
	}
	rep := &PythonReport{Python: py, PythonVer: ver, Items: int64(n)}
	abs := func(p string) string {
		a, err := filepath.Abs(p)
		if err != nil {
			return p
		}
		return a
	}
	upperPy, plainPy := abs(env.cfg.UpperPy), abs(env.cfg.PlainPy)
	for _, pr := range pythonRuns(py, upperPy) {
		if ctx.Err() != nil {
			break
		}
		dir := env.tempPath(fmt.Sprintf("python-%d-%d", n, len(rep.Rows)+len(errs)))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			errs = append(errs, err.Error())
			continue
		}
		// The input is linked into the run's directory, so that the
		// command line names it the same everywhere.
		local := filepath.Join(dir, filepath.Base(input))
		if err := os.Symlink(input, local); err != nil {
			errs = append(errs, err.Error())
			continue
		}
		row := ProcRow{Name: pr.name, Items: int64(n), ItemsPerCall: max(1, pr.itemsPerCall), Dir: dir}
		var argv []string
		if pr.processor == "" {
			argv = []string{py, plainPy, filepath.Base(input), "out.jsonl", "--chunksize", "1000", "--upper", upperPy}
			row.ItemsPerCall = 0
		} else {
			argv = pr.submitArgs(env.submitBin, filepath.Base(input))
		}
		row.Command = shellQuote(argv)
		logf("running %s at %d items: %s", pr.name, n, row.Command)
		row, out, err := runProgram(ctx, row, dir, argv)
		if err == nil {
			err = checkPythonRun(ctx, &row, pr, dir, out, n)
		}
		if err != nil {
			msg := fmt.Sprintf("%s at %d items: %v", pr.name, n, err)
			logf("ERROR %s", msg)
			errs = append(errs, msg)
			continue
		}
		logf("%s: %s wall, %.2f s CPU, tree peak RSS %s (PSS %s)", pr.name, fmtSeconds(row.WallSeconds),
			row.CPUSeconds(), fmtBytes(row.PeakRSS), fmtBytes(row.PeakPSS))
		rep.Rows = append(rep.Rows, row)
	}
	rep.compare()
	return rep, errs
}

// checkPythonRun checks that a run processed every item: the plain script's
// count and output file, submit's summary line and manifest.
func checkPythonRun(ctx context.Context, row *ProcRow, pr pythonRun, dir string, out []byte, n int) error {
	if pr.processor == "" {
		var got struct{ Items int }
		if err := json.Unmarshal(bytes.TrimSpace(out), &got); err != nil || got.Items != n {
			return fmt.Errorf("plain script: unexpected output %q", tail(string(out), 500))
		}
		lines, err := countLines(filepath.Join(dir, "out.jsonl"))
		if err != nil || lines != n {
			return fmt.Errorf("plain script wrote %d lines for %d items (%v)", lines, n, err)
		}
		return nil
	}
	m, err := submitManifest(ctx, dir, string(out), n)
	if err != nil {
		return err
	}
	if m.Counts.Succeeded != int64(n) {
		return fmt.Errorf("submit: %d of %d items succeeded", m.Counts.Succeeded, n)
	}
	row.ShardSize, row.Shards = m.Input.ShardSize, m.Input.Shards
	return nil
}

func countLines(path string) (int, error) {
	b, err := os.ReadFile(path)
	return bytes.Count(b, []byte{'\n'}), err
}

// submitManifest reads the manifest of the batch a submit in dir printed.
func submitManifest(ctx context.Context, dir, out string, n int) (manifests.Manifest, error) {
	match := submitSummary.FindStringSubmatch(out)
	if match == nil || match[2] != manifests.StatusSucceeded || match[3] != fmt.Sprint(n) {
		return manifests.Manifest{}, fmt.Errorf("submit: unexpected output:\n%s", tail(out, 2000))
	}
	return readManifest(ctx, dir, match[1])
}

// readManifest reads a batch's manifest from the file store submit used in
// dir.
func readManifest(ctx context.Context, dir, batchID string) (manifests.Manifest, error) {
	b, err := blobstore.Open(ctx, "file://"+filepath.Join(dir, ".batchpipe", "blobs"))
	if err != nil {
		return manifests.Manifest{}, err
	}
	defer b.Close()
	batch, err := manifests.Open(ctx, b, batchID)
	if err != nil {
		return manifests.Manifest{}, err
	}
	return batch.Manifest, nil
}
