package pipeline

import (
	"context"

	"github.com/batchpipe/batchpipe/inputs"
)

// AutoSize is what ChooseShardSize knows of an input besides its items.
type AutoSize struct {
	// Slots is how many shards the batch runs at once: its concurrency, or
	// the workers' slots when they are fewer and known.
	Slots int
	// InputBytes is the input's size as stored (compressed, if it is); 0
	// for a stream of unknown length.
	InputBytes int64
	// Read returns how many of those bytes have been read so far (e.g.
	// inputs.Reader.BytesRead); nil when InputBytes is 0.
	Read func() int64
}

// How much of an input ChooseShardSize reads ahead, in bytes of items: a
// sample to extrapolate from when the input's size is known, and as much
// as a stream can afford to hold (its count is only a lower bound).
const (
	headSample = 4 << 20
	headStream = 64 << 20
)

// ChooseShardSize reads the head of r to choose a shard size by
// ShardSizeFor, before shard 0 is written: an input that ends within the
// head is counted; otherwise the count is extrapolated from the share of
// InputBytes read (a compressed file or object included), and a stream of
// unknown length is taken to have at least the head's items. It returns
// the size and a source that yields the head's items again, then the rest
// of r (a bad item in the head is returned where it was).
func ChooseShardSize(ctx context.Context, r ItemSource, a AutoSize) (int, ItemSource, error) {
	budget := headStream
	if a.InputBytes > 0 && a.Read != nil {
		budget = headSample
	}
	h := &headSource{src: r}
	for len(h.data) < budget && h.err == nil {
		if len(h.lines)%1024 == 0 && ctx.Err() != nil {
			return 0, nil, ctx.Err()
		}
		it, err := r.Next()
		if err != nil {
			h.err = err // io.EOF, or a bad item: given out after the head
			break
		}
		h.data = append(h.data, it.JSON...)
		h.ends = append(h.ends, len(h.data))
		h.lines = append(h.lines, it.Line)
		h.stored = append(h.stored, it.End)
	}
	items := int64(len(h.lines))
	if h.err == nil && a.InputBytes > 0 && a.Read != nil {
		if read := a.Read(); read > 0 && read < a.InputBytes {
			items = int64(float64(items) * float64(a.InputBytes) / float64(read))
		}
	}
	return ShardSizeFor(items, a.Slots), h, nil
}

// headSource yields the items ChooseShardSize read ahead, then the rest.
type headSource struct {
	src    ItemSource
	data   []byte  // the head's items, back to back
	ends   []int   // end of each item in data
	lines  []int   // line of each item
	stored []int64 // Item.End of each item
	next   int     // head items given out
	err    error   // what src returned after the head, if it ended there
}

func (h *headSource) Next() (inputs.Item, error) {
	if h.next < len(h.ends) {
		start := 0
		if h.next > 0 {
			start = h.ends[h.next-1]
		}
		it := inputs.Item{Line: h.lines[h.next], JSON: h.data[start:h.ends[h.next]], End: h.stored[h.next]}
		h.next++
		return it, nil
	}
	if h.data != nil {
		h.data, h.ends, h.lines, h.stored = nil, nil, nil, nil // the head is given out: let it go
		h.next = 0
	}
	if h.err != nil {
		return inputs.Item{}, h.err
	}
	return h.src.Next()
}

var _ ItemSource = (*headSource)(nil)
