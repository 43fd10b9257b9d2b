package inputs

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"testing"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

// readAll reads every item of input and returns them as "line json"
// strings, with the error that ended the input (nil for io.EOF).
func readAll(t testing.TB, name string, in io.Reader, opts Options) ([]string, error) {
	t.Helper()
	r, err := NewReader(name, in, opts)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	var items []string
	for {
		it, err := r.Next()
		if err == io.EOF {
			// io.EOF is sticky.
			if _, err := r.Next(); err != io.EOF {
				t.Errorf("Next after io.EOF = %v, want io.EOF", err)
			}
			return items, nil
		}
		if err != nil {
			// Errors are sticky.
			if _, err2 := r.Next(); err2 != err {
				t.Errorf("Next after error %v = %v, want the same error", err, err2)
			}
			var ie *Error
			if !errors.As(err, &ie) {
				t.Errorf("error %v is a %T, want *inputs.Error", err, err)
			}
			return items, err
		}
		items = append(items, fmt.Sprintf("%d %s", it.Line, it.JSON))
	}
}

type readCase struct {
	name    string
	file    string // the input's name; "t.jsonl" when empty
	in      string
	opts    Options
	want    []string // items, as "line json"
	wantErr string   // the exact error text, "" for none
}

func runCases(t *testing.T, defName string, cases []readCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			name := tc.file
			if name == "" {
				name = defName
			}
			got, err := readAll(t, name, strings.NewReader(tc.in), tc.opts)
			if !reflect.DeepEqual(got, tc.want) && (len(got) > 0 || len(tc.want) > 0) {
				t.Errorf("items:\n got %q\nwant %q", got, tc.want)
			}
			gotErr := ""
			if err != nil {
				gotErr = err.Error()
			}
			if gotErr != tc.wantErr {
				t.Errorf("error:\n got %s\nwant %s", gotErr, tc.wantErr)
			}
			var ie *Error
			if errors.As(err, &ie) && (ie.Err == ErrNoItems) != strings.Contains(gotErr, "no items") {
				t.Errorf("error %q has Err %v", gotErr, ie.Err)
			} else if ie != nil && ie.Err != nil && ie.Err != ErrNoItems {
				t.Errorf("invalid data reported with Err %v; want nil (not retryable)", ie.Err)
			}
		})
	}
}

