package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/batchpipe/batchpipe"
	"github.com/batchpipe/batchpipe/blobstore"
	"github.com/batchpipe/batchpipe/embedded"
	"github.com/batchpipe/batchpipe/execproc"
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
	itemsPerCall int
	itemContext  bool
	withInput    bool
	rate         float64
	canary       bool
	canaryMax    string
	priority     int
	fairnessKey  string
	fairnessW    float64
	verbose      bool
	fromFailures bool
	processorEnv []string
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
	case errors.Is(err, context.Canceled):
		fmt.Fprintln(o.Stderr, "interrupted:", err)
		return ExitInterrupted
	case errors.Is(err, embedded.ErrInUse):
		// Another submit runs its batch in this directory: only one may.
		fmt.Fprintf(o.Stderr, "error: %v\n(another submit is running in this directory; wait for it, or run `worker --dev` and point submit at it with TEMPORAL_ADDRESS=127.0.0.1:7233)\n", err)
		return ExitUsage
	case errors.As(err, &ue), errors.Is(err, batchpipe.ErrInvalid), errors.Is(err, batchpipe.ErrConflict),
		errors.Is(err, batchpipe.ErrNotFound), errors.Is(err, batchpipe.ErrNotRunning):
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
		Args:          submitArgs(o),
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			if cmd.Flags().Changed("batch-id") && f.batchID == "" {
				return usagef("--batch-id is empty (an unset variable?); leave the flag out to have an id made up")
			}
			return runSubmit(cmd.Context(), cmd, o, f, args[0])
		},
	}
	cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	setVersion(cmd)
	cmd.AddCommand(newStatusCommand(o), newCancelCommand(o), newListCommand(o), newRedriveCommand(o), newResultsCommand(o), newScheduleCommand(o), newGCCommand(o), newUploadCommand(o), newDiffCommand(o))
	cmd.AddCommand(newSteerCommands(o)...)
	fl := cmd.Flags()
	f.registerBatchFlags(cmd)
	fl.StringVar(&f.batchID, "batch-id", "", "batch `ID` (default: input name + UTC time); reuse it to attach to or resume a batch")
	fl.BoolVar(&f.wait, "wait", true, "wait for the batch to finish, showing progress")
	fl.BoolVar(&f.fromFailures, "from-failures", false, "FILE holds failure lines (from submit results ID --failed, or a failed.jsonl.zst): submit each line's input")
	registerProcessorEnv(cmd, &f.processorEnv)
	return cmd
}

