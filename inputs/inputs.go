// Package inputs reads a batch's input file as a stream and yields validated
// items, one compact JSON object each.
//
// Two formats are understood:
//
//   - JSON Lines ("jsonl"): one JSON object per line. Blank lines are skipped,
//     CRLF line endings are accepted and a UTF-8 byte-order mark is stripped.
//   - CSV ("csv", RFC 4180): a header row names the columns; every record
//     becomes an object mapping each header name to the field's value, as a
//     JSON string, with keys in header order. Quoted fields may span lines.
//
// Input may be compressed with gzip or zstd; this is recognised from the
// name (.gz, .zst) and also from the data's magic bytes, so a compressed
// stream read from stdin or an object without an extension works too.
//
// Every problem is reported as an *Error that names the source, the line and
// what is wrong, for example
//
//	inputs.jsonl:3: expected a JSON object, got an array
//	inputs.jsonl:7: item is 3.2 MiB, over the 1 MiB limit (--max-item-size)
//	inputs.csv:5: 3 fields, header has 4
//
// Messages about an item over the size limit name the submit command's
// --max-item-size flag. Memory stays bounded by the item size limit whatever
// the input holds: an overlong line is skipped over, never buffered whole.
package inputs

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

// Format is an input file format.
type Format string

// The supported formats.
const (
	FormatJSONL Format = "jsonl" // JSON Lines: one JSON object per line
	FormatCSV   Format = "csv"   // CSV with a header row
)

// DefaultMaxItemBytes is the item size limit used when Options.MaxItemBytes
// is 0.
const DefaultMaxItemBytes = 1 << 20

// giveUpAfter is how far past the size limit an overlong line is skipped
// while looking for its end, to report its size, before giving up. It keeps
// a single 2 GB line (an input that is not line-oriented at all) from being
// read to its end just to say how long it is.
const giveUpAfter = 64 << 20

// bufSize is the size of the read buffers.
const bufSize = 64 << 10

// zstdMaxWindow bounds the memory a zstd stream may ask for; it matches the
// zstd command-line tool's default limit for decompression.
const zstdMaxWindow = 128 << 20

// Options configures a Reader. The zero value is ready to use.
type Options struct {
	// Format is the input format. "" picks it from the name, after stripping
	// a .gz or .zst suffix: .csv means CSV, anything else JSON Lines.
	Format Format
	// MaxItemBytes is the largest item allowed, in bytes of input text (a
	// JSONL line without its line ending, or a CSV record). 0 means
	// DefaultMaxItemBytes.
	MaxItemBytes int
	// StartLine and StartOffset say that the io.Reader is the rest of a
	// larger uncompressed JSON Lines input, read (a ranged read) from just
	// past one of its items: StartOffset is that item's Item.End and
	// StartLine its Item.Line. Lines, Item.End and Error.Byte then count on
	// from there, no byte-order mark is looked for, compressed data is not
	// sniffed for, and a rest holding no further item ends with io.EOF
	// rather than ErrNoItems. A resumed staging reads this way.
	StartLine   int
	StartOffset int64
}

// Item is one validated input item.
type Item struct {
	// Line is the 1-based line number in the (decompressed) input where the
	// item starts; for a CSV record spanning lines, its first line.
	Line int
	// JSON is the item as one compact JSON object, without a newline.
	// It is only valid until the next call to Next or Close: the Reader
	// reuses its memory. Copy it (bytes.Clone) to keep it longer.
	JSON []byte
	// End is the byte offset in the input as stored just past the item's
	// line (its line ending included): where a ranged read of the rest
	// can start (Options.StartOffset). It is -1 when the input cannot be
	// entered there: compressed input (a compressed stream cannot be
	// entered mid-way), or CSV (whose header is at the start).
	End int64
}

