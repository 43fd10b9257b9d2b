// Package layout reads and writes a store's batch objects other than the
// result lines themselves: each staged input's index, a batch's spec (its
// start parameters), the shard receipts, the manifest assembled from them,
// a schedule's latest.json and gc's collected.json mark; and it lists the
// batches a store holds. It is the one place that writes or reads them; the
// keys are manifests' (the layout is part of format v1, which readers rely
// on), and the result and failure lines are written by the shards and read
// through package manifests.
package layout

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"slices"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/batchpipe/batchpipe/blobstore"
	"github.com/batchpipe/batchpipe/manifests"
)

// Staged describes a staged input; it is stored as the index.json of its
// staging directory (manifests.InputIndexKey).
type Staged struct {
	BatchID   string    `json:"batch_id"`
	Dir       string    `json:"dir,omitempty"` // staging directory (manifests.InputPrefix)
	Source    string    `json:"source"`
	Items     int64     `json:"items"`
	Shards    int       `json:"shards"`
	ShardSize int       `json:"shard_size"`
	SHA256    string    `json:"sha256"` // of the items' compact JSON lines: the input's identity
	StagedAt  time.Time `json:"staged_at"`
}

// WriteStaged stores st's index, the last object a staging writes.
func WriteStaged(ctx context.Context, b blobstore.Bucket, st Staged) error {
	return writeJSON(ctx, b, manifests.InputIndexKey(st.BatchID, st.Dir), st)
}

// ReadStaged returns the index of a staged input, or an error matching
// blobstore.ErrNotFound when there is none.
func ReadStaged(ctx context.Context, b blobstore.Bucket, batchID, dir string) (Staged, error) {
	var st Staged
	return st, readJSON(ctx, b, manifests.InputIndexKey(batchID, dir), &st)
}

// DeleteStaged removes a staged input (shards and index).
func DeleteStaged(ctx context.Context, b blobstore.Bucket, batchID, dir string) error {
	return DeletePrefix(ctx, b, manifests.InputPrefix(batchID, dir))
}

// WriteSpec stores a batch's start parameters (a pipeline.BatchInput), so
// that it can be redriven.
func WriteSpec(ctx context.Context, b blobstore.Bucket, batchID string, spec any) error {
	return writeJSON(ctx, b, manifests.BatchSpecKey(batchID), spec)
}

// ReadSpec reads what WriteSpec stored into spec; an error matching
// blobstore.ErrNotFound when the batch has none.
func ReadSpec(ctx context.Context, b blobstore.Bucket, batchID string, spec any) error {
	return readJSON(ctx, b, manifests.BatchSpecKey(batchID), spec)
}

// Receipt is written after a shard's objects (manifests.ShardReceiptKey):
// its presence means the shard committed them.
type Receipt struct {
	Shard       int    `json:"shard"`
	FirstIndex  int64  `json:"first_index"`
	Key         string `json:"key"` // full key, prefix included
	Items       int64  `json:"items"`
	Succeeded   int64  `json:"succeeded"`
	Failed      int64  `json:"failed"`
	Size        int64  `json:"size"`
	SHA256      string `json:"sha256"`
	FailuresKey string `json:"failures_key,omitempty"` // relative to the store
}

// ErrCorrupt is matched by the error of an object that is there but cannot
// be decoded: no retry makes it readable.
var ErrCorrupt = errors.New("corrupt object")

// WriteReceipt commits a shard of batchID.
func WriteReceipt(ctx context.Context, b blobstore.Bucket, batchID string, r Receipt) error {
	data, _ := json.Marshal(r)
	return b.Put(ctx, manifests.ShardReceiptKey(batchID, r.Shard), bytes.NewReader(data))
}

// ReadReceipt reads one shard's receipt; an error matching
// blobstore.ErrNotFound when the shard has not committed.
func ReadReceipt(ctx context.Context, b blobstore.Bucket, batchID string, shard int) (Receipt, error) {
	var r Receipt
	return r, readJSON(ctx, b, manifests.ShardReceiptKey(batchID, shard), &r)
}

