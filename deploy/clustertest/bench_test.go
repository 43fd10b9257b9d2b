package clustertest

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"

	"github.com/batchpipe/batchpipe/internal/testinfra"
)

// BenchmarkCluster times whole `submit` processes on the deployment of
// TestCluster (PostgreSQL, Temporal's four services as processes, MinIO
// over s3://) with 1 and 3 fresh `worker` processes, and says where the
// CPU went: the Temporal services, the workers, PostgreSQL (postmaster and
// backends), MinIO and submit, read from /proc/<pid>/stat before and after
// each run. `make bench-cluster` runs it:
//
//	go test -count=1 -run '^$' -bench Cluster -benchtime 1x -timeout 90m ./deploy/clustertest
//
// BATCHPIPE_BENCH_CLUSTER lists the runs, comma-separated, as
// ITEMSxWORKERS or ITEMSxWORKERS/SHARDSIZE (default: the shard size
// submit picks); BATCHPIPE_BENCH_CLUSTER_OUT is where the Markdown table
// goes (default bench-results/cluster.md in the repository). Every run has
// the same deployment, so PostgreSQL's tables grow from run to run, as a
// cluster's do.
func BenchmarkCluster(b *testing.B) {
	runs, err := parseBenchRuns(envOr("BATCHPIPE_BENCH_CLUSTER", "100000x1,100000x3,1000000x1,1000000x3,100000x3/250"))
	if err != nil {
		b.Fatal(err)
	}
	began := time.Now()
	step := func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "bench-cluster: %s (%.1fs)\n", fmt.Sprintf(format, args...), time.Since(began).Seconds())
	}
	d := startDeployment(b, step)
	minioPid := findMinIO(d.minio.Endpoint)
	var rows []benchRow
	for _, r := range runs {
		b.Run(r.name(), func(b *testing.B) {
			for range b.N {
				row := runBench(b, d, r, minioPid)
				b.ReportMetric(row.itemsPerSec(), "items/s")
				b.ReportMetric(row.wall.Seconds(), "wall-s")
				b.ReportMetric(row.serverCPU.Seconds(), "server-cpu-s")
				b.ReportMetric(row.workerCPU.Seconds(), "worker-cpu-s")
				b.ReportMetric(row.pgCPU.Seconds(), "pg-cpu-s")
				b.ReportMetric(0, "ns/op")
				if b.N == 1 {
					rows = append(rows, row)
				}
				step("%s: %.1fs, %.0f items/s, %d shards of %d", r.name(), row.wall.Seconds(), row.itemsPerSec(), row.shards, row.shardSize)
			}
		})
	}
	if len(rows) == 0 {
		return
	}
	table := benchTable(rows)
	fmt.Print("\n" + table)
	out := os.Getenv("BATCHPIPE_BENCH_CLUSTER_OUT")
	if out == "" {
		root, err := testinfra.RepoRoot()
		if err != nil {
			b.Fatal(err)
		}
		out = filepath.Join(root, "bench-results", "cluster.md")
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(out, []byte(table), 0o644); err != nil {
		b.Fatal(err)
	}
	fmt.Fprintf(os.Stderr, "bench-cluster: wrote %s\n", out)
}

// benchRun is one run: items through `submit` with workers fresh worker
// processes, at shardSize (0: submit's own choice).
type benchRun struct{ items, workers, shardSize int }

func (r benchRun) name() string {
	s := fmt.Sprintf("items=%d/workers=%d", r.items, r.workers)
	if r.shardSize > 0 {
		s += fmt.Sprintf("/shard=%d", r.shardSize)
	}
	return s
}

func parseBenchRuns(spec string) ([]benchRun, error) {
	var runs []benchRun
	for f := range strings.SplitSeq(spec, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		var r benchRun
		head, size, hasSize := strings.Cut(f, "/")
		items, workers, ok := strings.Cut(head, "x")
		var err1, err2, err3 error
		r.items, err1 = strconv.Atoi(items)
		r.workers, err2 = strconv.Atoi(workers)
		if hasSize {
			r.shardSize, err3 = strconv.Atoi(size)
		}
		if !ok || err1 != nil || err2 != nil || err3 != nil || r.items <= 0 || r.workers <= 0 || r.shardSize < 0 {
			return nil, fmt.Errorf("BATCHPIPE_BENCH_CLUSTER: %q is not ITEMSxWORKERS[/SHARDSIZE]", f)
		}
		runs = append(runs, r)
	}
	return runs, nil
}

