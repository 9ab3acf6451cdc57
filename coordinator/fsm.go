package coordinator

import (
	"cmp"
	"fmt"
	"slices"
	"sort"
	"strings"
)

// This file is the coordinator: a pure function apply(State, Command) (State,
// []Effect). No clock, network, disk or goroutine: time arrives as a command
// (HeartbeatTimeout), and what must happen outside (tell the nodes, answer the
// caller) comes back as effects that server.go carries out on the leader. Every
// replica applies the same commands in the same order and so holds the same
// State. apply never mutates its argument: the State it returns shares no
// mutable memory with the one it was given, so a snapshot may hold on to an old
// value while the FSM moves on.

// JobStatus is where a job is in its life.
type JobStatus string

const (
	// NoJob: no CreateJob has been applied yet.
	NoJob JobStatus = ""
	// Waiting: fewer members than the spec's MinNodes (or none left); no ring.
	Waiting JobStatus = "waiting"
	// Running: a generation is open and steps are being committed.
	Running JobStatus = "running"
	// Done: MaxSteps committed (and, with checkpoints on, its checkpoint).
	Done JobStatus = "done"
	// Failed: a checksum mismatch or an operator's stop; State.Reason says which.
	Failed JobStatus = "failed"
)

// MemberState is a member's place in the job.
type MemberState string

const (
	// MemberWaiting: admitted, in no generation yet (the job waits for MinNodes).
	MemberWaiting MemberState = "waiting"
	// MemberActive: a rank of the current generation's ring.
	MemberActive MemberState = "active"
	// MemberLeft: left on its own (Leave).
	MemberLeft MemberState = "left"
	// MemberLost: timed out (HeartbeatTimeout).
	MemberLost MemberState = "lost"
)

func (m MemberState) live() bool { return m == MemberWaiting || m == MemberActive }

// Limits of the state, so that no input can grow it without bound.
const (
	// MaxMembers is the most live members a job admits.
	MaxMembers = 1024
	// MaxAhead is how far past the committed step a report (or a checkpoint
	// commit) may be: a synchronous ring keeps ranks within a step or two of
	// each other, so more is a bug or a replay, and is dropped.
	MaxAhead = 16
	// keepDeparted is how many departed members the state remembers, newest
	// last, for the status page.
	keepDeparted = 16
	// keepCheckpoints is how many committed checkpoint manifests the state
	// keeps, newest last.
	keepCheckpoints = 64
	// keepHistory is how many committed steps' points the state keeps for the
	// loss curves, newest last.
	keepHistory = 2000
)

// Spec is what a job is. A node must agree with it (crdgo version, recipe
// hash, dataset hash) to join.
type Spec struct {
	Job             string `json:"job"`
	Recipe          string `json:"recipe"`
	RecipeHash      string `json:"recipe_hash"`
	Dataset         string `json:"dataset"`
	DatasetHash     string `json:"dataset_hash"`
	Seed            uint64 `json:"seed"`
	GlobalBatch     int    `json:"global_batch"`     // B: samples per step over all ranks
	Version         string `json:"crdgo_version"`    // the crdgo version every node must run
	MinNodes        int    `json:"min_nodes"`        // members before the first generation opens
	MaxSteps        uint64 `json:"max_steps"`        // the job is done at this step; 0: no end
	CheckpointEvery uint64 `json:"checkpoint_every"` // steps between checkpoints; 0: none
	ChecksumEvery   uint64 `json:"checksum_every"`   // steps between parameter checksums; 0: none
}

// DefaultSpec returns a spec with the defaults filled in: one node, a
// checksum every 50 steps, no checkpoints, no end. Job, recipe, dataset,
// version and batch are the caller's.
func DefaultSpec() Spec {
	return Spec{MinNodes: 1, ChecksumEvery: 50, GlobalBatch: 1}
}

// Validate reports every problem of s at once, naming the field.
func (s Spec) Validate() error {
	var errs []string
	add := func(format string, a ...any) { errs = append(errs, fmt.Sprintf(format, a...)) }
	if !validName(s.Job, 64) {
		add("spec.job %q: want 1-64 letters, digits, '-' or '_'", s.Job)
	}
	for _, f := range []struct{ name, v string }{
		{"recipe", s.Recipe}, {"recipe_hash", s.RecipeHash}, {"dataset", s.Dataset},
		{"dataset_hash", s.DatasetHash}, {"crdgo_version", s.Version},
	} {
		if len(f.v) > maxField || !printable(f.v) {
			add("spec.%s: %d bytes, want at most %d printable", f.name, len(f.v), maxField)
		}
	}
	if s.Recipe == "" {
		add("spec.recipe: empty")
	}
	if s.Version == "" {
		add("spec.crdgo_version: empty")
	}
	if s.GlobalBatch < 1 || s.GlobalBatch > 1<<20 {
		add("spec.global_batch: %d, want 1..%d", s.GlobalBatch, 1<<20)
	}
	if s.MinNodes < 1 || s.MinNodes > MaxMembers {
		add("spec.min_nodes: %d, want 1..%d", s.MinNodes, MaxMembers)
	}
	if s.MinNodes > s.GlobalBatch && s.GlobalBatch >= 1 {
		add("spec.min_nodes %d exceeds spec.global_batch %d: every rank needs at least one sample", s.MinNodes, s.GlobalBatch)
	}
	if s.MaxSteps > 1<<48 || s.CheckpointEvery > 1<<48 || s.ChecksumEvery > 1<<48 {
		add("spec.max_steps, checkpoint_every, checksum_every: want at most 2^48")
	}
	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("%s", strings.Join(errs, "; "))
}

