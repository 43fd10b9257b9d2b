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
	items := []json.RawMessage{json.RawMessage(`{"n":1,"text":"hello"}`)}
	idx := []int{0}
	ctx := context.Background()
	const par = 8
	var wg sync.WaitGroup
	b.ReportAllocs()
	b.ResetTimer()
	for g := range par {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := g; i < b.N; i += par {
				r.runCall(ctx, int64(i), items, idx, func(int, manifests.ResultLine) {})
			}
		}()
	}
	wg.Wait()
}
