// Package blobstoretest is the conformance suite every blobstore driver passes,
// in the spirit of gocloud's drivertest and thanos' acceptance test: Run opens
// buckets through blobstore.Open, with and without a key prefix, and checks
// every promise of the Bucket interface against the real backend.
package blobstoretest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/url"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/batchpipe/batchpipe/blobstore"
)

// Harness tells the suite how to reach a driver's backend.
type Harness struct {
	// NewURL returns the URL of a fresh, empty bucket (or directory). Each
	// call must return a namespace no other call shares.
	NewURL func(t *testing.T) string
	// WithPrefix returns base with a key prefix added. Nil means: append the
	// prefix to the URL's path, which suits every driver whose path after the
	// bucket is a prefix (s3, minio, mem).
	WithPrefix func(t *testing.T, base, prefix string) string
	// MissingBucketURL returns a URL naming a bucket that does not exist;
	// nil when the driver has no such notion (mem).
	MissingBucketURL func(t *testing.T) string
	// InMemory says objects live in process memory, so the bounded-memory
	// checks on large objects do not apply.
	InMemory bool
}

// LargeSize is the size of the streamed large object.
const LargeSize = 96 << 20

// MaxHeapGrowth bounds how much the heap may grow while LargeSize bytes are
// written or read: a driver that buffers whole objects fails.
const MaxHeapGrowth = 48 << 20

// Run runs the whole suite against h, once without and once with a prefix.
func Run(t *testing.T, h Harness) {
	if h.WithPrefix == nil {
		h.WithPrefix = func(_ *testing.T, base, prefix string) string { return appendPath(base, prefix) }
	}
	t.Run("NoPrefix", func(t *testing.T) { runAll(t, h, "") })
	t.Run("Prefix", func(t *testing.T) { runAll(t, h, "tenant one/batch+p=1/") })
}

func appendPath(base, prefix string) string {
	u, err := url.Parse(base)
	if err != nil {
		panic(err)
	}
	u.Path = strings.TrimSuffix(u.Path, "/") + "/" + prefix
	u.RawPath = ""
	return u.String()
}

// env is one bucket under test, and, when a prefix is set, the same
// namespace opened without it.
type env struct {
	h      Harness
	b      blobstore.Bucket
	raw    blobstore.Bucket // same bucket without the prefix
	prefix string
}

func open(t *testing.T, rawURL string) blobstore.Bucket {
	t.Helper()
	b, err := blobstore.Open(context.Background(), rawURL)
	if err != nil {
		t.Fatalf("Open(%s): %v", rawURL, err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

func newEnv(t *testing.T, h Harness, prefix string) *env {
	base := h.NewURL(t)
	e := &env{h: h, raw: open(t, base), prefix: prefix}
	if prefix == "" {
		e.b = e.raw
	} else {
		e.b = open(t, h.WithPrefix(t, base, prefix))
	}
	return e
}

func runAll(t *testing.T, h Harness, prefix string) {
	tests := []struct {
		name string
		fn   func(t *testing.T, e *env)
	}{
		{"RoundTripEmpty", testRoundTripEmpty},
		{"RoundTripSmall", testRoundTripSmall},
		{"RoundTripLargeStreamed", testRoundTripLarge},
		{"Overwrite", testOverwrite},
		{"RangedRead", testRangedRead},
		{"RangedReadLarge", testRangedReadLarge},
		{"Stat", testStat},
		{"NotFound", testNotFound},
		{"InvalidKeys", testInvalidKeys},
		{"ListPagesInOrder", testList},
		{"PrefixIsInvisible", testPrefixInvisible},
		{"Delete", testDelete},
		{"CancelledWriteLeavesNothing", testCancelledWrite},
		{"FailingReaderLeavesNothing", testFailingReader},
		{"ConcurrentWriters", testConcurrentWriters},
		{"OddKeys", testOddKeys},
		{"MissingBucket", testMissingBucket},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, newEnv(t, h, prefix)) })
	}
}

var ctx = context.Background()

func put(t *testing.T, b blobstore.Bucket, key string, data []byte) {
	t.Helper()
	if err := b.Put(ctx, key, bytes.NewReader(data)); err != nil {
		t.Fatalf("Put(%q): %v", key, err)
	}
}

func get(t *testing.T, b blobstore.Bucket, key string) []byte {
	t.Helper()
	data, err := blobstore.ReadAll(ctx, b, key)
	if err != nil {
		t.Fatalf("read %q: %v", key, err)
	}
	return data
}