// Range is a half-open range [Lo, Hi) of the global batch's positions.
type Range struct {
	Lo int `json:"lo"`
	Hi int `json:"hi"`
}

// Split cuts a global batch of b samples over w ranks: rank r takes
// [⌊rb/w⌋, ⌊(r+1)b/w⌋). The global batch of a step does not depend on w.
func Split(b, w int) []Range {
	out := make([]Range, w)
	for r := range w {
		out[r] = Range{Lo: r * b / w, Hi: (r + 1) * b / w}
	}
	return out
}

// Progress is a member's latest accepted report.
type Progress struct {
	Step          uint64             `json:"step"`
	Losses        map[string]float64 `json:"losses,omitempty"`
	StepTime      float64            `json:"step_seconds"`
	AllreduceTime float64            `json:"allreduce_seconds"`
}

// Member is a node the job knows of.
type Member struct {
	ID          string      `json:"id"`
	Host        string      `json:"host"`           // where its ring peers reach it (errors, logs)
	Addr        string      `json:"addr"`           // its metrics address (host:port), for operators
	Incarnation string      `json:"incarnation"`    // a fresh value per process start
	Seq         uint64      `json:"seq"`            // admission order; fixes the ring order
	JoinedGen   uint64      `json:"joined_gen"`     // first generation it was a rank of; 0: none yet
	State       MemberState `json:"state"`          //
	Last        *Progress   `json:"last,omitempty"` // latest accepted report
}

// Generation is one fixed membership: a ring order and a batch split. Rank r
// is Ring[r] and takes Split[r] of every step's global batch.
type Generation struct {
	Gen   uint64   `json:"gen"`   // 0: none opened yet
	Start uint64   `json:"start"` // the first step it trains: committed step + 1 when it opened
	Ring  []string `json:"ring"`  // member IDs in rank order; empty: no ring (waiting)
	Split []Range  `json:"split"`
}

// Rank returns id's rank in g, or -1.
func (g Generation) Rank(id string) int { return slices.Index(g.Ring, id) }

// RankReport is one rank's report of one step.
type RankReport struct {
	Rank          int                `json:"rank"`
	Node          string             `json:"node"`
	Losses        map[string]float64 `json:"losses,omitempty"`
	StepTime      float64            `json:"step_seconds"`
	AllreduceTime float64            `json:"allreduce_seconds"`
	Checksum      string             `json:"checksum,omitempty"`
}

// StepReports are the reports of one not yet committed step, by rank.
type StepReports struct {
	Step    uint64       `json:"step"`
	Reports []RankReport `json:"reports"` // sorted by rank
}

// Point is one committed step, for the loss curves.
type Point struct {
	Step          uint64             `json:"step"`
	Gen           uint64             `json:"gen"`
	World         int                `json:"world"`
	Losses        map[string]float64 `json:"losses,omitempty"` // summed over ranks: each reports its share
	StepTime      float64            `json:"step_seconds"`     // the slowest rank's
	AllreduceTime float64            `json:"allreduce_seconds"`
}

// Manifest lists a checkpoint's files, as the trainer writes it
// (manifest.json); the coordinator commits it, and only then it exists.
type Manifest struct {
	Step    uint64         `json:"step"`
	Recipe  string         `json:"recipe"`
	Version string         `json:"crdgo_version"`
	Files   []ManifestFile `json:"files"`
}

// ManifestFile is one file of a checkpoint.
type ManifestFile struct {
	Name   string `json:"name"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"` // lower-case hex
}

// Dropped counts the messages that were dropped, never applied.
type Dropped struct {
	Stale   uint64 `json:"stale"`   // an older generation, an already committed or repeated step
	Foreign uint64 `json:"foreign"` // from a node that is not a member (or no longer one)
	Invalid uint64 `json:"invalid"` // too far ahead, past max steps, the job not running
}

