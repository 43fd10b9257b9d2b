package diff_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"reflect"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/batchpipe/batchpipe/blobstore"
	"github.com/batchpipe/batchpipe/diff"
	"github.com/batchpipe/batchpipe/layout"
	"github.com/batchpipe/batchpipe/manifests"
	"github.com/batchpipe/batchpipe/zjsonl"
)

var memSeq atomic.Int64

func memBucket(t *testing.T) blobstore.Bucket {
	t.Helper()
	b, err := blobstore.Open(context.Background(), fmt.Sprintf("mem://diff-test-%d/pre/fix", memSeq.Add(1)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// it is one item of a hand-built batch: its input, and its output or (if
// fail is set) its error.
type it struct {
	in, out, fail string
}

func ok(in, out string) it     { return it{in: in, out: out} }
func failed(in, msg string) it { return it{in: in, fail: msg} }

// batchSpec is a hand-built batch, written as the pipeline writes one:
// staged input shards with their index and the spec naming their
// directory, result objects, manifest.
type batchSpec struct {
	id         string
	shardSize  int
	items      []it
	skipShards []int  // shards that never finished (a canceled batch)
	status     string // "" derives it
	noSpec     bool   // no batch.json (an old batch): the staging directory is found by listing
}

func writeBatch(t *testing.T, b blobstore.Bucket, s batchSpec) *manifests.Batch {
	t.Helper()
	ctx := context.Background()
	if s.shardSize == 0 {
		s.shardSize = 4
	}
	dir := "s-" + s.id
	prefix := blobstore.Prefix(b)
	shards := (len(s.items) + s.shardSize - 1) / s.shardSize
	m := manifests.Manifest{Format: manifests.Format, BatchID: s.id, Processor: "test", Store: b.URL(),
		Input:   manifests.Input{Source: s.id + ".jsonl", Items: int64(len(s.items)), Shards: shards, ShardSize: s.shardSize},
		Results: []manifests.Result{}}
	for shard := range shards {
		first, end := shard*s.shardSize, min((shard+1)*s.shardSize, len(s.items))
		var inputs []json.RawMessage
		var lines []manifests.ResultLine
		r := manifests.Result{Key: prefix + manifests.ResultKey(s.id, shard), FirstIndex: int64(first), Items: int64(end - first)}
		for i := first; i < end; i++ {
			x := s.items[i]
			inputs = append(inputs, json.RawMessage(x.in))
			l := manifests.ResultLine{Index: int64(i), Status: manifests.ItemSucceeded, Output: json.RawMessage(x.out), Attempts: 1}
			if x.fail != "" {
				l = manifests.ResultLine{Index: int64(i), Status: manifests.ItemFailed, Error: &manifests.ItemError{Type: "error", Message: x.fail}, Attempts: 3}
				r.Failed++
			} else {
				r.Succeeded++
			}
			lines = append(lines, l)
		}
		putLines(t, b, manifests.InputShardKey(s.id, dir, shard), inputs)
		if slices.Contains(s.skipShards, shard) {
			continue
		}
		r.Size, r.SHA256 = putLines(t, b, manifests.ResultKey(s.id, shard), lines)
		m.Results = append(m.Results, r)
		m.Counts.Items += r.Items
		m.Counts.Succeeded += r.Succeeded
		m.Counts.Failed += r.Failed
	}
	if err := layout.WriteStaged(ctx, b, layout.Staged{BatchID: s.id, Dir: dir, Source: s.id + ".jsonl",
		Items: int64(len(s.items)), Shards: shards, ShardSize: s.shardSize}); err != nil {
		t.Fatal(err)
	}
	if !s.noSpec {
		if err := layout.WriteSpec(ctx, b, s.id, map[string]any{"batch_id": s.id, "input_dir": dir}); err != nil {
			t.Fatal(err)
		}
	}
	m.Status = s.status
	if m.Status == "" {
		m.Status = manifests.StatusSucceeded
		if m.Counts.Failed > 0 {
			m.Status = manifests.StatusCompletedWithFailures
		}
	}
	if err := layout.WriteManifest(ctx, b, m); err != nil {
		t.Fatal(err)
	}
	batch, err := manifests.Open(ctx, b, s.id)
	if err != nil {
		t.Fatal(err)
	}
	return batch
}

func putLines[T any](t *testing.T, b blobstore.Bucket, key string, lines []T) (int64, string) {
	t.Helper()
	bw := blobstore.NewWriter(context.Background(), b, key)
	zw := zjsonl.NewWriter(bw)
	for _, l := range lines {
		if err := zw.Write(l); err != nil {
			t.Fatal(err)
		}
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := bw.Close(); err != nil {
		t.Fatal(err)
	}
	return bw.Size(), bw.SHA256()
}

// compare runs diff.Compare and returns the changes by kind, each as
// "index" or "key" followed by what changed.
func compare(t *testing.T, a, b *manifests.Batch, opts diff.Options) (diff.Summary, map[diff.Kind][]string) {
	t.Helper()
	got := map[diff.Kind][]string{}
	s, err := diff.Compare(context.Background(), a, b, opts, func(c diff.Change) error {
		got[c.Kind] = append(got[c.Kind], describe(c))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range diff.Kinds {
		if int64(len(got[k])) != s.Count(k) {
			t.Errorf("%s: %d visited, summary counts %d", k, len(got[k]), s.Count(k))
		}
	}
	return s, got
}

func describe(c diff.Change) string {
	side := func(x *diff.Item) string {
		if x == nil {
			return "-"
		}
		if x.Error != nil {
			return fmt.Sprintf("%d:%s(%s)", x.Index, x.Status, x.Error.Message)
		}
		return fmt.Sprintf("%d:%s", x.Index, x.Output)
	}
	head := fmt.Sprint(c.Index)
	if c.Key != nil {
		head = string(c.Key)
	}
	return head + " " + side(c.A) + " " + side(c.B)
}

func wantChanges(t *testing.T, got map[diff.Kind][]string, want map[diff.Kind][]string) {
	t.Helper()
	for _, k := range diff.Kinds {
		if g, w := got[k], want[k]; !slices.Equal(g, w) {
			t.Errorf("%s:\n got %q\nwant %q", k, g, w)
		}
	}
}

func TestDiffIdentical(t *testing.T) {
	b := memBucket(t)
	// The same values written differently: key order, spacing, escapes,
	// number forms.
	a := writeBatch(t, b, batchSpec{id: "night-1", items: []it{
		ok(`{"id":1}`, `{"a":1,"b":[1,2.5,"x"]}`),
		ok(`{"id":2}`, `{"n":100,"s":"A<b>"}`),
		failed(`{"id":3}`, "boom"),
		ok(`{"id":4}`, `null`),
		ok(`{"id":5}`, `{"z":{"y":true,"x":-0}}`),
	}})
	bb := writeBatch(t, b, batchSpec{id: "night-2", items: []it{
		ok(`{"id":1}`, `{ "b": [1, 2.50, "x"], "a": 1.0 }`),
		ok(`{"id":2}`, `{"s":"\u0041\u003cb>","n":1e2}`),
		failed(`{"id":3}`, "boom, differently"), // failed both nights: not a change
		ok(`{"id":4}`, `null`),
		ok(`{"id":5}`, `{"z":{"x":0,"y":true}}`),
	}})
	for _, opts := range []diff.Options{{}, {Key: "id"}} {
		s, got := compare(t, a, bb, opts)
		wantChanges(t, got, nil)
		if !s.Same() || s.Unchanged != 5 || s.FailedBoth != 1 {
			t.Errorf("key %q: summary %+v, want the same, 5 unchanged, 1 failed both", opts.Key, s)
		}
		if s.A.BatchID != "night-1" || s.B.Status != manifests.StatusCompletedWithFailures || s.B.Counts.Failed != 1 {
			t.Errorf("sides %+v %+v", s.A, s.B)
		}
		if want := b.URL() + "/batches/night-1/manifest.json"; s.A.Manifest != want {
			t.Errorf("manifest URL %s, want %s", s.A.Manifest, want)
		}
	}
	// A batch compared with itself.
	if s, got := compare(t, a, a, diff.Options{}); !s.Same() || len(got) != 0 {
		t.Errorf("a batch differs from itself: %+v %v", s, got)
	}
}

func TestDiffByIndex(t *testing.T) {
	b := memBucket(t)
	a := writeBatch(t, b, batchSpec{id: "night-1", items: []it{
		ok(`{"id":0}`, `{"v":0}`),
		ok(`{"id":1}`, `{"v":1}`),
		ok(`{"id":2}`, `{"v":2}`),
		failed(`{"id":3}`, "broke"),
		ok(`{"id":4}`, `{"v":4}`),
		ok(`{"id":5}`, `{"v":5}`),
	}})
	bb := writeBatch(t, b, batchSpec{id: "night-2", items: []it{
		ok(`{"id":0}`, `{"v":0}`),
		ok(`{"id":1}`, `{"v":"one"}`), // output changed
		failed(`{"id":2}`, "timeout"), // succeeded -> failed
		ok(`{"id":3}`, `{"v":3}`),     // failed -> succeeded
		ok(`{"id":4}`, `{"v":4}`),
		ok(`{"id":5}`, `{"v":5,"w":1}`), // output changed
		ok(`{"id":6}`, `{"v":6}`),       // added
		failed(`{"id":7}`, "new"),       // added
	}})
	s, got := compare(t, a, bb, diff.Options{})
	wantChanges(t, got, map[diff.Kind][]string{
		diff.StatusChanged: {`2 2:{"v":2} 2:failed(timeout)`, `3 3:failed(broke) 3:{"v":3}`},
		diff.OutputChanged: {`1 1:{"v":1} 1:{"v":"one"}`, `5 5:{"v":5} 5:{"v":5,"w":1}`},
		diff.Added:         {`6 - 6:{"v":6}`, `7 - 7:failed(new)`},
	})
	if s.Same() || s.Unchanged != 2 || s.FailedBoth != 0 {
		t.Errorf("summary %+v", s)
	}
	// The other way round, the added items are removed ones.
	_, got = compare(t, bb, a, diff.Options{})
	if want := []string{`6 6:{"v":6} -`, `7 7:failed(new) -`}; !slices.Equal(got[diff.Removed], want) || len(got[diff.Added]) != 0 {
		t.Errorf("reversed: %v", got)
	}
	// A visitor's error stops the comparison and comes back as it is.
	stop := fmt.Errorf("enough")
	n := 0
	_, err := diff.Compare(context.Background(), a, bb, diff.Options{}, func(diff.Change) error { n++; return stop })
	if err != stop || n != 1 {
		t.Errorf("Compare = %v after %d changes, want the visitor's error after 1", err, n)
	}
}

// A canceled batch lists only the shards that finished: the items of the
// others are removed (or added), whatever their position.
func TestDiffGaps(t *testing.T) {
	b := memBucket(t)
	var items []it
	for i := range 20 {
		items = append(items, ok(fmt.Sprintf(`{"id":%d}`, i), fmt.Sprintf(`{"v":%d}`, i)))
	}
	a := writeBatch(t, b, batchSpec{id: "full", items: items, shardSize: 4})
	c := writeBatch(t, b, batchSpec{id: "canceled", items: items, shardSize: 4, skipShards: []int{1, 4}, status: manifests.StatusCanceled})
	s, got := compare(t, a, c, diff.Options{})
	var removed []int64
	for _, d := range got[diff.Removed] {
		var i int64
		fmt.Sscan(d, &i)
		removed = append(removed, i)
	}
	if want := []int64{4, 5, 6, 7, 16, 17, 18, 19}; !slices.Equal(removed, want) {
		t.Errorf("removed %v, want %v", removed, want)
	}
	if s.Unchanged != 12 || s.Same() || len(got[diff.Added])+len(got[diff.StatusChanged])+len(got[diff.OutputChanged]) != 0 {
		t.Errorf("summary %+v, changes %v", s, got)
	}
	_, got = compare(t, c, a, diff.Options{Key: "id"})
	if len(got[diff.Added]) != 8 || got[diff.Added][0] != `16 - 16:{"v":16}` { // keys in byte order: 16 < 4
		t.Errorf("by key, reversed: added %v", got[diff.Added])
	}
	// Only the statuses differ: not the same.
	c2 := writeBatch(t, b, batchSpec{id: "full-failed", items: items, shardSize: 4, status: manifests.StatusFailed})
	if s, got := compare(t, a, c2, diff.Options{}); s.Same() || len(got) != 0 {
		t.Errorf("status %s vs %s: same %v, changes %v", s.A.Status, s.B.Status, s.Same(), got)
	}
}

func TestDiffByKey(t *testing.T) {
	b := memBucket(t)
	a := writeBatch(t, b, batchSpec{id: "night-1", shardSize: 3, items: []it{
		ok(`{"id":"a","x":1}`, `{"v":"a"}`),
		ok(`{"id":"b","x":1}`, `{"v":"b"}`),
		ok(`{"id":"c","x":1}`, `{"v":"c"}`),
		failed(`{"id":"d","x":1}`, "broke"),
		ok(`{"id":"e","x":1}`, `{"v":"e"}`),
		ok(`{"id":"gone","x":1}`, `{"v":"gone"}`),
		ok(`{"id":7}`, `{"v":7}`),
	}})
	// The next night's input comes in another order, a key is new and
	// one is gone; keys are compared as JSON values (7 and 7.0).
	bb := writeBatch(t, b, batchSpec{id: "night-2", shardSize: 2, noSpec: true, items: []it{
		ok(`{"x":2,"id":"e"}`, `{"v":"e"}`),
		ok(`{"id":"new"}`, `{"v":"new"}`),
		ok(`{"id":7.0}`, `{"v":7}`),
		ok(`{"id":"d"}`, `{"v":"d"}`),    // failed -> succeeded
		failed(`{"id":"c"}`, "timeout"),  // succeeded -> failed
		ok(`{"id":"b"}`, `{"v":"B"}`),    // output changed
		ok(`{"id":"a"}`, `{ "v": "a" }`), // the same
	}})
	s, got := compare(t, a, bb, diff.Options{Key: "id"})
	wantChanges(t, got, map[diff.Kind][]string{
		diff.StatusChanged: {`"c" 2:{"v":"c"} 4:failed(timeout)`, `"d" 3:failed(broke) 3:{"v":"d"}`},
		diff.OutputChanged: {`"b" 1:{"v":"b"} 5:{"v":"B"}`},
		diff.Added:         {`"new" - 1:{"v":"new"}`},
		diff.Removed:       {`"gone" 5:{"v":"gone"} -`},
	})
	if s.Unchanged != 3 || s.Key != "id" || s.DuplicateKeysA+s.DuplicateKeysB != 0 {
		t.Errorf("summary %+v", s)
	}
	// By index the reordering changes nearly everything.
	if _, got := compare(t, a, bb, diff.Options{}); len(got[diff.OutputChanged]) != 5 {
		t.Errorf("by index: %v", got)
	}
}

// Items sharing a key are paired in index order; the surplus is added or
// removed.
func TestDiffByKeyDuplicates(t *testing.T) {
	b := memBucket(t)
	a := writeBatch(t, b, batchSpec{id: "night-1", items: []it{
		ok(`{"id":"k"}`, `1`), ok(`{"id":"k"}`, `2`), ok(`{"id":"k"}`, `3`), ok(`{"id":"z"}`, `9`),
	}})
	bb := writeBatch(t, b, batchSpec{id: "night-2", items: []it{
		ok(`{"id":"z"}`, `9`), ok(`{"id":"k"}`, `1`), ok(`{"id":"k"}`, `20`),
	}})
	s, got := compare(t, a, bb, diff.Options{Key: "id"})
	wantChanges(t, got, map[diff.Kind][]string{
		diff.OutputChanged: {`"k" 1:2 2:20`},
		diff.Removed:       {`"k" 2:3 -`},
	})
	if s.DuplicateKeysA != 2 || s.DuplicateKeysB != 1 {
		t.Errorf("duplicates %d %d, want 2 1", s.DuplicateKeysA, s.DuplicateKeysB)
	}
}

// With tiny sort runs every item spills to a file of its own, more than
// one merge can take at once: the result is the in-memory one, and no file
// is left behind.
func TestDiffByKeySpills(t *testing.T) {
	b := memBucket(t)
	var ia, ib []it
	for i := range 300 {
		ia = append(ia, ok(fmt.Sprintf(`{"id":%d}`, i), fmt.Sprintf(`{"v":%d}`, i)))
		j := 299 - i
		switch {
		case j%50 == 7:
			ib = append(ib, failed(fmt.Sprintf(`{"id":%d}`, j), "x"))
		case j%30 == 1:
			ib = append(ib, ok(fmt.Sprintf(`{"id":%d}`, j), fmt.Sprintf(`{"v":%d,"new":true}`, j)))
		default:
			ib = append(ib, ok(fmt.Sprintf(`{"id":%d}`, j), fmt.Sprintf(`{"v":%d}`, j)))
		}
	}
	ib = append(ib, ok(`{"id":1000}`, `{}`))
	a := writeBatch(t, b, batchSpec{id: "night-1", items: ia, shardSize: 16})
	bb := writeBatch(t, b, batchSpec{id: "night-2", items: ib, shardSize: 7})
	sMem, inMem := compare(t, a, bb, diff.Options{Key: "id"})
	tmp := t.TempDir()
	sDisk, onDisk := compare(t, a, bb, diff.Options{Key: "id", TempDir: tmp, RunBytes: 1})
	if !reflect.DeepEqual(inMem, onDisk) || sMem != sDisk {
		t.Errorf("spilled comparison differs:\n%+v %v\n%+v %v", sMem, inMem, sDisk, onDisk)
	}
	if len(onDisk[diff.StatusChanged]) != 6 || len(onDisk[diff.OutputChanged]) != 10 || len(onDisk[diff.Added]) != 1 || sDisk.Unchanged != 284 {
		t.Errorf("summary %+v", sDisk)
	}
	// Keys sort as canonical JSON bytes: 1, 1000, 101, ...
	if onDisk[diff.OutputChanged][0] != `1 1:{"v":1} 298:{"v":1,"new":true}` {
		t.Errorf("first output change %q", onDisk[diff.OutputChanged][0])
	}
	if left, _ := os.ReadDir(tmp); len(left) != 0 {
		t.Errorf("left in the temporary directory: %v", left)
	}
}

func TestDiffByKeyTrouble(t *testing.T) {
	ctx := context.Background()
	b := memBucket(t)
	a := writeBatch(t, b, batchSpec{id: "night-1", items: []it{ok(`{"id":1}`, `1`), ok(`{"id":2}`, `2`)}})
	noKey := writeBatch(t, b, batchSpec{id: "night-2", items: []it{ok(`{"id":1}`, `1`), ok(`{"name":2}`, `2`)}})
	_, err := diff.Compare(ctx, a, noKey, diff.Options{Key: "id"}, func(diff.Change) error { return nil })
	if err == nil || !strings.Contains(err.Error(), `B (night-2): item 1: its input has no field "id" to match by: {"name":2}`) {
		t.Errorf("input without the key: %v", err)
	}
	// The staged input collected: by key is trouble, by index is fine.
	gone := writeBatch(t, b, batchSpec{id: "night-3", items: []it{ok(`{"id":1}`, `1`), ok(`{"id":2}`, `2`)}})
	if err := layout.DeletePrefix(ctx, b, manifests.InputPrefix("night-3", "")); err != nil {
		t.Fatal(err)
	}
	_, err = diff.Compare(ctx, gone, a, diff.Options{Key: "id"}, func(diff.Change) error { return nil })
	if err == nil || !strings.Contains(err.Error(), "A (night-3): its staged input") || !strings.Contains(err.Error(), "is gone") {
		t.Errorf("input gone: %v", err)
	}
	if s, _ := compare(t, gone, a, diff.Options{}); !s.Same() {
		t.Errorf("by index: %+v", s)
	}
	// A result object gone: trouble either way, naming the batch.
	if err := b.Delete(ctx, manifests.ResultKey("night-3", 0)); err != nil {
		t.Fatal(err)
	}
	_, err = diff.Compare(ctx, a, gone, diff.Options{}, func(diff.Change) error { return nil })
	if err == nil || !strings.Contains(err.Error(), "B (night-3): pre/fix/batches/night-3/results/000000.jsonl.zst: listed in the manifest but missing") {
		t.Errorf("result object gone: %v", err)
	}
}

func TestCanonical(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{`{"b":1,"a":[true,null,{"d":"x","c":2}]}`, `{"a":[true,null,{"c":2,"d":"x"}],"b":1}`},
		{` 1.0 `, `1`},
		{`1e2`, `100`},
		{`-0`, `0`},
		{`-0.0`, `0`},
		{`2.50`, `2.5`},
		{`1.5e300`, `1.5e300`},
		{`123456789012345678901234567890`, `123456789012345678901234567890`},
		{`12345678901234567890123.0`, `12345678901234567890123`},
		{`0.1000000000000000055511151231257827`, `0.1000000000000000055511151231257827`},
		{`1e-400`, `1e-400`},
		{`0.00100`, `0.001`},
		{`1E-7`, `1e-7`},
		{`-12.340e1`, `-123.4`},
		{`100e-2`, `1`},
		{`1e21`, `1e21`},
		{`1e20`, `100000000000000000000`},
		{`"\ud83d\ude00"`, `"😀"`},
		{`"\\ud800"`, `"\\ud800"`},
		{` {"a" : "\ud800"} `, `{"a":"\ud800"}`},
		{`"\u0041<&>\u00e9"`, `"A<&>é"`},
		{`[]`, `[]`},
	} {
		got, err := diff.Canonical([]byte(tc.in))
		if err != nil || string(got) != tc.want {
			t.Errorf("Canonical(%s) = %s, %v; want %s", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{``, `{`, `1 2`, `nope`} {
		if _, err := diff.Canonical([]byte(bad)); err == nil {
			t.Errorf("Canonical(%q) accepted", bad)
		}
	}
	if diff.SameJSON([]byte(`1`), nil) || !diff.SameJSON(nil, nil) || diff.SameJSON([]byte(`nope`), []byte(`nope `)) {
		t.Error("SameJSON edge cases")
	}
	// Values a float64 or a decoder that maps half surrogates to U+FFFD
	// cannot tell apart are different; spellings of one value are not.
	for _, tc := range []struct {
		a, b string
		same bool
	}{
		{`0.1`, `0.1000000000000000055511151231257827`, false},
		{`1e-400`, `0`, false},
		{`9007199254740993.0`, `9007199254740992`, false},
		{`12345678901234567890123.0`, `12345678901234567890124`, false},
		{`"\ud800"`, `"\udc00"`, false},
		{`"\ud800"`, `"\ufffd"`, false},
		{`{"x":"\ud800"}`, `{"x":"\ufffd"}`, false},
		{`12345678901234567890123`, `12345678901234567890123.0`, true},
		{`0.5`, `5e-1`, true},
		{`{"x":"\ud800","y":1}`, `{ "x": "\ud800", "y": 1 }`, true},
	} {
		if got := diff.SameJSON([]byte(tc.a), []byte(tc.b)); got != tc.same {
			t.Errorf("SameJSON(%s, %s) = %v, want %v", tc.a, tc.b, got, tc.same)
		}
	}
}
