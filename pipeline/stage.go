package pipeline

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
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
	err := stageShards(ctx, b, &st, r, progress)
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

func stageShards(ctx context.Context, b blobstore.Bucket, st *Staged, r ItemSource, progress func(int64)) error {
	h := sha256.New()
	var (
		wg       sync.WaitGroup
		sem      = make(chan struct{}, stageUploads)
		mu       sync.Mutex
		firstErr error
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
	var (
		bw *blobstore.Writer
		zw *zjsonl.Writer
		n  int // items in the open shard
	)
	finish := func() {
		if zw == nil {
			return
		}
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
				}
			}()
		}
		zw, bw, n = nil, nil, 0
		st.Shards++
		if progress != nil {
			progress(st.Items)
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
			zw = zjsonl.NewWriter(bw)
		}
		if err := zw.WriteRaw(it.JSON); err != nil {
			readErr = err
			break
		}
		h.Write(it.JSON)
		h.Write([]byte{'\n'})
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
	if readErr != nil {
		return readErr
	}
	st.SHA256 = hex.EncodeToString(h.Sum(nil))
	return failed()
}

// StageInput stages a batch's input object (in.InputURL) into the batch's
// store, streaming it with bounded memory and heartbeating progress. Invalid
// input fails with an error of type ErrTypeBadInput naming the object key
// and line; nothing staged is left behind. A retry after a finished staging
// returns what was staged.
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
	var size int64
	if in.Options.ShardSize <= 0 {
		if attrs, err := src.Stat(ctx, key); err == nil {
			size = attrs.Size
		}
	}
	r, err := src.NewReader(ctx, key)
	if errors.Is(err, blobstore.ErrNotFound) {
		return Staged{}, temporal.NewNonRetryableApplicationError(fmt.Sprintf("%s: no such object in %s", key, src.URL()), ErrTypeBadInput, nil)
	}
	if err != nil {
		return Staged{}, err
	}
	defer r.Close()
	ir, err := inputs.NewReader(key, r, inputs.Options{Format: inputs.Format(in.InputFormat), MaxItemBytes: in.MaxItemBytes})
	if err != nil {
		return Staged{}, temporal.NewNonRetryableApplicationError(err.Error(), ErrTypeBadInput, nil)
	}
	defer ir.Close()
	var items ItemSource = ir
	shardSize := in.Options.ShardSize
	if shardSize <= 0 {
		shardSize, items, err = ChooseShardSize(ctx, ir, AutoSize{Slots: in.Options.Concurrency, InputBytes: size, Read: ir.BytesRead})
		if err != nil {
			return Staged{}, err
		}
	}
	st, err := Stage(ctx, b, in.BatchID, "", blobstore.Redact(in.InputURL), items, shardSize, func(items int64) {
		activity.RecordHeartbeat(ctx, items)
	})
	var ie *inputs.Error
	if errors.As(err, &ie) && ie.Err == nil || errors.Is(err, inputs.ErrNoItems) {
		return Staged{}, temporal.NewNonRetryableApplicationError(err.Error(), ErrTypeBadInput, nil)
	}
	if err != nil {
		return Staged{}, err
	}
	// Keep the start parameters, with the staged counts, for redrive.
	spec := in
	spec.Items, spec.Shards, spec.Source, spec.Options.ShardSize, spec.Cursor = st.Items, st.Shards, st.Source, st.ShardSize, nil
	spec.InputSHA256 = st.SHA256
	return st, SaveSpec(ctx, b, spec)
}
