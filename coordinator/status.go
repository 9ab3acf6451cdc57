package coordinator

import (
	"fmt"
	"sync"
	"time"
)

// Status is one replica's view of the job: what GET /status and the
// crdgo.<job>.ctl.status request return, and what the live page draws.
type Status struct {
	V int `json:"v"`

	// The answering replica and the raft group as it sees it.
	Replica      string `json:"replica"`
	RaftState    string `json:"raft_state"`
	Leader       string `json:"leader"`
	LeaderAddr   string `json:"leader_addr"`
	Term         uint64 `json:"term"`
	AppliedIndex uint64 `json:"applied_index"`
	Replicas     []Peer `json:"replicas"`

	Job       string     `json:"job"`
	Spec      *Spec      `json:"spec,omitempty"`
	Status    JobStatus  `json:"status"`
	Reason    string     `json:"reason,omitempty"`
	Gen       Generation `json:"generation"`
	Committed uint64     `json:"committed"`
	// SamplesPerSecond is the global batch times the steps committed per
	// second over the last RateWindow, by this replica's clock.
	SamplesPerSecond float64        `json:"samples_per_second"`
	Members          []MemberStatus `json:"members"`
	History          []Point        `json:"history"`     // the newest committed steps, oldest first
	Checkpoints      []Manifest     `json:"checkpoints"` // the newest committed checkpoints, oldest first
	Dropped          Dropped        `json:"dropped"`
	Malformed        uint64         `json:"malformed"` // messages this replica could not decode
	Sample           *SampleInfo    `json:"sample,omitempty"`
}

// MemberStatus is a member with its rank in the current generation (-1: none).
type MemberStatus struct {
	Member
	Rank int `json:"rank"`
}

// SampleInfo describes the newest sample grid a node published.
type SampleInfo struct {
	Step  uint64    `json:"step"`
	Node  string    `json:"node"`
	Bytes int       `json:"bytes"`
	At    time.Time `json:"at"`
}

// MaxStatusBytes bounds a status reply over NATS; its history is cut to fit.
const MaxStatusBytes = 512 << 10

// buildStatus assembles a Status from a state, keeping the newest history
// points and checkpoints.
func buildStatus(st State, history, checkpoints int) Status {
	out := Status{
		V: ProtocolVersion, Spec: st.Spec, Status: st.Status, Reason: st.Reason,
		Gen: st.Gen, Committed: st.Committed, Dropped: st.Dropped,
	}
	if st.Spec != nil {
		out.Job = st.Spec.Job
	}
	for _, m := range st.Members {
		m.Incarnation = "" // a member's own business
		out.Members = append(out.Members, MemberStatus{Member: m, Rank: st.Gen.Rank(m.ID)})
	}
	if n := len(st.History); n > history {
		out.History = st.History[n-history:]
	} else {
		out.History = st.History
	}
	if n := len(st.Checkpoints); n > checkpoints {
		out.Checkpoints = st.Checkpoints[n-checkpoints:]
	} else {
		out.Checkpoints = st.Checkpoints
	}
	return out
}

// rate measures committed steps per second over a sliding window of
// wall-clock time. The FSM knows no time, so each replica measures what it
// applies.
type rate struct {
	mu     sync.Mutex
	window time.Duration
	points []ratePoint
}

type ratePoint struct {
	at   time.Time
	step uint64
}

// RateWindow is the window samples/s is measured over.
const RateWindow = 10 * time.Second

func (r *rate) add(at time.Time, step uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.points = append(r.points, ratePoint{at, step})
	cut := 0
	for cut < len(r.points)-2 && at.Sub(r.points[cut].at) > r.window {
		cut++
	}
	r.points = r.points[cut:]
}

// perSecond returns steps per second; 0 with fewer than two points or when the
// newest is older than the window (the job stalled).
func (r *rate) perSecond(now time.Time) float64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := len(r.points)
	if n < 2 || now.Sub(r.points[n-1].at) > r.window {
		return 0
	}
	first, last := r.points[0], r.points[n-1]
	dt := last.at.Sub(first.at).Seconds()
	if dt <= 0 {
		return 0
	}
	return float64(last.step-first.step) / dt
}

func (s Status) String() string {
	return fmt.Sprintf("job %s %s gen %d committed %d", s.Job, s.Status, s.Gen.Gen, s.Committed)
}
