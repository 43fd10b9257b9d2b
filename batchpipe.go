// Package batchpipe runs one processing function over thousands to millions
// of inputs as a durable Temporal batch, and is the way in for programs that
// start, follow and read batches.
//
// A batch's items are staged into a blob store (S3, MinIO or a local
// directory) in shards; a BatchWorkflow fans the shards out as child
// workflows that write their results back to the store, and a manifest
// (package manifests, format v1) lists every result object when the batch
// finishes. Nothing proportional to the item count crosses workflow history.
//
// Dial a Temporal service (configured the way Temporal's own tools are:
// TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE, TEMPORAL_API_KEY, profiles) and a
// store, submit a batch and wait for it:
//
//	c, err := batchpipe.Dial(ctx, batchpipe.Config{Store: "s3://bucket/prefix"})
//	if err != nil { … }
//	defer c.Close()
//	b, err := c.Submit(ctx, batchpipe.Request{Input: "items.jsonl", Processor: "example"})
//	res, err := b.Wait(ctx, func(p batchpipe.Progress) { fmt.Println(p.Done, "of", p.Items) })
//	for line, err := range res.Results(ctx) { … }
//
// Submit is idempotent by batch id: one id is never two batches, even when
// two programs submit it at once. Workers run the processors (see
// pipeline.NewWorker, or the worker command). Package embedded runs a
// Temporal server, a worker and a local store in-process, as the submit
// command does when no Temporal service is configured; it is a package of
// its own so that importing batchpipe does not link the Temporal server.
//
// Programs in other languages start BatchWorkflow directly: its input is a
// JSON contract (schema/batch-input.json in the repository, and the README's
// "Starting a batch from any language").
package batchpipe

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/contrib/envconfig"
	sdklog "go.temporal.io/sdk/log"

	"github.com/batchpipe/batchpipe/blobstore"
	"github.com/batchpipe/batchpipe/pipeline"
)

// Progress is a running batch's progress: its progress query's answer,
// with Done counting the items the running shards reported done by
// heartbeat besides those of finished shards, and the shards in flight
// split into running and waiting.
type Progress struct {
	pipeline.Progress
	// Running shards are processing on a worker; Waiting shards were
	// started and wait for a worker's free slot. Both 0 until Temporal was
	// asked (every few seconds).
	Running int `json:"running"`
	Waiting int `json:"waiting"`
}

// FailureLimit stops a batch once too many items failed; see
// pipeline.MaxFailedItems, pipeline.MaxFailedPercent and
// pipeline.ParseFailureLimit.
type FailureLimit = pipeline.FailureLimit

// Config says which store and Temporal service a Client uses.
type Config struct {
	// Store is the blob store URL (file:///dir, s3://bucket/prefix,
	// minio://host:port/bucket/prefix). Empty means $BATCHPIPE_STORE.
	// Credentials never go in the URL: they come from the environment.
	Store string
	// TaskQueue is the task queue the workers poll; default "batchpipe".
	TaskQueue string
	// Temporal is the Temporal client to use; Close leaves it open. If nil,
	// Connect is called, or else Dial connects as Temporal's environment
	// configuration says (go.temporal.io/sdk/contrib/envconfig).
	Temporal client.Client
	// Connect, if set and Temporal is nil, is called once, on the first
	// call that needs Temporal, for the client; close, if not nil, is
	// called by Client.Close. Package embedded uses it to start its server
	// only when a batch gets that far.
	Connect func(ctx context.Context) (c client.Client, close func(), err error)
	// Processors, if set, are the only processors the batches may name
	// (the embedded worker's); Submit refuses others. Nil leaves the
	// check to the workers.
	Processors *pipeline.Registry
	// Logger receives the SDK's and batchpipe's logs; nil discards info and
	// debug records (slog.Default at warning level and up).
	Logger *slog.Logger
	// WorkerSlots, if set, is how many shards the batches' workers run at
	// once in all (package embedded sets its worker's); a batch whose
	// concurrency is larger is sized for these slots when no shard size is
	// given. 0 sizes for the batch's concurrency.
	WorkerSlots int
	// EnvLookup reads Temporal's environment configuration; nil means the
	// process environment.
	EnvLookup envconfig.EnvLookup
	// Lazy makes Dial connect on the first call that needs Temporal
	// instead of at once: for tools that read the store when Temporal is
	// down (status of a finished batch, list).
	Lazy bool
}

