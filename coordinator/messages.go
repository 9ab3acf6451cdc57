package coordinator

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"regexp"
	"strings"
)

// The control protocol: every request, every raft log entry and every event is
// one JSON Message, a version and exactly one body. Decode is the only way in:
// it bounds the size before parsing, refuses unknown fields, trailing data and
// other versions, and validates every field, so nothing from the network
// reaches apply unchecked.

// ProtocolVersion is the version of Message and Reply; a peer speaking another
// is refused.
const ProtocolVersion = 1

// MaxMessageBytes bounds every control message and reply. A NATS server's
// max_payload is larger and not relied on.
const MaxMessageBytes = 64 << 10

// Limits of fields.
const (
	maxField  = 256 // versions, hashes, hosts, reasons
	maxFiles  = 64  // files of a checkpoint
	maxLosses = 32  // loss terms of a report
	maxLoss   = 1e30
)

// Message is the envelope of the control protocol. Exactly one body is set.
type Message struct {
	V int `json:"v"`

	// Commands, applied through raft.
	CreateJob        *CreateJob        `json:"create_job,omitempty"`
	Join             *Join             `json:"join,omitempty"`
	Leave            *Leave            `json:"leave,omitempty"`
	HeartbeatTimeout *HeartbeatTimeout `json:"heartbeat_timeout,omitempty"`
	Report           *Report           `json:"report,omitempty"`
	CommitCheckpoint *CommitCheckpoint `json:"commit_checkpoint,omitempty"`
	Stop             *Stop             `json:"stop,omitempty"`

	// Requests that are not commands.
	Heartbeat *Heartbeat   `json:"heartbeat,omitempty"`
	Status    *StatusQuery `json:"status,omitempty"`
	AddVoter  *AddVoter    `json:"add_voter,omitempty"`

	// Events the leader publishes on crdgo.<job>.events.
	Event *Event `json:"event,omitempty"`
}

// Heartbeat tells the leader a node is alive. Gen is the generation the node
// trains in (0: none); the reply carries the current assignment when it differs.
type Heartbeat struct {
	Node        string `json:"node"`
	Incarnation string `json:"incarnation"`
	Gen         uint64 `json:"gen"`
}

// StatusQuery asks any replica for its view of the job.
type StatusQuery struct{}

// AddVoter asks the raft leader to add a coordinator replica.
type AddVoter struct {
	ID   string `json:"id"`
	Addr string `json:"addr"` // its raft address, host:port
}

// Event is what the leader publishes when the state changes: exactly one of
// its fields is set. Assignment goes to one node, on crdgo.<job>.node.<id>;
// the others to every node, on crdgo.<job>.events.
type Event struct {
	Assignment *Assignment          `json:"assignment,omitempty"`
	Committed  *Point               `json:"committed,omitempty"`
	Checkpoint *CheckpointCommitted `json:"checkpoint,omitempty"`
	Done       *JobDone             `json:"done,omitempty"`
	Failed     *JobFailed           `json:"failed,omitempty"`
}

// Code classifies a Reply.
type Code string

const (
	CodeOK       Code = "ok"
	CodeRejected Code = "rejected"  // the command was refused; Error says why
	CodeDropped  Code = "dropped"   // stale or foreign; counted, never applied
	CodeInvalid  Code = "invalid"   // the message did not decode or validate
	CodeUnknown  Code = "unknown"   // the node is not a live member: join again
	CodeNoLeader Code = "no_leader" // no raft leader right now: retry
	CodeInternal Code = "internal"  // the coordinator failed (raft apply, timeout)
)

// Reply answers every request but status. On CodeOK it carries the job as the
// answering replica sees it.
type Reply struct {
	V          int         `json:"v"`
	Code       Code        `json:"code"`
	Error      string      `json:"error,omitempty"`
	Field      string      `json:"field,omitempty"` // the spec field a join disagreed with
	Status     JobStatus   `json:"status,omitempty"`
	Gen        uint64      `json:"gen,omitempty"`
	Committed  uint64      `json:"committed,omitempty"`
	Spec       *Spec       `json:"spec,omitempty"`
	Assignment *Assignment `json:"assignment,omitempty"` // the node's, when it is a rank of Gen
}

