package tensor

import (
	"fmt"
	"runtime"
	"sync"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/gonum"
)

// CPU is the host-memory Backend. Its kernels split work across Workers
// goroutines; GEMM runs on OpenBLAS (which has its own threads) or gonum's
// pure-Go SGEMM. Results do not depend on the number of workers: every
// reduction sums fixed-size blocks in a fixed order.
//
// A CPU value may be used from several goroutines at once; its scratch buffers
// are pooled and reused, so a steady-state training step allocates nothing new.
type CPU struct {
	kind     CPUKind
	workers  int
	colLimit int // floats of one im2col block (cpu_gemmconv.go)

	mu      sync.Mutex
	scratch map[int][][]float32 // free scratch buffers by length
}

// NewCPU returns a CPU backend with the given GEMM; workers ≤ 0 means GOMAXPROCS.
// It panics if kind is not compiled in (see CPUKinds).
func NewCPU(kind CPUKind, workers int) *CPU {
	return NewCPUWithOptions(kind, CPUOptions{Workers: workers})
}

// CPUOptions tune a CPU backend; zero fields take their defaults.
type CPUOptions struct {
	// Workers is the number of goroutines kernels use (default GOMAXPROCS).
	Workers int
	// ColumnLimit caps, in floats, the column matrix of one GEMM block of a
	// convolution (default 1<<20: 4 MiB). Tests set it small to exercise the
	// blocked paths.
	ColumnLimit int
}

// NewCPUWithOptions is NewCPU with every option.
func NewCPUWithOptions(kind CPUKind, opt CPUOptions) *CPU {
	workers := opt.Workers
	ok := false
	for _, k := range CPUKinds() {
		ok = ok || k == kind
	}
	if !ok {
		panic(fmt.Sprintf("tensor: CPU kind %q not compiled in (have %v)", kind, CPUKinds()))
	}
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	if kind == OpenBLAS {
		openBLASSingleThreaded()
	}
	limit := opt.ColumnLimit
	if limit <= 0 {
		limit = defaultColLimit
	}
	return &CPU{kind: kind, workers: workers, colLimit: limit, scratch: map[int][][]float32{}}
}

// Name is "cpu/" followed by the GEMM's name.
func (c *CPU) Name() string { return "cpu/" + string(c.kind) }

// Kind is the GEMM the backend uses.
func (c *CPU) Kind() CPUKind { return c.kind }

// Workers is the number of goroutines kernels use.
func (c *CPU) Workers() int { return c.workers }

// New returns a zeroed host tensor.
func (c *CPU) New(shape Shape) *Tensor {
	s := shape.Clone()
	return &Tensor{Shape: s, Data: make([]float32, s.Numel())}
}

// View shares shape.Numel() elements of t starting at offset.
func (c *CPU) View(t *Tensor, offset int, shape Shape) *Tensor {
	n := shape.Numel()
	if offset < 0 || offset+n > len(t.Data) {
		panic(fmt.Sprintf("tensor: View [%d, %d) of %d elements", offset, offset+n, len(t.Data)))
	}
	return &Tensor{Shape: shape.Clone(), Data: t.Data[offset : offset+n : offset+n]}
}

// Upload copies src into t.
func (c *CPU) Upload(t *Tensor, src []float32) {
	mustLen("Upload", len(src), t.Numel())
	copy(t.Data, src)
}

// Download copies t into dst.
func (c *CPU) Download(dst []float32, t *Tensor) {
	mustLen("Download", len(dst), t.Numel())
	copy(dst, t.Data)
}

// Copy sets dst = src.
func (c *CPU) Copy(dst, src *Tensor) {
	mustLen("Copy", dst.Numel(), src.Numel())
	copy(dst.Data, src.Data)
}

// Fill sets every element of t to v.
func (c *CPU) Fill(t *Tensor, v float32) {
	d := t.Data
	if v == 0 {
		clear(d)
		return
	}
	for i := range d {
		d[i] = v
	}
}

func mustLen(op string, got, want int) {
	if got != want {
		panic(fmt.Sprintf("tensor: %s: %d elements, want %d", op, got, want))
	}
}

func mustShape(op, name string, t *Tensor, want ...int) {
	if !t.Shape.Equal(Shape(want)) {
		panic(fmt.Sprintf("tensor: %s: %s has shape %v, want %v", op, name, t.Shape, Shape(want)))
	}
}

// getScratch returns a buffer of n elements with undefined contents.
func (c *CPU) getScratch(n int) []float32 {
	c.mu.Lock()
	defer c.mu.Unlock()
	if l := c.scratch[n]; len(l) > 0 {
		b := l[len(l)-1]
		c.scratch[n] = l[:len(l)-1]
		return b
	}
	return make([]float32, n)
}

func (c *CPU) putScratch(b []float32) {
	c.mu.Lock()
	c.scratch[len(b)] = append(c.scratch[len(b)], b)
	c.mu.Unlock()
}

