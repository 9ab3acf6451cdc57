package data

import (
	"fmt"
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

// TestShardIndices checks DistributedSampler's properties: every rank gets ⌈n/world⌉
// indices; together the ranks take each position of the padded permutation exactly once;
// world 1 is the permutation itself.
func TestShardIndices(t *testing.T) {
	for _, tc := range []struct{ n, world int }{
		{10, 1}, {10, 2}, {10, 3}, {10, 4}, {7, 7}, {3, 5}, {1, 4}, {0, 3}, {100, 8}, {101, 8},
	} {
		t.Run(fmt.Sprintf("n%d_world%d", tc.n, tc.world), func(t *testing.T) {
			perm := Permutation(42, 3, tc.n)
			per := (tc.n + tc.world - 1) / tc.world
			padded := make([]int, per*tc.world)
			for k := range padded {
				padded[k] = perm[k%max(tc.n, 1)]
			}
			if tc.n == 0 {
				padded = nil
			}
			taken := make([]int, len(padded)) // how often each padded position was taken
			covered := map[int]bool{}
			for rank := range tc.world {
				got := ShardIndices(42, 3, tc.n, tc.world, rank)
				if len(got) != per {
					t.Fatalf("rank %d: %d indices; want ⌈%d/%d⌉ = %d", rank, len(got), tc.n, tc.world, per)
				}
				for k, idx := range got {
					pos := rank + k*tc.world
					if padded[pos] != idx {
						t.Fatalf("rank %d: index %d is %d; want padded permutation position %d = %d", rank, k, idx, pos, padded[pos])
					}
					taken[pos]++
					covered[idx] = true
				}
			}
			for pos, c := range taken {
				if c != 1 {
					t.Errorf("padded position %d taken %d times; want exactly once", pos, c)
				}
			}
			if len(covered) != tc.n {
				t.Errorf("ranks cover %d distinct indices; want all %d", len(covered), tc.n)
			}
			if tc.world == 1 && !slices.Equal(ShardIndices(42, 3, tc.n, 1, 0), perm) {
				t.Errorf("world 1: shard is not the epoch's permutation")
			}
		})
	}
}

func TestShardIndicesPanicsOnBadMembership(t *testing.T) {
	for _, tc := range []struct{ n, world, rank int }{{10, 0, 0}, {10, 2, 2}, {10, 2, -1}, {-1, 2, 0}} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("ShardIndices(n=%d, world=%d, rank=%d) did not panic", tc.n, tc.world, tc.rank)
				}
			}()
			ShardIndices(1, 0, tc.n, tc.world, tc.rank)
		}()
	}
}
