package pipeline

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"sync"
	"time"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/temporal"

	"github.com/batchpipe/batchpipe/blobstore"
	"github.com/batchpipe/batchpipe/inputs"
	"github.com/batchpipe/batchpipe/layout"
	"github.com/batchpipe/batchpipe/manifests"
	"github.com/batchpipe/batchpipe/zjsonl"
)

// DefaultShardSize is the number of items per shard of a batch started
// without staging (pipeline.Start with items and shards of its own) when
// none is given. Staged inputs are sized by ShardSizeFor.
const DefaultShardSize = 1000

// The shard size rule (ShardSizeFor); the README's "Defaults" section
// has the measurements behind it.
const (
	// ShardsPerSlot is how many shards the rule aims at for each shard the
	// batch runs at once: enough that the last wave is short and a slow
	// shard does not hold the batch back, and a retry redoes a small part.
	ShardsPerSlot = 4
	// MinShardSize is the fewest items a shard gets unless the input has
	// fewer: a shard costs the server a child workflow, an activity and
	// three objects (~250 ms of round trips, ~30 ms of CPU on the embedded
	// server), which must stay small next to the shard's work.
	MinShardSize = 1000
	// MaxShardSize is the most items a shard gets: what a retried shard
	// does again, and how far its progress moves at once.
	MaxShardSize = 100_000
)

// ShardSizeFor is the shard size for a batch of about items items that runs
// slots shards at once (its concurrency, or the workers' slots when fewer):
// items / (ShardsPerSlot × slots), kept within MinShardSize and
// MaxShardSize. items 0 means unknown: MinShardSize.
func ShardSizeFor(items int64, slots int) int {
	target := int64(ShardsPerSlot * max(1, slots))
	size := (items + target - 1) / target
	return int(min(max(size, MinShardSize), MaxShardSize))
}

// ItemSource yields validated input items; *inputs.Reader is one.
type ItemSource interface {
	Next() (inputs.Item, error)
}

// FailureInputs reads failure lines ({"index","input","error"}, as in a
// batch's failed.jsonl.zst or `submit results --failed`) from src and
// yields each line's input, so failed items can be resubmitted as they are.
func FailureInputs(source string, src ItemSource) ItemSource {
	return &failureInputs{source: source, src: src}
}

type failureInputs struct {
	source string
	src    ItemSource
}

func (f *failureInputs) Next() (inputs.Item, error) {
	it, err := f.src.Next()
	if err != nil {
		return it, err
	}
	var line struct {
		Input json.RawMessage `json:"input"`
	}
	if err := json.Unmarshal(it.JSON, &line); err != nil || len(line.Input) == 0 || line.Input[0] != '{' {
		return inputs.Item{}, &inputs.Error{Source: f.source, Line: it.Line,
			Msg: `not a failure line: want {"index":…,"input":{…},"error":…} (drop --from-failures to submit the lines themselves)`}
	}
	it.JSON = line.Input
	return it, nil
}

// Staged describes a staged input (layout.Staged).
type Staged = layout.Staged

// stageUploads is how many finished shards may be uploading at once.
const stageUploads = 4

// Stage reads every item of r, validating it, and writes it into input
// shards of shardSize items under manifests.InputPrefix(batchID, dir), then
// writes the index there. If r yields an error (bad input) or a write fails,
// everything staged so far is deleted and the error is returned as it came.
// progress, if not nil, is called after every shard with the items so far.
func Stage(ctx context.Context, b blobstore.Bucket, batchID, dir, source string, r ItemSource, shardSize int, progress func(items int64)) (Staged, error) {
	if shardSize <= 0 {
		return Staged{}, fmt.Errorf("shard size must be at least 1, got %d", shardSize)
	}
	st := Staged{BatchID: batchID, Dir: dir, Source: source, ShardSize: shardSize}
	err := stageShards(ctx, b, &st, r, stageHooks{progress: progress})
	if err == nil {
		st.StagedAt = time.Now().UTC()
		err = layout.WriteStaged(ctx, b, st)
	}
	if err != nil {
		// Leave nothing behind, even if ctx was cancelled.
		cleanup, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		if derr := layout.DeleteStaged(cleanup, b, batchID, dir); derr != nil {
			err = errors.Join(err, fmt.Errorf("cleaning up staged input: %w", derr))
		}
		return Staged{}, err
	}
	return st, nil
}

