// Package diff compares two finished batches — two nights of the same job,
// say — item by item: which items changed status (succeeded ↔ failed),
// which changed output, which are in one batch only.
//
// Items are matched by index by default: both batches' result lines are
// walked in index order in lockstep, one result object of each open at a
// time, so memory stays bounded whatever the batch size. With Options.Key
// they are matched by a top-level field of their inputs (read from each
// batch's staged input objects) instead, for inputs whose order changes
// from one night to the next: each batch's items are then sorted by that
// key with an external merge sort spilling runs to temporary files, so
// memory stays bounded too (about Options.RunBytes per batch).
//
// Outputs are compared as JSON values (Canonical), not as bytes. Attempts
// and durations are not compared, and neither are the errors of items that
// failed in both batches.
package diff

import (
	"context"
	"encoding/json"
	"fmt"
	"iter"
	"net/url"
	"path"

	"github.com/batchpipe/batchpipe/manifests"
)

// Kind is what changed about an item.
type Kind string

// Kinds of change.
const (
	StatusChanged Kind = "status_changed" // succeeded in one batch, failed in the other
	OutputChanged Kind = "output_changed" // succeeded in both, with outputs that are not the same JSON value
	Added         Kind = "added"          // in B only
	Removed       Kind = "removed"        // in A only
)

// Kinds lists every Kind in the order reports show them.
var Kinds = []Kind{StatusChanged, OutputChanged, Added, Removed}

// Item is one batch's side of a changed item.
type Item struct {
	Index  int64                `json:"index"`
	Status string               `json:"status"`
	Output json.RawMessage      `json:"output"` // null when the item failed
	Error  *manifests.ItemError `json:"error"`  // null when the item succeeded
}

// Change is one item that differs between the batches.
type Change struct {
	Kind Kind `json:"-"`
	// Index is the item's index in A (in B for an added item).
	Index int64 `json:"index"`
	// Key is the value of the matching field, canonical JSON (only when
	// matching by key).
	Key json.RawMessage `json:"key,omitempty"`
	A   *Item           `json:"a"` // nil for an added item
	B   *Item           `json:"b"` // nil for a removed item
}

// Side describes one of the two batches.
type Side struct {
	BatchID  string           `json:"batch_id"`
	Manifest string           `json:"manifest"` // the manifest's URL
	Status   string           `json:"status"`
	Counts   manifests.Counts `json:"counts"`
}

// Summary counts what Compare found.
type Summary struct {
	A, B Side
	Key  string // the field items were matched by; "" for by index

	StatusChanged int64 // Kind counts
	OutputChanged int64
	Added         int64
	Removed       int64
	Unchanged     int64 // matched items that are the same
	FailedBoth    int64 // of Unchanged: those that failed in both batches

	// DuplicateKeysA and B count the items whose key an earlier item of
	// the same batch has (matching by key): items sharing a key are paired
	// in index order.
	DuplicateKeysA, DuplicateKeysB int64
}

// Count returns the number of changes of kind k.
func (s Summary) Count(k Kind) int64 {
	switch k {
	case StatusChanged:
		return s.StatusChanged
	case OutputChanged:
		return s.OutputChanged
	case Added:
		return s.Added
	case Removed:
		return s.Removed
	}
	return 0
}

// Same reports whether the batches have the same status and no item
// changed.
func (s Summary) Same() bool {
	return s.A.Status == s.B.Status && s.StatusChanged+s.OutputChanged+s.Added+s.Removed == 0
}

// Options tune Compare.
type Options struct {
	// Key matches items by this top-level field of their inputs instead
	// of by index. Every input must be a JSON object holding it.
	Key string
	// TempDir holds the sort runs of a comparison by key; "" is
	// os.TempDir(). Everything written there is removed before Compare
	// returns.
	TempDir string
	// RunBytes is about how much memory a sort run of one batch may take
	// before it is written to a file; 0 means 16 MiB.
	RunBytes int
}

