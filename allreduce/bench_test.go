package allreduce

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// BenchmarkSum runs the ring over every transport side by side and reports the
// bus bandwidth, busbw = bytes/time x 2(N-1)/N. crdgo bench allreduce measures
// the same with a raw TCP ceiling, in processes, and at larger sizes.
func BenchmarkSum(b *testing.B) {
	const world = 4
	for _, n := range []int{1 << 18, 1 << 22} {
		for _, tc := range transportCases() {
			b.Run(fmt.Sprintf("%s/N=%d/floats=%d", tc.name, world, n), func(b *testing.B) {
				cfg := DefaultConfig()
				cfg.RingTimeout = 30 * time.Second
				rg := newRing(b, tc.make(b, world), cfg, 1)
				bufs := make([][]float32, world)
				for i := range bufs {
					bufs[i] = make([]float32, n)
				}
				step := uint64(0)
				for b.Loop() {
					errs := rg.run(func(i int, r *Reducer) error { return r.SumInPlace(context.Background(), step, "bench", bufs[i]) })
					for i, err := range errs {
						if err != nil {
							b.Fatalf("rank %d: %v", i, err)
						}
					}
					step++
				}
				bus := float64(4*n) * 2 * (world - 1) / world
				b.ReportMetric(bus*float64(b.N)/b.Elapsed().Seconds()/1e9, "busGB/s")
			})
		}
	}
}
