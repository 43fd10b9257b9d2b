package cli

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"go.temporal.io/sdk/client"
	sdklog "go.temporal.io/sdk/log"
	"golang.org/x/term"

	"github.com/batchpipe/batchpipe/blobstore"
	"github.com/batchpipe/batchpipe/inputs"
	"github.com/batchpipe/batchpipe/manifests"
	"github.com/batchpipe/batchpipe/pipeline"
)

type submitFlags struct {
	store        string
	processor    string
	shardSize    int
	concurrency  int
	batchID      string
	maxFailures  string
	taskQueue    string
	wait         bool
	maxItemSize  int
	format       string
	itemTimeout  time.Duration
	itemAttempts int
	itemPar      int
	verbose      bool
	shardSizeSet bool // --shard-size given: no automatic sizing
	fromFailures bool
}

// Submit runs the submit command with args (without the program name) and
// returns the process exit code.
func Submit(ctx context.Context, o *IO, args []string) int {
	root := newSubmitCommand(ctx, o)
	root.SetArgs(args)
	root.SetIn(o.Stdin)
	root.SetOut(o.Stdout)
	root.SetErr(o.Stderr)
	err := root.ExecuteContext(ctx)
	return exitCode(o, err)
}

// exitError carries an exit code chosen by a command.
type exitError struct{ code int }

func (e exitError) Error() string { return "exit " + strconv.Itoa(e.code) }

func exitCode(o *IO, err error) int {
	var ee exitError
	var ue usageError
	switch {
	case err == nil:
		return ExitOK
	case errors.As(err, &ee):
		return ee.code
	case errors.As(err, &ue):
		fmt.Fprintln(o.Stderr, "error:", err)
		return ExitUsage
	default:
		fmt.Fprintln(o.Stderr, "error:", err)
		return ExitFailed
	}
}

func newSubmitCommand(ctx context.Context, o *IO) *cobra.Command {
	f := &submitFlags{}
	cmd := &cobra.Command{
		Use:   "submit [flags] FILE|URL",
		Short: "Run a processor over every item of FILE as a durable Temporal batch",
		Long: `Submit stages FILE (JSON Lines or CSV with a header; .gz/.zst by extension;
"-" for stdin) into shards in the blob store, starts the batch and waits for
it, showing progress. With no Temporal address configured (TEMPORAL_ADDRESS
or a profile) it runs an embedded Temporal server and worker in-process.

Exit codes: 0 succeeded, 3 completed with failed items, 1 failed or
canceled, 2 bad usage or bad input.`,
		Args:          usageArgs(cobra.ExactArgs(1)),
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			f.shardSizeSet = cmd.Flags().Changed("shard-size")
			if cmd.Flags().Changed("batch-id") && f.batchID == "" {
				return usagef("--batch-id is empty (an unset variable?); leave the flag out to have an id made up")
			}
			return runSubmit(cmd.Context(), o, f, args[0])
		},
	}
	cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	cmd.AddCommand(newStatusCommand(o), newCancelCommand(o), newListCommand(o), newRedriveCommand(o), newResultsCommand(o), newScheduleCommand(o), newGCCommand(o), newUploadCommand(o))
	fl := cmd.Flags()
	f.registerBatchFlags(cmd)
	fl.StringVar(&f.batchID, "batch-id", "", "batch id (default: input name + UTC time); reuse it to attach to or resume a batch")
	fl.BoolVar(&f.wait, "wait", true, "wait for the batch to finish, showing progress")
	fl.BoolVar(&f.fromFailures, "from-failures", false, "FILE holds failure lines (from submit results ID --failed, or a failed.jsonl.zst): submit each line's input")
	return cmd
}

