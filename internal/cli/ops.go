package cli

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"go.temporal.io/sdk/client"
	sdklog "go.temporal.io/sdk/log"

	"github.com/batchpipe/batchpipe"
	"github.com/batchpipe/batchpipe/blobstore"
	"github.com/batchpipe/batchpipe/embedded"
	"github.com/batchpipe/batchpipe/layout"
	"github.com/batchpipe/batchpipe/manifests"
	"github.com/batchpipe/batchpipe/pipeline"
)

// opsFlags are shared by the commands that act on existing batches.
type opsFlags struct {
	store        string
	taskQueue    string
	json         bool
	verbose      bool
	processorEnv []string // redrive's embedded worker
}

func (f *opsFlags) register(cmd *cobra.Command, withJSON bool) {
	fl := cmd.Flags()
	fl.StringVar(&f.store, "store", "", "blob store `URL` (default $BATCHPIPE_STORE, else file://$PWD/.batchpipe/blobs)")
	fl.StringVar(&f.taskQueue, "task-queue", pipeline.DefaultTaskQueue, "`NAME` of the Temporal task queue the workers poll")
	fl.BoolVarP(&f.verbose, "verbose", "v", false, "log debug details")
	if withJSON {
		fl.BoolVar(&f.json, "json", false, "print JSON, for scripts")
	}
}

func subcommand(use, short string, args cobra.PositionalArgs, run func(cmd *cobra.Command, args []string) error) *cobra.Command {
	cmd := &cobra.Command{Use: use, Short: short, Args: usageArgs(args), SilenceUsage: true, SilenceErrors: true, RunE: run}
	cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	return cmd
}

// opsClient opens the batchpipe client of a command that acts on existing
// batches; withWorker for those that need batches to move (cancel, redrive).
func opsClient(ctx context.Context, o *IO, f *opsFlags, withWorker bool) (*batchpipe.Client, bool, error) {
	return newClient(ctx, o, f.store, f.taskQueue, newLogger(o.Stderr, f.verbose), withWorker, f.processorEnv)
}

// opsBatchClient is opsClient for a command acting on batch id. A batch
// the store (--store, else $BATCHPIPE_STORE, else this directory's default)
// does not hold but a configured Temporal service knows is acted on in the
// store its workflow input names, so that status, results, cancel and
// redrive find a batch submitted from another directory or with another
// store. With Temporal unreachable the store alone answers, as before.
func opsBatchClient(ctx context.Context, o *IO, f *opsFlags, id string, withWorker bool) (*batchpipe.Client, error) {
	c, isEmbedded, err := opsClient(ctx, o, f, withWorker)
	if err != nil || isEmbedded {
		// The embedded server of this directory knows only batches whose
		// store is this directory's.
		return c, err
	}
	if held, err := storeHolds(ctx, c.Store(), id); err != nil || held {
		return c, nil // an unreadable store: the command says so in its own words
	}
	tc, err := c.Temporal(ctx)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("batch %s is not in %s and Temporal cannot be asked: %w", id, c.Store().URL(), err)
	}
	storeURL := storeOnTemporal(ctx, tc, id)
	if storeURL == "" || storeURL == c.StoreURL() {
		return c, nil // unknown to Temporal too: the command says so
	}
	from := c.Store().URL()
	c.Close()
	c, _, err = newClient(ctx, o, storeURL, f.taskQueue, newLogger(o.Stderr, f.verbose), withWorker, f.processorEnv)
	if err != nil {
		return nil, followErr(id, storeURL, err)
	}
	followNote(o, id, storeURL, from)
	return c, nil
}

// storeHolds reports whether the store has any object of batch id.
func storeHolds(ctx context.Context, b blobstore.Bucket, id string) (bool, error) {
	for _, err := range b.List(ctx, manifests.BatchPrefix(id)) {
		return err == nil, err
	}
	return false, nil
}

// storeOnTemporal is the store URL in the input of batch id's workflow on
// Temporal, "" when Temporal does not know the batch or cannot say.
func storeOnTemporal(ctx context.Context, tc client.Client, id string) string {
	in, err := pipeline.StartedInput(ctx, tc, id)
	if err != nil {
		return ""
	}
	return in.Store
}

