package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/uber-go/tally/v4"
	tallyprom "github.com/uber-go/tally/v4/prometheus"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	sdktally "go.temporal.io/sdk/contrib/tally"

	"github.com/batchpipe/batchpipe/pipeline"
)

// metricsServer serves Prometheus text at /metrics: the Temporal SDK's
// metrics (through its tally handler) and batchpipe's.
type metricsServer struct {
	Registry *prometheus.Registry
	SDK      client.MetricsHandler
	Pipeline *pipeline.Metrics
	srv      *http.Server
	closer   func() error
	Addr     string
}

// startMetrics listens on addr (fails at once when it cannot) and serves
// /metrics until Close.
func startMetrics(addr string, logger *slog.Logger) (*metricsServer, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, usagef("--metrics-addr %s: %v", addr, err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	reporter, err := tallyprom.Configuration{TimerType: "histogram"}.NewReporter(tallyprom.ConfigurationOptions{
		Registry: reg,
		OnError:  func(err error) { logger.Warn("metrics", "error", err) },
	})
	if err != nil {
		ln.Close()
		return nil, err
	}
	scope, closer := tally.NewRootScope(tally.ScopeOptions{
		CachedReporter:  reporter,
		Separator:       tallyprom.DefaultSeparator,
		SanitizeOptions: &sdktally.PrometheusSanitizeOptions,
	}, time.Second)
	scope = sdktally.NewPrometheusNamingScope(scope)
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	m := &metricsServer{Registry: reg, SDK: sdktally.NewMetricsHandler(scope), Pipeline: pipeline.NewMetrics(reg),
		srv: &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}, closer: closer.Close, Addr: ln.Addr().String()}
	go func() {
		if err := m.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Error("metrics server", "error", err)
		}
	}()
	return m, nil
}

// watchBatches adds batchpipe_batches_running: the batches running on the
// Temporal namespace, counted at most every 15 s.
func (m *metricsServer) watchBatches(c client.Client) {
	var mu sync.Mutex
	var last time.Time
	var value float64
	m.Registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "batchpipe_batches_running", Help: "Batches (BatchWorkflow executions) running in the namespace.",
	}, func() float64 {
		mu.Lock()
		defer mu.Unlock()
		if time.Since(last) < 15*time.Second {
			return value
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		resp, err := c.CountWorkflow(ctx, &workflowservice.CountWorkflowExecutionsRequest{
			Query: fmt.Sprintf("WorkflowType = '%s' AND ExecutionStatus = 'Running'", pipeline.BatchWorkflowName),
		})
		if err == nil {
			value, last = float64(resp.GetCount()), time.Now()
		}
		return value
	}))
}

func (m *metricsServer) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	m.srv.Shutdown(ctx)
	m.closer()
}
