package blobstore

import (
	"context"
	"io"
	"iter"
)

// Observer is told about every operation of an instrumented bucket: its
// name (put, get, stat, list, delete), the bytes moved, and its error.
type Observer func(op string, bytes int64, err error)

// Instrument wraps b so obs sees every operation; in the spirit of thanos'
// objstore, instrumentation is a Bucket around a Bucket.
func Instrument(b Bucket, obs Observer) Bucket { return &instrumented{Bucket: b, obs: obs} }

type instrumented struct {
	Bucket
	obs Observer
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

func (i *instrumented) Put(ctx context.Context, key string, r io.Reader) error {
	cr := &countingReader{r: r}
	err := i.Bucket.Put(ctx, key, cr)
	i.obs("put", cr.n, err)
	return err
}

func (i *instrumented) NewReader(ctx context.Context, key string) (io.ReadCloser, error) {
	return i.NewRangeReader(ctx, key, 0, -1)
}

func (i *instrumented) NewRangeReader(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	r, err := i.Bucket.NewRangeReader(ctx, key, offset, length)
	if err != nil {
		i.obs("get", 0, err)
		return nil, err
	}
	return &observedReader{ReadCloser: r, obs: i.obs}, nil
}

type observedReader struct {
	io.ReadCloser
	obs  Observer
	n    int64
	done bool
}

func (o *observedReader) Read(p []byte) (int, error) {
	n, err := o.ReadCloser.Read(p)
	o.n += int64(n)
	return n, err
}

func (o *observedReader) Close() error {
	err := o.ReadCloser.Close()
	if !o.done {
		o.done = true
		o.obs("get", o.n, nil)
	}
	return err
}

func (i *instrumented) Stat(ctx context.Context, key string) (Attributes, error) {
	a, err := i.Bucket.Stat(ctx, key)
	i.obs("stat", 0, err)
	return a, err
}

func (i *instrumented) List(ctx context.Context, prefix string) iter.Seq2[Attributes, error] {
	return func(yield func(Attributes, error) bool) {
		var err error
		for a, e := range i.Bucket.List(ctx, prefix) {
			err = e
			if !yield(a, e) {
				break
			}
		}
		i.obs("list", 0, err)
	}
}

func (i *instrumented) Delete(ctx context.Context, key string) error {
	err := i.Bucket.Delete(ctx, key)
	i.obs("delete", 0, err)
	return err
}

// Unwrap returns the bucket underneath, so Prefix sees through the wrapper.
func (i *instrumented) Unwrap() Bucket { return i.Bucket }