// temporalStoreOf is storeOnTemporal for a command without a client (results
// by id): it dials the configured Temporal service, "" when none is
// configured or it cannot be reached.
func temporalStoreOf(ctx context.Context, o *IO, verbose bool, id string) string {
	opts, err := batchpipe.TemporalOptions(envLookup{o})
	if err != nil || opts.HostPort == "" {
		return ""
	}
	opts.Logger = sdklog.NewStructuredLogger(newLogger(o.Stderr, verbose))
	dctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	tc, err := client.DialContext(dctx, opts)
	if err != nil {
		return ""
	}
	defer tc.Close()
	return storeOnTemporal(dctx, tc, id)
}

func followErr(id, storeURL string, err error) error {
	return fmt.Errorf("batch %s is not in this store; its workflow on Temporal names store %s, which cannot be opened here: %w", id, blobstore.Redact(storeURL), err)
}

func followNote(o *IO, id, storeURL, from string) {
	fmt.Fprintf(o.Stderr, "batch %s is in store %s (as its workflow on Temporal says), not in %s\n", id, blobstore.Redact(storeURL), from)
}

// inUse says what an embedded server busy with another submit means here.
func inUse(o *IO, err error) error {
	if errors.Is(err, embedded.ErrInUse) {
		return fmt.Errorf("the embedded server in %s is in use by a running submit; its batch is running there (ask again when it ends, or use `worker --dev`)", o.stateDir())
	}
	return err
}

func newStatusCommand(o *IO) *cobra.Command {
	f := &opsFlags{}
	cmd := subcommand("status ID", "Show a batch's progress (running) or its manifest's status and counts (finished)", cobra.ExactArgs(1),
		func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if err := manifests.ValidateBatchID(args[0]); err != nil {
				return usageError{err}
			}
			c, err := opsBatchClient(ctx, o, f, args[0], false)
			if err != nil {
				return err
			}
			defer c.Close()
			b, err := c.Batch(ctx, args[0])
			if err != nil {
				return inUse(o, err)
			}
			st, err := b.Status(ctx)
			if err != nil {
				return inUse(o, err)
			}
			if f.json {
				enc := json.NewEncoder(o.Stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(st)
			}
			fmt.Fprintf(o.Stdout, "batch %s: %s\n", st.BatchID, st.Status)
			fmt.Fprintln(o.Stdout, itemsLine(st))
			if st.Paused {
				since := ""
				if st.PausedSince != nil {
					since = " since " + st.PausedSince.UTC().Format(time.RFC3339)
				}
				reason := ""
				if st.PauseReason != "" {
					reason = " (" + st.PauseReason + ")"
				}
				fmt.Fprintf(o.Stdout, "paused%s%s; submit resume %s continues it\n", since, reason, st.BatchID)
			}
			live := st.Status == "running" || st.Status == "paused"
			if live && st.Run == 0 {
				fmt.Fprintf(o.Stdout, "progress: unknown, no worker answered (is a worker running? with the embedded server a batch runs only while its submit runs: run submit again with --batch-id %s)\n", st.BatchID)
			} else if live {
				shards := fmt.Sprintf("%d in flight", st.InFlight)
				if st.Running+st.Waiting > 0 {
					shards = fmt.Sprintf("%d running, %d waiting for a worker", st.Running, st.Waiting)
				}
				speed := "rate not known yet"
				if st.Rate > 0 {
					speed = fmt.Sprintf("%.0f items/s since the start, ETA %s", st.Rate, (time.Duration(st.ETASeconds) * time.Second).Round(time.Second))
				}
				fmt.Fprintf(o.Stdout, "shards: %s, of %d; run %d; %s\n", shards, st.Shards, st.Run, speed)
				if st.FairnessKey != "" {
					prio := "3 (default)"
					if st.Priority != 0 {
						prio = strconv.Itoa(st.Priority)
					}
					fmt.Fprintf(o.Stdout, "priority: %s, fairness key %s\n", prio, st.FairnessKey)
				}
			}
			if live {
				switch st.Canary {
				case pipeline.CanaryRunning:
					fmt.Fprintln(o.Stdout, "canary: running (shard 0 alone; the rest of the batch starts once it passes)")
				case pipeline.CanaryPassed, pipeline.CanaryFailed:
					fmt.Fprintf(o.Stdout, "canary: %s\n", st.Canary)
				}
			}
			if st.Manifest != "" {
				fmt.Fprintf(o.Stdout, "manifest: %s\n", st.Manifest)
			}
			return nil
		})
	f.register(cmd, true)
	return cmd
}