// Fingerprint reads r as Stage would, writing nothing, and returns the
// items' count and the sha256 Stage would record.
func Fingerprint(r ItemSource) (items int64, sha string, err error) {
	h := sha256.New()
	for {
		it, err := r.Next()
		if err == io.EOF {
			return items, hex.EncodeToString(h.Sum(nil)), nil
		}
		if err != nil {
			return 0, "", err
		}
		h.Write(it.JSON)
		h.Write([]byte{'\n'})
		items++
	}
}

// StageCheckpoint is how far a staging has come, taken at a shard boundary
// once that shard and every one before it are stored: what a retried
// attempt needs to go on from there rather than from the start. StageInput
// records it as its activity heartbeat details, and a retry (after the
// staging worker died, or the store failed) resumes from the last one the
// server got.
type StageCheckpoint struct {
	// ShardSize is the staging's shard size, chosen on its first attempt
	// (ChooseShardSize): a retry cuts the same shards.
	ShardSize int `json:"shard_size"`
	// Shards are stored below this number; Items are in them.
	Shards int   `json:"shards"`
	Items  int64 `json:"items"`
	// Line is the input line of the last item staged, so that line numbers
	// in error messages stay right after a resume.
	Line int `json:"line"`
	// Offset is the byte offset in the stored input just past that item's
	// line (inputs.Item.End), where a ranged read goes on; -1 when the input
	// cannot be entered mid-way (compressed, or CSV): a retry then reads it
	// again from the start, writing none of the shards stored already.
	Offset int64 `json:"offset"`
	// SHA256State is the running sha256 of the items staged
	// (crypto/sha256's MarshalBinary), which ends as Staged.SHA256.
	SHA256State []byte `json:"sha256_state"`
	// The input object as it was when the staging began: a retry resumes
	// only the same object, and starts over if it was replaced.
	InputSize    int64     `json:"input_size"`
	InputETag    string    `json:"input_etag,omitempty"`
	InputModTime time.Time `json:"input_mod_time"`
}

// sameObject reports whether a describes the object cp was taken of.
func (cp *StageCheckpoint) sameObject(a blobstore.Attributes) bool {
	return cp.InputSize == a.Size && cp.InputETag == a.ETag && cp.InputModTime.Equal(a.ModTime)
}

// errInputChanged: reading the input again from its start, the items
// before a checkpoint did not hash to the checkpoint's state.
var errInputChanged = errors.New("the input object changed since its staging began")

// stageHooks are stageShards' optional parts.
type stageHooks struct {
	progress func(items int64)
	// checkpoint is called with every new checkpoint, in shard order, from
	// any goroutine; base gives its fields about the input object.
	checkpoint func(StageCheckpoint)
	base       StageCheckpoint
	// resume continues a staging from a checkpoint: r yields the items
	// after it (a ranged read from resume.Offset), or with skip, all of
	// them from the start, of which the first resume.Items are read and
	// hashed (and checked against the checkpoint) but not written again.
	resume *StageCheckpoint
	skip   bool
}