// State is the whole replicated state of a job. Treat a State as immutable:
// apply returns a new one.
type State struct {
	Spec    *Spec     `json:"spec,omitempty"`
	Status  JobStatus `json:"status"`
	Reason  string    `json:"reason,omitempty"` // why the job failed
	Members []Member  `json:"members"`          // live ones, then departed ones; each by Seq
	NextSeq uint64    `json:"next_seq"`

	Gen       Generation    `json:"generation"`
	Committed uint64        `json:"committed"` // steps 1..Committed are committed
	Pending   []StepReports `json:"pending"`   // reports of steps after Committed, ascending

	Checkpoints       []Manifest `json:"checkpoints"`                  // committed, ascending by step
	PendingCheckpoint *Manifest  `json:"pending_checkpoint,omitempty"` // waits for its step to commit

	History []Point `json:"history"` // the newest committed steps
	Dropped Dropped `json:"dropped"`
}

// Member returns the member with id, live or departed.
func (s State) Member(id string) (Member, bool) {
	i := slices.IndexFunc(s.Members, func(m Member) bool { return m.ID == id })
	if i < 0 {
		return Member{}, false
	}
	return s.Members[i], true
}

// Live returns the live members (waiting or active), in ring order.
func (s State) Live() []Member {
	var out []Member
	for _, m := range s.Members {
		if m.State.live() {
			out = append(out, m)
		}
	}
	return out
}

// LastCheckpoint returns the newest committed checkpoint.
func (s State) LastCheckpoint() (Manifest, bool) {
	if len(s.Checkpoints) == 0 {
		return Manifest{}, false
	}
	return s.Checkpoints[len(s.Checkpoints)-1], true
}

// Assignment is what a rank needs to train in a generation.
func (s State) Assignment(id string) (Assignment, bool) {
	r := s.Gen.Rank(id)
	if r < 0 || s.Status != Running {
		return Assignment{}, false
	}
	return assignment(s, r), true
}

func assignment(s State, rank int) Assignment {
	a := Assignment{
		Job: s.Spec.Job, Gen: s.Gen.Gen, Start: s.Gen.Start, Rank: rank, World: len(s.Gen.Ring),
		Ring: slices.Clone(s.Gen.Ring), Split: slices.Clone(s.Gen.Split), GlobalBatch: s.Spec.GlobalBatch,
	}
	for _, id := range s.Gen.Ring {
		m, _ := s.Member(id)
		a.Hosts = append(a.Hosts, m.Host)
	}
	return a
}

// clone copies everything apply may change; values it never changes in place
// (loss maps, manifests' file lists, ring slices of old generations) are shared.
func (s State) clone() State {
	c := s
	c.Members = slices.Clone(s.Members)
	c.Pending = make([]StepReports, len(s.Pending))
	for i, p := range s.Pending {
		c.Pending[i] = StepReports{Step: p.Step, Reports: slices.Clone(p.Reports)}
	}
	c.Checkpoints = slices.Clip(s.Checkpoints)
	c.History = slices.Clip(s.History)
	return c
}

// Command is an input to apply: what a node asked, or what time decided.
type Command interface{ command() }

// CreateJob sets the job. It is idempotent for an identical spec; a different
// spec is refused.
type CreateJob struct {
	Spec Spec `json:"spec"`
}

// Join asks to admit a node. Version, RecipeHash and DatasetHash must equal
// the job's.
//
// A join from a live member with the same Incarnation is a retry (a reply got
// lost): it changes nothing and succeeds again. A join from a live member with
// a different Incarnation is the same node restarted: it has lost whatever it
// was doing, so it is re-admitted and, when the job runs, generation g+1 opens,
// in which every rank starts again from the committed step. A departed member
// that joins again is admitted like a new one.
type Join struct {
	Node        string `json:"node"`
	Incarnation string `json:"incarnation"`
	Host        string `json:"host"`
	Addr        string `json:"addr,omitempty"`
	Version     string `json:"crdgo_version"`
	RecipeHash  string `json:"recipe_hash"`
	DatasetHash string `json:"dataset_hash"`
}

// Leave removes a live member; Incarnation must be the member's.
type Leave struct {
	Node        string `json:"node"`
	Incarnation string `json:"incarnation"`
}

// HeartbeatTimeout removes a member that has not been heard from. Gen is the
// generation the leader's liveness tracker saw when it decided: a timeout of an
// older generation is a no-op, the member may have rejoined since.
type HeartbeatTimeout struct {
	Node string `json:"node"`
	Gen  uint64 `json:"gen"`
}

// Report is a rank's account of a step it finished: its share of the global
// batch's losses (the committed value is their sum), its step and allreduce
// times in seconds, and, every ChecksumEvery steps, a checksum of its
// parameters.
type Report struct {
	Node          string             `json:"node"`
	Gen           uint64             `json:"gen"`
	Step          uint64             `json:"step"`
	Losses        map[string]float64 `json:"losses,omitempty"`
	StepTime      float64            `json:"step_seconds"`
	AllreduceTime float64            `json:"allreduce_seconds"`
	Checksum      string             `json:"checksum,omitempty"` // lower-case hex
}

// CommitCheckpoint commits a checkpoint that rank 0 of generation Gen wrote.
// A checkpoint of a step not yet committed waits for that step; one whose step
// never commits (the generation changed) is discarded.
type CommitCheckpoint struct {
	Node     string   `json:"node"`
	Gen      uint64   `json:"gen"`
	Manifest Manifest `json:"manifest"`
}

