package blobstore

import (
	"context"
	"fmt"
	"io"
	"iter"
	"net/url"
	"slices"
	"strings"
	"sync"
	"unicode/utf8"
)

// Driver is what a backend implements: Bucket's operations on full keys
// (prefix included, already validated). Open wraps it into a Bucket.
// Errors should be *Error values with a Kind where the backend tells one.
type Driver interface {
	Put(ctx context.Context, key string, r io.Reader) error
	// NewRangeReader is called with offset >= 0 and length != 0.
	NewRangeReader(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error)
	Stat(ctx context.Context, key string) (Attributes, error)
	List(ctx context.Context, prefix string) iter.Seq2[Attributes, error]
	Delete(ctx context.Context, key string) error
	Close() error
}

// OpenFunc opens a driver for a parsed URL. It returns the driver and the
// key prefix taken from the URL ("" or a path; a "/" is added if missing).
type OpenFunc func(ctx context.Context, u *url.URL) (d Driver, prefix string, err error)

var (
	driversMu sync.RWMutex
	drivers   = map[string]OpenFunc{}
)

// Register makes a driver available to Open under a URL scheme. The built-in
// drivers register file, mem, s3 and minio.
func Register(scheme string, open OpenFunc) {
	driversMu.Lock()
	defer driversMu.Unlock()
	drivers[scheme] = open
}

// Schemes lists the registered URL schemes, sorted.
func Schemes() []string {
	driversMu.RLock()
	defer driversMu.RUnlock()
	var s []string
	for k := range drivers {
		s = append(s, k)
	}
	slices.Sort(s)
	return s
}

// Open opens the bucket a URL names. Keys passed to the returned Bucket are
// validated (see ValidateKey) and have the URL's prefix added.
func Open(ctx context.Context, rawURL string) (Bucket, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("blobstore: bad store URL %q: %v", Redact(rawURL), err)
	}
	driversMu.RLock()
	open, ok := drivers[u.Scheme]
	driversMu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("blobstore: store URL %q: unknown scheme %q (known: %s)",
			Redact(rawURL), u.Scheme, strings.Join(Schemes(), ", "))
	}
	b, prefix, err := open(ctx, u)
	if err != nil {
		return nil, fmt.Errorf("blobstore: open %s: %w", Redact(rawURL), err)
	}
	if prefix != "" && !strings.HasSuffix(prefix, "/") {
		prefix += "/"
	}
	if prefix != "" {
		for _, seg := range strings.Split(strings.TrimSuffix(prefix, "/"), "/") {
			if seg == "" || seg == "." || seg == ".." {
				b.Close()
				return nil, fmt.Errorf("blobstore: store URL %s: key prefix %q has an empty, \".\" or \"..\" segment; write it without (e.g. bucket/a/b, not bucket//a/b)", Redact(rawURL), prefix)
			}
		}
	}
	return &checked{inner: b, prefix: prefix, url: Redact(rawURL)}, nil
}

// Prefix returns the key prefix a bucket opened by Open adds to every key
// ("" or ending in "/"), so full keys can be shown to users of other tools.
func Prefix(b Bucket) string {
	for {
		switch v := b.(type) {
		case *checked:
			return v.prefix
		case interface{ Unwrap() Bucket }:
			b = v.Unwrap()
		default:
			return ""
		}
	}
}

// secretParams are query parameters that are dropped from printed URLs.
var secretParams = []string{"secret", "password", "token", "access_key", "accesskey", "credential", "signature", "api_key", "apikey"}

// Redact returns rawURL without user information or query parameters that
// look like credentials.
func Redact(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		return "<unparsable URL>"
	}
	u.User = nil
	q := u.Query()
	changed := false
	for k := range q {
		lk := strings.ToLower(k)
		for _, s := range secretParams {
			if strings.Contains(lk, s) {
				q.Del(k)
				changed = true
				break
			}
		}
	}
	if changed {
		u.RawQuery = q.Encode()
	}
	return u.String()
}

// MaxKeyLen is the longest key accepted, in bytes (S3's limit).
const MaxKeyLen = 1024

// ValidateKey reports whether key is portable across every driver: non-empty
// UTF-8 of at most MaxKeyLen bytes, no NUL or backslash, not absolute, and no
// empty, "." or ".." segments. Errors match ErrInvalidKey.
func ValidateKey(key string) error {
	bad := func(why string) error {
		return &Error{Op: "validate", Key: key, Kind: ErrInvalidKey, Err: fmt.Errorf("%s", why)}
	}
	switch {
	case key == "":
		return bad("empty key")
	case len(key) > MaxKeyLen:
		return bad(fmt.Sprintf("longer than %d bytes", MaxKeyLen))
	case !utf8.ValidString(key):
		return bad("not valid UTF-8")
	case strings.ContainsRune(key, 0):
		return bad("contains a NUL byte")
	case strings.ContainsRune(key, '\\'):
		return bad("contains a backslash")
	case strings.HasPrefix(key, "/"):
		return bad("absolute path")
	}
	for seg := range strings.SplitSeq(key, "/") {
		switch seg {
		case "":
			return bad("empty path segment")
		case ".", "..":
			return bad(fmt.Sprintf("%q path segment", seg))
		}
	}
	return nil
}

