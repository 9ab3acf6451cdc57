package bench

import (
	"testing"

	"github.com/crdgo/crdgo/crd/tensor"
)

func BenchmarkGANStep(b *testing.B) {
	for _, kind := range tensor.CPUKinds() {
		b.Run(string(kind), func(b *testing.B) {
			s, err := NewGANStep(tensor.NewCPU(kind, 0), GANConfig{Size: 64, Batch: 1, NGF: 16, NDF: 64, Blocks: 3})
			if err != nil {
				b.Fatal(err)
			}
			s.Step()
			for b.Loop() {
				s.Step()
			}
		})
	}
}
