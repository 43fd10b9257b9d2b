package cli

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/batchpipe/batchpipe/diff"
	"github.com/batchpipe/batchpipe/manifests"
)

// diffShown is how many changes of each kind the human output lists.
const diffShown = 20

func newDiffCommand(o *IO) *cobra.Command {
	f := &opsFlags{}
	var key string
	cmd := subcommand("diff A B", "Compare two finished batches (ids or manifest URLs) item by item: exit 0 the same, 1 different, 2 trouble", cobra.ExactArgs(2),
		func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if cmd.Flags().Changed("key") && key == "" {
				return usagef("--key is empty (an unset variable?); give the input field to match items by, or leave the flag out to match by index")
			}
			return diffTrouble(ctx, o, runDiff(ctx, o, f, key, args[0], args[1]))
		})
	cmd.Long = `Diff compares two finished batches — say two nights of the same schedule —
given as batch ids (in --store) or manifest URLs: their counts side by side,
then the items whose status changed (succeeded <-> failed), whose output
changed (compared as JSON values: key order, spacing and number forms do not
count), and those in one batch only. Attempts, durations and the errors of
items that failed in both are not compared.

Items are matched by index, both batches read in lockstep with bounded
memory. With --key FIELD they are matched by that top-level field of their
inputs instead (read from each batch's staged input), for inputs whose order
changes; the items are then sorted by key, spilling to temporary files
($TMPDIR) beyond ~16 MiB per batch. Items sharing a key are paired in index
order.

The text output lists the first 20 changes of each kind; --json lists them
all. Exit codes, as diff(1): 0 the same (same status, no item changed), 1
different, 2 trouble (an unreadable manifest or object, bad usage).`
	f.register(cmd, true)
	cmd.Flags().StringVar(&key, "key", "", "match items by this top-level `FIELD` of their inputs (e.g. id) instead of by index")
	return cmd
}

// diffTrouble turns any error of diff into exit code 2, as diff(1) does,
// except an interruption.
func diffTrouble(ctx context.Context, o *IO, err error) error {
	var ee exitError
	switch {
	case err == nil, errors.As(err, &ee):
		return err
	case ctx.Err() != nil && errors.Is(err, context.Canceled):
		return err
	}
	fmt.Fprintln(o.Stderr, "error:", err)
	return exitError{ExitUsage}
}

func runDiff(ctx context.Context, o *IO, f *opsFlags, key, argA, argB string) error {
	// Each side is opened as results opens its batch.
	a, err := openBatch(ctx, o, f, argA)
	if err != nil {
		return fmt.Errorf("A: %w", err)
	}
	defer a.Close()
	b, err := openBatch(ctx, o, f, argB)
	if err != nil {
		return fmt.Errorf("B: %w", err)
	}
	defer b.Close()
	opts := diff.Options{Key: key}
	var s diff.Summary
	if f.json {
		out := newDiffJSON()
		defer out.close()
		if s, err = diff.Compare(ctx, a, b, opts, out.add); err != nil {
			return err
		}
		if err := out.write(o.Stdout, s); err != nil {
			return err
		}
	} else {
		shown := map[diff.Kind][]diff.Change{}
		s, err = diff.Compare(ctx, a, b, opts, func(c diff.Change) error {
			if len(shown[c.Kind]) < diffShown {
				shown[c.Kind] = append(shown[c.Kind], c)
			}
			return nil
		})
		if err != nil {
			return err
		}
		if err := printDiff(o.Stdout, s, shown); err != nil {
			return err
		}
	}
	if !s.Same() {
		return exitError{ExitFailed}
	}
	return nil
}

