package faults_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/batchpipe/batchpipe/blobstore"
	"github.com/batchpipe/batchpipe/internal/testinfra"
	"github.com/batchpipe/batchpipe/manifests"
	"github.com/batchpipe/batchpipe/zjsonl"
)

// ---- Inputs ----

// items makes n items {"arg1":"<tag>-a<i>","arg2":"<tag>-b<i>"}, with
// "mode": modes[i] where given (see faultproc).
func items(n int, tag string, modes map[int]string) [][]byte {
	out := make([][]byte, n)
	for i := range n {
		v := map[string]string{"arg1": fmt.Sprintf("%s-a%d", tag, i), "arg2": fmt.Sprintf("%s-b%d", tag, i)}
		if m, ok := modes[i]; ok {
			v["mode"] = m
		}
		out[i], _ = json.Marshal(v)
	}
	return out
}

func writeItems(t testing.TB, path string, lines [][]byte) {
	t.Helper()
	var b bytes.Buffer
	for _, l := range lines {
		b.Write(l)
		b.WriteByte('\n')
	}
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// fileStore makes a directory for a file:// store and returns its URL.
func fileStore(t testing.TB, dir string) string {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return "file://" + dir
}

// slowProcessor is the exec processor name running faultproc.
func slowProcessor(sleep time.Duration, logPath string) string {
	return fmt.Sprintf("exec:'%s' -sleep %s -log '%s'", faultprocBin, sleep, logPath)
}

// ---- The full check ----

// itemWant is what a failed item must look like.
type itemWant struct {
	errType string
	message string // substring of the error message
}

// want is what a finished batch must hold.
type want struct {
	status string
	// failed lists the items that must fail; every other item must succeed.
	failed map[int64]itemWant
	// output checks a succeeded item's output against its input; nil means
	// the example processor's (arg1 and arg2 prefixed, as faultproc does too).
	output func(input, output []byte) error
}

// exampleOutput checks the output of the example processor (and of
// faultproc): arg1 and arg2 echoed with their prefixes.
func exampleOutput(input, output []byte) error {
	var in struct{ Arg1, Arg2 *string }
	var out struct{ Arg1, Arg2 *string }
	if err := json.Unmarshal(input, &in); err != nil {
		return err
	}
	if err := json.Unmarshal(output, &out); err != nil {
		return err
	}
	if in.Arg1 == nil || in.Arg2 == nil || out.Arg1 == nil || out.Arg2 == nil ||
		*out.Arg1 != "activity arg1: "+*in.Arg1 || *out.Arg2 != "activity arg2: "+*in.Arg2 {
		return fmt.Errorf("output %s does not match input %s", output, input)
	}
	return nil
}

func echoOutput(input, output []byte) error {
	if !jsonEqual(input, output) {
		return fmt.Errorf("output %s is not the input %s", output, input)
	}
	return nil
}

func jsonEqual(a, b []byte) bool {
	var x, y bytes.Buffer
	if json.Compact(&x, a) != nil || json.Compact(&y, b) != nil {
		return false
	}
	return bytes.Equal(x.Bytes(), y.Bytes())
}

// openStore opens a store URL in this process (minio:// reads the suite's
// credentials from the environment).
func openStore(t testing.TB, url string) blobstore.Bucket {
	t.Helper()
	b, err := blobstore.Open(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// checked is what checkBatch found.
type checked struct {
	m       manifests.Manifest
	objects int // objects under the batch's prefix, all decoded whole
}

// checkBatch is the full check every case ends with: the manifest's
// status and counts; Verify (sizes, sha256, decoding, indexes, counts of
// every listed object); every index exactly once, in order, with the right
// output or the expected failure; the failures object listing exactly the
// failed items with their inputs; and every object under the batch's
// prefix — listed in the manifest or not — decoding whole.
func checkBatch(t testing.TB, storeURL, id string, in [][]byte, w want) checked {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	b := openStore(t, storeURL)
	batch, err := manifests.Open(ctx, b, id)
	if err != nil {
		t.Fatalf("batch %s: %v", id, err)
	}
	m := batch.Manifest
	if w.status == "" {
		w.status = manifests.StatusSucceeded
		if len(w.failed) > 0 {
			w.status = manifests.StatusCompletedWithFailures
		}
	}
	if w.output == nil {
		w.output = exampleOutput
	}
	if m.Status != w.status || m.BatchID != id || m.Input.Items != int64(len(in)) {
		t.Fatalf("batch %s: manifest status %q (want %q), batch_id %q, input items %d (want %d); error %q",
			id, m.Status, w.status, m.BatchID, m.Input.Items, len(in), m.Error)
	}
	if want := (manifests.Counts{Items: int64(len(in)), Succeeded: int64(len(in) - len(w.failed)), Failed: int64(len(w.failed))}); m.Counts != want {
		t.Fatalf("batch %s: counts %+v, want %+v", id, m.Counts, want)
	}
	if err := batch.Verify(ctx); err != nil {
		t.Fatalf("batch %s: Verify: %v", id, err)
	}
	var next int64
	for l, err := range batch.Results(ctx) {
		if err != nil {
			t.Fatalf("batch %s: reading results: %v", id, err)
		}
		if l.Index != next {
			t.Fatalf("batch %s: result line for index %d where %d was due (every index once, in order)", id, l.Index, next)
		}
		if l.Index >= int64(len(in)) {
			t.Fatalf("batch %s: index %d beyond the %d inputs", id, l.Index, len(in))
		}
		fw, shouldFail := w.failed[l.Index]
		switch {
		case shouldFail && l.Status != manifests.ItemFailed:
			t.Fatalf("batch %s: item %d %s, want failed (%s)", id, l.Index, l.Status, fw.errType)
		case shouldFail && (l.Error == nil || l.Error.Type != fw.errType || !strings.Contains(l.Error.Message, fw.message)):
			t.Fatalf("batch %s: item %d error %+v, want type %q with %q", id, l.Index, l.Error, fw.errType, fw.message)
		case !shouldFail && l.Status != manifests.ItemSucceeded:
			t.Fatalf("batch %s: item %d %s (%+v), want succeeded", id, l.Index, l.Status, l.Error)
		case !shouldFail:
			if err := w.output(in[l.Index], l.Output); err != nil {
				t.Fatalf("batch %s: item %d: %v", id, l.Index, err)
			}
		}
		next++
	}
	if next != int64(len(in)) {
		t.Fatalf("batch %s: results cover %d of %d items", id, next, len(in))
	}
	seen := map[int64]bool{}
	for f, err := range batch.Failures(ctx) {
		if err != nil {
			t.Fatalf("batch %s: reading failures: %v", id, err)
		}
		fw, ok := w.failed[f.Index]
		if !ok || seen[f.Index] {
			t.Fatalf("batch %s: failure line for item %d: unexpected or repeated", id, f.Index)
		}
		seen[f.Index] = true
		if !jsonEqual(f.Input, in[f.Index]) || f.Error == nil || f.Error.Type != fw.errType {
			t.Fatalf("batch %s: failure line %+v (input %s), want the item's input and type %q", id, f, f.Input, fw.errType)
		}
	}
	if len(seen) != len(w.failed) {
		t.Fatalf("batch %s: failures object lists %d items, want %d", id, len(seen), len(w.failed))
	}
	return checked{m: m, objects: decodeAll(t, b, manifests.BatchPrefix(id))}
}

// decodeAll reads every object under prefix and checks it decodes whole:
// zstd JSON lines to their end, JSON objects parse. It returns how many.
func decodeAll(t testing.TB, b blobstore.Bucket, prefix string) int {
	t.Helper()
	ctx := context.Background()
	n := 0
	for a, err := range b.List(ctx, prefix) {
		if err != nil {
			t.Fatalf("listing %s: %v", prefix, err)
		}
		n++
		r, err := b.NewReader(ctx, a.Key)
		if err != nil {
			t.Fatalf("%s: %v", a.Key, err)
		}
		data, err := io.ReadAll(r)
		r.Close()
		if err != nil {
			t.Fatalf("%s: %v", a.Key, err)
		}
		if int64(len(data)) != a.Size {
			t.Fatalf("%s: read %d bytes, listed as %d", a.Key, len(data), a.Size)
		}
		switch {
		case strings.HasSuffix(a.Key, ".zst"):
			zr, err := zjsonl.NewReader(bytes.NewReader(data))
			if err != nil {
				t.Fatalf("%s: half-written? %v", a.Key, err)
			}
			for {
				line, err := zr.Next()
				if err == io.EOF {
					break
				}
				if err != nil || !json.Valid(line) {
					zr.Close()
					t.Fatalf("%s: half-written? line %q: %v", a.Key, line, err)
				}
			}
			zr.Close()
		case strings.HasSuffix(a.Key, ".json"):
			if !json.Valid(data) {
				t.Fatalf("%s: half-written? not JSON: %q", a.Key, testinfra.Tail(string(data), 200))
			}
		}
	}
	return n
}

// tempFiles counts the file store's temporary files (left by a writer that
// was killed) under dir.
func tempFiles(dir string) int {
	n := 0
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasPrefix(d.Name(), ".batchpipe-tmp-") {
			n++
		}
		return nil
	})
	return n
}

// ---- What faultproc saw ----

// procLog is faultproc's log: which items were processed how often, by
// which worker process, when.
type procLog struct {
	total    int
	perItem  map[string]int
	perProc  map[int]int
	repeated int // processings beyond the first
	events   []procEvent
}

type procEvent struct {
	pid  int
	at   time.Time
	item string
}

func readProcLog(t testing.TB, path string) procLog {
	t.Helper()
	l := procLog{perItem: map[string]int{}, perProc: map[int]int{}}
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return l
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.SplitN(sc.Text(), " ", 3)
		if len(fields) != 3 {
			continue // a line cut by a kill
		}
		pid, _ := strconv.Atoi(fields[0])
		ms, _ := strconv.ParseInt(fields[1], 10, 64)
		l.total++
		l.perItem[fields[2]]++
		l.perProc[pid]++
		l.events = append(l.events, procEvent{pid: pid, at: time.UnixMilli(ms), item: fields[2]})
	}
	l.repeated = l.total - len(l.perItem)
	return l
}