// Compare compares batch a with batch b, calling visit with every change
// (in index order; by key, in key order), and returns the counts. It stops
// at the first error visit returns or that reading either batch gives,
// which then names the batch.
func Compare(ctx context.Context, a, b *manifests.Batch, opts Options, visit func(Change) error) (Summary, error) {
	s := Summary{A: side(a), B: side(b), Key: opts.Key}
	c := &comparer{s: &s, visit: visit}
	var err error
	if opts.Key == "" {
		err = c.byIndex(ctx, a, b)
	} else {
		err = c.byKey(ctx, a, b, opts)
	}
	return s, err
}

func side(b *manifests.Batch) Side {
	m := b.Manifest
	return Side{BatchID: m.BatchID, Manifest: ManifestURL(b), Status: m.Status, Counts: m.Counts}
}

// ManifestURL is the URL of a batch's manifest: its store's URL (query
// kept) with the manifest's key appended.
func ManifestURL(b *manifests.Batch) string {
	store := b.Bucket().URL()
	key := manifests.ManifestKey(b.Manifest.BatchID)
	u, err := url.Parse(store)
	if err != nil {
		return store + "/" + key
	}
	u.Path, u.RawPath = path.Join("/", u.Path, key), ""
	return u.String()
}

type comparer struct {
	s     *Summary
	visit func(Change) error
}

func item(l manifests.ResultLine) *Item {
	return &Item{Index: l.Index, Status: l.Status, Output: l.Output, Error: l.Error}
}

// pair compares two matched items.
func (c *comparer) pair(key json.RawMessage, la, lb manifests.ResultLine) error {
	kind := Kind("")
	switch {
	case la.Status != lb.Status:
		kind = StatusChanged
		c.s.StatusChanged++
	case la.Status == manifests.ItemSucceeded && !SameJSON(la.Output, lb.Output):
		kind = OutputChanged
		c.s.OutputChanged++
	default:
		c.s.Unchanged++
		if la.Status == manifests.ItemFailed {
			c.s.FailedBoth++
		}
		return nil
	}
	return c.visit(Change{Kind: kind, Index: la.Index, Key: key, A: item(la), B: item(lb)})
}

func (c *comparer) only(key json.RawMessage, l manifests.ResultLine, inA bool) error {
	if inA {
		c.s.Removed++
		return c.visit(Change{Kind: Removed, Index: l.Index, Key: key, A: item(l)})
	}
	c.s.Added++
	return c.visit(Change{Kind: Added, Index: l.Index, Key: key, B: item(l)})
}

// puller reads a Seq2 one value at a time, naming its batch in errors.
type puller[T any] struct {
	next func() (T, error, bool)
	stop func()
	name string // "A (batch-id)"
	cur  T
	ok   bool
}

func pull[T any](seq iter.Seq2[T, error], name string) *puller[T] {
	next, stop := iter.Pull2(seq)
	return &puller[T]{next: next, stop: stop, name: name}
}

// advance moves to the next value; ok is false at the end.
func (p *puller[T]) advance() error {
	v, err, ok := p.next()
	if err != nil {
		p.ok = false
		return fmt.Errorf("%s: %w", p.name, err)
	}
	p.cur, p.ok = v, ok
	return nil
}

func sideName(which string, b *manifests.Batch) string {
	return which + " (" + b.Manifest.BatchID + ")"
}

// byIndex walks both batches' result lines in index order in lockstep.
func (c *comparer) byIndex(ctx context.Context, a, b *manifests.Batch) error {
	pa := pull(a.Results(ctx), sideName("A", a))
	defer pa.stop()
	pb := pull(b.Results(ctx), sideName("B", b))
	defer pb.stop()
	if err := pa.advance(); err != nil {
		return err
	}
	if err := pb.advance(); err != nil {
		return err
	}
	for pa.ok || pb.ok {
		var err error
		switch {
		case !pb.ok || pa.ok && pa.cur.Index < pb.cur.Index:
			if err = c.only(nil, pa.cur, true); err == nil {
				err = pa.advance()
			}
		case !pa.ok || pb.cur.Index < pa.cur.Index:
			if err = c.only(nil, pb.cur, false); err == nil {
				err = pb.advance()
			}
		default:
			if err = c.pair(nil, pa.cur, pb.cur); err == nil {
				if err = pa.advance(); err == nil {
					err = pb.advance()
				}
			}
		}
		if err != nil {
			return err
		}
	}
	return nil
}