func stageShards(ctx context.Context, b blobstore.Bucket, st *Staged, r ItemSource, hk stageHooks) error {
	h := sha256.New()
	var (
		line int   // input line of the last item read
		end  int64 // its inputs.Item.End
	)
	if cp := hk.resume; cp != nil {
		if hk.skip {
			if err := skipStaged(ctx, r, h, cp, hk.checkpoint); err != nil {
				return err
			}
		} else if err := h.(encoding.BinaryUnmarshaler).UnmarshalBinary(cp.SHA256State); err != nil {
			return fmt.Errorf("staging checkpoint: sha256 state: %w", err)
		}
		st.Items, st.Shards, line, end = cp.Items, cp.Shards, cp.Line, cp.Offset
	}
	var (
		wg       sync.WaitGroup
		sem      = make(chan struct{}, stageUploads)
		mu       sync.Mutex
		firstErr error
		// Checkpoints of the shards read, from shard base on; stored
		// counts the shards below which every one is stored.
		base    = st.Shards
		pending []StageCheckpoint
		done    []bool
		stored  = st.Shards
	)
	setErr := func(err error) {
		mu.Lock()
		if firstErr == nil {
			firstErr = err
		}
		mu.Unlock()
	}
	failed := func() error {
		mu.Lock()
		defer mu.Unlock()
		return firstErr
	}
	markStored := func(shard int) {
		mu.Lock()
		defer mu.Unlock()
		done[shard-base] = true
		moved := false
		for stored-base < len(done) && done[stored-base] {
			stored++
			moved = true
		}
		if moved && hk.checkpoint != nil {
			hk.checkpoint(pending[stored-base-1])
		}
	}
	var (
		bw *blobstore.Writer
		zw *zjsonl.Writer
		n  int // items in the open shard
	)
	finish := func() {
		if zw == nil {
			return
		}
		shard := st.Shards
		cp := hk.base
		cp.ShardSize, cp.Shards, cp.Items, cp.Line, cp.Offset = st.ShardSize, shard+1, st.Items, line, end
		cp.SHA256State, _ = h.(encoding.BinaryMarshaler).MarshalBinary()
		mu.Lock()
		pending, done = append(pending, cp), append(done, false)
		mu.Unlock()
		if err := zw.Close(); err != nil {
			bw.Abort(err)
			setErr(err)
		} else {
			w := bw
			sem <- struct{}{}
			wg.Add(1)
			go func() {
				defer func() { <-sem; wg.Done() }()
				if err := w.Close(); err != nil {
					setErr(err)
					return
				}
				markStored(shard)
			}()
		}
		zw, bw, n = nil, nil, 0
		st.Shards++
		if hk.progress != nil {
			hk.progress(st.Items)
		}
	}
	var readErr error
	for {
		if err := failed(); err != nil {
			readErr = err
			break
		}
		if st.Items%1024 == 0 && ctx.Err() != nil {
			readErr = ctx.Err() // interrupted (SIGINT): stop reading
			break
		}
		it, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			readErr = err
			break
		}
		if zw == nil {
			bw = blobstore.NewWriter(ctx, b, manifests.InputShardKey(st.BatchID, st.Dir, st.Shards))
			zw = zjsonl.NewBackgroundWriter(bw)
		}
		if err := zw.WriteRaw(it.JSON); err != nil {
			readErr = err
			break
		}
		h.Write(it.JSON)
		h.Write([]byte{'\n'})
		line, end = it.Line, it.End
		st.Items++
		n++
		if n == st.ShardSize {
			finish()
		}
	}
	if readErr != nil && zw != nil {
		zw.Close()
		bw.Abort(readErr)
		zw = nil
	}
	if readErr == nil {
		finish()
	}
	wg.Wait()
	if readErr == nil && ctx.Err() != nil {
		// Interrupted after the last item was read: no index is written
		// (a resumable staging resumes from its checkpoint).
		readErr = ctx.Err()
	}
	if readErr != nil {
		return readErr
	}
	st.SHA256 = hex.EncodeToString(h.Sum(nil))
	return failed()
}

// skipStaged reads the cp.Items items a checkpoint covers from the start of
// the input, hashing them into h without writing them, and checks that
// they end where the checkpoint says. It re-records cp after every shard's
// worth, so that a long re-read keeps heartbeating.
func skipStaged(ctx context.Context, r ItemSource, h hash.Hash, cp *StageCheckpoint, beat func(StageCheckpoint)) error {
	var n int64
	line := 0
	for n < cp.Items {
		if n%1024 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		if beat != nil && n > 0 && n%int64(cp.ShardSize) == 0 {
			beat(*cp)
		}
		it, err := r.Next()
		if err == io.EOF {
			return errInputChanged
		}
		if err != nil {
			return err
		}
		h.Write(it.JSON)
		h.Write([]byte{'\n'})
		line = it.Line
		n++
	}
	state, _ := h.(encoding.BinaryMarshaler).MarshalBinary()
	if line != cp.Line || !bytes.Equal(state, cp.SHA256State) {
		return errInputChanged
	}
	return nil
}

// ObjectStaging says how StageObject stages an object.
type ObjectStaging struct {
	// Source is recorded as Staged.Source (a URL without credentials).
	Source string
	// Format and MaxItemBytes are the inputs.Options the object is read with.
	Format       inputs.Format
	MaxItemBytes int
	// ShardSize is the shard size; 0 chooses one from the object's head and
	// size (ChooseShardSize) for a batch running Slots shards at once.
	ShardSize int
	Slots     int
	// Resume is a checkpoint an earlier attempt at the same staging
	// recorded; nil starts from the beginning. It is ignored (the staging
	// starts over) when the object is not the one it was taken of.
	Resume *StageCheckpoint
	// Checkpoint, if not nil, is called with every new checkpoint, in
	// order, from any goroutine.
	Checkpoint func(StageCheckpoint)
	// Progress, if not nil, is called after every shard with the items so far.
	Progress func(items int64)
}

