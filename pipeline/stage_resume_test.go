package pipeline_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/url"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/iotest"
	"time"

	"github.com/klauspost/compress/zstd"
	"go.temporal.io/sdk/testsuite"
	"go.temporal.io/sdk/worker"

	"github.com/batchpipe/batchpipe/blobstore"
	"github.com/batchpipe/batchpipe/inputs"
	"github.com/batchpipe/batchpipe/internal/testinfra"
	"github.com/batchpipe/batchpipe/layout"
	"github.com/batchpipe/batchpipe/manifests"
	"github.com/batchpipe/batchpipe/pipeline"
	"github.com/batchpipe/batchpipe/zjsonl"
)

// watchedBucket counts the PUTs per key and the bytes read through it, and
// can fail the PUT of one key.
type watchedBucket struct {
	blobstore.Bucket
	mu      sync.Mutex
	puts    map[string]int
	failKey string // Put of this key fails
	// failOnce clears failKey once it failed; failDelay waits before failing.
	failOnce  bool
	failDelay time.Duration
	read      atomic.Int64
	// readLimit > 0 cuts every read off after that many bytes with errCut.
	readLimit int64
	// The offset of the last ranged read from past byte 0, and the bytes
	// read through such reads.
	rangedFrom, rangedRead atomic.Int64
}

func watch(b blobstore.Bucket) *watchedBucket {
	return &watchedBucket{Bucket: b, puts: map[string]int{}}
}

var errStoreDown = errors.New("store down (test)")

func (w *watchedBucket) Put(ctx context.Context, key string, r io.Reader) error {
	w.mu.Lock()
	w.puts[key]++
	fail := key == w.failKey
	if fail && w.failOnce {
		w.failKey = ""
	}
	w.mu.Unlock()
	if fail {
		io.Copy(io.Discard, r)
		time.Sleep(w.failDelay)
		return errStoreDown
	}
	return w.Bucket.Put(ctx, key, r)
}

func (w *watchedBucket) NewReader(ctx context.Context, key string) (io.ReadCloser, error) {
	return w.NewRangeReader(ctx, key, 0, -1)
}

func (w *watchedBucket) NewRangeReader(ctx context.Context, key string, off, n int64) (io.ReadCloser, error) {
	r, err := w.Bucket.NewRangeReader(ctx, key, off, n)
	if err != nil {
		return nil, err
	}
	if w.readLimit > 0 {
		r = cutAfter(r, w.readLimit)
	}
	if off > 0 {
		w.rangedFrom.Store(off)
		return countedReader{r, &w.read, &w.rangedRead}, nil
	}
	return countedReader{r, &w.read, nil}, nil
}

func (w *watchedBucket) putsOf(key string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.puts[key]
}

var errCut = errors.New("connection reset (test)")

// cutReader fails after n bytes, as a dropped connection does.
type cutReader struct {
	io.Reader
	io.Closer
}

func cutAfter(r io.ReadCloser, n int64) io.ReadCloser {
	return cutReader{io.MultiReader(io.LimitReader(r, n), iotest.ErrReader(errCut)), r}
}

type countedReader struct {
	io.ReadCloser
	n, also *atomic.Int64
}

func (c countedReader) Read(p []byte) (int, error) {
	n, err := c.ReadCloser.Read(p)
	c.n.Add(int64(n))
	if c.also != nil {
		c.also.Add(int64(n))
	}
	return n, err
}

// resumeInput is n JSON lines with a blank line after every 777th (so
// lines and item indexes differ), and the same items as staged lines.
func resumeInput(n int) (input, items []byte) {
	var in, want bytes.Buffer
	for i := range n {
		line := fmt.Sprintf(`{"n":%d,"name":"item %d","pad":"%x"}`, i, i, i*7919)
		in.WriteString(line + "\n")
		want.WriteString(line + "\n")
		if i%777 == 776 {
			in.WriteString("\n")
		}
	}
	return in.Bytes(), want.Bytes()
}