// registerBatchFlags adds the flags a batch is run with (shared by submit
// and schedule create).
func (f *submitFlags) registerBatchFlags(cmd *cobra.Command) {
	d := pipeline.DefaultOptions()
	fl := cmd.Flags()
	fl.StringVar(&f.store, "store", "", "blob store `URL` (file:///dir, s3://bucket/prefix, minio://host:port/bucket/prefix); default $BATCHPIPE_STORE, else file://$PWD/.batchpipe/blobs")
	fl.StringVar(&f.processor, "processor", d.Processor, "processor `NAME` to run on each item (built in: "+strings.Join(pipeline.NewRegistry().Names(), ", ")+"; or exec:COMMAND)")
	fl.IntVar(&f.shardSize, "shard-size", 0, "`N` items per shard, one child workflow each; unset: items / (4 × concurrency), within 1,000..100,000 (the embedded worker's slots count as the concurrency)")
	fl.IntVar(&f.concurrency, "concurrency", d.Concurrency, "shards in flight at once")
	fl.StringVar(&f.maxFailures, "max-failures", "", "stop the batch as failed once more than `N` items, or more than N% of the batch's items, failed (0 or 0%: at the first failure); default: never")
	fl.StringVar(&f.taskQueue, "task-queue", pipeline.DefaultTaskQueue, "`NAME` of the Temporal task queue the workers poll")
	fl.IntVar(&f.maxItemSize, "max-item-size", inputs.DefaultMaxItemBytes, "largest input item in bytes")
	fl.StringVar(&f.format, "format", "", "input `FORMAT`: \"jsonl\" or \"csv\" (default: by file extension)")
	fl.DurationVar(&f.itemTimeout, "item-timeout", d.ItemTimeout, "timeout of one attempt at one item")
	fl.IntVar(&f.itemAttempts, "item-attempts", d.ItemAttempts, "attempts per item, the first included")
	fl.IntVar(&f.itemPar, "item-parallelism", d.ItemParallelism, "calls to the processor at once within a shard")
	fl.IntVar(&f.itemsPerCall, "items-per-call", 1, "items per call for processors that take many (exec: one JSON array per line, answered by one array)")
	fl.BoolVar(&f.itemContext, "item-context", false, `exec processors get each item as {"batch_id","shard","index","attempt","key","input"}, to key side effects`)
	fl.BoolVar(&f.withInput, "results-include-input", false, `each result line carries its item's input, as "input"`)
	fl.Float64Var(&f.rate, "rate", 0, "most items per second for the whole batch (each of the --concurrency shards gets rate/concurrency); default: no limit")
	fl.BoolVar(&f.canary, "canary", false, "run shard 0 alone first; the rest of the batch starts only if its failed items stay within --canary-max-failures, else the batch fails")
	fl.StringVar(&f.canaryMax, "canary-max-failures", "", "failed items the canary may have: `N`, or N% of shard 0's items (default 0: none)")
	fl.IntVar(&f.priority, "priority", 0, "Temporal task priority of the batch's shards, `N` from 1 (highest) to 5 (default 3): a higher one's shards run first on the same task queue")
	fl.StringVar(&f.fairnessKey, "fairness-key", "", "batches with the same `KEY` share the workers as one, evenly with the other keys of their priority (default: the batch id; at most 64 bytes)")
	fl.Float64Var(&f.fairnessW, "fairness-weight", 0, "share of the workers for --fairness-key against the other keys, `W` from 0.001 to 1000 (default 1)")
	fl.BoolVarP(&f.verbose, "verbose", "v", false, "log debug details")
}

