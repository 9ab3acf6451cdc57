package data

import (
	"fmt"
	"math/bits"
	"math/rand/v2"
)

// Every random choice in this package comes from a PCG generator seeded with the run's
// seed and a hash of what the choice is for (a stream tag and its coordinates: epoch,
// example index, …), never from a global generator and never from a generator whose
// state depends on what ran before. So the epoch-e permutation, or the crop of example i
// in epoch e, is the same however many workers, ranks or restarts came before it.
const (
	streamPermutation uint64 = iota + 1
	streamExample
	streamSynth
)

// splitmix64's finaliser: a bijection of uint64 that mixes every input bit into every
// output bit.
func mix64(z uint64) uint64 {
	z += 0x9e3779b97f4a7c15
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// stream returns the generator for the choice named by tag and coordinates under seed.
func stream(seed, tag uint64, coords ...uint64) *rand.PCG {
	h := mix64(tag)
	for _, c := range coords {
		h = mix64(h ^ c)
	}
	return rand.NewPCG(seed, h)
}

// uniform returns a uniform integer in [0, n), n > 0, by Lemire's multiply-and-reject
// method. It is written here rather than taken from math/rand/v2 (whose IntN algorithm is
// not promised to stay the same) so that permutations and crops depend only on the PCG
// sequence.
func uniform(g *rand.PCG, n int) int {
	if n <= 0 {
		panic(fmt.Sprintf("data: uniform(%d): n must be positive", n))
	}
	un := uint64(n)
	hi, lo := bits.Mul64(g.Uint64(), un)
	if lo < un {
		thresh := -un % un
		for lo < thresh {
			hi, lo = bits.Mul64(g.Uint64(), un)
		}
	}
	return int(hi)
}

// coin returns true with probability 1/2.
func coin(g *rand.PCG) bool { return g.Uint64()>>63 == 1 }

// Permutation returns the epoch's order of the indices 0..n−1 under seed: a
// Fisher–Yates shuffle driven by a generator that depends on (seed, epoch) only.
func Permutation(seed uint64, epoch, n int) []int {
	p := make([]int, n)
	for i := range p {
		p[i] = i
	}
	g := stream(seed, streamPermutation, uint64(epoch))
	for i := n - 1; i > 0; i-- {
		j := uniform(g, i+1)
		p[i], p[j] = p[j], p[i]
	}
	return p
}

// Split returns the part [lo, hi) of a global batch of total examples that rank takes out
// of world ranks: lo = ⌊rank·total/world⌋, hi = ⌊(rank+1)·total/world⌋. The parts are
// contiguous, in rank order, disjoint, cover the batch, and differ in size by at most
// one; a rank's part is empty when total < world (the short last batch of an epoch).
// The global batch itself — which examples, and how each is augmented — does not depend
// on world: that is what makes a run on w ranks equal to a run in one process.
//
// It panics if total < 0, world < 1 or rank is not in [0, world): callers validate the
// membership they are given before asking for a part.
func Split(total, world, rank int) (lo, hi int) {
	if total < 0 || world < 1 || rank < 0 || rank >= world {
		panic(fmt.Sprintf("data: Split(total=%d, world=%d, rank=%d): want total ≥ 0, world ≥ 1, 0 ≤ rank < world", total, world, rank))
	}
	return rank * total / world, (rank + 1) * total / world
}

// StepsPerEpoch is the number of global batches of batch examples in an epoch of n
// examples: ⌈n/batch⌉, the last one short when batch does not divide n.
func StepsPerEpoch(n, batch int) int {
	if batch < 1 {
		panic(fmt.Sprintf("data: StepsPerEpoch(n=%d, batch=%d): want batch ≥ 1", n, batch))
	}
	return (n + batch - 1) / batch
}