// parallelFor runs f over [0, n) split into at most c.workers contiguous ranges,
// each of at least grain items, and waits for all of them.
func (c *CPU) parallelFor(n, grain int, f func(lo, hi int)) {
	if n <= 0 {
		return
	}
	if grain < 1 {
		grain = 1
	}
	parts := min(c.workers, (n+grain-1)/grain)
	if parts <= 1 {
		f(0, n)
		return
	}
	var wg sync.WaitGroup
	wg.Add(parts - 1)
	for p := 1; p < parts; p++ {
		lo, hi := p*n/parts, (p+1)*n/parts
		go func() {
			defer wg.Done()
			f(lo, hi)
		}()
	}
	f(0, n/parts)
	wg.Wait()
}

// sgemm computes C = alpha·op(A)·op(B) + beta·C, row-major, op(A) m×k, op(B) k×n.
func (c *CPU) sgemm(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, cc []float32, ldc int) {
	if m == 0 || n == 0 {
		return
	}
	if k == 0 {
		for i := 0; i < m; i++ {
			row := cc[i*ldc : i*ldc+n]
			for j := range row {
				row[j] *= beta
			}
		}
		return
	}
	if c.kind == OpenBLAS {
		c.sgemmParallel(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, cc, ldc)
		return
	}
	ta, tb := blas.NoTrans, blas.NoTrans
	if transA {
		ta = blas.Trans
	}
	if transB {
		tb = blas.Trans
	}
	gonum.Implementation{}.Sgemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, cc, ldc)
}

// gemmGrain is the smallest GEMM (m·n·k multiply-adds) worth splitting.
const gemmGrain = 1 << 17

// gemmParts is the most blocks a GEMM is split into.
const gemmParts = 4

// sgemmParallel splits C into row or column blocks, one single-threaded
// OpenBLAS call per block, and shares the blocks among the workers. The split
// depends on the shape only, never on the number of workers: OpenBLAS rounds
// an element of C differently depending on the shape of the call that
// computes it (its small-matrix and edge kernels), so a split that followed
// the worker count would make the results depend on it.
func (c *CPU) sgemmParallel(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, cc []float32, ldc int) {
	parts := min(gemmParts, max(1, m*n*k/gemmGrain))
	if parts <= 1 {
		sgemmOpenBLAS(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, cc, ldc)
		return
	}
	byRows := m >= n
	c.parallelFor(parts, 1, func(plo, phi int) {
		for p := plo; p < phi; p++ {
			if byRows {
				lo, hi := p*m/parts, (p+1)*m/parts
				ao := lo * lda // row lo of op(A)
				if transA {
					ao = lo
				}
				sgemmOpenBLAS(transA, transB, hi-lo, n, k, alpha, a[ao:], lda, b, ldb, beta, cc[lo*ldc:], ldc)
				continue
			}
			lo, hi := p*n/parts, (p+1)*n/parts
			bo := lo // column lo of op(B)
			if transB {
				bo = lo * ldb
			}
			sgemmOpenBLAS(transA, transB, m, hi-lo, k, alpha, a, lda, b[bo:], ldb, beta, cc[lo:], ldc)
		}
	})
}

// MatMul computes c = alpha·op(a)·op(b) + beta·c, 2-D or batched 3-D.
func (c *CPU) MatMul(cc, a, b *Tensor, transA, transB bool, alpha, beta float32) {
	r := len(a.Shape)
	if r != len(b.Shape) || r != len(cc.Shape) || (r != 2 && r != 3) {
		panic(fmt.Sprintf("tensor: MatMul: shapes %v · %v → %v", a.Shape, b.Shape, cc.Shape))
	}
	batch := 1
	if r == 3 {
		batch = a.Shape[0]
		if b.Shape[0] != batch || cc.Shape[0] != batch {
			panic(fmt.Sprintf("tensor: MatMul: batch sizes of %v · %v → %v", a.Shape, b.Shape, cc.Shape))
		}
	}
	ar, ac := a.Shape[r-2], a.Shape[r-1]
	br, bc := b.Shape[r-2], b.Shape[r-1]
	m, k := ar, ac
	if transA {
		m, k = ac, ar
	}
	k2, n := br, bc
	if transB {
		k2, n = bc, br
	}
	if k != k2 || cc.Shape[r-2] != m || cc.Shape[r-1] != n {
		panic(fmt.Sprintf("tensor: MatMul: shapes %v·%v (transA %v, transB %v) → %v", a.Shape, b.Shape, transA, transB, cc.Shape))
	}
	for i := 0; i < batch; i++ {
		c.sgemm(transA, transB, m, n, k, alpha,
			a.Data[i*ar*ac:(i+1)*ar*ac], ac,
			b.Data[i*br*bc:(i+1)*br*bc], bc,
			beta, cc.Data[i*m*n:(i+1)*m*n], n)
	}
}
