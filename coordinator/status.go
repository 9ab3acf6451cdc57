package coordinator

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
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

// WriteTable prints the status for an operator: the job line, the replicas,
// one row per member, the drops and the newest checkpoints.
func (s Status) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	steps := strconv.FormatUint(s.Committed, 10)
	if s.Spec != nil && s.Spec.MaxSteps > 0 {
		steps += "/" + strconv.FormatUint(s.Spec.MaxSteps, 10)
	}
	status := string(s.Status)
	if status == "" {
		status = "no job"
	}
	fmt.Fprintf(tw, "job %s\t%s\tgeneration %d (from step %d, world %d)\tstep %s\t%.1f samples/s\n",
		s.Job, status, s.Gen.Gen, s.Gen.Start, len(s.Gen.Ring), steps, s.SamplesPerSecond)
	if s.Reason != "" {
		fmt.Fprintf(tw, "reason: %s\n", s.Reason)
	}
	leader := s.Leader
	if leader == "" {
		leader = "none"
	}
	var reps []string
	for _, r := range s.Replicas {
		mark := ""
		if r.ID == s.Leader {
			mark = "*"
		}
		reps = append(reps, r.ID+mark+" "+r.Addr)
	}
	fmt.Fprintf(tw, "leader %s (term %d); replicas: %s; answered by %s (%s)\n\n", leader, s.Term, strings.Join(reps, ", "), s.Replica, s.RaftState)
	fmt.Fprintln(tw, "NODE\tHOST\tSTATE\tRANK\tSLICE\tJOINED\tSTEP\tSTEP TIME\tALLREDUCE\tLOSSES")
	for _, m := range s.Members {
		rank, slice := "-", "-"
		if m.Rank >= 0 && m.Rank < len(s.Gen.Split) {
			sp := s.Gen.Split[m.Rank]
			rank, slice = strconv.Itoa(m.Rank), fmt.Sprintf("[%d,%d)", sp.Lo, sp.Hi)
		}
		step, st, ar, losses := "-", "-", "-", ""
		if p := m.Last; p != nil {
			step = strconv.FormatUint(p.Step, 10)
			st, ar = fmtSeconds(p.StepTime), fmtSeconds(p.AllreduceTime)
			keys := make([]string, 0, len(p.Losses))
			for k := range p.Losses {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			var parts []string
			for _, k := range keys {
				parts = append(parts, fmt.Sprintf("%s=%.4g", k, p.Losses[k]))
			}
			losses = strings.Join(parts, " ")
		}
		joined := "-"
		if m.JoinedGen > 0 {
			joined = "gen " + strconv.FormatUint(m.JoinedGen, 10)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", m.ID, m.Host, m.State, rank, slice, joined, step, st, ar, losses)
	}
	fmt.Fprintf(tw, "\ndropped: stale %d, foreign %d, invalid %d; malformed %d\n", s.Dropped.Stale, s.Dropped.Foreign, s.Dropped.Invalid, s.Malformed)
	for _, c := range s.Checkpoints {
		var size int64
		for _, f := range c.Files {
			size += f.Size
		}
		fmt.Fprintf(tw, "checkpoint step %d: %d files, %.2f MiB\n", c.Step, len(c.Files), float64(size)/(1<<20))
	}
	return tw.Flush()
}

func fmtSeconds(s float64) string {
	if s < 1 {
		return fmt.Sprintf("%.1fms", s*1000)
	}
	return fmt.Sprintf("%.2fs", s)
}

// FetchStatus reads a coordinator's GET /status (base: http://host:port).
func FetchStatus(ctx context.Context, base string) (Status, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(base, "/")+"/status?history=0", nil)
	if err != nil {
		return Status{}, fmt.Errorf("coordinator: status from %s: %w", base, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return Status{}, fmt.Errorf("coordinator: status from %s: %w", base, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return Status{}, fmt.Errorf("coordinator: status from %s: %s", base, resp.Status)
	}
	var st Status
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<20)).Decode(&st); err != nil {
		return Status{}, fmt.Errorf("coordinator: status from %s: %w", base, err)
	}
	return st, nil
}
