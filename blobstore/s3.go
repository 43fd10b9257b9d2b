package blobstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"iter"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/feature/s3/transfermanager"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

func init() { Register("s3", openS3) }

// Tuning of the s3 driver's streamed uploads. A Put holds at most
// (s3Concurrency+1)*s3PartSize bytes of body in memory plus the first part:
// about 25 MiB whatever the object's size. Bodies shorter than s3PartSize go
// out as one PutObject; longer ones as a multipart upload, aborted on any
// error so that no object appears.
const (
	s3PartSize    = 5 << 20 // S3's minimum part size
	s3Concurrency = 3
	// s3AbortTimeout bounds the AbortMultipartUpload sent after a failure;
	// it runs on a fresh context so a cancelled Put still cleans up.
	s3AbortTimeout = 30 * time.Second
)

// s3Params are the query parameters an s3:// URL may carry.
var s3Params = map[string]bool{"endpoint": true, "region": true, "path_style": true}

// openS3 opens s3://bucket/prefix?endpoint=…&region=…&path_style=true.
//
// Credentials come from the AWS default chain (environment, shared config
// and credentials files, SSO, web identity, container and instance roles),
// never from the URL. The region is the URL's, else the chain's (AWS_REGION,
// profile); with a custom endpoint and no region, us-east-1. An endpoint
// without a scheme is taken as https://. path_style=true addresses buckets
// as endpoint/bucket, which MinIO and most S3-compatible stores need.
func openS3(ctx context.Context, u *url.URL) (Driver, string, error) {
	if u.User != nil {
		return nil, "", errors.New("s3 URLs must not carry credentials: use the AWS default chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, roles)")
	}
	bucket := u.Host
	if bucket == "" {
		return nil, "", errors.New("s3 URL must name a bucket: s3://bucket/prefix")
	}
	q := u.Query()
	for k := range q {
		if !s3Params[k] {
			return nil, "", fmt.Errorf("s3 URL: unknown parameter %q (known: endpoint, region, path_style)", k)
		}
	}
	endpoint := q.Get("endpoint")
	if endpoint != "" && !strings.Contains(endpoint, "://") {
		endpoint = "https://" + endpoint
	}
	pathStyle := false
	if v := q.Get("path_style"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return nil, "", fmt.Errorf("s3 URL: path_style=%q is not a boolean", v)
		}
		pathStyle = b
	}

	var loadOpts []func(*config.LoadOptions) error
	if r := q.Get("region"); r != "" {
		loadOpts = append(loadOpts, config.WithRegion(r))
	}
	cfg, err := config.LoadDefaultConfig(ctx, loadOpts...)
	if err != nil {
		return nil, "", fmt.Errorf("loading AWS configuration: %w", err)
	}
	if cfg.Region == "" {
		if endpoint == "" {
			return nil, "", errors.New("s3 URL: no region: add ?region=… or set AWS_REGION")
		}
		cfg.Region = "us-east-1"
	}
	if endpoint != "" {
		// S3-compatible stores (MinIO, Ceph, R2, …) often reject or mishandle
		// the SDK's default flexible checksums; only send them when required.
		cfg.RequestChecksumCalculation = aws.RequestChecksumCalculationWhenRequired
		cfg.ResponseChecksumValidation = aws.ResponseChecksumValidationWhenRequired
	}
	client := s3.NewFromConfig(cfg, func(o *s3.Options) {
		if endpoint != "" {
			o.BaseEndpoint = aws.String(endpoint)
		}
		o.UsePathStyle = pathStyle
	})
	up := transfermanager.New(client, func(o *transfermanager.Options) {
		o.PartSizeBytes = s3PartSize
		o.MultipartUploadThreshold = s3PartSize
		o.Concurrency = s3Concurrency
		o.FailTimeout = s3AbortTimeout
		o.RequestChecksumCalculation = cfg.RequestChecksumCalculation
	})
	return &s3Driver{client: client, up: up, bucket: bucket}, strings.TrimPrefix(u.Path, "/"), nil
}

type s3Driver struct {
	client *s3.Client
	up     *transfermanager.Client
	bucket string
}

// Put streams r to S3. transfermanager buffers the first part; a body that
// ends within it is one PutObject, a longer one a multipart upload whose
// failure (reader error, cancelled context, failed part) aborts the upload,
// so neither a partial object nor a change to an existing one is possible.
func (d *s3Driver) Put(ctx context.Context, key string, r io.Reader) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	_, err := d.up.UploadObject(ctx, &transfermanager.UploadObjectInput{
		Bucket: aws.String(d.bucket),
		Key:    aws.String(key),
		// ctxReader hides any Seeker (so the body is read once, as a stream)
		// and stops reading once ctx is done.
		Body: ctxReader{ctx, r},
	})
	if err != nil {
		return d.mapErr(ctx, err, false)
	}
	return nil
}

