package cli

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/batchpipe/batchpipe"
	"github.com/batchpipe/batchpipe/blobstore"
	"github.com/batchpipe/batchpipe/layout"
	"github.com/batchpipe/batchpipe/manifests"
)

// maxAgeDays bounds --older-than: 100 years (of 365.25 days). Anything
// longer is a typo, and far longer ones would overflow a time.Duration.
const maxAgeDays = 36525

// parseAge reads a duration with a "d" (days) unit allowed: 30d, 12h, 1d12h.
// It refuses zero, negative and absurd ages (over 100 years) rather than
// letting days × 24h overflow and wrap; errors quote the whole value.
func parseAge(value string) (time.Duration, error) {
	const maxAge = maxAgeDays * 24 * time.Hour
	bad := func(format string, args ...any) error {
		return fmt.Errorf("bad age %q: %s; want e.g. 30d, 36h or 1d12h", value, fmt.Sprintf(format, args...))
	}
	s := value
	days := time.Duration(0)
	if i := strings.Index(s, "d"); i >= 0 {
		n, err := strconv.ParseInt(s[:i], 10, 64)
		switch {
		case errors.Is(err, strconv.ErrRange) && strings.HasPrefix(s, "-"):
			return 0, bad("must be positive")
		case errors.Is(err, strconv.ErrRange):
			return 0, bad("more than 100 years")
		case err != nil:
			return 0, bad("%q is not a whole number of days", s[:i])
		case n < 0:
			return 0, bad("must be positive")
		case n > maxAgeDays: // checked before multiplying: no overflow
			return 0, bad("more than 100 years")
		}
		days, s = time.Duration(n)*24*time.Hour, s[i+1:]
	}
	d := time.Duration(0)
	if s != "" {
		var err error
		if d, err = time.ParseDuration(s); err != nil {
			// ParseDuration also refuses what does not fit a Duration.
			return 0, bad("%v", err)
		}
	}
	switch {
	case d < 0:
		return 0, bad("must be positive")
	case d > maxAge-days: // checked before adding: no overflow
		return 0, bad("more than 100 years")
	case days+d == 0:
		return 0, bad("must be positive")
	}
	return days + d, nil
}

// gcBatch is one batch's objects in the store.
type gcBatch struct {
	id       string
	keys     []blobstore.Attributes
	manifest *manifests.Manifest
}

func newGCCommand(o *IO) *cobra.Command {
	f := &opsFlags{}
	var olderThan string
	var dryRun, yes, keepInputs bool
	cmd := subcommand("gc --older-than AGE", "Delete the objects of finished batches older than AGE (never running batches, never a schedule's latest)", cobra.NoArgs,
		func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			if olderThan == "" {
				return usagef("--older-than is required, e.g. --older-than 30d")
			}
			age, err := parseAge(olderThan)
			if err != nil {
				return usageError{err}
			}
			interactive := false
			if in, ok := o.Stdin.(*os.File); ok && term.IsTerminal(int(in.Fd())) {
				interactive = true
			}
			if !yes && !interactive && !dryRun {
				if cmd.Flags().Changed("dry-run") {
					return usagef("--dry-run=false needs --yes when stdin is not a terminal")
				}
				dryRun = true
				fmt.Fprintln(o.Stderr, "stdin is not a terminal and --yes was not given: dry run, nothing is deleted")
			}
			b, _, err := openStore(ctx, o, f.store)
			if err != nil {
				return err
			}
			defer b.Close()
			cutoff := time.Now().Add(-age)
			victims, kept, err := gcCandidates(ctx, o, f, b, cutoff)
			if err != nil {
				return err
			}
			for _, k := range kept {
				fmt.Fprintf(o.Stderr, "keeping %s\n", k)
			}
			var total, objects int64
			for _, v := range victims {
				for _, a := range v.keys {
					if keepInputs && strings.Contains(a.Key, "/input/") {
						continue
					}
					total += a.Size
					objects++
				}
			}
			verb := "deleted"
			if dryRun {
				verb = "would delete"
			}
			if len(victims) == 0 {
				fmt.Fprintf(o.Stdout, "no finished batch is older than %s\n", olderThan)
				return nil
			}
			if !dryRun && !yes && interactive {
				fmt.Fprintf(o.Stderr, "delete %d batches (%d objects, %d bytes)? [y/N] ", len(victims), objects, total)
				answer, _ := bufio.NewReader(o.Stdin).ReadString('\n')
				if !strings.HasPrefix(strings.ToLower(strings.TrimSpace(answer)), "y") {
					return usagef("nothing deleted")
				}
			}
			for _, v := range victims {
				var n, size int64
				if !dryRun {
					if err := deleteBatch(ctx, b, v, keepInputs); err != nil {
						return fmt.Errorf("deleting batch %s: %w", v.id, err)
					}
				}
				for _, a := range v.keys {
					if !(keepInputs && strings.Contains(a.Key, "/input/")) {
						n++
						size += a.Size
					}
				}
				fmt.Fprintf(o.Stdout, "%s %s: %d objects, %d bytes (finished %s)\n", verb, v.id, n, size, v.manifest.FinishedAt.Format(time.RFC3339))
			}
			fmt.Fprintf(o.Stdout, "%s %d batches: %d objects, %d bytes\n", verb, len(victims), objects, total)
			return nil
		})
	f.register(cmd, false)
	fl := cmd.Flags()
	fl.StringVar(&olderThan, "older-than", "", "delete batches that finished longer ago than `AGE` (e.g. 30d, 36h)")
	fl.BoolVar(&dryRun, "dry-run", false, "only print what would be deleted (the default when stdin is not a terminal and --yes is not given)")
	fl.BoolVar(&yes, "yes", false, "delete without asking")
	fl.BoolVar(&keepInputs, "keep-inputs", false, "keep the batches' staged inputs (input/)")
	return cmd
}