// Stop fails a running or waiting job on an operator's request.
type Stop struct {
	Reason string `json:"reason"`
}

func (CreateJob) command()        {}
func (Join) command()             {}
func (Leave) command()            {}
func (HeartbeatTimeout) command() {}
func (Report) command()           {}
func (CommitCheckpoint) command() {}
func (Stop) command()             {}

// Effect is something apply asks the outside world to do or know.
type Effect interface{ effect() }

// Assign announces a new generation: every rank of Ring gets its Assignment.
type Assign struct {
	Assignments []Assignment `json:"assignments"`
}

// Assignment is one rank's view of a generation.
type Assignment struct {
	Job         string   `json:"job"`
	Gen         uint64   `json:"gen"`
	Start       uint64   `json:"start"` // the first step to train: committed step + 1
	Rank        int      `json:"rank"`
	World       int      `json:"world"`
	Ring        []string `json:"ring"`  // member IDs in rank order
	Hosts       []string `json:"hosts"` // their hosts, same order
	Split       []Range  `json:"split"` // each rank's part of every step's global batch
	GlobalBatch int      `json:"global_batch"`
}

// Admitted: a join succeeded. Waiting is true while the node is in no ring.
type Admitted struct {
	Node    string
	Waiting bool
}

// Departed: a member left or was lost.
type Departed struct {
	Node  string
	State MemberState
}

// Accepted: a report was stored (it feeds the per-rank metrics).
type Accepted struct {
	Gen           uint64
	Rank          int
	Node          string
	Step          uint64
	StepTime      float64
	AllreduceTime float64
}

// Committed: every rank of the generation reported Step.
type Committed struct{ Point Point }

// CheckpointCommitted: the manifest is committed; the checkpoint exists.
type CheckpointCommitted struct {
	Gen      uint64   `json:"gen"`
	Manifest Manifest `json:"manifest"`
}

// CheckpointPending: the manifest waits for its step to commit.
type CheckpointPending struct{ Step uint64 }

// CheckpointDiscarded: a pending checkpoint's step never committed in its
// generation; the files rank 0 wrote are not a checkpoint.
type CheckpointDiscarded struct {
	Gen  uint64
	Step uint64
}

// JobWaiting: the ring dissolved or has not formed; the job waits for members.
type JobWaiting struct {
	Gen  uint64
	Live int
	Need int
}

// JobDone: the job reached its last step.
type JobDone struct {
	Step uint64 `json:"step"`
}

// JobFailed: the job stopped for good.
type JobFailed struct {
	Reason string `json:"reason"`
}

// Rejected: a command was refused; Reason is the answer to its sender. Field
// names the spec field a join disagreed with.
type Rejected struct {
	Node   string
	Field  string
	Reason string
}

// DropKind says why a message was dropped.
type DropKind string

const (
	DropStale   DropKind = "stale"
	DropForeign DropKind = "foreign"
	DropInvalid DropKind = "invalid"
)

// Drop: a message was dropped and counted, never applied.
type Drop struct {
	Node   string
	Kind   DropKind
	Reason string
}

func (Assign) effect()              {}
func (Admitted) effect()            {}
func (Departed) effect()            {}
func (Accepted) effect()            {}
func (Committed) effect()           {}
func (CheckpointCommitted) effect() {}
func (CheckpointPending) effect()   {}
func (CheckpointDiscarded) effect() {}
func (JobWaiting) effect()          {}
func (JobDone) effect()             {}
func (JobFailed) effect()           {}
func (Rejected) effect()            {}
func (Drop) effect()                {}

// apply is the coordinator: the same state and command give the same result
// on every replica.
func apply(s State, c Command) (State, []Effect) {
	switch c := c.(type) {
	case CreateJob:
		return s.createJob(c)
	case Join:
		return s.join(c)
	case Leave:
		return s.leave(c)
	case HeartbeatTimeout:
		return s.timeout(c)
	case Report:
		return s.report(c)
	case CommitCheckpoint:
		return s.commitCheckpoint(c)
	case Stop:
		return s.stop(c)
	}
	return s, []Effect{Rejected{Reason: fmt.Sprintf("unknown command %T", c)}}
}

func (s State) createJob(c CreateJob) (State, []Effect) {
	if err := c.Spec.Validate(); err != nil {
		return s, []Effect{Rejected{Reason: "create job: " + err.Error()}}
	}
	if s.Spec != nil {
		if *s.Spec == c.Spec {
			return s, nil
		}
		return s, []Effect{Rejected{Field: specDiff(*s.Spec, c.Spec), Reason: fmt.Sprintf("create job: job %q exists with a different spec (%s)", s.Spec.Job, specDiff(*s.Spec, c.Spec))}}
	}
	s = s.clone()
	spec := c.Spec
	s.Spec = &spec
	s.Status = Waiting
	return s, []Effect{JobWaiting{Gen: s.Gen.Gen, Need: spec.MinNodes}}
}