// request checks the flags and returns the batch request. Only flags given
// on the command line are set: for an existing batch id, a flag left out
// means "as that batch has it". The processor must be built into submit (or
// be an exec: command line) unless a Temporal service is configured: a
// custom worker polling it may have registered the name (Registry.Register),
// which submit cannot see, so the name is then accepted with a notice.
func (f *submitFlags) request(cmd *cobra.Command, stderr io.Writer, temporalConfigured bool) (batchpipe.Request, error) {
	var r batchpipe.Request
	if err := execproc.NewRegistry(execproc.Options{}).Check(f.processor); err != nil {
		if strings.HasPrefix(f.processor, pipeline.ExecPrefix) {
			return r, usagef("--processor: %v", err)
		}
		if !temporalConfigured {
			return r, usagef("--processor: %v; a custom worker's processors run on a Temporal service that worker polls (set TEMPORAL_ADDRESS)", err)
		}
		fmt.Fprintf(stderr, "processor %q is not built into submit: the workers on task queue %q must register it (a worker without it fails the batch at its first shard)\n", f.processor, f.taskQueue)
	}
	switch {
	case cmd.Flags().Changed("shard-size") && f.shardSize < 1:
		return r, usagef("--shard-size must be at least 1, got %d", f.shardSize)
	case f.concurrency < 1:
		return r, usagef("--concurrency must be at least 1, got %d", f.concurrency)
	case f.itemAttempts < 1:
		return r, usagef("--item-attempts must be at least 1, got %d", f.itemAttempts)
	case f.itemAttempts > pipeline.MaxItemAttempts:
		return r, usagef("--item-attempts must be at most %d, got %d", pipeline.MaxItemAttempts, f.itemAttempts)
	case f.itemPar < 1:
		return r, usagef("--item-parallelism must be at least 1, got %d", f.itemPar)
	case f.itemTimeout <= 0:
		return r, usagef("--item-timeout must be positive, got %v", f.itemTimeout)
	case f.maxItemSize < 1:
		return r, usagef("--max-item-size must be at least 1, got %d", f.maxItemSize)
	case f.itemsPerCall < 1 || f.itemsPerCall > pipeline.MaxItemsPerCall:
		return r, usagef("--items-per-call must be 1 to %d, got %d", pipeline.MaxItemsPerCall, f.itemsPerCall)
	case cmd.Flags().Changed("rate") && !(f.rate >= 1) || math.IsInf(f.rate, 0):
		return r, usagef("--rate must be at least 1 item per second, got %v", f.rate)
	case f.format != "" && f.format != "jsonl" && f.format != "csv":
		return r, usagef("--format %q: want jsonl or csv", f.format)
	case cmd.Flags().Changed("priority") && (f.priority < 1 || f.priority > pipeline.MaxPriority):
		return r, usagef("--priority must be 1 (highest) to %d (default 3), got %d", pipeline.MaxPriority, f.priority)
	case cmd.Flags().Changed("fairness-key") && f.fairnessKey == "":
		return r, usagef("--fairness-key is empty (an unset variable?); leave the flag out to use the batch id")
	case len(f.fairnessKey) > pipeline.MaxFairnessKeyBytes:
		return r, usagef("--fairness-key must be at most %d bytes, got %d", pipeline.MaxFairnessKeyBytes, len(f.fairnessKey))
	case cmd.Flags().Changed("fairness-weight") && !(f.fairnessW >= pipeline.MinFairnessWeight && f.fairnessW <= pipeline.MaxFairnessWeight):
		return r, usagef("--fairness-weight must be %g to %g, got %v", pipeline.MinFairnessWeight, float64(pipeline.MaxFairnessWeight), f.fairnessW)
	case cmd.Flags().Changed("canary-max-failures") && !f.canary:
		return r, usagef("--canary-max-failures needs --canary")
	}
	limit, err := pipeline.ParseFailureLimit(f.maxFailures)
	if err != nil {
		return r, usagef("--max-failures %v", err)
	}
	canaryLimit, err := pipeline.ParseFailureLimit(f.canaryMax)
	if err != nil {
		return r, usagef("--canary-max-failures %v", err)
	}
	changed := cmd.Flags().Changed
	set := func(flag string, apply func()) {
		if changed(flag) {
			apply()
		}
	}
	set("processor", func() { r.Processor = f.processor })
	set("shard-size", func() { r.ShardSize = f.shardSize })
	set("concurrency", func() { r.Concurrency = f.concurrency })
	set("item-timeout", func() { r.ItemTimeout = f.itemTimeout })
	set("item-attempts", func() { r.ItemAttempts = f.itemAttempts })
	set("item-parallelism", func() { r.ItemParallelism = f.itemPar })
	set("items-per-call", func() { r.ItemsPerCall = f.itemsPerCall })
	set("item-context", func() { r.ItemContext = f.itemContext })
	set("results-include-input", func() { r.ResultsIncludeInput = f.withInput })
	set("rate", func() { r.Rate = f.rate })
	set("canary", func() { r.Canary = f.canary })
	set("priority", func() { r.Priority = f.priority })
	set("fairness-key", func() { r.FairnessKey = f.fairnessKey })
	set("fairness-weight", func() { r.FairnessWeight = f.fairnessW })
	r.CanaryMaxFailures = canaryLimit
	r.MaxFailures, r.MaxItemBytes, r.Format, r.FromFailures, r.BatchID = limit, f.maxItemSize, f.format, f.fromFailures, f.batchID
	return r, nil
}