// gcCandidates groups the store's batch objects by batch and returns the
// finished batches older than cutoff, and why others were kept.
func gcCandidates(ctx context.Context, o *IO, f *opsFlags, b blobstore.Bucket, cutoff time.Time) ([]gcBatch, []string, error) {
	protected := map[string]string{} // batch id → schedule whose latest.json names it
	for l, err := range layout.Latests(ctx, b) {
		if err != nil {
			return nil, nil, err
		}
		protected[l.BatchID] = l.Schedule
	}
	byID := map[string]*gcBatch{}
	var ids []string
	for bo, err := range layout.Batches(ctx, b) {
		if err != nil {
			return nil, nil, err
		}
		byID[bo.ID] = &gcBatch{id: bo.ID, keys: bo.Objects}
		ids = append(ids, bo.ID)
	}
	slices.Sort(ids)
	var victims []gcBatch
	var kept []string
	var conn *batchpipe.Client
	defer func() {
		if conn != nil {
			conn.Close()
		}
	}()
	for _, id := range ids {
		g := byID[id]
		m, err := readManifest(ctx, b, id)
		if err != nil {
			continue // no manifest: running, staged, collected with --keep-inputs, or being written
		}
		if !m.FinishedAt.Before(cutoff) {
			continue
		}
		if s, ok := protected[id]; ok {
			kept = append(kept, fmt.Sprintf("%s: schedules/%s/latest.json points at it", id, s))
			continue
		}
		// A finished batch may be running again (redrive): ask Temporal.
		if conn == nil {
			if conn, _, err = opsClient(ctx, o, f, false); err != nil {
				return nil, nil, fmt.Errorf("cannot ask Temporal which batches are running, so nothing is deleted: %w", err)
			}
		}
		tc, err := conn.Temporal(ctx)
		if err != nil {
			return nil, nil, fmt.Errorf("cannot ask Temporal which batches are running, so nothing is deleted: %w", inUse(o, err))
		}
		if desc, err := tc.DescribeWorkflowExecution(ctx, id, ""); err == nil && desc.WorkflowExecutionInfo.GetCloseTime() == nil {
			kept = append(kept, fmt.Sprintf("%s: running (a redrive)", id))
			continue
		}
		g.manifest = &m
		victims = append(victims, *g)
	}
	return victims, kept, nil
}

// deleteBatch deletes a batch's objects, the manifest last, so a batch
// half-deleted by an interrupted gc still reads as finished-but-damaged
// rather than vanishing silently.
func deleteBatch(ctx context.Context, b blobstore.Bucket, g gcBatch, keepInputs bool) error {
	manifestKey := manifests.ManifestKey(g.id)
	if keepInputs {
		// What is left is the input: say so, so the batch does not read as
		// staged-but-never-run.
		if err := layout.MarkCollected(ctx, b, g.id, "input/"); err != nil {
			return err
		}
	}
	for _, a := range g.keys {
		if a.Key == manifestKey || keepInputs && (strings.Contains(a.Key, "/input/") || a.Key == manifests.CollectedKey(g.id)) {
			continue
		}
		if err := b.Delete(ctx, a.Key); err != nil {
			return err
		}
	}
	return b.Delete(ctx, manifestKey)
}
