package blobstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"iter"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

func init() { Register("minio", openMinIO) }

// Tuning of the minio driver's streamed uploads. A body is read in parts of
// minioPartSize bytes into one reused buffer, so a Put holds at most about
// minioPartSize bytes of body whatever the object's size (max object size
// 10,000 parts = 160 GiB). A body that ends within the first part is sent
// as one PutObject; a longer one as a multipart upload, aborted on any error
// so that no object appears.
const (
	minioPartSize = 16 << 20
	// minioSmall is how much is read before a pooled part buffer is taken,
	// so small objects cost small allocations.
	minioSmall = 256 << 10
	// minioAbortTimeout bounds the AbortMultipartUpload sent after a
	// failure; it runs on a fresh context so a cancelled Put still cleans up.
	minioAbortTimeout = 30 * time.Second
	minioMaxParts     = 10000
)

var minioParts = sync.Pool{New: func() any { b := make([]byte, minioPartSize); return &b }}

// minioParams are the query parameters a minio:// URL may carry.
var minioParams = map[string]bool{"secure": true, "region": true}

// openMinIO opens minio://host:port/bucket/prefix?secure=false&region=….
//
// secure defaults to true (HTTPS). Credentials come from the environment,
// never from the URL: MINIO_ROOT_USER/MINIO_ROOT_PASSWORD, else
// AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (with AWS_SESSION_TOKEN); with
// neither, requests are anonymous.
func openMinIO(_ context.Context, u *url.URL) (Driver, string, error) {
	if u.User != nil {
		return nil, "", errors.New("minio URLs must not carry credentials: set MINIO_ROOT_USER/MINIO_ROOT_PASSWORD or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY")
	}
	if u.Host == "" {
		return nil, "", errors.New("minio URL must name a server: minio://host:port/bucket/prefix")
	}
	bucket, prefix, _ := strings.Cut(strings.TrimPrefix(u.Path, "/"), "/")
	if bucket == "" {
		return nil, "", errors.New("minio URL must name a bucket: minio://host:port/bucket/prefix")
	}
	q := u.Query()
	for k := range q {
		if !minioParams[k] {
			return nil, "", fmt.Errorf("minio URL: unknown parameter %q (known: secure, region)", k)
		}
	}
	secure := true
	if v := q.Get("secure"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return nil, "", fmt.Errorf("minio URL: secure=%q is not a boolean", v)
		}
		secure = b
	}
	transport, err := minio.DefaultTransport(secure)
	if err != nil {
		return nil, "", err
	}
	client, err := minio.New(u.Host, &minio.Options{
		Creds:        minioCreds(),
		Secure:       secure,
		Region:       q.Get("region"),
		BucketLookup: minio.BucketLookupPath,
		Transport:    transport,
	})
	if err != nil {
		return nil, "", err
	}
	return &minioDriver{client: client, core: &minio.Core{Client: client}, transport: transport, bucket: bucket}, prefix, nil
}

// minioCreds reads static credentials from the environment.
func minioCreds() *credentials.Credentials {
	if user, pass := os.Getenv("MINIO_ROOT_USER"), os.Getenv("MINIO_ROOT_PASSWORD"); user != "" && pass != "" {
		return credentials.NewStaticV4(user, pass, "")
	}
	if id, secret := os.Getenv("AWS_ACCESS_KEY_ID"), os.Getenv("AWS_SECRET_ACCESS_KEY"); id != "" && secret != "" {
		return credentials.NewStaticV4(id, secret, os.Getenv("AWS_SESSION_TOKEN"))
	}
	return credentials.New(&credentials.Static{Value: credentials.Value{SignerType: credentials.SignatureAnonymous}})
}

type minioDriver struct {
	client    *minio.Client
	core      *minio.Core
	transport *http.Transport
	bucket    string
}

func (d *minioDriver) Put(ctx context.Context, key string, r io.Reader) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	r = ctxReader{ctx, r}
	// Small bodies: read into a small buffer and send in one request.
	head, err := io.ReadAll(io.LimitReader(r, minioSmall))
	if err != nil {
		return err
	}
	if len(head) < minioSmall {
		return d.putOne(ctx, key, head)
	}
	bufp := minioParts.Get().(*[]byte)
	defer minioParts.Put(bufp)
	buf := *bufp
	n := copy(buf, head)
	m, err := io.ReadFull(r, buf[n:])
	n += m
	switch {
	case err == io.EOF || err == io.ErrUnexpectedEOF:
		return d.putOne(ctx, key, buf[:n])
	case err != nil:
		return err
	}
	return d.putMultipart(ctx, key, r, buf)
}

// putOne stores data with a single PutObject.
func (d *minioDriver) putOne(ctx context.Context, key string, data []byte) error {
	_, err := d.client.PutObject(ctx, d.bucket, key, bytes.NewReader(data), int64(len(data)), minio.PutObjectOptions{})
	return d.mapErr(err)
}

