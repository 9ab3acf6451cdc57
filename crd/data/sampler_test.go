package data

import (
	"math/rand/v2"
	"slices"
	"testing"
)

func isPermutation(p []int) bool {
	seen := make([]bool, len(p))
	for _, v := range p {
		if v < 0 || v >= len(p) || seen[v] {
			return false
		}
		seen[v] = true
	}
	return true
}

func TestPermutation(t *testing.T) {
	for _, n := range []int{0, 1, 2, 7, 100} {
		for epoch := range 3 {
			p := Permutation(5, epoch, n)
			if len(p) != n || !isPermutation(p) {
				t.Errorf("Permutation(5, %d, %d) = %v; want a permutation of 0..%d", epoch, n, p, n-1)
			}
			if q := Permutation(5, epoch, n); !slices.Equal(p, q) {
				t.Errorf("Permutation(5, %d, %d) differs between calls", epoch, n)
			}
		}
	}
	if slices.Equal(Permutation(5, 0, 100), Permutation(5, 1, 100)) || slices.Equal(Permutation(5, 0, 100), Permutation(6, 0, 100)) {
		t.Errorf("Permutation(5, 0, 100) equals another epoch's or seed's")
	}
	// Every position takes every value about equally often (a biased shuffle would not).
	const n, trials = 5, 20000
	var count [n][n]int
	for e := range trials {
		for pos, v := range Permutation(1, e, n) {
			count[pos][v]++
		}
	}
	for pos := range n {
		for v := range n {
			if c := count[pos][v]; c < trials/n*9/10 || c > trials/n*11/10 {
				t.Errorf("over %d epochs, position %d held %d %d times; want %d ± 10%%", trials, pos, v, c, trials/n)
			}
		}
	}
}

func TestUniformIsInRangeAndUnbiased(t *testing.T) {
	g := rand.NewPCG(3, 4)
	for _, n := range []int{1, 2, 3, 1 << 40, 1<<62 + 1} {
		for range 1000 {
			if v := uniform(g, n); v < 0 || v >= n {
				t.Fatalf("uniform(%d) = %d; want [0, %d)", n, v, n)
			}
		}
	}
	var count [3]int
	for range 30000 {
		count[uniform(g, 3)]++
	}
	for v, c := range count {
		if c < 9500 || c > 10500 {
			t.Errorf("uniform(3) gave %d %d times in 30000; want 10000 ± 500", v, c)
		}
	}
}

// TestSplit checks the global-batch split: the parts are contiguous, in rank order,
// disjoint, cover [0, total), differ in size by at most one, and world 1 takes all.
func TestSplit(t *testing.T) {
	for total := range 13 {
		for world := 1; world <= 9; world++ {
			next, small, large := 0, total, 0
			for rank := range world {
				lo, hi := Split(total, world, rank)
				if lo != next || hi < lo {
					t.Fatalf("Split(%d, %d, %d) = [%d, %d); want it to start at %d", total, world, rank, lo, hi, next)
				}
				next = hi
				small, large = min(small, hi-lo), max(large, hi-lo)
			}
			if next != total {
				t.Errorf("Split(%d, %d, ·) covers [0, %d); want [0, %d)", total, world, next, total)
			}
			if large-small > 1 {
				t.Errorf("Split(%d, %d, ·): parts of %d and %d examples; want sizes within one", total, world, small, large)
			}
		}
		if lo, hi := Split(total, 1, 0); lo != 0 || hi != total {
			t.Errorf("Split(%d, 1, 0) = [%d, %d); want [0, %d)", total, lo, hi, total)
		}
	}
	// The example: B = 4 over 3 ranks gives 1, 1, 2.
	var got []int
	for r := range 3 {
		lo, hi := Split(4, 3, r)
		got = append(got, hi-lo)
	}
	if !slices.Equal(got, []int{1, 1, 2}) {
		t.Errorf("Split(4, 3, ·) sizes = %v; want [1 1 2]", got)
	}
}

func TestSplitPanicsOnBadMembership(t *testing.T) {
	for _, tc := range []struct{ total, world, rank int }{{10, 0, 0}, {10, 2, 2}, {10, 2, -1}, {-1, 2, 0}} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("Split(total=%d, world=%d, rank=%d) did not panic", tc.total, tc.world, tc.rank)
				}
			}()
			Split(tc.total, tc.world, tc.rank)
		}()
	}
}

func TestStepsPerEpoch(t *testing.T) {
	for _, tc := range []struct{ n, b, want int }{{0, 4, 0}, {1, 4, 1}, {4, 4, 1}, {5, 4, 2}, {47977, 4, 11995}, {7, 1, 7}} {
		if got := StepsPerEpoch(tc.n, tc.b); got != tc.want {
			t.Errorf("StepsPerEpoch(%d, %d) = %d; want %d", tc.n, tc.b, got, tc.want)
		}
	}
}