// Error is a problem with an input: unreadable, corrupt or invalid data.
type Error struct {
	// Source is the input's name, e.g. "inputs.jsonl" or "stdin".
	Source string
	// Line is the 1-based line number the problem is on, 0 when it is not
	// about one line (a missing file, an empty input).
	Line int
	// Msg says what is wrong, e.g. "invalid JSON at column 7: ...".
	Msg string
	// Byte is the 1-based position in the input as stored of where the
	// problem was found, 0 when not known (or not about one place), so
	// Byte-1 is the byte offset: the first byte of the line (a CSV
	// record's first line) for uncompressed input; for compressed input
	// how far the compressed stream had been read (a decompressor reads
	// ahead, so the break is at or shortly before it); for a failed read,
	// where reading stopped. Error() does not show it; Position does.
	Byte int64
	// Err is the underlying error, for errors.Is: ErrNoItems for an input
	// without items, or the error of the operating system or the io.Reader
	// when opening or reading failed (fs.ErrNotExist, context.Canceled, a
	// network error...), which may be worth a retry. Err is nil for invalid
	// or corrupt data, which no retry will fix.
	Err error
}

// Error formats the error as "source:line: msg", or "source: msg" when Line
// is 0.
func (e *Error) Error() string {
	if e.Line > 0 {
		return e.Source + ":" + strconv.Itoa(e.Line) + ": " + e.Msg
	}
	return e.Source + ": " + e.Msg
}

// Unwrap returns e.Err.
func (e *Error) Unwrap() error { return e.Err }

// Position says where in the input the problem is, for messages that
// should name it: "line 7, byte offset 1234", "byte offset 1234", or "".
func (e *Error) Position() string {
	switch {
	case e.Line > 0 && e.Byte > 0:
		return "line " + strconv.Itoa(e.Line) + ", byte offset " + strconv.FormatInt(e.Byte-1, 10)
	case e.Byte > 0:
		return "byte offset " + strconv.FormatInt(e.Byte-1, 10)
	case e.Line > 0:
		return "line " + strconv.Itoa(e.Line)
	}
	return ""
}

type compression int

const (
	compNone compression = iota
	compGzip
	compZstd
)

func (c compression) String() string {
	switch c {
	case compGzip:
		return "gzip"
	case compZstd:
		return "zstd"
	}
	return "none"
}

// ErrNoItems is the Err of the *Error Next returns when the input holds no
// item at all (an empty file, only blank lines, a CSV header alone).
var ErrNoItems = errors.New("no items")

var errClosed = errors.New("inputs: Next called after Close")

// Reader yields the items of one input. It is not safe for concurrent use.
type Reader struct {
	name     string
	format   Format
	inferred bool // format picked from the name, not given
	max      int
	comp     compression // from the name; compNone means sniff

	src    sourceReader
	raw    *bufio.Reader // buffers src: the stored bytes
	skip   int64         // Options.StartOffset: where src starts in the input
	resume bool          // src is the rest of an input (Options.StartLine/StartOffset)
	closer io.Closer     // the file Open opened, if any
	file   *os.File      // the same, for Abort (never changed after Open)
	gz     *gzip.Reader
	zd     *zstd.Decoder
	br     *bufio.Reader // the (decompressed) text
	start  bool          // the stream has been set up
	err    error         // sticky: io.EOF or the first error

	line      int    // lines read so far
	lineStart int64  // stored offset of the last line read (uncompressed input)
	recStart  int64  // the same of the current CSV record's first line
	items     int    // items returned so far
	long      []byte // assembles a line longer than the read buffer
	tooLong   int64  // size of the line readLine refused
	exact     bool   // tooLong is the whole line's size

	jbuf bytes.Buffer // JSONL: the compacted item

	// CSV
	header  bool     // the header row has been read
	keys    [][]byte // `"name":`, JSON-encoded, one per column
	vals    []byte   // the current record's unquoted field values
	ends    []int    // end offset in vals of each field
	inQuote bool     // the current line ended inside a quoted field
	out     []byte   // the encoded record
}

