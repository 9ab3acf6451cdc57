//go:build !cgo || noopenblas

package tensor

const haveOpenBLAS = false

func sgemmOpenBLAS(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	panic("tensor: OpenBLAS backend not compiled in (built with CGO_ENABLED=0 or -tags noopenblas)")
}

func openBLASSingleThreaded() {}
