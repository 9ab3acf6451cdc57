package allreduce

import (
	"math"
	"math/rand/v2"
	"testing"
	"testing/quick"
)

// Segments tile the buffer and chunks tile each segment: every element is in
// exactly one chunk.
func TestPlanCoversEachElementOnce(t *testing.T) {
	for world := 1; world <= 9; world++ {
		for _, n := range []int{0, 1, 2, world - 1, world, world + 1, 7, 64, 65, 1000} {
			for _, chunk := range []int{1, 3, 8, 1 << 20} {
				if n < 0 {
					continue
				}
				p := NewPlan(world, n, chunk)
				seen := make([]int, n)
				for s := range world {
					lo, hi := p.Segment(s)
					if l := hi - lo; l < n/world || l > n/world+1 {
						t.Errorf("Plan(world=%d, n=%d).Segment(%d) has %d elements; want %d or %d", world, n, s, l, n/world, n/world+1)
					}
					for j := range p.Chunks(s) {
						clo, chi := p.ChunkRange(s, j)
						if clo < lo || chi > hi || chi <= clo || chi-clo > chunk {
							t.Fatalf("Plan(world=%d, n=%d, chunk=%d).ChunkRange(%d, %d) = [%d,%d) outside segment [%d,%d) or empty or too long", world, n, chunk, s, j, clo, chi, lo, hi)
						}
						for i := clo; i < chi; i++ {
							seen[i]++
						}
					}
				}
				for i, c := range seen {
					if c != 1 {
						t.Fatalf("Plan(world=%d, n=%d, chunk=%d): element %d in %d chunks; want 1", world, n, chunk, i, c)
					}
				}
			}
		}
	}
}

// What a rank receives at step k it sends at step k+1: that is what lets the
// receiver forward a chunk as soon as it is applied.
func TestPlanForwardsWhatItReceives(t *testing.T) {
	for world := 1; world <= 9; world++ {
		p := NewPlan(world, 100, 7)
		for r := range world {
			for k := 0; k+1 < p.Steps(); k++ {
				if got, want := p.SendSeg(r, k+1), p.RecvSeg(r, k); got != want {
					t.Errorf("world %d rank %d: SendSeg(k=%d) = %d; want RecvSeg(k=%d) = %d", world, r, k+1, got, k, want)
				}
				// The left neighbour sends at step k what we receive at step k.
				if got, want := p.SendSeg(mod(r-1, world), k), p.RecvSeg(r, k); got != want {
					t.Errorf("world %d rank %d step %d: left sends segment %d; we receive %d", world, r, k, got, want)
				}
			}
		}
	}
}

// simulate runs the plan on copies of inputs with perfect links, step by step, the
// way the Reducer applies frames, and returns every rank's buffer.
func simulate(p Plan, inputs [][]float32) [][]float32 {
	bufs := make([][]float32, p.World)
	for r := range bufs {
		bufs[r] = append([]float32(nil), inputs[r]...)
	}
	for k := range p.Steps() {
		// All sends of a step read the state before the step's receives write it.
		sent := make([][]float32, p.World)
		for r := range p.World {
			lo, hi := p.Segment(p.SendSeg(r, k))
			sent[r] = append([]float32(nil), bufs[r][lo:hi]...)
		}
		for r := range p.World {
			from := mod(r-1, p.World)
			lo, hi := p.Segment(p.RecvSeg(r, k))
			for i := lo; i < hi; i++ {
				if p.Reduces(k) {
					bufs[r][i] = sent[from][i-lo] + bufs[r][i]
				} else {
					bufs[r][i] = sent[from][i-lo]
				}
			}
		}
	}
	return bufs
}

// refSum is the documented reduction order, computed directly: segment s is
// x[s] + x[s+1] + … + x[s+world-1] (ranks mod world), left to right, in float32.
func refSum(p Plan, inputs [][]float32) []float32 {
	out := make([]float32, p.Len)
	for s := range p.World {
		lo, hi := p.Segment(s)
		for i := lo; i < hi; i++ {
			acc := inputs[s][i]
			for d := 1; d < p.World; d++ {
				acc += inputs[mod(s+d, p.World)][i]
			}
			out[i] = acc
		}
	}
	return out
}

// The ring schedule, run without a network, gives every rank the bits of the
// documented reduction order.
func TestPlanSimulationEqualsReferenceOrder(t *testing.T) {
	f := func(seed uint64, w, n uint8) bool {
		world, length := int(w%8)+1, int(n)
		rng := rand.New(rand.NewPCG(seed, 0))
		inputs := randomInputs(rng, world, length)
		p := NewPlan(world, length, 3)
		want := refSum(p, inputs)
		for r, got := range simulate(p, inputs) {
			for i := range want {
				if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
					t.Logf("seed %d world %d n %d: rank %d elem %d = %v; want %v", seed, world, length, r, i, got[i], want[i])
					return false
				}
			}
		}
		return true
	}
	if err := quick.Check(f, &quick.Config{MaxCount: 300, Rand: newQuickRand()}); err != nil {
		t.Fatal(err)
	}
}

func TestPlanOwnerHoldsTheReducedSegment(t *testing.T) {
	for world := 2; world <= 8; world++ {
		p := NewPlan(world, 10*world, 4)
		for r := range world {
			// After reduce-scatter, rank r received segment RecvSeg(r, world-2) last.
			if s := p.RecvSeg(r, world-2); p.Owner(s) != r {
				t.Errorf("world %d: rank %d finishes segment %d, Owner = %d", world, r, s, p.Owner(s))
			}
		}
	}
}

func TestPlanSends(t *testing.T) {
	// world 3, 10 elements in chunks of 2: segments of 4, 3, 3 elements, so 2, 2, 2
	// chunks; each rank sends 4 steps x 2 chunks.
	p := NewPlan(3, 10, 2)
	for r := range 3 {
		if got := p.Sends(r); got != 8 {
			t.Errorf("Plan(3, 10, 2).Sends(%d) = %d; want 8", r, got)
		}
	}
	if got := NewPlan(1, 10, 2).Sends(0); got != 0 {
		t.Errorf("Plan(1, 10, 2).Sends(0) = %d; want 0", got)
	}
}