func wantNotExist(t *testing.T, b blobstore.Bucket, key string) {
	t.Helper()
	if _, err := b.Stat(ctx, key); !errors.Is(err, blobstore.ErrNotFound) {
		t.Fatalf("Stat(%q) after a failed write = %v, want ErrNotFound (no partial object)", key, err)
	}
	for a, err := range b.List(ctx, "") {
		if err != nil {
			t.Fatalf("List: %v", err)
		}
		if strings.HasPrefix(a.Key, key) {
			t.Fatalf("List shows %q after a failed write of %q", a.Key, key)
		}
	}
}

func testRoundTripEmpty(t *testing.T, e *env) {
	put(t, e.b, "empty", nil)
	if got := get(t, e.b, "empty"); len(got) != 0 {
		t.Fatalf("empty object read back as %d bytes", len(got))
	}
	a, err := e.b.Stat(ctx, "empty")
	if err != nil || a.Size != 0 {
		t.Fatalf("Stat(empty) = %+v, %v; want size 0", a, err)
	}
}

func testRoundTripSmall(t *testing.T, e *env) {
	data := []byte("hello, batchpipe\n")
	put(t, e.b, "dir/small.txt", data)
	if got := get(t, e.b, "dir/small.txt"); !bytes.Equal(got, data) {
		t.Fatalf("read back %q, want %q", got, data)
	}
	if e.prefix != "" {
		if got := get(t, e.raw, e.prefix+"dir/small.txt"); !bytes.Equal(got, data) {
			t.Fatalf("object not stored under the prefix: %q", got)
		}
	}
}

// patternReader yields n pseudo-random bytes without holding them.
type patternReader struct {
	rng *rand.ChaCha8
	n   int64
}

func newPattern(seed byte, n int64) *patternReader {
	var s [32]byte
	s[0] = seed
	return &patternReader{rng: rand.NewChaCha8(s), n: n}
}

func (p *patternReader) Read(b []byte) (int, error) {
	if p.n <= 0 {
		return 0, io.EOF
	}
	if int64(len(b)) > p.n {
		b = b[:p.n]
	}
	n, _ := p.rng.Read(b)
	p.n -= int64(n)
	return n, nil
}

// onlyReader hides any WriterTo/Seeker/Len so drivers see a stream of unknown length.
type onlyReader struct{ r io.Reader }

func (o onlyReader) Read(p []byte) (int, error) { return o.r.Read(p) }

// peakHeapGrowth runs fn and returns how far the in-use heap grew above
// its level before fn, sampled every few milliseconds.
func peakHeapGrowth(fn func()) uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapInuse
	var peak atomic.Uint64
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			var m runtime.MemStats
			runtime.ReadMemStats(&m)
			if m.HeapInuse > base && m.HeapInuse-base > peak.Load() {
				peak.Store(m.HeapInuse - base)
			}
			select {
			case <-done:
				return
			case <-tick.C:
			}
		}
	}()
	fn()
	close(done)
	wg.Wait()
	return peak.Load()
}

func testRoundTripLarge(t *testing.T, e *env) {
	want := sha256.New()
	var putErr error
	growth := peakHeapGrowth(func() {
		putErr = e.b.Put(ctx, "large/object.bin", onlyReader{io.TeeReader(newPattern(1, LargeSize), want)})
	})
	if putErr != nil {
		t.Fatalf("Put large: %v", putErr)
	}
	t.Logf("heap growth while writing %d MiB: %d MiB", LargeSize>>20, growth>>20)
	if !e.h.InMemory && growth > MaxHeapGrowth {
		t.Errorf("writing %d MiB grew the heap by %d MiB (> %d MiB): the write is not streamed", LargeSize>>20, growth>>20, MaxHeapGrowth>>20)
	}
	a, err := e.b.Stat(ctx, "large/object.bin")
	if err != nil || a.Size != LargeSize {
		t.Fatalf("Stat large = %+v, %v; want size %d", a, err, LargeSize)
	}
	got := sha256.New()
	var n int64
	growth = peakHeapGrowth(func() {
		r, err := e.b.NewReader(ctx, "large/object.bin")
		if err != nil {
			t.Errorf("NewReader large: %v", err)
			return
		}
		defer r.Close()
		n, err = io.Copy(got, r)
		if err != nil {
			t.Errorf("reading large: %v", err)
		}
	})
	t.Logf("heap growth while reading: %d MiB", growth>>20)
	if !e.h.InMemory && growth > MaxHeapGrowth {
		t.Errorf("reading %d MiB grew the heap by %d MiB: the read is not streamed", LargeSize>>20, growth>>20)
	}
	if n != LargeSize || !bytes.Equal(got.Sum(nil), want.Sum(nil)) {
		t.Fatalf("large object read back as %d bytes with another sha256", n)
	}
}

