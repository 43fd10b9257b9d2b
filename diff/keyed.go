package diff

import (
	"bufio"
	"bytes"
	"container/heap"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/batchpipe/batchpipe/blobstore"
	"github.com/batchpipe/batchpipe/layout"
	"github.com/batchpipe/batchpipe/manifests"
	"github.com/batchpipe/batchpipe/zjsonl"
)

// A comparison by key joins each batch's result lines with its staged
// inputs (both in index order), sorts the (key, result line) records by key
// and index with an external merge sort — runs of about RunBytes sorted in
// memory and written as JSON lines to temporary files, then merged at most
// maxFanIn at a time — and walks the two sorted streams in lockstep.

// maxFanIn is how many runs are merged at once (one open file and read
// buffer each); more runs are merged in passes first.
const maxFanIn = 64

// rec is one item of a batch with its key (canonical JSON).
type rec struct {
	Key  json.RawMessage      `json:"k"`
	Line manifests.ResultLine `json:"l"`
}

// size estimates the memory a record takes once decoded: its bytes and
// about 200 of struct, slice headers and allocation overhead.
func (r *rec) size() int {
	n := 200 + len(r.Key) + len(r.Line.Output)
	if r.Line.Error != nil {
		n += len(r.Line.Error.Type) + len(r.Line.Error.Message)
	}
	return n
}

func recLess(x, y *rec) bool {
	if c := bytes.Compare(x.Key, y.Key); c != 0 {
		return c < 0
	}
	return x.Line.Index < y.Line.Index
}

