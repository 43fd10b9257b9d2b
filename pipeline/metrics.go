package pipeline

import (
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/batchpipe/batchpipe/blobstore"
	"github.com/batchpipe/batchpipe/manifests"
)

// Metrics are batchpipe's Prometheus metrics, recorded by the activities of
// a worker. Create them with NewMetrics; a nil *Metrics records nothing.
type Metrics struct {
	items         *prometheus.CounterVec
	itemDuration  *prometheus.HistogramVec
	shardDuration *prometheus.HistogramVec
	shardsActive  prometheus.Gauge
	storeOps      *prometheus.CounterVec
	storeBytes    *prometheus.CounterVec
}

// NewMetrics registers batchpipe's metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		items: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "batchpipe_items_total", Help: "Items processed, by processor and outcome (succeeded or failed).",
		}, []string{"processor", "status"}),
		itemDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "batchpipe_item_duration_seconds", Help: "Time to process one item, retries included.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 4, 10),
		}, []string{"processor"}),
		shardDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "batchpipe_shard_duration_seconds", Help: "Time to process one shard and write its objects.",
			Buckets: prometheus.ExponentialBuckets(0.05, 3, 10),
		}, []string{"processor"}),
		shardsActive: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "batchpipe_shards_in_progress", Help: "Shards this worker is processing now.",
		}),
		storeOps: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "batchpipe_store_operations_total", Help: "Blob store operations, by operation and result.",
		}, []string{"operation", "result"}),
		storeBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "batchpipe_store_bytes_total", Help: "Bytes written (put) and read (get) from blob stores.",
		}, []string{"operation"}),
	}
	reg.MustRegister(m.items, m.itemDuration, m.shardDuration, m.shardsActive, m.storeOps, m.storeBytes)
	return m
}

func (m *Metrics) item(processor string, l manifests.ResultLine) {
	if m == nil {
		return
	}
	m.items.WithLabelValues(processor, l.Status).Inc()
	m.itemDuration.WithLabelValues(processor).Observe(float64(l.DurationMS) / 1000)
}

// shardStarted counts a shard in progress; the returned func records its end.
func (m *Metrics) shardStarted(processor string) func() {
	if m == nil {
		return func() {}
	}
	start := time.Now()
	m.shardsActive.Inc()
	return func() {
		m.shardsActive.Dec()
		m.shardDuration.WithLabelValues(processor).Observe(time.Since(start).Seconds())
	}
}

// observeStore is a blobstore.Observer.
func (m *Metrics) observeStore(op string, n int64, err error) {
	result := "ok"
	switch {
	case err == nil:
	case errors.Is(err, blobstore.ErrNotFound):
		result = "not_found"
	default:
		result = "error"
	}
	m.storeOps.WithLabelValues(op, result).Inc()
	if n > 0 {
		m.storeBytes.WithLabelValues(op).Add(float64(n))
	}
}
