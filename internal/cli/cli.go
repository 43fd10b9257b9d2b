// Package cli implements the submit and worker commands. Commands take their
// IO and environment as arguments so tests run them in-process; the mains in
// cmd/ only wire os.Args, os.Stdin/out/err and signals.
package cli

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/batchpipe/batchpipe"
	"github.com/batchpipe/batchpipe/blobstore"
	"github.com/batchpipe/batchpipe/embedded"
)

// Exit codes.
const (
	ExitOK           = 0
	ExitFailed       = 1   // batch failed or was canceled; or an operational error
	ExitUsage        = 2   // bad usage or bad input
	ExitWithFailures = 3   // batch completed with failed items
	ExitInterrupted  = 130 // stopped by SIGINT or SIGTERM (128 + SIGINT, as shells report it)
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

// temporalConfigured reports whether the environment names a Temporal
// service (TEMPORAL_ADDRESS or a profile); without one, commands run the
// embedded server.
func temporalConfigured(o *IO) (bool, error) {
	opts, err := batchpipe.TemporalOptions(envLookup{o})
	if err != nil {
		return false, usageError{err}
	}
	return opts.HostPort != "", nil
}

// newClient opens the batchpipe client the flags and environment say: the
// configured Temporal service, or, when none is configured, the embedded
// server under .batchpipe/embedded (started on first need) with, if
// withWorker, an in-process worker on taskQueue whose exec processors get
// the variables processorEnv names. Status and cancel must not start
// processing a batch of the embedded server, so they ask for none.
func newClient(ctx context.Context, o *IO, storeFlag, taskQueue string, logger *slog.Logger, withWorker bool, processorEnv []string) (c *batchpipe.Client, isEmbedded bool, err error) {
	storeURL, err := resolveStore(o, storeFlag)
	if err != nil {
		return nil, false, err
	}
	configured, err := temporalConfigured(o)
	if err != nil {
		return nil, false, err
	}
	if err := checkProcessorEnv(processorEnv); err != nil {
		return nil, false, err
	}
	if configured {
		if len(processorEnv) > 0 {
			return nil, false, usagef("--processor-env is for the worker submit runs itself when no Temporal service is configured; this batch runs on the workers of the one configured: give them --processor-env (worker --processor-env NAME)")
		}
		// Without a worker (status, list, gc) Temporal is reached on first
		// need, so those read the store when it is down.
		c, err = batchpipe.Dial(ctx, batchpipe.Config{Store: storeURL, TaskQueue: taskQueue, Logger: logger, EnvLookup: envLookup{o}, Lazy: !withWorker})
		return c, false, err
	}
	c, err = embedded.Open(ctx, embedded.Options{Dir: o.stateDir(), Store: storeURL, TaskQueue: taskQueue,
		Logger: logger, NoWorker: !withWorker, ProcessorEnv: processorEnv})
	return c, true, err
}

// resolveStore is the store URL: the flag, else $BATCHPIPE_STORE, else the
// file store under .batchpipe/ (created).
func resolveStore(o *IO, rawURL string) (string, error) {
	if rawURL == "" {
		rawURL = o.getenv("BATCHPIPE_STORE")
	}
	if rawURL == "" {
		rawURL = o.defaultStore()
		if err := os.MkdirAll(strings.TrimPrefix(rawURL, "file://"), 0o755); err != nil {
			return "", err
		}
	}
	if strings.HasPrefix(rawURL, "mem://") {
		return "", usagef("store %s: a mem:// store lives in one process and is gone when the command exits (manifest included); use file:///dir, s3:// or minio://", rawURL)
	}
	return rawURL, nil
}

// openStore opens a store URL given on the command line (see resolveStore)
// and checks that it answers.
func openStore(ctx context.Context, o *IO, rawURL string) (blobstore.Bucket, string, error) {
	rawURL, err := resolveStore(o, rawURL)
	if err != nil {
		return nil, "", err
	}
	b, err := batchpipe.OpenStore(ctx, rawURL)
	if err != nil {
		return nil, "", err
	}
	return b, rawURL, nil
}

// newLogger builds the process logger: text to stderr, warnings and up
// unless verbose.
func newLogger(w io.Writer, verbose bool) *slog.Logger {
	l, _ := newFormatLogger(w, "text", verbose)
	return l
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

// serverLogLevel keeps the embedded server silent unless debugging: its
// warnings (e.g. on shutdown) mean nothing to a batchpipe user.
func serverLogLevel(l *slog.Logger) slog.Level {
	if l.Enabled(context.Background(), slog.LevelDebug) {
		return slog.LevelWarn
	}
	return slog.LevelError + 8
}

// dialTimeout bounds how long a command waits for Temporal to answer.
const dialTimeout = 10 * time.Second
