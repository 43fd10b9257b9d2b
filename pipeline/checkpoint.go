package pipeline

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"go.temporal.io/sdk/activity"

	"github.com/batchpipe/batchpipe/blobstore"
	"github.com/batchpipe/batchpipe/layout"
	"github.com/batchpipe/batchpipe/manifests"
	"github.com/batchpipe/batchpipe/zjsonl"
)

// Shard checkpoints. A shard keeps its result and failure lines in memory,
// compressed, and every checkpointInterval (or checkpointBytes of them,
// whichever comes first) writes them as a part object under PartsPrefix;
// only then does its heartbeat name the part (shardCheckpoint). A retried
// attempt (the worker was killed or stopped, the store failed) skips the
// items its parts hold and goes on from there. At its end the shard writes
// its one result object as the parts' bytes followed by the rest (zstd
// frames concatenate), its failures part likewise, then its receipt, and
// deletes the parts. A shard that ends before its first checkpoint writes
// no part at all.

// checkpointInterval is how often a shard writes a part: with the worker's
// heartbeat throttle (2 s, NewWorker), at most what a shard of a killed
// worker does again.
var checkpointInterval = 5 * time.Second

// checkpointBytes bounds the compressed lines a shard holds in memory
// between checkpoints.
const checkpointBytes = 8 << 20

// shardCheckpoint is the second value of a ProcessShard heartbeat (the first
// is the items done, for progress): parts 0..Parts-1 hold the shard's lines
// before index Next, with these counts.
type shardCheckpoint struct {
	Parts       int   `json:"parts"`
	Next        int64 `json:"next"`
	Items       int64 `json:"items"`
	Succeeded   int64 `json:"succeeded"`
	Failed      int64 `json:"failed"`
	FailedParts []int `json:"failed_parts,omitempty"` // parts with a failures part
	FailedNow   int64 `json:"failed_now,omitempty"`   // failed in this run, for the budget
}

// shardPartsPrefix is the parts directory of one run of a shard: its keys
// depend only on the shard, the redrive and the continuation, never on the
// attempt, so a retry overwrites what an earlier attempt wrote.
func shardPartsPrefix(in ShardInput) string {
	p := fmt.Sprintf("%s%06d", manifests.PartsPrefix(in.BatchID), in.Shard)
	if in.Redrive > 0 {
		p += fmt.Sprintf(".r%d", in.Redrive)
	}
	if in.Resume != nil {
		p += fmt.Sprintf(".p%d", in.Resume.Seq)
	}
	return p + "/"
}

func partKey(prefix string, seq int) string { return fmt.Sprintf("%s%06d.jsonl.zst", prefix, seq) }

func failedPartKey(prefix string, seq int) string {
	return fmt.Sprintf("%s%06d.failed.jsonl.zst", prefix, seq)
}

// resumeCheckpoint returns the checkpoint of the attempt before this one,
// nil when there is none (a first attempt, an attempt that died before its
// first checkpoint, details from older workers) or its parts are not all
// there (a shard that deleted them after its receipt: it runs again whole).
func resumeCheckpoint(ctx context.Context, b blobstore.Bucket, in ShardInput, prefix string) *shardCheckpoint {
	if !activity.HasHeartbeatDetails(ctx) {
		return nil
	}
	var done int64
	var ck shardCheckpoint
	if activity.GetHeartbeatDetails(ctx, &done, &ck) != nil || ck.Parts <= 0 ||
		ck.Next-in.FirstIndex != ck.Items || ck.Items > int64(in.Items) || ck.Succeeded+ck.Failed != ck.Items {
		return nil
	}
	keys := []string{}
	for i := range ck.Parts {
		keys = append(keys, partKey(prefix, i))
	}
	for _, i := range ck.FailedParts {
		keys = append(keys, failedPartKey(prefix, i))
	}
	for _, k := range keys {
		if ok, err := blobstore.Exists(ctx, b, k); err != nil || !ok {
			return nil
		}
	}
	return &ck
}

// segment is the zstd lines written since the last checkpoint, in memory.
type segment struct {
	buf   bytes.Buffer
	zw    *zjsonl.Writer
	lines int
	line  []byte // writeResult's
}

func (s *segment) write(v any) error {
	if s.zw == nil {
		s.zw = zjsonl.NewWriter(&s.buf)
	}
	s.lines++
	return s.zw.Write(v)
}

// writeResult writes a result line, encoded by appendResultLine.
func (s *segment) writeResult(l manifests.ResultLine) error {
	if s.zw == nil {
		s.zw = zjsonl.NewWriter(&s.buf)
	}
	s.lines++
	s.line = appendResultLine(s.line[:0], l)
	return s.zw.WriteRaw(s.line)
}

// end closes the stream and returns its bytes (valid until reset).
func (s *segment) end() ([]byte, error) {
	if s.zw == nil {
		return s.buf.Bytes(), nil
	}
	err := s.zw.Close()
	s.zw = nil
	return s.buf.Bytes(), err
}