// registerBatchFlags adds the flags a batch is run with (shared by submit
// and schedule create).
func (f *submitFlags) registerBatchFlags(cmd *cobra.Command) {
	d := pipeline.DefaultOptions()
	fl := cmd.Flags()
	fl.StringVar(&f.store, "store", "", "blob store URL (file:///dir, s3://bucket/prefix, minio://host:port/bucket/prefix); default $BATCHPIPE_STORE, else file://$PWD/.batchpipe/blobs")
	fl.StringVar(&f.processor, "processor", d.Processor, "processor to run on each item (built in: "+strings.Join(pipeline.DefaultRegistry.Names(), ", ")+"; or exec:COMMAND)")
	fl.IntVar(&f.shardSize, "shard-size", d.ShardSize, "items per shard, one child workflow each; unset, 1000 or more for inputs over 250,000 items (about 250 shards)")
	fl.IntVar(&f.concurrency, "concurrency", d.Concurrency, "shards in flight at once")
	fl.StringVar(&f.maxFailures, "max-failures", "", `stop the batch as failed once more than N items (or "N%" of items) failed; default: never`)
	fl.StringVar(&f.taskQueue, "task-queue", pipeline.DefaultTaskQueue, "Temporal task queue the workers poll")
	fl.IntVar(&f.maxItemSize, "max-item-size", inputs.DefaultMaxItemBytes, "largest input item in bytes")
	fl.StringVar(&f.format, "format", "", `input format: "jsonl" or "csv" (default: by file extension)`)
	fl.DurationVar(&f.itemTimeout, "item-timeout", d.ItemTimeout, "timeout of one attempt at one item")
	fl.IntVar(&f.itemAttempts, "item-attempts", d.ItemAttempts, "attempts per item, the first included")
	fl.IntVar(&f.itemPar, "item-parallelism", d.ItemParallelism, "items processed at once within a shard")
	fl.BoolVarP(&f.verbose, "verbose", "v", false, "log debug details")
}

// parseMaxFailures reads "N" or "N%".
func parseMaxFailures(s string) (pipeline.FailureLimit, error) {
	if s == "" {
		return pipeline.FailureLimit{}, nil
	}
	if p, ok := strings.CutSuffix(s, "%"); ok {
		v, err := strconv.ParseFloat(p, 64)
		if err != nil || v < 0 || v > 100 {
			return pipeline.FailureLimit{}, usagef("--max-failures %q: want a count like 10 or a percentage like 5%%", s)
		}
		return pipeline.FailureLimit{Percent: v}, nil
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v < 0 {
		return pipeline.FailureLimit{}, usagef("--max-failures %q: want a count like 10 or a percentage like 5%%", s)
	}
	if v == 0 {
		return pipeline.FailureLimit{Count: 0, Percent: 0}, usagef("--max-failures 0 would stop at the first failure; use --max-failures 0%% for that, or leave it unset")
	}
	return pipeline.FailureLimit{Count: v}, nil
}

// options checks the flags and returns the batch options. The processor
// must be built into submit (or be an exec: command line) unless a Temporal
// service is configured: a custom worker polling it may have registered the
// name (pipeline.Register), which submit cannot see, so the name is then
// accepted with a notice on stderr.
func (f *submitFlags) options(stderr io.Writer, temporalConfigured bool) (pipeline.Options, error) {
	o := pipeline.DefaultOptions()
	if _, err := pipeline.DefaultRegistry.Lookup(f.processor); err != nil {
		if strings.HasPrefix(f.processor, pipeline.ExecPrefix) {
			return o, usagef("--processor: %v", err)
		}
		if !temporalConfigured {
			return o, usagef("--processor: %v; a custom worker's processors run on a Temporal service that worker polls (set TEMPORAL_ADDRESS)", err)
		}
		fmt.Fprintf(stderr, "processor %q is not built into submit: the workers on task queue %q must register it (a worker without it fails the batch at its first shard)\n", f.processor, f.taskQueue)
	}
	switch {
	case f.shardSize < 1:
		return o, usagef("--shard-size must be at least 1, got %d", f.shardSize)
	case f.concurrency < 1:
		return o, usagef("--concurrency must be at least 1, got %d", f.concurrency)
	case f.itemAttempts < 1:
		return o, usagef("--item-attempts must be at least 1, got %d", f.itemAttempts)
	case f.itemPar < 1:
		return o, usagef("--item-parallelism must be at least 1, got %d", f.itemPar)
	case f.itemTimeout <= 0:
		return o, usagef("--item-timeout must be positive, got %v", f.itemTimeout)
	case f.maxItemSize < 1:
		return o, usagef("--max-item-size must be at least 1, got %d", f.maxItemSize)
	}
	limit, err := parseMaxFailures(f.maxFailures)
	if err != nil {
		return o, err
	}
	o.Processor, o.ShardSize, o.Concurrency, o.MaxFailures = f.processor, f.shardSize, f.concurrency, limit
	o.ItemTimeout, o.ItemAttempts, o.ItemParallelism = f.itemTimeout, f.itemAttempts, f.itemPar
	return o, nil
}

// defaultBatchID names a batch after its input and the time.
func defaultBatchID(path string) string {
	base := filepath.Base(path)
	if path == "-" {
		base = "stdin"
	}
	for _, ext := range []string{".gz", ".zst", ".jsonl", ".ndjson", ".json", ".csv"} {
		base = strings.TrimSuffix(base, ext)
	}
	var clean strings.Builder
	for _, c := range base {
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' {
			clean.WriteRune(c)
		} else {
			clean.WriteByte('-')
		}
	}
	var r [2]byte
	rand.Read(r[:])
	name := strings.Trim(clean.String(), "-_")
	if name == "" {
		name = "batch"
	}
	return fmt.Sprintf("%s-%s-%s", name, time.Now().UTC().Format("20060102T150405Z"), hex.EncodeToString(r[:]))
}