// Client starts, follows and reads batches in one store on one Temporal
// service. It is safe for concurrent use.
type Client struct {
	cfg      Config
	store    blobstore.Bucket
	storeURL string

	mu       sync.Mutex
	temporal client.Client
	closers  []func()
}

// Dial opens cfg.Store (checking that it answers) and connects to Temporal.
// With no Temporal address configured and no cfg.Temporal or cfg.Connect,
// it fails: use package embedded to run without a Temporal service.
func Dial(ctx context.Context, cfg Config) (*Client, error) {
	if cfg.Temporal == nil && cfg.Connect == nil {
		opts, err := TemporalOptions(cfg.EnvLookup)
		if err != nil {
			return nil, err
		}
		if opts.HostPort == "" {
			return nil, invalidf("no Temporal service configured: set TEMPORAL_ADDRESS (or a profile), or run one in-process with package embedded")
		}
		opts.Logger = sdkLogger(cfg.Logger)
		cfg.Connect = func(ctx context.Context) (client.Client, func(), error) {
			dctx, cancel := context.WithTimeout(ctx, dialTimeout)
			defer cancel()
			c, err := client.DialContext(dctx, opts)
			if err != nil {
				return nil, nil, fmt.Errorf("cannot reach Temporal at %s (namespace %q): %v", opts.HostPort, namespaceOf(opts), err)
			}
			return c, c.Close, nil
		}
	}
	c, err := NewClient(ctx, cfg)
	if err != nil {
		return nil, err
	}
	// Reach Temporal before anything is staged, so an unreachable service
	// leaves nothing behind.
	if cfg.Lazy {
		return c, nil
	}
	if _, err := c.Temporal(ctx); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// NewClient is Dial without connecting to Temporal yet: cfg.Temporal or
// cfg.Connect must be set, and Connect is called on first need.
func NewClient(ctx context.Context, cfg Config) (*Client, error) {
	if cfg.Temporal == nil && cfg.Connect == nil {
		return nil, invalidf("batchpipe.NewClient: Config.Temporal or Config.Connect is required (or use Dial)")
	}
	if cfg.TaskQueue == "" {
		cfg.TaskQueue = pipeline.DefaultTaskQueue
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	if cfg.Store == "" {
		cfg.Store = os.Getenv("BATCHPIPE_STORE")
	}
	b, err := OpenStore(ctx, cfg.Store)
	if err != nil {
		return nil, err
	}
	return &Client{cfg: cfg, store: b, storeURL: cfg.Store, temporal: cfg.Temporal}, nil
}

// Temporal returns the client's Temporal client, connecting on first use.
func (c *Client) Temporal(ctx context.Context) (client.Client, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.temporal != nil {
		return c.temporal, nil
	}
	tc, closeFn, err := c.cfg.Connect(ctx)
	if err != nil {
		return nil, err
	}
	c.temporal = tc
	if closeFn != nil {
		c.closers = append(c.closers, closeFn)
	}
	return tc, nil
}

// Connected reports whether the client has reached Temporal yet.
func (c *Client) Connected() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.temporal != nil
}

// Store is the client's blob store.
func (c *Client) Store() blobstore.Bucket { return c.store }

// StoreURL is the store's URL as configured (what batches record).
func (c *Client) StoreURL() string { return c.storeURL }

// TaskQueue is the task queue batches are started on.
func (c *Client) TaskQueue() string { return c.cfg.TaskQueue }

// Close closes the store and what Connect opened.
func (c *Client) Close() error {
	c.mu.Lock()
	closers := c.closers
	c.closers = nil
	c.mu.Unlock()
	for i := len(closers) - 1; i >= 0; i-- {
		closers[i]()
	}
	return c.store.Close()
}

// OpenStore opens a store URL and checks that it answers (a missing bucket
// or an unreachable endpoint fails here, not halfway through a batch). URLs
// must not carry credentials: they would end up in workflow history.
func OpenStore(ctx context.Context, rawURL string) (blobstore.Bucket, error) {
	if rawURL == "" {
		return nil, invalidf("no store: give a store URL (file:///dir, s3://bucket/prefix, minio://host:port/bucket/prefix) or set BATCHPIPE_STORE")
	}
	if blobstore.Redact(rawURL) != rawURL {
		return nil, invalidf("store URL %s must not contain credentials: set them in the environment (AWS_* or MINIO_ROOT_*)", blobstore.Redact(rawURL))
	}
	b, err := blobstore.Open(ctx, rawURL)
	if err != nil {
		return nil, &Error{Kind: ErrInvalid, Err: err}
	}
	lctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	for _, err := range b.List(lctx, "batches/.probe/") {
		if err != nil {
			b.Close()
			return nil, fmt.Errorf("store %s is not usable: %w", b.URL(), err)
		}
	}
	return b, nil
}

// TemporalOptions are the Temporal client options that Temporal's
// environment configuration gives (config file profile, then TEMPORAL_*
// variables); HostPort is empty when no service is configured.
func TemporalOptions(env envconfig.EnvLookup) (client.Options, error) {
	prof, err := envconfig.LoadClientConfigProfile(envconfig.LoadClientConfigProfileOptions{EnvLookup: env})
	if err != nil {
		return client.Options{}, invalidf("temporal configuration: %v", err)
	}
	if prof.Address == "" {
		return client.Options{}, nil
	}
	opts, err := prof.ToClientOptions(envconfig.ToClientOptionsRequest{})
	if err != nil {
		return client.Options{}, invalidf("temporal configuration: %v", err)
	}
	return opts, nil
}

func namespaceOf(o client.Options) string {
	if o.Namespace == "" {
		return "default"
	}
	return o.Namespace
}

func sdkLogger(l *slog.Logger) sdklog.Logger {
	if l == nil {
		l = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	return sdklog.NewStructuredLogger(l)
}

// dialTimeout bounds how long Dial waits for Temporal to answer.
const dialTimeout = 10 * time.Second

// Errors a caller can tell apart with errors.Is.
var (
	// ErrInvalid: a bad request or bad input (a flag out of range, a
	// malformed line, an unknown processor). Nothing was written.
	ErrInvalid = errors.New("invalid request")
	// ErrConflict: the batch id belongs to a batch with another input or
	// other options.
	ErrConflict = errors.New("batch id in use by another batch")
	// ErrNotFound: no batch has that id, in the store or on Temporal.
	ErrNotFound = errors.New("unknown batch")
	// ErrNotRunning: the batch is not running (cancel), or still running
	// (redrive).
	ErrNotRunning = errors.New("batch not in the state this needs")
)

// Error is an error of one of the kinds above.
type Error struct {
	Kind error // ErrInvalid, ErrConflict, ErrNotFound or ErrNotRunning
	Err  error
}

func (e *Error) Error() string        { return e.Err.Error() }
func (e *Error) Unwrap() error        { return e.Err }
func (e *Error) Is(target error) bool { return target == e.Kind }

func invalidf(format string, args ...any) error {
	return &Error{Kind: ErrInvalid, Err: fmt.Errorf(format, args...)}
}

func kindf(kind error, format string, args ...any) error {
	return &Error{Kind: kind, Err: fmt.Errorf(format, args...)}
}