func (c *comparer) byKey(ctx context.Context, a, b *manifests.Batch, opts Options) error {
	dir, err := os.MkdirTemp(opts.TempDir, "batchpipe-diff-")
	if err != nil {
		return fmt.Errorf("a directory for sorting by key: %w", err)
	}
	defer os.RemoveAll(dir)
	runBytes := opts.RunBytes
	if runBytes <= 0 {
		runBytes = 16 << 20
	}
	sa, err := sortByKey(ctx, a, sideName("A", a), opts.Key, filepath.Join(dir, "a"), runBytes)
	if err != nil {
		return err
	}
	defer sa.close()
	sb, err := sortByKey(ctx, b, sideName("B", b), opts.Key, filepath.Join(dir, "b"), runBytes)
	if err != nil {
		return err
	}
	defer sb.close()

	ra, okA, err := sa.next()
	if err != nil {
		return err
	}
	rb, okB, err := sb.next()
	if err != nil {
		return err
	}
	var prevA, prevB json.RawMessage
	advance := func(s stream, cur *rec, ok *bool, prev *json.RawMessage, dups *int64) error {
		*prev = cur.Key
		r, more, err := s.next()
		if err != nil {
			return err
		}
		if more && bytes.Equal(r.Key, *prev) {
			*dups++
		}
		*cur, *ok = r, more
		return nil
	}
	for okA || okB {
		if err := ctx.Err(); err != nil {
			return err
		}
		var cmp int
		switch {
		case !okB:
			cmp = -1
		case !okA:
			cmp = 1
		default:
			cmp = bytes.Compare(ra.Key, rb.Key)
		}
		switch {
		case cmp < 0:
			err = c.only(ra.Key, ra.Line, true)
			if err == nil {
				err = advance(sa, &ra, &okA, &prevA, &c.s.DuplicateKeysA)
			}
		case cmp > 0:
			err = c.only(rb.Key, rb.Line, false)
			if err == nil {
				err = advance(sb, &rb, &okB, &prevB, &c.s.DuplicateKeysB)
			}
		default:
			err = c.pair(ra.Key, ra.Line, rb.Line)
			if err == nil {
				err = advance(sa, &ra, &okA, &prevA, &c.s.DuplicateKeysA)
			}
			if err == nil {
				err = advance(sb, &rb, &okB, &prevB, &c.s.DuplicateKeysB)
			}
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// sortByKey reads batch's items with their keys and returns them sorted.
func sortByKey(ctx context.Context, batch *manifests.Batch, name, field, dir string, runBytes int) (stream, error) {
	if err := os.Mkdir(dir, 0o700); err != nil {
		return nil, err
	}
	in, err := openInputs(ctx, batch)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	defer in.close()
	s := &sorter{dir: dir, limit: runBytes}
	fail := func(err error) (stream, error) {
		s.abandon()
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	for line, err := range batch.Results(ctx) {
		if err != nil {
			return fail(err)
		}
		input, err := in.at(ctx, line.Index)
		if err != nil {
			return fail(err)
		}
		key, err := keyOf(input, field)
		if err != nil {
			return fail(fmt.Errorf("item %d: %w", line.Index, err))
		}
		if err := s.add(rec{Key: key, Line: line}); err != nil {
			return fail(err)
		}
	}
	st, err := s.finish()
	if err != nil {
		return fail(err)
	}
	return st, nil
}

// keyOf returns the canonical JSON of input's top-level field.
func keyOf(input []byte, field string) (json.RawMessage, error) {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(input, &obj); err != nil || obj == nil {
		return nil, fmt.Errorf("its input is not a JSON object: %s", clip(input))
	}
	v, ok := obj[field]
	if !ok {
		return nil, fmt.Errorf("its input has no field %q to match by: %s", field, clip(input))
	}
	return Canonical(v)
}

func clip(b []byte) string {
	if len(b) > 200 {
		return string(b[:200]) + "…"
	}
	return string(b)
}

// inputs reads a batch's staged input items by index.
type inputs struct {
	b         blobstore.Bucket
	st        layout.Staged
	shard     int // shard open in zr; -1 for none
	rc        io.ReadCloser
	zr        *zjsonl.Reader
	nextIndex int64 // index of the line zr yields next
}

// openInputs finds the staging directory of batch's input: the one its
// spec (batch.json) names, else the only one there is.
func openInputs(ctx context.Context, batch *manifests.Batch) (*inputs, error) {
	b, id := batch.Bucket(), batch.Manifest.BatchID
	var spec struct {
		InputDir string `json:"input_dir"`
	}
	err := layout.ReadSpec(ctx, b, id, &spec)
	if err != nil && !errors.Is(err, blobstore.ErrNotFound) {
		return nil, err
	}
	st, err := layout.ReadStaged(ctx, b, id, spec.InputDir)
	if errors.Is(err, blobstore.ErrNotFound) && spec.InputDir == "" {
		st, err = onlyStaged(ctx, b, id)
	}
	if errors.Is(err, blobstore.ErrNotFound) {
		return nil, fmt.Errorf("its staged input (%s in %s) is gone, collected by gc perhaps; matching by key reads the items' inputs: %w",
			manifests.InputIndexKey(id, spec.InputDir), b.URL(), err)
	}
	if err != nil {
		return nil, err
	}
	if st.ShardSize <= 0 {
		return nil, fmt.Errorf("%s: shard size %d", manifests.InputIndexKey(id, st.Dir), st.ShardSize)
	}
	st.BatchID = id
	return &inputs{b: b, st: st, shard: -1}, nil
}

// onlyStaged reads the index of the one staging directory under the
// batch's input/, for a batch without a spec.
func onlyStaged(ctx context.Context, b blobstore.Bucket, id string) (layout.Staged, error) {
	var dirs []string
	prefix := manifests.InputPrefix(id, "")
	for a, err := range b.List(ctx, prefix) {
		if err != nil {
			return layout.Staged{}, err
		}
		rel := strings.TrimPrefix(a.Key, prefix)
		if d, ok := strings.CutSuffix(rel, "/index.json"); ok && d != "" && !strings.Contains(d, "/") {
			dirs = append(dirs, d)
		}
	}
	if len(dirs) != 1 {
		return layout.Staged{}, fmt.Errorf("%d staged inputs under %s: %w", len(dirs), prefix, blobstore.ErrNotFound)
	}
	return layout.ReadStaged(ctx, b, id, dirs[0])
}

// at returns the input of item index; indexes must mostly ascend (going
// back reopens a shard).
func (in *inputs) at(ctx context.Context, index int64) ([]byte, error) {
	if index < 0 || index >= in.st.Items {
		return nil, fmt.Errorf("item %d: not in its staged input (%d items)", index, in.st.Items)
	}
	size := int64(in.st.ShardSize)
	shard := int(index / size)
	if shard != in.shard || index < in.nextIndex {
		in.close()
		key := manifests.InputShardKey(in.st.BatchID, in.st.Dir, shard)
		rc, err := in.b.NewReader(ctx, key)
		if err != nil {
			return nil, fmt.Errorf("input shard %s: %w", key, err)
		}
		zr, err := zjsonl.NewReader(rc)
		if err != nil {
			rc.Close()
			return nil, fmt.Errorf("input shard %s: %w", key, err)
		}
		in.rc, in.zr, in.shard, in.nextIndex = rc, zr, shard, int64(shard)*size
	}
	for {
		line, err := in.zr.Next()
		if err == io.EOF {
			return nil, fmt.Errorf("item %d: input shard %s ends at item %d", index,
				manifests.InputShardKey(in.st.BatchID, in.st.Dir, shard), in.nextIndex-1)
		}
		if err != nil {
			return nil, fmt.Errorf("input shard %s: %w", manifests.InputShardKey(in.st.BatchID, in.st.Dir, shard), err)
		}
		in.nextIndex++
		if in.nextIndex-1 == index {
			return line, nil
		}
	}
}

func (in *inputs) close() {
	if in.zr != nil {
		in.zr.Close()
		in.rc.Close()
		in.zr, in.rc, in.shard = nil, nil, -1
	}
}

// stream yields records in order.
type stream interface {
	next() (rec, bool, error)
	close()
}

// sorter collects records into sorted runs.
type sorter struct {
	dir   string
	limit int
	buf   []rec
	bytes int
	runs  []string
	seq   int
}

func (s *sorter) add(r rec) error {
	s.buf = append(s.buf, r)
	s.bytes += r.size()
	if s.bytes >= s.limit {
		return s.spill()
	}
	return nil
}

func (s *sorter) sortBuf() {
	slices.SortFunc(s.buf, func(x, y rec) int {
		if recLess(&x, &y) {
			return -1
		}
		if recLess(&y, &x) {
			return 1
		}
		return 0
	})
}

// spill writes the buffer as a sorted run.
func (s *sorter) spill() error {
	s.sortBuf()
	i := 0
	err := s.writeRun(func() (rec, bool, error) {
		if i == len(s.buf) {
			return rec{}, false, nil
		}
		i++
		return s.buf[i-1], true, nil
	})
	s.buf, s.bytes = s.buf[:0], 0
	return err
}

// writeRun writes what next yields to a new run file.
func (s *sorter) writeRun(next func() (rec, bool, error)) error {
	s.seq++
	name := filepath.Join(s.dir, fmt.Sprintf("run-%06d.jsonl", s.seq))
	f, err := os.Create(name)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(f, 1<<16)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	for {
		r, ok, err := next()
		if err == nil && ok {
			err = enc.Encode(&r)
		}
		if err == nil && !ok {
			err = w.Flush()
		}
		if err != nil {
			f.Close()
			os.Remove(name)
			return fmt.Errorf("writing a sort run: %w", err)
		}
		if !ok {
			break
		}
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("writing a sort run: %w", err)
	}
	s.runs = append(s.runs, name)
	return nil
}

// finish returns the records in order: from memory when they never
// filled a run, else merged from the runs.
func (s *sorter) finish() (stream, error) {
	if len(s.runs) == 0 {
		s.sortBuf()
		return &memStream{recs: s.buf}, nil
	}
	if len(s.buf) > 0 {
		if err := s.spill(); err != nil {
			return nil, err
		}
	}
	s.buf = nil
	for len(s.runs) > maxFanIn {
		group := s.runs[:maxFanIn]
		m, err := mergeRuns(group)
		if err != nil {
			return nil, err
		}
		s.runs = slices.Clone(s.runs[maxFanIn:])
		err = s.writeRun(m.next)
		m.close()
		if err != nil {
			return nil, err
		}
	}
	return mergeRuns(s.runs)
}

// abandon drops what was collected (the files go with the directory).
func (s *sorter) abandon() { s.buf = nil }

type memStream struct {
	recs []rec
	i    int
}

func (m *memStream) next() (rec, bool, error) {
	if m.i == len(m.recs) {
		return rec{}, false, nil
	}
	m.i++
	r := m.recs[m.i-1]
	m.recs[m.i-1] = rec{} // let it go
	return r, true, nil
}

func (m *memStream) close() { m.recs = nil }

// runReader reads one run file.
type runReader struct {
	name string
	f    *os.File
	dec  *json.Decoder
	cur  rec
}

func (r *runReader) read() (bool, error) {
	r.cur = rec{}
	err := r.dec.Decode(&r.cur)
	if err == io.EOF {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("reading sort run %s: %w", r.name, err)
	}
	return true, nil
}

// mergeStream merges runs through a heap of their heads; removes each run
// file once read to its end.
type mergeStream struct {
	h    runHeap
	open []*runReader
}

func mergeRuns(names []string) (*mergeStream, error) {
	m := &mergeStream{}
	for _, name := range names {
		f, err := os.Open(name)
		if err != nil {
			m.close()
			return nil, err
		}
		r := &runReader{name: name, f: f, dec: json.NewDecoder(bufio.NewReaderSize(f, 1<<15))}
		m.open = append(m.open, r)
		ok, err := r.read()
		if err != nil {
			m.close()
			return nil, err
		}
		if ok {
			m.h = append(m.h, r)
		}
	}
	heap.Init(&m.h)
	return m, nil
}

func (m *mergeStream) next() (rec, bool, error) {
	if len(m.h) == 0 {
		return rec{}, false, nil
	}
	top := m.h[0]
	out := top.cur
	ok, err := top.read()
	if err != nil {
		return rec{}, false, err
	}
	if ok {
		heap.Fix(&m.h, 0)
	} else {
		heap.Pop(&m.h)
		top.f.Close()
		os.Remove(top.name)
	}
	return out, true, nil
}

func (m *mergeStream) close() {
	for _, r := range m.open {
		r.f.Close()
	}
	m.open, m.h = nil, nil
}

type runHeap []*runReader

func (h runHeap) Len() int           { return len(h) }
func (h runHeap) Less(i, j int) bool { return recLess(&h[i].cur, &h[j].cur) }
func (h runHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *runHeap) Push(x any)        { *h = append(*h, x.(*runReader)) }
func (h *runHeap) Pop() any {
	old := *h
	r := old[len(old)-1]
	*h = old[:len(old)-1]
	return r
}
