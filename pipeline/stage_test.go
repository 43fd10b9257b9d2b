package pipeline_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/batchpipe/batchpipe/blobstore"
	"github.com/batchpipe/batchpipe/inputs"
	"github.com/batchpipe/batchpipe/layout"
	"github.com/batchpipe/batchpipe/manifests"
	"github.com/batchpipe/batchpipe/pipeline"
)

func TestShardSizeFor(t *testing.T) {
	for _, c := range []struct {
		items int64
		slots int
		want  int
	}{
		{0, 32, 1000}, {300, 4, 1000}, {20_000, 4, 1250}, {200_000, 4, 12_500}, {1_000_000, 4, 62_500},
		{1_000_000, 32, 7813}, {100_000, 32, 1000}, {100_000_000, 4, 100_000}, {100_000_000, 0, 100_000},
		{10_000_000, 1000, 2500},
	} {
		if got := pipeline.ShardSizeFor(c.items, c.slots); got != c.want {
			t.Errorf("ShardSizeFor(%d, %d) = %d, want %d", c.items, c.slots, got, c.want)
		}
	}
}

// drain reads every item of src, as Stage would.
func drain(t *testing.T, src pipeline.ItemSource) (lines []int, data []byte, err error) {
	t.Helper()
	for {
		it, err := src.Next()
		if err != nil {
			return lines, data, err
		}
		lines = append(lines, it.Line)
		data = append(append(data, it.JSON...), '\n')
	}
}

func TestChooseShardSizeCountsASmallInput(t *testing.T) {
	in := makeItems(20_000, nil)
	r, _ := inputs.NewReader("in.jsonl", bytes.NewReader(in), inputs.Options{})
	size, src, err := pipeline.ChooseShardSize(context.Background(), r, pipeline.AutoSize{Slots: 4})
	if err != nil {
		t.Fatal(err)
	}
	if size != 1250 {
		t.Errorf("shard size %d, want 1250 (20,000 items over 16 shards)", size)
	}
	lines, data, err := drain(t, src)
	if err != io.EOF || len(lines) != 20_000 || lines[19_999] != 20_000 || !bytes.Equal(data, in) {
		t.Fatalf("replayed %d items (last line %v), same bytes %v, end %v", len(lines), lines[len(lines)-1], bytes.Equal(data, in), err)
	}
}

// TestChooseShardSizeExtrapolatesACompressedFile sizes a zstd input far
// larger than the head from the share of its compressed bytes read.
func TestChooseShardSizeExtrapolatesACompressedFile(t *testing.T) {
	const n = 250_000
	var z bytes.Buffer
	enc, _ := zstd.NewWriter(&z)
	enc.Write(makeItems(n, func(i int) string { return fmt.Sprintf(`,"pad":"%x"`, i*7919) }))
	enc.Close()
	r, _ := inputs.NewReader("in.jsonl.zst", bytes.NewReader(z.Bytes()), inputs.Options{})
	size, src, err := pipeline.ChooseShardSize(context.Background(), r,
		pipeline.AutoSize{Slots: 4, InputBytes: int64(z.Len()), Read: r.BytesRead})
	if err != nil {
		t.Fatal(err)
	}
	if want := pipeline.ShardSizeFor(n, 4); size < want*9/10 || size > want*11/10 {
		t.Errorf("shard size %d, want within 10%% of %d", size, want)
	}
	if lines, _, err := drain(t, src); err != io.EOF || len(lines) != n {
		t.Fatalf("replayed %d items, end %v; want %d", len(lines), err, n)
	}
}

// items1K yields 1 KB items without end and counts the bytes handed out.
type items1K struct {
	line int
	read int64
	item []byte
}

func (s *items1K) Next() (inputs.Item, error) {
	s.line++
	s.read += int64(len(s.item)) + 1
	return inputs.Item{Line: s.line, JSON: s.item}, nil
}

// TestChooseShardSizeLargeObject: 5 GB of 1 KB items gets shards of the
// rule's size, not a handful of giant ones (the old estimate assumed 64-byte
// lines).
func TestChooseShardSizeLargeObject(t *testing.T) {
	src := &items1K{item: []byte(`{"x":"` + strings.Repeat("a", 1016) + `"}`)}
	const total = 5 << 30
	size, _, err := pipeline.ChooseShardSize(context.Background(), src,
		pipeline.AutoSize{Slots: 32, InputBytes: total, Read: func() int64 { return src.read }})
	if err != nil {
		t.Fatal(err)
	}
	if want := pipeline.ShardSizeFor(total/1024, 32); size < want*99/100 || size > want*101/100 {
		t.Errorf("shard size %d, want about %d (%d items over 128 shards)", size, want, total/1024)
	}
	// The same as a stream of unknown length: at least the head's items.
	stream := &items1K{item: src.item}
	size, _, _ = pipeline.ChooseShardSize(context.Background(), stream, pipeline.AutoSize{Slots: 4})
	if want := pipeline.ShardSizeFor(int64(stream.line), 4); size != want || size <= pipeline.MinShardSize {
		t.Errorf("stream: shard size %d, want %d (the 64 MiB head's items over 16 shards)", size, want)
	}
}

func TestChooseShardSizeKeepsABadLineInPlace(t *testing.T) {
	in := string(makeItems(30, nil)) + "{not json\n" + string(makeItems(5, nil))
	r, _ := inputs.NewReader("in.jsonl", strings.NewReader(in), inputs.Options{})
	_, src, err := pipeline.ChooseShardSize(context.Background(), r, pipeline.AutoSize{Slots: 4})
	if err != nil {
		t.Fatal(err)
	}
	lines, _, err := drain(t, src)
	var ie *inputs.Error
	if len(lines) != 30 || !errors.As(err, &ie) || ie.Line != 31 {
		t.Fatalf("replayed %d items then %v; want 30 then an inputs.Error on line 31", len(lines), err)
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