// itemsLine is status's line of counts. A live batch's done includes what
// its unfinished shards reported by heartbeat, which succeeded and failed
// count only once a shard finishes: the line says so instead of showing
// counts that do not add up.
func itemsLine(st batchpipe.Status) string {
	if pending := st.Done - st.Succeeded - st.Failed; pending > 0 {
		return fmt.Sprintf("items: %d/%d done: %d succeeded and %d failed in finished shards, %d more in shards not finished yet", st.Done, st.Items, st.Succeeded, st.Failed, pending)
	}
	return fmt.Sprintf("items: %d/%d done, %d succeeded, %d failed", st.Done, st.Items, st.Succeeded, st.Failed)
}

func newCancelCommand(o *IO) *cobra.Command {
	f := &opsFlags{}
	cmd := subcommand("cancel ID", "Cancel a running batch and its children; it ends with a canceled manifest", cobra.ExactArgs(1),
		func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			id := args[0]
			if err := manifests.ValidateBatchID(id); err != nil {
				return usageError{err}
			}
			// Only a worker writes the canceled manifest; with the embedded
			// server that worker is this process.
			c, err := opsBatchClient(ctx, o, f, id, true)
			if err != nil {
				return err
			}
			defer c.Close()
			b, err := c.Batch(ctx, id)
			if err != nil {
				return inUse(o, err)
			}
			if err := b.Cancel(ctx); err != nil {
				return inUse(o, err)
			}
			fmt.Fprintf(o.Stderr, "cancel requested for batch %s; waiting for its children to stop\n", id)
			res, err := b.Wait(ctx, nil)
			if err != nil {
				return fmt.Errorf("batch %s was canceled but its manifest cannot be read: %w", id, err)
			}
			printSummary(o, c.Store(), res.Manifest, 0)
			return nil
		})
	f.register(cmd, false)
	return cmd
}

func newListCommand(o *IO) *cobra.Command {
	f := &opsFlags{}
	cmd := subcommand("list", "List batches known to the store and to Temporal", cobra.NoArgs,
		func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			c, _, err := opsClient(ctx, o, f, false)
			if err != nil {
				return err
			}
			defer c.Close()
			list := []batchpipe.Status{}
			for st, err := range c.List(ctx) {
				if errors.Is(err, batchpipe.ErrRunningNotListed) {
					fmt.Fprintf(o.Stderr, "note: %v\n", inUse(o, err))
					continue
				}
				if err != nil {
					return err
				}
				if st.Error != "" {
					fmt.Fprintf(o.Stderr, "warning: batch %s: unreadable manifest %s: %s\n", st.BatchID, st.Manifest, st.Error)
				}
				list = append(list, st)
			}
			if f.json {
				enc := json.NewEncoder(o.Stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(list)
			}
			tw := tabwriter.NewWriter(o.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "BATCH\tSTATUS\tITEMS\tFAILED\tSTARTED\tFINISHED")
			for _, s := range list {
				if s.Error != "" {
					s.Status += ": " + s.Error
				}
				fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%s\n", s.BatchID, s.Status, s.Items, s.Failed, fmtTime(s.Started), fmtTime(s.Finished))
			}
			return tw.Flush()
		})
	f.register(cmd, true)
	return cmd
}