func TestJSONL(t *testing.T) {
	deep := `{"a":` + strings.Repeat("[", 10001) + strings.Repeat("]", 10001) + "}"
	big := `{"a":"` + strings.Repeat("x", 3355443-8) + `"}`
	runCases(t, "inputs.jsonl", []readCase{
		{name: "basic", in: "{\"a\":1}\n{\"b\":\"x y\"}\n", want: []string{`1 {"a":1}`, `2 {"b":"x y"}`}},
		{name: "no final newline", in: "{\"a\":1}\n{\"b\":2}", want: []string{`1 {"a":1}`, `2 {"b":2}`}},
		{name: "compacted", in: "  {\"a\" : [1, 2],\t\"b\": {} }  \n", want: []string{`1 {"a":[1,2],"b":{}}`}},
		{name: "blank lines skipped", in: "\n{\"a\":1}\n   \n\t\r\n\n{\"b\":2}\n\n", want: []string{`2 {"a":1}`, `6 {"b":2}`}},
		{name: "CRLF", in: "{\"a\":1}\r\n{\"b\":2}\r\n", want: []string{`1 {"a":1}`, `2 {"b":2}`}},
		{name: "BOM", in: "\xef\xbb\xbf{\"a\":1}\n{\"b\":2}\n", want: []string{`1 {"a":1}`, `2 {"b":2}`}},
		{name: "BOM only on line 1", in: "{\"a\":1}\n\xef\xbb\xbf{\"b\":2}\n", want: []string{`1 {"a":1}`},
			wantErr: "inputs.jsonl:2: invalid JSON at column 1: invalid character 'ï' looking for beginning of value"},
		{name: "unicode and escapes kept", in: `{"s":"héllo \u00e9 \n 😀","h":"<&>"}`, want: []string{`1 {"s":"héllo \u00e9 \n 😀","h":"<&>"}`}},
		{name: "duplicate keys accepted", in: `{"a":1,"a":2}`, want: []string{`1 {"a":1,"a":2}`}},
		{name: "max nesting accepted", in: `{"a":` + strings.Repeat("[", 9998) + strings.Repeat("]", 9998) + "}", want: []string{"1 " + `{"a":` + strings.Repeat("[", 9998) + strings.Repeat("]", 9998) + "}"}},

		{name: "truncated object", in: "{\"a\":1}\n\n{\"a\":\n",
			want:    []string{`1 {"a":1}`},
			wantErr: "inputs.jsonl:3: invalid JSON: unexpected end of input (each item must be one complete JSON object on one line)"},
		{name: "pretty-printed object", in: "{\n  \"a\": 1\n}\n",
			wantErr: "inputs.jsonl:1: invalid JSON: unexpected end of input (each item must be one complete JSON object on one line)"},
		{name: "bad value", in: `{"a":}`, wantErr: "inputs.jsonl:1: invalid JSON at column 6: invalid character '}' looking for beginning of value"},
		{name: "unquoted key", in: `{a:1}`, wantErr: "inputs.jsonl:1: invalid JSON at column 2: invalid character 'a' looking for beginning of object key string"},
		{name: "trailing comma", in: `{"a":1,}`, wantErr: "inputs.jsonl:1: invalid JSON at column 8: invalid character '}' looking for beginning of object key string"},
		{name: "control character in string", in: "{\"a\":\"x\x01\"}", wantErr: `inputs.jsonl:1: invalid JSON at column 8: invalid character '\x01' in string literal`},
		{name: "garbage", in: "{}\nnope\n", want: []string{"1 {}"}, wantErr: "inputs.jsonl:2: invalid JSON at column 2: invalid character 'o' in literal null (expecting 'u')"},
		{name: "trailing garbage", in: "{\"a\":1} x\n", wantErr: "inputs.jsonl:1: unexpected data after the JSON object at column 9 (one object per line)"},
		{name: "two objects on a line", in: `{"a":1}{"b":2}`, wantErr: "inputs.jsonl:1: unexpected data after the JSON object at column 8 (one object per line)"},
		{name: "array", in: "{}\n{}\n[1,2]\n", want: []string{"1 {}", "2 {}"}, wantErr: "inputs.jsonl:3: expected a JSON object, got an array"},
		{name: "array on line 1", in: "[\n{\"a\":1},\n]\n",
			wantErr: "inputs.jsonl:1: expected a JSON object, got an array (the input must be JSON Lines, one object per line; a file holding one JSON array converts with: jq -c '.[]')"},
		{name: "string", in: `"x"`, wantErr: "inputs.jsonl:1: expected a JSON object, got a string"},
		{name: "number", in: ` -1.5 `, wantErr: "inputs.jsonl:1: expected a JSON object, got a number"},
		{name: "boolean", in: `true`, wantErr: "inputs.jsonl:1: expected a JSON object, got a boolean"},
		{name: "null", in: `null`, wantErr: "inputs.jsonl:1: expected a JSON object, got null"},
		{name: "invalid number", in: `12x`, wantErr: "inputs.jsonl:1: unexpected data after the JSON object at column 3 (one object per line)"},
		{name: "invalid UTF-8", in: "{}\n{\"a\":\"\xff\"}\n", want: []string{"1 {}"}, wantErr: "inputs.jsonl:2: invalid UTF-8 at column 7 (the input must be UTF-8 encoded)"},
		{name: "NUL byte", in: "{\"a\":\"\x00\"}\n", wantErr: "inputs.jsonl:1: NUL byte at column 7 (is this a binary or UTF-16 file?)"},
		{name: "UTF-16", in: "\xff\xfe{\x00}\x00\n\x00", wantErr: "inputs.jsonl:1: the file is UTF-16 encoded; convert it to UTF-8 (e.g. iconv -f UTF-16 -t UTF-8)"},
		{name: "too deep", in: deep, wantErr: "inputs.jsonl:1: invalid JSON at column 10004: nested too deeply (more than 9999 levels; result lines must stay readable)"},
		{name: "CSV read as JSONL", file: "inputs.txt", in: "id,name\n1,x\n",
			wantErr: "inputs.txt:1: invalid JSON at column 1: invalid character 'i' looking for beginning of value (if this is a CSV file, name it .csv or set the format to csv)"},
		{name: "CSV forced to JSONL", file: "inputs.csv", opts: Options{Format: FormatJSONL}, in: "id,name\n1,x\n",
			wantErr: "inputs.csv:1: invalid JSON at column 1: invalid character 'i' looking for beginning of value"},

		{name: "too long", opts: Options{MaxItemBytes: 10}, in: "{\"a\":1}\n{\"a\":\"12345\"}\n",
			want: []string{`1 {"a":1}`}, wantErr: "inputs.jsonl:2: item is 13 bytes, over the 10-byte limit (--max-item-size)"},
		{name: "3.2 MiB item", in: strings.Repeat("{}\n", 6) + big + "\n{}\n",
			want:    []string{"1 {}", "2 {}", "3 {}", "4 {}", "5 {}", "6 {}"},
			wantErr: "inputs.jsonl:7: item is 3.2 MiB, over the 1 MiB limit (--max-item-size)"},
		{name: "just over the limit", in: `{"a":"` + strings.Repeat("x", DefaultMaxItemBytes-7) + "\"}\r\n",
			wantErr: "inputs.jsonl:1: item is 1048577 bytes, over the 1048576-byte limit (--max-item-size)"},
		{name: "at the limit", opts: Options{MaxItemBytes: 1 << 17}, in: `{"a":"` + strings.Repeat("x", 1<<17-8) + "\"}\r\n{}",
			want: []string{`1 {"a":"` + strings.Repeat("x", 1<<17-8) + `"}`, "2 {}"}},

		{name: "empty", in: "", wantErr: "inputs.jsonl: no items (the file is empty)"},
		{name: "only blank lines", in: "\n  \r\n\t\n", wantErr: "inputs.jsonl: no items (the file has only blank lines)"},
		{name: "only a BOM", in: "\xef\xbb\xbf", wantErr: "inputs.jsonl: no items (the file has only blank lines)"},
	})
}

