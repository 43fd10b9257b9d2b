package manifests_test

import (
	"encoding/json"
	"fmt"
	"io"
	"testing"

	"github.com/batchpipe/batchpipe/manifests"
	"github.com/batchpipe/batchpipe/zjsonl"
)

// benchLines are result lines as a shard writes them: the example
// processor's output, one failed line in 20, each line with its input
// when withInput.
func benchLines(withInput bool) []manifests.ResultLine {
	lines := make([]manifests.ResultLine, 1000)
	for i := range lines {
		l := manifests.ResultLine{Index: int64(i), Status: manifests.ItemSucceeded, Attempts: 1, DurationMS: int64(i % 3),
			Output: json.RawMessage(fmt.Sprintf(`{"arg1":"activity arg1: value %d","arg2":"activity arg2: value %d","random_val":0.6046602879796196}`, i, i))}
		if i%20 == 7 {
			l.Status, l.Output = manifests.ItemFailed, nil
			l.Error = &manifests.ItemError{Type: "permanent", Message: fmt.Sprintf("item %d: missing \"arg2\"", i)}
		}
		if withInput {
			l.Input = json.RawMessage(fmt.Sprintf(`{"arg1":"value %d","arg2":"value %d"}`, i, i))
		}
		lines[i] = l
	}
	return lines
}

func benchmarkWriteResultLines(b *testing.B, withInput bool) {
	lines := benchLines(withInput)
	var n int64
	for b.Loop() {
		w := zjsonl.NewWriter(io.Discard)
		for _, l := range lines {
			if err := w.Write(l); err != nil {
				b.Fatal(err)
			}
		}
		w.Close()
		n += int64(len(lines))
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(n), "ns/line")
}

// BenchmarkWriteResultLines is the shards' hot path: result lines encoded
// and compressed.
func BenchmarkWriteResultLines(b *testing.B) { benchmarkWriteResultLines(b, false) }

// BenchmarkWriteResultLinesWithInput is the same with each line's input
// (--results-include-input).
func BenchmarkWriteResultLinesWithInput(b *testing.B) { benchmarkWriteResultLines(b, true) }
