// Package allreduce sums float32 buffers across the ranks of a data-parallel job
// with the bandwidth-optimal ring: reduce-scatter then all-gather, 2(N-1) steps,
// chunked and pipelined, over a Transport (in memory, NATS, or direct TCP between
// ring neighbours).
//
// Results are exact and deterministic: the reduction order of each element is
// fixed by the Plan, so every rank ends with bit-identical buffers. Every wait has
// a deadline (Config.RingTimeout, 5 s by default); a neighbour that does not
// deliver fails the operation with a *PeerError naming its rank and host. Frames
// of other jobs, older generations or aborted operations are dropped and counted,
// never applied. docs/allreduce.md describes the wire format, the flow control,
// the failure behaviour and the bandwidth model, with measured numbers.
//
// The trainer calls it through an interface of its own (train.GradSync: World,
// Rank, SumInPlace), which *Reducer satisfies, so crd/train never imports this
// package.
package allreduce