// sourceReader remembers a read error of the underlying reader, so that it
// can be told apart from a decompressor's complaint about the data.
type sourceReader struct {
	r   io.Reader
	err error
	n   int64 // bytes read
}

func (s *sourceReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	s.n += int64(n)
	if err != nil && err != io.EOF && s.err == nil {
		s.err = err
	}
	return n, err
}

// NewReader returns a Reader of the input read from r. The name is used in
// error messages and, unless opts says otherwise, to pick the format. A .gz
// or .zst suffix says the data must be gzip or zstd; with neither, gzip and
// zstd data are still recognised by their magic bytes. NewReader does no I/O:
// problems with the data are reported by Next. Close the Reader to release
// its decompressor; Close does not close r.
func NewReader(name string, r io.Reader, opts Options) (*Reader, error) {
	comp, format := fromName(name)
	rd := &Reader{
		name:     name,
		format:   format,
		inferred: true,
		max:      opts.MaxItemBytes,
		comp:     comp,
		src:      sourceReader{r: r},
		line:     opts.StartLine,
		skip:     opts.StartOffset,
		resume:   opts.StartLine > 0 || opts.StartOffset > 0,
	}
	if opts.StartLine < 0 || opts.StartOffset < 0 {
		return nil, &Error{Source: name, Msg: fmt.Sprintf("invalid start (line %d, offset %d)", opts.StartLine, opts.StartOffset)}
	}
	if rd.resume && comp != compNone {
		return nil, &Error{Source: name, Msg: "a " + comp.String() + " stream cannot be read from the middle (StartLine/StartOffset)"}
	}
	if opts.Format != "" {
		switch f := Format(strings.ToLower(string(opts.Format))); f {
		case FormatJSONL, FormatCSV:
			rd.format, rd.inferred = f, false
		default:
			return nil, &Error{Source: name, Msg: fmt.Sprintf("unknown input format %q (want jsonl or csv)", opts.Format)}
		}
	}
	switch {
	case rd.max == 0:
		rd.max = DefaultMaxItemBytes
	case rd.max < 0:
		return nil, &Error{Source: name, Msg: fmt.Sprintf("invalid item size limit %d (want a positive number of bytes)", opts.MaxItemBytes)}
	}
	return rd, nil
}

// fromName picks compression and format from a name's suffixes.
func fromName(name string) (compression, Format) {
	lower := strings.ToLower(name)
	comp := compNone
	switch {
	case strings.HasSuffix(lower, ".gz"):
		comp, lower = compGzip, strings.TrimSuffix(lower, ".gz")
	case strings.HasSuffix(lower, ".zst"):
		comp, lower = compZstd, strings.TrimSuffix(lower, ".zst")
	}
	if strings.HasSuffix(lower, ".csv") {
		return comp, FormatCSV
	}
	return comp, FormatJSONL
}

