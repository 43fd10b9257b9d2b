package manifests_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/batchpipe/batchpipe/blobstore"
	"github.com/batchpipe/batchpipe/manifests"
	"github.com/batchpipe/batchpipe/zjsonl"
)

var memSeq atomic.Int64

// memBucket opens a fresh mem:// bucket, under prefix when it is not "".
func memBucket(t testing.TB, prefix string) (blobstore.Bucket, string) {
	t.Helper()
	u := fmt.Sprintf("mem://manifests-test-%d", memSeq.Add(1))
	if prefix != "" {
		u += "/" + prefix
	}
	b, err := blobstore.Open(context.Background(), u)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b, u
}

// fileBucket opens a file:// bucket on a fresh temporary directory.
func fileBucket(t testing.TB) (blobstore.Bucket, string) {
	t.Helper()
	u := "file://" + t.TempDir()
	b, err := blobstore.Open(context.Background(), u)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b, u
}

// spec describes a hand-built batch.
type spec struct {
	id        string
	items     int    // input items
	objects   int    // result objects (shards); items are spread evenly
	failEvery int    // item i fails when failEvery > 0 and i%failEvery == 3%failEvery
	status    string // "" derives succeeded / completed_with_failures
	skip      []int  // shards left out (for failed or canceled batches)
	pad       int    // bytes of padding in each output
	noisy     bool   // pad with pseudo-random text that zstd cannot shrink much
}

func (s spec) fails(i int) bool { return s.failEvery > 0 && i%s.failEvery == 3%s.failEvery }

// lineFor is the result line of item i.
func (s spec) lineFor(i int) manifests.ResultLine {
	if s.fails(i) {
		return manifests.ResultLine{Index: int64(i), Status: manifests.ItemFailed, Attempts: 3,
			Error: &manifests.ItemError{Type: "error", Message: fmt.Sprintf("item %d broke", i)}}
	}
	pad := strings.Repeat(fmt.Sprint(i%10), s.pad)
	if s.noisy {
		var seed [32]byte
		binary.LittleEndian.PutUint64(seed[:], uint64(i))
		raw := make([]byte, s.pad*3/4)
		rand.NewChaCha8(seed).Read(raw)
		pad = base64.StdEncoding.EncodeToString(raw)
	}
	out, _ := json.Marshal(map[string]any{"n": i, "pad": pad})
	return manifests.ResultLine{Index: int64(i), Status: manifests.ItemSucceeded, Output: out, Attempts: 1, DurationMS: 2}
}

func inputFor(i int) json.RawMessage { return json.RawMessage(fmt.Sprintf(`{"n":%d}`, i)) }

// writeBatch writes a valid batch as the pipeline would: result objects,
// the failures object and the manifest, keys in the manifest carrying the
// bucket's prefix.
func writeBatch(t testing.TB, b blobstore.Bucket, s spec) manifests.Manifest {
	t.Helper()
	if s.id == "" {
		s.id = "batch-1"
	}
	prefix := blobstore.Prefix(b)
	per := (s.items + s.objects - 1) / max(s.objects, 1)
	m := manifests.Manifest{
		Format: manifests.Format, BatchID: s.id, Processor: "example", Store: b.URL(),
		Input:     manifests.Input{Source: "inputs.jsonl", Items: int64(s.items), Shards: s.objects, ShardSize: per},
		StartedAt: time.Date(2026, 11, 25, 2, 0, 0, 0, time.UTC), FinishedAt: time.Date(2026, 11, 25, 2, 5, 0, 0, time.UTC),
		Results: []manifests.Result{},
	}
	var failed []manifests.FailureLine
	for shard := 0; shard < s.objects; shard++ {
		first, end := shard*per, min((shard+1)*per, s.items)
		if first >= end || containsInt(s.skip, shard) {
			continue
		}
		var lines []manifests.ResultLine
		for i := first; i < end; i++ {
			l := s.lineFor(i)
			lines = append(lines, l)
			if l.Status == manifests.ItemFailed {
				failed = append(failed, manifests.FailureLine{Index: l.Index, Input: inputFor(i), Error: l.Error})
			}
		}
		key := manifests.ResultKey(s.id, shard)
		size, sum := putLines(t, b, key, lines)
		r := manifests.Result{Key: prefix + key, FirstIndex: int64(first), Items: int64(len(lines)), Size: size, SHA256: sum}
		for _, l := range lines {
			if l.Status == manifests.ItemFailed {
				r.Failed++
			} else {
				r.Succeeded++
			}
		}
		m.Results = append(m.Results, r)
		m.Counts.Items += r.Items
		m.Counts.Succeeded += r.Succeeded
		m.Counts.Failed += r.Failed
	}
	if len(failed) > 0 {
		putLines(t, b, manifests.FailuresKey(s.id), failed)
		m.Failures = &manifests.Failures{Key: prefix + manifests.FailuresKey(s.id), Items: int64(len(failed))}
	}
	m.Status = s.status
	if m.Status == "" {
		m.Status = manifests.StatusSucceeded
		if m.Counts.Failed > 0 {
			m.Status = manifests.StatusCompletedWithFailures
		}
	}
	putManifest(t, b, m)
	return m
}

