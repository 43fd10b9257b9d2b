// Package cli implements the submit and worker commands. Commands take their
// IO and environment as arguments so tests run them in-process; the mains in
// cmd/ only wire os.Args, os.Stdin/out/err and signals.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/contrib/envconfig"
	"go.temporal.io/sdk/worker"

	"github.com/batchpipe/batchpipe/blobstore"
	"github.com/batchpipe/batchpipe/internal/devserver"
	"github.com/batchpipe/batchpipe/pipeline"
)

// Exit codes.
const (
	ExitOK           = 0
	ExitFailed       = 1 // batch failed or was canceled; or an operational error
	ExitUsage        = 2 // bad usage or bad input
	ExitWithFailures = 3 // batch completed with failed items
)

// IO is what a command reads and writes.
type IO struct {
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
	// Getenv reads the environment; nil means os.Getenv.
	Getenv func(string) string
	// Dir is the working directory; "" means os.Getwd.
	Dir string
}

func (o *IO) getenv(k string) string {
	if o.Getenv == nil {
		return os.Getenv(k)
	}
	return o.Getenv(k)
}

func (o *IO) lookupEnv(k string) (string, bool) {
	if o.Getenv == nil {
		return os.LookupEnv(k)
	}
	v := o.Getenv(k)
	return v, v != ""
}

func (o *IO) environ() []string {
	if o.Getenv == nil {
		return os.Environ()
	}
	var env []string
	for _, k := range []string{"TEMPORAL_ADDRESS", "TEMPORAL_NAMESPACE", "TEMPORAL_API_KEY", "TEMPORAL_PROFILE",
		"TEMPORAL_CONFIG_FILE", "TEMPORAL_TLS", "TEMPORAL_TLS_CLIENT_CERT_PATH", "TEMPORAL_TLS_CLIENT_KEY_PATH",
		"TEMPORAL_TLS_SERVER_CA_CERT_PATH", "TEMPORAL_TLS_SERVER_NAME", "TEMPORAL_TLS_DISABLE_HOST_VERIFICATION"} {
		if v := o.Getenv(k); v != "" {
			env = append(env, k+"="+v)
		}
	}
	return env
}

func (o *IO) workDir() string {
	if o.Dir != "" {
		return o.Dir
	}
	d, _ := os.Getwd()
	return d
}

// stateDir is where the embedded server and the default file store live.
func (o *IO) stateDir() string { return filepath.Join(o.workDir(), ".batchpipe") }

// defaultStore is the file store under the state directory.
func (o *IO) defaultStore() string { return "file://" + filepath.Join(o.stateDir(), "blobs") }

type envLookup struct{ o *IO }

func (e envLookup) Environ() []string                   { return e.o.environ() }
func (e envLookup) LookupEnv(key string) (string, bool) { return e.o.lookupEnv(key) }

// usageError is bad usage or bad input: exit code 2.
type usageError struct{ err error }

func (u usageError) Error() string { return u.err.Error() }
func (u usageError) Unwrap() error { return u.err }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

// usageArgs makes a wrong number of arguments bad usage (exit code 2).
func usageArgs(check cobra.PositionalArgs) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if err := check(cmd, args); err != nil {
			return usageError{err}
		}
		return nil
	}
}

// temporalProfile loads the Temporal client settings the SDK's envconfig
// conventions give (config file profile, then TEMPORAL_* variables).
func temporalProfile(o *IO) (envconfig.ClientConfigProfile, error) {
	return envconfig.LoadClientConfigProfile(envconfig.LoadClientConfigProfileOptions{EnvLookup: envLookup{o}})
}

// connection is a Temporal client, and, in embedded mode, the server and
// worker this process runs.
type connection struct {
	Client   client.Client
	Embedded bool
	server   *devserver.Server
	worker   worker.Worker
}

func (c *connection) Close() {
	if c.worker != nil {
		c.worker.Stop()
		pipeline.DefaultRegistry.Close() // stops exec: processors
	}
	if c.Client != nil {
		c.Client.Close()
	}
	if c.server != nil {
		c.server.Stop()
	}
}