func TestCSV(t *testing.T) {
	runCases(t, "inputs.csv", []readCase{
		{name: "basic", in: "a,b\n1,2\n3,4\n", want: []string{`2 {"a":"1","b":"2"}`, `3 {"a":"3","b":"4"}`}},
		{name: "header order kept", in: "z,a,m\n1,2,3", want: []string{`2 {"z":"1","a":"2","m":"3"}`}},
		{name: "multi-line quoted field", in: "id,text\n1,\"hello\nworld\"\n2,\"a\n\nb\"\n3,x\n",
			want: []string{`2 {"id":"1","text":"hello\nworld"}`, `4 {"id":"2","text":"a\n\nb"}`, `7 {"id":"3","text":"x"}`}},
		{name: "CRLF", in: "id,text\r\n1,\"a\r\nb\"\r\n2,c\r\n", want: []string{`2 {"id":"1","text":"a\nb"}`, `4 {"id":"2","text":"c"}`}},
		{name: "quotes", in: "a,b\n\"he said \"\"hi\"\"\",\"x,y\"\n\"\",\"\"\"\"\n",
			want: []string{`2 {"a":"he said \"hi\"","b":"x,y"}`, `3 {"a":"","b":"\""}`}},
		{name: "BOM and quoted header", in: "\xef\xbb\xbf\"id\",\"the name\"\n1,x\n", want: []string{`2 {"id":"1","the name":"x"}`}},
		{name: "blank lines skipped", in: "\na\n\n1\n\r\n2\n\n", want: []string{`4 {"a":"1"}`, `6 {"a":"2"}`}},
		{name: "empty fields", in: "a,b,c\n,,\n", want: []string{`2 {"a":"","b":"","c":""}`}},
		{name: "escaping", in: "k,v\n\"\\\",\"\t\x01\x1f é 😀 <>\"\n", want: []string{`2 {"k":"\\","v":"\t\u0001\u001f é 😀 <>"}`}},
		{name: "spaces kept", in: "a, b\n 1 , 2\n", want: []string{`2 {"a":" 1 "," b":" 2"}`}},
		{name: "keys escaped", in: "\"a\"\"b\",c\\\n1,2\n", want: []string{`2 {"a\"b":"1","c\\":"2"}`}},
		{name: "format option", file: "data.txt", opts: Options{Format: "CSV"}, in: "a\n1\n", want: []string{`2 {"a":"1"}`}},

		{name: "ragged", in: "a,b,c,d\n1,2,3,4\n1,2,3,4\n\n1,2,3\n",
			want:    []string{`2 {"a":"1","b":"2","c":"3","d":"4"}`, `3 {"a":"1","b":"2","c":"3","d":"4"}`},
			wantErr: "inputs.csv:5: 3 fields, header has 4"},
		{name: "too many fields", in: "a\n1,2\n", wantErr: "inputs.csv:2: 2 fields, header has 1"},
		{name: "trailing comma", in: "a,b\n1,2,\n", wantErr: "inputs.csv:2: 3 fields, header has 2"},
		{name: "one field", in: "a,b\n1\n", wantErr: "inputs.csv:2: 1 field, header has 2"},
		{name: "ragged multi-line record", in: "a,b\n\"1\n2\"\n", wantErr: "inputs.csv:2: 1 field, header has 2"},
		{name: "duplicate header", in: "id,name,id\n1,2,3\n", wantErr: `inputs.csv:1: duplicate header "id" (columns 1 and 3)`},
		{name: "empty header", in: "\n\na,,c\n1,2,3\n", wantErr: "inputs.csv:3: header column 2 has no name (every column needs a unique name)"},
		{name: "empty quoted header", in: "\"\"\n1\n", wantErr: "inputs.csv:1: header column 1 has no name (every column needs a unique name)"},
		{name: "bare quote", in: "a,b\n1,x\"y\n", wantErr: `inputs.csv:2: invalid CSV at column 4: bare " in a field that is not quoted (a quote inside a field must be doubled and the field quoted)`},
		{name: "text after closing quote", in: "a\n\"x\"y\n", wantErr: `inputs.csv:2: invalid CSV at column 4: unexpected 'y' after a closing quote (a quote inside a quoted field must be doubled)`},
		{name: "error on a later line of a record", in: "a,b\n\"x\ny\"z,1\n", wantErr: `inputs.csv:3: invalid CSV at column 3: unexpected 'z' after a closing quote (a quote inside a quoted field must be doubled)`},
		{name: "unclosed quote", in: "a,b\n1,2\n3,\"abc\n4,5\n", want: []string{`2 {"a":"1","b":"2"}`},
			wantErr: `inputs.csv:3: quoted field is never closed (a closing " is missing)`},
		{name: "invalid UTF-8", in: "a\n\"x\n\xc3\x28\"\n", wantErr: "inputs.csv:3: invalid UTF-8 at column 1 (the input must be UTF-8 encoded)"},
		{name: "NUL", in: "a,b\n1,\x00\n", wantErr: "inputs.csv:2: NUL byte at column 3 (is this a binary or UTF-16 file?)"},
		{name: "too long", opts: Options{MaxItemBytes: 8}, in: "a,b\n1,2\n1234,56789\n", want: []string{`2 {"a":"1","b":"2"}`},
			wantErr: "inputs.csv:3: item is 10 bytes, over the 8-byte limit (--max-item-size)"},
		{name: "at the limit", opts: Options{MaxItemBytes: 8}, in: "a,b\n\"1\n\",\"\n\"\n",
			want: []string{`2 {"a":"1\n","b":"\n"}`}},
		{name: "multi-line record too long", opts: Options{MaxItemBytes: 8}, in: "a,b\n\"1\n\",\"\n\"\n\"1\n\",\"\n\"x\n",
			want: []string{`2 {"a":"1\n","b":"\n"}`}, wantErr: "inputs.csv:5: item is at least 9 bytes, over the 8-byte limit (--max-item-size)"},

		{name: "empty", in: "", wantErr: "inputs.csv: no items (the file is empty)"},
		{name: "blank lines", in: "\n\r\n", wantErr: "inputs.csv: no items (the file has only blank lines)"},
		{name: "header only", in: "a,b\n", wantErr: "inputs.csv: no items (only a header row)"},
		{name: "header and blank lines", in: "a,b\n\n\n", wantErr: "inputs.csv: no items (only a header row)"},
	})
}