// Command returns the message's command, or nil if its body is not one.
func (m Message) Command() Command {
	switch {
	case m.CreateJob != nil:
		return *m.CreateJob
	case m.Join != nil:
		return *m.Join
	case m.Leave != nil:
		return *m.Leave
	case m.HeartbeatTimeout != nil:
		return *m.HeartbeatTimeout
	case m.Report != nil:
		return *m.Report
	case m.CommitCheckpoint != nil:
		return *m.CommitCheckpoint
	case m.Stop != nil:
		return *m.Stop
	}
	return nil
}

// Kind names the message's body, as the ctl subjects do.
func (m Message) Kind() string {
	var kinds []string
	for _, b := range []struct {
		name string
		set  bool
	}{
		{"create_job", m.CreateJob != nil}, {"join", m.Join != nil}, {"leave", m.Leave != nil},
		{"heartbeat_timeout", m.HeartbeatTimeout != nil}, {"report", m.Report != nil},
		{"commit_checkpoint", m.CommitCheckpoint != nil}, {"stop", m.Stop != nil},
		{"heartbeat", m.Heartbeat != nil}, {"status", m.Status != nil}, {"add_voter", m.AddVoter != nil},
		{"event", m.Event != nil},
	} {
		if b.set {
			kinds = append(kinds, b.name)
		}
	}
	if len(kinds) != 1 {
		return ""
	}
	return kinds[0]
}

// NewMessage wraps a command in a Message.
func NewMessage(c Command) Message {
	m := Message{V: ProtocolVersion}
	switch c := c.(type) {
	case CreateJob:
		m.CreateJob = &c
	case Join:
		m.Join = &c
	case Leave:
		m.Leave = &c
	case HeartbeatTimeout:
		m.HeartbeatTimeout = &c
	case Report:
		m.Report = &c
	case CommitCheckpoint:
		m.CommitCheckpoint = &c
	case Stop:
		m.Stop = &c
	default:
		panic(fmt.Sprintf("coordinator: NewMessage(%T): not a command", c))
	}
	return m
}

// Encode returns m as JSON. It fails on a value JSON cannot carry (a NaN loss)
// and on a message over MaxMessageBytes.
func Encode(v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("coordinator: encode %T: %w", v, err)
	}
	if len(b) > MaxMessageBytes {
		return nil, fmt.Errorf("coordinator: encode %T: %d bytes, the limit is %d", v, len(b), MaxMessageBytes)
	}
	return b, nil
}

// ErrInvalid wraps every decoding and validation error.
var ErrInvalid = errors.New("coordinator: invalid message")

