package crd

import (
	"fmt"
	"math"
)

// Constants of the relational loss (docs/crd.md §1.2; reference code, file relation_kd.py).
const (
	DistanceWeight = 1.0 // w_d
	AngleWeight    = 2.0 // w_a

	epsDist = 1e-12 // clamp(min) on squared distances in pdist
	epsNorm = 1e-12 // eps of F.normalize on the angle legs
)

// Relation holds the relational loss of one student slice set against its teacher set.
type Relation struct {
	Distance float64 // L_dist: mean smooth-L1 of ψ_S − ψ_T over the n² pairs
	Angle    float64 // L_angle: mean smooth-L1 of A_S − A_T over the n³ triplets
	RKD      float64 // w_d·Distance + w_a·Angle = Distance + 2·Angle

	// StudentMean and TeacherMean are μ, the mean of the n(n−1) off-diagonal distances of
	// each set, by which the distances are normalised.
	StudentMean, TeacherMean float64
}

// RKD returns the relational loss of the student slice set x against the teacher set y, both
// n×d row-major (n ≥ 2, d ≥ 1). If grad is not nil (n×d) it adds scale·∂RKD/∂x into it; the
// teacher is a constant. It allocates its scratch; Workspace.RKD reuses it.
func RKD(x, y []float32, n, d int, grad []float32, scale float64) Relation {
	var w Workspace
	return w.RKD(x, y, n, d, grad, scale)
}

// Workspace holds the scratch memory of the loss, so that repeated calls of the same sizes
// allocate nothing. The zero value is ready to use. A Workspace must not be used by two
// goroutines at once; each call runs its own goroutines and returns after they have ended.
type Workspace struct {
	xs, ys []float32 // the current student and teacher slice sets (n×d)

	x64, y64 []float64 // the sets in float64
	xc       []float64 // the student set, centred
	g64      []float64 // ∂RKD/∂x (n×d)
	ds, dt   []float64 // squared distances, student and teacher (n×n)
	gam, eta []float64 // Γ and η (n×n), one row per vertex
	gd, zd   []float64 // the legs between identical vectors (n×n), one row per vertex
	m        []float64 // the gradient matrix M (n×n)
	part     []float64 // per-task P accumulators (tasks × n×n)
	loss     []float64 // per-task angle loss sums
	rows     []vertexRows
}

// RKD is the package-level RKD with w's scratch.
func (w *Workspace) RKD(x, y []float32, n, d int, grad []float32, scale float64) Relation {
	if n < 2 || d < 1 || len(x) != n*d || len(y) != n*d || (grad != nil && len(grad) != n*d) {
		panic(fmt.Sprintf("crd: RKD: n=%d d=%d: len(x)=%d len(y)=%d len(grad)=%d; want n ≥ 2, d ≥ 1 and n·d each (grad may be nil)",
			n, d, len(x), len(y), len(grad)))
	}
	r := w.relate(x, y, n, d, grad != nil)
	if grad != nil {
		for q, g := range w.g64[:n*d] {
			grad[q] += float32(scale * g)
		}
	}
	return r
}

// angleTasks is the number of vertex groups of the angle pass, fixed so that the partial sums
// and their reduction order do not depend on GOMAXPROCS. Each group has its own n×n
// accumulator for P, so this also bounds the memory: angleTasks·n² float64.
const angleTasks = 8

func grow(b []float64, n int) []float64 {
	if cap(b) < n {
		return make([]float64, n)
	}
	return b[:n]
}

