package cli

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"
	"golang.org/x/term"

	"github.com/batchpipe/batchpipe"
	"github.com/batchpipe/batchpipe/blobstore"
	"github.com/batchpipe/batchpipe/layout"
	"github.com/batchpipe/batchpipe/manifests"
	"github.com/batchpipe/batchpipe/pipeline"
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

// gcLeftover is a group of objects gc deletes from a batch it keeps (or,
// for temp files, from the store's directory): superseded or uncommitted
// result objects, a staged input no workflow claims, a crash's temp file.
type gcLeftover struct {
	kind    string // leftoverSuperseded, leftoverStaged, leftoverTemp
	batchID string // "" for temp files
	what    string // printed: a key, a staging directory, a file
	why     string
	keys    []blobstore.Attributes // objects to delete, in order
	path    string                 // a temp file's path on disk
	size    int64
}

const (
	leftoverSuperseded = "superseded"
	leftoverStaged     = "staged input never run"
	leftoverTemp       = "temp file"
)

// fileTmpPrefix starts the names of the file store's files being written
// (blobstore/file.go's tmpPrefix; TestGCTempPrefix checks they agree): a
// crash between create and rename leaves one behind, which List never shows.
const fileTmpPrefix = ".batchpipe-tmp-"

const gcLong = `Delete what the store no longer needs, all of it older than AGE:

  - finished batches (those with a manifest) that finished longer ago than
    AGE: inputs, results, failures, receipts, and the manifest last;
  - in the batches it keeps, result objects and shard parts (results/ and
    shards/) that the manifest does not list and no receipt names — those a
    redrive superseded (results/000000.jsonl.zst once results/000000.r1.jsonl.zst
    replaced it) or a canceled shard never committed — and the checkpoint
    parts (parts/) of shards that never finished, last written longer ago
    than AGE;
  - staged inputs no batch runs (batches/<id>/input/s-<hex>/ of a submit killed
    between staging and start): a directory the batch's spec (batch.json)
    does not name, and, when the batch has no spec, that no workflow of
    the id on Temporal names; last written longer ago than AGE;
  - with a file:// store, the temp files (.batchpipe-tmp-*) of writes a
    crash interrupted, older than AGE.

It never touches a batch without a manifest (running or staged) except its
unclaimed staging directories, a batch running on Temporal (a redrive; if
Temporal cannot be asked, gc deletes nothing), or the batch a schedule's
latest.json points at (its superseded objects excepted). Without --yes it
asks on a terminal, and is a dry run otherwise (--dry-run lists all of it).`