func testOverwrite(t *testing.T, e *env) {
	put(t, e.b, "k", []byte("first version, longer"))
	put(t, e.b, "k", []byte("second"))
	if got := string(get(t, e.b, "k")); got != "second" {
		t.Fatalf("after overwrite read %q, want %q", got, "second")
	}
	n := 0
	for a, err := range e.b.List(ctx, "") {
		if err != nil {
			t.Fatal(err)
		}
		if a.Key == "k" {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("List shows key k %d times after an overwrite, want once", n)
	}
}

func testRangedRead(t *testing.T, e *env) {
	data := []byte("0123456789abcdefghij")
	put(t, e.b, "range", data)
	for _, c := range []struct {
		off, length int64
		want        string
	}{
		{0, 5, "01234"},
		{10, 4, "abcd"},
		{15, -1, "fghij"},
		{18, 100, "ij"},
		{3, 0, ""},
		{20, -1, ""}, // from the very end (a resumed read of a whole object)
		{25, -1, ""},
	} {
		r, err := e.b.NewRangeReader(ctx, "range", c.off, c.length)
		if err != nil {
			t.Fatalf("NewRangeReader(%d, %d): %v", c.off, c.length, err)
		}
		got, err := io.ReadAll(r)
		r.Close()
		if err != nil || string(got) != c.want {
			t.Errorf("range(%d, %d) = %q, %v; want %q", c.off, c.length, got, err, c.want)
		}
	}
	if _, err := e.b.NewRangeReader(ctx, "missing-range", 0, 0); !errors.Is(err, blobstore.ErrNotFound) {
		t.Errorf("empty range of a missing object = %v, want ErrNotFound", err)
	}
}

// RangedLargeSize is the size of the object testRangedReadLarge reads
// ranges of: several parts of every driver's multipart uploads.
const RangedLargeSize = 40<<20 + 12345

// testRangedReadLarge reads ranges of a streamed multipart object, from
// offsets inside and across its parts to its end, as a resumed staging
// does, and checks them against the bytes written.
func testRangedReadLarge(t *testing.T, e *env) {
	if err := e.b.Put(ctx, "large/ranged.bin", onlyReader{newPattern(7, RangedLargeSize)}); err != nil {
		t.Fatalf("Put: %v", err)
	}
	for _, c := range []struct{ off, length int64 }{
		{0, 100},
		{5<<20 - 3, 10},  // across the s3 driver's first part boundary
		{16<<20 - 1, 2},  // across the minio driver's
		{17<<20 + 3, -1}, // the rest, from inside a part
		{RangedLargeSize - 7, -1},
		{RangedLargeSize - 7, 100},
		{RangedLargeSize, -1},
	} {
		want := sha256.New()
		p := newPattern(7, RangedLargeSize)
		io.CopyN(io.Discard, p, c.off)
		wantN := RangedLargeSize - c.off
		if c.length >= 0 {
			wantN = min(wantN, c.length)
		}
		io.CopyN(want, p, wantN)
		r, err := e.b.NewRangeReader(ctx, "large/ranged.bin", c.off, c.length)
		if err != nil {
			t.Fatalf("NewRangeReader(%d, %d): %v", c.off, c.length, err)
		}
		got := sha256.New()
		n, err := io.Copy(got, r)
		r.Close()
		if err != nil || n != wantN || !bytes.Equal(got.Sum(nil), want.Sum(nil)) {
			t.Errorf("range(%d, %d): %d bytes (%v), want %d; same bytes: %v", c.off, c.length, n, err, wantN,
				bytes.Equal(got.Sum(nil), want.Sum(nil)))
		}
	}
}

func testStat(t *testing.T, e *env) {
	before := time.Now().Add(-time.Hour)
	put(t, e.b, "a/b/stat.txt", []byte("12345"))
	a, err := e.b.Stat(ctx, "a/b/stat.txt")
	if err != nil {
		t.Fatal(err)
	}
	if a.Key != "a/b/stat.txt" || a.Size != 5 {
		t.Errorf("Stat = %+v; want key a/b/stat.txt, size 5", a)
	}
	if a.ModTime.Before(before) || a.ModTime.After(time.Now().Add(time.Hour)) {
		t.Errorf("ModTime %v is not about now", a.ModTime)
	}
	if _, err := e.b.Stat(ctx, "a/b"); !errors.Is(err, blobstore.ErrNotFound) {
		t.Errorf("Stat of a key that is only a prefix = %v, want ErrNotFound", err)
	}
}

func testNotFound(t *testing.T, e *env) {
	if _, err := e.b.Stat(ctx, "nope"); !errors.Is(err, blobstore.ErrNotFound) {
		t.Errorf("Stat(missing) = %v, want ErrNotFound", err)
	}
	if r, err := e.b.NewReader(ctx, "no/such/object"); !errors.Is(err, blobstore.ErrNotFound) {
		if r != nil {
			r.Close()
		}
		t.Errorf("NewReader(missing) = %v, want ErrNotFound", err)
	} else if !strings.Contains(err.Error(), "no/such/object") {
		t.Errorf("not-found error %q does not name the key", err)
	}
	if _, err := e.b.NewRangeReader(ctx, "nope", 2, 3); !errors.Is(err, blobstore.ErrNotFound) {
		t.Errorf("NewRangeReader(missing) = %v, want ErrNotFound", err)
	}
	if ok, err := blobstore.Exists(ctx, e.b, "nope"); ok || err != nil {
		t.Errorf("Exists(missing) = %v, %v", ok, err)
	}
}

func testInvalidKeys(t *testing.T, e *env) {
	for _, key := range []string{"", "../escape", "a/../../b", "/abs", "a\x00b", `a\b`, "a//b", "a/", "./a", "a/./b", "\xff\xfe"} {
		err := e.b.Put(ctx, key, strings.NewReader("x"))
		if !errors.Is(err, blobstore.ErrInvalidKey) {
			t.Errorf("Put(%q) = %v, want ErrInvalidKey", key, err)
			continue
		}
		if !strings.Contains(err.Error(), strconv.Quote(key)) {
			t.Errorf("error %q does not name the key %q", err, key)
		}
		if _, err := e.b.Stat(ctx, key); !errors.Is(err, blobstore.ErrInvalidKey) {
			t.Errorf("Stat(%q) = %v, want ErrInvalidKey", key, err)
		}
		if r, err := e.b.NewReader(ctx, key); !errors.Is(err, blobstore.ErrInvalidKey) {
			if r != nil {
				r.Close()
			}
			t.Errorf("NewReader(%q) = %v, want ErrInvalidKey", key, err)
		}
		if err := e.b.Delete(ctx, key); !errors.Is(err, blobstore.ErrInvalidKey) {
			t.Errorf("Delete(%q) = %v, want ErrInvalidKey", key, err)
		}
	}
	var listErr error
	for _, err := range e.b.List(ctx, "../") {
		listErr = err
		break
	}
	if !errors.Is(listErr, blobstore.ErrInvalidKey) {
		t.Errorf("List(../) yielded %v, want ErrInvalidKey", listErr)
	}
}

// putMany writes keys with 16 concurrent writers; each object holds its key.
func putMany(t *testing.T, b blobstore.Bucket, keys []string) {
	t.Helper()
	ch := make(chan string)
	var wg sync.WaitGroup
	var failed atomic.Value
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range ch {
				if err := b.Put(ctx, k, strings.NewReader(k)); err != nil {
					failed.Store(err)
				}
			}
		}()
	}
	for _, k := range keys {
		ch <- k
	}
	close(ch)
	wg.Wait()
	if err, ok := failed.Load().(error); ok {
		t.Fatalf("Put: %v", err)
	}
}