func fmtTime(t *time.Time) string {
	if t == nil || t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

func newRedriveCommand(o *IO) *cobra.Command {
	f := &opsFlags{}
	wait := true
	concurrency := 0
	keepSuperseded := false
	cmd := subcommand("redrive ID", "Re-run only the failed (and never-finished) items of a finished batch, in place", cobra.ExactArgs(1),
		func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			start := time.Now()
			id := args[0]
			if err := manifests.ValidateBatchID(id); err != nil {
				return usageError{err}
			}
			if concurrency < 0 {
				return usagef("--concurrency must be at least 1, got %d", concurrency)
			}
			c, err := opsBatchClient(ctx, o, f, id, true)
			if err != nil {
				return err
			}
			defer c.Close()
			m, err := readManifest(ctx, c.Store(), id)
			if errors.Is(err, blobstore.ErrNotFound) {
				return usagef("batch %s has no manifest in %s: it is unknown or still running; only a finished batch can be redriven", id, c.Store().URL())
			}
			if err != nil {
				return err
			}
			b, err := c.Batch(ctx, id)
			if err != nil {
				return inUse(o, err)
			}
			n, err := b.Redrive(ctx, batchpipe.RedriveOptions{Concurrency: concurrency, KeepSuperseded: keepSuperseded})
			if err != nil {
				return inUse(o, err)
			}
			if n == 0 {
				fmt.Fprintf(o.Stderr, "batch %s succeeded: nothing to redrive\n", id)
				printSummary(o, c.Store(), m, 0)
				return nil
			}
			fmt.Fprintf(o.Stderr, "redrive %d of batch %s: re-running %d failed items and %d unfinished\n", n, id, m.Counts.Failed, m.Input.Items-m.Counts.Items)
			if !wait {
				fmt.Fprintln(o.Stdout, id)
				return nil
			}
			res, err := waitWithProgress(ctx, o, b)
			if err != nil && ctx.Err() != nil {
				return exitError{ExitFailed}
			}
			if err != nil {
				return err
			}
			printSummary(o, c.Store(), res.Manifest, time.Since(start))
			return exitError{statusExit(res.Manifest.Status)}
		})
	f.register(cmd, false)
	cmd.Flags().BoolVar(&wait, "wait", true, "wait for the redrive to finish, showing progress")
	cmd.Flags().IntVar(&concurrency, "concurrency", 0, "shards in flight (default: as the batch was started)")
	cmd.Flags().BoolVar(&keepSuperseded, "keep-superseded", false, "keep the result objects the redrive replaces (default: deleted once its manifest is written; gc collects kept ones)")
	registerProcessorEnv(cmd, &f.processorEnv)
	return cmd
}

func newResultsCommand(o *IO) *cobra.Command {
	f := &opsFlags{}
	var failedOnly, verify bool
	var schedule, maxAgeText string
	var outPath string
	cmd := subcommand("results ID|MANIFEST_URL", "Print a finished batch's result lines (JSONL, input order); --failed for failures only; --verify to check every object", cobra.MaximumNArgs(1),
		func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if (schedule == "") == (len(args) == 0) {
				return usagef("give a batch id, a manifest URL, or --schedule NAME")
			}
			var maxAge time.Duration
			if maxAgeText != "" {
				if schedule == "" {
					return usagef("--max-age needs --schedule NAME: it checks the age of a schedule's latest night")
				}
				var err error
				if maxAge, err = parseAge(maxAgeText); err != nil {
					return usagef("--max-age: %v", err)
				}
			}
			var batch *manifests.Batch
			var err error
			if schedule != "" {
				batch, err = openLatest(ctx, o, f, schedule, maxAge, maxAgeText)
			} else {
				batch, err = openBatch(ctx, o, f, args[0])
			}
			if err != nil {
				return err
			}
			defer batch.Close()
			if verify {
				if err := batch.Verify(ctx); err != nil {
					var ve *manifests.VerifyError
					if errors.As(err, &ve) {
						fmt.Fprintf(o.Stderr, "verify failed: %v\n", err)
						return exitError{ExitFailed}
					}
					return err
				}
				m := batch.Manifest
				fmt.Fprintf(o.Stderr, "verified batch %s: %d result objects, %d items, every index once, sizes and sha256 match\n", m.BatchID, len(m.Results), m.Counts.Items)
				if outPath == "" && !failedOnly {
					return nil
				}
			}
			out := o.Stdout
			var file *os.File
			if outPath != "" {
				// Relative to the command's directory, like submit's FILE.
				if !filepath.IsAbs(outPath) && o.Dir != "" {
					outPath = filepath.Join(o.Dir, outPath)
				}
				// Written beside it and renamed at the end: a failed read
				// leaves no partial file, and an existing one untouched.
				file, err = os.CreateTemp(filepath.Dir(outPath), "."+filepath.Base(outPath)+".*.tmp")
				if err != nil {
					return usageError{err}
				}
				defer func() {
					file.Close()
					os.Remove(file.Name()) // gone already once renamed
				}()
				if err := file.Chmod(0o644); err != nil {
					return err
				}
				out = file
			}
			w := &lineWriter{w: bufio.NewWriterSize(out, 1<<16)}
			var n int64
			// A read that fails mid-stream flushes what came before it,
			// whole lines only, and then says why.
			fail := func(err error) error {
				if ferr := w.w.Flush(); ferr != nil {
					return errors.Join(err, ferr)
				}
				return err
			}
			if failedOnly {
				for l, err := range batch.Failures(ctx) {
					if err != nil {
						return fail(err)
					}
					if err := w.write(l); err != nil {
						return err
					}
					n++
				}
			} else {
				for l, err := range batch.Results(ctx) {
					if err != nil {
						return fail(err)
					}
					if err := w.write(l); err != nil {
						return err
					}
					n++
				}
			}
			if err := w.w.Flush(); err != nil {
				return err
			}
			if file != nil {
				if err := file.Close(); err != nil {
					return err
				}
				if err := os.Rename(file.Name(), outPath); err != nil {
					return err
				}
				fmt.Fprintf(o.Stderr, "wrote %d lines to %s\n", n, outPath)
			}
			return nil
		})
	f.register(cmd, false)
	fl := cmd.Flags()
	fl.BoolVar(&failedOnly, "failed", false, "print only the failed items, with their input (resubmit them with submit --from-failures)")
	fl.BoolVar(&verify, "verify", false, "check every listed object (size, sha256, decoding, indexes, counts) first; exit 1 naming the first bad object")
	fl.StringVarP(&outPath, "output", "o", "", "write to `FILE` instead of stdout")
	fl.StringVar(&schedule, "schedule", "", "read the newest finished batch of schedule `NAME` (schedules/NAME/latest.json)")
	fl.StringVar(&maxAgeText, "max-age", "", "with --schedule: exit 1 (printing nothing on stdout) unless the newest finished night's nominal time is at most `AGE` ago (e.g. 26h, 1d12h): a downstream job's freshness check")
	return cmd
}