// StageObject stages the object key of src, as Stage does, into b as
// batchID's input, resumably: it reports a checkpoint after every stored
// shard, and given one (o.Resume) it goes on from there: an uncompressed
// JSON Lines object with a ranged read from the checkpoint's byte offset;
// a compressed one (which cannot be entered mid-stream), or CSV, read again
// from the start, with the shards stored already not written again. The
// shard size, line numbers and the items' sha256 carry on from the
// checkpoint, so the result is the one a single pass gives.
//
// Bad input (an *inputs.Error without Err, ErrNoItems, a missing object)
// deletes everything staged, as Stage does; its message names the line and
// byte offset where the object broke. Any other error (the store failed,
// ctx was cancelled) leaves the shards stored so far for a retry to resume.
func StageObject(ctx context.Context, b blobstore.Bucket, batchID string, src blobstore.Bucket, key string, o ObjectStaging) (Staged, error) {
	attrs, err := src.Stat(ctx, key)
	if errors.Is(err, blobstore.ErrNotFound) {
		return Staged{}, &inputs.Error{Source: key, Msg: "no such object in " + src.URL()}
	}
	if err != nil {
		return Staged{}, err
	}
	base := StageCheckpoint{InputSize: attrs.Size, InputETag: attrs.ETag, InputModTime: attrs.ModTime}
	cp := o.Resume
	if cp != nil && (cp.ShardSize <= 0 || cp.Shards <= 0 || !cp.sameObject(attrs)) {
		cp = nil
	}
	for {
		st, err := stageObjectOnce(ctx, b, batchID, src, key, attrs, base, cp, o)
		if err == errInputChanged && cp != nil {
			cp = nil // the object under the key is not what it was: start over
			continue
		}
		var ie *inputs.Error
		if errors.As(err, &ie) && ie.Err == nil || errors.Is(err, inputs.ErrNoItems) {
			cleanup, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
			defer cancel()
			if derr := layout.DeleteStaged(cleanup, b, batchID, ""); derr != nil {
				err = errors.Join(err, fmt.Errorf("cleaning up staged input: %w", derr))
			}
		}
		return st, err
	}
}

func stageObjectOnce(ctx context.Context, b blobstore.Bucket, batchID string, src blobstore.Bucket, key string,
	attrs blobstore.Attributes, base StageCheckpoint, cp *StageCheckpoint, o ObjectStaging) (Staged, error) {
	if cp == nil {
		// An earlier attempt may have stored shards without a checkpoint
		// reaching the server, of another object under the same key even:
		// start from an empty staging directory.
		if err := layout.DeleteStaged(ctx, b, batchID, ""); err != nil {
			return Staged{}, err
		}
	}
	opts := inputs.Options{Format: o.Format, MaxItemBytes: o.MaxItemBytes}
	var (
		rc  io.ReadCloser
		err error
	)
	ranged := cp != nil && cp.Offset >= 0
	if ranged {
		opts.StartLine, opts.StartOffset = cp.Line, cp.Offset
		rc, err = src.NewRangeReader(ctx, key, cp.Offset, -1)
	} else {
		rc, err = src.NewReader(ctx, key)
	}
	if errors.Is(err, blobstore.ErrNotFound) {
		return Staged{}, &inputs.Error{Source: key, Msg: "no such object in " + src.URL()}
	}
	if err != nil {
		return Staged{}, err
	}
	defer rc.Close()
	ir, err := inputs.NewReader(key, rc, opts)
	if err != nil {
		return Staged{}, err
	}
	defer ir.Close()
	var items ItemSource = ir
	shardSize := o.ShardSize
	switch {
	case cp != nil:
		shardSize = cp.ShardSize
	case shardSize <= 0:
		shardSize, items, err = ChooseShardSize(ctx, ir, AutoSize{Slots: o.Slots, InputBytes: attrs.Size, Read: ir.BytesRead})
		if err != nil {
			return Staged{}, err
		}
	}
	st := Staged{BatchID: batchID, Source: o.Source, ShardSize: shardSize}
	err = stageShards(ctx, b, &st, items, stageHooks{progress: o.Progress, checkpoint: o.Checkpoint, base: base, resume: cp, skip: cp != nil && !ranged})
	if err == nil {
		st.StagedAt = time.Now().UTC()
		err = layout.WriteStaged(ctx, b, st)
	}
	var ie *inputs.Error
	if errors.As(err, &ie) && ie.Err == nil && ie.Byte > 0 {
		if c := ir.Compression(); c != "" {
			ie.Msg += fmt.Sprintf(" (at or before byte offset %d of the %s object)", ie.Byte-1, c)
		} else if ie.Line > 0 {
			ie.Msg += fmt.Sprintf(" (line %d starts at byte offset %d of the object)", ie.Line, ie.Byte-1)
		}
	}
	if err != nil {
		return Staged{}, err
	}
	return st, nil
}

