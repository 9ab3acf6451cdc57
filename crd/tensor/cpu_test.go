package tensor_test

import (
	"fmt"
	"testing"

	"github.com/crdgo/crdgo/crd/tensor"
	"github.com/crdgo/crdgo/crd/tensor/tensortest"
)

func TestCPUPureGo(t *testing.T) { tensortest.RunBackend(t, tensor.NewCPU(tensor.PureGo, 0)) }

// TestCPUWorkers holds the CPU backend to its promise that results do not
// depend on the number of workers.
func TestCPUWorkers(t *testing.T) {
	for _, k := range tensor.CPUKinds() {
		t.Run(string(k), func(t *testing.T) {
			tensortest.RunBitIdentical(t, tensor.NewCPU(k, 1), tensor.NewCPU(k, 3))
		})
	}
}

// BenchmarkCPU runs the shared benchmark set on every CPU backend compiled in,
// side by side.
func BenchmarkCPU(b *testing.B) {
	for _, k := range tensor.CPUKinds() {
		b.Run(string(k), func(b *testing.B) { tensortest.BenchmarkBackend(b, tensor.NewCPU(k, 0)) })
	}
}

// TestCPUBlockedConvolutions runs the suite with a column limit so small that
// every convolution is cut into row bands of one sample, and one that packs
// several small samples into a block: the blocked GEMM paths that real image
// sizes take.
func TestCPUBlockedConvolutions(t *testing.T) {
	k := tensor.DefaultCPUKind()
	for _, limit := range []int{1, 3000} {
		t.Run(fmt.Sprintf("%s/limit%d", k, limit), func(t *testing.T) {
			tensortest.RunBackend(t, tensor.NewCPUWithOptions(k, tensor.CPUOptions{ColumnLimit: limit}))
		})
	}
}