func runSubmit(ctx context.Context, o *IO, f *submitFlags, path string) error {
	start := time.Now()
	prof, profErr := temporalProfile(o)
	temporalConfigured := profErr == nil && prof.Address != ""
	opts, err := f.options(o.Stderr, temporalConfigured)
	if err != nil {
		return err
	}
	batchID := f.batchID
	if batchID == "" {
		batchID = defaultBatchID(path)
	}
	if err := manifests.ValidateBatchID(batchID); err != nil {
		return usagef("--batch-id: %v", err)
	}
	if f.format != "" && f.format != "jsonl" && f.format != "csv" {
		return usagef("--format %q: want jsonl or csv", f.format)
	}
	remote := strings.Contains(path, "://")
	var reader *inputs.Reader
	if remote {
		if err := checkInputURL(path, f); err != nil {
			return err
		}
		if !f.shardSizeSet {
			opts.ShardSize = 0 // sized by the staging activity from the object's size
		}
	} else {
		if !f.shardSizeSet {
			opts.ShardSize = pipeline.AutoShardSize(countLines(o, path))
		}
		reader, err = openInput(o, path, inputs.Options{Format: inputs.Format(f.format), MaxItemBytes: f.maxItemSize})
		if err != nil {
			return err
		}
		defer reader.Close()
	}

	logger := newLogger(o.Stderr, f.verbose)
	b, storeURL, err := openStore(ctx, o, f.store)
	if err != nil {
		return err
	}
	defer b.Close()

	// With a Temporal service configured, reach it before staging anything,
	// so an unreachable service leaves nothing behind. (The embedded server
	// starts after staging: bad input must not start it.)
	var conn *connection
	if temporalConfigured {
		if conn, err = connect(ctx, o, f.taskQueue, logger, true); err != nil {
			return err
		}
		defer conn.Close()
	}

	bin := pipeline.BatchInput{BatchID: batchID, Store: storeURL, Options: opts}
	if remote {
		bin.Source, bin.InputURL, bin.InputFormat, bin.MaxItemBytes = path, path, f.format, f.maxItemSize
		if spec, err := pipeline.ReadSpec(ctx, b, batchID); err == nil {
			if spec.InputURL != path {
				return usagef("batch %s already exists with a different input (%s); choose another --batch-id", batchID, spec.Source)
			}
			if _, merr := readManifest(ctx, b, batchID); merr == nil {
				return reportFinished(ctx, o, b, batchID)
			}
			fmt.Fprintf(o.Stderr, "batch %s exists with this input; attaching\n", batchID)
		}
		fmt.Fprintf(o.Stderr, "batch %s: a worker stages %s, then runs processor %s\n", batchID, path, opts.Processor)
	} else {
		var in pipeline.ItemSource = reader
		if f.fromFailures {
			in = pipeline.FailureInputs(displayName(path), reader)
		}
		staged, err := stageLocal(ctx, o, b, batchID, path, in, opts.ShardSize)
		if err != nil {
			return err
		}
		if staged == nil { // finished before: reported
			return reportFinished(ctx, o, b, batchID)
		}
		bin.Source, bin.Items, bin.Shards, bin.Options.ShardSize = staged.Source, staged.Items, staged.Shards, staged.ShardSize
		fmt.Fprintf(o.Stderr, "batch %s: %d items in %d shards of %d, processor %s\n", batchID, staged.Items, staged.Shards, staged.ShardSize, opts.Processor)
	}
	if _, err := pipeline.ReadSpec(ctx, b, batchID); errors.Is(err, blobstore.ErrNotFound) {
		if err := pipeline.SaveSpec(ctx, b, bin); err != nil {
			return err
		}
	}

	if conn == nil {
		if conn, err = connect(ctx, o, f.taskQueue, logger, true); err != nil {
			return err
		}
		defer conn.Close()
	}
	run, err := pipeline.Start(ctx, conn.Client, f.taskQueue, bin)
	if errors.Is(err, pipeline.ErrAlreadyStarted) {
		return reportFinished(ctx, o, b, batchID)
	}
	if err != nil {
		return fmt.Errorf("starting batch %s: %w", batchID, err)
	}
	if !f.wait {
		if conn.Embedded {
			fmt.Fprintf(o.Stderr, "note: the embedded server stops with this command, so the batch waits until you run it again with --batch-id %s (or use `worker --dev` and TEMPORAL_ADDRESS)\n", batchID)
		}
		fmt.Fprintln(o.Stdout, batchID)
		return nil
	}
	res, err := waitWithProgress(ctx, o, conn.Client, run, bin.Items)
	if err != nil && ctx.Err() != nil {
		if conn.Embedded {
			fmt.Fprintf(o.Stderr, "\ninterrupted; the batch is saved in .batchpipe/ and resumes when you run the same command with --batch-id %s\n", batchID)
		} else {
			fmt.Fprintf(o.Stderr, "\nstopped waiting; batch %s keeps running on the cluster\n", batchID)
		}
		return exitError{ExitFailed}
	}
	// A canceled batch also wrote its manifest.
	m, merr := readManifest(context.WithoutCancel(ctx), b, batchID)
	if merr != nil {
		if err != nil {
			return fmt.Errorf("batch %s: %w", batchID, err)
		}
		return fmt.Errorf("batch %s finished as %s but its manifest cannot be read: %w", batchID, res.Status, merr)
	}
	if msg, ok := strings.CutPrefix(m.Error, "bad input: "); ok && len(m.Results) == 0 {
		return usagef("%s", msg) // a remote input failed validation: nothing was staged
	}
	printSummary(o, b, m, time.Since(start))
	return exitError{statusExit(m.Status)}
}

