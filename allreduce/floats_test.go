package allreduce

import "testing"

// BenchmarkAddWire compares the aligned (float32 view) and portable (unaligned
// bytes) paths of the receive-side reduction.
func BenchmarkAddWire(b *testing.B) {
	const n = 1 << 18 // one 1 MiB frame
	dst := make([]float32, n)
	src := make([]byte, 4*n+1)
	for _, c := range []struct {
		name string
		src  []byte
	}{{"aligned", src[:4*n]}, {"unaligned", src[1:]}} {
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(4 * n)
			for b.Loop() {
				addWire(dst, c.src)
			}
		})
	}
}