func TestOptions(t *testing.T) {
	for _, tc := range []struct {
		opts Options
		want string
	}{
		{Options{Format: "xml"}, `in.jsonl: unknown input format "xml" (want jsonl or csv)`},
		{Options{MaxItemBytes: -1}, "in.jsonl: invalid item size limit -1 (want a positive number of bytes)"},
	} {
		_, err := NewReader("in.jsonl", strings.NewReader("{}"), tc.opts)
		if err == nil || err.Error() != tc.want {
			t.Errorf("NewReader(%+v) = %v, want %s", tc.opts, err, tc.want)
		}
	}
}

func TestFromName(t *testing.T) {
	for name, want := range map[string]string{
		"a.jsonl": "none jsonl", "a.csv": "none csv", "A.CSV": "none csv", "a.csv.gz": "gzip csv",
		"a.jsonl.zst": "zstd jsonl", "a.csv.zst": "zstd csv", "a.json": "none jsonl", "stdin": "none jsonl",
		"s3://b/k/in.CSV.GZ": "gzip csv", "a.gz": "gzip jsonl", "csv": "none jsonl",
	} {
		c, f := fromName(name)
		if got := c.String() + " " + string(f); got != want {
			t.Errorf("fromName(%q) = %s, want %s", name, got, want)
		}
	}
}