// relate computes the relation of x (student) against y (teacher), n×d float32, and with
// withGrad leaves ∂RKD/∂x in w.g64 (n×d, float64). docs/crd.md §1.4 gives the formulas; the
// comments below use its names.
func (w *Workspace) relate(x, y []float32, n, d int, withGrad bool) Relation {
	nn := n * n
	w.x64, w.y64 = grow(w.x64, n*d), grow(w.y64, n*d)
	for q := range n * d {
		w.x64[q], w.y64[q] = float64(x[q]), float64(y[q])
	}
	// Distances come from explicit differences of the (exact) float64 inputs; a translation
	// would only add rounding there. Centring is used where it matters: the gradient product.
	w.ds, w.dt = grow(w.ds, nn), grow(w.dt, nn)
	sqDists(w.ds, w.x64, n, d)
	sqDists(w.dt, w.y64, n, d)

	r := Relation{StudentMean: meanDist(w.ds, n), TeacherMean: meanDist(w.dt, n)}
	var gbar float64 // ḡ = Σ_{i≠j} h'(ψ_ij − ψ^T_ij)·ψ_ij / (n(n−1))
	for i := range n {
		for j := range n {
			if i == j {
				continue
			}
			ps := clampDist(w.ds[i*n+j]) / r.StudentMean
			z := ps - clampDist(w.dt[i*n+j])/r.TeacherMean
			r.Distance += smoothL1(z)
			gbar += clamp1(z) * ps
		}
	}
	r.Distance /= float64(nn)
	gbar /= float64(n * (n - 1))

	// Angle pass, one vertex at a time, in angleTasks fixed groups of vertices.
	tasks := min(n, angleTasks)
	w.gam, w.eta = grow(w.gam, nn), grow(w.eta, nn)
	w.gd, w.zd = grow(w.gd, nn), grow(w.zd, nn)
	w.part = grow(w.part, tasks*nn)
	w.loss = grow(w.loss, tasks)
	if len(w.rows) < tasks {
		w.rows = make([]vertexRows, tasks)
	}
	cb := AngleWeight / (float64(n) * float64(n) * float64(n)) // b_ijk = cb·h'(z)
	parallel(tasks, func(t int) {
		v := &w.rows[t]
		v.invAS, v.invAT, v.invAO = grow(v.invAS, n), grow(v.invAT, n), grow(v.invAO, n)
		p := w.part[t*nn : (t+1)*nn]
		clear(p)
		var loss float64
		for i := t * n / tasks; i < (t+1)*n/tasks; i++ {
			fillVertex(v, i, n, w.ds, w.dt)
			gam, eta := w.gam[i*n:(i+1)*n], w.eta[i*n:(i+1)*n]
			clear(gam)
			clear(eta)
			loss += angleVertex(i, n, w.ds, w.dt, v, gam, eta, p)
			if !withGrad {
				continue
			}
			// Γ_ij = 2 cb Σ_k h'_ijk invA_ij invA_ik;  η_ij = 2 cb Σ_k h'_ijk A_ijk / ρ_ij²,
			// absent where r_ij < 1e-12 (the normalisation divides by the constant eps there).
			for j := range n {
				gam[j] *= 2 * cb * v.invAS[j]
				if math.Sqrt(w.ds[i*n+j]) >= epsNorm {
					eta[j] *= 2 * cb * v.invAS[j] * v.invAS[j]
				} else {
					eta[j] = 0
				}
			}
			gd, zd := w.gd[i*n:(i+1)*n], w.zd[i*n:(i+1)*n]
			clear(gd)
			clear(zd)
			duplicateLegs(i, n, w.ds, w.dt, v, cb, gd, zd)
		}
		w.loss[t] = loss
	})
	for _, l := range w.loss[:tasks] {
		r.Angle += l
	}
	r.Angle /= float64(n) * float64(n) * float64(n)
	r.RKD = DistanceWeight*r.Distance + AngleWeight*r.Angle
	if !withGrad {
		return r
	}

	// M = K − W + diag(δ + W·1), so that ∂RKD/∂X = M X (docs/crd.md §1.4), with
	//   K = P − Γᵀ − Γ + η + ηᵀ,  δ_m = Σ_k Γ_mk − Σ_i η_im − Σ_j η_mj,
	//   P_jk = Σ_i γ_ijk (reduced over the tasks in task order),
	//   W_ij = 2 w_d (g_ij − ḡ) / (n² μ d_ij) where D_ij ≥ 1e-12,
	// plus the legs between identical vectors (duplicateLegs): M_mk += z_mk − g_km and
	// δ_m += Σ_o g_mo.
	w.m = grow(w.m, nn)
	m := w.m
	parallel(n, func(j int) { // each task writes the pairs (j, k ≥ j) and their mirrors
		for k := j; k < n; k++ {
			var s float64
			for t := range tasks {
				s += w.part[t*nn+j*n+k]
			}
			m[j*n+k] = 2 * cb * s
			m[k*n+j] = 2 * cb * s
		}
	})
	cw := 2 * DistanceWeight / (float64(nn) * r.StudentMean)
	parallel(n, func(i int) { // each task writes row i
		var delta float64
		for k := range n {
			delta += w.gam[i*n+k] - w.eta[k*n+i] - w.eta[i*n+k] + w.gd[i*n+k]
			m[i*n+k] += w.zd[i*n+k] - w.gd[k*n+i]
			if k == i {
				continue
			}
			m[i*n+k] += w.eta[i*n+k] + w.eta[k*n+i] - w.gam[k*n+i] - w.gam[i*n+k]
			if D := w.ds[i*n+k]; D >= epsDist {
				dd := math.Sqrt(D)
				z := dd/r.StudentMean - clampDist(w.dt[i*n+k])/r.TeacherMean
				wik := cw * (clamp1(z) - gbar) / dd
				m[i*n+k] -= wik
				delta += wik
			}
		}
		m[i*n+i] += delta
	})

	// Every row of M sums to 0 (the loss is translation invariant), so M X = M (X − 1x̄ᵀ):
	// the centred product avoids cancelling against a large common offset.
	w.xc, w.g64 = grow(w.xc, n*d), grow(w.g64, n*d)
	centre(w.xc, w.x64, n, d)
	mulAdd(w.g64, m, w.xc, n, d)
	return r
}

// meanDist returns μ = the mean of the n(n−1) off-diagonal clamped distances.
func meanDist(D []float64, n int) float64 {
	var s float64
	for i := range n {
		for j := range n {
			if i != j {
				s += clampDist(D[i*n+j])
			}
		}
	}
	return s / float64(n*(n-1))
}

// centre writes x − x̄ (the mean vector over the n rows) into dst.
func centre(dst, x []float64, n, d int) {
	mean := dst[:d] // row 0 of dst holds the column sums until the end
	clear(mean)
	for i := range n {
		for c, v := range x[i*d : (i+1)*d] {
			mean[c] += v
		}
	}
	for c := range mean {
		mean[c] /= float64(n)
	}
	for i := n - 1; i >= 0; i-- { // row 0 last: it holds the mean
		row := dst[i*d : (i+1)*d]
		for c, v := range x[i*d : (i+1)*d] {
			row[c] = v - mean[c]
		}
	}
}

// clampDist is the reference's off-diagonal distance sqrt(max(D, 1e-12)).
func clampDist(D float64) float64 { return math.Sqrt(max(D, epsDist)) }

// smoothL1 is h of docs/crd.md §0 (β = 1).
func smoothL1(z float64) float64 {
	if a := math.Abs(z); a < 1 {
		return 0.5 * z * z
	} else {
		return a - 0.5
	}
}

// clamp1 is h', clamp(z, −1, 1).
func clamp1(z float64) float64 {
	if z > 1 {
		return 1
	}
	if z < -1 {
		return -1
	}
	return z
}