func zstdOf(t testing.TB, data []byte) []byte {
	var z bytes.Buffer
	enc, err := zstd.NewWriter(&z)
	if err != nil {
		t.Fatal(err)
	}
	enc.Write(data)
	enc.Close()
	return z.Bytes()
}

// stagedLines reads every shard of a staging back, in order.
func stagedLines(t *testing.T, b blobstore.Bucket, st pipeline.Staged) []byte {
	t.Helper()
	var out bytes.Buffer
	for i := range st.Shards {
		data, err := blobstore.ReadAll(context.Background(), b, manifests.InputShardKey(st.BatchID, "", i))
		if err != nil {
			t.Fatalf("shard %d: %v", i, err)
		}
		zr, err := zjsonl.NewReader(bytes.NewReader(data))
		if err != nil {
			t.Fatal(err)
		}
		for {
			line, err := zr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("shard %d: %v", i, err)
			}
			out.Write(line)
			out.WriteByte('\n')
		}
		zr.Close()
	}
	return out.Bytes()
}

// TestStageObjectResumes interrupts a staging after some shards (the store
// failing one shard's PUT, or the context cancelled after a checkpoint),
// then resumes from the last checkpoint it reported: every item is staged
// once, in order, with the one-pass sha256; the shards before the
// checkpoint are not written again; and an uncompressed object is read
// again only from the checkpoint's byte offset.
func TestStageObjectResumes(t *testing.T) {
	const n = 25_000
	plain, want := resumeInput(n)
	for _, format := range []string{"jsonl", "jsonl.zst"} {
		data := plain
		if format == "jsonl.zst" {
			data = zstdOf(t, plain)
		}
		for _, interrupt := range []string{"store-fails", "cancel"} {
			t.Run(format+"/"+interrupt, func(t *testing.T) {
				ctx := context.Background()
				name := strings.NewReplacer("/", "-", ".", "-").Replace(t.Name())
				srcB, _ := blobstore.Open(ctx, "mem://"+name+"-src")
				key := "drop/in." + format
				if err := srcB.Put(ctx, key, bytes.NewReader(data)); err != nil {
					t.Fatal(err)
				}
				// Slots 6: 25,000 items over 24 shards is 1,042 a shard.
				opts := pipeline.ObjectStaging{Source: "mem://x/" + key, Slots: 6}

				refB, _ := blobstore.Open(ctx, "mem://"+name+"-ref")
				ref, err := pipeline.StageObject(ctx, refB, "b", srcB, key, opts)
				if err != nil {
					t.Fatal(err)
				}
				if ref.Items != n || ref.ShardSize != 1042 || ref.Shards != 24 {
					t.Fatalf("one pass staged %+v", ref)
				}

				const k = 7
				dst, _ := blobstore.Open(ctx, "mem://"+name+"-dst")
				w := watch(dst)
				var (
					mu   sync.Mutex
					last *pipeline.StageCheckpoint
				)
				ictx, cancel := context.WithCancel(ctx)
				defer cancel()
				first := opts
				first.Checkpoint = func(cp pipeline.StageCheckpoint) {
					mu.Lock()
					defer mu.Unlock()
					if last != nil && cp.Shards <= last.Shards {
						t.Errorf("checkpoint at shard %d after one at %d", cp.Shards, last.Shards)
					}
					last = &cp
					// Shards are stored concurrently: one checkpoint may
					// cover several, so cancel at the first past k-1.
					if interrupt == "cancel" && cp.Shards >= k {
						cancel()
					}
				}
				if interrupt == "store-fails" {
					w.failKey = manifests.InputShardKey("b", "", k)
				}
				_, err = pipeline.StageObject(ictx, w, "b", srcB, key, first)
				if err == nil {
					t.Fatal("interrupted staging succeeded")
				}
				if last == nil || last.Shards < k || interrupt == "store-fails" && last.Shards != k {
					t.Fatalf("last checkpoint %+v after %v, want shard %d", last, err, k)
				}
				cp := *last
				if cp.ShardSize != 1042 || cp.Items != int64(cp.Shards)*1042 {
					t.Fatalf("checkpoint %+v", cp)
				}
				if format == "jsonl" {
					// The offset is the end of the checkpoint's last item's line.
					if i := bytes.Index(plain, fmt.Appendf(nil, `{"n":%d,`, cp.Items)); int64(i) != cp.Offset &&
						int64(i) != cp.Offset+1 /* a blank line in between */ {
						t.Fatalf("checkpoint offset %d; item %d starts at %d", cp.Offset, cp.Items, i)
					}
				} else if cp.Offset != -1 {
					t.Fatalf("compressed checkpoint offset %d, want -1", cp.Offset)
				}

				// Resume: a retry on another worker, whose own rule would pick
				// another shard size (Slots 1), from the checkpoint.
				w2 := watch(dst)
				src2 := watch(srcB)
				again := pipeline.ObjectStaging{Source: opts.Source, Slots: 1, Resume: &cp}
				st, err := pipeline.StageObject(ctx, w2, "b", src2, key, again)
				if err != nil {
					t.Fatal(err)
				}
				if st.Items != ref.Items || st.Shards != ref.Shards || st.ShardSize != ref.ShardSize || st.SHA256 != ref.SHA256 {
					t.Fatalf("resumed staging %+v, one pass %+v", st, ref)
				}
				if got := stagedLines(t, dst, st); !bytes.Equal(got, want) {
					t.Fatalf("staged items differ from the input (%d bytes, want %d)", len(got), len(want))
				}
				for i := range st.Shards {
					p := w2.putsOf(manifests.InputShardKey("b", "", i))
					if i < cp.Shards && p != 0 || i >= cp.Shards && p != 1 {
						t.Errorf("shard %d written %d times on resume (checkpoint at %d)", i, p, cp.Shards)
					}
				}
				read := src2.read.Load()
				if format == "jsonl" {
					if rest := int64(len(data)) - cp.Offset; read != rest {
						t.Errorf("resume read %d bytes, want the %d after the checkpoint", read, rest)
					}
				} else if read != int64(len(data)) {
					t.Errorf("compressed resume read %d bytes, want all %d", read, len(data))
				}
				t.Logf("checkpoint at shard %d (offset %d): resume read %d of %d bytes", cp.Shards, cp.Offset, read, len(data))
			})
		}
	}
}