// lineWriter writes JSON lines through a buffer that it flushes only
// between lines, so output cut short by an error never ends in half a line.
type lineWriter struct {
	w   *bufio.Writer
	buf bytes.Buffer
	enc *json.Encoder
}

func (l *lineWriter) write(v any) error {
	if l.enc == nil {
		l.enc = json.NewEncoder(&l.buf)
		l.enc.SetEscapeHTML(false)
	}
	l.buf.Reset()
	if err := l.enc.Encode(v); err != nil {
		return err
	}
	if l.w.Available() < l.buf.Len() && l.w.Buffered() > 0 {
		if err := l.w.Flush(); err != nil {
			return err
		}
	}
	_, err := l.w.Write(l.buf.Bytes())
	return err
}

// openBatch opens a finished batch by id (in --store) or by manifest URL.
func openBatch(ctx context.Context, o *IO, f *opsFlags, arg string) (*manifests.Batch, error) {
	if strings.Contains(arg, "://") {
		b, err := manifests.OpenURL(ctx, arg)
		if errors.Is(err, blobstore.ErrNotFound) {
			return nil, usageError{err}
		}
		return b, err
	}
	b, err := openBatchStore(ctx, o, f, arg)
	if err != nil {
		return nil, err
	}
	batch, err := manifests.Open(ctx, b, arg)
	if errors.Is(err, blobstore.ErrNotFound) {
		if held, _ := storeHolds(ctx, b, arg); !held {
			if storeURL := temporalStoreOf(ctx, o, f.verbose, arg); storeURL != "" && storeURL != b.URL() {
				return openFollowed(ctx, o, b, arg, storeURL, err)
			}
		}
	}
	if err != nil {
		b.Close()
		if errors.Is(err, blobstore.ErrNotFound) {
			return nil, usageError{err}
		}
		return nil, err
	}
	return batch, nil
}

// openFollowed opens batch id in the store its workflow input names, in
// place of store b that does not hold it (whose error was notFound).
func openFollowed(ctx context.Context, o *IO, b blobstore.Bucket, id, storeURL string, notFound error) (*manifests.Batch, error) {
	from := b.URL()
	b.Close()
	if _, err := resolveStore(o, storeURL); err != nil {
		return nil, followErr(id, storeURL, err)
	}
	nb, err := batchpipe.OpenStore(ctx, storeURL)
	if err != nil {
		return nil, followErr(id, storeURL, err)
	}
	followNote(o, id, storeURL, from)
	batch, err := manifests.Open(ctx, nb, id)
	if err != nil {
		nb.Close()
		if errors.Is(err, blobstore.ErrNotFound) {
			return nil, usageError{err}
		}
		return nil, err
	}
	return batch, nil
}