// Open returns a Reader of the file at path, or of standard input when path
// is "-" (named "stdin" in messages). A missing file, a directory or a file
// that cannot be opened is reported as an *Error ("inputs.jsonl: no such
// file"); errors.Is works with fs.ErrNotExist and fs.ErrPermission. Close the
// Reader to close the file; standard input is left open.
func Open(path string, opts Options) (*Reader, error) {
	if path == "-" {
		return NewReader("stdin", os.Stdin, opts)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, openError(path, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, openError(path, err)
	}
	if fi.IsDir() {
		f.Close()
		return nil, &Error{Source: path, Msg: "is a directory, expected a file"}
	}
	r, err := NewReader(path, f, opts)
	if err != nil {
		f.Close()
		return nil, err
	}
	r.closer, r.file = f, f
	return r, nil
}

func openError(path string, err error) *Error {
	var msg string
	switch {
	case errors.Is(err, fs.ErrNotExist):
		msg = "no such file"
	case errors.Is(err, fs.ErrPermission):
		msg = "permission denied"
	default:
		var pe *fs.PathError
		if errors.As(err, &pe) {
			msg = pe.Err.Error()
		} else {
			msg = err.Error()
		}
	}
	return &Error{Source: path, Msg: msg, Err: err}
}

// Next returns the next item. After the last item it returns io.EOF; if the
// input holds no item at all it returns an *Error saying so instead, whose
// Err is ErrNoItems. Any
// other problem is an *Error too, and ends the input: once Next has returned
// an error it returns the same error again. Next after Close returns an
// error.
func (r *Reader) Next() (Item, error) {
	if r.err != nil {
		return Item{}, r.err
	}
	if !r.start {
		r.start = true
		if err := r.setup(); err != nil {
			r.err = err
			return Item{}, err
		}
	}
	var it Item
	var err error
	if r.format == FormatCSV {
		it, err = r.nextCSV()
	} else {
		it, err = r.nextJSONL()
	}
	if err == io.EOF && r.items == 0 && !r.resume {
		err = r.noItems()
	}
	if err != nil {
		var e *Error
		if errors.As(err, &e) && e.Byte == 0 && e.Line > 0 && e.Err == nil {
			e.Byte = r.errorByte() + 1
		}
		r.err = err
		return Item{}, err
	}
	r.items++
	return it, nil
}

// BytesRead is how many bytes have been read so far from the input as it
// is stored (compressed bytes of a compressed input), read-ahead included:
// with the input's size, it says how far through the input the items
// returned so far are.
func (r *Reader) BytesRead() int64 { return r.src.n }

// Compression names the input's compression once Next has been called:
// "gzip", "zstd", or "" for none.
func (r *Reader) Compression() string {
	if r.comp == compNone {
		return ""
	}
	return r.comp.String()
}

// stored is the offset in the input as stored of the next byte the text
// (or the decompressor) takes from it.
func (r *Reader) stored() int64 {
	if r.raw == nil {
		return r.skip + r.src.n
	}
	return r.skip + r.src.n - int64(r.raw.Buffered())
}

// itemEnd is Item.End of the item just read.
func (r *Reader) itemEnd() int64 {
	if r.comp != compNone || r.format == FormatCSV {
		return -1
	}
	return r.stored()
}

// errorByte is the stored offset Error.Byte names (0-based).
func (r *Reader) errorByte() int64 {
	switch {
	case r.comp != compNone:
		return r.stored()
	case r.format == FormatCSV:
		return r.recStart
	}
	return r.lineStart
}

// Abort unblocks a read waiting on the file Open opened (a FIFO whose
// writer is silent): it closes the file, and may be called from any
// goroutine, during a read; reads then fail. Close the Reader as usual.
func (r *Reader) Abort() {
	if r.file != nil {
		r.file.Close()
	}
}

// Close releases the decompressor and closes the file Open opened. It does
// not close the io.Reader given to NewReader. Close may be called more than
// once.
func (r *Reader) Close() error {
	r.err = errClosed
	var err error
	if r.gz != nil {
		r.gz.Close()
		r.gz = nil
	}
	if r.zd != nil {
		r.zd.Close()
		r.zd = nil
	}
	if r.closer != nil {
		err = r.closer.Close()
		r.closer = nil
	}
	r.br = nil
	return err
}

// setup sets up decompression.
func (r *Reader) setup() error {
	raw := bufio.NewReaderSize(&r.src, bufSize)
	r.raw = raw
	if r.resume {
		r.br = raw // checked uncompressed in NewReader; nothing to sniff mid-stream
		return nil
	}
	magic, err := raw.Peek(4)
	if err != nil && err != io.EOF {
		return r.readError(err)
	}
	sniffed := compNone
	switch {
	case bytes.HasPrefix(magic, []byte{0x1f, 0x8b}):
		sniffed = compGzip
	case bytes.HasPrefix(magic, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		sniffed = compZstd
	}
	switch {
	case r.comp == compNone:
		r.comp = sniffed
	case len(magic) > 0 && sniffed != r.comp:
		ext := map[compression]string{compGzip: ".gz", compZstd: ".zst"}[r.comp]
		return &Error{Source: r.name, Msg: "not " + r.comp.String() + " data (the name ends in " + ext + " but the data does not start like " + r.comp.String() + ")"}
	}
	switch r.comp {
	case compGzip:
		gz, err := gzip.NewReader(raw)
		if err == io.EOF { // zero bytes: an empty input
			r.br = bufio.NewReaderSize(bytes.NewReader(nil), 16)
			return nil
		}
		if err != nil {
			if r.src.err != nil {
				return r.readError(err)
			}
			if errors.Is(err, io.ErrUnexpectedEOF) {
				return &Error{Source: r.name, Msg: "truncated gzip data (the file ends inside the gzip header)"}
			}
			return &Error{Source: r.name, Msg: "not gzip data (" + err.Error() + ")"}
		}
		r.gz = gz
		r.br = bufio.NewReaderSize(gz, bufSize)
	case compZstd:
		zd, err := zstd.NewReader(raw, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(zstdMaxWindow))
		if err != nil {
			return r.readError(err)
		}
		r.zd = zd
		r.br = bufio.NewReaderSize(zd, bufSize)
	default:
		r.br = raw
	}
	return nil
}

// readError describes a failed read of line r.line+1.
func (r *Reader) readError(err error) *Error {
	e := &Error{Source: r.name, Line: r.line + 1, Byte: r.stored() + 1}
	if r.src.err != nil {
		e.Msg, e.Err = "read error: "+r.src.err.Error(), r.src.err
		return e
	}
	if r.comp == compNone {
		e.Msg, e.Err = "read error: "+err.Error(), err
		return e
	}
	c := r.comp.String()
	if errors.Is(err, io.ErrUnexpectedEOF) {
		e.Msg = "truncated " + c + " data (the file ends in the middle of the compressed stream; was it cut short?)"
	} else {
		e.Msg = "corrupt " + c + " data: " + err.Error()
	}
	return e
}

func (r *Reader) noItems() *Error {
	msg := "no items (the file is empty)"
	switch {
	case r.format == FormatCSV && r.header:
		msg = "no items (only a header row)"
	case r.line > 0:
		msg = "no items (the file has only blank lines)"
	}
	return &Error{Source: r.name, Msg: msg, Err: ErrNoItems}
}

func (r *Reader) errorf(line int, format string, args ...any) *Error {
	return &Error{Source: r.name, Line: line, Msg: fmt.Sprintf(format, args...)}
}

var errLineTooLong = errors.New("line too long")

// readLine returns the next line, without its line ending ("\n" or "\r\n"),
// or io.EOF. The line is only valid until the next read. A line longer than
// limit bytes is skipped over (up to giveUpAfter bytes past the limit, without
// keeping it) and reported as errLineTooLong, with r.tooLong and r.exact set.
// The first line loses a UTF-8 byte-order mark. Any other error is a
// failed read.
func (r *Reader) readLine(limit int) ([]byte, error) {
	if r.comp == compNone {
		r.lineStart = r.stored()
	}
	b, err := r.br.ReadSlice('\n')
	if err == bufio.ErrBufferFull {
		r.long = append(r.long[:0], b...)
		for err == bufio.ErrBufferFull && len(r.long) <= limit+1 {
			b, err = r.br.ReadSlice('\n')
			r.long = append(r.long, b...)
		}
		if err == bufio.ErrBufferFull {
			r.line++
			return nil, r.skipLine(int64(len(r.long)), limit, r.long[len(r.long)-1])
		}
		b = r.long
	}
	if err != nil && err != io.EOF {
		return nil, err
	}
	if len(b) == 0 {
		return nil, io.EOF
	}
	r.line++
	if b[len(b)-1] == '\n' {
		b = b[:len(b)-1]
	}
	if n := len(b); n > 0 && b[n-1] == '\r' {
		b = b[:n-1]
	}
	if r.line == 1 {
		b = bytes.TrimPrefix(b, []byte("\xef\xbb\xbf"))
	}
	if len(b) > limit {
		r.tooLong, r.exact = int64(len(b)), true
		return nil, errLineTooLong
	}
	return b, nil
}

// skipLine reads past the rest of a line of which n bytes were read, last
// being the last of them. It stops giveUpAfter bytes past the limit.
func (r *Reader) skipLine(n int64, limit int, last byte) error {
	stop := int64(limit) + giveUpAfter
	for n < stop {
		b, err := r.br.ReadSlice('\n')
		prev := last
		if len(b) > 0 {
			n += int64(len(b))
			last = b[len(b)-1]
			if len(b) >= 2 {
				prev = b[len(b)-2]
			}
		}
		switch err {
		case bufio.ErrBufferFull:
			continue
		case nil: // drop the line ending
			n--
			if prev == '\r' {
				n--
			}
		case io.EOF:
			if last == '\r' {
				n--
			}
		default:
			return err
		}
		r.tooLong, r.exact = n, true
		return errLineTooLong
	}
	r.tooLong, r.exact = n, false
	return errLineTooLong
}

// tooLongError reports an item that is over the size limit; size is its
// size so far and exact says whether that is all of it.
func (r *Reader) tooLongError(line int, size int64, exact bool) *Error {
	s, l := formatSize(size), formatSize(int64(r.max))
	if r.max < 1024 || s == l {
		s, l = strconv.FormatInt(size, 10)+" bytes", strconv.Itoa(r.max)+"-byte"
	}
	var msg string
	switch {
	case exact:
		msg = "item is " + s + ", over the " + l + " limit (--max-item-size)"
	case size >= int64(r.max)+giveUpAfter:
		msg = "item is larger than " + s + " (gave up looking for the end of the line), over the " + l + " limit (--max-item-size)"
	default:
		msg = "item is at least " + s + ", over the " + l + " limit (--max-item-size)"
	}
	return &Error{Source: r.name, Line: line, Msg: msg}
}

// formatSize formats a byte count for people: "512 bytes", "3.2 MiB".
func formatSize(n int64) string {
	const unit = 1024
	if n < unit {
		if n == 1 {
			return "1 byte"
		}
		return strconv.FormatInt(n, 10) + " bytes"
	}
	v, suffix := float64(n)/unit, " KiB"
	for _, s := range []string{" MiB", " GiB", " TiB"} {
		if v < unit {
			break
		}
		v, suffix = v/unit, s
	}
	return strings.TrimSuffix(strconv.FormatFloat(v, 'f', 1, 64), ".0") + suffix
}

// checkText reports a NUL byte or invalid UTF-8 in a line.
func (r *Reader) checkText(line []byte) error {
	if r.line == 1 && (bytes.HasPrefix(line, []byte{0xff, 0xfe}) || bytes.HasPrefix(line, []byte{0xfe, 0xff})) {
		return r.errorf(r.line, "the file is UTF-16 encoded; convert it to UTF-8 (e.g. iconv -f UTF-16 -t UTF-8)")
	}
	if i := bytes.IndexByte(line, 0); i >= 0 {
		return r.errorf(r.line, "NUL byte at column %d (is this a binary or UTF-16 file?)", i+1)
	}
	if i := invalidUTF8(line); i >= 0 {
		return r.errorf(r.line, "invalid UTF-8 at column %d (the input must be UTF-8 encoded)", i+1)
	}
	return nil
}

// invalidUTF8 returns the index of the first invalid UTF-8 sequence in b, or
// -1.
func invalidUTF8(b []byte) int {
	if utf8.Valid(b) {
		return -1
	}
	for i := 0; i < len(b); {
		if b[i] < utf8.RuneSelf {
			i++
			continue
		}
		c, size := utf8.DecodeRune(b[i:])
		if c == utf8.RuneError && size == 1 {
			return i
		}
		i += size
	}
	return -1
}
