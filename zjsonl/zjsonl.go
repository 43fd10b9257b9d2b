// Package zjsonl reads and writes zstd-compressed JSON lines: one JSON value
// per line, the format of every object batchpipe stores (input shards, result
// objects, failures).
//
// zstd encoders and decoders are expensive to create (about 60 times the cost
// of encoding a small object) and a decoder that is dropped without Close can
// leak goroutines, so both are kept in small pools: a Writer or Reader takes
// one when created and returns it on Close.
package zjsonl

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"runtime"

	"github.com/klauspost/compress/zstd"
)

// MaxLineBytes is the default longest line a Reader accepts.
const MaxLineBytes = 64 << 20

// pool holds up to cap(ch) idle coders; extras are closed, never dropped.
type pool[T any] struct {
	ch      chan T
	newFn   func() T
	closeFn func(T)
}

func (p *pool[T]) get() T {
	select {
	case c := <-p.ch:
		return c
	default:
		return p.newFn()
	}
}

func (p *pool[T]) put(c T) {
	select {
	case p.ch <- c:
	default:
		p.closeFn(c)
	}
}

// encoderPool pools encoders of the given concurrency: 1 encodes in the
// writer's goroutine, 2 encodes each block in the background while the
// writer fills the next.
func encoderPool(concurrency int) *pool[*zstd.Encoder] {
	return &pool[*zstd.Encoder]{
		ch: make(chan *zstd.Encoder, 4*runtime.GOMAXPROCS(0)),
		newFn: func() *zstd.Encoder {
			// A 1 MiB window keeps each pooled encoder small (a worker holds
			// one per shard in flight); objects are shards, so little ratio is
			// lost.
			e, err := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(concurrency), zstd.WithEncoderLevel(zstd.SpeedDefault),
				zstd.WithWindowSize(1<<20), zstd.WithLowerEncoderMem(true))
			if err != nil {
				panic(err) // only on invalid options
			}
			return e
		},
		closeFn: func(e *zstd.Encoder) { e.Close() },
	}
}

var (
	encoders           = encoderPool(1)
	backgroundEncoders = encoderPool(2)
)

var decoders = &pool[*zstd.Decoder]{
	ch: make(chan *zstd.Decoder, 4*runtime.GOMAXPROCS(0)),
	newFn: func() *zstd.Decoder {
		d, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true))
		if err != nil {
			panic(err)
		}
		return d
	},
	closeFn: func(d *zstd.Decoder) { d.Close() },
}

// Writer encodes JSON lines into a zstd stream.
type Writer struct {
	enc   *zstd.Encoder
	pool  *pool[*zstd.Encoder]
	buf   bytes.Buffer
	lines int
}

// NewWriter starts a zstd stream on w. Close ends the stream (it does not
// close w).
func NewWriter(w io.Writer) *Writer { return newWriter(w, encoders) }

// NewBackgroundWriter is NewWriter for one long stream written by one
// goroutine (staging an input): each block is compressed on another
// goroutine while the caller fills the next, so the writer uses a second
// core. The output is a valid stream like NewWriter's.
func NewBackgroundWriter(w io.Writer) *Writer { return newWriter(w, backgroundEncoders) }

func newWriter(w io.Writer, p *pool[*zstd.Encoder]) *Writer {
	enc := p.get()
	enc.Reset(w)
	return &Writer{enc: enc, pool: p}
}

// Write appends v, encoded as JSON, as one line.
func (w *Writer) Write(v any) error {
	w.buf.Reset()
	e := json.NewEncoder(&w.buf)
	e.SetEscapeHTML(false)
	if err := e.Encode(v); err != nil { // Encode adds the newline
		return err
	}
	return w.writeLine(w.buf.Bytes())
}

// WriteRaw appends line, which must be one JSON value without a newline.
func (w *Writer) WriteRaw(line []byte) error {
	if bytes.IndexByte(line, '\n') >= 0 {
		return fmt.Errorf("zjsonl: raw line contains a newline")
	}
	if _, err := w.enc.Write(line); err != nil {
		return err
	}
	if _, err := w.enc.Write([]byte{'\n'}); err != nil {
		return err
	}
	w.lines++
	return nil
}

func (w *Writer) writeLine(b []byte) error {
	if _, err := w.enc.Write(b); err != nil {
		return err
	}
	w.lines++
	return nil
}

// Lines is the number of lines written so far.
func (w *Writer) Lines() int { return w.lines }

// Close ends the zstd stream, flushing it to the underlying writer, and
// returns the encoder to the pool.
func (w *Writer) Close() error {
	if w.enc == nil {
		return nil
	}
	err := w.enc.Close()
	w.enc.Reset(nil)
	w.pool.put(w.enc)
	w.enc = nil
	return err
}

// Reader yields the lines of a zstd JSON-lines stream one at a time.
type Reader struct {
	dec  *zstd.Decoder
	br   *bufio.Reader
	line int
	max  int
	buf  []byte
}

// NewReader starts decoding r. The caller must Close the Reader.
func NewReader(r io.Reader) (*Reader, error) {
	dec := decoders.get()
	if err := dec.Reset(r); err != nil {
		decoders.put(dec)
		return nil, fmt.Errorf("zjsonl: %w", err)
	}
	return &Reader{dec: dec, br: bufio.NewReaderSize(dec, 64<<10), max: MaxLineBytes}, nil
}

// SetMaxLineBytes changes the longest line accepted (default MaxLineBytes).
func (r *Reader) SetMaxLineBytes(n int) { r.max = n }

// Next returns the next non-empty line without its newline; the slice is
// valid until the following call. It returns io.EOF after the last line.
func (r *Reader) Next() ([]byte, error) {
	for {
		r.buf = r.buf[:0]
		for {
			chunk, err := r.br.ReadSlice('\n')
			r.buf = append(r.buf, chunk...)
			if len(r.buf) > r.max {
				return nil, fmt.Errorf("zjsonl: line %d: longer than %d bytes", r.line+1, r.max)
			}
			if err == bufio.ErrBufferFull {
				continue
			}
			if err == io.EOF {
				if len(r.buf) == 0 {
					return nil, io.EOF
				}
				break // last line without a newline
			}
			if err != nil {
				return nil, fmt.Errorf("zjsonl: line %d: %w", r.line+1, err)
			}
			break
		}
		r.line++
		line := bytes.TrimRight(r.buf, "\r\n")
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		return line, nil
	}
}

// Decode reads the next line into v. It returns io.EOF after the last line.
func (r *Reader) Decode(v any) error {
	line, err := r.Next()
	if err != nil {
		return err
	}
	if err := json.Unmarshal(line, v); err != nil {
		return fmt.Errorf("zjsonl: line %d: %w", r.line, err)
	}
	return nil
}

// Line is the 1-based number of the line last returned.
func (r *Reader) Line() int { return r.line }

// Close returns the decoder to the pool. It does not close the source.
func (r *Reader) Close() error {
	if r.dec == nil {
		return nil
	}
	r.dec.Reset(nil)
	decoders.put(r.dec)
	r.dec = nil
	return nil
}
