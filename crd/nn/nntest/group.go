// Package nntest holds test harnesses for code built on package nn: an
// in-memory group of data-parallel ranks.
package nntest

import (
	"context"
	"fmt"
	"sync"
)

// Group is an in-memory group of world ranks that exchange values through
// shared memory, for tests of data-parallel code: each rank runs in its own
// goroutine and calls its Rank's methods in the same order as the others. Sums
// are taken in rank order, in float32, so every rank gets the same bits.
//
// It satisfies nn.Collective and the trainer's gradient-sync interface
// (SumInPlace), so tests need neither a network nor package allreduce.
type Group struct {
	world   int
	mu      sync.Mutex
	cond    *sync.Cond
	round   int         // completed exchanges
	parts   [][]float32 // contributions to the exchange in progress
	arrived int
	done    [][]float32 // the contributions of the last completed exchange
	ops     []string    // what each rank called in the exchange in progress
	err     error
}

// NewGroup returns a group of world ranks.
func NewGroup(world int) *Group {
	if world < 1 {
		panic(fmt.Sprintf("nntest: NewGroup(%d): want ≥ 1 rank", world))
	}
	g := &Group{world: world, parts: make([][]float32, world), ops: make([]string, world)}
	g.cond = sync.NewCond(&g.mu)
	return g
}

// Rank returns rank r's handle.
func (g *Group) Rank(r int) *Rank {
	if r < 0 || r >= g.world {
		panic(fmt.Sprintf("nntest: Rank(%d) of a group of %d", r, g.world))
	}
	return &Rank{g: g, rank: r, contributes: true}
}

// exchange deposits rank's contribution and returns every rank's once all
// have arrived. Ranks that call different operations (op) or lengths get an
// error: the same mistake a real ring reports as a mismatch.
func (g *Group) exchange(rank int, op string, local []float32) ([][]float32, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.err != nil {
		return nil, g.err
	}
	round := g.round
	g.parts[rank] = append([]float32(nil), local...)
	g.ops[rank] = fmt.Sprintf("%s len %d", op, len(local))
	g.arrived++
	if g.arrived == g.world {
		for r := range g.world {
			if g.ops[r] != g.ops[0] {
				g.err = fmt.Errorf("nntest: exchange %d: rank 0 called %s, rank %d called %s", round, g.ops[0], r, g.ops[r])
			}
		}
		g.done, g.parts = g.parts, make([][]float32, g.world)
		g.arrived = 0
		g.round++
		g.cond.Broadcast()
	} else {
		for g.round == round && g.err == nil {
			g.cond.Wait()
		}
	}
	if g.err != nil {
		return nil, g.err
	}
	return g.done, nil
}

// Rank is one rank of a Group. Its methods must be called from one goroutine.
type Rank struct {
	g           *Group
	rank        int
	contributes bool
	// Perturb, when set, is applied to this rank's buffer before every
	// SumInPlace: a way to make one rank wrong and check that a test notices.
	Perturb func(phase string, buf []float32)
}

// World is the group's size.
func (r *Rank) World() int { return r.g.world }

// Rank is this rank's index.
func (r *Rank) Rank() int { return r.rank }

// SetContributes sets what Contributes reports.
func (r *Rank) SetContributes(c bool) { r.contributes = c }

// Contributes reports what SetContributes set (true at first).
func (r *Rank) Contributes() bool { return r.contributes }

// AllGather returns every rank's local, concatenated in rank order. It panics
// when the ranks disagree (a test bug).
func (r *Rank) AllGather(local []float32) []float32 {
	parts, err := r.g.exchange(r.rank, "allgather", local)
	if err != nil {
		panic(err)
	}
	var out []float32
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// Sum adds buf across the ranks in place, in rank order. It panics when the
// ranks disagree (a test bug).
func (r *Rank) Sum(buf []float32) {
	if err := r.sum("sum", buf); err != nil {
		panic(err)
	}
}

// SumInPlace is Sum with the trainer's signature; ranks that disagree on the
// step, phase or length get an error.
func (r *Rank) SumInPlace(ctx context.Context, step uint64, phase string, buf []float32) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if r.Perturb != nil {
		r.Perturb(phase, buf)
	}
	return r.sum(fmt.Sprintf("step %d phase %s", step, phase), buf)
}

func (r *Rank) sum(op string, buf []float32) error {
	parts, err := r.g.exchange(r.rank, op, buf)
	if err != nil {
		return err
	}
	clear(buf)
	for _, p := range parts {
		for i, v := range p {
			buf[i] += v
		}
	}
	return nil
}