func gzipped(t testing.TB, s string) []byte {
	var b bytes.Buffer
	w := gzip.NewWriter(&b)
	if _, err := w.Write([]byte(s)); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func zstded(t testing.TB, s string) []byte {
	w, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	return w.EncodeAll([]byte(s), nil)
}

func TestCompressed(t *testing.T) {
	var lines strings.Builder
	for i := range 5000 {
		fmt.Fprintf(&lines, "{\"i\":%d,\"pad\":\"%x\"}\n", i, i*7919)
	}
	jsonl := lines.String()
	gz, zs := gzipped(t, jsonl), zstded(t, jsonl)
	csvGz := gzipped(t, "a,b\n1,\"x\ny\"\n")

	for _, tc := range []struct {
		name  string
		file  string
		data  []byte
		items int
		err   string // a prefix of the error; "" for none
	}{
		{name: "gzip", file: "in.jsonl.gz", data: gz, items: 5000},
		{name: "zstd", file: "in.jsonl.zst", data: zs, items: 5000},
		{name: "gzip sniffed on stdin", file: "stdin", data: gz, items: 5000},
		{name: "zstd sniffed without extension", file: "inputs", data: zs, items: 5000},
		{name: "gzip CSV", file: "in.csv.gz", data: csvGz, items: 1},
		{name: "concatenated gzip members", file: "in.jsonl.gz", data: append(gzipped(t, "{}\n"), gzipped(t, "{}\n{}\n")...), items: 3},
		{name: "concatenated zstd frames", file: "in.jsonl.zst", data: append(zstded(t, "{}\n"), zstded(t, "{}\n{}\n")...), items: 3},
		{name: "empty .gz file", file: "in.jsonl.gz", data: nil, err: "in.jsonl.gz: no items (the file is empty)"},
		{name: "empty gzip stream", file: "in.jsonl.gz", data: gzipped(t, ""), err: "in.jsonl.gz: no items (the file is empty)"},
		{name: "empty .zst file", file: "in.jsonl.zst", data: nil, err: "in.jsonl.zst: no items (the file is empty)"},
		{name: "empty zstd stream", file: "in.jsonl.zst", data: zstded(t, ""), err: "in.jsonl.zst: no items (the file is empty)"},
		{name: "not gzip", file: "in.jsonl.gz", data: []byte("{}\n"), err: "in.jsonl.gz: not gzip data (the name ends in .gz but the data does not start like gzip)"},
		{name: "zstd named .gz", file: "in.jsonl.gz", data: zs, err: "in.jsonl.gz: not gzip data (the name ends in .gz but the data does not start like gzip)"},
		{name: "bad gzip header", file: "in.jsonl.gz", data: append([]byte{0x1f, 0x8b, 9}, gz[3:]...), err: "in.jsonl.gz: not gzip data (gzip: invalid header)"},
		{name: "not zstd", file: "in.jsonl.zst", data: []byte("{}\n"), err: "in.jsonl.zst: not zstd data (the name ends in .zst but the data does not start like zstd)"},
		{name: "bad zstd frame header", file: "in.jsonl.zst", data: append(bytes.Clone(zs[:4]), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff), err: "in.jsonl.zst:1: corrupt zstd data: "},
		{name: "truncated gzip header", file: "in.jsonl.gz", data: gz[:5], err: "in.jsonl.gz: truncated gzip data (the file ends inside the gzip header)"},
		{name: "truncated gzip", file: "in.jsonl.gz", data: gz[:len(gz)/2], err: "in.jsonl.gz:"},
		{name: "truncated zstd", file: "in.jsonl.zst", data: zs[:len(zs)/2], err: "in.jsonl.zst:"},
		{name: "corrupt gzip", file: "in.jsonl.gz", data: corrupt(gz), err: "in.jsonl.gz:"},
		{name: "corrupt zstd", file: "in.jsonl.zst", data: corrupt(zs), err: "in.jsonl.zst:"},
		{name: "gzip checksum", file: "in.jsonl.gz", data: badChecksum(gz), err: "in.jsonl.gz:5001: corrupt gzip data: gzip: invalid checksum"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			items, err := readAll(t, tc.file, bytes.NewReader(tc.data), Options{})
			if tc.err == "" {
				if err != nil || len(items) != tc.items {
					t.Fatalf("got %d items, error %v; want %d items", len(items), err, tc.items)
				}
				if tc.items == 5000 && (items[0] != `1 {"i":0,"pad":"0"}` || items[4999] != fmt.Sprintf(`5000 {"i":4999,"pad":"%x"}`, 4999*7919)) {
					t.Errorf("items %q ... %q", items[0], items[4999])
				}
				return
			}
			if err == nil || !strings.HasPrefix(err.Error(), tc.err) {
				t.Fatalf("error %v, want it to start with %q", err, tc.err)
			}
			var ie *Error
			if errors.As(err, &ie) && ie.Err != nil && !errors.Is(err, ErrNoItems) {
				t.Errorf("corrupt data reported with Err = %v; want nil (not retryable)", ie.Err)
			}
			t.Logf("%d items, then: %v", len(items), err)
			if strings.Contains(tc.name, "truncated") && !strings.Contains(err.Error(), "truncated") {
				t.Errorf("error %q does not say the data is truncated", err)
			}
		})
	}
}

