package cli

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	"go.temporal.io/sdk/client"
	sdklog "go.temporal.io/sdk/log"
	"go.temporal.io/sdk/worker"

	"github.com/batchpipe/batchpipe"
	"github.com/batchpipe/batchpipe/blobstore"
	"github.com/batchpipe/batchpipe/execproc"
	"github.com/batchpipe/batchpipe/internal/devserver"
	"github.com/batchpipe/batchpipe/pipeline"
)

type workerFlags struct {
	dev         bool
	devDir      string
	devPort     int
	devIP       string
	devNoWork   bool
	taskQueue   string
	store       string
	verbose     bool
	metricsAddr string
	logFormat   string
	uiPort      int
	noUI        bool
	shards      int
	// What batches may ask of a worker that is not --dev (see trust).
	allowExec    []string
	allowSchemes []string
	processorEnv []string
	execProcs    int
}

// Worker runs the worker command until ctx ends; it returns the exit code.
func Worker(ctx context.Context, o *IO, args []string) int {
	f := &workerFlags{}
	cmd := &cobra.Command{
		Use:   "worker [flags]",
		Short: "Poll a Temporal task queue and run batchpipe's workflows and activities",
		Long: `Worker connects to Temporal using the SDK's environment conventions
(TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE, TEMPORAL_API_KEY, TLS variables, profiles
in the Temporal config file) and runs batches from its task queue. With --dev it
also runs an embedded Temporal server on 127.0.0.1:7233 whose state lives in a
SQLite file under .batchpipe/dev, so a restarted worker resumes its batches,
and the Temporal Web UI on http://127.0.0.1:8233 (--no-ui turns it off).
SIGINT or SIGTERM stops it cleanly.

Whoever can start a workflow on the task queue chooses each batch's
processor, store and input. Unless --dev, a worker runs only the exec:
command lines given with --allow-exec (each exactly, compared word by word)
and opens file:// stores and inputs only with --allow-scheme file. Exec
processors see only PATH, HOME, USER, LOGNAME, LANG, LANGUAGE, LC_*, TZ and
TMPDIR of the worker's environment, plus each --processor-env NAME.`,
		Args:          usageArgs(cobra.NoArgs),
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE:          func(cmd *cobra.Command, _ []string) error { return runWorker(cmd.Context(), o, f) },
	}
	cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	setVersion(cmd)
	fl := cmd.Flags()
	fl.BoolVar(&f.dev, "dev", false, "also run an embedded Temporal server (state in --dev-dir)")
	fl.StringVar(&f.devDir, "dev-dir", "", "state `DIR` of the embedded server (default $PWD/.batchpipe/dev)")
	fl.IntVar(&f.devPort, "dev-port", 7233, "frontend port of the embedded server")
	fl.StringVar(&f.devIP, "dev-ip", "127.0.0.1", "`IP` address the embedded server's frontend (and Web UI) listen on; 0.0.0.0 for all")
	fl.BoolVar(&f.devNoWork, "dev-server-only", false, "with --dev: run only the server, no worker")
	fl.StringVar(&f.taskQueue, "task-queue", pipeline.DefaultTaskQueue, "`NAME` of the task queue to poll")
	fl.IntVar(&f.shards, "max-concurrent-shards", pipeline.DefaultConcurrentShards(), "shards (activities) this worker runs at once; the rest wait for it or for other workers")
	fl.StringVar(&f.store, "store", "", "blob store `URL` to check at start-up (default file://$PWD/.batchpipe/blobs); batches name their own store")
	fl.BoolVarP(&f.verbose, "verbose", "v", false, "log debug details")
	fl.StringVar(&f.metricsAddr, "metrics-addr", "", "serve Prometheus metrics at http://`HOST:PORT`/metrics (SDK and batchpipe metrics)")
	fl.StringVar(&f.logFormat, "log-format", "text", "log `FORMAT`: text or json")
	fl.IntVar(&f.uiPort, "ui-port", devserver.DefaultUIPort, "with --dev: port of the Temporal Web UI")
	fl.BoolVar(&f.noUI, "no-ui", false, "with --dev: do not serve the Temporal Web UI")
	fl.StringArrayVar(&f.allowExec, "allow-exec", nil, "let batches run the processor \"exec:`CMD`\", this exact command line (repeatable; --dev allows any)")
	fl.StringArrayVar(&f.allowSchemes, "allow-scheme", nil, "let batches use stores and inputs of URL `SCHEME` on the worker's disk: file (repeatable; --dev allows it)")
	registerProcessorEnv(cmd, &f.processorEnv)
	cmd.Flags().IntVar(&f.execProcs, "exec-processes", 0, "processes of one exec: command this worker runs at most, each serving one call at a time (default: CPUs, at least 8); raise it for commands that mostly wait")
	cmd.SetArgs(args)
	cmd.SetOut(o.Stdout)
	cmd.SetErr(o.Stderr)
	return exitCode(o, cmd.ExecuteContext(ctx))
}