func newGCCommand(o *IO) *cobra.Command {
	f := &opsFlags{}
	var olderThan string
	var dryRun, yes, keepInputs bool
	cmd := subcommand("gc --older-than AGE", "Delete finished batches older than AGE, superseded results, unclaimed staged inputs and crash temp files (never running batches, never a schedule's latest)", cobra.NoArgs,
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
			b, storeURL, err := openStore(ctx, o, f.store)
			if err != nil {
				return err
			}
			defer b.Close()
			cutoff := time.Now().Add(-age)
			plan, err := gcCandidates(ctx, o, f, b, cutoff)
			if err != nil {
				return err
			}
			temps, err := gcTempFiles(storeURL, cutoff)
			if err != nil {
				return err
			}
			plan.leftovers = append(plan.leftovers, temps...)
			if keepInputs {
				plan.leftovers = slices.DeleteFunc(plan.leftovers, func(l gcLeftover) bool { return l.kind == leftoverStaged })
			}
			for _, k := range plan.kept {
				fmt.Fprintf(o.Stderr, "keeping %s\n", k)
			}
			victims := plan.victims
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
			var leftBytes, leftObjects int64
			for _, l := range plan.leftovers {
				leftBytes += l.size
				leftObjects += int64(max(1, len(l.keys)))
			}
			verb := "deleted"
			if dryRun {
				verb = "would delete"
			}
			if len(victims) == 0 && len(plan.leftovers) == 0 {
				fmt.Fprintf(o.Stdout, "no finished batch is older than %s, and nothing else is to collect\n", olderThan)
				return nil
			}
			if !dryRun && !yes && interactive {
				fmt.Fprintf(o.Stderr, "delete %d batches (%d objects, %d bytes) and %d other objects (%d bytes)? [y/N] ",
					len(victims), objects, total, leftObjects, leftBytes)
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
			if len(victims) > 0 {
				fmt.Fprintf(o.Stdout, "%s %d batches: %d objects, %d bytes\n", verb, len(victims), objects, total)
			}
			counts := map[string]int{}
			for _, l := range plan.leftovers {
				if !dryRun {
					if err := deleteLeftover(ctx, b, l); err != nil {
						return fmt.Errorf("deleting %s %s: %w", l.kind, l.what, err)
					}
				}
				counts[l.kind]++
				objs := "1 object"
				if len(l.keys) > 1 {
					objs = fmt.Sprintf("%d objects", len(l.keys))
				}
				fmt.Fprintf(o.Stdout, "%s %s %s: %s, %d bytes (%s)\n", verb, l.kind, l.what, objs, l.size, l.why)
			}
			if len(plan.leftovers) > 0 {
				var parts []string
				for _, k := range []struct{ kind, plural string }{{leftoverSuperseded, "superseded objects"},
					{leftoverStaged, "staged inputs never run"}, {leftoverTemp, "temp files"}} {
					if n := counts[k.kind]; n == 1 {
						parts = append(parts, "1 "+k.kind)
					} else if n > 1 {
						parts = append(parts, fmt.Sprintf("%d %s", n, k.plural))
					}
				}
				fmt.Fprintf(o.Stdout, "%s %s: %d objects, %d bytes\n", verb, strings.Join(parts, ", "), leftObjects, leftBytes)
			}
			return nil
		})
	cmd.Long = gcLong
	f.register(cmd, false)
	fl := cmd.Flags()
	fl.StringVar(&olderThan, "older-than", "", "delete batches that finished, and leftovers last written, longer ago than `AGE` (e.g. 30d, 36h)")
	fl.BoolVar(&dryRun, "dry-run", false, "only print what would be deleted (the default when stdin is not a terminal and --yes is not given)")
	fl.BoolVar(&yes, "yes", false, "delete without asking")
	fl.BoolVar(&keepInputs, "keep-inputs", false, "keep the finished batches' staged inputs (input/)")
	return cmd
}

// gcPlan is what gc deletes, and why it keeps what it keeps.
type gcPlan struct {
	victims   []gcBatch
	leftovers []gcLeftover
	kept      []string
}

// gcCandidates groups the store's batch objects by batch and returns the
// finished batches older than cutoff, the leftovers of the others, and
// why some were kept.
func gcCandidates(ctx context.Context, o *IO, f *opsFlags, b blobstore.Bucket, cutoff time.Time) (gcPlan, error) {
	var plan gcPlan
	protected := map[string]string{} // batch id → schedule whose latest.json names it
	for l, err := range layout.Latests(ctx, b) {
		if err != nil {
			return plan, err
		}
		protected[l.BatchID] = l.Schedule
	}
	var batches []layout.BatchObjects
	for bo, err := range layout.Batches(ctx, b) {
		if err != nil {
			return plan, err
		}
		batches = append(batches, bo)
	}
	slices.SortFunc(batches, func(x, y layout.BatchObjects) int { return strings.Compare(x.ID, y.ID) })
	var conn *batchpipe.Client
	defer func() {
		if conn != nil {
			conn.Close()
		}
	}()
	// temporal asks Temporal, connecting at the first question: gc deletes
	// nothing it cannot ask about.
	temporal := func() (client.Client, error) {
		if conn == nil {
			var err error
			if conn, _, err = opsClient(ctx, o, f, false); err != nil {
				conn = nil
				return nil, fmt.Errorf("cannot ask Temporal which batches are running, so nothing is deleted: %w", err)
			}
		}
		tc, err := conn.Temporal(ctx)
		if err != nil {
			return nil, fmt.Errorf("cannot ask Temporal which batches are running, so nothing is deleted: %w", inUse(o, err))
		}
		return tc, nil
	}
	running := func(id string) (bool, error) {
		tc, err := temporal()
		if err != nil {
			return false, err
		}
		desc, err := tc.DescribeWorkflowExecution(ctx, id, "")
		return err == nil && desc.WorkflowExecutionInfo.GetCloseTime() == nil, nil
	}
	for _, bo := range batches {
		id := bo.ID
		staged, err := gcStaged(ctx, b, bo, cutoff, temporal)
		if err != nil {
			return plan, err
		}
		m, err := readManifest(ctx, b, id)
		if err != nil {
			// No manifest: running, staged, collected with --keep-inputs,
			// or being written. Only its unclaimed staging directories go.
			plan.leftovers = append(plan.leftovers, staged...)
			continue
		}
		if m.FinishedAt.Before(cutoff) {
			if s, ok := protected[id]; ok {
				plan.kept = append(plan.kept, fmt.Sprintf("%s: schedules/%s/latest.json points at it", id, s))
			} else {
				// A finished batch may be running again (redrive): ask Temporal.
				run, err := running(id)
				if err != nil {
					return plan, err
				}
				if run {
					plan.kept = append(plan.kept, fmt.Sprintf("%s: running (a redrive)", id))
					continue
				}
				plan.victims = append(plan.victims, gcBatch{id: id, keys: bo.Objects, manifest: &m})
				continue
			}
		}
		plan.leftovers = append(plan.leftovers, staged...)
		sup, ok, err := gcSuperseded(ctx, b, bo, m, cutoff)
		if err != nil {
			return plan, err
		}
		if !ok {
			plan.kept = append(plan.kept, fmt.Sprintf("%s: a receipt cannot be read, so its results/ and shards/ are kept as they are", id))
			continue
		}
		if len(sup) == 0 {
			continue
		}
		// A redrive running now writes objects its manifest does not list yet.
		run, err := running(id)
		if err != nil {
			return plan, err
		}
		if run {
			plan.kept = append(plan.kept, fmt.Sprintf("%s: running (a redrive), so its superseded objects are kept for now", id))
			continue
		}
		plan.leftovers = append(plan.leftovers, sup...)
	}
	return plan, nil
}

