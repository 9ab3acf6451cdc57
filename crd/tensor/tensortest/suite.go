package tensortest

import (
	"testing"

	"github.com/crdgo/crdgo/crd/tensor"
)

// groups lists every kernel's cases; short trims the largest.
func groups(short bool) []group {
	gs := []group{
		matMulGroup(short),
		convGroup(short),
		convTGroup(short),
	}
	gs = append(gs, normGroups(short)...)
	gs = append(gs, padGroup(short), unaryGroup(short), binaryGroup(short))
	gs = append(gs, reduceGroups(short)...)
	gs = append(gs, copyAxisGroup(short), permuteGroup(short))
	gs = append(gs, poolGroups(short)...)
	return append(gs, adamGroup(short))
}

// RunBackend checks every kernel of be against the float64 references, one
// subtest per kernel and case (go test -run 'CPUPureGo/Conv2D/' picks one).
// Forward values must match within a tolerance derived from float32 rounding
// and the number of summed terms; every backward kernel must match central
// finite differences of the reference, add into pre-filled gradients, skip nil
// gradients and give the same bits twice. With testing.Short (and under the
// race detector) the largest cases are skipped and fewer gradient elements
// are sampled.
func RunBackend(t *testing.T, be tensor.Backend) {
	// The race detector slows the float64 references tenfold, and they are
	// not what it checks: under -race the suite runs its short set.
	short := testing.Short() || raceEnabled
	t.Run("Memory", func(t *testing.T) { testMemory(t, be) })
	for _, g := range groups(short) {
		t.Run(g.name, func(t *testing.T) {
			for i := range g.cases {
				c := &g.cases[i]
				t.Run(c.name, func(t *testing.T) { runCase(t, be, c, g.name+"/"+c.name, short) })
			}
		})
	}
}

// RunBitIdentical runs every kernel case on a and on b with the same inputs and
// requires bit-identical outputs and gradients. It is for two configurations
// of one backend that promise the same bits, such as a CPU backend with 1 and
// with 3 workers (its reductions sum fixed blocks in a fixed order).
func RunBitIdentical(t *testing.T, a, b tensor.Backend) {
	for _, g := range groups(testing.Short() || raceEnabled) {
		t.Run(g.name, func(t *testing.T) {
			for i := range g.cases {
				c := &g.cases[i]
				t.Run(c.name, func(t *testing.T) { runSame(t, a, b, c, g.name+"/"+c.name) })
			}
		})
	}
}