// stageLocal stages a local input, or checks an existing batch id against
// it: nil Staged means the batch finished before (report it).
func stageLocal(ctx context.Context, o *IO, b blobstore.Bucket, batchID, path string, in pipeline.ItemSource, shardSize int) (*pipeline.Staged, error) {
	staged, err := pipeline.ReadStaged(ctx, b, batchID)
	switch {
	case err == nil:
		items, sha, ferr := pipeline.Fingerprint(in)
		if ferr != nil {
			return nil, inputError(ferr)
		}
		if sha != staged.SHA256 {
			return nil, usagef("batch %s already exists with a different input (%s, %d items, staged %s); this input has %d items. Choose another --batch-id",
				batchID, staged.Source, staged.Items, staged.StagedAt.Format(time.RFC3339), items)
		}
		// A manifest means the batch finished: report it without starting anything.
		if _, merr := readManifest(ctx, b, batchID); merr == nil {
			return nil, nil
		}
		fmt.Fprintf(o.Stderr, "batch %s exists with this input; attaching\n", batchID)
		return &staged, nil
	case errors.Is(err, blobstore.ErrNotFound):
		fmt.Fprintf(o.Stderr, "staging %s as batch %s\n", displayName(path), batchID)
		staged, err = pipeline.Stage(ctx, b, batchID, displayName(path), in, shardSize, nil)
		if err != nil {
			return nil, inputError(err)
		}
		return &staged, nil
	default:
		return nil, err
	}
}