// StageInput stages a batch's input object (in.InputURL) into the batch's
// store, streaming it with bounded memory and recording a StageCheckpoint
// in its heartbeat details after every stored shard; a retried attempt
// resumes from the last checkpoint (StageObject). Invalid input fails with
// an error of type ErrTypeBadInput naming the object key, line and byte
// offset; nothing staged is left behind, nor after the activity was
// cancelled. A retry after a finished staging returns what was staged.
func (a *Activities) StageInput(ctx context.Context, in BatchInput) (Staged, error) {
	b, err := a.Stores.Open(ctx, in.Store)
	if err != nil {
		return Staged{}, err
	}
	if st, err := layout.ReadStaged(ctx, b, in.BatchID, ""); err == nil {
		return st, nil
	}
	storeURL, key, err := blobstore.SplitObjectURL(in.InputURL)
	if err != nil {
		return Staged{}, temporal.NewNonRetryableApplicationError(err.Error(), ErrTypeBadInput, nil)
	}
	var refused *temporal.ApplicationError
	if errors.As(a.Stores.Trust.checkURL(in.InputURL), &refused) {
		// A bad input for this worker: the batch ends with a manifest
		// saying why, in its (allowed) store.
		return Staged{}, temporal.NewNonRetryableApplicationError("input_url "+refused.Message(), ErrTypeBadInput, nil)
	}
	src, err := a.Stores.Open(ctx, storeURL)
	if err != nil {
		return Staged{}, err
	}
	var resume *StageCheckpoint
	if activity.HasHeartbeatDetails(ctx) {
		var cp StageCheckpoint
		// Details of another shape (an older worker's item count) decode
		// with an error or no shard size: start over.
		if err := activity.GetHeartbeatDetails(ctx, &cp); err == nil && cp.ShardSize > 0 {
			resume = &cp
		}
	}
	st, err := StageObject(ctx, b, in.BatchID, src, key, ObjectStaging{
		Source: blobstore.Redact(in.InputURL), Format: inputs.Format(in.InputFormat), MaxItemBytes: in.MaxItemBytes,
		ShardSize: in.Options.ShardSize, Slots: in.Options.Concurrency, Resume: resume,
		Checkpoint: func(cp StageCheckpoint) { activity.RecordHeartbeat(ctx, cp) },
	})
	var ie *inputs.Error
	if errors.As(err, &ie) && ie.Err == nil || errors.Is(err, inputs.ErrNoItems) {
		return Staged{}, temporal.NewNonRetryableApplicationError(err.Error(), ErrTypeBadInput, nil)
	}
	if err != nil {
		if ctx.Err() == context.Canceled && temporal.IsCanceledError(context.Cause(ctx)) {
			// Cancelled by the server (the batch was cancelled): no retry
			// will resume, so leave nothing behind. A worker shutting down
			// or a heartbeat timeout keeps the shards for the retry.
			cleanup, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
			defer cancel()
			if derr := layout.DeleteStaged(cleanup, b, in.BatchID, ""); derr != nil {
				err = errors.Join(err, fmt.Errorf("cleaning up staged input: %w", derr))
			}
		}
		return Staged{}, err
	}
	// Keep the start parameters, with the staged counts, for redrive.
	spec := in
	spec.Items, spec.Shards, spec.Source, spec.Options.ShardSize, spec.Cursor = st.Items, st.Shards, st.Source, st.ShardSize, nil
	spec.InputSHA256 = st.SHA256
	return st, SaveSpec(ctx, b, spec)
}