// Decode parses and validates a Message.
func Decode(b []byte) (Message, error) {
	var m Message
	if err := decodeJSON(b, &m); err != nil {
		return Message{}, err
	}
	if err := m.validate(); err != nil {
		return Message{}, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return m, nil
}

// DecodeReply parses and validates a Reply.
func DecodeReply(b []byte) (Reply, error) {
	var r Reply
	if err := decodeJSON(b, &r); err != nil {
		return Reply{}, err
	}
	if r.V != ProtocolVersion {
		return Reply{}, fmt.Errorf("%w: reply version %d, want %d", ErrInvalid, r.V, ProtocolVersion)
	}
	switch r.Code {
	case CodeOK, CodeRejected, CodeDropped, CodeInvalid, CodeUnknown, CodeNoLeader, CodeInternal:
	default:
		return Reply{}, fmt.Errorf("%w: reply code %q", ErrInvalid, r.Code)
	}
	if len(r.Error) > 4*maxField || len(r.Field) > maxField {
		return Reply{}, fmt.Errorf("%w: reply error text too long", ErrInvalid)
	}
	if r.Spec != nil {
		if err := r.Spec.Validate(); err != nil {
			return Reply{}, fmt.Errorf("%w: reply: %w", ErrInvalid, err)
		}
	}
	if r.Assignment != nil {
		if err := r.Assignment.validate(); err != nil {
			return Reply{}, fmt.Errorf("%w: reply: %w", ErrInvalid, err)
		}
	}
	return r, nil
}

func decodeJSON(b []byte, v any) error {
	if len(b) > MaxMessageBytes {
		return fmt.Errorf("%w: %d bytes, the limit is %d", ErrInvalid, len(b), MaxMessageBytes)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return fmt.Errorf("%w: data after the message", ErrInvalid)
	}
	return nil
}

func (m Message) validate() error {
	if m.V != ProtocolVersion {
		return fmt.Errorf("version %d, want %d", m.V, ProtocolVersion)
	}
	if m.Kind() == "" {
		return errors.New("want exactly one body")
	}
	switch {
	case m.CreateJob != nil:
		return m.CreateJob.Spec.Validate()
	case m.Join != nil:
		return m.Join.validate()
	case m.Leave != nil:
		return checks(nodeID(m.Leave.Node), token("incarnation", m.Leave.Incarnation))
	case m.HeartbeatTimeout != nil:
		return checks(nodeID(m.HeartbeatTimeout.Node), bounded("gen", m.HeartbeatTimeout.Gen))
	case m.Report != nil:
		return m.Report.validate()
	case m.CommitCheckpoint != nil:
		c := m.CommitCheckpoint
		return checks(nodeID(c.Node), bounded("gen", c.Gen), c.Manifest.validateShape())
	case m.Stop != nil:
		return text("reason", m.Stop.Reason)
	case m.Heartbeat != nil:
		h := m.Heartbeat
		return checks(nodeID(h.Node), token("incarnation", h.Incarnation), bounded("gen", h.Gen))
	case m.AddVoter != nil:
		return checks(name("id", m.AddVoter.ID), token("addr", m.AddVoter.Addr))
	case m.Event != nil:
		return m.Event.validate()
	}
	return nil
}

func (j Join) validate() error {
	return checks(nodeID(j.Node), token("incarnation", j.Incarnation), token("host", j.Host),
		optional(j.Addr, token("addr", j.Addr)), text("crdgo_version", j.Version),
		text("recipe_hash", j.RecipeHash), text("dataset_hash", j.DatasetHash))
}

func (r Report) validate() error {
	errs := []error{nodeID(r.Node), bounded("gen", r.Gen), bounded("step", r.Step)}
	if r.Step == 0 {
		errs = append(errs, errors.New("step: 0, steps count from 1"))
	}
	if len(r.Losses) > maxLosses {
		errs = append(errs, fmt.Errorf("losses: %d terms, at most %d", len(r.Losses), maxLosses))
	}
	for k, v := range r.Losses {
		if !lossRE.MatchString(k) {
			errs = append(errs, fmt.Errorf("losses: name %q: want 1-64 letters, digits, '.', '_', '-'", k))
		} else if math.IsNaN(v) || math.Abs(v) > maxLoss {
			// Bounded, so that sums over ranks stay finite and JSON can carry them.
			errs = append(errs, fmt.Errorf("losses: %s = %v: want a finite number within ±%g", k, v, maxLoss))
		}
	}
	errs = append(errs, seconds("step_seconds", r.StepTime), seconds("allreduce_seconds", r.AllreduceTime))
	if r.Checksum != "" && !checksumRE.MatchString(r.Checksum) {
		errs = append(errs, fmt.Errorf("checksum %q: want 1-128 lower-case hex digits", r.Checksum))
	}
	return errors.Join(errs...)
}

// validateShape checks what a manifest is on its own; validate (fsm.go) checks
// it against the job too.
func (m Manifest) validateShape() error {
	errs := []error{bounded("manifest.step", m.Step), text("manifest.recipe", m.Recipe), text("manifest.crdgo_version", m.Version)}
	if len(m.Files) > maxFiles {
		errs = append(errs, fmt.Errorf("manifest.files: %d, at most %d", len(m.Files), maxFiles))
	}
	for _, f := range m.Files {
		if !validFileName(f.Name) || f.Size < 0 || !validSHA256(f.SHA256) {
			errs = append(errs, fmt.Errorf("manifest.files: %q (size %d, sha256 %q): want a plain name, a size >= 0 and 64 lower-case hex digits", f.Name, f.Size, f.SHA256))
		}
	}
	return errors.Join(errs...)
}

func (a Assignment) validate() error {
	errs := []error{name("job", a.Job), bounded("gen", a.Gen), bounded("start", a.Start)}
	if a.World < 1 || a.World > MaxMembers || len(a.Ring) != a.World || len(a.Hosts) != a.World || len(a.Split) != a.World {
		errs = append(errs, fmt.Errorf("assignment: world %d with %d ring ids, %d hosts, %d ranges", a.World, len(a.Ring), len(a.Hosts), len(a.Split)))
	} else {
		if a.Rank < 0 || a.Rank >= a.World {
			errs = append(errs, fmt.Errorf("assignment: rank %d of world %d", a.Rank, a.World))
		}
		for i := range a.World {
			errs = append(errs, nodeID(a.Ring[i]), token("host", a.Hosts[i]))
			if want := Split(a.GlobalBatch, a.World)[i]; a.Split[i] != want {
				errs = append(errs, fmt.Errorf("assignment: rank %d split %v, want %v for batch %d over %d", i, a.Split[i], want, a.GlobalBatch, a.World))
			}
		}
	}
	if a.GlobalBatch < a.World || a.GlobalBatch > 1<<20 {
		errs = append(errs, fmt.Errorf("assignment: global batch %d for world %d", a.GlobalBatch, a.World))
	}
	return errors.Join(errs...)
}

func (e Event) validate() error {
	n := 0
	var errs []error
	if e.Assignment != nil {
		n++
		errs = append(errs, e.Assignment.validate())
	}
	if e.Committed != nil {
		n++
		errs = append(errs, bounded("step", e.Committed.Step))
	}
	if e.Checkpoint != nil {
		n++
		errs = append(errs, e.Checkpoint.Manifest.validateShape())
	}
	if e.Done != nil {
		n++
	}
	if e.Failed != nil {
		n++
		errs = append(errs, text("reason", e.Failed.Reason))
	}
	if n != 1 {
		errs = append(errs, fmt.Errorf("event: %d bodies, want 1", n))
	}
	return errors.Join(errs...)
}

var (
	nameRE     = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)
	lossRE     = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,64}$`)
	fileRE     = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$`)
	sha256RE   = regexp.MustCompile(`^[0-9a-f]{64}$`)
	checksumRE = regexp.MustCompile(`^[0-9a-f]{1,128}$`)
)