// redone describes what happened to the work of a worker process killed at
// killedAt: how many of the items it had processed were processed again by
// another process, and when the first of them was (the retry of its
// in-flight shards).
func (l procLog) redone(pid int, killedAt time.Time) (items int, after time.Duration) {
	mine := map[string]bool{}
	for _, e := range l.events {
		if e.pid == pid {
			mine[e.item] = true
		}
	}
	again := map[string]bool{}
	var first time.Time
	for _, e := range l.events {
		if e.pid != pid && mine[e.item] && e.at.After(killedAt) {
			again[e.item] = true
			if first.IsZero() || e.at.Before(first) {
				first = e.at
			}
		}
	}
	if first.IsZero() {
		return 0, 0
	}
	return len(again), first.Sub(killedAt)
}

// between counts the processings in (from, to) and returns the last.
func (l procLog) between(from, to time.Time) (n int, last time.Time) {
	for _, e := range l.events {
		if e.at.After(from) && e.at.Before(to) {
			n++
			if e.at.After(last) {
				last = e.at
			}
		}
	}
	return n, last
}

// processed counts the lines of faultproc's log (cheap, for polling).
func processed(path string) int {
	data, _ := os.ReadFile(path)
	return bytes.Count(data, []byte{'\n'})
}

// waitProcessed waits until faultproc's log has at least n lines.
func waitProcessed(t testing.TB, path string, n int, timeout time.Duration, alive ...*proc) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for processed(path) < n {
		for _, p := range alive {
			if !p.running() {
				t.Fatalf("%s exited (%s) while waiting for %d items to be processed\n%s", p.name, p.exitString(), n, testinfra.Tail(p.stderr.String(), 3000))
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("fewer than %d items processed within %v (%d so far)", n, timeout, processed(path))
		}
		time.Sleep(50 * time.Millisecond)
	}
}