// openLatest opens the batch a schedule's latest.json points at. With
// maxAge > 0 (given as maxAgeText) it is an error, exit 1, when the schedule
// has no finished night or its newest night's nominal time is longer ago
// than maxAge.
func openLatest(ctx context.Context, o *IO, f *opsFlags, schedule string, maxAge time.Duration, maxAgeText string) (*manifests.Batch, error) {
	if err := manifests.ValidateBatchID(schedule); err != nil {
		return nil, usagef("--schedule: %v", err)
	}
	b, _, err := openStore(ctx, o, f.store)
	if err != nil {
		return nil, err
	}
	latest, err := layout.ReadLatest(ctx, b, schedule)
	if errors.Is(err, blobstore.ErrNotFound) && maxAge > 0 {
		b.Close()
		return nil, fmt.Errorf("schedule %s is stale: it has no finished night in %s (%s is missing), so none is within --max-age %s", schedule, b.URL(), manifests.LatestKey(schedule), maxAgeText)
	}
	if errors.Is(err, blobstore.ErrNotFound) {
		b.Close()
		return nil, usagef("schedule %s has no finished batch in %s yet (%s is missing)", schedule, b.URL(), manifests.LatestKey(schedule))
	}
	if err != nil {
		b.Close()
		return nil, err
	}
	if maxAge > 0 {
		nominal, ok := nominalTime(schedule, latest.BatchID)
		what := "nominal time"
		if !ok { // not a scheduled run's id: its finish is all there is
			nominal, what = latest.FinishedAt, "finish"
		}
		if age := time.Since(nominal); age > maxAge {
			b.Close()
			return nil, fmt.Errorf("schedule %s is stale: its latest night, batch %s (%s), has %s %s, %s ago, over --max-age %s",
				schedule, latest.BatchID, latest.Status, what, nominal.UTC().Format(time.RFC3339), fmtAge(age), maxAgeText)
		}
	}
	fmt.Fprintf(o.Stderr, "schedule %s: latest batch %s (%s, finished %s)\n", schedule, latest.BatchID, latest.Status, latest.FinishedAt.Format(time.RFC3339))
	return manifests.Open(ctx, b, latest.BatchID)
}

func newUploadCommand(o *IO) *cobra.Command {
	var verbose bool
	cmd := subcommand("upload FILE OBJECT_URL", "Copy a local file to a blob store object (e.g. an input for a schedule)", cobra.ExactArgs(2),
		func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			path, target := args[0], args[1]
			if !filepath.IsAbs(path) && o.Dir != "" {
				path = filepath.Join(o.Dir, path)
			}
			file, err := os.Open(path)
			if err != nil {
				return usageError{err}
			}
			defer file.Close()
			if blobstore.Redact(target) != target {
				return usagef("object URL %s must not contain credentials: set them in the environment", blobstore.Redact(target))
			}
			storeURL, key, err := blobstore.SplitObjectURL(target)
			if err != nil {
				return usageError{err}
			}
			b, err := blobstore.Open(ctx, storeURL)
			if err != nil {
				return usageError{err}
			}
			defer b.Close()
			if err := b.Put(ctx, key, file); err != nil {
				return err
			}
			a, err := b.Stat(ctx, key)
			if err != nil {
				return err
			}
			fmt.Fprintf(o.Stdout, "uploaded %s to %s (%d bytes)\n", args[0], blobstore.Redact(target), a.Size)
			return nil
		})
	cmd.Flags().BoolVarP(&verbose, "verbose", "v", false, "log debug details")
	return cmd
}

// openBatchStore checks a batch id given on the command line and opens the
// store the batch lives in.
func openBatchStore(ctx context.Context, o *IO, f *opsFlags, id string) (blobstore.Bucket, error) {
	if err := manifests.ValidateBatchID(id); err != nil {
		return nil, usageError{err}
	}
	b, _, err := openStore(ctx, o, f.store)
	return b, err
}

// nominalTime is the nominal time in a scheduled batch id,
// <schedule>-20261125T020000Z (pipeline.ScheduledBatchID).
func nominalTime(schedule, batchID string) (time.Time, bool) {
	s, ok := strings.CutPrefix(batchID, schedule+"-")
	if !ok {
		return time.Time{}, false
	}
	t, err := time.Parse("20060102T150405Z", s)
	return t, err == nil
}

// fmtAge renders an age to the minute, with days: 2d3h4m, 25h0m as 1d1h0m.
func fmtAge(d time.Duration) string {
	d = d.Round(time.Minute)
	days := d / (24 * time.Hour)
	rest := strings.TrimSuffix((d - days*24*time.Hour).String(), "0s")
	if days == 0 && rest == "" {
		return "0m"
	}
	if days == 0 {
		return rest
	}
	return fmt.Sprintf("%dd%s", days, rest)
}