// TestStageObjectResumeKeepsLinesAndCleansUp: a bad line after the
// checkpoint is reported with its own line number and byte offset after a
// resume, and nothing staged is left behind.
func TestStageObjectResumeKeepsLinesAndCleansUp(t *testing.T) {
	good, _ := resumeInput(20_000)
	badLine := bytes.Count(good, []byte("\n")) + 1
	input := append(bytes.Clone(good), "{\"n\":20000,\"cut\n"...)
	for _, format := range []string{"jsonl", "jsonl.zst"} {
		t.Run(format, func(t *testing.T) {
			ctx := context.Background()
			data := input
			if format == "jsonl.zst" {
				data = zstdOf(t, input)
			}
			name := "resume-bad-" + strings.ReplaceAll(format, ".", "-")
			src, _ := blobstore.Open(ctx, "mem://"+name+"-src")
			key := "in." + format
			src.Put(ctx, key, bytes.NewReader(data))
			dst, _ := blobstore.Open(ctx, "mem://"+name+"-dst")
			// The first attempt loses its connection 3/4 through the object.
			cut := watch(src)
			cut.readLimit = int64(len(data) * 3 / 4)
			var last pipeline.StageCheckpoint
			_, err := pipeline.StageObject(ctx, dst, "b", cut, key, pipeline.ObjectStaging{ShardSize: 1000,
				Checkpoint: func(cp pipeline.StageCheckpoint) { last = cp }})
			if !errors.Is(err, errCut) || last.Shards < 1 {
				t.Fatalf("first attempt: %v, checkpoint %+v", err, last)
			}
			if ok, _ := blobstore.Exists(ctx, dst, manifests.InputShardKey("b", "", 0)); !ok {
				t.Fatal("a failed read deleted the shards stored (nothing left to resume)")
			}
			_, err = pipeline.StageObject(ctx, dst, "b", src, key, pipeline.ObjectStaging{ShardSize: 1000, Resume: &last})
			wantPrefix := fmt.Sprintf("%s:%d: invalid JSON", key, badLine)
			if err == nil || !strings.HasPrefix(err.Error(), wantPrefix) {
				t.Fatalf("resumed staging: %v, want %q…", err, wantPrefix)
			}
			if format == "jsonl" {
				if want := fmt.Sprintf("(line %d starts at byte offset %d of the object)", badLine, len(good)); !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not say %q", err, want)
				}
			} else if !strings.Contains(err.Error(), "byte offset") {
				t.Errorf("error %q names no byte offset", err)
			}
			for a, err := range dst.List(ctx, "") {
				t.Fatalf("left %s (%v) after a rejected input", a.Key, err)
			}
		})
	}
}