// corrupt flips bits in the middle of compressed data.
func corrupt(b []byte) []byte {
	c := bytes.Clone(b)
	for i := len(c) / 2; i < len(c)/2+16; i++ {
		c[i] ^= 0x55
	}
	return c
}

func badChecksum(gz []byte) []byte {
	c := bytes.Clone(gz)
	c[len(c)-8] ^= 1 // CRC-32 in the trailer
	return c
}

// failingReader returns its data, then err.
type failingReader struct {
	data []byte
	err  error
}

func (f *failingReader) Read(p []byte) (int, error) {
	if len(f.data) == 0 {
		return 0, f.err
	}
	n := copy(p, f.data)
	f.data = f.data[n:]
	return n, nil
}

func TestReadError(t *testing.T) {
	reset := errors.New("connection reset by peer")
	for _, tc := range []struct {
		name, file string
		data       []byte
		want       string
	}{
		{"plain", "in.jsonl", []byte("{}\n{}\n{\"a\""), "in.jsonl:3: read error: connection reset by peer"},
		{"gzip", "in.jsonl.gz", gzipped(t, "{}\n{}\n")[:12], "in.jsonl.gz:1: read error: connection reset by peer"},
		{"gzip header", "in.jsonl.gz", nil, "in.jsonl.gz:1: read error: connection reset by peer"},
		{"zstd", "in.jsonl.zst", zstded(t, "{}\n{}\n")[:8], "in.jsonl.zst:1: read error: connection reset by peer"},
		{"sniffing", "stdin", nil, "stdin:1: read error: connection reset by peer"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := readAll(t, tc.file, &failingReader{data: tc.data, err: reset}, Options{})
			if err == nil || err.Error() != tc.want {
				t.Fatalf("error %v, want %s", err, tc.want)
			}
			if !errors.Is(err, reset) {
				t.Errorf("errors.Is(%v, the read error) = false", err)
			}
		})
	}
}

func TestOpen(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "inputs.csv.gz")
	if err := os.WriteFile(file, gzipped(t, "a\n1\n2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	r, err := Open(file, Options{})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for {
		it, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, string(it.JSON))
	}
	if want := []string{`{"a":"1"}`, `{"a":"2"}`}; !reflect.DeepEqual(got, want) {
		t.Errorf("items %q, want %q", got, want)
	}
	if err := r.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if err := r.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := r.Next(); err == nil || err == io.EOF {
		t.Errorf("Next after Close = %v, want an error", err)
	}

	missing := filepath.Join(dir, "inputs.jsonl")
	_, err = Open(missing, Options{})
	if err == nil || err.Error() != missing+": no such file" || !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Open(missing) = %v, want %s: no such file (and errors.Is fs.ErrNotExist)", err, missing)
	}

	sub := filepath.Join(dir, "data") + "/"
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	_, err = Open(sub, Options{})
	if err == nil || err.Error() != sub+": is a directory, expected a file" {
		t.Errorf("Open(dir) = %v, want %s: is a directory, expected a file", err, sub)
	}

	_, err = Open(file, Options{Format: "yaml"})
	if err == nil || !strings.Contains(err.Error(), "unknown input format") {
		t.Errorf("Open with a bad format = %v", err)
	}
}

func TestOpenPermissionDenied(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("running as root: file permissions are not enforced")
	}
	file := filepath.Join(t.TempDir(), "inputs.jsonl")
	if err := os.WriteFile(file, []byte("{}\n"), 0); err != nil {
		t.Fatal(err)
	}
	_, err := Open(file, Options{})
	if err == nil || err.Error() != file+": permission denied" || !errors.Is(err, fs.ErrPermission) {
		t.Errorf("Open = %v, want %s: permission denied", err, file)
	}
}

