package pipeline

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"testing"

	"github.com/batchpipe/batchpipe/manifests"
	"github.com/batchpipe/batchpipe/zjsonl"
)

// TestAppendResultLineAsEncodingJSON: the shards' encoder writes the bytes
// encoding/json writes (without HTML escaping) for every kind of line.
func TestAppendResultLineAsEncodingJSON(t *testing.T) {
	lines := []manifests.ResultLine{
		{Index: 0, Status: manifests.ItemSucceeded, Output: json.RawMessage(`{"a":1,"b":[true,null,"x"]}`), Attempts: 1, DurationMS: 3},
		{Index: 1 << 40, Status: manifests.ItemSucceeded, Output: json.RawMessage(`null`), Attempts: 2},
		{Index: 2, Status: manifests.ItemSucceeded, Output: json.RawMessage(`"<b>&amp;</b>"`), Input: json.RawMessage(`{"n":2,"s":"é\u2028"}`), Attempts: 1},
		{Index: 3, Status: manifests.ItemFailed, Error: &manifests.ItemError{Type: ItemErrorPermanent, Message: "plain message"}, Attempts: 1},
		{Index: 4, Status: manifests.ItemFailed, Input: json.RawMessage(`{"x":"y"}`), Attempts: 3, DurationMS: 1234,
			Error: &manifests.ItemError{Type: ItemErrorRetryable, Message: "quote \" backslash \\ newline \n tab \t nul \x00 <html> & é \u2028 \u2029 bad \xff utf-8"}},
		{Index: 5, Status: manifests.ItemFailed, Error: &manifests.ItemError{}},
		{},
	}
	for i, l := range lines {
		var want bytes.Buffer
		e := json.NewEncoder(&want)
		e.SetEscapeHTML(false)
		if err := e.Encode(l); err != nil {
			t.Fatal(err)
		}
		got := appendResultLine(nil, l)
		if !bytes.Equal(got, bytes.TrimSuffix(want.Bytes(), []byte("\n"))) {
			t.Errorf("line %d:\n got %s\nwant %s", i, got, want.Bytes())
		}
	}
}

// BenchmarkWriteResultLines is manifests' benchmark of the same name
// (encoding/json) through the shards' encoder: 1,000 lines of the example
// processor's output, one failed in 20, encoded and compressed.
func BenchmarkWriteResultLines(b *testing.B) {
	lines := make([]manifests.ResultLine, 1000)
	for i := range lines {
		l := manifests.ResultLine{Index: int64(i), Status: manifests.ItemSucceeded, Attempts: 1, DurationMS: int64(i % 3),
			Output: json.RawMessage(fmt.Sprintf(`{"arg1":"activity arg1: value %d","arg2":"activity arg2: value %d","random_val":0.6046602879796196}`, i, i))}
		if i%20 == 7 {
			l.Status, l.Output = manifests.ItemFailed, nil
			l.Error = &manifests.ItemError{Type: "permanent", Message: fmt.Sprintf("item %d: missing \"arg2\"", i)}
		}
		lines[i] = l
	}
	var n int64
	var buf []byte
	for b.Loop() {
		w := zjsonl.NewWriter(io.Discard)
		for _, l := range lines {
			buf = appendResultLine(buf[:0], l)
			if err := w.WriteRaw(buf); err != nil {
				b.Fatal(err)
			}
		}
		w.Close()
		n += int64(len(lines))
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(n), "ns/line")
}