// printDiff writes the human report: counts side by side, then the changes
// of each kind (the first diffShown), then how many items are unchanged.
func printDiff(w io.Writer, s diff.Summary, shown map[diff.Kind][]diff.Change) error {
	bw := bufio.NewWriter(w)
	tw := tabwriter.NewWriter(bw, 0, 4, 3, ' ', 0)
	fmt.Fprintf(tw, "\tA\tB\n")
	fmt.Fprintf(tw, "batch\t%s\t%s\n", s.A.BatchID, s.B.BatchID)
	fmt.Fprintf(tw, "status\t%s\t%s\n", s.A.Status, s.B.Status)
	fmt.Fprintf(tw, "items\t%d\t%d\n", s.A.Counts.Items, s.B.Counts.Items)
	fmt.Fprintf(tw, "succeeded\t%d\t%d\n", s.A.Counts.Succeeded, s.B.Counts.Succeeded)
	fmt.Fprintf(tw, "failed\t%d\t%d\n", s.A.Counts.Failed, s.B.Counts.Failed)
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(bw)
	if s.Key != "" {
		fmt.Fprintf(bw, "items matched by input field %q\n", s.Key)
		if s.DuplicateKeysA+s.DuplicateKeysB > 0 {
			fmt.Fprintf(bw, "note: %d items of A and %d of B share their key with an earlier item of the same batch; items sharing a key are paired in index order\n",
				s.DuplicateKeysA, s.DuplicateKeysB)
		}
	}
	titles := map[diff.Kind]string{
		diff.StatusChanged: "status changed",
		diff.OutputChanged: "output changed",
		diff.Added:         "added (only in B)",
		diff.Removed:       "removed (only in A)",
	}
	for _, k := range diff.Kinds {
		n := s.Count(k)
		fmt.Fprintf(bw, "%s: %d\n", titles[k], n)
		for _, c := range shown[k] {
			fmt.Fprintf(bw, "  %s: %s\n", diffLabel(c), diffWhat(c))
		}
		if more := n - int64(len(shown[k])); more > 0 {
			fmt.Fprintf(bw, "  … and %d more (--json lists them all)\n", more)
		}
	}
	fmt.Fprintf(bw, "unchanged: %d", s.Unchanged)
	if s.FailedBoth > 0 {
		fmt.Fprintf(bw, " (%d of them failed in both)", s.FailedBoth)
	}
	fmt.Fprintln(bw)
	if s.Same() {
		fmt.Fprintln(bw, "the batches are the same")
	} else if s.A.Status != s.B.Status {
		fmt.Fprintf(bw, "the batches differ (status %s, then %s)\n", s.A.Status, s.B.Status)
	}
	return bw.Flush()
}

// diffLabel names a changed item: its index, or its key and indexes.
func diffLabel(c diff.Change) string {
	if c.Key == nil {
		return fmt.Sprintf("index %d", c.Index)
	}
	label := "key " + clipJSON(c.Key, 40)
	switch {
	case c.A == nil:
		return fmt.Sprintf("%s (index %d in B)", label, c.B.Index)
	case c.B == nil:
		return fmt.Sprintf("%s (index %d in A)", label, c.A.Index)
	case c.A.Index != c.B.Index:
		return fmt.Sprintf("%s (index %d in A, %d in B)", label, c.A.Index, c.B.Index)
	}
	return fmt.Sprintf("%s (index %d)", label, c.Index)
}

// diffWhat says what changed.
func diffWhat(c diff.Change) string {
	switch c.Kind {
	case diff.StatusChanged:
		return diffSide(c.A) + " -> " + diffSide(c.B)
	case diff.OutputChanged:
		return clipJSON(c.A.Output, 60) + " -> " + clipJSON(c.B.Output, 60)
	case diff.Added:
		return diffSide(c.B)
	default:
		return diffSide(c.A)
	}
}

// diffSide is one side of an item: "succeeded OUTPUT" or "failed: ERROR".
func diffSide(it *diff.Item) string {
	if it.Status == manifests.ItemFailed && it.Error != nil {
		return "failed: " + clipText(it.Error.Message, 60)
	}
	return it.Status + " " + clipJSON(it.Output, 60)
}

func clipJSON(v json.RawMessage, n int) string {
	var buf bytes.Buffer
	if json.Compact(&buf, v) != nil {
		return clipText(string(v), n)
	}
	return clipText(buf.String(), n)
}

func clipText(s string, n int) string {
	s = strings.ReplaceAll(s, "\n", " ")
	if r := []rune(s); len(r) > n {
		return string(r[:n]) + "…"
	}
	return s
}

