package coordinator

import (
	"strconv"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metrics are one server's Prometheus metrics, in a registry of its own (no
// global registry). Gauges of the replicated state are read from the state at
// scrape time; histograms and counters are fed as commands apply and requests
// arrive.
type metrics struct {
	reg        *prometheus.Registry
	stepTime   *prometheus.HistogramVec
	arTime     *prometheus.HistogramVec
	requests   *prometheus.CounterVec
	malformed  prometheus.Counter
	malformedN atomic.Uint64 // the same count, for Status
	forwarded  prometheus.Counter
	eventsLost prometheus.Counter
	samples    prometheus.Counter
}

func newMetrics(s *Server) *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	// Step times from 10 ms to ~80 s; allreduce times from 1 ms to ~16 s.
	m.stepTime = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "crdgo_coordinator_step_seconds", Help: "Step time each rank reported (seconds), by rank.",
		Buckets: prometheus.ExponentialBuckets(0.01, 2, 14),
	}, []string{"rank"})
	m.arTime = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "crdgo_coordinator_allreduce_seconds", Help: "Allreduce time each rank reported (seconds), by rank.",
		Buckets: prometheus.ExponentialBuckets(0.001, 2, 15),
	}, []string{"rank"})
	m.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "crdgo_coordinator_requests_total", Help: "Control requests this replica answered, by kind and reply code.",
	}, []string{"kind", "code"})
	m.malformed = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "crdgo_coordinator_malformed_messages_total", Help: "Control messages this replica could not decode or validate (dropped).",
	})
	m.forwarded = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "crdgo_coordinator_forwarded_total", Help: "Write requests this replica forwarded to the raft leader.",
	})
	m.eventsLost = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "crdgo_coordinator_events_dropped_total", Help: "Events the leader could not queue for publishing (nodes learn them from heartbeats).",
	})
	m.samples = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "crdgo_coordinator_samples_received_total", Help: "Sample grids received from nodes.",
	})
	m.reg.MustRegister(m.stepTime, m.arTime, m.requests, m.malformed, m.forwarded, m.eventsLost, m.samples,
		stateCollector{s}, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

func (m *metrics) malformedInc() {
	m.malformed.Inc()
	m.malformedN.Add(1)
}

func (m *metrics) accepted(a Accepted) {
	r := strconv.Itoa(a.Rank)
	m.stepTime.WithLabelValues(r).Observe(a.StepTime)
	m.arTime.WithLabelValues(r).Observe(a.AllreduceTime)
}

var (
	descMembers   = prometheus.NewDesc("crdgo_coordinator_members", "Members of the job, by state.", []string{"state"}, nil)
	descGen       = prometheus.NewDesc("crdgo_coordinator_generation", "The current generation.", nil, nil)
	descWorld     = prometheus.NewDesc("crdgo_coordinator_world", "Ranks in the current generation.", nil, nil)
	descCommitted = prometheus.NewDesc("crdgo_coordinator_committed_step", "The last committed step.", nil, nil)
	descRate      = prometheus.NewDesc("crdgo_coordinator_samples_per_second", "Global batch times committed steps per second over the last 10 s.", nil, nil)
	descDropped   = prometheus.NewDesc("crdgo_coordinator_dropped_messages_total", "Messages dropped and never applied: stale (older generation, repeated step), foreign (not a member), invalid.", []string{"reason"}, nil)
	descJob       = prometheus.NewDesc("crdgo_coordinator_job_status", "1 for the job's current status.", []string{"status"}, nil)
	descRaft      = prometheus.NewDesc("crdgo_coordinator_raft_state", "1 for this replica's raft state.", []string{"state"}, nil)
	descLeader    = prometheus.NewDesc("crdgo_coordinator_raft_leader", "1 when this replica is the raft leader.", nil, nil)
	descTerm      = prometheus.NewDesc("crdgo_coordinator_raft_term", "The current raft term.", nil, nil)
	descApplied   = prometheus.NewDesc("crdgo_coordinator_raft_applied_index", "The last raft log index applied here.", nil, nil)
	descCkpt      = prometheus.NewDesc("crdgo_coordinator_checkpoint_step", "Step of the newest committed checkpoint (0: none).", nil, nil)
)

// stateCollector reads the replicated state when scraped.
type stateCollector struct{ s *Server }

func (stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descMembers, descGen, descWorld, descCommitted, descRate, descDropped, descJob, descRaft, descLeader, descTerm, descApplied, descCkpt} {
		ch <- d
	}
}

func (c stateCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.s
	st := s.rep.State()
	count := map[MemberState]int{}
	for _, m := range st.Members {
		count[m.State]++
	}
	for _, ms := range []MemberState{MemberWaiting, MemberActive, MemberLeft, MemberLost} {
		ch <- prometheus.MustNewConstMetric(descMembers, prometheus.GaugeValue, float64(count[ms]), string(ms))
	}
	ch <- prometheus.MustNewConstMetric(descGen, prometheus.GaugeValue, float64(st.Gen.Gen))
	ch <- prometheus.MustNewConstMetric(descWorld, prometheus.GaugeValue, float64(len(st.Gen.Ring)))
	ch <- prometheus.MustNewConstMetric(descCommitted, prometheus.GaugeValue, float64(st.Committed))
	ch <- prometheus.MustNewConstMetric(descRate, prometheus.GaugeValue, s.samplesPerSecond(st))
	ch <- prometheus.MustNewConstMetric(descDropped, prometheus.CounterValue, float64(st.Dropped.Stale), "stale")
	ch <- prometheus.MustNewConstMetric(descDropped, prometheus.CounterValue, float64(st.Dropped.Foreign), "foreign")
	ch <- prometheus.MustNewConstMetric(descDropped, prometheus.CounterValue, float64(st.Dropped.Invalid), "invalid")
	for _, js := range []JobStatus{Waiting, Running, Done, Failed} {
		v := 0.0
		if st.Status == js {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(descJob, prometheus.GaugeValue, v, string(js))
	}
	rs := s.rep.RaftState()
	for _, r := range []string{"Leader", "Follower", "Candidate", "Shutdown"} {
		v := 0.0
		if rs == r {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(descRaft, prometheus.GaugeValue, v, r)
	}
	leader := 0.0
	if rs == "Leader" {
		leader = 1
	}
	ch <- prometheus.MustNewConstMetric(descLeader, prometheus.GaugeValue, leader)
	ch <- prometheus.MustNewConstMetric(descTerm, prometheus.GaugeValue, float64(s.rep.Term()))
	ch <- prometheus.MustNewConstMetric(descApplied, prometheus.GaugeValue, float64(s.rep.AppliedIndex()))
	ck := 0.0
	if m, ok := st.LastCheckpoint(); ok {
		ck = float64(m.Step)
	}
	ch <- prometheus.MustNewConstMetric(descCkpt, prometheus.GaugeValue, ck)
}