// TestStageObjectTruncatedZstd names the line and byte offset where a cut
// compressed object breaks.
func TestStageObjectTruncatedZstd(t *testing.T) {
	ctx := context.Background()
	plain, _ := resumeInput(20_000)
	z := zstdOf(t, plain)
	z = z[:len(z)*2/3]
	src, _ := blobstore.Open(ctx, "mem://trunc-src")
	src.Put(ctx, "in.jsonl.zst", bytes.NewReader(z))
	dst, _ := blobstore.Open(ctx, "mem://trunc-dst")
	_, err := pipeline.StageObject(ctx, dst, "b", src, "in.jsonl.zst", pipeline.ObjectStaging{ShardSize: 1000})
	if err == nil || !strings.Contains(err.Error(), "truncated zstd data") || !strings.Contains(err.Error(), "byte offset") {
		t.Fatalf("err = %v, want truncated zstd data with a byte offset", err)
	}
	t.Log(err)
	for a := range dst.List(ctx, "") {
		t.Fatalf("left %s", a.Key)
	}
}

// TestStageObjectStartsOverOnAnotherObject: a checkpoint of an object
// since replaced is not resumed from.
func TestStageObjectStartsOverOnAnotherObject(t *testing.T) {
	ctx := context.Background()
	plain, want := resumeInput(3000)
	src, _ := blobstore.Open(ctx, "mem://replaced-src")
	src.Put(ctx, "in.jsonl", bytes.NewReader(plain))
	dst, _ := blobstore.Open(ctx, "mem://replaced-dst")
	w := watch(dst)
	w.failKey = manifests.InputShardKey("b", "", 1)
	var last pipeline.StageCheckpoint
	pipeline.StageObject(ctx, w, "b", src, "in.jsonl", pipeline.ObjectStaging{ShardSize: 1000,
		Checkpoint: func(cp pipeline.StageCheckpoint) { last = cp }})
	if last.Shards != 1 {
		t.Fatalf("checkpoint %+v", last)
	}
	other, otherWant := resumeInput(2500)
	src.Put(ctx, "in.jsonl", bytes.NewReader(other))
	st, err := pipeline.StageObject(ctx, dst, "b", src, "in.jsonl", pipeline.ObjectStaging{ShardSize: 1000, Resume: &last})
	if err != nil || st.Items != 2500 || st.Shards != 3 {
		t.Fatalf("staged %+v, %v", st, err)
	}
	if got := stagedLines(t, dst, st); !bytes.Equal(got, otherWant) || bytes.Equal(got, want) {
		t.Fatal("staged items are not the new object's")
	}
	if _, err := layout.ReadStaged(ctx, dst, "b", ""); err != nil {
		t.Fatal(err)
	}
}

