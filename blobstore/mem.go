package blobstore

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"io"
	"iter"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"
)

func init() { Register("mem", openMem) }

// memBuckets holds every mem:// bucket of the process by name, so two Opens
// of the same URL see the same objects.
var (
	memMu      sync.Mutex
	memBuckets = map[string]*memDriver{}
)

// openMem opens mem://name/prefix. The bucket lives as long as the process.
func openMem(_ context.Context, u *url.URL) (Driver, string, error) {
	memMu.Lock()
	defer memMu.Unlock()
	d := memBuckets[u.Host]
	if d == nil {
		d = &memDriver{objects: map[string]memObject{}}
		memBuckets[u.Host] = d
	}
	return d, strings.TrimPrefix(u.Path, "/"), nil
}

type memObject struct {
	data    []byte
	modTime time.Time
	etag    string
}

type memDriver struct {
	mu      sync.RWMutex
	objects map[string]memObject
}

func (d *memDriver) Put(ctx context.Context, key string, r io.Reader) error {
	var buf bytes.Buffer
	if _, err := io.Copy(&buf, ctxReader{ctx, r}); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	sum := md5.Sum(buf.Bytes())
	d.mu.Lock()
	defer d.mu.Unlock()
	d.objects[key] = memObject{data: buf.Bytes(), modTime: time.Now(), etag: hex.EncodeToString(sum[:])}
	return nil
}

func (d *memDriver) NewRangeReader(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	d.mu.RLock()
	o, ok := d.objects[key]
	d.mu.RUnlock()
	if !ok {
		return nil, &Error{Kind: ErrNotFound}
	}
	data := o.data[min(offset, int64(len(o.data))):]
	if length >= 0 && length < int64(len(data)) {
		data = data[:length]
	}
	return io.NopCloser(bytes.NewReader(data)), nil
}

func (d *memDriver) Stat(ctx context.Context, key string) (Attributes, error) {
	d.mu.RLock()
	o, ok := d.objects[key]
	d.mu.RUnlock()
	if !ok {
		return Attributes{}, &Error{Kind: ErrNotFound}
	}
	return Attributes{Key: key, Size: int64(len(o.data)), ModTime: o.modTime, ETag: o.etag}, nil
}

func (d *memDriver) List(ctx context.Context, prefix string) iter.Seq2[Attributes, error] {
	return func(yield func(Attributes, error) bool) {
		d.mu.RLock()
		var attrs []Attributes
		for k, o := range d.objects {
			if strings.HasPrefix(k, prefix) {
				attrs = append(attrs, Attributes{Key: k, Size: int64(len(o.data)), ModTime: o.modTime, ETag: o.etag})
			}
		}
		d.mu.RUnlock()
		slices.SortFunc(attrs, func(a, b Attributes) int { return strings.Compare(a.Key, b.Key) })
		for _, a := range attrs {
			if err := ctx.Err(); err != nil {
				yield(Attributes{}, err)
				return
			}
			if !yield(a, nil) {
				return
			}
		}
	}
}

func (d *memDriver) Delete(ctx context.Context, key string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.objects, key)
	return nil
}

func (d *memDriver) Close() error { return nil }
