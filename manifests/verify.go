package manifests

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"strings"
	"sync"

	"github.com/batchpipe/batchpipe/blobstore"
	"github.com/batchpipe/batchpipe/zjsonl"
)

// VerifyError is the integrity problem Verify found first: the object it is
// about, as the manifest names it (the manifest's own key for problems of the
// manifest itself), and what is wrong.
type VerifyError struct {
	Key     string // object key as listed in the manifest, prefix included
	Problem string // what is wrong, e.g. "sha256 mismatch (manifest 1ab…, stored 9fe…)"
	Err     error  // underlying error, if any (blobstore.ErrNotFound for a missing object)
}

func (e *VerifyError) Error() string { return e.Key + ": " + e.Problem }

// Unwrap returns the underlying error.
func (e *VerifyError) Unwrap() error { return e.Err }

// defaultVerifyConcurrency is how many result objects Verify reads at once
// unless Batch.VerifyConcurrency says otherwise.
const defaultVerifyConcurrency = 8

// Verify reads every object the manifest lists and checks that the batch is
// whole and consistent:
//
//   - the manifest is format v1, for this batch, with a known status, and its
//     counts add up (items = succeeded + failed; a succeeded batch has no
//     failures, a completed_with_failures one has some; a finished batch
//     counts every input item);
//   - every key it lists (result objects, failures object) is one of the
//     batch's own objects, under the store's prefix and batches/<id>/;
//   - every result object exists, and its stored size and sha256 are the
//     manifest's (the bytes are hashed as they stream, never held whole);
//   - every result object decodes as zstd JSON lines of ResultLine, holds as
//     many lines as the manifest says, with as many succeeded and failed
//     lines, and indexes that run from its first_index on, one by one;
//   - result objects follow each other without overlap: for a succeeded or
//     completed_with_failures batch their indexes run contiguously from 0 to
//     input.items-1, each exactly once; a failed or canceled batch may have
//     gaps (shards that never finished) but lists no index twice;
//   - the failures object (present exactly when some item failed) lists each
//     failed item once, in input order, with the result line's error and an
//     input, and nothing else.
//
// It returns nil, a *VerifyError naming the first bad object (in manifest
// order) and what is wrong with it, or another error when the store could
// not be read (a network error, a cancelled context).
func (b *Batch) Verify(ctx context.Context) error {
	sums, err := b.verifyManifest()
	if err != nil {
		return err
	}
	digests, err := b.verifyResults(ctx, sums)
	if err != nil {
		return err
	}
	return b.verifyFailures(ctx, digests)
}

