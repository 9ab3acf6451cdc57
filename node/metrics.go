package node

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/crdgo/crdgo/coordinator"
	"github.com/crdgo/crdgo/crd/train"
)

// nodeMetrics are a cluster node's Prometheus metrics, in a registry of its
// own (docs/cluster.md, "Metrics").
type nodeMetrics struct {
	reg                    *prometheus.Registry
	step, committed        prometheus.Gauge
	gen, rank, world       prometheus.Gauge
	stepTime, arTime, data prometheus.Histogram
	reports                *prometheus.CounterVec
	checkpoints, examples  prometheus.Counter
}

func newNodeMetrics() *nodeMetrics {
	g := func(name, help string) prometheus.Gauge {
		return prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: help})
	}
	m := &nodeMetrics{
		reg:       prometheus.NewRegistry(),
		step:      g("crdgo_node_step", "The last step this node trained."),
		committed: g("crdgo_node_committed_step", "The newest step the coordinator committed, as this node heard."),
		gen:       g("crdgo_node_generation", "The generation this node trains in (0: none yet)."),
		rank:      g("crdgo_node_rank", "This node's rank in its generation."),
		world:     g("crdgo_node_world", "The ranks of this node's generation."),
		// Step times from 10 ms to ~80 s; allreduce and data waits from 1 ms to ~16 s.
		stepTime: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "crdgo_node_step_seconds",
			Help: "Whole step time (data, compute, allreduce), seconds.", Buckets: prometheus.ExponentialBuckets(0.01, 2, 14)}),
		arTime: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "crdgo_node_allreduce_seconds",
			Help: "Time of a step spent in collective operations (waiting for slower ranks included), seconds.", Buckets: prometheus.ExponentialBuckets(0.001, 2, 15)}),
		data: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "crdgo_node_data_seconds",
			Help: "Time of a step spent waiting for the data loader, seconds.", Buckets: prometheus.ExponentialBuckets(0.001, 2, 15)}),
		reports: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "crdgo_node_reports_total",
			Help: "Step reports sent to the coordinator, by outcome (ok, dropped, error)."}, []string{"outcome"}),
		checkpoints: prometheus.NewCounter(prometheus.CounterOpts{Name: "crdgo_node_checkpoints_sent_total",
			Help: "Checkpoint manifests this node (rank 0) sent for commit."}),
		examples: prometheus.NewCounter(prometheus.CounterOpts{Name: "crdgo_node_examples_total",
			Help: "Examples of the global batches this node trained on (all ranks' parts)."}),
	}
	m.reg.MustRegister(m.step, m.committed, m.gen, m.rank, m.world, m.stepTime, m.arTime, m.data, m.reports, m.checkpoints, m.examples,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

func (m *nodeMetrics) assigned(a coordinator.Assignment) {
	m.gen.Set(float64(a.Gen))
	m.rank.Set(float64(a.Rank))
	m.world.Set(float64(a.World))
}

func (m *nodeMetrics) stepped(step uint64, info train.StepInfo) {
	m.step.Set(float64(step))
	m.stepTime.Observe(info.Took.Seconds())
	m.arTime.Observe(info.Sync.Seconds())
	m.data.Observe(info.Data.Seconds())
	m.examples.Add(float64(info.Examples))
}

func (m *nodeMetrics) reported(err error) {
	switch {
	case err == nil:
		m.reports.WithLabelValues("ok").Inc()
	case errors.Is(err, coordinator.ErrDropped):
		m.reports.WithLabelValues("dropped").Inc()
	default:
		m.reports.WithLabelValues("error").Inc()
	}
}

// metricsServer serves /metrics and /healthz.
type metricsServer struct {
	ln  net.Listener
	srv *http.Server
	wg  sync.WaitGroup
}

func serveMetrics(addr string, m *nodeMetrics, log *zap.Logger) (*metricsServer, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("node: metrics address %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	s := &metricsServer{ln: ln, srv: &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Warn("metrics server stopped", zap.Error(err))
		}
	}()
	log.Info("metrics", zap.String("addr", "http://"+ln.Addr().String()+"/metrics"))
	return s, nil
}

func (s *metricsServer) addr() string { return s.ln.Addr().String() }

func (s *metricsServer) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	s.srv.Shutdown(ctx)
	s.wg.Wait()
}