// specDiff names the first field where a and b differ.
func specDiff(a, b Spec) string {
	switch {
	case a.Job != b.Job:
		return "job"
	case a.Recipe != b.Recipe:
		return "recipe"
	case a.RecipeHash != b.RecipeHash:
		return "recipe_hash"
	case a.Dataset != b.Dataset:
		return "dataset"
	case a.DatasetHash != b.DatasetHash:
		return "dataset_hash"
	case a.Seed != b.Seed:
		return "seed"
	case a.GlobalBatch != b.GlobalBatch:
		return "global_batch"
	case a.Version != b.Version:
		return "crdgo_version"
	case a.MinNodes != b.MinNodes:
		return "min_nodes"
	case a.MaxSteps != b.MaxSteps:
		return "max_steps"
	case a.CheckpointEvery != b.CheckpointEvery:
		return "checkpoint_every"
	case a.ChecksumEvery != b.ChecksumEvery:
		return "checksum_every"
	}
	return ""
}

func (s State) join(c Join) (State, []Effect) {
	reject := func(field, format string, a ...any) (State, []Effect) {
		return s, []Effect{Rejected{Node: c.Node, Field: field, Reason: "join refused: " + fmt.Sprintf(format, a...)}}
	}
	if s.Spec == nil {
		return reject("", "no job yet")
	}
	if s.Status == Done || s.Status == Failed {
		return reject("", "job %q is %s", s.Spec.Job, s.Status)
	}
	for _, f := range []struct{ name, node, job string }{
		{"crdgo_version", c.Version, s.Spec.Version},
		{"recipe_hash", c.RecipeHash, s.Spec.RecipeHash},
		{"dataset_hash", c.DatasetHash, s.Spec.DatasetHash},
	} {
		if f.node != f.job {
			return reject(f.name, "%s: node has %q, job %q has %q", f.name, f.node, s.Spec.Job, f.job)
		}
	}
	i := slices.IndexFunc(s.Members, func(m Member) bool { return m.ID == c.Node })
	if i >= 0 && s.Members[i].State.live() {
		m := s.Members[i]
		if m.Incarnation == c.Incarnation && m.Host == c.Host && m.Addr == c.Addr {
			return s, []Effect{Admitted{Node: c.Node, Waiting: m.State == MemberWaiting}} // a retry
		}
	}
	live := len(s.Live())
	if i < 0 || !s.Members[i].State.live() {
		live++
	}
	if live > MaxMembers {
		return reject("", "job %q has %d members, the most it admits", s.Spec.Job, MaxMembers)
	}
	if live > s.Spec.GlobalBatch {
		return reject("global_batch", "%d members would exceed the global batch of %d samples (every rank needs one)", live, s.Spec.GlobalBatch)
	}
	s = s.clone()
	fresh := Member{ID: c.Node, Host: c.Host, Addr: c.Addr, Incarnation: c.Incarnation, State: MemberWaiting}
	switch {
	case i >= 0 && s.Members[i].State.live():
		// Restarted: it keeps its place in the ring order, so rank 0 stays rank 0.
		fresh.Seq = s.Members[i].Seq
		s.Members[i] = fresh
	default:
		if i >= 0 {
			s.Members = slices.Delete(s.Members, i, i+1)
		}
		fresh.Seq = s.NextSeq
		s.NextSeq++
		s.Members = append(s.Members, fresh)
	}
	s.sortMembers()
	s, eff := s.membershipChanged()
	m, _ := s.Member(c.Node)
	return s, append([]Effect{Admitted{Node: c.Node, Waiting: m.State == MemberWaiting}}, eff...)
}

func (s State) leave(c Leave) (State, []Effect) {
	m, ok := s.Member(c.Node)
	if !ok || !m.State.live() {
		return s.drop(c.Node, DropForeign, "leave from %q: not a member", c.Node)
	}
	if m.Incarnation != c.Incarnation {
		return s.drop(c.Node, DropStale, "leave from %q: incarnation %q, member is %q", c.Node, c.Incarnation, m.Incarnation)
	}
	return s.depart(c.Node, MemberLeft)
}

func (s State) timeout(c HeartbeatTimeout) (State, []Effect) {
	m, ok := s.Member(c.Node)
	if !ok || !m.State.live() || c.Gen != s.Gen.Gen {
		return s, nil // stale: the member left, rejoined or a generation opened since
	}
	return s.depart(c.Node, MemberLost)
}

func (s State) depart(id string, st MemberState) (State, []Effect) {
	s = s.clone()
	i := slices.IndexFunc(s.Members, func(m Member) bool { return m.ID == id })
	s.Members[i].State = st
	s.sortMembers()
	s, eff := s.membershipChanged()
	return s, append([]Effect{Departed{Node: id, State: st}}, eff...)
}