// gcSuperseded returns the objects of a finished batch that
// layout.Superseded finds superseded (neither its manifest nor a receipt
// names them, so no later redrive needs them), last written before
// cutoff. ok is false when a receipt cannot be read (nothing is then
// known to be superseded).
func gcSuperseded(ctx context.Context, b blobstore.Bucket, bo layout.BatchObjects, m manifests.Manifest, cutoff time.Time) (_ []gcLeftover, ok bool, _ error) {
	parts := manifests.PartsPrefix(bo.ID) // a finished shard deleted its own
	var receipts []layout.Receipt
	for _, a := range bo.Objects {
		rel, isShard := strings.CutPrefix(a.Key, manifests.ShardReceiptsPrefix(bo.ID))
		shard, isReceipt := layout.ReceiptShard(rel)
		if !isShard || !isReceipt {
			continue
		}
		rec, err := layout.ReadReceipt(ctx, b, bo.ID, shard)
		if errors.Is(err, layout.ErrCorrupt) {
			return nil, false, nil
		}
		if err != nil {
			return nil, false, err
		}
		receipts = append(receipts, rec)
	}
	var out []gcLeftover
	for _, a := range layout.Superseded(bo, m, receipts, blobstore.Prefix(b)) {
		if !a.ModTime.Before(cutoff) {
			continue
		}
		why := "not in the manifest, named by no receipt"
		if m.Redrives > 0 {
			why = fmt.Sprintf("superseded: not in the manifest of redrive %d, named by no receipt", m.Redrives)
		}
		if strings.HasPrefix(a.Key, parts) {
			why = "checkpoint part of a shard that never finished"
		}
		out = append(out, gcLeftover{kind: leftoverSuperseded, batchID: bo.ID, what: a.Key, why: why,
			keys: []blobstore.Attributes{a}, size: a.Size})
	}
	return out, true, nil
}

// stagingDir matches the staging directories submit makes (s-<hex>).
var stagingDir = regexp.MustCompile(`^s-[0-9a-f]+$`)