// validatePrefix accepts "" or anything that is a valid key once a final
// character is added: list prefixes may end in "/".
func validatePrefix(prefix string) error {
	if prefix == "" {
		return nil
	}
	p := strings.TrimSuffix(prefix, "/")
	if err := ValidateKey(p); err != nil {
		return &Error{Op: "list", Key: prefix, Kind: ErrInvalidKey, Err: err.(*Error).Err}
	}
	return nil
}

// checked wraps a driver: validates keys, applies the prefix, and reports
// errors under the caller's key.
type checked struct {
	inner  Driver
	prefix string
	url    string
}

func (c *checked) fix(op, key string, err error) error {
	if err == nil {
		return nil
	}
	if e, ok := err.(*Error); ok {
		return &Error{Op: op, Key: key, Kind: e.Kind, Err: e.Err}
	}
	return &Error{Op: op, Key: key, Err: err}
}

func (c *checked) Put(ctx context.Context, key string, r io.Reader) error {
	if err := ValidateKey(key); err != nil {
		return c.fix("put", key, err)
	}
	return c.fix("put", key, c.inner.Put(ctx, c.prefix+key, r))
}

func (c *checked) NewReader(ctx context.Context, key string) (io.ReadCloser, error) {
	return c.NewRangeReader(ctx, key, 0, -1)
}

func (c *checked) NewRangeReader(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	if err := ValidateKey(key); err != nil {
		return nil, c.fix("get", key, err)
	}
	if offset < 0 {
		return nil, &Error{Op: "get", Key: key, Err: fmt.Errorf("negative offset %d", offset)}
	}
	if length == 0 {
		// Still report a missing object.
		if _, err := c.inner.Stat(ctx, c.prefix+key); err != nil {
			return nil, c.fix("get", key, err)
		}
		return io.NopCloser(strings.NewReader("")), nil
	}
	r, err := c.inner.NewRangeReader(ctx, c.prefix+key, offset, length)
	return r, c.fix("get", key, err)
}

func (c *checked) Stat(ctx context.Context, key string) (Attributes, error) {
	if err := ValidateKey(key); err != nil {
		return Attributes{}, c.fix("stat", key, err)
	}
	a, err := c.inner.Stat(ctx, c.prefix+key)
	a.Key = key
	return a, c.fix("stat", key, err)
}

func (c *checked) List(ctx context.Context, prefix string) iter.Seq2[Attributes, error] {
	return func(yield func(Attributes, error) bool) {
		if err := validatePrefix(prefix); err != nil {
			yield(Attributes{}, err)
			return
		}
		for a, err := range c.inner.List(ctx, c.prefix+prefix) {
			if err != nil {
				yield(Attributes{}, c.fix("list", prefix, err))
				return
			}
			a.Key = strings.TrimPrefix(a.Key, c.prefix)
			if !yield(a, nil) {
				return
			}
		}
	}
}

func (c *checked) Delete(ctx context.Context, key string) error {
	if err := ValidateKey(key); err != nil {
		return c.fix("delete", key, err)
	}
	return c.fix("delete", key, c.inner.Delete(ctx, c.prefix+key))
}

func (c *checked) URL() string  { return c.url }
func (c *checked) Close() error { return c.inner.Close() }

// SplitObjectURL splits the URL of one object into the URL of its store and
// the object's key: file:///dir/in.jsonl → file:///dir + in.jsonl,
// s3://bucket/a/b.jsonl → s3://bucket + a/b.jsonl, minio://host:port/bucket/a.jsonl
// → minio://host:port/bucket + a.jsonl, mem://name/a.jsonl → mem://name + a.jsonl.
// Query parameters stay with the store.
func SplitObjectURL(rawURL string) (storeURL, key string, err error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return "", "", fmt.Errorf("bad object URL %q: %v", Redact(rawURL), err)
	}
	p := strings.TrimPrefix(u.Path, "/")
	switch u.Scheme {
	case "file":
		i := strings.LastIndex(u.Path, "/")
		if i < 0 || i == len(u.Path)-1 {
			return "", "", fmt.Errorf("object URL %q names no file", Redact(rawURL))
		}
		key = u.Path[i+1:]
		u.Path = u.Path[:i]
		if u.Path == "" {
			u.Path = "/"
		}
	case "minio":
		bucket, rest, ok := strings.Cut(p, "/")
		if !ok || rest == "" {
			return "", "", fmt.Errorf("object URL %q: want minio://host:port/bucket/key", Redact(rawURL))
		}
		key = rest
		u.Path = "/" + bucket
	default:
		if p == "" {
			return "", "", fmt.Errorf("object URL %q names no object", Redact(rawURL))
		}
		key = p
		u.Path = ""
	}
	u.RawPath = ""
	if err := ValidateKey(key); err != nil {
		return "", "", err
	}
	return u.String(), key, nil
}
