package inputs

import (
	"bytes"
	"fmt"
	"io"
	"testing"
)

const benchItems = 100_000

// benchJSONL is benchItems lines like the example processor's input, with a
// few more fields (~120 bytes an item).
func benchJSONL() []byte {
	var b bytes.Buffer
	for i := range benchItems {
		fmt.Fprintf(&b, `{"id":%d,"arg1":"user-%d@example.com","arg2":"some text, with spaces","tags":["a","b"],"score":%d.5}`+"\n", i, i, i%100)
	}
	return b.Bytes()
}

func benchCSV() []byte {
	var b bytes.Buffer
	b.WriteString("id,arg1,arg2,tags,score\n")
	for i := range benchItems {
		fmt.Fprintf(&b, "%d,user-%d@example.com,\"some text, with spaces\",a;b,%d.5\n", i, i, i%100)
	}
	return b.Bytes()
}

// benchRead reads data, of textSize bytes once decompressed, and reports
// MB/s of (decompressed) text and items/s.
func benchRead(b *testing.B, name string, data []byte, textSize int) {
	b.SetBytes(int64(textSize))
	b.ReportAllocs()
	items := 0
	for b.Loop() {
		r, err := NewReader(name, bytes.NewReader(data), Options{})
		if err != nil {
			b.Fatal(err)
		}
		for {
			_, err := r.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
			items++
		}
		r.Close()
	}
	b.ReportMetric(float64(items)/b.Elapsed().Seconds(), "items/s")
}

// Run with: go test -run XXX -bench . -benchtime 20x ./inputs/
func BenchmarkJSONL(b *testing.B) {
	text := benchJSONL()
	benchRead(b, "bench.jsonl", text, len(text))
}

func BenchmarkCSV(b *testing.B) {
	text := benchCSV()
	benchRead(b, "bench.csv", text, len(text))
}

func BenchmarkJSONLZstd(b *testing.B) {
	text := benchJSONL()
	benchRead(b, "bench.jsonl.zst", zstded(b, string(text)), len(text))
}

func BenchmarkJSONLGzip(b *testing.B) {
	text := benchJSONL()
	benchRead(b, "bench.jsonl.gz", gzipped(b, string(text)), len(text))
}