// benchRow is what one run measured.
type benchRow struct {
	benchRun
	wall              time.Duration
	shards, shardSize int
	workerRSS         int64 // bytes: the largest worker's VmHWM
	serverRSS         int64 // bytes: the four services' peak VmRSS, summed
	historyRSS        int64 // bytes: the history service's peak VmRSS
	serverCPU         time.Duration
	serviceCPU        map[string]time.Duration
	workerCPU         time.Duration
	pgCPU, minioCPU   time.Duration
	submitCPU         time.Duration
	idleServerCPU     time.Duration // over idleWindow before the submit
	idlePgCPU         time.Duration
	actions           actionCount
	loadBefore        string
	loadAfter         string
}

func (r benchRow) itemsPerSec() float64 { return float64(r.items) / r.wall.Seconds() }

var (
	inputsMu sync.Mutex
	inputs   = map[int]string{}
)

// benchInput writes (once per count) n items shaped like
// examples/inputs.jsonl and returns the file.
func benchInput(tb testing.TB, dir string, n int) string {
	inputsMu.Lock()
	defer inputsMu.Unlock()
	if p, ok := inputs[n]; ok {
		return p
	}
	p := filepath.Join(dir, fmt.Sprintf("inputs-%d.jsonl", n))
	f, err := os.Create(p)
	if err != nil {
		tb.Fatal(err)
	}
	w := bufio.NewWriterSize(f, 1<<20)
	for i := range n {
		fmt.Fprintf(w, `{"arg1": "item %d", "arg2": "value %d"}`+"\n", i, i*7)
	}
	if err := w.Flush(); err != nil {
		tb.Fatal(err)
	}
	if err := f.Close(); err != nil {
		tb.Fatal(err)
	}
	inputs[n] = p
	return p
}

var stagedRe = regexp.MustCompile(`: (\d+) items in (\d+) shards of (\d+),`)