func containsInt(xs []int, x int) bool {
	for _, v := range xs {
		if v == x {
			return true
		}
	}
	return false
}

// putLines writes lines as a zstd JSON-lines object and returns its size
// and sha256.
func putLines[T any](t testing.TB, b blobstore.Bucket, key string, lines []T) (int64, string) {
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

func putManifest(t testing.TB, b blobstore.Bucket, m manifests.Manifest) {
	t.Helper()
	data, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Put(context.Background(), manifests.ManifestKey(m.BatchID), bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
}

// readLines decodes a whole object (small test objects only).
func readLines[T any](t testing.TB, b blobstore.Bucket, key string) []T {
	t.Helper()
	r, err := b.NewReader(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	zr, err := zjsonl.NewReader(r)
	if err != nil {
		t.Fatal(err)
	}
	defer zr.Close()
	var out []T
	for {
		var v T
		err := zr.Decode(&v)
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, v)
	}
}

// rel is a manifest key without the bucket's prefix.
func rel(t testing.TB, b blobstore.Bucket, key string) string {
	t.Helper()
	r, ok := strings.CutPrefix(key, blobstore.Prefix(b))
	if !ok {
		t.Fatalf("key %s lacks prefix %q", key, blobstore.Prefix(b))
	}
	return r
}

// rewriteResult re-encodes result object j with edit applied to its lines
// and updates its size and sha256 in the manifest, so only the content
// checks can notice.
func rewriteResult(t testing.TB, b blobstore.Bucket, m *manifests.Manifest, j int, edit func([]manifests.ResultLine) []manifests.ResultLine) {
	t.Helper()
	key := rel(t, b, m.Results[j].Key)
	lines := edit(readLines[manifests.ResultLine](t, b, key))
	m.Results[j].Size, m.Results[j].SHA256 = putLines(t, b, key, lines)
	putManifest(t, b, *m)
}

// rewriteFailures re-encodes the failures object with edit applied.
func rewriteFailures(t testing.TB, b blobstore.Bucket, m *manifests.Manifest, edit func([]manifests.FailureLine) []manifests.FailureLine) {
	t.Helper()
	key := rel(t, b, m.Failures.Key)
	putLines(t, b, key, edit(readLines[manifests.FailureLine](t, b, key)))
}

// compress encodes lines (JSON or not) as a zstd JSON-lines object.
func compress(t testing.TB, lines ...string) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zjsonl.NewWriter(&buf)
	for _, l := range lines {
		if err := zw.WriteRaw([]byte(l)); err != nil {
			t.Fatal(err)
		}
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// sizeSum is what a manifest lists for data.
func sizeSum(data []byte) (int64, string) {
	sum := sha256.Sum256(data)
	return int64(len(data)), hex.EncodeToString(sum[:])
}
