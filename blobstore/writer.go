package blobstore

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"hash"
	"io"
)

// Writer streams an object into a bucket through Put: bytes written go to
// the backend as they come, and the object appears only when Close returns
// nil. Abort (or a cancelled context) discards it. It counts and hashes
// what it stores, for manifests.
type Writer struct {
	pw   *io.PipeWriter
	done chan error
	sum  hash.Hash
	size int64
	err  error
}

// NewWriter starts writing key. The caller must call Close or Abort.
func NewWriter(ctx context.Context, b Bucket, key string) *Writer {
	pr, pw := io.Pipe()
	w := &Writer{pw: pw, done: make(chan error, 1), sum: sha256.New()}
	go func() {
		err := b.Put(ctx, key, pr)
		// Unblock writers if Put stopped early, with its reason: a writer
		// reports why the store refused, not "read/write on closed pipe".
		if err != nil {
			pr.CloseWithError(err)
		} else {
			pr.CloseWithError(io.ErrClosedPipe)
		}
		w.done <- err
	}()
	return w
}

// Write sends p to the object.
func (w *Writer) Write(p []byte) (int, error) {
	n, err := w.pw.Write(p)
	w.sum.Write(p[:n])
	w.size += int64(n)
	return n, err
}

// Close finishes the object and waits until it is stored.
func (w *Writer) Close() error {
	if w.err != nil {
		return w.err
	}
	w.pw.Close()
	w.err = <-w.done
	if w.err == nil {
		w.err = errClosed
		return nil
	}
	return w.err
}

// Abort discards the object; nothing is stored. It returns once Put gave up.
func (w *Writer) Abort(cause error) {
	if w.err != nil {
		return
	}
	if cause == nil {
		cause = errors.New("write aborted")
	}
	w.pw.CloseWithError(cause)
	<-w.done
	w.err = cause
}

var errClosed = errors.New("blobstore: writer already closed")

// Size is the number of bytes written.
func (w *Writer) Size() int64 { return w.size }

// SHA256 is the hex sha256 of the bytes written.
func (w *Writer) SHA256() string { return hex.EncodeToString(w.sum.Sum(nil)) }
