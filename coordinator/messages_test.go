package coordinator

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func validMessages() []Message {
	spec := testSpec()
	mf := Manifest{Step: 2, Recipe: "demo", Version: "v1", Files: []ManifestFile{{Name: "student_G.safetensors", Size: 10, SHA256: strings.Repeat("ab", 32)}}}
	a := Assignment{Job: "demo", Gen: 3, Start: 5, Rank: 1, World: 2, Ring: []string{"a", "b"}, Hosts: []string{"a:1", "b:1"}, Split: Split(8, 2), GlobalBatch: 8}
	return []Message{
		NewMessage(CreateJob{Spec: spec}),
		NewMessage(join("n1")),
		NewMessage(Leave{Node: "n1", Incarnation: "1"}),
		NewMessage(HeartbeatTimeout{Node: "n1", Gen: 4}),
		NewMessage(Report{Node: "n1", Gen: 2, Step: 9, Losses: map[string]float64{"G_crd": 0.5, "D.real": -1e-3}, StepTime: 0.2, AllreduceTime: 0.01, Checksum: "0fa3"}),
		NewMessage(CommitCheckpoint{Node: "n1", Gen: 2, Manifest: mf}),
		NewMessage(Stop{Reason: "operator"}),
		{V: 1, Heartbeat: &Heartbeat{Node: "n1", Incarnation: "x", Gen: 2}},
		{V: 1, Status: &StatusQuery{}},
		{V: 1, AddVoter: &AddVoter{ID: "c3", Addr: "10.0.0.3:7000"}},
		{V: 1, Event: &Event{Assignment: &a}},
		{V: 1, Event: &Event{Committed: &Point{Step: 3, Gen: 1, World: 2}}},
		{V: 1, Event: &Event{Failed: &JobFailed{Reason: "checksum"}}},
	}
}

func TestDecodeRoundTrip(t *testing.T) {
	for _, m := range validMessages() {
		b, err := Encode(m)
		if err != nil {
			t.Fatalf("Encode(%s): %v", m.Kind(), err)
		}
		got, err := Decode(b)
		if err != nil {
			t.Fatalf("Decode(%s): %v", b, err)
		}
		if b2, _ := Encode(got); string(b2) != string(b) {
			t.Errorf("round trip of %s:\n%s\n%s", m.Kind(), b, b2)
		}
	}
}

func TestDecodeRefuses(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{`{"v":1}`, "exactly one body"},
		{`{"v":1,"leave":{"node":"a","incarnation":"1"},"stop":{"reason":""}}`, "exactly one body"},
		{`{"v":9,"stop":{"reason":""}}`, "version 9"},
		{`{"v":1,"stop":{"reason":""},"extra":1}`, "unknown field"},
		{`{"v":1,"stop":{"reason":""}} {}`, "data after"},
		{`{"v":1,"leave":{"node":"a b","incarnation":"1"}}`, "node"},
		{`{"v":1,"report":{"node":"a","gen":1,"step":0}}`, "step: 0"},
		{`{"v":1,"report":{"node":"a","gen":1,"step":1,"step_seconds":-1}}`, "step_seconds"},
		{`{"v":1,"report":{"node":"a","gen":1,"step":1,"checksum":"XYZ"}}`, "checksum"},
		{`{"v":1,"report":{"node":"a","gen":1,"step":1,"losses":{"a b":1}}}`, "losses"},
		{`{"v":1,"report":{"node":"a","gen":1,"step":1,"losses":{"G":1e300}}}`, "within"},
		{`{"v":1,"report":{"node":"a","gen":1,"step":281474976710657}}`, "2^48"},
		{`{"v":1,"commit_checkpoint":{"node":"a","gen":1,"manifest":{"step":1,"recipe":"d","crdgo_version":"v","files":[{"name":"../x","size":1,"sha256":"00"}]}}}`, "manifest.files"},
		{`{"v":1,"join":{"node":"a","incarnation":"1","host":"h","crdgo_version":"v\u0000","recipe_hash":"","dataset_hash":""}}`, "crdgo_version"},
		{strings.Repeat(" ", MaxMessageBytes+1), "limit"},
	} {
		_, err := Decode([]byte(tt.in))
		if err == nil || !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Decode(%.80s) = %v; want ErrInvalid mentioning %q", tt.in, err, tt.want)
		}
	}
	if _, err := Encode(NewMessage(Report{Node: "a", Losses: map[string]float64{"G": nan()}})); err == nil {
		t.Error("Encode of a NaN loss succeeded; want an error")
	}
}

func nan() float64 { var z float64; return z / z }

// FuzzDecode: any input decodes or fails cleanly; whatever decodes encodes
// and decodes to the same message, and apply never panics on its command.
func FuzzDecode(f *testing.F) {
	for _, m := range validMessages() {
		b, _ := Encode(m)
		f.Add(b)
	}
	f.Add([]byte(`{"v":1,"report":{"node":"a","gen":1,"step":1,"losses":{"G":1e308}}}`))
	f.Add([]byte(`{"v":1,"event":{"assignment":{"job":"j","gen":1,"start":1,"rank":5,"world":2,"ring":["a"],"hosts":[],"split":[],"global_batch":1}}}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Decode(b)
		if err != nil {
			return
		}
		enc, err := Encode(m)
		if err != nil {
			t.Fatalf("decoded %q but cannot encode it: %v", b, err)
		}
		m2, err := Decode(enc)
		if err != nil {
			t.Fatalf("re-decode of %s: %v", enc, err)
		}
		if enc2, _ := Encode(m2); string(enc2) != string(enc) {
			t.Fatalf("round trip differs:\n%s\n%s", enc, enc2)
		}
		if c := m.Command(); c != nil {
			s, _ := apply(State{}, CreateJob{Spec: testSpec()})
			s, _ = apply(s, join("a"))
			s, _ = apply(s, join("b"))
			apply(s, c)
		}
	})
}

// FuzzDecodeReply: replies decode or fail cleanly, and round-trip.
func FuzzDecodeReply(f *testing.F) {
	spec := testSpec()
	a := Assignment{Job: "demo", Gen: 1, Start: 1, Rank: 0, World: 1, Ring: []string{"a"}, Hosts: []string{"h"}, Split: Split(8, 1), GlobalBatch: 8}
	for _, r := range []Reply{
		{V: 1, Code: CodeOK, Status: Running, Gen: 2, Committed: 9, Spec: &spec, Assignment: &a},
		{V: 1, Code: CodeRejected, Error: "join refused", Field: "recipe_hash"},
		{V: 1, Code: CodeNoLeader},
	} {
		b, _ := json.Marshal(r)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := DecodeReply(b)
		if err != nil {
			return
		}
		enc, err := Encode(r)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := DecodeReply(enc); err != nil {
			t.Fatalf("re-decode of %s: %v", enc, err)
		}
	})
}
