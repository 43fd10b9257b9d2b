package inputs_test

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/batchpipe/batchpipe/inputs"
)

// TestItemEndResumes: reading the rest of an input from an item's End,
// with StartLine and StartOffset, yields the items after it with the line
// numbers and offsets of a whole read.
func TestItemEndResumes(t *testing.T) {
	in := "\xef\xbb\xbf{\"a\":1}\r\n\n{\"a\":2}\n  \n{ \"a\" : 3 }\n{\"a\":4}"
	r, _ := inputs.NewReader("in.jsonl", strings.NewReader(in), inputs.Options{})
	var all []inputs.Item
	for {
		it, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		it.JSON = bytes.Clone(it.JSON)
		all = append(all, it)
	}
	wantLines := []int{1, 3, 5, 6}
	for i, it := range all {
		if it.Line != wantLines[i] || it.End <= 0 || it.End > int64(len(in)) {
			t.Fatalf("item %d: line %d end %d", i, it.Line, it.End)
		}
	}
	if all[3].End != int64(len(in)) {
		t.Errorf("last item ends at %d, want %d", all[3].End, len(in))
	}
	for i, from := range all {
		rest, err := inputs.NewReader("in.jsonl", strings.NewReader(in[from.End:]),
			inputs.Options{StartLine: from.Line, StartOffset: from.End})
		if err != nil {
			t.Fatal(err)
		}
		for j := i + 1; ; j++ {
			it, err := rest.Next()
			if err == io.EOF && j == len(all) {
				break // the rest after the last item is empty: EOF, not "no items"
			}
			if err != nil || j >= len(all) || it.Line != all[j].Line || it.End != all[j].End || !bytes.Equal(it.JSON, all[j].JSON) {
				t.Fatalf("from item %d: item %d = %+v, %v; want %+v", i, j, it, err, all[min(j, len(all)-1)])
			}
		}
	}
}

func TestItemEndUnknownWhenCompressedOrCSV(t *testing.T) {
	var z bytes.Buffer
	enc, _ := zstd.NewWriter(&z)
	enc.Write([]byte("{\"a\":1}\n"))
	enc.Close()
	for name, data := range map[string]string{"in.jsonl.zst": z.String(), "in.csv": "a,b\n1,2\n", "noext": z.String()} {
		r, _ := inputs.NewReader(name, strings.NewReader(data), inputs.Options{})
		it, err := r.Next()
		if err != nil || it.End != -1 {
			t.Errorf("%s: %+v, %v; want End -1", name, it, err)
		}
	}
	if _, err := inputs.NewReader("in.jsonl.zst", strings.NewReader(""), inputs.Options{StartLine: 3, StartOffset: 10}); err == nil {
		t.Error("a zstd input read from an offset was accepted")
	}
}

// TestErrorByte: errors say where in the stored input they are.
func TestErrorByte(t *testing.T) {
	in := "{\"a\":1}\n{\"a\":2}\n{\"a\":\n"
	r, _ := inputs.NewReader("in.jsonl", strings.NewReader(in), inputs.Options{})
	var err error
	for err == nil {
		_, err = r.Next()
	}
	var ie *inputs.Error
	if !errors.As(err, &ie) || ie.Line != 3 || ie.Byte != 17 || ie.Position() != "line 3, byte offset 16" {
		t.Fatalf("error %v (line %d, byte %d, %q), want line 3 at byte offset 16", err, ie.Line, ie.Byte, ie.Position())
	}
	// The same from a resumed read: offsets count from StartOffset.
	r, _ = inputs.NewReader("in.jsonl", strings.NewReader(in[8:]), inputs.Options{StartLine: 1, StartOffset: 8})
	for err = nil; err == nil; {
		_, err = r.Next()
	}
	if !errors.As(err, &ie) || ie.Line != 3 || ie.Byte != 17 {
		t.Fatalf("resumed: error %v (byte %d), want line 3 at byte offset 16", err, ie.Byte)
	}
	// A cut zstd stream: how far the compressed data was read.
	var z bytes.Buffer
	enc, _ := zstd.NewWriter(&z)
	for range 20000 {
		enc.Write([]byte("{\"a\":12345678}\n"))
	}
	enc.Close()
	cut := z.Bytes()[:z.Len()/2]
	r, _ = inputs.NewReader("in.jsonl.zst", bytes.NewReader(cut), inputs.Options{})
	for err = nil; err == nil; {
		_, err = r.Next()
	}
	if !errors.As(err, &ie) || !strings.Contains(ie.Msg, "truncated zstd") || ie.Byte <= 0 || ie.Byte > int64(len(cut))+1 {
		t.Fatalf("cut zstd: %v (byte %d of %d)", err, ie.Byte, len(cut))
	}
}
