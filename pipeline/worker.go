package pipeline

import (
	"log/slog"
	"runtime"
	"time"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"
)

// WorkerOptions configure NewWorker. The zero value is ready to use.
type WorkerOptions struct {
	// Processors the worker can run; nil means NewRegistry() (the
	// built-in ones; the exec family is added with execproc.Register).
	Processors *Registry
	// Logger for activity logs; nil means slog.Default().
	Logger *slog.Logger
	// Worker passes options through to the Temporal worker. Zero values
	// that batchpipe sets: MaxConcurrentActivityExecutionSize
	// (DefaultConcurrentShards) and the heartbeat throttle intervals.
	Worker worker.Options
	// Metrics, if set, records batchpipe's Prometheus metrics (NewMetrics).
	Metrics *Metrics
	// Trust says what the batches may ask of this worker beyond its
	// registered processors on network stores. The zero value allows
	// nothing more: no exec: command line, no file:// store or input (a
	// batch asking fails at its first shard, or at staging, naming what to
	// allow). A worker that serves only its own user may use TrustAll().
	Trust Trust
}

// NewWorker returns a Temporal worker on taskQueue with batchpipe's
// workflows and activities registered. A program that adds its own
// processors registers them in a Registry (NewRegistry) and runs this
// worker with it.
func NewWorker(c client.Client, taskQueue string, opts WorkerOptions) worker.Worker {
	if opts.Processors == nil {
		opts.Processors = NewRegistry()
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Worker.DefaultHeartbeatThrottleInterval == 0 {
		// Shards heartbeat every 5 s; sending them on (not every 30 s, the
		// SDK's default) lets a cancel reach a running shard within seconds.
		opts.Worker.DefaultHeartbeatThrottleInterval = 5 * time.Second
	}
	if opts.Worker.MaxHeartbeatThrottleInterval == 0 {
		// The server keeps a shard's checkpoint (its heartbeat details) at
		// most this much behind the worker: with the checkpoint interval
		// (5 s), what a kill -9 costs. A shard heartbeats every 5 s, so
		// this sends each on at once.
		opts.Worker.MaxHeartbeatThrottleInterval = 2 * time.Second
	}
	if opts.Worker.MaxConcurrentActivityExecutionSize == 0 {
		opts.Worker.MaxConcurrentActivityExecutionSize = DefaultConcurrentShards()
	}
	w := worker.New(c, taskQueue, opts.Worker)
	RegisterAll(w, &Activities{Processors: opts.Processors, Stores: &Stores{Metrics: opts.Metrics, Trust: opts.Trust},
		Logger: opts.Logger, Metrics: opts.Metrics, Trust: opts.Trust})
	return w
}

// DefaultConcurrentShards is how many activities (shards, mostly) a worker
// runs at once unless told otherwise: twice the CPUs it may use, at least 4.
// A shard keeps the CPU busy with its own item parallelism, so more at once
// on one worker buys no speed, only memory (a zstd encoder and buffers
// each); and a worker that takes no more than it can run leaves the rest of
// a batch's window to other workers. Measured on 2 cores at 1,000,000 items
// (make bench-large): the SDK's default of 1,000 let the worker hold all 32
// shards of the window at once and peak at 375 MB; 4 at a time, 186 MB at
// the same speed.
func DefaultConcurrentShards() int {
	return max(4, 2*runtime.GOMAXPROCS(0))
}

// RegisterAll registers batchpipe's workflows and a's activities on w.
func RegisterAll(w worker.Registry, a *Activities) {
	w.RegisterWorkflowWithOptions(BatchWorkflow, workflow.RegisterOptions{Name: BatchWorkflowName})
	w.RegisterWorkflowWithOptions(ShardWorkflow, workflow.RegisterOptions{Name: ShardWorkflowName})
	w.RegisterWorkflowWithOptions(ScheduledBatchWorkflow, workflow.RegisterOptions{Name: ScheduledBatchWorkflowName})
	w.RegisterActivityWithOptions(a.ProcessShard, activity.RegisterOptions{Name: activityProcessShard})
	w.RegisterActivityWithOptions(a.Finalize, activity.RegisterOptions{Name: activityFinalize})
	w.RegisterActivityWithOptions(a.ShardsToRedrive, activity.RegisterOptions{Name: activityShardsToRedrive})
	w.RegisterActivityWithOptions(a.StageInput, activity.RegisterOptions{Name: activityStageInput})
	w.RegisterActivityWithOptions(a.InFlightItems, activity.RegisterOptions{Name: activityInFlightItems})
	w.RegisterActivityWithOptions(a.CanaryErrors, activity.RegisterOptions{Name: activityCanaryErrors})
}
