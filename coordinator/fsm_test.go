package coordinator

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

func testSpec() Spec {
	s := DefaultSpec()
	s.Job, s.Recipe, s.RecipeHash, s.Dataset, s.DatasetHash, s.Version = "demo", "demo", "r1", "shapes", "d1", "v1"
	s.GlobalBatch, s.MinNodes, s.ChecksumEvery = 8, 2, 0
	return s
}

func join(id string) Join {
	return Join{Node: id, Incarnation: "1", Host: id + ".local", Version: "v1", RecipeHash: "r1", DatasetHash: "d1"}
}

// run applies cmds from the empty state and returns the final state and all effects.
func run(t *testing.T, cmds ...Command) (State, []Effect) {
	t.Helper()
	var s State
	var all []Effect
	for _, c := range cmds {
		var eff []Effect
		s, eff = apply(s, c)
		all = append(all, eff...)
	}
	return s, all
}

func effectsOf[E Effect](eff []Effect) []E {
	var out []E
	for _, e := range eff {
		if x, ok := e.(E); ok {
			out = append(out, x)
		}
	}
	return out
}

func TestSplit(t *testing.T) {
	for _, tc := range []struct {
		b, w int
		want []Range
	}{
		{4, 1, []Range{{0, 4}}},
		{4, 2, []Range{{0, 2}, {2, 4}}},
		{4, 3, []Range{{0, 1}, {1, 2}, {2, 4}}},
		{5, 3, []Range{{0, 1}, {1, 3}, {3, 5}}},
		{3, 3, []Range{{0, 1}, {1, 2}, {2, 3}}},
	} {
		if got := Split(tc.b, tc.w); !slices.Equal(got, tc.want) {
			t.Errorf("Split(%d, %d) = %v; want %v", tc.b, tc.w, got, tc.want)
		}
	}
	// Property: the ranges tile [0, b) in order and differ in size by at most one.
	for b := 1; b <= 64; b++ {
		for w := 1; w <= b; w++ {
			rs := Split(b, w)
			lo, hi := b, 0
			for r, x := range rs {
				if r == 0 && x.Lo != 0 || r > 0 && x.Lo != rs[r-1].Hi || x.Hi <= x.Lo {
					t.Fatalf("Split(%d, %d) = %v: rank %d does not continue the tiling", b, w, rs, r)
				}
				lo, hi = min(lo, x.Hi-x.Lo), max(hi, x.Hi-x.Lo)
			}
			if rs[w-1].Hi != b || hi-lo > 1 {
				t.Fatalf("Split(%d, %d) = %v: want a tiling of [0,%d) with sizes within 1", b, w, rs, b)
			}
		}
	}
}

