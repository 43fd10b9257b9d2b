package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.temporal.io/sdk/client"
	sdklog "go.temporal.io/sdk/log"
	"google.golang.org/grpc"

	"github.com/batchpipe/batchpipe/pipeline"
)

// callCounter counts the gRPC calls a Temporal client made that succeeded,
// by method name (the part after the last slash).
type callCounter struct {
	mu sync.Mutex
	m  map[string]int64
}

func (c *callCounter) interceptor() grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		err := invoker(ctx, method, req, reply, cc, opts...)
		if err == nil {
			c.add(method[strings.LastIndexByte(method, '/')+1:], 1)
		}
		return err
	}
}

func (c *callCounter) add(method string, n int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]int64{}
	}
	c.m[method] += n
}

func (c *callCounter) get(method string) int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m[method]
}

func (c *callCounter) snapshot() map[string]int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := make(map[string]int64, len(c.m))
	for k, v := range c.m {
		m[k] = v
	}
	return m
}

// dialOptions returns client options for addr that count calls in c.
func dialOptions(addr, namespace string, c *callCounter, logger *slog.Logger) client.Options {
	return client.Options{
		HostPort:  addr,
		Namespace: namespace,
		Logger:    sdklog.NewStructuredLogger(logger),
		ConnectionOptions: client.ConnectionOptions{
			DialOptions: []grpc.DialOption{grpc.WithChainUnaryInterceptor(c.interceptor())},
		},
	}
}

// workerReport is what a worker process writes when it stops.
type workerReport struct {
	Calls       map[string]int64 `json:"calls"`         // gRPC calls to the server that succeeded
	PeakRSS     int64            `json:"peak_rss"`      // bytes, VmHWM at exit
	PeakAnonRSS int64            `json:"peak_anon_rss"` // bytes, largest RssAnon sampled every 20 ms
	CPUSeconds  float64          `json:"cpu_seconds"`   // user + system, filled in by the parent from wait4
	// Gauge is sleepGauge's summary when ProcessorSleep ran.
	Gauge *gaugeSummary `json:"processor_gauge,omitempty"`
}

// heartbeats is the number of activity heartbeats that reached the server.
func (r workerReport) heartbeats() int64 {
	return r.Calls["RecordActivityTaskHeartbeat"] + r.Calls["RecordActivityTaskHeartbeatById"]
}