func runWorker(ctx context.Context, o *IO, f *workerFlags) error {
	if f.shards < 1 {
		return usagef("--max-concurrent-shards must be at least 1, got %d", f.shards)
	}
	logger, err := newFormatLogger(o.Stderr, f.logFormat, f.verbose)
	if err != nil {
		return err
	}
	trust, err := f.trust()
	if err != nil {
		return err
	}
	if f.execProcs < 0 {
		return usagef("--exec-processes must not be negative, got %d", f.execProcs)
	}
	if err := checkProcessorEnv(f.processorEnv); err != nil {
		return err
	}
	var metrics *metricsServer
	if f.metricsAddr != "" {
		if metrics, err = startMetrics(f.metricsAddr, logger); err != nil {
			return err
		}
		defer metrics.Close()
		fmt.Fprintf(o.Stderr, "metrics on http://%s/metrics\n", metrics.Addr)
	}
	// Check the store at start-up when this process will use it: a worker
	// given --store, or worker --dev (whose default store submit shares).
	if f.store != "" || o.getenv("BATCHPIPE_STORE") != "" || f.dev && !f.devNoWork {
		b, url, err := openStore(ctx, o, f.store)
		if err != nil {
			return err
		}
		b.Close()
		if scheme, _, _ := strings.Cut(url, "://"); slices.Contains(pipeline.GatedSchemes, scheme) && !slices.Contains(trust.Schemes, scheme) {
			return usagef("store %s: batches on a %s:// store would be refused: add --allow-scheme %s (a %s:// URL is a path on this worker's disk)", blobstore.Redact(url), scheme, scheme, scheme)
		}
	}

	var copts client.Options
	if f.dev {
		dir := f.devDir
		if dir == "" {
			dir = filepath.Join(o.stateDir(), "dev")
		}
		uiPort := f.uiPort
		if f.noUI {
			uiPort = 0
		}
		srv, err := devserver.Start(ctx, devserver.Options{Dir: dir, Host: f.devIP, Port: f.devPort, UIPort: uiPort, Logger: logger, LogLevel: serverLogLevel(logger),
			SearchAttributes: pipeline.SearchAttributes()})
		if err != nil {
			return err
		}
		defer srv.Stop()
		fmt.Fprintf(o.Stderr, "embedded Temporal server on %s (namespace %s, state in %s)\n", srv.FrontendAddr(), srv.Namespace(), dir)
		if a := srv.UIAddr(); a != "" {
			fmt.Fprintf(o.Stderr, "Temporal Web UI on http://%s\n", a)
		}
		copts = client.Options{HostPort: srv.FrontendAddr(), Namespace: srv.Namespace()}
		if f.devNoWork {
			<-ctx.Done()
			return nil
		}
	} else {
		if copts, err = batchpipe.TemporalOptions(envLookup{o}); err != nil {
			return usageError{err}
		}
		if copts.HostPort == "" {
			return usagef("no Temporal address configured: set TEMPORAL_ADDRESS (or a profile), or run `worker --dev` for an embedded server")
		}
	}
	copts.Logger = sdklog.NewStructuredLogger(logger)
	var pm *pipeline.Metrics
	if metrics != nil {
		copts.MetricsHandler = metrics.SDK
		pm = metrics.Pipeline
	}
	dctx, cancel := context.WithTimeout(ctx, dialTimeout)
	c, err := client.DialContext(dctx, copts)
	cancel()
	if err != nil {
		return fmt.Errorf("cannot reach Temporal at %s: %v", copts.HostPort, err)
	}
	defer c.Close()
	if metrics != nil {
		metrics.watchBatches(c)
	}
	processors := execproc.NewRegistry(execproc.Options{PoolSize: f.execProcs, Logger: logger, Env: f.processorEnv})
	defer processors.Close() // stops exec: processors
	w := pipeline.NewWorker(c, f.taskQueue, pipeline.WorkerOptions{Processors: processors, Logger: logger, Metrics: pm, Trust: trust,
		Worker: worker.Options{MaxConcurrentActivityExecutionSize: f.shards}})
	if err := w.Start(); err != nil {
		return err
	}
	defer w.Stop()
	fmt.Fprintln(o.Stderr, f.trustSummary(trust))
	fmt.Fprintf(o.Stderr, "worker polling task queue %q on %s; processors: %v\n", f.taskQueue, copts.HostPort, processors.Names())
	<-ctx.Done()
	fmt.Fprintln(o.Stderr, "stopping worker")
	return nil
}