// checkInputURL rejects an input URL that cannot work before anything starts.
func checkInputURL(rawURL string, f *submitFlags) error {
	if f.fromFailures {
		return usagef("--from-failures reads local files; download %s first", blobstore.Redact(rawURL))
	}
	if blobstore.Redact(rawURL) != rawURL {
		return usagef("input URL %s must not contain credentials: set them in the environment", blobstore.Redact(rawURL))
	}
	if _, _, err := blobstore.SplitObjectURL(rawURL); err != nil {
		return usageError{err}
	}
	if scheme, _, _ := strings.Cut(rawURL, "://"); !slices.Contains(blobstore.Schemes(), scheme) {
		return usagef("input URL %s: unknown scheme %q (known: %s)", rawURL, scheme, strings.Join(blobstore.Schemes(), ", "))
	}
	return nil
}

func displayName(path string) string {
	if path == "-" {
		return "stdin"
	}
	return path
}

func openInput(o *IO, path string, opts inputs.Options) (*inputs.Reader, error) {
	var (
		r   *inputs.Reader
		err error
	)
	if path == "-" {
		r, err = inputs.NewReader("stdin", o.Stdin, opts)
	} else {
		if !filepath.IsAbs(path) && o.Dir != "" {
			path = filepath.Join(o.Dir, path)
		}
		r, err = inputs.Open(path, opts)
	}
	if err != nil {
		return nil, inputError(err)
	}
	return r, nil
}

// inputError makes bad input exit with code 2; read failures stay code 1.
func inputError(err error) error {
	var ie *inputs.Error
	if errors.As(err, &ie) && (ie.Err == nil || errors.Is(ie.Err, inputs.ErrNoItems) || errors.Is(ie.Err, os.ErrNotExist) || errors.Is(ie.Err, os.ErrPermission)) {
		return usageError{err}
	}
	return err
}

func statusExit(status string) int {
	switch status {
	case manifests.StatusSucceeded:
		return ExitOK
	case manifests.StatusCompletedWithFailures:
		return ExitWithFailures
	}
	return ExitFailed
}

// readManifest reads and checks batchID's manifest (manifests.Open); a
// batch without one gives an error matching blobstore.ErrNotFound.
func readManifest(ctx context.Context, b blobstore.Bucket, batchID string) (manifests.Manifest, error) {
	batch, err := manifests.Open(ctx, b, batchID)
	if err != nil {
		return manifests.Manifest{}, err
	}
	return batch.Manifest, nil
}

func reportFinished(ctx context.Context, o *IO, b blobstore.Bucket, batchID string) error {
	m, err := readManifest(ctx, b, batchID)
	if ok, _ := blobstore.Exists(ctx, b, collectedKey(batchID)); ok && err != nil {
		return usagef("batch %s finished and its results were deleted by gc (its input was kept); choose another --batch-id", batchID)
	}
	if err == nil && strings.HasPrefix(m.Error, "bad input: ") && len(m.Results) == 0 {
		return usagef("batch %s failed validation: %s; fix the input and submit it with another --batch-id", batchID, strings.TrimPrefix(m.Error, "bad input: "))
	}
	if err != nil {
		return fmt.Errorf("batch %s was run before and left no readable manifest (%v); choose another --batch-id", batchID, err)
	}
	fmt.Fprintf(o.Stderr, "batch %s already finished\n", batchID)
	printSummary(o, b, m, 0)
	return exitError{statusExit(m.Status)}
}

