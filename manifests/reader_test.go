package manifests_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/batchpipe/batchpipe/blobstore"
	"github.com/batchpipe/batchpipe/manifests"
)

func TestResultsInInputOrder(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		open func(t testing.TB) (blobstore.Bucket, string)
	}{
		{"mem", func(t testing.TB) (blobstore.Bucket, string) { return memBucket(t, "") }},
		{"mem-prefix", func(t testing.TB) (blobstore.Bucket, string) { return memBucket(t, "pre/fix") }},
		{"file", fileBucket},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, _ := tc.open(t)
			s := spec{items: 1003, objects: 7, failEvery: 10}
			m := writeBatch(t, b, s)
			if p := blobstore.Prefix(b); p != "" && !strings.HasPrefix(m.Results[0].Key, p) {
				t.Fatalf("helper wrote key %s without prefix %s", m.Results[0].Key, p)
			}
			batch, err := manifests.Open(ctx, b, "batch-1")
			if err != nil {
				t.Fatal(err)
			}
			defer batch.Close()
			if batch.Manifest.Counts != m.Counts || len(batch.Manifest.Results) != 7 {
				t.Fatalf("manifest = %+v", batch.Manifest)
			}
			n := 0
			for line, err := range batch.Results(ctx) {
				if err != nil {
					t.Fatal(err)
				}
				want := s.lineFor(n)
				if line.Index != int64(n) || line.Status != want.Status || string(line.Output) != string(want.Output) {
					t.Fatalf("line %d = %+v, want %+v", n, line, want)
				}
				if want.Error != nil && (line.Error == nil || *line.Error != *want.Error) {
					t.Fatalf("line %d error = %+v, want %+v", n, line.Error, want.Error)
				}
				n++
			}
			if n != 1003 {
				t.Fatalf("Results yielded %d lines, want 1003", n)
			}

			var failed []int64
			for f, err := range batch.Failures(ctx) {
				if err != nil {
					t.Fatal(err)
				}
				if string(f.Input) != string(inputFor(int(f.Index))) || f.Error == nil {
					t.Fatalf("failure line %+v", f)
				}
				failed = append(failed, f.Index)
			}
			var want []int64
			for i := range 1003 {
				if s.fails(i) {
					want = append(want, int64(i))
				}
			}
			if !slices.Equal(failed, want) || len(want) != int(m.Counts.Failed) || len(want) != 100 {
				t.Fatalf("failures = %v, want %v", failed, want)
			}
			if err := batch.Verify(ctx); err != nil {
				t.Fatalf("Verify: %v", err)
			}
		})
	}
}

func TestResultsStopEarly(t *testing.T) {
	ctx := context.Background()
	b, _ := memBucket(t, "")
	writeBatch(t, b, spec{items: 100, objects: 4, failEvery: 7})
	batch, err := manifests.Open(ctx, b, "batch-1")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, err := range batch.Results(ctx) {
		if err != nil {
			t.Fatal(err)
		}
		if n++; n == 30 { // in the second object
			break
		}
	}
	for _, err := range batch.Failures(ctx) {
		if err != nil {
			t.Fatal(err)
		}
		break
	}
}

