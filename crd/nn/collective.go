package nn

// Collective combines values across the data-parallel ranks that run the same
// step, each on its part of one global batch. Batch norm uses it to normalise
// with the statistics of the global batch (synchronised batch norm), so that
// w ranks compute what one process computes on the whole batch. Every rank
// must make the same calls in the same order with the same lengths: ops call it
// in the order the forward and backward passes reach them, which is the same
// on every rank.
//
// Ops cannot return errors, so a Collective never does: an implementation that
// fails (a peer is gone, a deadline passed) records the error, returns this
// rank's own values in its place (AllGather: zeros for the other ranks) and
// lets the caller fail the step after the backward pass, before any parameter
// changes.
type Collective interface {
	// World is the number of ranks, Rank this one's index in [0, World).
	World() int
	Rank() int
	// AllGather returns the local slices of every rank (all the same length),
	// concatenated in rank order.
	AllGather(local []float32) []float32
	// Sum adds buf element-wise across the ranks, in place; every rank ends
	// with the same bits.
	Sum(buf []float32)
	// Contributes reports whether this rank's examples count in the current
	// step. It is false on a rank whose part of the global batch is empty (the
	// short last batch of an epoch, with more ranks than examples): such a rank
	// runs a placeholder example so that it takes part in every collective
	// call, and its statistics and gradients must count as nothing.
	Contributes() bool
}

// SetCollective makes ops recorded on tp combine batch statistics across the
// ranks of c; nil (the default) is one process.
func (tp *Tape) SetCollective(c Collective) { tp.coll = c }

// Collective is the tape's collective, nil in one process.
func (tp *Tape) Collective() Collective { return tp.coll }