func (s *segment) reset() {
	s.end()
	s.buf.Reset()
	s.lines = 0
}

// shardOutput writes one run of a shard's result and failure lines:
// segments, parts at checkpoints, the shard's objects at the end.
type shardOutput struct {
	ctx       context.Context
	b         blobstore.Bucket
	prefix    string
	ck        shardCheckpoint // what the parts hold
	res, fail segment
	since     time.Time
	// record is called with each checkpoint once its parts are stored.
	record func(shardCheckpoint)
}

func newShardOutput(ctx context.Context, b blobstore.Bucket, prefix string, ck *shardCheckpoint, record func(shardCheckpoint)) *shardOutput {
	o := &shardOutput{ctx: ctx, b: b, prefix: prefix, since: time.Now(), record: record}
	if ck != nil {
		o.ck = *ck
	}
	o.res.zw = zjsonl.NewWriter(&o.res.buf) // an empty shard still writes a stream
	return o
}

// maybeCheckpoint writes the current segment as the next part when it is
// due: rec holds the counts of every line written, next is the index after
// them, failedNow the items failed in this run.
func (o *shardOutput) maybeCheckpoint(rec layout.Receipt, next, failedNow int64) error {
	if o.res.lines == 0 || (time.Since(o.since) < checkpointInterval && o.res.buf.Len()+o.fail.buf.Len() < checkpointBytes) {
		return nil
	}
	seq := o.ck.Parts
	data, err := o.res.end()
	if err == nil {
		err = o.b.Put(o.ctx, partKey(o.prefix, seq), bytes.NewReader(data))
	}
	if err != nil {
		return err
	}
	ck := o.ck
	if o.fail.lines > 0 {
		data, err := o.fail.end()
		if err == nil {
			err = o.b.Put(o.ctx, failedPartKey(o.prefix, seq), bytes.NewReader(data))
		}
		if err != nil {
			return err
		}
		ck.FailedParts = append(ck.FailedParts[:len(ck.FailedParts):len(ck.FailedParts)], seq)
	}
	ck.Parts, ck.Next = seq+1, next
	ck.Items, ck.Succeeded, ck.Failed, ck.FailedNow = rec.Items, rec.Succeeded, rec.Failed, failedNow
	o.ck = ck
	o.res.reset()
	o.fail.reset()
	o.since = time.Now()
	o.record(ck)
	return nil
}

// commit writes key as the parts' bytes and then the current segment's, and
// returns its size and SHA-256.
func (o *shardOutput) commit(s *segment, key string, parts []int) (size int64, sum string, err error) {
	bw := blobstore.NewWriter(o.ctx, o.b, key)
	for _, seq := range parts {
		k := partKey(o.prefix, seq)
		if s == &o.fail {
			k = failedPartKey(o.prefix, seq)
		}
		if err := copyObject(o.ctx, o.b, bw, k); err != nil {
			if errors.Is(err, blobstore.ErrNotFound) {
				err = fmt.Errorf("checkpoint part %s is missing: %w", k, err)
			}
			bw.Abort(err)
			return 0, "", err
		}
	}
	data, err := s.end()
	if err == nil {
		_, err = bw.Write(data)
	}
	if err != nil {
		bw.Abort(err)
		return 0, "", err
	}
	if err := bw.Close(); err != nil {
		return 0, "", err
	}
	return bw.Size(), bw.SHA256(), nil
}

// commitResults writes the shard's result object.
func (o *shardOutput) commitResults(key string) (size int64, sum string, err error) {
	parts := make([]int, o.ck.Parts)
	for i := range parts {
		parts[i] = i
	}
	return o.commit(&o.res, key, parts)
}

// hasFailures says whether the shard has failure lines to commit.
func (o *shardOutput) hasFailures() bool { return o.fail.lines > 0 || len(o.ck.FailedParts) > 0 }

// commitFailures writes the shard's failures part.
func (o *shardOutput) commitFailures(key string) error {
	_, _, err := o.commit(&o.fail, key, o.ck.FailedParts)
	return err
}

// cleanup deletes the shard's parts once its receipt is written; any
// attempt may have left some (retried is whether this one was not the
// first). A failure is only logged: gc collects what is left.
func (o *shardOutput) cleanup(retried bool, log interface{ Warn(string, ...any) }) {
	if o.ck.Parts == 0 && !retried {
		return
	}
	if err := layout.DeletePrefix(o.ctx, o.b, o.prefix); err != nil {
		log.Warn("shard parts not deleted; gc deletes them", "prefix", o.prefix, "error", err)
	}
}

// release returns the segments' encoders (after a failure).
func (o *shardOutput) release() {
	o.res.end()
	o.fail.end()
}

// copyObject copies the bytes of key to w.
func copyObject(ctx context.Context, b blobstore.Bucket, w io.Writer, key string) error {
	r, err := b.NewReader(ctx, key)
	if err != nil {
		return err
	}
	defer r.Close()
	_, err = io.Copy(w, r)
	return err
}
