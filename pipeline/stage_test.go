package pipeline_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/batchpipe/batchpipe/blobstore"
	"github.com/batchpipe/batchpipe/inputs"
	"github.com/batchpipe/batchpipe/layout"
	"github.com/batchpipe/batchpipe/manifests"
	"github.com/batchpipe/batchpipe/pipeline"
)

func TestAutoShardSize(t *testing.T) {
	for _, c := range []struct {
		items int64
		want  int
	}{{0, 1000}, {300, 1000}, {250_000, 1000}, {250_001, 1001}, {1_000_000, 4000}, {10_000_000, 40000}} {
		if got := pipeline.AutoShardSize(c.items); got != c.want {
			t.Errorf("AutoShardSize(%d) = %d, want %d", c.items, got, c.want)
		}
	}
}

func TestStageWritesShardsAndIndex(t *testing.T) {
	ctx := context.Background()
	b, _ := blobstore.Open(ctx, "mem://stage-ok")
	r, _ := inputs.NewReader("in.jsonl", bytes.NewReader(makeItems(25, nil)), inputs.Options{})
	st, err := pipeline.Stage(ctx, b, "s1", "", "in.jsonl", r, 10, nil)
	if err != nil {
		t.Fatal(err)
	}
	if st.Items != 25 || st.Shards != 3 || st.ShardSize != 10 || len(st.SHA256) != 64 {
		t.Fatalf("staged %+v", st)
	}
	got, err := layout.ReadStaged(ctx, b, "s1", "")
	if err != nil || got.SHA256 != st.SHA256 {
		t.Fatalf("ReadStaged = %+v, %v", got, err)
	}
	r2, _ := inputs.NewReader("in.jsonl", bytes.NewReader(makeItems(25, nil)), inputs.Options{})
	if n, sha, _ := pipeline.Fingerprint(r2); n != 25 || sha != st.SHA256 {
		t.Fatalf("Fingerprint = %d %s, want 25 %s", n, sha, st.SHA256)
	}
	for i := range 3 {
		if ok, _ := blobstore.Exists(ctx, b, manifests.InputShardKey("s1", "", i)); !ok {
			t.Fatalf("shard %d missing", i)
		}
	}
}

func TestStageLeavesNothingOnBadInput(t *testing.T) {
	ctx := context.Background()
	b, _ := blobstore.Open(ctx, "mem://stage-bad")
	in := string(makeItems(30, nil)) + "{not json\n"
	r, _ := inputs.NewReader("in.jsonl", strings.NewReader(in), inputs.Options{})
	_, err := pipeline.Stage(ctx, b, "s2", "", "in.jsonl", r, 10, nil)
	var ie *inputs.Error
	if !errors.As(err, &ie) || ie.Line != 31 {
		t.Fatalf("Stage error = %v, want an inputs.Error on line 31", err)
	}
	for a, err := range b.List(ctx, "") {
		t.Fatalf("left %s (%v) after a rejected input", a.Key, err)
	}
}