func TestNoFailures(t *testing.T) {
	ctx := context.Background()
	b, _ := memBucket(t, "")
	writeBatch(t, b, spec{items: 50, objects: 2})
	batch, err := manifests.Open(ctx, b, "batch-1")
	if err != nil {
		t.Fatal(err)
	}
	if batch.Manifest.Failures != nil {
		t.Fatal("Failures should be nil")
	}
	for f, err := range batch.Failures(ctx) {
		t.Fatalf("Failures yielded %+v, %v", f, err)
	}
	if err := batch.Verify(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestEmptyBatch(t *testing.T) {
	ctx := context.Background()
	b, _ := memBucket(t, "")
	writeBatch(t, b, spec{items: 0, objects: 0})
	batch, err := manifests.Open(ctx, b, "batch-1")
	if err != nil {
		t.Fatal(err)
	}
	for l, err := range batch.Results(ctx) {
		t.Fatalf("Results yielded %+v, %v", l, err)
	}
	if err := batch.Verify(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestResultsStopsAtBadObject(t *testing.T) {
	ctx := context.Background()
	b, _ := memBucket(t, "p")
	m := writeBatch(t, b, spec{items: 40, objects: 4})
	if err := b.Delete(ctx, rel(t, b, m.Results[2].Key)); err != nil {
		t.Fatal(err)
	}
	batch, err := manifests.Open(ctx, b, "batch-1")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	var last error
	for _, err := range batch.Results(ctx) {
		if err != nil {
			last = err
			continue
		}
		n++
	}
	if n != 20 || last == nil || !errors.Is(last, blobstore.ErrNotFound) || !strings.Contains(last.Error(), m.Results[2].Key) {
		t.Fatalf("yielded %d lines then %v; want 20 lines then a not-found error naming %s", n, last, m.Results[2].Key)
	}

	// A line out of place is an error too, naming the object.
	m = writeBatch(t, b, spec{id: "b2", items: 40, objects: 4})
	rewriteResult(t, b, &m, 1, func(ls []manifests.ResultLine) []manifests.ResultLine {
		ls[3].Index = 99
		return ls
	})
	batch, err = manifests.Open(ctx, b, "b2")
	if err != nil {
		t.Fatal(err)
	}
	last = nil
	for _, err := range batch.Results(ctx) {
		if err != nil {
			last = err
		}
	}
	if last == nil || !strings.Contains(last.Error(), m.Results[1].Key+": line 4: index 99, want 13") {
		t.Fatalf("err = %v", last)
	}
}

func TestOpenMissingBatch(t *testing.T) {
	ctx := context.Background()
	b, u := memBucket(t, "pre")
	_, err := manifests.Open(ctx, b, "nope")
	if !errors.Is(err, blobstore.ErrNotFound) {
		t.Fatalf("err = %v, want ErrNotFound", err)
	}
	want := "no manifest for batch nope in " + u + ": the batch is unknown or not finished"
	if err.Error() != want {
		t.Fatalf("err = %q, want %q", err, want)
	}
	if _, err := manifests.Open(ctx, b, "../x"); err == nil {
		t.Fatal("Open accepted a bad batch id")
	}
	if _, err := manifests.OpenURL(ctx, u+"/batches/nope/manifest.json"); !errors.Is(err, blobstore.ErrNotFound) {
		t.Fatalf("OpenURL: err = %v, want ErrNotFound", err)
	}
}

func TestOpenRejectsOtherFormats(t *testing.T) {
	ctx := context.Background()
	b, _ := memBucket(t, "")
	m := writeBatch(t, b, spec{items: 5, objects: 1})
	m.Format = "batchpipe.manifest/v2"
	putManifest(t, b, m)
	_, err := manifests.Open(ctx, b, "batch-1")
	if err == nil || !strings.Contains(err.Error(), `manifest format "batchpipe.manifest/v2" is not supported`) {
		t.Fatalf("err = %v", err)
	}
	if err := b.Put(ctx, manifests.ManifestKey("x"), strings.NewReader("{")); err != nil {
		t.Fatal(err)
	}
	if _, err := manifests.Open(ctx, b, "x"); err == nil || !strings.Contains(err.Error(), "batches/x/manifest.json") {
		t.Fatalf("err = %v", err)
	}
}

func TestOpenURL(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		open func(t testing.TB) (blobstore.Bucket, string)
	}{
		{"file", fileBucket},
		{"mem", func(t testing.TB) (blobstore.Bucket, string) { return memBucket(t, "") }},
		{"mem-prefix", func(t testing.TB) (blobstore.Bucket, string) { return memBucket(t, "pre/fix") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, storeURL := tc.open(t)
			m := writeBatch(t, b, spec{id: "nightly-20261125T020000Z", items: 250, objects: 3, failEvery: 20})
			batch, err := manifests.OpenURL(ctx, storeURL+"/batches/nightly-20261125T020000Z/manifest.json")
			if err != nil {
				t.Fatal(err)
			}
			if batch.Manifest.BatchID != m.BatchID || batch.ManifestKey() != blobstore.Prefix(b)+manifests.ManifestKey(m.BatchID) {
				t.Fatalf("opened %s at %s", batch.Manifest.BatchID, batch.ManifestKey())
			}
			if got := batch.Bucket().URL(); got != storeURL {
				t.Fatalf("bucket URL %s, want %s", got, storeURL)
			}
			n := 0
			for _, err := range batch.Results(ctx) {
				if err != nil {
					t.Fatal(err)
				}
				n++
			}
			if n != 250 {
				t.Fatalf("%d lines", n)
			}
			if err := batch.Verify(ctx); err != nil {
				t.Fatal(err)
			}
			if err := batch.Close(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestSplitManifestURL(t *testing.T) {
	for _, tc := range []struct{ in, store, id, err string }{
		{in: "s3://bkt/pre/fix/batches/X/manifest.json", store: "s3://bkt/pre/fix", id: "X"},
		{in: "s3://bkt/batches/X/manifest.json?region=eu-west-1&endpoint=http://127.0.0.1:9000", store: "s3://bkt?region=eu-west-1&endpoint=http://127.0.0.1:9000", id: "X"},
		{in: "minio://127.0.0.1:9000/bkt/p/batches/b-1.x/manifest.json?secure=false", store: "minio://127.0.0.1:9000/bkt/p?secure=false", id: "b-1.x"},
		{in: "file:///data/store/batches/a_b/manifest.json", store: "file:///data/store", id: "a_b"},
		{in: "file:///batches/a/manifest.json", store: "file:///", id: "a"},
		{in: "mem://t/batches/a/manifest.json", store: "mem://t", id: "a"},
		{in: "mem://t/x/batches/batches/batches/manifest.json", store: "mem://t/x/batches", id: "batches"},
		{in: "s3://bkt/pre/batches/X/results/000000.jsonl.zst", err: "does not end in /manifest.json"},
		{in: "s3://bkt/pre/X/manifest.json", err: "no batches/<id>/ before manifest.json"},
		{in: "s3://bkt/batches//manifest.json", err: "batch id is empty"},
		{in: "/local/batches/X/manifest.json", err: "no scheme"},
	} {
		store, id, err := manifests.SplitManifestURL(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: err = %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || store != tc.store || id != tc.id {
			t.Errorf("%s: got %q, %q, %v; want %q, %q", tc.in, store, id, err, tc.store, tc.id)
		}
	}
}

// TestIterationMemoryBounded reads a batch far bigger than the memory the
// iteration may use: one object is open at a time, and nothing is kept.
func TestIterationMemoryBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a 200-object batch")
	}
	ctx := context.Background()
	b, _ := memBucket(t, "big")
	const objects, per = 200, 1000
	writeBatch(t, b, spec{items: objects * per, objects: objects, failEvery: 97, pad: 300})
	batch, err := manifests.Open(ctx, b, "batch-1")
	if err != nil {
		t.Fatal(err)
	}
	iterate := func(sample func(n int)) (lines int, bytes int64) {
		for l, err := range batch.Results(ctx) {
			if err != nil {
				t.Fatal(err)
			}
			lines++
			bytes += int64(len(l.Output))
			if sample != nil && lines%(10*per) == 0 {
				sample(lines)
			}
		}
		return lines, bytes
	}
	iterate(nil) // warm the decoder pool
	heap := func() uint64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapInuse
	}
	base := heap()
	var peak uint64
	lines, total := iterate(func(int) { peak = max(peak, heap()) })
	if lines != objects*per {
		t.Fatalf("%d lines", lines)
	}
	growth := int64(peak) - int64(base)
	t.Logf("%d lines, %d MB of output; heap in use grew by %d KB at most", lines, total>>20, growth>>10)
	if total < 50<<20 {
		t.Fatalf("only %d bytes of output: the test proves nothing", total)
	}
	if growth > 8<<20 {
		t.Fatalf("heap in use grew by %d MB while iterating", growth>>20)
	}
	if err := batch.Verify(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestIterationMemoryBoundedLargeStore reads a batch whose stored result
// objects total over 200 MB from the file store.
func TestIterationMemoryBoundedLargeStore(t *testing.T) {
	if testing.Short() {
		t.Skip("writes over 200 MB")
	}
	ctx := context.Background()
	b, _ := fileBucket(t)
	const objects, per = 100, 1000
	m := writeBatch(t, b, spec{items: objects * per, objects: objects, pad: 2800, noisy: true})
	var stored int64
	for _, r := range m.Results {
		stored += r.Size
	}
	if stored < 200<<20 {
		t.Fatalf("result objects total %d MB, want at least 200 MB", stored>>20)
	}
	batch, err := manifests.Open(ctx, b, m.BatchID)
	if err != nil {
		t.Fatal(err)
	}
	heap := func() uint64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapInuse
	}
	base := heap()
	var peak uint64
	lines := 0
	for _, err := range batch.Results(ctx) {
		if err != nil {
			t.Fatal(err)
		}
		lines++
		if lines%(5*per) == 0 {
			peak = max(peak, heap())
		}
	}
	growth := int64(peak) - int64(base)
	t.Logf("%d lines from %d MB of stored objects; heap in use grew by %d KB at most", lines, stored>>20, growth>>10)
	if lines != objects*per || growth > 16<<20 {
		t.Fatalf("%d lines; heap grew by %d MB", lines, growth>>20)
	}
}

// TestLinesWithAndWithoutNullKeys: lines written before output and error
// were on every line (only the one that applies, as omitempty left them)
// read and verify as the lines written now do.
func TestLinesWithAndWithoutNullKeys(t *testing.T) {
	ctx := context.Background()
	b, _ := memBucket(t, "pre")
	s := spec{items: 40, objects: 2, failEvery: 5}
	m := writeBatch(t, b, s)
	type oldLine struct { // ResultLine before the keys were always there
		Index      int64                `json:"index"`
		Status     string               `json:"status"`
		Output     json.RawMessage      `json:"output,omitempty"`
		Error      *manifests.ItemError `json:"error,omitempty"`
		Attempts   int                  `json:"attempts"`
		DurationMS int64                `json:"duration_ms"`
	}
	var old []string
	for i := range m.Results[0].Items {
		l := s.lineFor(int(i))
		data, _ := json.Marshal(oldLine{l.Index, l.Status, l.Output, l.Error, l.Attempts, l.DurationMS})
		old = append(old, string(data))
	}
	if strings.Contains(strings.Join(old, "\n"), "null") {
		t.Fatal("setup: old lines hold null")
	}
	data := compress(t, old...)
	if err := b.Put(ctx, rel(t, b, m.Results[0].Key), bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	m.Results[0].Size, m.Results[0].SHA256 = sizeSum(data)
	putManifest(t, b, m)
	if new := readLines[map[string]json.RawMessage](t, b, rel(t, b, m.Results[1].Key)); string(new[3]["output"]) != "null" || string(new[0]["error"]) != "null" {
		t.Fatalf("setup: new lines %v", new[:4])
	}

	batch, err := manifests.Open(ctx, b, "batch-1")
	if err != nil {
		t.Fatal(err)
	}
	defer batch.Close()
	n := 0
	for line, err := range batch.Results(ctx) {
		if err != nil {
			t.Fatal(err)
		}
		if want := s.lineFor(n); !reflect.DeepEqual(line, want) {
			t.Fatalf("line %d = %+v, want %+v", n, line, want)
		}
		n++
	}
	if n != s.items {
		t.Fatalf("%d lines, want %d", n, s.items)
	}
	if err := batch.Verify(ctx); err != nil {
		t.Fatal(err)
	}
}