// watchedStores are the buckets the "watched" scheme opens: watched://name
// is mem://name seen through the watchedBucket of that name.
var (
	watchedMu     sync.Mutex
	watchedStores = map[string]*watchedBucket{}
	watchedOnce   sync.Once
)

func watchedStore(t *testing.T, name string) (*watchedBucket, string) {
	t.Helper()
	watchedOnce.Do(func() {
		blobstore.Register("watched", func(ctx context.Context, u *url.URL) (blobstore.Driver, string, error) {
			watchedMu.Lock()
			defer watchedMu.Unlock()
			w := watchedStores[u.Host]
			if w == nil {
				return nil, "", fmt.Errorf("no watched store %q", u.Host)
			}
			return nopClose{w}, "", nil
		})
	})
	mem, err := blobstore.Open(context.Background(), "mem://watched-"+name)
	if err != nil {
		t.Fatal(err)
	}
	w := watch(mem)
	watchedMu.Lock()
	watchedStores[name] = w
	watchedMu.Unlock()
	return w, "watched://" + name
}

// nopClose keeps the Stores' Close from closing the test's bucket.
type nopClose struct{ *watchedBucket }

func (nopClose) Close() error { return nil }

// TestStageInputResumesFromHeartbeat runs a batch whose input object's
// staging fails at shard 7 (the store refuses it) on the in-process
// Temporal server: the activity's retry resumes from the checkpoint in its
// heartbeat details, with a ranged read from the shard boundary, writes
// none of the shards before it again, and the batch sees every item once.
func TestStageInputResumesFromHeartbeat(t *testing.T) {
	if temporalClient == nil {
		t.Skip("needs the Temporal server (not in -short mode)")
	}
	ctx := context.Background()
	const n = 25_000
	plain, want := resumeInput(n)
	w, store := watchedStore(t, "stage-heartbeat")
	if err := w.Put(ctx, "drop/in.jsonl", bytes.NewReader(plain)); err != nil {
		t.Fatal(err)
	}
	const k = 7
	id := "stage-resume-hb"
	w.mu.Lock()
	w.failKey, w.failOnce, w.failDelay = manifests.InputShardKey(id, "", k), true, 500*time.Millisecond
	w.puts = map[string]int{}
	w.mu.Unlock()

	tq := fmt.Sprintf("test-stage-resume-%d", queueSeq.Add(1))
	wk := pipeline.NewWorker(temporalClient, tq, pipeline.WorkerOptions{
		Processors: testProcessors(), Logger: quietLog,
		// Send heartbeats on at once, so the checkpoint before the
		// failing shard reaches the server before the attempt fails.
		Worker: worker.Options{MaxHeartbeatThrottleInterval: 50 * time.Millisecond, DefaultHeartbeatThrottleInterval: 50 * time.Millisecond},
	})
	if err := wk.Start(); err != nil {
		t.Fatal(err)
	}
	defer wk.Stop()
	o := smallOpts("echo", 0, 100)
	o.Concurrency = 6 // shards of 1,042
	inputURL := store + "/drop/in.jsonl"
	run, err := pipeline.Start(ctx, temporalClient, tq, pipeline.BatchInput{BatchID: id, Store: store, Source: inputURL, InputURL: inputURL, Options: o})
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	var res pipeline.BatchResult
	if err := run.Get(wctx, &res); err != nil {
		t.Fatal(err)
	}
	if res.Counts.Items != n || res.Counts.Succeeded != n {
		t.Fatalf("batch %+v, want %d items succeeded", res, n)
	}
	st, err := layout.ReadStaged(ctx, w, id, "")
	if err != nil {
		t.Fatal(err)
	}
	_, wantSHA, _ := pipeline.Fingerprint(itemsOf(t, plain))
	if st.Items != n || st.ShardSize != 1042 || st.SHA256 != wantSHA {
		t.Fatalf("staged %+v, want %d items of sha256 %s", st, n, wantSHA)
	}
	if got := stagedLines(t, w, st); !bytes.Equal(got, want) {
		t.Fatal("staged items differ from the input")
	}
	for i := range st.Shards {
		// Shards from k on may have been stored by the first attempt too
		// before it saw shard k refused: the retry writes them again.
		p := w.putsOf(manifests.InputShardKey(id, "", i))
		if i < k && p != 1 || i == k && p != 2 || i > k && (p < 1 || p > 2) {
			t.Errorf("shard %d written %d times (the attempt failing at shard %d)", i, p, k)
		}
	}
	from, read := w.rangedFrom.Load(), w.rangedRead.Load()
	wantFrom := int64(bytes.Index(plain, fmt.Appendf(nil, `{"n":%d,`, k*1042)))
	if from != wantFrom && from != wantFrom-1 {
		t.Errorf("the retry read from byte %d, want the shard %d boundary at %d", from, k, wantFrom)
	}
	if read != int64(len(plain))-from {
		t.Errorf("the retry read %d bytes, want the %d after byte %d", read, int64(len(plain))-from, from)
	}
	t.Logf("retry resumed at byte %d of %d: read %d bytes", from, len(plain), read)
}

