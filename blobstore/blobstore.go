// Package blobstore is a small portable API over object stores.
//
// A Bucket is opened from a URL by Open; the scheme picks a registered driver:
//
//	file:///abs/dir                                   local directory
//	mem://name/prefix                                 in-process, for tests
//	s3://bucket/prefix?endpoint=…&region=…&path_style=true   aws-sdk-go-v2
//	minio://host:port/bucket/prefix?secure=false       minio-go
//
// A path after the bucket in the URL is a key prefix: it is added to every key
// and stripped from every listed key, so callers never see it.
//
// Writes are atomic: an object appears only when Put read its whole body
// without error; a cancelled context or a failing reader leaves no object and
// keeps any older object under that key. Errors are tested with errors.Is
// against ErrNotFound, ErrBucketNotFound, ErrAccessDenied and ErrInvalidKey.
package blobstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"iter"
	"time"
)

// Error kinds; test with errors.Is.
var (
	ErrNotFound       = errors.New("object not found")
	ErrBucketNotFound = errors.New("bucket not found")
	ErrAccessDenied   = errors.New("access denied")
	ErrInvalidKey     = errors.New("invalid key")
)

// Attributes describe one stored object.
type Attributes struct {
	Key     string    // key as the caller names it (without the URL's prefix)
	Size    int64     // bytes stored
	ModTime time.Time // last modification
	ETag    string    // backend's entity tag, "" when the driver has none
}

// Bucket is one bucket (or directory) of objects, possibly under a key prefix.
// Implementations are safe for concurrent use.
type Bucket interface {
	// Put stores the whole of r under key, atomically. r may be of unknown
	// length; large bodies are streamed with bounded memory.
	Put(ctx context.Context, key string, r io.Reader) error
	// NewReader opens the object for reading. The caller closes it.
	NewReader(ctx context.Context, key string) (io.ReadCloser, error)
	// NewRangeReader reads length bytes from offset; length < 0 reads to the end.
	NewRangeReader(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error)
	// Stat returns the object's attributes.
	Stat(ctx context.Context, key string) (Attributes, error)
	// List yields every object whose key starts with prefix, in lexical key
	// order, paging through the backend as needed. Iteration stops at the
	// first error, which is yielded.
	List(ctx context.Context, prefix string) iter.Seq2[Attributes, error]
	// Delete removes the object. Deleting a missing object is not an error.
	Delete(ctx context.Context, key string) error
	// URL is the bucket's URL with any credentials removed: safe to print,
	// log and store.
	URL() string
	// Close releases the bucket's resources.
	Close() error
}

// Error is the error type the drivers return. It names the operation and
// key, and matches its Kind (one of the Err values, or nil) with errors.Is.
type Error struct {
	Op   string // "put", "get", "stat", "list", "delete", "open"
	Key  string
	Kind error // ErrNotFound, ErrBucketNotFound, …; nil when unclassified
	Err  error // the underlying error, may be nil
}

func (e *Error) Error() string {
	msg := fmt.Sprintf("blobstore: %s %q", e.Op, e.Key)
	if e.Kind != nil {
		msg += ": " + e.Kind.Error()
	}
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

// Unwrap lets errors.Is match both the kind and the underlying error.
func (e *Error) Unwrap() []error {
	var errs []error
	if e.Kind != nil {
		errs = append(errs, e.Kind)
	}
	if e.Err != nil {
		errs = append(errs, e.Err)
	}
	return errs
}

// ReadAll reads a whole object into memory; for small objects such as manifests.
func ReadAll(ctx context.Context, b Bucket, key string) ([]byte, error) {
	r, err := b.NewReader(ctx, key)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return io.ReadAll(r)
}

// Exists reports whether key names a stored object.
func Exists(ctx context.Context, b Bucket, key string) (bool, error) {
	_, err := b.Stat(ctx, key)
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}