func listKeys(t *testing.T, b blobstore.Bucket, prefix string) []string {
	t.Helper()
	var keys []string
	for a, err := range b.List(ctx, prefix) {
		if err != nil {
			t.Fatalf("List(%q): %v", prefix, err)
		}
		keys = append(keys, a.Key)
	}
	return keys
}

func testList(t *testing.T, e *env) {
	var inside []string
	for i := range 1100 {
		inside = append(inside, fmt.Sprintf("many/k%05d", 1099-i))
	}
	// "a-b" sorts before "a/b" ('-' < '/'), which a plain directory walk gets wrong.
	inside = append(inside, "many/a-b", "many/a/b", "many/a/c/d")
	outside := []string{"man", "manx/1", "many-x", "manz", "other/many/1"}
	putMany(t, e.b, append(slices.Clone(inside), outside...))

	want := slices.Sorted(slices.Values(inside))
	got := listKeys(t, e.b, "many/")
	if !slices.Equal(got, want) {
		t.Fatalf("List(many/) gave %d keys, want %d in lexical order; first got %v", len(got), len(want), got[:min(5, len(got))])
	}
	all := listKeys(t, e.b, "")
	if wantAll := slices.Sorted(slices.Values(append(slices.Clone(inside), outside...))); !slices.Equal(all, wantAll) {
		t.Fatalf("List(\"\") gave %d keys, want %d in lexical order", len(all), len(wantAll))
	}
	if got := listKeys(t, e.b, "many/k0109"); !slices.Equal(got, []string{"many/k01090", "many/k01091", "many/k01092", "many/k01093", "many/k01094", "many/k01095", "many/k01096", "many/k01097", "many/k01098", "many/k01099"}) {
		t.Fatalf("List(many/k0109) = %v", got)
	}
	// Sizes come with the listing.
	for a, err := range e.b.List(ctx, "many/a/b") {
		if err != nil || a.Size != int64(len("many/a/b")) {
			t.Fatalf("listed %+v, %v; want size %d", a, err, len("many/a/b"))
		}
	}
	// Stopping early is allowed.
	n := 0
	for range e.b.List(ctx, "many/") {
		n++
		if n == 3 {
			break
		}
	}
}