func itemsOf(t *testing.T, data []byte) pipeline.ItemSource {
	r, err := inputs.NewReader("in.jsonl", bytes.NewReader(data), inputs.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// genLines yields about size bytes of ~1 KB JSON lines, generated as read:
// half of each line's body random, half shared, so that zstd compresses
// it about twice, not a thousand times.
type genLines struct {
	size, n int64
	i       int
	body    string
	buf     []byte
	rnd     *rand.PCG
}

func newGenLines(size int64) *genLines {
	rnd := rand.New(rand.NewPCG(1, 2))
	const alnum = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	body := make([]byte, 1024)
	for i := range body {
		body[i] = alnum[rnd.IntN(len(alnum))]
	}
	return &genLines{size: size, body: string(body), rnd: rand.NewPCG(3, 4)}
}

func (g *genLines) Read(p []byte) (int, error) {
	for len(g.buf) == 0 {
		if g.n >= g.size {
			return 0, io.EOF
		}
		const alnum = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_"
		g.buf = fmt.Appendf(g.buf[:0], `{"n":%d,"name":"item %d","body":"%s`, g.i, g.i, g.body[g.i%97:][:450])
		for range 450 / 10 {
			v := g.rnd.Uint64()
			for range 10 {
				g.buf = append(g.buf, alnum[v&63])
				v >>= 6
			}
		}
		g.buf = append(g.buf, "\"}\n"...)
		g.i++
		g.n += int64(len(g.buf))
	}
	n := copy(p, g.buf)
	g.buf = g.buf[n:]
	return n, nil
}

// procStatus reads a field of /proc/self/status in MB (0 if unknown).
func procStatus(field string) float64 {
	data, _ := os.ReadFile("/proc/self/status")
	for _, l := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(l, field+":"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			return kb / 1024
		}
	}
	return 0
}

// BenchmarkStageObjectMinIO stages a generated JSON Lines object of
// BATCHPIPE_STAGE_BENCH_MB megabytes (default 512; ~1 KB items) from a real
// MinIO into the same bucket, as StageInput does, then the same staging
// interrupted half way and resumed from its checkpoint. It reports the
// staging's MB/s (of stored input bytes), the process's RSS before and its
// peak during the staging (VmHWM, reset first), and the bytes the resume
// read and its time. Run with -benchtime 1x:
//
//	BATCHPIPE_STAGE_BENCH_MB=2048 go test -run '^$' -bench StageObjectMinIO -benchtime 1x ./pipeline/
func BenchmarkStageObjectMinIO(b *testing.B) {
	mb := int64(512)
	if v := os.Getenv("BATCHPIPE_STAGE_BENCH_MB"); v != "" {
		mb, _ = strconv.ParseInt(v, 10, 64)
	}
	srv := testinfra.MinIOEndpoint(b)
	bucket := testinfra.NewBucket(b, srv)
	b.Setenv("MINIO_ROOT_USER", srv.AccessKey)
	b.Setenv("MINIO_ROOT_PASSWORD", srv.SecretKey)
	ctx := context.Background()
	store, err := blobstore.Open(ctx, fmt.Sprintf("minio://%s/%s?secure=false", srv.Endpoint, bucket))
	if err != nil {
		b.Fatal(err)
	}
	defer store.Close()
	for _, format := range []string{"jsonl", "jsonl.zst"} {
		b.Run(format, func(b *testing.B) {
			key := "drop/big." + format
			gen := newGenLines(mb << 20)
			var body io.Reader = gen
			if format == "jsonl.zst" {
				pr, pw := io.Pipe()
				go func() {
					enc, _ := zstd.NewWriter(pw, zstd.WithEncoderLevel(zstd.SpeedFastest))
					_, err := io.Copy(enc, gen)
					if err == nil {
						err = enc.Close()
					}
					pw.CloseWithError(err)
				}()
				body = pr
			}
			t0 := time.Now()
			if err := store.Put(ctx, key, body); err != nil {
				b.Fatal(err)
			}
			attrs, _ := store.Stat(ctx, key)
			b.Logf("uploaded %s: %d MB in %s", key, attrs.Size>>20, time.Since(t0).Round(time.Millisecond))
			defer store.Delete(ctx, key)
			b.ResetTimer()
			var full time.Duration
			var st pipeline.Staged
			for i := range b.N {
				id := fmt.Sprintf("bench-%s-%d", strings.ReplaceAll(format, ".", "-"), i)
				runtime.GC()
				rss := procStatus("VmRSS")
				os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) // reset VmHWM
				var ms runtime.MemStats
				runtime.ReadMemStats(&ms)
				heap0 := ms.HeapInuse
				var peakHeap atomic.Uint64
				done := make(chan struct{})
				go func() {
					for {
						var m runtime.MemStats
						runtime.ReadMemStats(&m)
						if m.HeapInuse > peakHeap.Load() {
							peakHeap.Store(m.HeapInuse)
						}
						select {
						case <-done:
							return
						case <-time.After(50 * time.Millisecond):
						}
					}
				}()
				t0 := time.Now()
				st, err = pipeline.StageObject(ctx, store, id, store, key, pipeline.ObjectStaging{Slots: 32})
				if err != nil {
					b.Fatal(err)
				}
				full = time.Since(t0)
				close(done)
				// The process holds the package's in-process Temporal server
				// too (TestMain): the staging's own share is the growth.
				b.ReportMetric(rss, "rss-before-MB")
				b.ReportMetric(procStatus("VmHWM"), "peak-rss-MB")
				b.ReportMetric(float64(peakHeap.Load()-min(heap0, peakHeap.Load()))/(1<<20), "heap-growth-MB")
				layout.DeleteStaged(ctx, store, id, "")
			}
			b.StopTimer()
			b.ReportMetric(float64(attrs.Size)/(1<<20)/full.Seconds(), "MB/s")
			b.ReportMetric(float64(gen.n)/(1<<20)/full.Seconds(), "text-MB/s")
			b.ReportMetric(float64(st.Items), "items")
			b.ReportMetric(float64(st.Shards), "shards")

			// Interrupted half way (the context cancelled, as when the
			// worker stops), then resumed from the last checkpoint.
			id := "bench-resume-" + strings.ReplaceAll(format, ".", "-")
			ictx, cancel := context.WithCancel(ctx)
			var (
				mu   sync.Mutex
				last pipeline.StageCheckpoint
			)
			_, err := pipeline.StageObject(ictx, store, id, store, key, pipeline.ObjectStaging{Slots: 32,
				Checkpoint: func(cp pipeline.StageCheckpoint) {
					mu.Lock()
					last = cp
					mu.Unlock()
					if cp.Items >= st.Items/2 {
						cancel()
					}
				}})
			cancel()
			if !errors.Is(err, context.Canceled) {
				b.Fatalf("interrupted staging: %v", err)
			}
			src := watch(store)
			t0 = time.Now()
			rst, err := pipeline.StageObject(ctx, store, id, src, key, pipeline.ObjectStaging{Slots: 32, Resume: &last})
			if err != nil {
				b.Fatal(err)
			}
			took := time.Since(t0)
			if rst.SHA256 != st.SHA256 || rst.Items != st.Items {
				b.Fatalf("resumed staging %+v, one pass %+v", rst, st)
			}
			layout.DeleteStaged(ctx, store, id, "")
			b.ReportMetric(float64(src.read.Load())/(1<<20), "resume-read-MB")
			b.ReportMetric(took.Seconds(), "resume-s")
			b.Logf("%s: %d MB, %d items in %d shards of %d: %s (%.0f MB/s); interrupted at shard %d (byte offset %d), resume read %d MB in %s",
				format, attrs.Size>>20, st.Items, st.Shards, st.ShardSize, full.Round(time.Millisecond),
				float64(attrs.Size)/(1<<20)/full.Seconds(), last.Shards, last.Offset, src.read.Load()>>20, took.Round(time.Millisecond))
		})
	}
}

