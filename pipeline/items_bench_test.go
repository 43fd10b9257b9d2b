package pipeline

import (
	"context"
	"encoding/json"
	"sync"
	"testing"

	"github.com/batchpipe/batchpipe/manifests"
)

// BenchmarkRunCall is the per-item cost of the item runner around a
// processor that does nothing (echo), one item per call, from 8 goroutines
// as a shard's item parallelism runs them: what every item pays whatever
// its processor.
//
//	go test ./pipeline -run '^$' -bench RunCall -benchmem
func BenchmarkRunCall(b *testing.B) {
	echo := ProcessorFunc(func(_ context.Context, in json.RawMessage) (json.RawMessage, error) { return in, nil })
	o := DefaultOptions()
	r := newItemRunner(echo, ShardInput{BatchID: "bench", Options: o})
	item := json.RawMessage(`{"n":1,"text":"hello"}`)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const par = 8
	work := make(chan *group)
	var wg sync.WaitGroup
	r.startCallers(ctx, &wg, par, work, func(manifests.ResultLine) {})
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		g := &group{first: int64(i), items: []json.RawMessage{item}, lines: make([]manifests.ResultLine, 1), todo: []int{0}, done: make(chan struct{})}
		work <- g
	}
	close(work)
	cancel()
	wg.Wait()
}