func printSummary(o *IO, b blobstore.Bucket, m manifests.Manifest, elapsed time.Duration) {
	fmt.Fprintf(o.Stdout, "batch %s %s: %d items, %d succeeded, %d failed\n", m.BatchID, m.Status, m.Counts.Items, m.Counts.Succeeded, m.Counts.Failed)
	if m.Error != "" {
		fmt.Fprintf(o.Stdout, "reason: %s\n", m.Error)
	}
	if elapsed > 0 {
		fmt.Fprintf(o.Stdout, "elapsed %.1fs, %.0f items/s\n", elapsed.Seconds(), float64(m.Counts.Items)/elapsed.Seconds())
	}
	key := blobstore.Prefix(b) + manifests.ManifestKey(m.BatchID)
	fmt.Fprintf(o.Stdout, "manifest: %s\n", key)
	if dir, ok := strings.CutPrefix(b.URL(), "file://"); ok {
		fmt.Fprintf(o.Stdout, "          %s\n", filepath.Join(dir, filepath.FromSlash(key)))
	}
	if m.Failures != nil {
		fmt.Fprintf(o.Stdout, "failures: %s (%d items)\n", m.Failures.Key, m.Failures.Items)
	}
}

// waitWithProgress waits for the batch, showing a bar on a terminal and a
// line every few seconds otherwise.
func waitWithProgress(ctx context.Context, o *IO, c client.Client, run client.WorkflowRun, items int64) (pipeline.BatchResult, error) {
	done := make(chan error, 1)
	var res pipeline.BatchResult
	go func() { done <- run.Get(ctx, &res) }()

	tty := false
	if f, ok := o.Stderr.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		tty = true
	}
	var bar *progressbar.ProgressBar
	newBar := func() {
		bar = progressbar.NewOptions64(items,
			progressbar.OptionSetWriter(o.Stderr),
			progressbar.OptionSetDescription("items"),
			progressbar.OptionShowCount(),
			progressbar.OptionShowIts(),
			progressbar.OptionSetItsString("items"),
			progressbar.OptionSetPredictTime(true),
			progressbar.OptionThrottle(200*time.Millisecond),
			progressbar.OptionClearOnFinish(),
		)
	}
	if tty && items > 0 {
		newBar()
	}
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	lastLine := time.Now()
	begin := time.Now()
	for {
		select {
		case err := <-done:
			if bar != nil {
				bar.Finish()
			}
			return res, err
		case <-tick.C:
			qctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			p, err := pipeline.QueryProgress(qctx, c, run.GetID())
			cancel()
			if err != nil {
				continue // between runs, or the worker is busy: try again
			}
			if items == 0 && p.Items > 0 { // known once a worker staged a remote input
				items = p.Items
				if tty {
					newBar()
				}
			}
			if bar != nil {
				bar.Set64(p.Done)
			} else if time.Since(lastLine) >= 5*time.Second {
				lastLine = time.Now()
				rate := float64(p.Done) / time.Since(begin).Seconds()
				eta := "?"
				if rate > 0 {
					eta = (time.Duration(float64(items-p.Done)/rate) * time.Second).String()
				}
				fmt.Fprintf(o.Stderr, "%d/%d items (%d failed), %d shards in flight, run %d, %.0f items/s, ETA %s\n",
					p.Done, items, p.Failed, p.InFlight, p.Run, rate, eta)
			}
		}
	}
}

// quietSDKLogger bridges the SDK's logger to slog, dropping its info chatter.
func quietSDKLogger(l *slog.Logger) sdklog.Logger {
	return sdklog.NewStructuredLogger(l)
}

// countLines estimates the items of an uncompressed input file by counting
// its newlines (a fast upper bound); 0 when it cannot tell cheaply (stdin,
// compressed files).
func countLines(o *IO, path string) int64 {
	if path == "-" || strings.HasSuffix(path, ".gz") || strings.HasSuffix(path, ".zst") {
		return 0
	}
	if !filepath.IsAbs(path) && o.Dir != "" {
		path = filepath.Join(o.Dir, path)
	}
	f, err := os.Open(path)
	if err != nil {
		return 0
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	var n int64
	for {
		k, err := f.Read(buf)
		n += int64(bytes.Count(buf[:k], []byte{'\n'}))
		if err != nil {
			return n
		}
	}
}
