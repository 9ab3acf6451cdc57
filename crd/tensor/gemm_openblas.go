//go:build cgo && !noopenblas

package tensor

/*
#cgo LDFLAGS: -lopenblas
#include <cblas.h>
void openblas_set_num_threads(int);
*/
import "C"

const haveOpenBLAS = true

// openBLASSingleThreaded makes OpenBLAS compute on the calling thread only. The
// CPU backend splits GEMMs across its own goroutines instead: OpenBLAS's
// pthread pool busy-waits between calls, and with Go's workers on the same
// cores that spinning cost a third of a training step (measured with pprof).
func openBLASSingleThreaded() { C.openblas_set_num_threads(1) }

// sgemmOpenBLAS computes C = alpha·op(A)·op(B) + beta·C, row-major, with
// op(A) m×k and op(B) k×n, through OpenBLAS.
func sgemmOpenBLAS(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	if m == 0 || n == 0 {
		return
	}
	ta, tb := C.enum_CBLAS_TRANSPOSE(C.CblasNoTrans), C.enum_CBLAS_TRANSPOSE(C.CblasNoTrans)
	if transA {
		ta = C.CblasTrans
	}
	if transB {
		tb = C.CblasTrans
	}
	var pa, pb *float32
	if len(a) > 0 {
		pa = &a[0]
	}
	if len(b) > 0 {
		pb = &b[0]
	}
	C.cblas_sgemm(C.CblasRowMajor, ta, tb, C.blasint(m), C.blasint(n), C.blasint(k),
		C.float(alpha), (*C.float)(pa), C.blasint(lda), (*C.float)(pb), C.blasint(ldb),
		C.float(beta), (*C.float)(&c[0]), C.blasint(ldc))
}