func runSubmit(ctx context.Context, cmd *cobra.Command, o *IO, f *submitFlags, path string) error {
	start := time.Now()
	configured, err := temporalConfigured(o)
	if err != nil {
		return err
	}
	req, err := f.request(cmd, o.Stderr, configured)
	if err != nil {
		return err
	}
	if req.BatchID != "" {
		if err := manifests.ValidateBatchID(req.BatchID); err != nil {
			return usagef("--batch-id: %v", err)
		}
	}
	req.Name = path
	switch {
	case path == "-":
		req.Input, req.Reader, req.Name = "-", o.Stdin, "stdin"
	case strings.Contains(path, "://"):
		req.Input = path
	case !filepath.IsAbs(path) && o.Dir != "":
		req.Input = filepath.Join(o.Dir, path)
	default:
		req.Input = path
	}
	logger := newLogger(o.Stderr, f.verbose)
	c, isEmbedded, err := newClient(ctx, o, f.store, f.taskQueue, logger, true, f.processorEnv)
	if err != nil {
		return err
	}
	defer c.Close()
	b, err := c.Submit(ctx, req)
	if err != nil {
		return err
	}
	switch {
	case b.Finished:
		fmt.Fprintf(o.Stderr, "batch %s already finished\n", b.ID())
	case b.Attached:
		fmt.Fprintf(o.Stderr, "batch %s exists with this input; attaching\n", b.ID())
	case b.Shards() == 0:
		fmt.Fprintf(o.Stderr, "batch %s: a worker stages %s, then runs processor %s\n", b.ID(), blobstore.Redact(path), b.Options().Processor)
	default:
		fmt.Fprintf(o.Stderr, "batch %s: %d items in %d shards of %d, processor %s\n", b.ID(), b.Items(), b.Shards(), b.Options().ShardSize, b.Options().Processor)
	}
	if !f.wait && !b.Finished {
		if isEmbedded {
			fmt.Fprintf(o.Stderr, "note: the embedded server stops with this command, so the batch waits until you run it again with --batch-id %s (or use `worker --dev` and TEMPORAL_ADDRESS)\n", b.ID())
		}
		fmt.Fprintln(o.Stdout, b.ID())
		return nil
	}
	res, err := waitWithProgress(ctx, o, b)
	if err != nil && ctx.Err() != nil {
		if isEmbedded {
			fmt.Fprintf(o.Stderr, "\ninterrupted; the batch is saved in .batchpipe/ and resumes when you run the same command with --batch-id %s\n", b.ID())
		} else {
			fmt.Fprintf(o.Stderr, "\nstopped waiting; batch %s keeps running on the cluster\n", b.ID())
		}
		return exitError{ExitInterrupted}
	}
	if err != nil {
		if b.Finished && errors.Is(err, batchpipe.ErrInvalid) {
			return usagef("batch %s failed validation: %v; fix the input and submit it with another --batch-id", b.ID(), err)
		}
		return err
	}
	elapsed := time.Since(start)
	if b.Finished {
		elapsed = 0
	}
	printSummary(o, c.Store(), res.Manifest, elapsed)
	return exitError{statusExit(res.Manifest.Status)}
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
func waitWithProgress(ctx context.Context, o *IO, b *batchpipe.Batch) (batchpipe.Result, error) {
	tty := false
	if f, ok := o.Stderr.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		tty = true
	}
	items := b.Items()
	var bar *progressbar.ProgressBar
	newBar := func() {
		bar = progressbar.NewOptions64(items,
			progressbar.OptionSetWriter(o.Stderr),
			progressbar.OptionSetDescription("items"),
			progressbar.OptionShowCount(),
			progressbar.OptionThrottle(200*time.Millisecond),
			progressbar.OptionClearOnFinish(),
		)
	}
	if tty && items > 0 {
		newBar()
	}
	lastLine := time.Now()
	var window rateWindow
	res, err := b.Wait(ctx, func(p batchpipe.Progress) {
		if items == 0 && p.Items > 0 { // known once a worker staged a remote input
			items = p.Items
			if tty {
				newBar()
			}
		}
		window.add(time.Now(), p.Done)
		speed := ""
		if r, ok := window.rate(); ok {
			eta, _ := window.eta(items)
			speed = fmt.Sprintf(", %.0f items/s, ETA %s", r, eta)
		}
		shards := fmt.Sprintf("%d shards in flight", p.InFlight)
		if p.Running+p.Waiting > 0 {
			shards = fmt.Sprintf("shards %d running, %d waiting", p.Running, p.Waiting)
		}
		if bar != nil {
			bar.Describe(fmt.Sprintf("items (%s%s)", shards, speed))
			bar.Set64(p.Done)
		} else if time.Since(lastLine) >= 5*time.Second {
			lastLine = time.Now()
			fmt.Fprintf(o.Stderr, "%d/%d items (%d failed), %s, run %d%s\n",
				p.Done, items, p.Failed, shards, p.Run, speed)
		}
	})
	if bar != nil {
		bar.Finish()
	}
	return res, err
}