// Scenarios: a command sequence and what must hold after it.
func TestScenarios(t *testing.T) {
	spec := testSpec()
	mismatch := func(f func(*Join)) Join { j := join("n2"); f(&j); return j }
	for _, tc := range []struct {
		name  string
		cmds  []Command
		check func(t *testing.T, s State, eff []Effect)
	}{
		{"join before a job", []Command{join("n1")}, func(t *testing.T, s State, eff []Effect) {
			if r := effectsOf[Rejected](eff); len(r) != 1 || !strings.Contains(r[0].Reason, "no job") {
				t.Errorf("effects %v; want one Rejected saying there is no job", eff)
			}
		}},
		{"version mismatch names the field", []Command{CreateJob{spec}, mismatch(func(j *Join) { j.Version = "v9" })}, func(t *testing.T, s State, eff []Effect) {
			r := effectsOf[Rejected](eff)
			if len(r) != 1 || r[0].Field != "crdgo_version" || !strings.Contains(r[0].Reason, `"v9"`) || !strings.Contains(r[0].Reason, `"v1"`) {
				t.Errorf("Rejected = %+v; want field crdgo_version with both values", r)
			}
		}},
		{"recipe hash mismatch", []Command{CreateJob{spec}, mismatch(func(j *Join) { j.RecipeHash = "x" })}, func(t *testing.T, s State, eff []Effect) {
			if r := effectsOf[Rejected](eff); len(r) != 1 || r[0].Field != "recipe_hash" {
				t.Errorf("Rejected = %+v; want field recipe_hash", r)
			}
		}},
		{"dataset hash mismatch", []Command{CreateJob{spec}, mismatch(func(j *Join) { j.DatasetHash = "x" })}, func(t *testing.T, s State, eff []Effect) {
			if r := effectsOf[Rejected](eff); len(r) != 1 || r[0].Field != "dataset_hash" {
				t.Errorf("Rejected = %+v; want field dataset_hash", r)
			}
		}},
		{"min nodes opens generation 1", []Command{CreateJob{spec}, join("a"), join("b")}, func(t *testing.T, s State, eff []Effect) {
			a := effectsOf[Assign](eff)
			if len(a) != 1 || a[0].Assignments[1].Rank != 1 || a[0].Assignments[1].Start != 1 || s.Gen.Gen != 1 || s.Status != Running {
				t.Errorf("state %s, assigns %+v; want one generation 1 starting at step 1", describe(s), a)
			}
		}},
		{"duplicate join is a retry", []Command{CreateJob{spec}, join("a"), join("b"), join("b")}, func(t *testing.T, s State, eff []Effect) {
			if n := len(effectsOf[Assign](eff)); n != 1 || s.Gen.Gen != 1 {
				t.Errorf("%d assigns, gen %d; want 1 and 1", n, s.Gen.Gen)
			}
		}},
		{"restarted node opens a generation and keeps its rank", []Command{CreateJob{spec}, join("a"), join("b"), join("c"),
			Join{Node: "a", Incarnation: "2", Host: "a.local", Version: "v1", RecipeHash: "r1", DatasetHash: "d1"}}, func(t *testing.T, s State, eff []Effect) {
			if s.Gen.Gen != 3 || s.Gen.Rank("a") != 0 {
				t.Errorf("gen %d ring %v; want gen 3 with a as rank 0", s.Gen.Gen, s.Gen.Ring)
			}
		}},
		{"stale timeout is a no-op", []Command{CreateJob{spec}, join("a"), join("b"), join("c"), HeartbeatTimeout{Node: "c", Gen: 1}}, func(t *testing.T, s State, eff []Effect) {
			if m, _ := s.Member("c"); m.State != MemberActive || s.Gen.Gen != 2 {
				t.Errorf("c is %s in gen %d; want active in gen 2", m.State, s.Gen.Gen)
			}
		}},
		{"report from an older generation is counted", []Command{CreateJob{spec}, join("a"), join("b"), join("c"),
			Report{Node: "a", Gen: 1, Step: 1}, Report{Node: "zz", Gen: 2, Step: 1}}, func(t *testing.T, s State, eff []Effect) {
			if s.Dropped != (Dropped{Stale: 1, Foreign: 1}) || len(s.Pending) != 0 {
				t.Errorf("dropped %+v pending %v; want 1 stale, 1 foreign, nothing pending", s.Dropped, s.Pending)
			}
		}},
		{"losses are summed and times maxed", []Command{CreateJob{spec}, join("a"), join("b"),
			Report{Node: "a", Gen: 1, Step: 1, Losses: map[string]float64{"G": 1, "D": 2}, StepTime: 0.5, AllreduceTime: 0.1},
			Report{Node: "b", Gen: 1, Step: 1, Losses: map[string]float64{"G": 3}, StepTime: 0.25, AllreduceTime: 0.2}}, func(t *testing.T, s State, eff []Effect) {
			c := effectsOf[Committed](eff)
			if len(c) != 1 || c[0].Point.Losses["G"] != 4 || c[0].Point.Losses["D"] != 2 || c[0].Point.StepTime != 0.5 || c[0].Point.AllreduceTime != 0.2 {
				t.Errorf("Committed = %+v; want G 4, D 2, step 0.5 s, allreduce 0.2 s", c)
			}
			if len(s.History) != 1 || s.History[0].Step != 1 {
				t.Errorf("History = %+v; want step 1", s.History)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, eff := run(t, tc.cmds...)
			tc.check(t, s, eff)
		})
	}
}

// randomCommands returns a seeded, plausible mix of joins, leaves, restarts,
// timeouts, reports (current, stale, repeated) and checkpoints that a model of
// honest nodes would send, given the state so far.
func randomCommand(rng *rand.Rand, s State) Command {
	ids := []string{"a", "b", "c", "d", "e"}
	id := ids[rng.IntN(len(ids))]
	switch p := rng.IntN(100); {
	case p < 6:
		j := join(id)
		j.Incarnation = fmt.Sprint(rng.IntN(2))
		return j
	case p < 9:
		return Leave{Node: id, Incarnation: fmt.Sprint(rng.IntN(2))}
	case p < 12:
		return HeartbeatTimeout{Node: id, Gen: s.Gen.Gen - uint64(rng.IntN(2))}
	case p < 16 && len(s.Gen.Ring) > 0:
		return CommitCheckpoint{Node: s.Gen.Ring[0], Gen: s.Gen.Gen, Manifest: Manifest{
			Step: s.Committed + uint64(rng.IntN(3)), Recipe: "demo", Version: "v1",
			Files: []ManifestFile{{Name: "x.safetensors", Size: 1, SHA256: strings.Repeat("a", 64)}}}}
	default:
		if len(s.Gen.Ring) == 0 {
			return join(id)
		}
		node := s.Gen.Ring[rng.IntN(len(s.Gen.Ring))]
		step := s.Committed + 1 + uint64(rng.IntN(2))
		if rng.IntN(10) == 0 {
			step = s.Committed // a repeat
		}
		return Report{Node: node, Gen: s.Gen.Gen - uint64(rng.IntN(8)/7), Step: step,
			Losses: map[string]float64{"G": float64(step)}, Checksum: "ab"}
	}
}

// Property: over random command sequences, apply is deterministic, never
// mutates the state it was given, commits steps 1, 2, 3 … with no gap or
// repeat, and every generation's ring and split are consistent.
func TestApplyProperties(t *testing.T) {
	for seed := uint64(1); seed <= 12; seed++ {
		rng := rand.New(rand.NewPCG(seed, 0))
		spec := testSpec()
		spec.MaxSteps, spec.CheckpointEvery, spec.ChecksumEvery = 60, 5, 3
		s, _ := apply(State{}, CreateJob{spec})
		var committed []uint64
		for i := range 500 {
			c := randomCommand(rng, s)
			before, _ := json.Marshal(s)
			next, eff := apply(s, c)
			again, eff2 := apply(s, c)
			after, _ := json.Marshal(s)
			if string(before) != string(after) {
				t.Fatalf("seed %d command %d %#v: apply mutated its argument", seed, i, c)
			}
			n1, _ := json.Marshal(next)
			n2, _ := json.Marshal(again)
			if string(n1) != string(n2) || len(eff) != len(eff2) {
				t.Fatalf("seed %d command %d %#v: two applies differ", seed, i, c)
			}
			for _, e := range eff {
				if c, ok := e.(Committed); ok {
					committed = append(committed, c.Point.Step)
				}
			}
			s = next
			if s.Status == Running {
				if len(s.Gen.Ring) == 0 || len(s.Gen.Split) != len(s.Gen.Ring) || s.Gen.Split[len(s.Gen.Split)-1].Hi != spec.GlobalBatch {
					t.Fatalf("seed %d command %d: running with ring %v split %v", seed, i, s.Gen.Ring, s.Gen.Split)
				}
				for _, id := range s.Gen.Ring {
					if m, _ := s.Member(id); m.State != MemberActive {
						t.Fatalf("seed %d command %d: ring member %s is %s", seed, i, id, m.State)
					}
				}
			}
		}
		for i, st := range committed {
			if st != uint64(i+1) {
				t.Fatalf("seed %d: committed steps %v: position %d is %d; want %d", seed, committed, i, st, i+1)
			}
		}
		if uint64(len(committed)) != s.Committed {
			t.Fatalf("seed %d: %d Committed effects, state says %d", seed, len(committed), s.Committed)
		}
		t.Logf("seed %d: committed %d steps, gen %d, status %s", seed, s.Committed, s.Gen.Gen, s.Status)
	}
}