// connect dials the configured Temporal service, or, when none is
// configured, starts the embedded server under .batchpipe/embedded and an
// in-process worker on taskQueue.
func connect(ctx context.Context, o *IO, taskQueue string, logger *slog.Logger, withWorker bool) (*connection, error) {
	prof, err := temporalProfile(o)
	if err != nil {
		return nil, usagef("temporal configuration: %v", err)
	}
	if prof.Address == "" {
		return connectEmbedded(ctx, o, taskQueue, logger, withWorker)
	}
	opts, err := prof.ToClientOptions(envconfig.ToClientOptionsRequest{})
	if err != nil {
		return nil, usagef("temporal configuration: %v", err)
	}
	opts.Logger = quietSDKLogger(logger)
	dctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	c, err := client.DialContext(dctx, opts)
	if err != nil {
		ns := opts.Namespace
		if ns == "" {
			ns = "default"
		}
		return nil, fmt.Errorf("cannot reach Temporal at %s (namespace %q): %v", opts.HostPort, ns, err)
	}
	return &connection{Client: c}, nil
}

func connectEmbedded(ctx context.Context, o *IO, taskQueue string, logger *slog.Logger, withWorker bool) (*connection, error) {
	srv, err := devserver.Start(ctx, devserver.Options{Dir: filepath.Join(o.stateDir(), "embedded"), Logger: logger, LogLevel: serverLogLevel(logger)})
	if err != nil {
		if errors.Is(err, devserver.ErrStateDirInUse) {
			return nil, fmt.Errorf("%v\n(another submit is running in this directory; wait for it, or run `worker --dev` and point submit at it with TEMPORAL_ADDRESS=127.0.0.1:7233)", err)
		}
		return nil, fmt.Errorf("starting the embedded Temporal server: %w", err)
	}
	c, err := client.DialContext(ctx, client.Options{HostPort: srv.FrontendAddr(), Namespace: srv.Namespace(), Logger: quietSDKLogger(logger)})
	if err != nil {
		srv.Stop()
		return nil, err
	}
	if !withWorker {
		return &connection{Client: c, Embedded: true, server: srv}, nil
	}
	pipeline.DefaultRegistry.SetExecOptions(pipeline.ExecOptions{Logger: logger})
	w := pipeline.NewWorker(c, taskQueue, pipeline.WorkerOptions{Logger: logger})
	if err := w.Start(); err != nil {
		c.Close()
		srv.Stop()
		return nil, err
	}
	return &connection{Client: c, Embedded: true, server: srv, worker: w}, nil
}

// openStore opens a store URL given on the command line. URLs must not
// carry credentials (they would end up in workflow history); the default
// file store's directory is created.
func openStore(ctx context.Context, o *IO, rawURL string) (blobstore.Bucket, string, error) {
	if rawURL == "" {
		rawURL = o.getenv("BATCHPIPE_STORE")
	}
	if rawURL == "" {
		rawURL = o.defaultStore()
		if err := os.MkdirAll(strings.TrimPrefix(rawURL, "file://"), 0o755); err != nil {
			return nil, "", err
		}
	}
	if blobstore.Redact(rawURL) != rawURL {
		return nil, "", usagef("store URL %s must not contain credentials: set them in the environment (AWS_* or MINIO_ROOT_*)", blobstore.Redact(rawURL))
	}
	b, err := blobstore.Open(ctx, rawURL)
	if err != nil {
		return nil, "", usageError{err}
	}
	// Fail fast on an unreachable store or missing bucket.
	lctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	for _, err := range b.List(lctx, "batches/.probe/") {
		if err != nil {
			b.Close()
			return nil, "", fmt.Errorf("store %s is not usable: %w", b.URL(), err)
		}
	}
	return b, rawURL, nil
}

// newLogger builds the process logger: text to stderr, warnings and up
// unless verbose.
func newLogger(w io.Writer, verbose bool) *slog.Logger {
	l, _ := newFormatLogger(w, "text", verbose)
	return l
}

// serverLogLevel keeps the embedded server silent unless debugging: its
// warnings (e.g. on shutdown) mean nothing to a batchpipe user.
func serverLogLevel(l *slog.Logger) slog.Level {
	if l.Enabled(context.Background(), slog.LevelDebug) {
		return slog.LevelWarn
	}
	return slog.LevelError + 8
}

// newFormatLogger is newLogger with a choice of text or JSON records.
func newFormatLogger(w io.Writer, format string, verbose bool) (*slog.Logger, error) {
	level := slog.LevelWarn
	if verbose {
		level = slog.LevelDebug
	}
	opts := &slog.HandlerOptions{Level: level}
	switch format {
	case "", "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, usagef("--log-format %q: want text or json", format)
}

// dialTimeout bounds how long a command waits for Temporal to answer.
const dialTimeout = 10 * time.Second