// gcStaged returns the staging directories of a batch (input/s-<hex>/)
// last written before cutoff that no batch runs: the batch's spec names
// another directory, or, without a spec, Temporal knows no workflow of
// the id or one whose input names another directory. A directory the
// spec or a workflow names, or one whose batch has no spec while
// Temporal cannot be asked, is kept: each submit stages into a directory
// of its own and starts the workflow with it, so one no workflow claimed
// is never run (a resubmit stages anew).
func gcStaged(ctx context.Context, b blobstore.Bucket, bo layout.BatchObjects, cutoff time.Time, temporal func() (client.Client, error)) ([]gcLeftover, error) {
	dirs := map[string][]blobstore.Attributes{}
	var names []string
	for _, a := range bo.Objects {
		if a.Key == manifests.CollectedKey(bo.ID) {
			return nil, nil // its input is what gc --keep-inputs kept
		}
	}
	for _, a := range bo.Objects {
		rest, ok := strings.CutPrefix(bo.Rel(a), "input/")
		if !ok {
			continue
		}
		dir, _, nested := strings.Cut(rest, "/")
		if !nested || !stagingDir.MatchString(dir) {
			continue
		}
		if _, seen := dirs[dir]; !seen {
			names = append(names, dir)
		}
		dirs[dir] = append(dirs[dir], a)
	}
	var old []string
	for _, d := range names {
		if !slices.ContainsFunc(dirs[d], func(a blobstore.Attributes) bool { return !a.ModTime.Before(cutoff) }) {
			old = append(old, d)
		}
	}
	if len(old) == 0 {
		return nil, nil
	}
	claimed, why := "", ""
	spec, err := pipeline.ReadSpec(ctx, b, bo.ID)
	switch {
	case err == nil:
		claimed, why = spec.InputDir, "the batch's spec names "+spec.InputDir
		if spec.InputDir == "" {
			why = "the batch's spec names no staging directory"
		}
	case errors.Is(err, blobstore.ErrNotFound):
		tc, err := temporal()
		if err != nil {
			return nil, err
		}
		in, err := pipeline.StartedInput(ctx, tc, bo.ID)
		var nf *serviceerror.NotFound
		switch {
		case errors.As(err, &nf):
			why = "no workflow of the batch id on Temporal"
		case err != nil:
			return nil, nil // cannot tell: keep
		default:
			claimed, why = in.InputDir, "its workflow on Temporal names "+in.InputDir
		}
	default:
		return nil, nil // an unreadable spec: keep
	}
	var out []gcLeftover
	for _, d := range old {
		if d == claimed {
			continue
		}
		keys := dirs[d]
		// The index first: a staging cut short reads as incomplete.
		index := manifests.InputIndexKey(bo.ID, d)
		slices.SortStableFunc(keys, func(x, y blobstore.Attributes) int {
			return boolInt(y.Key == index) - boolInt(x.Key == index)
		})
		var size int64
		for _, a := range keys {
			size += a.Size
		}
		out = append(out, gcLeftover{kind: leftoverStaged, batchID: bo.ID, what: manifests.InputPrefix(bo.ID, d), why: "never run: " + why,
			keys: keys, size: size})
	}
	return out, nil
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// gcTempFiles finds the temp files of a file:// store's interrupted writes
// older than cutoff; other stores have none (an S3 upload is atomic, and an
// abandoned multipart upload is the bucket's lifecycle rules' to expire).
func gcTempFiles(storeURL string, cutoff time.Time) ([]gcLeftover, error) {
	u, err := url.Parse(storeURL)
	if err != nil || u.Scheme != "file" || u.Path == "" {
		return nil, nil
	}
	root := filepath.Clean(u.Path)
	var out []gcLeftover
	err = filepath.WalkDir(root, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if e.IsDir() || !strings.HasPrefix(e.Name(), fileTmpPrefix) {
			return nil
		}
		info, err := e.Info()
		if err != nil || !info.ModTime().Before(cutoff) {
			return nil // gone meanwhile, or a write that may be going on
		}
		rel, _ := filepath.Rel(root, p)
		out = append(out, gcLeftover{kind: leftoverTemp, what: filepath.ToSlash(rel), path: p, size: info.Size(),
			why: "an interrupted write, last modified " + info.ModTime().UTC().Format(time.RFC3339)})
		return nil
	})
	return out, err
}

// deleteLeftover deletes one leftover's objects (or temp file).
func deleteLeftover(ctx context.Context, b blobstore.Bucket, l gcLeftover) error {
	if l.path != "" {
		if err := os.Remove(l.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		return nil
	}
	for _, a := range l.keys {
		if err := b.Delete(ctx, a.Key); err != nil {
			return err
		}
	}
	return nil
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
