package blobstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"iter"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

func init() { Register("file", openFile) }

// tmpPrefix starts the names of files being written; List never shows them.
const tmpPrefix = ".batchpipe-tmp-"

// openFile opens file:///abs/dir. The directory is the bucket: it must
// exist when objects are written (a missing one is ErrBucketNotFound).
func openFile(_ context.Context, u *url.URL) (Driver, string, error) {
	if u.Host != "" && u.Host != "localhost" {
		return nil, "", fmt.Errorf("file URL must be file:///absolute/dir, got host %q", u.Host)
	}
	if u.Path == "" || !filepath.IsAbs(u.Path) {
		return nil, "", fmt.Errorf("file URL must name an absolute directory (file:///abs/dir), got %q", u.Path)
	}
	return &fileDriver{root: filepath.Clean(u.Path)}, "", nil
}

type fileDriver struct{ root string }

func (d *fileDriver) path(key string) string { return filepath.Join(d.root, filepath.FromSlash(key)) }

// mapErr classifies an os error, telling a missing root apart from a missing object.
func (d *fileDriver) mapErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, fs.ErrNotExist):
		if _, serr := os.Stat(d.root); serr != nil {
			return &Error{Kind: ErrBucketNotFound, Err: fmt.Errorf("directory %s does not exist", d.root)}
		}
		return &Error{Kind: ErrNotFound}
	case errors.Is(err, fs.ErrPermission):
		return &Error{Kind: ErrAccessDenied, Err: err}
	}
	return err
}

// ctxReader fails reads once its context is done, so a cancelled Put stops.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// Put writes to a temporary file beside the target, syncs it and renames it
// into place, so readers see the old object or the whole new one.
func (d *fileDriver) Put(ctx context.Context, key string, r io.Reader) (err error) {
	if _, err := os.Stat(d.root); err != nil {
		return d.mapErr(err)
	}
	target := d.path(key)
	dir := filepath.Dir(target)
	var tmp *os.File
	// A concurrent Delete may prune the directory between MkdirAll and
	// CreateTemp: make it again and retry.
	for attempt := 0; ; attempt++ {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return d.mapErr(err)
		}
		tmp, err = os.CreateTemp(dir, tmpPrefix+"*")
		if err == nil {
			break
		}
		if !errors.Is(err, fs.ErrNotExist) || attempt == 5 {
			return d.mapErr(err)
		}
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
			d.prune(dir) // a failed first write leaves no empty directories
		}
	}()
	if _, err = io.Copy(tmp, ctxReader{ctx, r}); err != nil {
		return err
	}
	if err = ctx.Err(); err != nil {
		return err
	}
	if err = tmp.Sync(); err != nil {
		return err
	}
	if err = tmp.Close(); err != nil {
		return err
	}
	if err = os.Rename(tmp.Name(), target); err != nil {
		return d.mapErr(err)
	}
	return syncDir(dir)
}

// syncDir makes a rename durable.
func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

func (d *fileDriver) NewRangeReader(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	f, err := os.Open(d.path(key))
	if err != nil {
		return nil, d.mapErr(err)
	}
	if st, err := f.Stat(); err != nil || st.IsDir() {
		f.Close()
		return nil, &Error{Kind: ErrNotFound}
	}
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		f.Close()
		return nil, err
	}
	if length < 0 {
		return f, nil
	}
	return struct {
		io.Reader
		io.Closer
	}{io.LimitReader(f, length), f}, nil
}

func (d *fileDriver) Stat(ctx context.Context, key string) (Attributes, error) {
	st, err := os.Stat(d.path(key))
	if err != nil {
		return Attributes{}, d.mapErr(err)
	}
	if st.IsDir() {
		return Attributes{}, &Error{Kind: ErrNotFound}
	}
	return Attributes{Key: key, Size: st.Size(), ModTime: st.ModTime()}, nil
}

// List walks the deepest directory the prefix names and sorts what it finds,
// since a directory walk's order is not the lexical order of whole keys.
func (d *fileDriver) List(ctx context.Context, prefix string) iter.Seq2[Attributes, error] {
	return func(yield func(Attributes, error) bool) {
		if _, err := os.Stat(d.root); err != nil {
			yield(Attributes{}, d.mapErr(err))
			return
		}
		start := d.root
		if i := strings.LastIndex(prefix, "/"); i >= 0 {
			start = d.path(prefix[:i])
		}
		var attrs []Attributes
		err := filepath.WalkDir(start, func(p string, e fs.DirEntry, err error) error {
			if err != nil {
				if errors.Is(err, fs.ErrNotExist) {
					return nil
				}
				return err
			}
			if err := ctx.Err(); err != nil {
				return err
			}
			if e.IsDir() || strings.HasPrefix(e.Name(), tmpPrefix) {
				return nil
			}
			rel, err := filepath.Rel(d.root, p)
			if err != nil {
				return err
			}
			key := filepath.ToSlash(rel)
			if !strings.HasPrefix(key, prefix) {
				return nil
			}
			info, err := e.Info()
			if err != nil {
				return nil // removed while listing
			}
			attrs = append(attrs, Attributes{Key: key, Size: info.Size(), ModTime: info.ModTime()})
			return nil
		})
		if err != nil {
			yield(Attributes{}, d.mapErr(err))
			return
		}
		slices.SortFunc(attrs, func(a, b Attributes) int { return strings.Compare(a.Key, b.Key) })
		for _, a := range attrs {
			if !yield(a, nil) {
				return
			}
		}
	}
}

// Delete removes the file and any directories it leaves empty.
func (d *fileDriver) Delete(ctx context.Context, key string) error {
	p := d.path(key)
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return d.mapErr(err)
	}
	d.prune(filepath.Dir(p))
	return nil
}

// prune removes dir and its parents up to the root while they are empty.
func (d *fileDriver) prune(dir string) {
	for ; dir != d.root && strings.HasPrefix(dir, d.root); dir = filepath.Dir(dir) {
		if os.Remove(dir) != nil {
			break
		}
	}
}

func (d *fileDriver) Close() error { return nil }