// runWorkerProcess is the `worker` subcommand: batchpipe's worker (as
// pipeline.NewWorker builds it, with the product's defaults) plus the naive
// scenario's workflows, on one task queue. It prints "ready" once polling,
// runs until SIGTERM/SIGINT, then writes its report to -report.
func runWorkerProcess(ctx context.Context, args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("bench worker", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("address", "", "Temporal frontend host:port")
	namespace := fs.String("namespace", "default", "Temporal namespace")
	taskQueue := fs.String("task-queue", "", "task queue to poll")
	report := fs.String("report", "", "file to write the call counts to on exit")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of this process")
	heapProfile := fs.String("heapprofile", "", "write a heap profile of this process taken when its heap was largest")
	maxShards := fs.Int("max-concurrent-shards", 0, "shards (activities) run at once, as worker --max-concurrent-shards (0: pipeline.NewWorker's default)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *addr == "" || *taskQueue == "" || *report == "" {
		fmt.Fprintln(stderr, "bench worker: -address, -task-queue and -report are required")
		return 2
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			fmt.Fprintln(stderr, "bench worker:", err)
			return 1
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintln(stderr, "bench worker:", err)
			return 1
		}
		defer pprof.StopCPUProfile()
	}
	if *heapProfile != "" {
		stopHeap := profileHeapPeak(*heapProfile, 250*time.Millisecond)
		defer stopHeap()
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	var calls callCounter
	rss := watchRSS("self", 20*time.Millisecond)
	c, err := client.Dial(dialOptions(*addr, *namespace, &calls, logger))
	if err != nil {
		fmt.Fprintln(stderr, "bench worker:", err)
		return 1
	}
	defer c.Close()
	// The benchmark's own worker, on its own server: its batches (file
	// stores, exec: processors) are the benchmark's.
	wo := pipeline.WorkerOptions{Processors: processors, Logger: logger, Trust: pipeline.TrustAll()}
	wo.Worker.MaxConcurrentActivityExecutionSize = *maxShards
	w := pipeline.NewWorker(c, *taskQueue, wo)
	registerNaive(w)
	if err := w.Start(); err != nil {
		fmt.Fprintln(stderr, "bench worker:", err)
		return 1
	}
	fmt.Println("ready")
	<-ctx.Done()
	w.Stop()
	processors.Close() // stops exec: processes
	_, anon := rss.Peak()
	data, _ := json.Marshal(workerReport{Calls: calls.snapshot(), PeakRSS: peakRSS("self"), PeakAnonRSS: anon, Gauge: sleepGauge.summary()})
	if err := os.WriteFile(*report, data, 0o644); err != nil {
		fmt.Fprintln(stderr, "bench worker:", err)
		return 1
	}
	return 0
}

// workerProc is a running worker process.
type workerProc struct {
	cmd    *exec.Cmd
	report string
	done   chan struct{}
}

// startWorker starts this program as a worker process on taskQueue and
// waits until it polls.
func startWorker(ctx context.Context, env *env, taskQueue, name string, extra ...string) (*workerProc, error) {
	report := env.tempPath("worker-" + name + ".json")
	args := []string{"worker", "-address", env.server.FrontendAddr(), "-namespace", env.server.Namespace(),
		"-task-queue", taskQueue, "-report", report}
	args = append(args, extra...)
	if env.cfg.PprofDir != "" {
		args = append(args, "-cpuprofile", env.pprofPath("worker-"+name+".cpu.pprof"),
			"-heapprofile", env.pprofPath("worker-"+name+".heap.pprof"))
	}
	cmd := exec.Command(env.self, args...)
	cmd.Stderr = env.stderr
	cmd.SysProcAttr = deathSignal()
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting worker: %w", err)
	}
	p := &workerProc{cmd: cmd, report: report, done: make(chan struct{})}
	ready := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(out)
		if sc.Scan() && sc.Text() == "ready" {
			ready <- nil
		} else {
			ready <- errors.New("worker process exited before polling")
		}
		io.Copy(io.Discard, out)
	}()
	go func() { cmd.Wait(); close(p.done) }()
	select {
	case err = <-ready:
	case <-ctx.Done():
		err = ctx.Err()
	case <-time.After(time.Minute):
		err = errors.New("worker process not ready within a minute")
	}
	if err != nil {
		p.kill()
		return nil, err
	}
	return p, nil
}

// stop ends the worker with SIGTERM and returns its report and peak RSS.
func (p *workerProc) stop() (workerReport, int64, error) {
	var r workerReport
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		p.kill()
		return r, 0, errors.New("worker process did not stop within 30 s")
	}
	data, err := os.ReadFile(p.report)
	if err != nil {
		return r, 0, fmt.Errorf("worker report: %w", err)
	}
	err = json.Unmarshal(data, &r)
	if ps := p.cmd.ProcessState; ps != nil {
		r.CPUSeconds = (ps.UserTime() + ps.SystemTime()).Seconds()
	}
	return r, r.PeakRSS, err
}

func (p *workerProc) kill() {
	p.cmd.Process.Kill()
	<-p.done
}

// profileHeapPeak writes a heap profile to path whenever the heap in use is
// the largest seen so far, checking every interval, until the returned
// function is called.
func profileHeapPeak(path string, every time.Duration) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		var best uint64
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
			}
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse <= best {
				continue
			}
			best = ms.HeapInuse
			if f, err := os.Create(path); err == nil {
				pprof.Lookup("heap").WriteTo(f, 0)
				f.Close()
			}
		}
	})
	return func() { close(done); wg.Wait() }
}