func testPrefixInvisible(t *testing.T, e *env) {
	if e.prefix == "" {
		t.Log("no prefix in this run; covered by the Prefix run")
		return
	}
	put(t, e.raw, "outside/x", []byte("x"))
	put(t, e.raw, strings.TrimSuffix(e.prefix, "/")+"-sibling", []byte("x"))
	put(t, e.b, "inside", []byte("y"))
	if got := listKeys(t, e.b, ""); !slices.Equal(got, []string{"inside"}) {
		t.Fatalf("prefixed List(\"\") = %q, want only [inside]", got)
	}
	if got := listKeys(t, e.raw, e.prefix); !slices.Equal(got, []string{e.prefix + "inside"}) {
		t.Fatalf("unprefixed List(%q) = %q", e.prefix, got)
	}
	if _, err := e.b.Stat(ctx, "outside/x"); !errors.Is(err, blobstore.ErrNotFound) {
		t.Fatalf("prefixed bucket sees an object outside its prefix: %v", err)
	}
}

func testDelete(t *testing.T, e *env) {
	put(t, e.b, "del/a", []byte("a"))
	put(t, e.b, "del/b", []byte("b"))
	if err := e.b.Delete(ctx, "del/a"); err != nil {
		t.Fatal(err)
	}
	wantNotExist(t, e.b, "del/a")
	if got := listKeys(t, e.b, "del/"); !slices.Equal(got, []string{"del/b"}) {
		t.Fatalf("after delete, List = %v", got)
	}
	if err := e.b.Delete(ctx, "del/a"); err != nil {
		t.Fatalf("deleting a missing object: %v, want nil", err)
	}
}

// cancellingReader cancels its context after limit bytes and keeps going.
type cancellingReader struct {
	r      io.Reader
	limit  int64
	n      int64
	cancel func()
}

func (c *cancellingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	if c.n >= c.limit {
		c.cancel()
	}
	return n, err
}

// failingReader returns an error after limit bytes.
type failingReader struct {
	r     io.Reader
	limit int64
	n     int64
}

var errReader = errors.New("reader broke on purpose")

func (f *failingReader) Read(p []byte) (int, error) {
	if f.n >= f.limit {
		return 0, errReader
	}
	if int64(len(p)) > f.limit-f.n {
		p = p[:f.limit-f.n]
	}
	n, err := f.r.Read(p)
	f.n += int64(n)
	return n, err
}

