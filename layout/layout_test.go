package layout_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/batchpipe/batchpipe/blobstore"
	"github.com/batchpipe/batchpipe/layout"
	"github.com/batchpipe/batchpipe/manifests"
)

func memBucket(t *testing.T) blobstore.Bucket {
	t.Helper()
	b, err := blobstore.Open(context.Background(), "mem://"+strings.ReplaceAll(t.Name(), "/", "-")+"/pre")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

func TestReceiptsAssembleInShardOrder(t *testing.T) {
	ctx := context.Background()
	b := memBucket(t)
	for _, s := range []int{2, 0, 1, 7} { // 7 is past the batch's 3 shards: a stale receipt
		r := layout.Receipt{Shard: s, FirstIndex: int64(s * 10), Key: "k" + string(rune('0'+s)), Items: 10, Succeeded: 10 - int64(s), Failed: int64(s)}
		if s > 0 {
			r.FailuresKey = "f" + string(rune('0'+s))
		}
		if err := layout.WriteReceipt(ctx, b, "b1", r); err != nil {
			t.Fatal(err)
		}
	}
	rs, err := layout.ReadReceipts(ctx, b, "b1", 3, nil)
	if err != nil {
		t.Fatal(err)
	}
	m, parts := layout.Assemble(manifests.Manifest{BatchID: "b1"}, rs)
	if len(m.Results) != 3 || m.Results[0].FirstIndex != 0 || m.Results[2].FirstIndex != 20 {
		t.Fatalf("results %+v, want shards 0..2 in order", m.Results)
	}
	if m.Counts != (manifests.Counts{Items: 30, Succeeded: 27, Failed: 3}) || !slices.Equal(parts, []string{"f1", "f2"}) {
		t.Fatalf("counts %+v parts %v", m.Counts, parts)
	}
	if m.Format != manifests.Format {
		t.Fatalf("format %q", m.Format)
	}
	if _, err := layout.ReadReceipt(ctx, b, "b1", 5); !errors.Is(err, blobstore.ErrNotFound) {
		t.Fatalf("missing receipt: %v", err)
	}
	b.Put(ctx, manifests.ShardReceiptKey("b1", 5), strings.NewReader("{not json"))
	if _, err := layout.ReadReceipt(ctx, b, "b1", 5); !errors.Is(err, layout.ErrCorrupt) {
		t.Fatalf("corrupt receipt: %v, want ErrCorrupt", err)
	}
}

func TestBatchesGroupsEveryObjectOfABatch(t *testing.T) {
	ctx := context.Background()
	b := memBucket(t)
	for _, k := range []string{"batches/a/manifest.json", "batches/a-b/batch.json", "batches/a/input/s-1/index.json", "batches/a.c/x", "schedules/n/latest.json"} {
		b.Put(ctx, k, strings.NewReader("{}"))
	}
	got := map[string][]string{}
	for bo, err := range layout.Batches(ctx, b) {
		if err != nil {
			t.Fatal(err)
		}
		if _, dup := got[bo.ID]; dup {
			t.Fatalf("batch %s yielded twice", bo.ID)
		}
		for _, o := range bo.Objects {
			got[bo.ID] = append(got[bo.ID], bo.Rel(o))
		}
	}
	if len(got) != 3 || !slices.Equal(got["a"], []string{"input/s-1/index.json", "manifest.json"}) || len(got["a-b"]) != 1 {
		t.Fatalf("batches %v", got)
	}
}

func TestLatestNeverMovesBack(t *testing.T) {
	ctx := context.Background()
	b := memBucket(t)
	newer := manifests.Manifest{BatchID: "n-20261202T020000Z", Status: manifests.StatusSucceeded, FinishedAt: time.Now()}
	older := manifests.Manifest{BatchID: "n-20261201T020000Z", Status: manifests.StatusSucceeded, FinishedAt: time.Now()}
	if err := layout.UpdateLatest(ctx, b, "n", newer); err != nil {
		t.Fatal(err)
	}
	if err := layout.UpdateLatest(ctx, b, "n", older); err != nil {
		t.Fatal(err)
	}
	l, err := layout.ReadLatest(ctx, b, "n")
	if err != nil || l.BatchID != newer.BatchID || l.Manifest != "pre/batches/"+newer.BatchID+"/manifest.json" {
		t.Fatalf("latest %+v, %v; want the newer night, key with the store prefix", l, err)
	}
	var n int
	for l, err := range layout.Latests(ctx, b) {
		if err != nil || l.Schedule != "n" {
			t.Fatalf("Latests: %+v %v", l, err)
		}
		n++
	}
	if n != 1 {
		t.Fatalf("%d latest pointers, want 1", n)
	}
}