// TestStageInputActivityResumesFromDetails runs the StageInput activity
// with heartbeat details as a retried attempt sees them: a checkpoint of a
// compressed object's staging resumes (no shard before it written again);
// details of another shape (an older worker's item count) start over.
func TestStageInputActivityResumesFromDetails(t *testing.T) {
	ctx := context.Background()
	plain, want := resumeInput(12_000)
	w, store := watchedStore(t, "stage-activity")
	key := "drop/in.jsonl.zst"
	w.Put(ctx, key, bytes.NewReader(zstdOf(t, plain)))

	// A first attempt, cut off by the store after shard 4.
	dst, _ := blobstore.Open(ctx, "mem://watched-stage-activity")
	fail := watch(dst)
	fail.failKey = manifests.InputShardKey("act", "", 4)
	var last pipeline.StageCheckpoint
	pipeline.StageObject(ctx, fail, "act", w, key, pipeline.ObjectStaging{ShardSize: 1000,
		Checkpoint: func(cp pipeline.StageCheckpoint) { last = cp }})
	if last.Shards != 4 {
		t.Fatalf("checkpoint %+v", last)
	}

	a := &pipeline.Activities{Stores: &pipeline.Stores{}}
	in := pipeline.BatchInput{BatchID: "act", Store: store, InputURL: store + "/" + key, Options: pipeline.Options{ShardSize: 1000}}
	for _, c := range []struct {
		name    string
		details any
		skipped int // shards not written again
	}{
		{"checkpoint", last, 4},
		{"old-details", int64(3000), 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			if c.name == "old-details" {
				layout.DeleteStaged(ctx, w, "act", "")
			}
			w.mu.Lock()
			w.puts = map[string]int{}
			w.mu.Unlock()
			var s testsuite.WorkflowTestSuite
			env := s.NewTestActivityEnvironment()
			env.RegisterActivity(a.StageInput)
			env.SetHeartbeatDetails(c.details)
			v, err := env.ExecuteActivity(a.StageInput, in)
			if err != nil {
				t.Fatal(err)
			}
			var st pipeline.Staged
			v.Get(&st)
			_, sha, _ := pipeline.Fingerprint(itemsOf(t, plain))
			if st.Items != 12_000 || st.Shards != 12 || st.SHA256 != sha {
				t.Fatalf("staged %+v", st)
			}
			if got := stagedLines(t, w, st); !bytes.Equal(got, want) {
				t.Fatal("staged items differ from the input")
			}
			for i := range st.Shards {
				p, want := w.putsOf(manifests.InputShardKey("act", "", i)), 1
				if i < c.skipped {
					want = 0
				}
				if p != want {
					t.Errorf("shard %d written %d times, want %d", i, p, want)
				}
			}
		})
	}
}