// runBench starts r.workers workers, runs one submit to the end, and stops
// the workers.
func runBench(b *testing.B, d *deployment, r benchRun, minioPid int) benchRow {
	b.Helper()
	b.StopTimer()
	row := benchRow{benchRun: r, serviceCPU: map[string]time.Duration{}}
	input := benchInput(b, d.dir, r.items)
	batchID := fmt.Sprintf("bench-%d-%d-%d-%d", r.items, r.workers, r.shardSize, time.Now().UnixNano()%1e6)

	workers := make([]*testinfra.Process, r.workers)
	for i := range workers {
		args := append([]string{"--store", d.store}, workerFlags...)
		workers[i] = start(b, fmt.Sprintf("%s-worker%d", batchID, i+1), d.dir, d.env, filepath.Join(d.bin, "worker"), args...)
	}
	for _, w := range workers {
		waitFor(b, w, "worker polling task queue", 60*time.Second)
	}
	time.Sleep(time.Second) // let the workers' pollers settle

	services := map[string]int{}
	for _, s := range testinfra.TemporalServices {
		services[s] = d.temporal.Service(s).Pid()
	}
	var workerPids []int
	for _, w := range workers {
		workerPids = append(workerPids, w.Pid())
	}
	sampled := append([]int{}, workerPids...)
	for _, pid := range services {
		sampled = append(sampled, pid)
	}
	// What the deployment burns with the workers polling and no batch.
	idle := cpuSnapshot(services, workerPids, d.pg.Pid(), minioPid)
	time.Sleep(idleWindow)
	before := cpuSnapshot(services, workerPids, d.pg.Pid(), minioPid)
	for _, pid := range services {
		row.idleServerCPU += before.cpu[pid] - idle.cpu[pid]
	}
	row.idlePgCPU = before.pg - idle.pg
	row.loadBefore = loadAvg()
	rss := watchRSS(sampled, 200*time.Millisecond)

	args := []string{"--store", d.store, "--batch-id", batchID}
	if r.shardSize > 0 {
		args = append(args, "--shard-size", strconv.Itoa(r.shardSize))
	}
	cmd := exec.Command(filepath.Join(d.bin, "submit"), append(args, input)...)
	cmd.Dir, cmd.Env = d.dir, d.env
	var stdout, stderr testinfra.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	b.StartTimer()
	began := time.Now()
	err := cmd.Run()
	row.wall = time.Since(began)
	b.StopTimer()

	peaks := rss.stop()
	after := cpuSnapshot(services, workerPids, d.pg.Pid(), minioPid)
	row.loadAfter = loadAvg()
	if err != nil {
		b.Fatalf("submit: %v\n%s\n%s\n%s", err, stdout.String(), testinfra.Tail(stderr.String(), 4000), d.temporal.Logs())
	}
	want := fmt.Sprintf("succeeded: %d items, %d succeeded, 0 failed", r.items, r.items)
	if !strings.Contains(stdout.String(), want) {
		b.Fatalf("submit's output does not say %q:\n%s\n%s", want, stdout.String(), testinfra.Tail(stderr.String(), 4000))
	}
	m := stagedRe.FindStringSubmatch(stderr.String())
	if m == nil {
		b.Fatalf("submit's output does not say how the input was sharded:\n%s", testinfra.Tail(stderr.String(), 4000))
	}
	row.shards, _ = strconv.Atoi(m[2])
	row.shardSize, _ = strconv.Atoi(m[3])
	row.submitCPU = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()

	for s, pid := range services {
		c := after.cpu[pid] - before.cpu[pid]
		row.serviceCPU[s] = c
		row.serverCPU += c
		row.serverRSS += peaks[pid]
		if s == "history" {
			row.historyRSS = peaks[pid]
		}
	}
	for _, pid := range workerPids {
		row.workerCPU += after.cpu[pid] - before.cpu[pid]
		row.workerRSS = max(row.workerRSS, peaks[pid], procKB(pid, "VmHWM")*1024)
	}
	row.pgCPU = after.pg - before.pg
	row.minioCPU = after.minio - before.minio

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if row.actions, err = countActions(ctx, d, batchID, row.shards); err != nil {
		b.Logf("counting actions of %s: %v", batchID, err)
	}
	for _, w := range workers {
		if err := w.Stop(syscall.SIGTERM, 30*time.Second); err != nil {
			b.Errorf("%s did not stop cleanly: %v\n%s", w.Name, err, w.Tail())
		}
	}
	return row
}

// idleWindow is how long each run first measures the idle deployment.
const idleWindow = 5 * time.Second

// cpuSnap holds CPU times (user + system, reaped children included).
type cpuSnap struct {
	cpu       map[int]time.Duration // per process tree root: services, workers
	pg, minio time.Duration
}

func cpuSnapshot(services map[string]int, workers []int, pg, minio int) cpuSnap {
	parents := readParents()
	s := cpuSnap{cpu: map[int]time.Duration{}}
	for _, pid := range services {
		s.cpu[pid] = treeCPU(pid, parents)
	}
	for _, pid := range workers {
		s.cpu[pid] = treeCPU(pid, parents)
	}
	s.pg = treeCPU(pg, parents)
	if minio > 0 {
		s.minio = treeCPU(minio, parents)
	}
	return s
}

// clockTick is Linux's USER_HZ, the unit of /proc/<pid>/stat's times.
const clockTick = 10 * time.Millisecond

// treeCPU is the CPU time of root and every process below it: utime +
// stime of each, plus cutime + cstime (the children each has reaped, e.g.
// PostgreSQL backends that exited).
func treeCPU(root int, parents map[int]int) time.Duration {
	children := map[int][]int{}
	for pid, ppid := range parents {
		children[ppid] = append(children[ppid], pid)
	}
	var total time.Duration
	for todo := []int{root}; len(todo) > 0; {
		pid := todo[0]
		todo = append(todo[1:], children[pid]...)
		f := statFields(pid)
		if len(f) < 15 {
			continue
		}
		for _, i := range []int{11, 12, 13, 14} { // utime stime cutime cstime
			v, _ := strconv.ParseInt(f[i], 10, 64)
			total += time.Duration(v) * clockTick
		}
	}
	return total
}

