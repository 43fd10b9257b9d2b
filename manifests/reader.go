package manifests

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"iter"
	"net/url"
	"strings"

	"github.com/batchpipe/batchpipe/blobstore"
	"github.com/batchpipe/batchpipe/zjsonl"
)

// Batch is an opened manifest together with the bucket its objects live in.
// Results and Failures stream the batch's objects one at a time, so memory
// stays bounded whatever the batch size; Verify checks every object.
//
// A Batch is safe for concurrent use once opened; each iteration opens its
// own readers.
type Batch struct {
	// Manifest is the manifest as stored.
	Manifest Manifest

	// VerifyConcurrency is how many result objects Verify reads at once;
	// 0 means 8. Problems are still reported in manifest order.
	VerifyConcurrency int

	bucket      blobstore.Bucket
	prefix      string // blobstore.Prefix(bucket): stripped from manifest keys
	manifestKey string // full key of the manifest, prefix included
	batchID     string // the id the batch was opened by
	closeBucket bool   // OpenURL opened the bucket, so Close closes it
}

// Open reads the manifest of batch batchID from b (the store the batch was
// run against, opened at its prefix). The error for a batch without a
// manifest — unknown, or not finished yet — matches blobstore.ErrNotFound.
// Close does not close b.
func Open(ctx context.Context, b blobstore.Bucket, batchID string) (*Batch, error) {
	if err := ValidateBatchID(batchID); err != nil {
		return nil, err
	}
	key := ManifestKey(batchID)
	data, err := blobstore.ReadAll(ctx, b, key)
	if err != nil {
		if errors.Is(err, blobstore.ErrNotFound) {
			return nil, &noManifestError{batchID: batchID, store: b.URL(), err: err}
		}
		return nil, fmt.Errorf("reading the manifest of batch %s in %s: %w", batchID, b.URL(), err)
	}
	prefix := blobstore.Prefix(b)
	m, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%s in %s: %w", prefix+key, b.URL(), err)
	}
	return &Batch{Manifest: *m, bucket: b, prefix: prefix, manifestKey: prefix + key, batchID: batchID}, nil
}

// OpenURL opens the manifest a URL names:
//
//	s3://bucket/prefix/batches/<id>/manifest.json?region=…
//	minio://host:port/bucket/prefix/batches/<id>/manifest.json?secure=false
//	file:///abs/dir/batches/<id>/manifest.json
//	mem://name/prefix/batches/<id>/manifest.json
//
// The part before batches/<id>/manifest.json, with the URL's query, is the
// store URL; its bucket is opened with blobstore.Open and closed by Close.
func OpenURL(ctx context.Context, manifestURL string) (*Batch, error) {
	storeURL, batchID, err := SplitManifestURL(manifestURL)
	if err != nil {
		return nil, err
	}
	b, err := blobstore.Open(ctx, storeURL)
	if err != nil {
		return nil, err
	}
	batch, err := Open(ctx, b, batchID)
	if err != nil {
		b.Close()
		return nil, err
	}
	batch.closeBucket = true
	return batch, nil
}

// SplitManifestURL splits a manifest URL (…/batches/<id>/manifest.json)
// into the URL of its store, query kept, and the batch id.
func SplitManifestURL(manifestURL string) (storeURL, batchID string, err error) {
	u, err := url.Parse(manifestURL)
	if err != nil {
		return "", "", fmt.Errorf("bad manifest URL %q: %v", blobstore.Redact(manifestURL), err)
	}
	bad := func(why string) error {
		return fmt.Errorf("bad manifest URL %q: %s; want <store URL>/batches/<id>/manifest.json, e.g. s3://bucket/prefix/batches/<id>/manifest.json",
			blobstore.Redact(manifestURL), why)
	}
	if u.Scheme == "" {
		return "", "", bad("no scheme (s3://, minio://, file://, …)")
	}
	rest, ok := strings.CutSuffix(u.Path, "/manifest.json")
	if !ok {
		return "", "", bad("it does not end in /manifest.json")
	}
	slash := strings.LastIndex(rest, "/")
	if slash < 0 {
		return "", "", bad("no batch id")
	}
	batchID = rest[slash+1:]
	root, ok := strings.CutSuffix(rest[:slash], "/batches")
	if !ok {
		return "", "", bad("no batches/<id>/ before manifest.json")
	}
	if err := ValidateBatchID(batchID); err != nil {
		return "", "", bad(err.Error())
	}
	if root == "" && u.Scheme == "file" {
		root = "/"
	}
	u.Path, u.RawPath = root, ""
	return u.String(), batchID, nil
}

// noManifestError is Open's error for a missing manifest.
type noManifestError struct {
	batchID, store string
	err            error
}

func (e *noManifestError) Error() string {
	return fmt.Sprintf("no manifest for batch %s in %s: the batch is unknown or not finished", e.batchID, e.store)
}

func (e *noManifestError) Unwrap() error { return e.err }

// Parse decodes a manifest and checks that it is format v1.
func Parse(data []byte) (*Manifest, error) {
	var m Manifest
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("not a batchpipe manifest: %w", err)
	}
	if m.Format != Format {
		if m.Format == "" {
			return nil, fmt.Errorf("not a batchpipe manifest: no \"format\" field")
		}
		return nil, fmt.Errorf("manifest format %q is not supported; this reader knows %q", m.Format, Format)
	}
	return &m, nil
}

