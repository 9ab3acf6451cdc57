package train

import (
	"context"
	"fmt"
	"math/rand/v2"

	"github.com/crdgo/crdgo/crd/data"
)

// GradSync is how the data-parallel ranks of a run combine values: each
// phase's flat gradient buffer before its optimizer step, the statistics of
// synchronised batch norm, the CycleGAN image pool's fakes, the step's losses.
// *allreduce.Reducer satisfies it; in one process it is nil.
//
// Every rank must make the same calls in the same order with the same lengths;
// the trainer does, because every rank runs the same schedule on its part of
// the same global batch (docs/crd.md, "Data-parallel training").
type GradSync interface {
	// World is the number of ranks, Rank this one's index in [0, World).
	World() int
	Rank() int
	// SumInPlace replaces buf, on every rank, with the element-wise sum of the
	// ranks' buffers; every rank ends with the same bits. step and phase name
	// the operation (on the wire and in errors).
	SumInPlace(ctx context.Context, step uint64, phase string, buf []float32) error
}

// share is a rank's part of the global-batch loss (docs/crd.md, "Data-parallel
// training"): a term that is a mean over the batch is weighted b_r/B, a term
// that is a sum over the images of the batch (the CRD terms, docs/crd.md §9 D10 and
// D11) is taken as it is. Summed over the ranks, the shares' gradients are the
// gradient one process computes on the global batch. A placeholder rank (an
// empty part) has both weights 0.
type share struct {
	mean float32 // for batch means: b_r/B
	sum  float32 // for per-image sums: 1
}

// shareOf is the share of a rank that holds n of the global batch's total
// examples; n = 0 is a placeholder.
func shareOf(n, total int) share {
	if n == 0 || total == 0 {
		return share{}
	}
	return share{mean: float32(n) / float32(total), sum: 1}
}

// stepSync is the data-parallel context of one step: the GradSync, the
// operation context (not the run's: a stop request must not cut a step in
// half) and the step number, plus the first error, which the step checks
// before any optimizer moves. It implements nn.Collective for synchronised
// batch norm.
type stepSync struct {
	ctx         context.Context
	sync        GradSync
	step        uint64
	contributes bool
	ops         int // collective calls made by ops on the tape, for their names
	err         error
}

func (s *stepSync) World() int {
	if s.sync == nil {
		return 1
	}
	return s.sync.World()
}

func (s *stepSync) Rank() int {
	if s.sync == nil {
		return 0
	}
	return s.sync.Rank()
}

func (s *stepSync) Contributes() bool { return s.contributes }

// sum sums buf across the ranks under phase; after a failure it does nothing
// (the ring is broken: waiting on it again would only wait out its deadline).
func (s *stepSync) sum(phase string, buf []float32) error {
	if s.sync == nil || s.sync.World() == 1 {
		return s.err
	}
	if s.err != nil {
		return s.err
	}
	if err := s.sync.SumInPlace(s.ctx, s.step, phase, buf); err != nil {
		s.err = fmt.Errorf("train: step %d: %s across %d ranks: %w", s.step, phase, s.sync.World(), err)
	}
	return s.err
}

// Sum is nn.Collective's Sum (batch norm's backward sums).
func (s *stepSync) Sum(buf []float32) {
	s.ops++
	s.sum(fmt.Sprintf("bn-%d", s.ops), buf)
}

// AllGather is nn.Collective's AllGather (batch norm's moments): every rank
// puts its slice at its own place in a zeroed buffer and the ranks sum it.
// Adding zeros is exact, so the result is the ranks' slices, bit for bit, at
// twice the traffic of a true all-gather — these are a few hundred floats.
func (s *stepSync) AllGather(local []float32) []float32 {
	s.ops++
	w, r := s.World(), s.Rank()
	out := make([]float32, w*len(local))
	copy(out[r*len(local):], local)
	s.sum(fmt.Sprintf("bn-%d", s.ops), out)
	return out
}

// gather returns the global batch's images (total×per floats) from each rank's
// part (n×per at offset) the same way.
func (s *stepSync) gather(phase string, local []float32, per, offset, total int) ([]float32, error) {
	if s.World() == 1 {
		return local, s.err
	}
	out := make([]float32, total*per)
	copy(out[offset*per:], local)
	return out, s.sum(phase, out)
}

// placeholder returns the batch a rank with an empty part of a global batch
// runs: one example of fixed noise (not zeros: a constant image is a
// degenerate input for CRD and the norms), so that the rank takes part in
// every collective operation of the step; its share is 0 and its gradients are
// cleared before they are summed.
func placeholder(b *data.Batch) *data.Batch {
	per := b.C * b.H * b.W
	g := rand.New(rand.NewPCG(0x91ace, 0x40d))
	noise := func() []float32 {
		x := make([]float32, per)
		for i := range x {
			x[i] = float32(g.Float64()*2 - 1)
		}
		return x
	}
	p := &data.Batch{N: 1, C: b.C, H: b.H, W: b.W, A: noise(), Epoch: b.Epoch, Cursor: b.Cursor, Total: b.Total, Offset: b.Offset}
	if b.B != nil {
		p.B = noise()
	}
	return p
}
