package cli

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/api/workflowservice/v1"

	"github.com/batchpipe/batchpipe/blobstore"
	"github.com/batchpipe/batchpipe/internal/devserver"
	"github.com/batchpipe/batchpipe/manifests"
	"github.com/batchpipe/batchpipe/pipeline"
)

// opsFlags are shared by the commands that act on existing batches.
type opsFlags struct {
	store     string
	taskQueue string
	json      bool
	verbose   bool
}

func (f *opsFlags) register(cmd *cobra.Command, withJSON bool) {
	fl := cmd.Flags()
	fl.StringVar(&f.store, "store", "", "blob store URL (default $BATCHPIPE_STORE, else file://$PWD/.batchpipe/blobs)")
	fl.StringVar(&f.taskQueue, "task-queue", pipeline.DefaultTaskQueue, "Temporal task queue the workers poll")
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

// batchState is what status and list report for one batch.
type batchState struct {
	BatchID    string     `json:"batch_id"`
	Status     string     `json:"status"` // running, staged, or a manifest status
	Items      int64      `json:"items"`
	Done       int64      `json:"done"`
	Succeeded  int64      `json:"succeeded"`
	Failed     int64      `json:"failed"`
	Shards     int        `json:"shards,omitempty"`
	InFlight   int        `json:"shards_in_flight,omitempty"`
	Run        int        `json:"run,omitempty"`
	Rate       float64    `json:"items_per_second,omitempty"`
	ETASeconds float64    `json:"eta_seconds,omitempty"`
	Started    *time.Time `json:"started_at,omitempty"`
	Finished   *time.Time `json:"finished_at,omitempty"`
	Manifest   string     `json:"manifest,omitempty"`
	Error      string     `json:"error,omitempty"` // why list could not read the manifest
}

func fromManifest(m manifests.Manifest, key string) batchState {
	s, f := m.StartedAt, m.FinishedAt
	return batchState{BatchID: m.BatchID, Status: m.Status, Items: m.Input.Items, Done: m.Counts.Items,
		Succeeded: m.Counts.Succeeded, Failed: m.Counts.Failed, Shards: m.Input.Shards, Started: &s, Finished: &f, Manifest: key}
}

func fromProgress(p pipeline.Progress) batchState {
	st := batchState{BatchID: p.BatchID, Status: "running", Items: p.Items, Done: p.Done, Succeeded: p.Succeeded,
		Failed: p.Failed, Shards: p.Shards, InFlight: p.InFlight, Run: p.Run}
	if !p.StartedAt.IsZero() {
		s := p.StartedAt
		st.Started = &s
		if el := time.Since(s).Seconds(); el > 0 && p.Done > 0 {
			st.Rate = float64(p.Done) / el
			st.ETASeconds = float64(p.Items-p.Done) / st.Rate
		}
	}
	return st
}

// opsConnect connects without running a worker: status and cancel must not
// start processing a batch of the embedded server.
func opsConnect(ctx context.Context, o *IO, f *opsFlags) (*connection, error) {
	conn, err := connect(ctx, o, f.taskQueue, newLogger(o.Stderr, f.verbose), false)
	if errors.Is(err, devserver.ErrStateDirInUse) {
		return nil, fmt.Errorf("the embedded server in %s is in use by a running submit; its batch is running there (ask again when it ends, or use `worker --dev`)", o.stateDir())
	}
	return conn, err
}

// lookupBatch finds a batch by id: its manifest if finished, else its
// progress from Temporal. An id known to neither is a usage error.
func lookupBatch(ctx context.Context, o *IO, f *opsFlags, b blobstore.Bucket, id string) (batchState, error) {
	if err := manifests.ValidateBatchID(id); err != nil {
		return batchState{}, usageError{err}
	}
	conn, cerr := opsConnect(ctx, o, f)
	if cerr == nil {
		defer conn.Close()
		// Ask for progress only while the batch runs: a query on a closed
		// workflow waits for a worker to replay it, for nothing.
		if desc, derr := conn.Client.DescribeWorkflowExecution(ctx, id, ""); derr == nil && desc.WorkflowExecutionInfo.GetCloseTime() == nil {
			qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			p, err := pipeline.QueryProgress(qctx, conn.Client, id)
			cancel()
			if err == nil {
				return fromProgress(p), nil
			}
			// Started, but no worker answers (in embedded mode nothing runs
			// a batch once its submit exited): running, progress unknown.
			st := batchState{BatchID: id, Status: "running"}
			if staged, err := pipeline.ReadStaged(ctx, b, id); err == nil {
				st.Items, st.Shards = staged.Items, staged.Shards
			}
			return st, nil
		}
	}
	m, err := readManifest(ctx, b, id)
	if err == nil {
		return fromManifest(m, blobstore.Prefix(b)+manifests.ManifestKey(id)), nil
	}
	if !errors.Is(err, blobstore.ErrNotFound) {
		return batchState{}, err
	}
	if st, err := pipeline.ReadStaged(ctx, b, id); err == nil {
		return batchState{BatchID: id, Status: "staged", Items: st.Items, Shards: st.Shards}, nil
	}
	if cerr != nil {
		return batchState{}, fmt.Errorf("batch %s has no manifest in %s and Temporal cannot be asked: %w", id, b.URL(), cerr)
	}
	return batchState{}, usagef("unknown batch %q: no such batch in %s or on Temporal", id, b.URL())
}

func newStatusCommand(o *IO) *cobra.Command {
	f := &opsFlags{}
	cmd := subcommand("status ID", "Show a batch's progress (running) or its manifest's status and counts (finished)", cobra.ExactArgs(1),
		func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			b, _, err := openStore(ctx, o, f.store)
			if err != nil {
				return err
			}
			defer b.Close()
			st, err := lookupBatch(ctx, o, f, b, args[0])
			if err != nil {
				return err
			}
			if f.json {
				enc := json.NewEncoder(o.Stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(st)
			}
			fmt.Fprintf(o.Stdout, "batch %s: %s\n", st.BatchID, st.Status)
			fmt.Fprintf(o.Stdout, "items: %d/%d done, %d succeeded, %d failed\n", st.Done, st.Items, st.Succeeded, st.Failed)
			if st.Status == "running" && st.Run == 0 {
				fmt.Fprintf(o.Stdout, "progress: unknown, no worker answered (is a worker running? with the embedded server a batch runs only while its submit runs: run submit again with --batch-id %s)\n", st.BatchID)
			} else if st.Status == "running" {
				fmt.Fprintf(o.Stdout, "shards: %d in flight of %d, run %d, %.0f items/s, ETA %s\n",
					st.InFlight, st.Shards, st.Run, st.Rate, (time.Duration(st.ETASeconds) * time.Second).String())
			}
			if st.Manifest != "" {
				fmt.Fprintf(o.Stdout, "manifest: %s\n", st.Manifest)
			}
			return nil
		})
	f.register(cmd, true)
	return cmd
}

func newCancelCommand(o *IO) *cobra.Command {
	f := &opsFlags{}
	cmd := subcommand("cancel ID", "Cancel a running batch and its children; it ends with a canceled manifest", cobra.ExactArgs(1),
		func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			id := args[0]
			b, err := openBatchStore(ctx, o, f, id)
			if err != nil {
				return err
			}
			defer b.Close()
			conn, err := opsConnect(ctx, o, f)
			if err != nil {
				return err
			}
			defer conn.Close()
			desc, err := conn.Client.DescribeWorkflowExecution(ctx, id, "")
			var nf *serviceerror.NotFound
			if errors.As(err, &nf) {
				return usagef("unknown batch %q: no such workflow on Temporal", id)
			}
			if err != nil {
				return err
			}
			if desc.WorkflowExecutionInfo.GetCloseTime() != nil {
				return usagef("batch %s is not running (it ended as %s)", id, strings.ToLower(desc.WorkflowExecutionInfo.GetStatus().String()))
			}
			if err := conn.Client.CancelWorkflow(ctx, id, ""); err != nil {
				return err
			}
			fmt.Fprintf(o.Stderr, "cancel requested for batch %s; waiting for its children to stop\n", id)
			if conn.Embedded {
				// Only a worker writes the canceled manifest; with the
				// embedded server that worker is this process.
				conn.Close()
				conn, err = connect(ctx, o, f.taskQueue, newLogger(o.Stderr, f.verbose), true)
				if err != nil {
					return err
				}
				defer conn.Close()
			}
			_ = conn.Client.GetWorkflow(ctx, id, "").Get(ctx, nil)
			m, err := readManifest(ctx, b, id)
			if err != nil {
				return fmt.Errorf("batch %s was canceled but its manifest cannot be read: %w", id, err)
			}
			printSummary(o, b, m, 0)
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
			b, _, err := openStore(ctx, o, f.store)
			if err != nil {
				return err
			}
			defer b.Close()
			states := map[string]batchState{}
			// Finished and staged batches, from the store.
			for a, err := range b.List(ctx, "batches/") {
				if err != nil {
					return err
				}
				id, rest, _ := strings.Cut(strings.TrimPrefix(a.Key, "batches/"), "/")
				switch rest {
				case "manifest.json":
					m, err := readManifest(ctx, b, id)
					if err != nil {
						if ctx.Err() != nil {
							return err
						}
						if errors.Is(err, blobstore.ErrNotFound) {
							continue // deleted since listed (gc deletes the manifest last)
						}
						// One bad manifest must not hide the other batches: flag it, exit 0.
						fmt.Fprintf(o.Stderr, "warning: batch %s: unreadable manifest: %v\n", id, err)
						reason := err
						if u := errors.Unwrap(err); u != nil {
							reason = u // without the key and store, which the row and stderr give
						}
						states[id] = batchState{BatchID: id, Status: "unreadable manifest", Error: reason.Error(), Manifest: blobstore.Prefix(b) + a.Key}
						continue
					}
					states[id] = fromManifest(m, blobstore.Prefix(b)+a.Key)
				case "collected.json":
					states[id] = batchState{BatchID: id, Status: "collected"}
				case "input/index.json":
					if _, ok := states[id]; !ok {
						if st, err := pipeline.ReadStaged(ctx, b, id); err == nil {
							states[id] = batchState{BatchID: id, Status: "staged", Items: st.Items, Shards: st.Shards}
						}
					}
				}
			}
			// Running batches, from Temporal.
			if conn, err := opsConnect(ctx, o, f); err != nil {
				fmt.Fprintf(o.Stderr, "note: running batches not listed: %v\n", err)
			} else {
				defer conn.Close()
				resp, err := conn.Client.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{
					Query: fmt.Sprintf("WorkflowType = '%s' AND ExecutionStatus = 'Running'", pipeline.BatchWorkflowName),
				})
				if err != nil {
					fmt.Fprintf(o.Stderr, "note: running batches not listed: %v\n", err)
				} else {
					for _, e := range resp.Executions {
						id := e.GetExecution().GetWorkflowId()
						qctx, cancel := context.WithTimeout(ctx, 3*time.Second)
						p, err := pipeline.QueryProgress(qctx, conn.Client, id)
						cancel()
						if err != nil {
							// No worker answers: keep the size the store knows.
							prev := states[id]
							states[id] = batchState{BatchID: id, Status: "running", Items: prev.Items, Shards: prev.Shards}
							continue
						}
						states[id] = fromProgress(p)
					}
				}
			}
			ids := slices.Sorted(func(yield func(string) bool) {
				for id := range states {
					if !yield(id) {
						return
					}
				}
			})
			if f.json {
				var list []batchState
				for _, id := range ids {
					list = append(list, states[id])
				}
				enc := json.NewEncoder(o.Stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(list)
			}
			tw := tabwriter.NewWriter(o.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "BATCH\tSTATUS\tITEMS\tFAILED\tSTARTED\tFINISHED")
			for _, id := range ids {
				s := states[id]
				if s.Error != "" {
					s.Status += ": " + s.Error
				}
				fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%s\n", id, s.Status, s.Items, s.Failed, fmtTime(s.Started), fmtTime(s.Finished))
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
	cmd := subcommand("redrive ID", "Re-run only the failed (and never-finished) items of a finished batch, in place", cobra.ExactArgs(1),
		func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			start := time.Now()
			id := args[0]
			b, err := openBatchStore(ctx, o, f, id)
			if err != nil {
				return err
			}
			defer b.Close()
			m, err := readManifest(ctx, b, id)
			if errors.Is(err, blobstore.ErrNotFound) {
				return usagef("batch %s has no manifest in %s: it is unknown or still running; only a finished batch can be redriven", id, b.URL())
			}
			if err != nil {
				return err
			}
			if m.Status == manifests.StatusSucceeded {
				fmt.Fprintf(o.Stderr, "batch %s succeeded: nothing to redrive\n", id)
				printSummary(o, b, m, 0)
				return nil
			}
			spec, err := pipeline.ReadSpec(ctx, b, id)
			if err != nil {
				return fmt.Errorf("batch %s cannot be redriven: its start parameters (%s) cannot be read: %w", id, manifests.BatchSpecKey(id), err)
			}
			conn, err := connect(ctx, o, f.taskQueue, newLogger(o.Stderr, f.verbose), true)
			if err != nil {
				return err
			}
			defer conn.Close()
			if concurrency > 0 {
				spec.Options.Concurrency = concurrency
			}
			n := m.Redrives + 1
			run, err := pipeline.StartRedrive(ctx, conn.Client, f.taskQueue, spec, n)
			if err != nil {
				return fmt.Errorf("redriving batch %s: %w", id, err)
			}
			fmt.Fprintf(o.Stderr, "redrive %d of batch %s: re-running %d failed items and %d unfinished\n", n, id, m.Counts.Failed, m.Input.Items-m.Counts.Items)
			if !wait {
				fmt.Fprintln(o.Stdout, id)
				return nil
			}
			if _, err := waitWithProgress(ctx, o, conn.Client, run, spec.Items); err != nil && ctx.Err() != nil {
				return exitError{ExitFailed}
			}
			m, err = readManifest(context.WithoutCancel(ctx), b, id)
			if err != nil {
				return err
			}
			printSummary(o, b, m, time.Since(start))
			return exitError{statusExit(m.Status)}
		})
	f.register(cmd, false)
	cmd.Flags().BoolVar(&wait, "wait", true, "wait for the redrive to finish, showing progress")
	cmd.Flags().IntVar(&concurrency, "concurrency", 0, "shards in flight (default: as the batch was started)")
	return cmd
}

func newResultsCommand(o *IO) *cobra.Command {
	f := &opsFlags{}
	var failedOnly, verify bool
	var schedule string
	var outPath string
	cmd := subcommand("results ID|MANIFEST_URL", "Print a finished batch's result lines (JSONL, input order); --failed for failures only; --verify to check every object", cobra.MaximumNArgs(1),
		func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if (schedule == "") == (len(args) == 0) {
				return usagef("give a batch id, a manifest URL, or --schedule NAME")
			}
			var batch *manifests.Batch
			var err error
			if schedule != "" {
				batch, err = openLatest(ctx, o, f, schedule)
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
			w := bufio.NewWriterSize(out, 1<<16)
			enc := json.NewEncoder(w)
			enc.SetEscapeHTML(false)
			var n int64
			if failedOnly {
				for l, err := range batch.Failures(ctx) {
					if err != nil {
						return err
					}
					if err := enc.Encode(l); err != nil {
						return err
					}
					n++
				}
			} else {
				for l, err := range batch.Results(ctx) {
					if err != nil {
						return err
					}
					if err := enc.Encode(l); err != nil {
						return err
					}
					n++
				}
			}
			if err := w.Flush(); err != nil {
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
	fl.BoolVar(&failedOnly, "failed", false, "print only the failed items, with their input (resubmit with `submit --from-failures`)")
	fl.BoolVar(&verify, "verify", false, "check every listed object (size, sha256, decoding, indexes, counts) first; exit 1 naming the first bad object")
	fl.StringVarP(&outPath, "output", "o", "", "write to this file instead of stdout")
	fl.StringVar(&schedule, "schedule", "", "read the newest finished batch of this schedule (schedules/NAME/latest.json)")
	return cmd
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
	if err != nil {
		b.Close()
		if errors.Is(err, blobstore.ErrNotFound) {
			return nil, usageError{err}
		}
		return nil, err
	}
	return batch, nil
}

// openLatest opens the batch a schedule's latest.json points at.
func openLatest(ctx context.Context, o *IO, f *opsFlags, schedule string) (*manifests.Batch, error) {
	if err := manifests.ValidateBatchID(schedule); err != nil {
		return nil, usagef("--schedule: %v", err)
	}
	b, _, err := openStore(ctx, o, f.store)
	if err != nil {
		return nil, err
	}
	data, err := blobstore.ReadAll(ctx, b, manifests.LatestKey(schedule))
	if errors.Is(err, blobstore.ErrNotFound) {
		b.Close()
		return nil, usagef("schedule %s has no finished batch in %s yet (%s is missing)", schedule, b.URL(), manifests.LatestKey(schedule))
	}
	if err != nil {
		b.Close()
		return nil, err
	}
	var latest manifests.Latest
	if err := json.Unmarshal(data, &latest); err != nil {
		b.Close()
		return nil, fmt.Errorf("%s: %w", manifests.LatestKey(schedule), err)
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