// statFields are the fields of /proc/<pid>/stat after "pid (comm)": state
// is field 0, ppid 1, utime 11.
func statFields(pid int) []string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return nil
	}
	return strings.Fields(s[i+1:])
}

// readParents maps every process in /proc to its parent.
func readParents() map[int]int {
	ents, _ := os.ReadDir("/proc")
	parents := map[int]int{}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if f := statFields(pid); len(f) > 1 {
			if ppid, err := strconv.Atoi(f[1]); err == nil {
				parents[pid] = ppid
			}
		}
	}
	return parents
}

// findMinIO returns the pid of the MinIO server listening on endpoint
// (its command line names it), or 0.
func findMinIO(endpoint string) int {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil {
			continue
		}
		args := strings.Split(string(b), "\x00")
		if strings.Contains(filepath.Base(args[0]), "minio") && strings.Contains(string(b), "\x00"+endpoint+"\x00") {
			return pid
		}
	}
	return 0
}

// procKB reads a "Key: N kB" line of /proc/<pid>/status.
func procKB(pid int, key string) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, key+":"); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return n
		}
	}
	return 0
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// rssWatcher samples the VmRSS of some processes and keeps each one's peak.
type rssWatcher struct {
	mu    sync.Mutex
	peaks map[int]int64
	quit  chan struct{}
	done  chan struct{}
}

func watchRSS(pids []int, every time.Duration) *rssWatcher {
	w := &rssWatcher{peaks: map[int]int64{}, quit: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			w.mu.Lock()
			for _, pid := range pids {
				w.peaks[pid] = max(w.peaks[pid], procKB(pid, "VmRSS")*1024)
			}
			w.mu.Unlock()
			select {
			case <-w.quit:
				return
			case <-t.C:
			}
		}
	}()
	return w
}

func (w *rssWatcher) stop() map[int]int64 {
	close(w.quit)
	<-w.done
	return w.peaks
}

// actionCount is Temporal Cloud's billable actions of one batch, read from
// histories: every run of the parent and three children (scaled to all),
// heartbeats and submit's progress queries not included (they never reach
// a history).
type actionCount struct {
	total           int64
	parentRuns      int
	largestRun      int // events
	childEvents     int
	childActivityMs float64 // mean time from the shard activity's start to its completion
}

// countActions reads the batch's histories.
func countActions(ctx context.Context, d *deployment, batchID string, shards int) (actionCount, error) {
	c, err := client.Dial(client.Options{HostPort: d.temporal.Address, Namespace: d.temporal.Namespace, Logger: quietLogger{}})
	if err != nil {
		return actionCount{}, err
	}
	defer c.Close()
	var a actionCount
	// The parent's runs, from the last one back through each start's
	// ContinuedExecutionRunId.
	for runID := ""; ; {
		n, events, prev, _, err := historyActions(ctx, c, batchID, runID)
		if err != nil {
			return a, err
		}
		a.total += n
		a.parentRuns++
		a.largestRun = max(a.largestRun, events)
		if prev == "" {
			break
		}
		runID = prev
	}
	samples := []int{0, shards / 2, shards - 1}
	var childActions int64
	var activity time.Duration
	for _, s := range samples {
		n, events, _, act, err := historyActions(ctx, c, fmt.Sprintf("%s/shard-%d", batchID, s), "")
		if err != nil {
			return a, err
		}
		childActions += n
		activity += act
		a.childEvents = max(a.childEvents, events)
	}
	a.total += childActions * int64(shards) / int64(len(samples))
	a.childActivityMs = float64(activity.Milliseconds()) / float64(len(samples))
	return a, nil
}