func TestOpenStdin(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "stdin")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("{\"a\":1}\n[]\n"); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Seek(0, 0); err != nil {
		t.Fatal(err)
	}
	old := os.Stdin
	os.Stdin = f
	defer func() { os.Stdin = old }()

	r, err := Open("-", Options{})
	if err != nil {
		t.Fatal(err)
	}
	if it, err := r.Next(); err != nil || string(it.JSON) != `{"a":1}` {
		t.Fatalf("Next = %s, %v", it.JSON, err)
	}
	if _, err := r.Next(); err == nil || err.Error() != "stdin:2: expected a JSON object, got an array" {
		t.Fatalf("Next = %v, want stdin:2: expected a JSON object, got an array", err)
	}
	r.Close()
	if _, err := f.Stat(); err != nil {
		t.Errorf("stdin was closed by Close: %v", err)
	}
}

// endless is a reader of one line that never ends: prefix and then a run of
// 'x' bytes, counting what it returns.
type endless struct {
	prefix string
	n      int64
}

func (e *endless) Read(p []byte) (int, error) {
	i := 0
	if e.n < int64(len(e.prefix)) {
		i = copy(p, e.prefix[e.n:])
	}
	for j := i; j < len(p); j++ {
		p[j] = 'x'
	}
	e.n += int64(len(p))
	return len(p), nil
}

func TestEndlessLine(t *testing.T) {
	for _, format := range []Format{FormatJSONL, FormatCSV} {
		t.Run(string(format), func(t *testing.T) {
			prefix := `{"a":"`
			if format == FormatCSV {
				prefix = "a\n\""
			}
			src := &endless{prefix: prefix}
			r, err := NewReader("huge", src, Options{Format: format})
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()

			runtime.GC()
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			_, err = r.Next()
			runtime.ReadMemStats(&after)

			want := "huge:1: item is larger than 65 MiB (gave up looking for the end of the line), over the 1 MiB limit (--max-item-size)"
			if format == FormatCSV {
				want = "huge:2: item is larger than 65 MiB (gave up looking for the end of the line), over the 1 MiB limit (--max-item-size)"
			}
			if err == nil || err.Error() != want {
				t.Fatalf("Next = %v, want %s", err, want)
			}
			if src.n < 65<<20 || src.n > 66<<20 {
				t.Errorf("read %d bytes of the line, want about 65 MiB", src.n)
			}
			alloc := after.TotalAlloc - before.TotalAlloc
			t.Logf("read %d MiB; allocated %d KiB; heap in use %d KiB", src.n>>20, alloc>>10, after.HeapInuse>>10)
			if alloc > 8<<20 {
				t.Errorf("allocated %d MiB while reading one long line; want it bounded by the item limit", alloc>>20)
			}
			if after.HeapInuse > 32<<20 {
				t.Errorf("heap in use %d MiB after reading a 65 MiB line", after.HeapInuse>>20)
			}
		})
	}
}

// TestLongLineSizes checks the size limit and the reported size around the
// limit and the read buffer's size, with LF and CRLF line endings.
func TestLongLineSizes(t *testing.T) {
	for _, limit := range []int{10, bufSize - 1, bufSize, bufSize + 1, 3 * bufSize} {
		for _, n := range []int{limit - 1, limit, limit + 1, limit + 2, 2*bufSize + 1, 10 * bufSize} {
			if n < 2 {
				continue
			}
			for _, eol := range []string{"\n", "\r\n", ""} {
				item := "{" + strings.Repeat(" ", n-2) + "}"
				in := item + eol + "{}\n"
				if eol == "" {
					in = "{}\n" + item
				}
				items, err := readAll(t, "t.jsonl", strings.NewReader(in), Options{MaxItemBytes: limit})
				line := 1
				if eol == "" {
					line = 2
				}
				if n <= limit {
					if err != nil || len(items) != 2 {
						t.Errorf("limit %d, item of %d bytes, eol %q: %d items, error %v", limit, n, eol, len(items), err)
					}
					continue
				}
				want := fmt.Sprintf("t.jsonl:%d: item is %d bytes, over the %d-byte limit", line, n, limit)
				if formatSize(int64(n)) != formatSize(int64(limit)) && limit >= 1024 {
					want = fmt.Sprintf("t.jsonl:%d: item is %s, over the %s limit", line, formatSize(int64(n)), formatSize(int64(limit)))
				}
				if err == nil || !strings.HasPrefix(err.Error(), want) {
					t.Errorf("limit %d, item of %d bytes, eol %q: error %v, want %s", limit, n, eol, err, want)
				}
			}
		}
	}
}