func (d *s3Driver) NewRangeReader(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	in := &s3.GetObjectInput{Bucket: aws.String(d.bucket), Key: aws.String(key)}
	switch {
	case length > 0:
		in.Range = aws.String(fmt.Sprintf("bytes=%d-%d", offset, offset+length-1))
	case offset > 0:
		in.Range = aws.String(fmt.Sprintf("bytes=%d-", offset))
	}
	out, err := d.client.GetObject(ctx, in)
	if err != nil {
		if in.Range != nil && s3Code(err) == "InvalidRange" {
			// The range starts at or past the end (S3 answers 416 even for
			// bytes=0-… of an empty object): an empty read, if the object exists.
			if _, serr := d.Stat(ctx, key); serr != nil {
				return nil, serr
			}
			return io.NopCloser(strings.NewReader("")), nil
		}
		return nil, d.mapErr(ctx, err, false)
	}
	return out.Body, nil
}

func (d *s3Driver) Stat(ctx context.Context, key string) (Attributes, error) {
	out, err := d.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(d.bucket), Key: aws.String(key)})
	if err != nil {
		return Attributes{}, d.mapErr(ctx, err, true)
	}
	return Attributes{
		Key:     key,
		Size:    aws.ToInt64(out.ContentLength),
		ModTime: aws.ToTime(out.LastModified),
		ETag:    trimETag(aws.ToString(out.ETag)),
	}, nil
}

func (d *s3Driver) List(ctx context.Context, prefix string) iter.Seq2[Attributes, error] {
	return func(yield func(Attributes, error) bool) {
		in := &s3.ListObjectsV2Input{Bucket: aws.String(d.bucket), MaxKeys: aws.Int32(1000)}
		if prefix != "" {
			in.Prefix = aws.String(prefix)
		}
		p := s3.NewListObjectsV2Paginator(d.client, in)
		for p.HasMorePages() {
			page, err := p.NextPage(ctx)
			if err != nil {
				yield(Attributes{}, d.mapErr(ctx, err, false))
				return
			}
			for _, o := range page.Contents {
				a := Attributes{
					Key:     aws.ToString(o.Key),
					Size:    aws.ToInt64(o.Size),
					ModTime: aws.ToTime(o.LastModified),
					ETag:    trimETag(aws.ToString(o.ETag)),
				}
				if !yield(a, nil) {
					return
				}
			}
		}
	}
}

func (d *s3Driver) Delete(ctx context.Context, key string) error {
	_, err := d.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(d.bucket), Key: aws.String(key)})
	if err != nil {
		err = d.mapErr(ctx, err, false)
		if errors.Is(err, ErrNotFound) {
			return nil
		}
		return err
	}
	return nil
}

func (d *s3Driver) Close() error { return nil }

// s3Code is the S3 error code of err ("NoSuchKey", "AccessDenied", …), or "".
func s3Code(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

// s3Status is the HTTP status of the response that failed, or 0.
func s3Status(err error) int {
	var re *smithyhttp.ResponseError
	if errors.As(err, &re) {
		return re.HTTPStatusCode()
	}
	return 0
}

// mapErr classifies an SDK error. head says the request was a HEAD, whose
// 404 has no body to tell a missing object from a missing bucket.
func (d *s3Driver) mapErr(ctx context.Context, err error, head bool) error {
	kind := s3Kind(s3Code(err), s3Status(err))
	if kind == ErrNotFound && head {
		kind = d.headNotFound(ctx, err)
	}
	if kind == nil {
		return err
	}
	return &Error{Kind: kind, Err: err}
}

// headNotFound tells what a HEAD's 404 means: MinIO names the code in a
// header; otherwise ask whether the bucket exists.
func (d *s3Driver) headNotFound(ctx context.Context, err error) error {
	var re *smithyhttp.ResponseError
	if errors.As(err, &re) && re.Response != nil {
		if code := re.Response.Header.Get("X-Minio-Error-Code"); code != "" {
			if k := s3Kind(code, 0); k != nil {
				return k
			}
		}
	}
	_, berr := d.client.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: aws.String(d.bucket)})
	if berr != nil && s3Status(berr) == http.StatusNotFound {
		return ErrBucketNotFound
	}
	return ErrNotFound
}

// s3Kind maps an S3 error code, or failing that an HTTP status, to a Kind.
func s3Kind(code string, status int) error {
	switch code {
	case "NoSuchKey", "NotFound":
		return ErrNotFound
	case "NoSuchBucket":
		return ErrBucketNotFound
	case "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "Forbidden",
		"AllAccessDisabled", "InvalidToken", "ExpiredToken", "AccountProblem":
		return ErrAccessDenied
	}
	switch status {
	case http.StatusNotFound:
		return ErrNotFound
	case http.StatusForbidden:
		return ErrAccessDenied
	}
	return nil
}

// trimETag drops the quotes S3 puts around entity tags.
func trimETag(s string) string { return strings.Trim(s, `"`) }