func testCancelledWrite(t *testing.T, e *env) {
	put(t, e.b, "cancel/existing", []byte("old"))
	for _, size := range []int64{64 << 10, 24 << 20} {
		for _, key := range []string{"cancel/new", "cancel/existing"} {
			c, cancel := context.WithCancel(ctx)
			r := &cancellingReader{r: newPattern(2, size), limit: size / 2, cancel: cancel}
			err := e.b.Put(c, key, onlyReader{r})
			cancel()
			if err == nil {
				t.Fatalf("Put(%q, %d bytes) with a context cancelled half way succeeded", key, size)
			}
		}
		wantNotExist(t, e.b, "cancel/new")
		if got := string(get(t, e.b, "cancel/existing")); got != "old" {
			t.Fatalf("a cancelled overwrite changed the object to %d bytes", len(got))
		}
	}
	// Already cancelled before starting.
	c, cancel := context.WithCancel(ctx)
	cancel()
	if err := e.b.Put(c, "cancel/early", strings.NewReader("x")); err == nil {
		t.Fatal("Put with a cancelled context succeeded")
	}
	wantNotExist(t, e.b, "cancel/early")
}

func testFailingReader(t *testing.T, e *env) {
	put(t, e.b, "fail/existing", []byte("old"))
	for _, size := range []int64{10, 24 << 20} {
		for _, key := range []string{"fail/new", "fail/existing"} {
			err := e.b.Put(ctx, key, &failingReader{r: newPattern(3, size*2), limit: size})
			if err == nil {
				t.Fatalf("Put(%q) with a reader failing after %d bytes succeeded", key, size)
			}
			if !errors.Is(err, errReader) && !strings.Contains(err.Error(), errReader.Error()) {
				t.Errorf("Put error %q does not carry the reader's error", err)
			}
		}
		wantNotExist(t, e.b, "fail/new")
		if got := string(get(t, e.b, "fail/existing")); got != "old" {
			t.Fatalf("a failed overwrite changed the object to %d bytes", len(got))
		}
	}
}

func testConcurrentWriters(t *testing.T, e *env) {
	var keys []string
	for i := range 80 {
		keys = append(keys, fmt.Sprintf("conc/%02d/obj-%d", i%8, i))
	}
	putMany(t, e.b, keys)
	for _, k := range keys {
		if got := string(get(t, e.b, k)); got != k {
			t.Fatalf("%s holds %q", k, got)
		}
	}
	if got := listKeys(t, e.b, "conc/"); len(got) != len(keys) {
		t.Fatalf("listed %d of %d concurrently written keys", len(got), len(keys))
	}
}

func testOddKeys(t *testing.T, e *env) {
	keys := []string{
		"with space/file name.txt",
		"unicode/ünïcødé/日本語.json",
		"eq=plus+/a=b+c",
		"pct%20/q?x#frag",
		"emoji/🙂.txt",
		"..dots/a..b/.hidden",
	}
	for _, k := range keys {
		put(t, e.b, k, []byte(k))
	}
	for _, k := range keys {
		if got := string(get(t, e.b, k)); got != k {
			t.Errorf("%q read back as %q", k, got)
		}
		if a, err := e.b.Stat(ctx, k); err != nil || a.Key != k {
			t.Errorf("Stat(%q) = %+v, %v", k, a, err)
		}
	}
	if got, want := listKeys(t, e.b, ""), slices.Sorted(slices.Values(keys)); !slices.Equal(got, want) {
		t.Errorf("List = %q, want %q", got, want)
	}
}

func testMissingBucket(t *testing.T, e *env) {
	if e.h.MissingBucketURL == nil {
		t.Log("driver has no notion of a missing bucket")
		return
	}
	u := e.h.MissingBucketURL(t)
	b, err := blobstore.Open(ctx, u)
	if err != nil {
		if errors.Is(err, blobstore.ErrBucketNotFound) {
			return
		}
		t.Fatalf("Open(missing bucket) = %v; want success or ErrBucketNotFound", err)
	}
	defer b.Close()
	if err := b.Put(ctx, "k", strings.NewReader("x")); !errors.Is(err, blobstore.ErrBucketNotFound) {
		t.Errorf("Put into a missing bucket = %v, want ErrBucketNotFound", err)
	}
	if r, err := b.NewReader(ctx, "k"); !errors.Is(err, blobstore.ErrBucketNotFound) {
		if r != nil {
			r.Close()
		}
		t.Errorf("NewReader in a missing bucket = %v, want ErrBucketNotFound", err)
	}
	var listErr error
	for _, err := range b.List(ctx, "") {
		listErr = err
		break
	}
	if !errors.Is(listErr, blobstore.ErrBucketNotFound) {
		t.Errorf("List of a missing bucket yielded %v, want ErrBucketNotFound", listErr)
	}
	if _, err := b.Stat(ctx, "k"); err == nil {
		t.Errorf("Stat in a missing bucket succeeded")
	}
}