// validName: 1..n letters, digits, '-' or '_': a NATS subject token.
func validName(s string, n int) bool { return len(s) <= n && nameRE.MatchString(s) }

func validFileName(s string) bool { return fileRE.MatchString(s) }

func validSHA256(s string) bool { return sha256RE.MatchString(s) }

// printable: printable ASCII and no spaces is what tokens are; text may hold spaces.
func printable(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

func checks(errs ...error) error { return errors.Join(errs...) }

func nodeID(s string) error { return name("node", s) }

func name(field, s string) error {
	if !validName(s, 64) {
		return fmt.Errorf("%s %q: want 1-64 letters, digits, '-' or '_'", field, s)
	}
	return nil
}

// NameFrom makes s a valid job or node name (1-64 letters, digits, '-' or
// '_'): other characters become '_', the rest is cut; empty gives empty.
func NameFrom(s, empty string) string {
	var b strings.Builder
	for _, c := range s {
		if b.Len() == 64 {
			break
		}
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_':
			b.WriteRune(c)
		default:
			b.WriteByte('_')
		}
	}
	if b.Len() == 0 {
		return empty
	}
	return b.String()
}

func token(field, s string) error {
	if s == "" || len(s) > maxField || !printable(s) || bytes.ContainsRune([]byte(s), ' ') {
		return fmt.Errorf("%s: %q: want 1-%d printable characters without spaces", field, s, maxField)
	}
	return nil
}

func text(field, s string) error {
	if len(s) > maxField || !printable(s) {
		return fmt.Errorf("%s: %d bytes: want at most %d printable characters", field, len(s), maxField)
	}
	return nil
}

func optional(s string, err error) error {
	if s == "" {
		return nil
	}
	return err
}

// bounded keeps counters far from overflow in any arithmetic on them.
func bounded(field string, v uint64) error {
	if v > 1<<48 {
		return fmt.Errorf("%s: %d, at most 2^48", field, v)
	}
	return nil
}

func seconds(field string, v float64) error {
	if math.IsNaN(v) || v < 0 || v > 1e6 {
		return fmt.Errorf("%s: %v: want 0..1e6 seconds", field, v)
	}
	return nil
}