// trust is what the worker's batches may ask of it. `worker --dev` on a
// loopback address serves only its own user, as the embedded default does:
// everything. Any other worker — one on a Temporal service others reach,
// or --dev listening beyond loopback — runs only the exec: command lines
// and opens only the gated schemes its flags name.
func (f *workerFlags) trust() (pipeline.Trust, error) {
	t := pipeline.Trust{Exec: f.allowExec, Schemes: f.allowSchemes}
	if err := (pipeline.Trust{Exec: t.Exec}).Validate(); err != nil {
		return t, usagef("--allow-exec: %v", err)
	}
	if err := (pipeline.Trust{Schemes: t.Schemes}).Validate(); err != nil {
		return t, usagef("--allow-scheme: %v", err)
	}
	if f.dev && devLoopback(f.devIP) {
		return pipeline.TrustAll(), nil
	}
	return t, nil
}

// devLoopback reports whether the embedded server of --dev listens on a
// loopback address only.
func devLoopback(host string) bool {
	if host == "" || host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// trustSummary is the start-up line saying what batches may ask for.
func (f *workerFlags) trustSummary(t pipeline.Trust) string {
	if t.AnyExec {
		return "worker --dev serves its own user: batches may run any exec: command and use file:// stores and inputs"
	}
	execs := "no exec: commands (--allow-exec CMD)"
	if n := len(t.Exec); n > 0 {
		execs = fmt.Sprintf("%d exec: command line(s) given with --allow-exec", n)
	}
	files := "no file:// stores or inputs (--allow-scheme file)"
	if slices.Contains(t.Schemes, "file") {
		files = "file:// stores and inputs"
	}
	note := ""
	if f.dev {
		note = fmt.Sprintf(" (--dev-ip %s reaches beyond this machine, so --dev trusts its batches no more than any worker)", f.devIP)
	}
	return "batches may use: " + execs + "; " + files + note
}

// registerProcessorEnv adds --processor-env to a command that runs exec
// processors (worker, and submit's embedded worker).
func registerProcessorEnv(cmd *cobra.Command, dst *[]string) {
	cmd.Flags().StringArrayVar(dst, "processor-env", nil, "pass the environment variable `NAME` to exec: processors, besides PATH, HOME, USER, LOGNAME, LANG, LANGUAGE, LC_*, TZ and TMPDIR (repeatable; PREFIX* passes those starting with PREFIX)")
}

func checkProcessorEnv(names []string) error {
	for _, n := range names {
		if err := execproc.ValidateEnvName(n); err != nil {
			return usagef("--processor-env %v", err)
		}
	}
	return nil
}