// verifyManifest checks the manifest alone, without reading any object.
func (b *Batch) verifyManifest() ([]Result, error) {
	m := &b.Manifest
	bad := func(key, format string, args ...any) error {
		return &VerifyError{Key: key, Problem: fmt.Sprintf(format, args...)}
	}
	mk := b.manifestKey
	if m.Format != Format {
		return nil, bad(mk, "format %q, want %q", m.Format, Format)
	}
	if b.batchID != "" && m.BatchID != b.batchID {
		return nil, bad(mk, "batch_id is %q but the manifest is stored as batch %q's", m.BatchID, b.batchID)
	}
	if err := ValidateBatchID(m.BatchID); err != nil {
		return nil, bad(mk, "batch_id: %v", err)
	}
	complete := false
	switch m.Status {
	case StatusSucceeded, StatusCompletedWithFailures:
		complete = true
	case StatusFailed, StatusCanceled:
	default:
		return nil, bad(mk, "unknown status %q", m.Status)
	}
	c := m.Counts
	if c.Items < 0 || c.Succeeded < 0 || c.Failed < 0 {
		return nil, bad(mk, "negative counts (items %d, succeeded %d, failed %d)", c.Items, c.Succeeded, c.Failed)
	}
	if c.Succeeded+c.Failed != c.Items {
		return nil, bad(mk, "counts do not add up: succeeded %d + failed %d = %d, but items is %d",
			c.Succeeded, c.Failed, c.Succeeded+c.Failed, c.Items)
	}
	switch {
	case m.Status == StatusSucceeded && c.Failed != 0:
		return nil, bad(mk, "status %s but %d items failed", m.Status, c.Failed)
	case m.Status == StatusCompletedWithFailures && c.Failed == 0:
		return nil, bad(mk, "status %s but no item failed", m.Status)
	case complete && c.Items != m.Input.Items:
		return nil, bad(mk, "status %s but counts.items is %d and input.items %d", m.Status, c.Items, m.Input.Items)
	case c.Items > m.Input.Items:
		return nil, bad(mk, "counts.items %d exceeds input.items %d", c.Items, m.Input.Items)
	}
	switch f := m.Failures; {
	case c.Failed > 0 && f == nil:
		return nil, bad(mk, "%d items failed but failures is null", c.Failed)
	case c.Failed == 0 && f != nil:
		return nil, bad(mk, "no item failed but failures names %s", f.Key)
	case f != nil && f.Items != c.Failed:
		return nil, bad(mk, "failures.items is %d but counts.failed %d", f.Items, c.Failed)
	case f != nil:
		if err := b.checkOwnKey(f.Key); err != nil {
			return nil, err
		}
	}

	var next int64 // first index not yet covered
	var tot Counts
	for i, r := range m.Results {
		entry := func(format string, args ...any) error {
			return bad(r.Key, "manifest entry %d: "+format, append([]any{i}, args...)...)
		}
		if err := b.checkOwnKey(r.Key); err != nil {
			return nil, err
		}
		switch {
		case r.Items < 0 || r.Succeeded < 0 || r.Failed < 0 || r.Size < 0 || r.FirstIndex < 0:
			return nil, entry("negative numbers")
		case r.Succeeded+r.Failed != r.Items:
			return nil, entry("succeeded %d + failed %d = %d, but items is %d", r.Succeeded, r.Failed, r.Succeeded+r.Failed, r.Items)
		case !isSHA256(r.SHA256):
			return nil, entry("sha256 %q is not 64 hex digits", r.SHA256)
		case r.FirstIndex < next:
			return nil, entry("first_index %d overlaps the previous object, which ends at index %d: %s listed twice",
				r.FirstIndex, next-1, indexes(r.FirstIndex, min(next, r.FirstIndex+r.Items)-1))
		case r.FirstIndex > next && complete:
			return nil, entry("first_index %d, want %d: %s in no result object", r.FirstIndex, next, indexes(next, r.FirstIndex-1))
		}
		next = r.FirstIndex + r.Items
		tot.Items += r.Items
		tot.Succeeded += r.Succeeded
		tot.Failed += r.Failed
	}
	if next > m.Input.Items {
		return nil, bad(mk, "result objects reach index %d but the input has %d items", next-1, m.Input.Items)
	}
	if complete && next != m.Input.Items {
		return nil, bad(mk, "result objects end at index %d but the input has %d items", next-1, m.Input.Items)
	}
	if tot != c {
		return nil, bad(mk, "result objects hold %d items (%d succeeded, %d failed) but counts say %d (%d, %d)",
			tot.Items, tot.Succeeded, tot.Failed, c.Items, c.Succeeded, c.Failed)
	}
	return m.Results, nil
}

// checkOwnKey checks that a key the manifest lists names one of this
// batch's own objects: within the store's prefix, under batches/<id>/, and a
// valid key (no "." or ".." segments that could lead elsewhere). A manifest
// listing another batch's objects would otherwise verify as whole.
func (b *Batch) checkOwnKey(key string) error {
	rel, err := b.RelativeKey(key)
	if err != nil {
		return &VerifyError{Key: key, Problem: fmt.Sprintf("key is outside the store %s (its keys start with %q)", b.bucket.URL(), b.prefix)}
	}
	own := BatchPrefix(b.Manifest.BatchID)
	if !strings.HasPrefix(rel, own) || rel == own {
		return &VerifyError{Key: key, Problem: fmt.Sprintf("key is not one of batch %s's objects (their keys start with %q)", b.Manifest.BatchID, b.prefix+own)}
	}
	if err := blobstore.ValidateKey(rel); err != nil {
		return &VerifyError{Key: key, Err: err, Problem: fmt.Sprintf("not a valid object key: %v", err)}
	}
	return nil
}

// indexes names the range first..last with its verb: "index 4 is",
// "indexes 4..9 are".
func indexes(first, last int64) string {
	if first == last {
		return fmt.Sprintf("index %d is", first)
	}
	return fmt.Sprintf("indexes %d..%d are", first, last)
}

// after says where decoding stopped.
func after(goodLines int64) string {
	if goodLines == 0 {
		return ""
	}
	return fmt.Sprintf(" after %d good lines", goodLines)
}

