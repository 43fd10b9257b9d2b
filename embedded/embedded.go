// Package embedded runs batches without a Temporal service: a Temporal
// server (state in a SQLite file), a worker and, by default, a local store,
// all in this process, as the submit command does when no Temporal service
// is configured. It is a package of its own because it links the Temporal
// server; package batchpipe alone does not.
//
// The server starts on the first call that needs it, so a request refused
// for bad input never starts it. Batches live on in Dir: a process that
// stops in the middle of one resumes it when a later one submits the same
// id (or runs `worker --dev` on the directory).
package embedded

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"go.temporal.io/sdk/client"
	sdklog "go.temporal.io/sdk/log"

	"github.com/batchpipe/batchpipe"
	"github.com/batchpipe/batchpipe/execproc"
	"github.com/batchpipe/batchpipe/internal/devserver"
	"github.com/batchpipe/batchpipe/pipeline"
)

// ErrInUse is returned (wrapped) when another process runs an embedded
// server on the same directory.
var ErrInUse = devserver.ErrStateDirInUse

// Options configure Open.
type Options struct {
	// Dir is the state directory: the server's state in Dir/embedded and
	// the default store in Dir/blobs. "" keeps the server in memory (then
	// Store is required).
	Dir string
	// Store is the blob store URL; default file://<Dir>/blobs.
	Store string
	// TaskQueue is the task queue of the batches and the worker; default
	// "batchpipe".
	TaskQueue string
	// Processors the worker runs; nil means the built-in ones and the
	// exec family, with exec processes logging to Logger and getting
	// ProcessorEnv (execproc.NewRegistry). A registry given is used as is.
	// Submit refuses a processor that is not in it.
	Processors *pipeline.Registry
	// NoWorker runs the server without a worker (to look at batches
	// without processing them).
	NoWorker bool
	// Logger receives logs, exec processors' stderr among them; nil means
	// warnings and up to stderr.
	Logger *slog.Logger
	// ProcessorEnv names the variables of this process's environment that
	// exec processors get besides execproc.BaseEnv (see
	// execproc.Options.Env), when Processors is nil.
	ProcessorEnv []string
}

// Open returns a batchpipe client whose Temporal server and worker run in
// this process; Close stops them.
func Open(ctx context.Context, opts Options) (*batchpipe.Client, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	if opts.Processors == nil {
		opts.Processors = execproc.NewRegistry(execproc.Options{Logger: opts.Logger, Env: opts.ProcessorEnv})
	}
	if opts.TaskQueue == "" {
		opts.TaskQueue = pipeline.DefaultTaskQueue
	}
	if opts.Store == "" {
		if opts.Dir == "" {
			return nil, errors.New("embedded: Options.Store is required without Options.Dir")
		}
		blobs := filepath.Join(opts.Dir, "blobs")
		if err := os.MkdirAll(blobs, 0o755); err != nil {
			return nil, err
		}
		abs, err := filepath.Abs(blobs)
		if err != nil {
			return nil, err
		}
		opts.Store = "file://" + abs
	}
	return batchpipe.NewClient(ctx, batchpipe.Config{
		Store:       opts.Store,
		TaskQueue:   opts.TaskQueue,
		Processors:  opts.Processors,
		Logger:      opts.Logger,
		WorkerSlots: workerSlots(opts),
		Connect:     func(ctx context.Context) (client.Client, func(), error) { return start(ctx, opts) },
	})
}

// start runs the server and, unless NoWorker, a worker on it.
func start(ctx context.Context, opts Options) (client.Client, func(), error) {
	dir := ""
	if opts.Dir != "" {
		dir = filepath.Join(opts.Dir, "embedded")
	}
	srv, err := devserver.Start(ctx, devserver.Options{Dir: dir, Logger: opts.Logger, LogLevel: serverLogLevel(opts.Logger),
		SearchAttributes: pipeline.SearchAttributes(),
		// Schedules need a server that keeps running (the schedule
		// commands refuse the embedded one); nothing else of batchpipe's
		// uses Temporal's system workflows.
		NoSystemWorker: true})
	if err != nil {
		if errors.Is(err, devserver.ErrStateDirInUse) {
			return nil, nil, err
		}
		return nil, nil, fmt.Errorf("starting the embedded Temporal server: %w", err)
	}
	c, err := client.DialContext(ctx, client.Options{HostPort: srv.FrontendAddr(), Namespace: srv.Namespace(),
		Logger: sdklog.NewStructuredLogger(slog.New(withoutCancelNoise{opts.Logger.Handler()}))})
	if err != nil {
		srv.Stop()
		return nil, nil, err
	}
	if opts.NoWorker {
		return c, func() { c.Close(); srv.Stop() }, nil
	}
	// The server listens on loopback and serves this process's user: its
	// batches are theirs, so any exec: command and file:// store is theirs
	// to ask for.
	w := pipeline.NewWorker(c, opts.TaskQueue, pipeline.WorkerOptions{Logger: opts.Logger, Processors: opts.Processors,
		Trust: pipeline.TrustAll()})
	if err := w.Start(); err != nil {
		c.Close()
		srv.Stop()
		return nil, nil, err
	}
	return c, func() {
		w.Stop()
		opts.Processors.Close() // stops exec: processors
		c.Close()
		srv.Stop()
	}, nil
}

// serverLogLevel keeps the server silent unless debugging: its warnings
// (e.g. on shutdown) mean nothing to a batchpipe user.
func serverLogLevel(l *slog.Logger) slog.Level {
	if l.Enabled(context.Background(), slog.LevelDebug) {
		return slog.LevelWarn
	}
	return slog.LevelError + 8
}

// workerSlots is how many shards the embedded worker runs at once, for
// sizing shards; 0 without the worker (NoWorker: the workers are elsewhere).
func workerSlots(opts Options) int {
	if opts.NoWorker {
		return 0
	}
	return pipeline.DefaultConcurrentShards()
}