// ReadReceipts reads every receipt of a batch's shards below shards,
// ordered by shard, 16 at a time; progress (if not nil) is called now and
// then with the count read.
func ReadReceipts(ctx context.Context, b blobstore.Bucket, batchID string, shards int, progress func(int)) ([]Receipt, error) {
	var keys []string
	for a, err := range b.List(ctx, manifests.ShardReceiptsPrefix(batchID)) {
		if err != nil {
			return nil, err
		}
		if strings.HasSuffix(a.Key, ".json") {
			keys = append(keys, a.Key)
		}
	}
	receipts := make([]Receipt, len(keys))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(16)
	for i, k := range keys {
		g.Go(func() error {
			if err := readJSON(gctx, b, k, &receipts[i]); err != nil {
				return err
			}
			if progress != nil && i%100 == 0 {
				progress(i)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	receipts = slices.DeleteFunc(receipts, func(r Receipt) bool { return r.Shard >= shards })
	slices.SortFunc(receipts, func(x, y Receipt) int { return x.Shard - y.Shard })
	return receipts, nil
}

// Assemble completes manifest m (everything but results, counts and
// failures set) from a batch's committed receipts: results in shard order,
// counts added up. It returns the failure parts (relative keys) to
// concatenate into the batch's failures object, in order.
func Assemble(m manifests.Manifest, receipts []Receipt) (manifests.Manifest, []string) {
	m.Format = manifests.Format
	m.Results = []manifests.Result{}
	m.Counts = manifests.Counts{}
	var parts []string
	for _, r := range receipts {
		m.Results = append(m.Results, manifests.Result{Key: r.Key, FirstIndex: r.FirstIndex, Items: r.Items,
			Succeeded: r.Succeeded, Failed: r.Failed, Size: r.Size, SHA256: r.SHA256})
		m.Counts.Items += r.Items
		m.Counts.Succeeded += r.Succeeded
		m.Counts.Failed += r.Failed
		if r.Failed > 0 {
			parts = append(parts, r.FailuresKey)
		}
	}
	return m, parts
}

// WriteManifest stores a batch's manifest: the last object a batch writes.
func WriteManifest(ctx context.Context, b blobstore.Bucket, m manifests.Manifest) error {
	data, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	return b.Put(ctx, manifests.ManifestKey(m.BatchID), bytes.NewReader(append(data, '\n')))
}

// UpdateLatest points the schedule's latest.json at manifest m, unless it
// names a later batch already (ids end in the nominal time, so they sort by
// time): a redrive of an old night must not move the pointer back.
func UpdateLatest(ctx context.Context, b blobstore.Bucket, schedule string, m manifests.Manifest) error {
	if l, err := ReadLatest(ctx, b, schedule); err == nil && l.BatchID > m.BatchID {
		return nil
	}
	return writeJSON(ctx, b, manifests.LatestKey(schedule), manifests.Latest{Schedule: schedule, BatchID: m.BatchID,
		Manifest: blobstore.Prefix(b) + manifests.ManifestKey(m.BatchID), Status: m.Status, FinishedAt: m.FinishedAt})
}

// ReadLatest reads a schedule's latest.json; an error matching
// blobstore.ErrNotFound before its first batch finished.
func ReadLatest(ctx context.Context, b blobstore.Bucket, schedule string) (manifests.Latest, error) {
	var l manifests.Latest
	return l, readJSON(ctx, b, manifests.LatestKey(schedule), &l)
}

// Latests yields the latest.json of every schedule in the store.
func Latests(ctx context.Context, b blobstore.Bucket) iter.Seq2[manifests.Latest, error] {
	return func(yield func(manifests.Latest, error) bool) {
		for a, err := range b.List(ctx, "schedules/") {
			if err != nil {
				yield(manifests.Latest{}, err)
				return
			}
			if !strings.HasSuffix(a.Key, "/latest.json") {
				continue
			}
			var l manifests.Latest
			if err := readJSON(ctx, b, a.Key, &l); errors.Is(err, ErrCorrupt) {
				continue // not a pointer anything can follow
			} else if err != nil {
				yield(l, err)
				return
			}
			if !yield(l, nil) {
				return
			}
		}
	}
}

// MarkCollected records that gc deleted a batch's results but kept kept
// (e.g. "input/").
func MarkCollected(ctx context.Context, b blobstore.Bucket, batchID, kept string) error {
	return writeJSON(ctx, b, manifests.CollectedKey(batchID),
		map[string]any{"batch_id": batchID, "collected_at": time.Now().UTC(), "kept": kept})
}

// Collected reports whether gc collected the batch's results.
func Collected(ctx context.Context, b blobstore.Bucket, batchID string) bool {
	ok, _ := blobstore.Exists(ctx, b, manifests.CollectedKey(batchID))
	return ok
}

// BatchObjects are the objects of one batch in a store.
type BatchObjects struct {
	ID      string
	Objects []blobstore.Attributes
}

// Batches yields the batches of a store with their objects, in the
// store's key order ("batches/<id>/…" sorts a-b before a).
func Batches(ctx context.Context, b blobstore.Bucket) iter.Seq2[BatchObjects, error] {
	return func(yield func(BatchObjects, error) bool) {
		var cur BatchObjects
		for a, err := range b.List(ctx, "batches/") {
			if err != nil {
				yield(BatchObjects{}, err)
				return
			}
			id, _, _ := strings.Cut(strings.TrimPrefix(a.Key, "batches/"), "/")
			if id != cur.ID && cur.ID != "" {
				if !yield(cur, nil) {
					return
				}
				cur = BatchObjects{}
			}
			cur.ID = id
			cur.Objects = append(cur.Objects, a)
		}
		if cur.ID != "" {
			yield(cur, nil)
		}
	}
}

// Rel returns the key of o relative to batches/<id>/ (e.g. "manifest.json",
// "input/s-1/index.json").
func (bo BatchObjects) Rel(o blobstore.Attributes) string {
	return strings.TrimPrefix(o.Key, manifests.BatchPrefix(bo.ID))
}

// Superseded returns the objects of bo under its results/, shards/ and
// parts/ that are neither receipts nor named by its manifest m or by any of
// its committed receipts: the result objects a redrive (or a shard
// continued after a pause) replaced, what a shard attempt wrote without
// committing, and checkpoint parts a finished shard did not delete. A redrive reads each shard's receipt, re-runs the shards
// whose receipt has failed items or that have none, reading the results
// the receipt names, and assembles its manifest from the receipts, with
// their failure parts: so the receipts, the objects they name and the
// manifest's keys are live, and nothing else there is. prefix is the
// store's (blobstore.Prefix), which the manifest's and receipts' keys
// carry and bo's do not.
func Superseded(bo BatchObjects, m manifests.Manifest, receipts []Receipt, prefix string) []blobstore.Attributes {
	live := map[string]bool{}
	for _, r := range m.Results {
		live[strings.TrimPrefix(r.Key, prefix)] = true
	}
	if m.Failures != nil {
		live[strings.TrimPrefix(m.Failures.Key, prefix)] = true
	}
	for _, r := range receipts {
		live[strings.TrimPrefix(r.Key, prefix)] = true
		if r.FailuresKey != "" {
			live[r.FailuresKey] = true
		}
	}
	shards := manifests.ShardReceiptsPrefix(bo.ID)
	results, parts := manifests.BatchPrefix(bo.ID)+"results/", manifests.PartsPrefix(bo.ID)
	var out []blobstore.Attributes
	for _, a := range bo.Objects {
		rel, isShard := strings.CutPrefix(a.Key, shards)
		if _, receipt := ReceiptShard(rel); (isShard && receipt) || live[a.Key] {
			continue
		}
		if isShard || strings.HasPrefix(a.Key, results) || strings.HasPrefix(a.Key, parts) {
			out = append(out, a)
		}
	}
	return out
}

// ReceiptShard returns the shard of a receipt's name under shards/
// (NNNNNN.json), and false for any other name.
func ReceiptShard(name string) (int, bool) {
	digits, ok := strings.CutSuffix(name, ".json")
	if !ok || digits == "" {
		return 0, false
	}
	n := 0
	for _, c := range digits {
		if c < '0' || c > '9' || n > 1<<30 {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, true
}

// DeletePrefix deletes every object under prefix.
func DeletePrefix(ctx context.Context, b blobstore.Bucket, prefix string) error {
	var keys []string
	for a, err := range b.List(ctx, prefix) {
		if err != nil {
			return err
		}
		keys = append(keys, a.Key)
	}
	for _, k := range keys {
		if err := b.Delete(ctx, k); err != nil {
			return err
		}
	}
	return nil
}

func writeJSON(ctx context.Context, b blobstore.Bucket, key string, v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return b.Put(ctx, key, bytes.NewReader(data))
}

func readJSON(ctx context.Context, b blobstore.Bucket, key string, v any) error {
	data, err := blobstore.ReadAll(ctx, b, key)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("%s: %w: %w", key, ErrCorrupt, err)
	}
	return nil
}