// sortMembers orders live members before departed ones, each by Seq, and
// forgets the oldest departed beyond keepDeparted.
func (s *State) sortMembers() {
	slices.SortStableFunc(s.Members, func(a, b Member) int {
		if a.State.live() != b.State.live() {
			if a.State.live() {
				return -1
			}
			return 1
		}
		return cmp.Compare(a.Seq, b.Seq)
	})
	live := len(s.Live())
	if gone := len(s.Members) - live; gone > keepDeparted {
		s.Members = slices.Delete(s.Members, live, live+gone-keepDeparted)
	}
}

// membershipChanged opens the next generation when the job runs or the live
// members reach MinNodes. s is already a clone.
func (s State) membershipChanged() (State, []Effect) {
	if s.Status != Running && s.Status != Waiting {
		return s, nil
	}
	live := s.Live()
	if s.Status == Waiting && len(live) < s.Spec.MinNodes {
		return s, nil
	}
	s.Gen = Generation{Gen: s.Gen.Gen + 1, Start: s.Committed + 1}
	s.Pending = nil
	var eff []Effect
	if s.PendingCheckpoint != nil {
		eff = append(eff, CheckpointDiscarded{Gen: s.Gen.Gen - 1, Step: s.PendingCheckpoint.Step})
		s.PendingCheckpoint = nil
	}
	if len(live) == 0 {
		s.Status = Waiting
		return s, append(eff, JobWaiting{Gen: s.Gen.Gen, Live: 0, Need: s.Spec.MinNodes})
	}
	s.Status = Running
	for _, m := range live {
		s.Gen.Ring = append(s.Gen.Ring, m.ID)
	}
	s.Gen.Split = Split(s.Spec.GlobalBatch, len(live))
	for i := range s.Members {
		m := &s.Members[i]
		if m.State.live() {
			m.State = MemberActive
			if m.JoinedGen == 0 {
				m.JoinedGen = s.Gen.Gen
			}
		}
	}
	a := Assign{}
	for r := range s.Gen.Ring {
		a.Assignments = append(a.Assignments, assignment(s, r))
	}
	return s, append(eff, a)
}

func (s State) drop(node string, kind DropKind, format string, a ...any) (State, []Effect) {
	s = s.clone()
	switch kind {
	case DropStale:
		s.Dropped.Stale++
	case DropForeign:
		s.Dropped.Foreign++
	default:
		s.Dropped.Invalid++
	}
	return s, []Effect{Drop{Node: node, Kind: kind, Reason: fmt.Sprintf(format, a...)}}
}

func (s State) report(c Report) (State, []Effect) {
	m, ok := s.Member(c.Node)
	switch {
	case !ok || !m.State.live():
		return s.drop(c.Node, DropForeign, "report from %q: not a member", c.Node)
	case c.Gen != s.Gen.Gen:
		return s.drop(c.Node, DropStale, "report of generation %d: the current one is %d", c.Gen, s.Gen.Gen)
	case s.Status != Running:
		return s.drop(c.Node, DropInvalid, "report of step %d: job is %s", c.Step, s.Status)
	case c.Step <= s.Committed || c.Step < s.Gen.Start:
		return s.drop(c.Node, DropStale, "report of step %d: committed up to %d", c.Step, s.Committed)
	case c.Step > s.Committed+MaxAhead:
		return s.drop(c.Node, DropInvalid, "report of step %d: more than %d steps past the committed step %d", c.Step, MaxAhead, s.Committed)
	case s.Spec.MaxSteps > 0 && c.Step > s.Spec.MaxSteps:
		return s.drop(c.Node, DropInvalid, "report of step %d: the job ends at step %d", c.Step, s.Spec.MaxSteps)
	}
	rank := s.Gen.Rank(c.Node)
	if rank < 0 {
		return s.drop(c.Node, DropStale, "report from %q: not a rank of generation %d", c.Node, s.Gen.Gen)
	}
	pi, found := slices.BinarySearchFunc(s.Pending, c.Step, func(p StepReports, step uint64) int { return cmp.Compare(p.Step, step) })
	if found && slices.ContainsFunc(s.Pending[pi].Reports, func(r RankReport) bool { return r.Rank == rank }) {
		return s.drop(c.Node, DropStale, "report of step %d: rank %d reported it already", c.Step, rank)
	}
	s = s.clone()
	if !found {
		s.Pending = slices.Insert(s.Pending, pi, StepReports{Step: c.Step})
	}
	rr := RankReport{Rank: rank, Node: c.Node, Losses: c.Losses, StepTime: c.StepTime, AllreduceTime: c.AllreduceTime, Checksum: c.Checksum}
	reps := s.Pending[pi].Reports
	at, _ := slices.BinarySearchFunc(reps, rank, func(r RankReport, k int) int { return cmp.Compare(r.Rank, k) })
	s.Pending[pi].Reports = slices.Insert(reps, at, rr)
	mi := slices.IndexFunc(s.Members, func(m Member) bool { return m.ID == c.Node })
	s.Members[mi].Last = &Progress{Step: c.Step, Losses: c.Losses, StepTime: c.StepTime, AllreduceTime: c.AllreduceTime}
	eff := []Effect{Accepted{Gen: s.Gen.Gen, Rank: rank, Node: c.Node, Step: c.Step, StepTime: c.StepTime, AllreduceTime: c.AllreduceTime}}
	s, more := s.commitReady()
	return s, append(eff, more...)
}

