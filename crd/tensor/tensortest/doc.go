// Package tensortest is the conformance suite every tensor.Backend passes, and
// the benchmark set they share (gonum's testlapack/testblas pattern): a
// backend's test file is a one-line call, RunBackend(t, be).
//
// The suite's oracle is a set of float64 reference functions, Ref*, written as
// plain loops straight from the definition of each op with PyTorch's semantics
// (the "living definition" of what a kernel means). They are independent of
// the CPU backend's code, checked against PyTorch's own numbers in this
// package's tests (testdata/torch_golden.json), and exported so that package
// nn's gradient tests can use them too.
//
// RunBackend checks every kernel's forward values against its reference and
// every backward kernel against central finite differences of the reference,
// together with the contracts all kernels share: forward overwrites, backward
// adds (+=), nil gradients are skipped, inputs are not written, nothing is
// written outside a tensor, and the same call gives the same bits twice.
// Every tensor the suite hands a kernel is a view into a larger buffer whose
// margins are checked afterwards. RunBitIdentical holds two configurations of
// one backend (CPU with 1 and 3 workers) to the same bits, and
// BenchmarkBackend times the convolutions of one 64×64 GAN training step.
//
// A backend's test file is one line per configuration:
//
//	func TestCPUPureGo(t *testing.T) { tensortest.RunBackend(t, tensor.NewCPU(tensor.PureGo, 0)) }
//
// A failing case names the kernel, the shapes and parameters, the element,
// the value and the reference, and the seed of its inputs (go test -v prints
// every case's largest error next to its tolerance).
package tensortest
