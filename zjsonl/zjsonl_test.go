package zjsonl_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/batchpipe/batchpipe/zjsonl"
	"github.com/klauspost/compress/zstd"
)

type result struct {
	Index      int            `json:"index"`
	Status     string         `json:"status"`
	Output     map[string]any `json:"output,omitempty"`
	Attempts   int            `json:"attempts"`
	DurationMS int            `json:"duration_ms"`
}

func sample(i int) result {
	return result{Index: i, Status: "succeeded", Attempts: 1, DurationMS: i % 7,
		Output: map[string]any{"arg1": fmt.Sprintf("activity arg1: value %d", i), "arg2": "activity arg2: <b>&</b>", "random_val": 0.25}}
}

func TestRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	w := zjsonl.NewWriter(&buf)
	for i := range 1000 {
		if err := w.Write(sample(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.WriteRaw([]byte(`{"raw":true}`)); err != nil {
		t.Fatal(err)
	}
	if w.Lines() != 1001 {
		t.Fatalf("Lines = %d", w.Lines())
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	// The stream is plain zstd.
	dec, _ := zstd.NewReader(bytes.NewReader(buf.Bytes()))
	plain, err := io.ReadAll(dec)
	dec.Close()
	if err != nil {
		t.Fatal(err)
	}
	if n := bytes.Count(plain, []byte("\n")); n != 1001 {
		t.Fatalf("decompressed stream has %d lines", n)
	}
	if !bytes.Contains(plain, []byte(`"arg2":"activity arg2: <b>&</b>"`)) {
		t.Fatalf("HTML was escaped: %s", plain[:200])
	}

	r, err := zjsonl.NewReader(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for i := range 1000 {
		var got result
		if err := r.Decode(&got); err != nil {
			t.Fatalf("line %d: %v", i+1, err)
		}
		if got.Index != i || r.Line() != i+1 || got.Output["arg1"] != fmt.Sprintf("activity arg1: value %d", i) {
			t.Fatalf("line %d decoded as %+v", r.Line(), got)
		}
	}
	line, err := r.Next()
	if err != nil || string(line) != `{"raw":true}` {
		t.Fatalf("raw line = %q, %v", line, err)
	}
	if _, err := r.Next(); err != io.EOF {
		t.Fatalf("after last line: %v, want io.EOF", err)
	}
}

func TestWriteRawRejectsNewline(t *testing.T) {
	w := zjsonl.NewWriter(io.Discard)
	defer w.Close()
	if err := w.WriteRaw([]byte("{}\n{}")); err == nil {
		t.Fatal("WriteRaw accepted a newline")
	}
}

func compress(t testing.TB, plain string) []byte {
	var buf bytes.Buffer
	enc, _ := zstd.NewWriter(&buf)
	enc.Write([]byte(plain))
	enc.Close()
	return buf.Bytes()
}

func TestLineNumbersSkipBlankLines(t *testing.T) {
	r, err := zjsonl.NewReader(bytes.NewReader(compress(t, "{\"a\":1}\n\n  \r\n{\"a\":2}\r\n{\"a\":3}")))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var lines []int
	for {
		l, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.HasPrefix(l, []byte(`{"a":`)) || bytes.HasSuffix(l, []byte("\r")) {
			t.Fatalf("line %q", l)
		}
		lines = append(lines, r.Line())
	}
	if fmt.Sprint(lines) != "[1 4 5]" {
		t.Fatalf("line numbers %v, want [1 4 5]", lines)
	}
}

func TestLongLineAndBadInput(t *testing.T) {
	r, err := zjsonl.NewReader(bytes.NewReader(compress(t, "{}\n"+strings.Repeat("x", 300<<10)+"\n")))
	if err != nil {
		t.Fatal(err)
	}
	r.SetMaxLineBytes(100 << 10)
	if _, err := r.Next(); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Next(); err == nil || !strings.Contains(err.Error(), "line 2: longer than") {
		t.Fatalf("long line error = %v", err)
	}
	r.Close()

	r, err = zjsonl.NewReader(strings.NewReader("this is not zstd"))
	if err == nil {
		_, err = r.Next()
		r.Close()
	}
	if err == nil {
		t.Fatal("reading a non-zstd stream succeeded")
	}

	r, _ = zjsonl.NewReader(bytes.NewReader(compress(t, "{\"a\":\n")))
	var v any
	if err := r.Decode(&v); err == nil || !strings.Contains(err.Error(), "line 1") {
		t.Fatalf("Decode of bad JSON = %v", err)
	}
	r.Close()
}

// Creating and closing many readers and writers from many goroutines leaves
// no goroutine behind (an unclosed zstd.Decoder would).
func TestNoGoroutineLeak(t *testing.T) {
	data := compress(t, strings.Repeat(`{"index":1,"status":"succeeded"}`+"\n", 10000))
	before := runtime.NumGoroutine()
	var wg sync.WaitGroup
	for g := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 20 {
				w := zjsonl.NewWriter(io.Discard)
				w.Write(sample(g))
				w.Close()
				r, err := zjsonl.NewReader(bytes.NewReader(data))
				if err != nil {
					t.Error(err)
					return
				}
				r.Next() // abandon half way, as an error path would
				r.Close()
			}
		}()
	}
	wg.Wait()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		runtime.GC()
		time.Sleep(10 * time.Millisecond)
	}
	if after := runtime.NumGoroutine(); after > before {
		buf := make([]byte, 1<<16)
		n := runtime.Stack(buf, true)
		t.Fatalf("goroutines: %d before, %d after\n%s", before, after, buf[:n])
	}
}

func TestWriterPropagatesWriteError(t *testing.T) {
	w := zjsonl.NewWriter(failWriter{})
	for i := 0; i < 10000; i++ {
		w.Write(sample(i))
	}
	if err := w.Close(); err == nil {
		t.Fatal("Close succeeded though the underlying writer fails")
	}
}

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

func BenchmarkEncode(b *testing.B) {
	var n int64
	for b.Loop() {
		w := zjsonl.NewWriter(io.Discard)
		for i := range 1000 {
			w.Write(sample(i))
		}
		w.Close()
		n += 1000
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "lines/s")
}

func BenchmarkDecode(b *testing.B) {
	var buf bytes.Buffer
	w := zjsonl.NewWriter(&buf)
	for i := range 1000 {
		w.Write(sample(i))
	}
	w.Close()
	b.SetBytes(int64(buf.Len()))
	var n int64
	for b.Loop() {
		r, _ := zjsonl.NewReader(bytes.NewReader(buf.Bytes()))
		for {
			if _, err := r.Next(); err != nil {
				break
			}
			n++
		}
		r.Close()
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "lines/s")
}

// BenchmarkNewEncoderPerObject is what the pool saves: a fresh encoder for
// every object.
func BenchmarkNewEncoderPerObject(b *testing.B) {
	line := []byte(`{"index":1,"status":"succeeded","output":{"x":1},"attempts":1}` + "\n")
	for b.Loop() {
		e, _ := zstd.NewWriter(io.Discard, zstd.WithEncoderConcurrency(1))
		e.Write(line)
		e.Close()
	}
}

func BenchmarkPooledEncoderPerObject(b *testing.B) {
	line := []byte(`{"index":1,"status":"succeeded","output":{"x":1},"attempts":1}`)
	for b.Loop() {
		w := zjsonl.NewWriter(io.Discard)
		w.WriteRaw(line)
		w.Close()
	}
}