// commitReady commits every complete step that follows the committed one. s is
// already a clone.
func (s State) commitReady() (State, []Effect) {
	var eff []Effect
	world := len(s.Gen.Ring)
	for s.Status == Running && len(s.Pending) > 0 && s.Pending[0].Step == s.Committed+1 && len(s.Pending[0].Reports) == world {
		p := s.Pending[0]
		if reason := checkChecksums(p, s.Spec.ChecksumEvery); reason != "" {
			s.Status, s.Reason = Failed, reason
			s.Pending = nil
			return s, append(eff, JobFailed{Reason: reason})
		}
		s.Pending = s.Pending[1:]
		s.Committed = p.Step
		pt := Point{Step: p.Step, Gen: s.Gen.Gen, World: world}
		for _, r := range p.Reports {
			pt.StepTime = max(pt.StepTime, r.StepTime)
			pt.AllreduceTime = max(pt.AllreduceTime, r.AllreduceTime)
			for k, v := range r.Losses {
				if pt.Losses == nil {
					pt.Losses = map[string]float64{}
				}
				pt.Losses[k] += v
			}
		}
		if len(s.History) >= keepHistory {
			s.History = slices.Clone(s.History[len(s.History)-keepHistory+1:])
		}
		s.History = append(s.History, pt)
		eff = append(eff, Committed{Point: pt})
		if cp := s.PendingCheckpoint; cp != nil && cp.Step <= s.Committed {
			s.PendingCheckpoint = nil
			s, eff = s.addCheckpoint(*cp, eff)
		}
		var done []Effect
		s, done = s.maybeDone()
		eff = append(eff, done...)
	}
	return s, eff
}

// checkChecksums compares the parameter checksums of one step's reports. At a
// checksum step every rank must send one. When they differ, the ranks whose
// checksum a strict majority shares are right and the others diverge; with no
// majority (two ranks, or a three-way split) every rank is named.
func checkChecksums(p StepReports, every uint64) string {
	due := every > 0 && p.Step%every == 0
	groups := map[string][]RankReport{}
	for _, r := range p.Reports {
		if r.Checksum == "" {
			if due {
				return fmt.Sprintf("step %d: rank %d (%s) sent no parameter checksum (one is due every %d steps)", p.Step, r.Rank, r.Node, every)
			}
			continue
		}
		groups[r.Checksum] = append(groups[r.Checksum], r)
	}
	if len(groups) <= 1 {
		return ""
	}
	sums := make([]string, 0, len(groups))
	for k := range groups {
		sums = append(sums, k)
	}
	// Largest group first; ties by lowest rank, so the text is deterministic.
	sort.Slice(sums, func(i, j int) bool {
		a, b := groups[sums[i]], groups[sums[j]]
		if len(a) != len(b) {
			return len(a) > len(b)
		}
		return a[0].Rank < b[0].Rank
	})
	n := 0
	for _, g := range groups {
		n += len(g)
	}
	name := func(rs []RankReport) string {
		var parts []string
		for _, r := range rs {
			parts = append(parts, fmt.Sprintf("rank %d (%s)", r.Rank, r.Node))
		}
		return strings.Join(parts, ", ")
	}
	if top := groups[sums[0]]; 2*len(top) > n {
		var bad []string
		for _, k := range sums[1:] {
			bad = append(bad, fmt.Sprintf("%s has %s", name(groups[k]), short(k)))
		}
		return fmt.Sprintf("parameter checksum mismatch at step %d: %s; %s agree on %s", p.Step, strings.Join(bad, "; "), name(top), short(sums[0]))
	}
	var all []string
	for _, k := range sums {
		all = append(all, fmt.Sprintf("%s has %s", name(groups[k]), short(k)))
	}
	return fmt.Sprintf("parameter checksum mismatch at step %d, no majority: %s", p.Step, strings.Join(all, "; "))
}

func short(sum string) string {
	if len(sum) > 16 {
		return sum[:16]
	}
	return sum
}

func (s State) maybeDone() (State, []Effect) {
	sp := s.Spec
	if s.Status != Running || sp.MaxSteps == 0 || s.Committed < sp.MaxSteps {
		return s, nil
	}
	if sp.CheckpointEvery > 0 {
		if last, ok := s.LastCheckpoint(); !ok || last.Step != sp.MaxSteps {
			return s, nil // the last step's checkpoint is still to come
		}
	}
	s.Status = Done
	return s, []Effect{JobDone{Step: s.Committed}}
}