// putMultipart uploads buf (a full first part) and the rest of r as a
// multipart upload, reusing buf for every part. Any error aborts the upload.
func (d *minioDriver) putMultipart(ctx context.Context, key string, r io.Reader, buf []byte) (err error) {
	uploadID, err := d.core.NewMultipartUpload(ctx, d.bucket, key, minio.PutObjectOptions{})
	if err != nil {
		return d.mapErr(err)
	}
	defer func() {
		if err != nil {
			actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), minioAbortTimeout)
			defer cancel()
			if aerr := d.core.AbortMultipartUpload(actx, d.bucket, key, uploadID); aerr != nil {
				err = fmt.Errorf("%w (and aborting the multipart upload failed: %v)", err, aerr)
			}
		}
	}()
	var parts []minio.CompletePart
	n, last := len(buf), false
	for num := 1; ; num++ {
		if num > minioMaxParts {
			return fmt.Errorf("object larger than %d parts of %d bytes", minioMaxParts, minioPartSize)
		}
		p, err := d.core.PutObjectPart(ctx, d.bucket, key, uploadID, num, bytes.NewReader(buf[:n]), int64(n), minio.PutObjectPartOptions{})
		if err != nil {
			return d.mapErr(err)
		}
		parts = append(parts, minio.CompletePart{
			PartNumber: num, ETag: p.ETag,
			ChecksumCRC32: p.ChecksumCRC32, ChecksumCRC32C: p.ChecksumCRC32C,
			ChecksumSHA1: p.ChecksumSHA1, ChecksumSHA256: p.ChecksumSHA256,
			ChecksumCRC64NVME: p.ChecksumCRC64NVME,
		})
		if last {
			break
		}
		var rerr error
		n, rerr = io.ReadFull(r, buf)
		if rerr == io.EOF {
			break
		}
		if rerr == io.ErrUnexpectedEOF {
			last = true
		} else if rerr != nil {
			return rerr
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if _, err := d.core.CompleteMultipartUpload(ctx, d.bucket, key, uploadID, parts, minio.PutObjectOptions{}); err != nil {
		return d.mapErr(err)
	}
	return nil
}

func (d *minioDriver) NewRangeReader(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	var opts minio.GetObjectOptions
	switch {
	case length > 0:
		opts.SetRange(offset, offset+length-1)
	case offset > 0:
		opts.SetRange(offset, 0)
	}
	rc, _, _, err := d.core.GetObject(ctx, d.bucket, key, opts)
	if err != nil {
		if (offset > 0 || length > 0) && minio.ToErrorResponse(err).Code == "InvalidRange" {
			// The range starts at or past the end: an empty read, if the
			// object exists.
			if _, serr := d.Stat(ctx, key); serr != nil {
				return nil, serr
			}
			return io.NopCloser(strings.NewReader("")), nil
		}
		return nil, d.mapErr(err)
	}
	return rc, nil
}

func (d *minioDriver) Stat(ctx context.Context, key string) (Attributes, error) {
	info, err := d.client.StatObject(ctx, d.bucket, key, minio.StatObjectOptions{})
	if err != nil {
		return Attributes{}, d.mapErr(err)
	}
	return Attributes{Key: key, Size: info.Size, ModTime: info.LastModified, ETag: trimETag(info.ETag)}, nil
}

func (d *minioDriver) List(ctx context.Context, prefix string) iter.Seq2[Attributes, error] {
	return func(yield func(Attributes, error) bool) {
		noOwner := false
		for o := range d.client.ListObjectsIter(ctx, d.bucket, minio.ListObjectsOptions{
			Prefix: prefix, Recursive: true, MaxKeys: 1000, FetchOwner: &noOwner,
		}) {
			if o.Err != nil {
				yield(Attributes{}, d.mapErr(o.Err))
				return
			}
			if !yield(Attributes{Key: o.Key, Size: o.Size, ModTime: o.LastModified, ETag: trimETag(o.ETag)}, nil) {
				return
			}
		}
		// The iterator ends silently when ctx is done; say so.
		if err := ctx.Err(); err != nil {
			yield(Attributes{}, err)
		}
	}
}

func (d *minioDriver) Delete(ctx context.Context, key string) error {
	err := d.mapErr(d.client.RemoveObject(ctx, d.bucket, key, minio.RemoveObjectOptions{}))
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	return err
}

func (d *minioDriver) Close() error {
	d.transport.CloseIdleConnections()
	return nil
}

// mapErr classifies a minio-go error by its S3 code or HTTP status.
func (d *minioDriver) mapErr(err error) error {
	if err == nil {
		return nil
	}
	resp := minio.ToErrorResponse(err)
	kind := s3Kind(resp.Code, resp.StatusCode)
	if kind == nil {
		return err
	}
	return &Error{Kind: kind, Err: err}
}