// historyActions counts one run's billable actions (as bench.HistoryActions
// does: a child start is billed in the parent and again in the child) and
// events, and returns the run it continued from and the time its last
// activity ran.
func historyActions(ctx context.Context, c client.Client, id, runID string) (actions int64, events int, prev string, activity time.Duration, err error) {
	it := c.GetWorkflowHistory(ctx, id, runID, false, enumspb.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
	var started time.Time
	for it.HasNext() {
		e, err := it.Next()
		if err != nil {
			return 0, 0, "", 0, err
		}
		events++
		switch e.GetEventType() {
		case enumspb.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED:
			actions++ // a client's start, a child's execution or a continue-as-new
			prev = e.GetWorkflowExecutionStartedEventAttributes().GetContinuedExecutionRunId()
		case enumspb.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED,
			enumspb.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED,
			enumspb.EVENT_TYPE_TIMER_STARTED,
			enumspb.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED,
			enumspb.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED:
			actions++
		case enumspb.EVENT_TYPE_ACTIVITY_TASK_STARTED:
			if n := e.GetActivityTaskStartedEventAttributes().GetAttempt(); n > 1 {
				actions += int64(n - 1)
			}
			started = e.GetEventTime().AsTime()
		case enumspb.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
			activity = e.GetEventTime().AsTime().Sub(started)
		}
	}
	return actions, events, prev, activity, nil
}

// quietLogger drops the SDK client's log lines.
type quietLogger struct{}

func (quietLogger) Debug(string, ...any) {}
func (quietLogger) Info(string, ...any)  {}
func (quietLogger) Warn(string, ...any)  {}
func (quietLogger) Error(string, ...any) {}

// benchTable renders the rows as Markdown.
func benchTable(rows []benchRow) string {
	var b strings.Builder
	mb := func(v int64) string { return fmt.Sprintf("%d MB", (v+(1<<19))>>20) }
	sec := func(v time.Duration) string { return fmt.Sprintf("%.1f s", v.Seconds()) }
	fmt.Fprintf(&b, "Cluster bench (%s; PostgreSQL, Temporal's 4 services as processes, MinIO over s3://), %s\n\n",
		"deploy/clustertest BenchmarkCluster", time.Now().UTC().Format("2006-01-02 15:04 MST"))
	b.WriteString("| items | workers | shards × size | wall (whole submit) | items/s | worker peak RSS | Temporal peak RSS (4 services; history) | server CPU | worker CPU | PostgreSQL CPU | MinIO CPU | submit CPU | server CPU / shard | idle server + PostgreSQL CPU | actions / 1k items | parent runs, largest (events) | shard activity | load before → after |\n")
	b.WriteString("|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|\n")
	for _, r := range rows {
		size := commas(r.shards) + " × " + commas(r.shardSize)
		if r.benchRun.shardSize == 0 {
			size += " (auto)"
		}
		fmt.Fprintf(&b, "| %s | %d | %s | %s | %s | %s | %s (%s) | %s | %s | %s | %s | %s | %.0f ms | %.0f%% + %.0f%% of a core | %.2f | %d, %d | %.2f s | %s → %s |\n",
			commas(r.items), r.workers, size, sec(r.wall), commas(int(r.itemsPerSec()+0.5)),
			mb(r.workerRSS), mb(r.serverRSS), mb(r.historyRSS),
			sec(r.serverCPU), sec(r.workerCPU), sec(r.pgCPU), sec(r.minioCPU), sec(r.submitCPU),
			float64(r.serverCPU.Milliseconds())/float64(r.shards),
			100*r.idleServerCPU.Seconds()/idleWindow.Seconds(), 100*r.idlePgCPU.Seconds()/idleWindow.Seconds(),
			float64(r.actions.total)*1000/float64(r.items), r.actions.parentRuns, r.actions.largestRun,
			r.actions.childActivityMs/1000, r.loadBefore, r.loadAfter)
	}
	b.WriteString("\nServer CPU by service:\n\n| run | history | matching | frontend | worker |\n|---|--:|--:|--:|--:|\n")
	for _, r := range rows {
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s |\n", r.name(),
			sec(r.serviceCPU["history"]), sec(r.serviceCPU["matching"]), sec(r.serviceCPU["frontend"]), sec(r.serviceCPU["worker"]))
	}
	return b.String()
}

func commas(n int) string {
	s := strconv.Itoa(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

// envOr is the environment variable k, or def when it is unset or empty.
func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}