func (s State) commitCheckpoint(c CommitCheckpoint) (State, []Effect) {
	m, ok := s.Member(c.Node)
	mf := c.Manifest
	switch {
	case !ok || !m.State.live():
		return s.drop(c.Node, DropForeign, "checkpoint from %q: not a member", c.Node)
	case c.Gen != s.Gen.Gen:
		return s.drop(c.Node, DropStale, "checkpoint of generation %d: the current one is %d", c.Gen, s.Gen.Gen)
	case s.Status != Running:
		return s.drop(c.Node, DropInvalid, "checkpoint of step %d: job is %s", mf.Step, s.Status)
	}
	if r := s.Gen.Rank(c.Node); r != 0 {
		return s, []Effect{Rejected{Node: c.Node, Reason: fmt.Sprintf("checkpoint of step %d: only rank 0 (%s) commits checkpoints, %s is rank %d", mf.Step, s.Gen.Ring[0], c.Node, r)}}
	}
	if err := mf.validate(*s.Spec); err != nil {
		return s, []Effect{Rejected{Node: c.Node, Reason: "checkpoint: " + err.Error()}}
	}
	if last, ok := s.LastCheckpoint(); ok && mf.Step <= last.Step {
		i := slices.IndexFunc(s.Checkpoints, func(x Manifest) bool { return x.Step == mf.Step })
		if i >= 0 && s.Checkpoints[i].equal(mf) {
			return s, nil // a retry
		}
		return s, []Effect{Rejected{Node: c.Node, Reason: fmt.Sprintf("checkpoint of step %d: a checkpoint of step %d is committed already", mf.Step, last.Step)}}
	}
	if mf.Step > s.Committed+MaxAhead {
		return s.drop(c.Node, DropInvalid, "checkpoint of step %d: more than %d steps past the committed step %d", mf.Step, MaxAhead, s.Committed)
	}
	s = s.clone()
	if mf.Step > s.Committed {
		mf.Files = slices.Clone(mf.Files)
		s.PendingCheckpoint = &mf
		return s, []Effect{CheckpointPending{Step: mf.Step}}
	}
	s, eff := s.addCheckpoint(mf, nil)
	s, done := s.maybeDone()
	return s, append(eff, done...)
}

func (s State) addCheckpoint(mf Manifest, eff []Effect) (State, []Effect) {
	mf.Files = slices.Clone(mf.Files)
	if len(s.Checkpoints) >= keepCheckpoints {
		s.Checkpoints = slices.Clone(s.Checkpoints[len(s.Checkpoints)-keepCheckpoints+1:])
	}
	s.Checkpoints = append(s.Checkpoints, mf)
	return s, append(eff, CheckpointCommitted{Gen: s.Gen.Gen, Manifest: mf})
}

func (s State) stop(c Stop) (State, []Effect) {
	if s.Spec == nil || s.Status == Done || s.Status == Failed {
		return s, []Effect{Rejected{Reason: fmt.Sprintf("stop: job is %q", s.Status)}}
	}
	s = s.clone()
	s.Status, s.Reason = Failed, "stopped by operator: "+c.Reason
	s.Pending, s.PendingCheckpoint = nil, nil
	return s, []Effect{JobFailed{Reason: s.Reason}}
}

func (m Manifest) equal(o Manifest) bool {
	return m.Step == o.Step && m.Recipe == o.Recipe && m.Version == o.Version && slices.Equal(m.Files, o.Files)
}

func (m Manifest) validate(spec Spec) error {
	switch {
	case m.Step == 0:
		return fmt.Errorf("step 0")
	case spec.MaxSteps > 0 && m.Step > spec.MaxSteps:
		return fmt.Errorf("step %d: the job ends at step %d", m.Step, spec.MaxSteps)
	case m.Recipe != spec.Recipe:
		return fmt.Errorf("step %d: recipe %q, job has %q", m.Step, m.Recipe, spec.Recipe)
	case m.Version != spec.Version:
		return fmt.Errorf("step %d: crdgo_version %q, job has %q", m.Step, m.Version, spec.Version)
	case len(m.Files) == 0 || len(m.Files) > maxFiles:
		return fmt.Errorf("step %d: %d files, want 1..%d", m.Step, len(m.Files), maxFiles)
	}
	seen := map[string]bool{}
	for _, f := range m.Files {
		if !validFileName(f.Name) {
			return fmt.Errorf("step %d: file name %q: want a plain name of letters, digits, '.', '-', '_'", m.Step, f.Name)
		}
		if seen[f.Name] {
			return fmt.Errorf("step %d: file %q listed twice", m.Step, f.Name)
		}
		seen[f.Name] = true
		if f.Size < 0 {
			return fmt.Errorf("step %d: file %q: size %d", m.Step, f.Name, f.Size)
		}
		if !validSHA256(f.SHA256) {
			return fmt.Errorf("step %d: file %q: sha256 %q, want 64 lower-case hex digits", m.Step, f.Name, f.SHA256)
		}
	}
	return nil
}
