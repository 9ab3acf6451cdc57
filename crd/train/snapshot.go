package train

import (
	"fmt"
	"math/rand/v2"

	"github.com/crdgo/crdgo/crd/tensor"
)

// Snapshot is a trainer's whole state in host memory: what a checkpoint
// holds, without the files. A node keeps the snapshot of its last committed
// step to roll back to; tests restore one trainer's state into another.
type Snapshot struct {
	state  State
	rng    []byte
	nets   []netSnapshot // in netFiles order
	pools  [2][][]float32
	shapes [2]tensor.Shape
}

type netSnapshot struct {
	name            string
	values, buffers []float32
	m, v            []float32
	steps           int
}

func (t *Trainer) download(x *tensor.Tensor) []float32 {
	if x == nil {
		return nil
	}
	out := make([]float32, x.Numel())
	t.be.Download(out, x)
	return out
}

// Snapshot copies the trainer's state: every network's parameters and
// buffers, every optimizer's moments and step count, the image pools, the
// pools' generator and the schedule position.
func (t *Trainer) Snapshot() *Snapshot {
	rng, err := t.pcg.MarshalBinary()
	if err != nil { // PCG's MarshalBinary cannot fail
		panic(fmt.Sprintf("train: snapshot: rng: %v", err))
	}
	s := &Snapshot{state: t.state, rng: rng}
	for _, nf := range t.netFiles() {
		ps := nf.net.Params()
		ns := netSnapshot{name: nf.name, values: t.download(ps.Values()), buffers: t.download(ps.Buffers())}
		if nf.opt != nil {
			m, v, steps := nf.opt.State()
			ns.m, ns.v, ns.steps = t.download(m), t.download(v), steps
		}
		s.nets = append(s.nets, ns)
	}
	for i, p := range []*imagePool{t.poolA, t.poolB} {
		if p == nil {
			continue
		}
		for _, img := range p.images {
			s.pools[i] = append(s.pools[i], append([]float32(nil), img...))
		}
		s.shapes[i] = p.shape.Clone()
	}
	return s
}

// Step is the step the snapshot was taken after.
func (s *Snapshot) Step() int { return s.state.Step }

// Restore makes the trainer's state the snapshot's. The snapshot must come
// from a trainer of the same recipe (the same networks); it stays valid and
// can be restored again.
func (t *Trainer) Restore(s *Snapshot) error {
	nfs := t.netFiles()
	if len(nfs) != len(s.nets) {
		return fmt.Errorf("train: restore: snapshot of %d networks, trainer has %d", len(s.nets), len(nfs))
	}
	for i, nf := range nfs {
		ns := s.nets[i]
		ps := nf.net.Params()
		if ns.name != nf.name || len(ns.values) != ps.Values().Numel() || (ps.Buffers() != nil && len(ns.buffers) != ps.Buffers().Numel()) {
			return fmt.Errorf("train: restore: snapshot network %d is %s (%d values), trainer's is %s (%d)", i, ns.name, len(ns.values), nf.name, ps.Values().Numel())
		}
	}
	pcg := &rand.PCG{}
	if err := pcg.UnmarshalBinary(s.rng); err != nil {
		return fmt.Errorf("train: restore: rng: %w", err)
	}
	for i, nf := range nfs {
		ns := s.nets[i]
		ps := nf.net.Params()
		t.be.Upload(ps.Values(), ns.values)
		if ps.Buffers() != nil {
			t.be.Upload(ps.Buffers(), ns.buffers)
		}
		if nf.opt != nil {
			if err := nf.opt.SetState(ns.m, ns.v, ns.steps); err != nil {
				return fmt.Errorf("train: restore: %s: %w", nf.name, err)
			}
		}
	}
	for i, p := range []*imagePool{t.poolA, t.poolB} {
		if p == nil {
			continue
		}
		p.images = p.images[:0]
		for _, img := range s.pools[i] {
			p.images = append(p.images, append([]float32(nil), img...))
		}
		p.shape = s.shapes[i].Clone()
	}
	*t.pcg = *pcg
	t.state = s.state
	return nil
}
