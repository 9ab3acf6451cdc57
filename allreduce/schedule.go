package allreduce

import "fmt"

// Plan is the ring schedule of one operation: how a buffer of Len elements is cut
// into World segments and each segment into chunks, and which segment a rank sends
// and receives at each ring step. It is pure: no clock, no network, the same value
// on every rank, so the schedule is tested without a transport.
//
// The ring has 2(World-1) steps. At step k, rank r sends segment (r-k) mod World to
// rank r+1 and receives segment (r-k-1) mod World from rank r-1. During the first
// World-1 steps (reduce-scatter) the received chunk is added into the local one;
// during the last World-1 steps (all-gather) it overwrites it. What a rank receives
// at step k is exactly what it sends at step k+1, so a received chunk is forwarded
// as soon as it is applied: the ring runs as a pipeline of chunks.
//
// Segment s is reduced in ring order starting at its first holder, rank s:
// ((x[s] + x[s+1]) + x[s+2]) + … + x[s+World-1] (ranks mod World). Rank s-1 ends
// the reduce-scatter holding the final bytes of segment s and the all-gather copies
// those bytes everywhere, so every rank ends with bit-identical buffers.
type Plan struct {
	World int // ranks in the ring, >= 1
	Len   int // elements in the buffer, >= 0
	Chunk int // most elements in one chunk, >= 1
}

// NewPlan returns the plan for world ranks, a buffer of length elements and chunks
// of at most chunk elements. It panics on arguments no caller may pass (world < 1,
// length < 0, chunk < 1): those are bugs, not input.
func NewPlan(world, length, chunk int) Plan {
	if world < 1 || length < 0 || chunk < 1 {
		panic(fmt.Sprintf("allreduce: bad plan world=%d len=%d chunk=%d", world, length, chunk))
	}
	return Plan{World: world, Len: length, Chunk: chunk}
}

// Steps is the number of ring steps, 2(World-1).
func (p Plan) Steps() int { return 2 * (p.World - 1) }

// Reduces reports whether ring step k adds the received chunk (reduce-scatter)
// rather than copying it (all-gather).
func (p Plan) Reduces(k int) bool { return k < p.World-1 }

// SendSeg is the segment rank sends at ring step k.
func (p Plan) SendSeg(rank, k int) int { return mod(rank-k, p.World) }

// RecvSeg is the segment rank receives at ring step k.
func (p Plan) RecvSeg(rank, k int) int { return mod(rank-k-1, p.World) }

// Owner is the rank that holds the fully reduced segment s after the
// reduce-scatter: the last rank of its reduction order.
func (p Plan) Owner(s int) int { return mod(s-1, p.World) }

// Segment returns the element range [lo, hi) of segment s. Segments differ in
// length by at most one element; the first Len mod World are the longer ones.
func (p Plan) Segment(s int) (lo, hi int) {
	q, r := p.Len/p.World, p.Len%p.World
	lo = s*q + min(s, r)
	hi = lo + q
	if s < r {
		hi++
	}
	return lo, hi
}

// Chunks is the number of chunks of segment s (0 for an empty segment).
func (p Plan) Chunks(s int) int {
	lo, hi := p.Segment(s)
	return (hi - lo + p.Chunk - 1) / p.Chunk
}

// ChunkRange returns the element range [lo, hi) of chunk j of segment s.
func (p Plan) ChunkRange(s, j int) (lo, hi int) {
	slo, shi := p.Segment(s)
	lo = slo + j*p.Chunk
	return lo, min(lo+p.Chunk, shi)
}

// Sends is the number of chunks rank sends over the whole operation.
func (p Plan) Sends(rank int) int {
	n := 0
	for k := 0; k < p.Steps(); k++ {
		n += p.Chunks(p.SendSeg(rank, k))
	}
	return n
}

func mod(a, n int) int {
	a %= n
	if a < 0 {
		a += n
	}
	return a
}