func TestFormatSize(t *testing.T) {
	for n, want := range map[int64]string{
		0: "0 bytes", 1: "1 byte", 1023: "1023 bytes", 1024: "1 KiB", 1536: "1.5 KiB",
		1 << 20: "1 MiB", 3355443: "3.2 MiB", 2 << 30: "2 GiB", 5 << 40: "5 TiB",
	} {
		if got := formatSize(n); got != want {
			t.Errorf("formatSize(%d) = %q, want %q", n, got, want)
		}
	}
}

// TestItemReuse documents that Item.JSON is reused by the next call to Next.
func TestItemReuse(t *testing.T) {
	r, _ := NewReader("t.jsonl", strings.NewReader("{\"a\":1}\n{\"b\":2}\n"), Options{})
	first, _ := r.Next()
	kept := bytes.Clone(first.JSON)
	if _, err := r.Next(); err != nil {
		t.Fatal(err)
	}
	if string(kept) != `{"a":1}` {
		t.Errorf("copy = %s", kept)
	}
}

// FuzzJSONL checks that arbitrary input never panics and yields only valid,
// compact, single-line JSON objects, with increasing line numbers, or an
// *Error.
func FuzzJSONL(f *testing.F) {
	for _, s := range []string{
		"{\"a\":1}\n{\"b\":[1,2,{}]}\n", "\xef\xbb\xbf{}\r\n\n  \n{ }", "[]", "{\"a\":\"\\u0000\"}",
		"{\"a\":1} {}", "{\"a\":\"\xff\"}", "{\x00}", "{" + strings.Repeat("\"a\":[", 50), "\"x\"\n1\nnull\ntrue",
		"{\"a\":\"b\\\"\"}\n", "{}\r\r\n", "{\"a\":1e400}",
	} {
		f.Add([]byte(s), uint16(0))
	}
	f.Fuzz(func(t *testing.T, data []byte, max uint16) {
		r, err := NewReader("fuzz.jsonl", bytes.NewReader(data), Options{MaxItemBytes: int(max)})
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		last := 0
		for {
			it, err := r.Next()
			if err == io.EOF {
				if last == 0 {
					t.Fatal("io.EOF without any item")
				}
				return
			}
			if err != nil {
				var ie *Error
				if !errors.As(err, &ie) || ie.Source != "fuzz.jsonl" {
					t.Fatalf("error %v (%T) is not an *Error naming the source", err, err)
				}
				return
			}
			if it.Line <= last {
				t.Fatalf("line %d after line %d", it.Line, last)
			}
			last = it.Line
			if !json.Valid(it.JSON) || len(it.JSON) < 2 || it.JSON[0] != '{' || bytes.ContainsAny(it.JSON, "\n\r\t ") && !compact(it.JSON) {
				t.Fatalf("item %q is not a compact JSON object", it.JSON)
			}
			var v map[string]json.RawMessage
			if err := json.Unmarshal(it.JSON, &v); err != nil {
				t.Fatalf("item %q: %v", it.JSON, err)
			}
		}
	})
}

func compact(b []byte) bool {
	var c bytes.Buffer
	return json.Compact(&c, b) == nil && bytes.Equal(c.Bytes(), b) && !bytes.Contains(b, []byte("\n"))
}

// TestZstdReleased checks that closing a Reader leaves no decoder goroutine
// behind, also when it stops before the end of the input.
func TestZstdReleased(t *testing.T) {
	data := zstded(t, strings.Repeat("{\"a\":1}\n", 100000))
	before := runtime.NumGoroutine()
	for i := range 20 {
		r, err := NewReader("in.jsonl.zst", bytes.NewReader(data), Options{})
		if err != nil {
			t.Fatal(err)
		}
		for range i * 1000 {
			if _, err := r.Next(); err != nil {
				t.Fatal(err)
			}
		}
		if err := r.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if after := runtime.NumGoroutine(); after > before {
		t.Errorf("%d goroutines before, %d after", before, after)
	}
}

func TestDepthLimit(t *testing.T) {
	item := func(d int) string {
		return `{"s":"[[[{{{\"","deep":` + strings.Repeat("[", d-1) + strings.Repeat("]", d-1) + "}\n"
	}
	r, err := NewReader("deep.jsonl", strings.NewReader(item(MaxDepth)+item(MaxDepth+1)), Options{MaxItemBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := r.Next(); err != nil {
		t.Fatalf("an item %d levels deep was refused: %v", MaxDepth, err)
	}
	if _, err := r.Next(); err == nil || !strings.Contains(err.Error(), "deep.jsonl:2: invalid JSON at column") || !strings.Contains(err.Error(), "nested too deeply") {
		t.Fatalf("an item %d levels deep: %v", MaxDepth+1, err)
	}
}