// Close releases the bucket if OpenURL opened it.
func (b *Batch) Close() error {
	if b.closeBucket {
		b.closeBucket = false
		return b.bucket.Close()
	}
	return nil
}

// Bucket is the bucket the batch's objects are read from.
func (b *Batch) Bucket() blobstore.Bucket { return b.bucket }

// ManifestKey is the manifest's full key, the store's prefix included.
func (b *Batch) ManifestKey() string { return b.manifestKey }

// RelativeKey turns a key from the manifest (the store's prefix included)
// into a key of Bucket.
func (b *Batch) RelativeKey(manifestKey string) (string, error) {
	rel, ok := strings.CutPrefix(manifestKey, b.prefix)
	if !ok || rel == "" {
		return "", fmt.Errorf("%s: key is outside the store %s (its keys start with %q); was the manifest moved to another store or prefix?",
			manifestKey, b.bucket.URL(), b.prefix)
	}
	return rel, nil
}

// Results yields every line of every result object, in manifest order —
// input order — opening one object at a time. It stops at the first error,
// which names the object; a line whose index is not the next one expected,
// or an object holding more or fewer lines than the manifest says, is an
// error (Verify checks everything else). Breaking out of the loop early is
// fine. A failed or canceled batch lists only the shards that finished, so
// its indexes may skip ranges; a finished one yields every index once.
func (b *Batch) Results(ctx context.Context) iter.Seq2[ResultLine, error] {
	return func(yield func(ResultLine, error) bool) {
		for _, r := range b.Manifest.Results {
			if err := ctx.Err(); err != nil {
				yield(ResultLine{}, err)
				return
			}
			n := int64(0)
			stopped := false
			err := b.readLines(ctx, r.Key, func(zr *zjsonl.Reader) error {
				var line ResultLine
				if err := zr.Decode(&line); err != nil {
					return err
				}
				if line.Status != ItemSucceeded && string(line.Output) == "null" {
					line.Output = nil // as a line without the key reads
				}
				if n >= r.Items {
					return fmt.Errorf("line %d: more lines than the %d the manifest lists", zr.Line(), r.Items)
				}
				if want := r.FirstIndex + n; line.Index != want {
					return fmt.Errorf("line %d: index %d, want %d (run Verify for details)", zr.Line(), line.Index, want)
				}
				n++
				if !yield(line, nil) {
					stopped = true
					return errStop
				}
				return nil
			})
			if stopped {
				return
			}
			if err == nil && n != r.Items {
				err = fmt.Errorf("%s: %d lines, manifest lists %d", r.Key, n, r.Items)
			}
			if err != nil {
				yield(ResultLine{}, err)
				return
			}
		}
	}
}

// Failures yields every line of the failures object: each failed item with
// its input and error, in input order. It yields nothing when no item failed.
func (b *Batch) Failures(ctx context.Context) iter.Seq2[FailureLine, error] {
	return func(yield func(FailureLine, error) bool) {
		f := b.Manifest.Failures
		if f == nil {
			return
		}
		stopped := false
		err := b.readLines(ctx, f.Key, func(zr *zjsonl.Reader) error {
			var line FailureLine
			if err := zr.Decode(&line); err != nil {
				return err
			}
			if !yield(line, nil) {
				stopped = true
				return errStop
			}
			return nil
		})
		if err != nil && !stopped {
			yield(FailureLine{}, err)
		}
	}
}

var errStop = errors.New("stop")

// storeError is an error of the store (opening or reading an object), as
// opposed to one of the object's contents.
type storeError struct{ err error }

func (e *storeError) Error() string { return e.err.Error() }
func (e *storeError) Unwrap() error { return e.err }

// errReader keeps the first error of its source other than io.EOF.
type errReader struct {
	r   io.Reader
	err error
}

func (e *errReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil && err != io.EOF && e.err == nil {
		e.err = err
	}
	return n, err
}

// readLines opens the object at manifest key key and calls next until it
// returns io.EOF (the end: readLines returns nil) or another error, which is
// returned prefixed with the key; errStop is returned as is. Errors opening
// or reading the object are *storeError.
func (b *Batch) readLines(ctx context.Context, key string, next func(*zjsonl.Reader) error) error {
	rel, err := b.RelativeKey(key)
	if err != nil {
		return err
	}
	rc, err := b.bucket.NewReader(ctx, rel)
	if err != nil {
		if errors.Is(err, blobstore.ErrNotFound) {
			return &storeError{fmt.Errorf("%s: listed in the manifest but missing from %s: %w", key, b.bucket.URL(), err)}
		}
		return &storeError{fmt.Errorf("%s: %w", key, err)}
	}
	defer rc.Close()
	src := &errReader{r: rc}
	zr, err := zjsonl.NewReader(src)
	if err == nil {
		defer zr.Close()
		for err == nil {
			err = next(zr)
		}
	}
	switch {
	case err == io.EOF:
		return nil
	case err == errStop:
		return err
	case src.err != nil:
		return &storeError{fmt.Errorf("%s: reading: %w", key, src.err)}
	}
	return fmt.Errorf("%s: %w", key, err)
}