func isSHA256(s string) bool {
	if len(s) != 64 {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil
}

// objectReport is what checking one result object found.
type objectReport struct {
	err    error    // *VerifyError, or a store error
	digest [32]byte // of its failed items, in order (see failedDigest)
}

// verifyResults checks every result object, several at a time, and reports
// the first problem in manifest order. It returns each object's digest of
// failed items.
func (b *Batch) verifyResults(ctx context.Context, results []Result) ([][32]byte, error) {
	conc := b.VerifyConcurrency
	if conc <= 0 {
		conc = defaultVerifyConcurrency
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	type slot struct {
		done chan struct{}
		rep  objectReport
	}
	queue := make(chan *slot, conc-1) // with the one being waited for: conc in flight
	var wg sync.WaitGroup
	go func() {
		defer close(queue)
		for _, r := range results {
			if ctx.Err() != nil {
				return
			}
			s := &slot{done: make(chan struct{})}
			select {
			case queue <- s:
			case <-ctx.Done():
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer close(s.done)
				s.rep = b.checkResult(ctx, r)
			}()
		}
	}()
	finish := func() {
		cancel()
		for range queue { // let the producer stop, so every wg.Add has happened
		}
		wg.Wait()
	}
	defer finish()

	digests := make([][32]byte, 0, len(results))
	for s := range queue {
		<-s.done
		if s.rep.err != nil {
			return nil, s.rep.err
		}
		digests = append(digests, s.rep.digest)
	}
	if len(digests) != len(results) { // the producer stopped: ctx is done
		return nil, context.Cause(ctx)
	}
	return digests, nil
}

// failedDigest hashes a sequence of failed items (index, error type and
// message), so a result object's failures and the failures object's lines for
// that object can be compared without holding either.
type failedDigest struct{ h hash.Hash }

func newFailedDigest() failedDigest { return failedDigest{sha256.New()} }

func (d failedDigest) add(index int64, e *ItemError) {
	var buf [8]byte
	binary.BigEndian.PutUint64(buf[:], uint64(index))
	d.h.Write(buf[:])
	var typ, msg string
	if e != nil {
		typ, msg = e.Type, e.Message
	}
	for _, s := range []string{typ, msg} {
		binary.BigEndian.PutUint64(buf[:], uint64(len(s)))
		d.h.Write(buf[:])
		io.WriteString(d.h, s)
	}
}

func (d failedDigest) sum() (s [32]byte) {
	d.h.Sum(s[:0])
	return s
}

// hashingReader counts and hashes what it reads and keeps the first read
// error of the source, so a broken connection is told apart from bad bytes.
type hashingReader struct {
	r    io.Reader
	h    hash.Hash
	n    int64
	rerr error
}

func (h *hashingReader) Read(p []byte) (int, error) {
	n, err := h.r.Read(p)
	h.h.Write(p[:n])
	h.n += int64(n)
	if err != nil && err != io.EOF && h.rerr == nil {
		h.rerr = err
	}
	return n, err
}

// verifyLine is the part of a result line Verify looks at.
type verifyLine struct {
	Index  *int64     `json:"index"`
	Status string     `json:"status"`
	Error  *ItemError `json:"error"`
}

// checkResult checks one result object: existence, size, sha256, decoding,
// indexes, line and status counts.
func (b *Batch) checkResult(ctx context.Context, r Result) objectReport {
	rel, err := b.RelativeKey(r.Key)
	if err != nil {
		return objectReport{err: err}
	}
	rc, err := b.bucket.NewReader(ctx, rel)
	if err != nil {
		if errors.Is(err, blobstore.ErrNotFound) {
			return objectReport{err: &VerifyError{Key: r.Key, Err: err,
				Problem: fmt.Sprintf("missing: the manifest lists it but %s has no such object", b.bucket.URL())}}
		}
		return objectReport{err: fmt.Errorf("%s: %w", r.Key, err)}
	}
	defer rc.Close()
	hr := &hashingReader{r: rc, h: sha256.New()}
	digest := newFailedDigest()
	problem := checkResultLines(hr, r, digest)
	// Hash whatever the decoder left unread (all of it after a decode
	// error), so corruption is reported as the checksum mismatch it is.
	_, err = io.Copy(io.Discard, hr)
	if hr.rerr != nil {
		return objectReport{err: fmt.Errorf("%s: reading: %w", r.Key, hr.rerr)}
	}
	if err != nil {
		return objectReport{err: fmt.Errorf("%s: reading: %w", r.Key, err)}
	}
	if hr.n != r.Size {
		return objectReport{err: &VerifyError{Key: r.Key, Problem: fmt.Sprintf("size mismatch (manifest %d bytes, stored %d)", r.Size, hr.n)}}
	}
	if sum := hex.EncodeToString(hr.h.Sum(nil)); sum != r.SHA256 {
		return objectReport{err: &VerifyError{Key: r.Key, Problem: fmt.Sprintf("sha256 mismatch (manifest %s, stored %s)", r.SHA256, sum)}}
	}
	if problem != nil {
		problem.Key = r.Key
		return objectReport{err: problem}
	}
	return objectReport{digest: digest.sum()}
}

// checkResultLines decodes a result object's lines and checks them against
// its manifest entry. The returned problem has no Key yet.
func checkResultLines(src io.Reader, r Result, digest failedDigest) *VerifyError {
	bad := func(err error, format string, args ...any) *VerifyError {
		return &VerifyError{Problem: fmt.Sprintf(format, args...), Err: err}
	}
	zr, err := zjsonl.NewReader(src)
	if err != nil {
		return bad(err, "does not decode as zstd: %v", err)
	}
	defer zr.Close()
	var n, succeeded, failed int64
	for {
		var l verifyLine
		err := zr.Decode(&l)
		if err == io.EOF {
			break
		}
		if err != nil {
			return bad(err, "does not decode as zstd JSON lines%s: %v", after(n), err)
		}
		line := zr.Line()
		want := r.FirstIndex + n
		switch {
		case l.Index == nil:
			return bad(nil, "line %d: no index", line)
		case n >= r.Items:
			return bad(nil, "line %d (index %d): more lines than the %d items the manifest lists", line, *l.Index, r.Items)
		case *l.Index < want && *l.Index >= r.FirstIndex:
			return bad(nil, "line %d: duplicate index %d (want %d)", line, *l.Index, want)
		case *l.Index < want:
			return bad(nil, "line %d: index %d is before this object's first_index %d (listed twice or out of order)", line, *l.Index, r.FirstIndex)
		case *l.Index > want:
			return bad(nil, "line %d: index %d, want %d: %s missing", line, *l.Index, want, indexes(want, *l.Index-1))
		}
		switch l.Status {
		case ItemSucceeded:
			succeeded++
		case ItemFailed:
			if l.Error == nil {
				return bad(nil, "line %d (index %d): status failed without an error", line, *l.Index)
			}
			failed++
			digest.add(*l.Index, l.Error)
		default:
			return bad(nil, "line %d (index %d): unknown status %q", line, *l.Index, l.Status)
		}
		n++
	}
	if n != r.Items {
		return bad(nil, "%d lines but the manifest lists %d items: %s missing", n, r.Items, indexes(r.FirstIndex+n, r.FirstIndex+r.Items-1))
	}
	if succeeded != r.Succeeded || failed != r.Failed {
		return bad(nil, "%d succeeded and %d failed lines, but the manifest lists %d succeeded and %d failed",
			succeeded, failed, r.Succeeded, r.Failed)
	}
	return nil
}

// failedItem is one failed item, with the failures line it came from.
type failedItem struct {
	line  int
	index int64
	err   ItemError
}

// verifyFailures streams the failures object, groups its lines by the result
// object their index falls in, and compares each group with that object's
// failed items by digest; a group that differs is diagnosed by reading that
// one result object again. Memory is bounded by the largest result object.
func (b *Batch) verifyFailures(ctx context.Context, digests [][32]byte) error {
	f := b.Manifest.Failures
	if f == nil {
		return nil
	}
	results := b.Manifest.Results
	bad := func(format string, args ...any) error {
		return &VerifyError{Key: f.Key, Problem: fmt.Sprintf(format, args...)}
	}
	j := 0 // the result object the current group belongs to
	var group []failedItem
	finish := func() error { // compares the group of object j
		r := results[j]
		if int64(len(group)) == r.Failed {
			d := newFailedDigest()
			for _, it := range group {
				d.add(it.index, &it.err)
			}
			if d.sum() == digests[j] {
				group = group[:0]
				return nil
			}
		}
		return b.diagnoseFailures(ctx, r, group)
	}
	var lines int64
	last := int64(-1)
	err := b.readLines(ctx, f.Key, func(zr *zjsonl.Reader) error {
		var l FailureLine
		if err := zr.Decode(&l); err != nil {
			return err
		}
		line := zr.Line()
		lines++
		switch {
		case l.Index < 0:
			return &VerifyError{Key: f.Key, Problem: fmt.Sprintf("line %d: negative index %d", line, l.Index)}
		case l.Index <= last:
			return &VerifyError{Key: f.Key, Problem: fmt.Sprintf("line %d: index %d comes after index %d: failed items must be listed once each, in input order", line, l.Index, last)}
		case len(l.Input) == 0 || string(l.Input) == "null":
			return &VerifyError{Key: f.Key, Problem: fmt.Sprintf("line %d (index %d): no input", line, l.Index)}
		case l.Error == nil:
			return &VerifyError{Key: f.Key, Problem: fmt.Sprintf("line %d (index %d): no error", line, l.Index)}
		}
		last = l.Index
		for j < len(results) && l.Index >= results[j].FirstIndex+results[j].Items {
			if err := finish(); err != nil {
				return err
			}
			j++
		}
		if j == len(results) || l.Index < results[j].FirstIndex {
			return &VerifyError{Key: f.Key, Problem: fmt.Sprintf("line %d: index %d is in no result object, so it cannot have failed", line, l.Index)}
		}
		group = append(group, failedItem{line: line, index: l.Index, err: *l.Error})
		return nil
	})
	if err != nil {
		var ve *VerifyError
		var se *storeError
		switch {
		case errors.As(err, &ve):
			return ve
		case errors.Is(err, blobstore.ErrNotFound):
			return &VerifyError{Key: f.Key, Err: err,
				Problem: fmt.Sprintf("missing: the manifest lists it but %s has no such object", b.bucket.URL())}
		case errors.As(err, &se):
			return err
		}
		return &VerifyError{Key: f.Key, Err: err, Problem: fmt.Sprintf("does not decode as zstd JSON lines of failed items%s: %v", after(lines), errors.Unwrap(err))}
	}
	for ; j < len(results); j++ {
		if err := finish(); err != nil {
			return err
		}
	}
	if lines != f.Items {
		return bad("%d lines, but failures.items is %d", lines, f.Items)
	}
	return nil
}

// diagnoseFailures reads result object r again to say how the failures
// object's lines for it (group) differ from its failed items.
func (b *Batch) diagnoseFailures(ctx context.Context, r Result, group []failedItem) error {
	f := b.Manifest.Failures
	var want []failedItem
	err := b.readLines(ctx, r.Key, func(zr *zjsonl.Reader) error {
		var l verifyLine
		if err := zr.Decode(&l); err != nil {
			return err
		}
		if l.Status == ItemFailed && l.Index != nil && l.Error != nil {
			want = append(want, failedItem{index: *l.Index, err: *l.Error})
		}
		return nil
	})
	if err != nil {
		return err // verified moments ago: a store error, or the object changed
	}
	bad := func(format string, args ...any) error {
		return &VerifyError{Key: f.Key, Problem: fmt.Sprintf(format, args...)}
	}
	wantSet := make(map[int64]bool, len(want))
	for _, w := range want {
		wantSet[w.index] = true
	}
	for i := 0; i < max(len(group), len(want)); i++ {
		switch {
		case i >= len(want):
			g := group[i]
			return bad("line %d: index %d did not fail (%s says so)", g.line, g.index, r.Key)
		case i >= len(group):
			return bad("failed item %d (in %s) is missing", want[i].index, r.Key)
		}
		g, w := group[i], want[i]
		switch {
		case g.index != w.index && !wantSet[g.index]:
			return bad("line %d: index %d did not fail (%s says so)", g.line, g.index, r.Key)
		case g.index != w.index:
			return bad("failed item %d (in %s) is missing", w.index, r.Key)
		case g.err != w.err:
			return bad("line %d (index %d): error (%s: %q) differs from the result line's (%s: %q)",
				g.line, g.index, g.err.Type, g.err.Message, w.err.Type, w.err.Message)
		}
	}
	// Same items, yet the digest differed: the object changed under us.
	return bad("failed items for %s do not match its result lines", r.Key)
}
