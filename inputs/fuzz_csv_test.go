package inputs

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzCSV checks the CSV reader against encoding/csv: where encoding/csv
// reads a valid UTF-8 input with a usable header, the items must be its
// records, with the same line numbers; where it fails, so must Reader.
func FuzzCSV(f *testing.F) {
	for _, s := range []string{
		"a,b\n1,2\n", "a,b\r\n\"x\r\ny\",\"\"\"\"\r\n", "a\n\n1\n\n", "a,b\n1\n", "a\n\"x\"y\n", "a\nx\"y\n",
		"a,a\n1,2\n", "a,,b\n", "a\n\"unclosed\n", "\"a\nb\",c\n1,2\n", "a\n1\r", "a\n\r\n\r\n1\r\r\n", "a,b\n,\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := NewReader("fuzz.csv", bytes.NewReader(data), Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		type item struct {
			line int
			obj  []string // key, value, key, value...
		}
		var items []item
		for {
			it, err2 := r.Next()
			if err2 == io.EOF {
				break
			}
			if err2 != nil {
				var ie *Error
				if !errors.As(err2, &ie) || ie.Source != "fuzz.csv" {
					t.Fatalf("error %v (%T) is not an *Error naming the source", err2, err2)
				}
				err = err2
				break
			}
			items = append(items, item{it.Line, orderedObject(t, it.JSON)})
		}

		if !utf8.Valid(data) || bytes.IndexByte(data, 0) >= 0 || bytes.HasPrefix(data, []byte("\xef\xbb\xbf")) {
			if !utf8.Valid(data) && err == nil {
				t.Fatalf("invalid UTF-8 accepted")
			}
			return
		}
		cr := csv.NewReader(bytes.NewReader(data))
		var header []string
		n := 0
		for {
			rec, cerr := cr.Read()
			if cerr == io.EOF {
				break
			}
			if cerr != nil {
				if err == nil {
					t.Fatalf("encoding/csv fails (%v), Reader does not", cerr)
				}
				return
			}
			if header == nil {
				header = append([]string(nil), rec...)
				seen := map[string]bool{}
				for _, h := range header {
					if h == "" || seen[h] {
						if err == nil || !strings.Contains(err.Error(), "header") {
							t.Fatalf("bad header %q accepted (error %v)", header, err)
						}
						return
					}
					seen[h] = true
				}
				continue
			}
			line, _ := cr.FieldPos(0)
			if n >= len(items) {
				t.Fatalf("record %d (line %d) %q missing; error %v", n, line, rec, err)
			}
			got := items[n]
			want := make([]string, 0, 2*len(rec))
			for i, v := range rec {
				want = append(want, header[i], v)
			}
			if got.line != line || strings.Join(got.obj, "\x00") != strings.Join(want, "\x00") {
				t.Fatalf("record %d: got line %d %q, want line %d %q", n, got.line, got.obj, line, want)
			}
			n++
		}
		if n != len(items) {
			t.Fatalf("%d items, encoding/csv has %d records", len(items), n)
		}
		if n == 0 && (err == nil || !strings.Contains(err.Error(), "no items")) {
			t.Fatalf("no records, error %v", err)
		}
		if n > 0 && err != nil {
			t.Fatalf("error %v, encoding/csv has none", err)
		}
	})
}

// orderedObject decodes a JSON object of strings, keeping key order.
func orderedObject(t *testing.T, b []byte) []string {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(b))
	var out []string
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatalf("item %q: %v", b, err)
		}
		if s, ok := tok.(string); ok {
			out = append(out, s)
		} else if _, ok := tok.(json.Delim); !ok {
			t.Fatalf("item %q: unexpected token %v", b, tok)
		}
	}
}