// diffJSON collects the changes for --json, each kind in a spool that
// keeps a few MiB in memory and the rest in a temporary file, and writes
// the whole document at the end (nothing, on trouble).
type diffJSON struct {
	spools map[diff.Kind]*spool
}

func newDiffJSON() *diffJSON {
	d := &diffJSON{spools: map[diff.Kind]*spool{}}
	for _, k := range diff.Kinds {
		d.spools[k] = &spool{}
	}
	return d
}

func (d *diffJSON) add(c diff.Change) error { return d.spools[c.Kind].add(c) }

func (d *diffJSON) close() {
	for _, s := range d.spools {
		s.close()
	}
}

// write writes the document: the sides and counts, then one list per kind
// with one change per line.
func (d *diffJSON) write(w io.Writer, s diff.Summary) error {
	head := struct {
		A             diff.Side        `json:"a"`
		B             diff.Side        `json:"b"`
		Key           string           `json:"key,omitempty"`
		Same          bool             `json:"same"`
		Changes       map[string]int64 `json:"changes"`
		DuplicateKeys map[string]int64 `json:"duplicate_keys,omitempty"`
	}{
		A:    s.A,
		B:    s.B,
		Key:  s.Key,
		Same: s.Same(),
		Changes: map[string]int64{"status_changed": s.StatusChanged, "output_changed": s.OutputChanged,
			"added": s.Added, "removed": s.Removed, "unchanged": s.Unchanged, "failed_both": s.FailedBoth},
	}
	if s.Key != "" {
		head.DuplicateKeys = map[string]int64{"a": s.DuplicateKeysA, "b": s.DuplicateKeysB}
	}
	data, err := json.MarshalIndent(head, "", "  ")
	if err != nil {
		return err
	}
	bw := bufio.NewWriterSize(w, 1<<16)
	bw.Write(bytes.TrimSuffix(data, []byte("\n}")))
	for _, k := range diff.Kinds {
		fmt.Fprintf(bw, ",\n  %q: [", k)
		if err := d.spools[k].writeList(bw, "\n    "); err != nil {
			return err
		}
		if d.spools[k].n > 0 {
			bw.WriteString("\n  ")
		}
		bw.WriteString("]")
	}
	bw.WriteString("\n}\n")
	return bw.Flush()
}

// spoolMemory is how much of a spool stays in memory.
const spoolMemory = 4 << 20

// spool holds JSON lines: in memory up to spoolMemory, then in a
// temporary file.
type spool struct {
	mem  bytes.Buffer
	file *os.File
	fw   *bufio.Writer
	n    int64
}

func (s *spool) add(v any) error {
	line, err := json.Marshal(v)
	if err != nil {
		return err
	}
	s.n++
	if s.file == nil && s.mem.Len()+len(line) < spoolMemory {
		s.mem.Write(line)
		s.mem.WriteByte('\n')
		return nil
	}
	if s.file == nil {
		if s.file, err = os.CreateTemp("", "batchpipe-diff-*.jsonl"); err != nil {
			return fmt.Errorf("spilling changes to a temporary file: %w", err)
		}
		s.fw = bufio.NewWriterSize(s.file, 1<<16)
		if _, err := s.fw.Write(s.mem.Bytes()); err != nil {
			return err
		}
		s.mem = bytes.Buffer{}
	}
	s.fw.Write(line)
	return s.fw.WriteByte('\n')
}

// writeList writes the lines separated by commas, each after sep.
func (s *spool) writeList(w *bufio.Writer, sep string) error {
	var r io.Reader = bytes.NewReader(s.mem.Bytes())
	if s.file != nil {
		if err := s.fw.Flush(); err != nil {
			return err
		}
		if _, err := s.file.Seek(0, io.SeekStart); err != nil {
			return err
		}
		r = s.file
	}
	br := bufio.NewReaderSize(r, 1<<16)
	first := true
	for {
		line, err := br.ReadBytes('\n')
		if len(line) > 0 {
			if !first {
				w.WriteByte(',')
			}
			first = false
			w.WriteString(sep)
			w.Write(bytes.TrimSuffix(line, []byte("\n")))
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

func (s *spool) close() {
	if s.file != nil {
		s.file.Close()
		os.Remove(s.file.Name())
		s.file = nil
	}
}
