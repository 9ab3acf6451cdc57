package crd

import (
	"math"
	"runtime"
	"sync"
	"sync/atomic"
)

// The three kernels of a relation: squared distances (O(n²d)), the per-vertex angle pass
// (O(n²) per vertex, O(n³) in all) and the gradient product (O(n²d)). All arithmetic is
// float64. Work is split into tasks whose results never depend on which goroutine runs them
// or when: a task owns its outputs, and partial sums are reduced afterwards in task order.

// parallel runs fn(t) for every task t in [0, tasks) on up to GOMAXPROCS goroutines and
// returns after all of them have returned.
func parallel(tasks int, fn func(t int)) {
	workers := min(runtime.GOMAXPROCS(0), tasks)
	if workers <= 1 {
		for t := 0; t < tasks; t++ {
			fn(t)
		}
		return
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for {
				t := int(next.Add(1) - 1)
				if t >= tasks {
					return
				}
				fn(t)
			}
		})
	}
	wg.Wait()
}

// sqDists fills dst (n×n) with D_ij = Σ_c (x_ic − x_jc)², computed from explicit
// differences (docs/crd.md §1.4 rule 3): exactly 0 for identical vectors, and no cancellation
// against the vectors' norms. The diagonal is 0.
func sqDists(dst, x []float64, n, d int) {
	parallel(n, func(i int) {
		dst[i*n+i] = 0
		xi := x[i*d : (i+1)*d]
		for j := i + 1; j < n; j += 4 {
			// The last group repeats row n−1; every pair is summed by the same code whatever
			// its group, so D_jk = D_ik bit for bit when x_j = x_i.
			j1, j2, j3 := min(j+1, n-1), min(j+2, n-1), min(j+3, n-1)
			s0, s1, s2, s3 := sqDist4(xi, x[j*d:(j+1)*d], x[j1*d:(j1+1)*d], x[j2*d:(j2+1)*d], x[j3*d:(j3+1)*d])
			for q, s := range [4]float64{s0, s1, s2, s3} {
				if j+q < n {
					dst[i*n+j+q] = s
					dst[(j+q)*n+i] = s
				}
			}
		}
	})
}

// sqDist4 returns |xi − xa|², |xi − xb|², |xi − xc|², |xi − xe|². Each sum runs over the
// even and the odd coordinates in two fused multiply-add chains that are added at the end
// (math.FMA rounds the same with or without hardware FMA).
func sqDist4(xi, xa, xb, xc, xe []float64) (da, db, dc, de float64) {
	d := len(xi)
	xa, xb, xc, xe = xa[:d], xb[:d], xc[:d], xe[:d]
	var a0, a1, b0, b1, c0, c1, e0, e1 float64
	c := 0
	for ; c+1 < d; c += 2 {
		u, v := xi[c], xi[c+1]
		t := u - xa[c]
		a0 += float64(t * t)
		t = v - xa[c+1]
		a1 += float64(t * t)
		t = u - xb[c]
		b0 += float64(t * t)
		t = v - xb[c+1]
		b1 += float64(t * t)
		t = u - xc[c]
		c0 += float64(t * t)
		t = v - xc[c+1]
		c1 += float64(t * t)
		t = u - xe[c]
		e0 += float64(t * t)
		t = v - xe[c+1]
		e1 += float64(t * t)
	}
	if c < d {
		u := xi[c]
		t := u - xa[c]
		a0 += float64(t * t)
		t = u - xb[c]
		b0 += float64(t * t)
		t = u - xc[c]
		c0 += float64(t * t)
		t = u - xe[c]
		e0 += float64(t * t)
	}
	return a0 + a1, b0 + b1, c0 + c1, e0 + e1
}

// vertexRows holds the per-vertex quantities of the angle pass for vertex i, indexed by k:
// invA = 1/ρ_ik (ρ = max(r, 1e-12)) for the student and the teacher, except 0 where x_k = x_i
// exactly (k = i included), so that u_ik = invA_ik·(x_k − x_i) holds for every k and every
// angle with a zero leg is exactly 0 (docs/crd.md §1.2, §1.4 rule 4) without a branch. invAO is
// scratch for the teacher row of another vertex (duplicateLegs).
type vertexRows struct {
	invAS, invAT, invAO []float64
}

// fillVertex computes the rows of vertex i from the squared distances.
func fillVertex(v *vertexRows, i, n int, ds, dt []float64) {
	invA(v.invAS[:n], ds[i*n:(i+1)*n])
	invA(v.invAT[:n], dt[i*n:(i+1)*n])
}

// invA sets dst[k] = 1/max(sqrt(D[k]), 1e-12), or 0 where D[k] = 0.
func invA(dst, D []float64) {
	D = D[:len(dst)]
	for k, v := range D {
		dst[k] = 0
		if v != 0 {
			dst[k] = 1 / max(math.Sqrt(v), epsNorm)
		}
	}
}

// angleVertex runs the angle pass for vertex i. It returns the vertex's loss terms
// Σ_jk h(A_ijk − A^T_ijk) and accumulates, for the backward pass,
//
//	bsum_j = Σ_k h'_ijk invA_ik,   e_j = Σ_k h'_ijk A_ijk,   p_jk += h'_ijk invA_ij invA_ik (k ≥ j)
//
// with h'_ijk = h'(A_ijk − A^T_ijk) (the constant w_a/n³ is applied later). A_ijk is
// symmetric in j and k, so only k ≥ j is visited and each off-diagonal term counts twice.
// ds, dt are the student's and teacher's n×n squared distances; bsum and e have length n, p
// is an n×n upper-triangular accumulator; v has been filled by fillVertex.
//
// Legs with x_j = x_i exactly get invA_ij = 0, so they take no part in bsum, e or p: their
// gradient, which the reference scales by 1/eps, is duplicateLegs' job.
func angleVertex(i, n int, ds, dt []float64, v *vertexRows, bsum, e, p []float64) float64 {
	dsi, dti := ds[i*n:(i+1)*n], dt[i*n:(i+1)*n]
	ias, iat := v.invAS[:n], v.invAT[:n]
	bsum, e = bsum[:n], e[:n]
	var loss float64
	for j := 0; j < n; j++ {
		aj := ias[j]
		cs, ct := 0.5*aj, 0.5*iat[j]
		if cs == 0 && ct == 0 { // j = i, or x_j = x_i in both sets: every A_ijk is 0 in both
			continue
		}
		dij, tij := dsi[j], dti[j]
		// k = j: A_ijj = D_ij/ρ_ij² (1 unless D_ij < 1e-24), counted once.
		as := (dij + dij) * cs * aj
		at := (tij + tij) * ct * iat[j]
		z := as - at
		b := z
		if z < 1 && z > -1 {
			loss += 0.5 * z * z
		} else {
			b = math.Copysign(1, z)
			loss += math.Abs(z) - 0.5
		}
		bs := b * aj
		es := b * as
		p[j*n+j] += bs * aj

		// k > j, each term standing for (j,k) and (k,j).
		m := n - j - 1
		dsk, dsj := dsi[j+1:], ds[j*n+j+1:(j+1)*n]
		dtk, dtj := dti[j+1:], dt[j*n+j+1:(j+1)*n]
		iak, itk := ias[j+1:], iat[j+1:]
		bk, ek, pj := bsum[j+1:], e[j+1:], p[j*n+j+1:(j+1)*n]
		dsk, dsj, dtk, dtj = dsk[:m], dsj[:m], dtk[:m], dtj[:m]
		iak, itk = iak[:m], itk[:m]
		bk, ek, pj = bk[:m], ek[:m], pj[:m]
		for q := range m {
			as := (dij + dsk[q] - dsj[q]) * cs * iak[q]
			at := (tij + dtk[q] - dtj[q]) * ct * itk[q]
			z := as - at
			b := z
			if z < 1 && z > -1 {
				loss += z * z
			} else {
				b = math.Copysign(1, z)
				loss += 2*math.Abs(z) - 1
			}
			t := b * iak[q]
			bs += t
			bk[q] += b * aj
			pj[q] += t * aj
			t = b * as
			es += t
			ek[q] += t
		}
		bsum[j] += bs
		e[j] += es
	}
	return loss
}

// duplicateLegs forms the gradient of the legs u_io with x_o = x_i exactly, o ≠ i (docs/crd.md
// §1.2: the normalisation divides e_io = 0 by the constant 1e-12, so ∂L/∂e_io =
// (2/1e-12) Σ_k b_iok u_ik). With β^(i,o)_k = 2 b_iok invA_ik / 1e-12, where
// b_iok = cb·h'(0 − A^T_iok) because A_iok = 0, it sets for vertex m
//
//	g_mo = Σ_k β^(m,o)_k            (leg o of vertex m; added to x_o, taken from x_m)
//	z_mk = Σ_o (β^(o,m)_k − β^(m,o)_k)   (β^(o,m): the same for vertex o's leg m)
//
// over the duplicates o of m. Both are rows of vertex m, so tasks never share them; keeping
// them apart from the symmetric part means no 1/eps factor ever multiplies a vector that is
// not a duplicate (the cancellation the reference's autograd does not have). g and z must
// be zero on entry; the pass costs O(n) per duplicate pair.
func duplicateLegs(m, n int, ds, dt []float64, v *vertexRows, cb float64, g, z []float64) {
	dsm, dtm := ds[m*n:(m+1)*n], dt[m*n:(m+1)*n]
	ias, iat, iao := v.invAS[:n], v.invAT[:n], v.invAO[:n]
	g, z = g[:n], z[:n]
	c := 2 * cb / epsNorm
	for o := range n {
		if o == m || dsm[o] != 0 {
			continue
		}
		if iat[o] == 0 { // also a duplicate in the teacher: every b_mok = b_omk = 0
			continue
		}
		dto := dt[o*n : (o+1)*n]
		invA(iao, dto)
		tmo, ctm, cto := dtm[o], 0.5*iat[o], 0.5*iao[m]
		var s float64
		for k := range n {
			// The same expressions as angleVertex's at, for vertices m and o.
			atm := (tmo + dtm[k] - dto[k]) * ctm * iat[k]
			ato := (tmo + dto[k] - dtm[k]) * cto * iao[k]
			bm := c * clamp1(-atm) * ias[k] // ias[k] = invA_mk = invA_ok: x_o = x_m
			bo := c * clamp1(-ato) * ias[k]
			s += bm
			z[k] += bo - bm
		}
		g[o] = s
	}
}

// mulAdd sets out (n×d) = m (n×n) · x (n×d). Each output row is summed over k in one fixed
// order, the same whichever task forms it, so the result does not depend on the task split.
func mulAdd(out, m, x []float64, n, d int) {
	const rowsPerTask = 4
	parallel((n+rowsPerTask-1)/rowsPerTask, func(t int) {
		for r := t * rowsPerTask; r < min(n, (t+1)*rowsPerTask); r += 2 {
			if r+1 < n {
				mulRows(out[r*d:(r+2)*d], m[r*n:(r+2)*n], x, n, d, 2)
			} else {
				mulRows(out[r*d:(r+1)*d], m[r*n:(r+1)*n], x, n, d, 1)
			}
		}
	})
}

// mulRows sets rows (1 or 2) rows of out to the same rows of m times x. Two rows share each
// load of x; a lone row does the same arithmetic for itself.
func mulRows(out, m, x []float64, n, d, rows int) {
	o0, o1 := out[:d], out[(rows-1)*d:rows*d]
	m0, m1 := m[:n], m[(rows-1)*n:rows*n]
	clear(out)
	o1 = o1[:len(o0)]
	k := 0
	for ; k+3 < n; k += 4 {
		a0, a1, a2, a3 := m0[k], m0[k+1], m0[k+2], m0[k+3]
		b0, b1, b2, b3 := m1[k], m1[k+1], m1[k+2], m1[k+3]
		x0, x1 := x[k*d:(k+1)*d], x[(k+1)*d:(k+2)*d]
		x2, x3 := x[(k+2)*d:(k+3)*d], x[(k+3)*d:(k+4)*d]
		x0, x1, x2, x3 = x0[:len(o0)], x1[:len(o0)], x2[:len(o0)], x3[:len(o0)]
		if rows == 1 {
			for c := range o0 {
				o0[c] += float64(a0*x0[c]) + float64(a1*x1[c]) + float64(a2*x2[c]) + float64(a3*x3[c])
			}
			continue
		}
		for c := range o0 {
			v0, v1, v2, v3 := x0[c], x1[c], x2[c], x3[c]
			o0[c] += float64(a0*v0) + float64(a1*v1) + float64(a2*v2) + float64(a3*v3)
			o1[c] += float64(b0*v0) + float64(b1*v1) + float64(b2*v2) + float64(b3*v3)
		}
	}
	for ; k < n; k++ {
		a, b, xk := m0[k], m1[k], x[k*d:(k+1)*d]
		xk = xk[:len(o0)]
		if rows == 1 {
			for c := range o0 {
				o0[c] += float64(a * xk[c])
			}
			continue
		}
		for c := range o0 {
			o0[c] += float64(a * xk[c])
			o1[c] += float64(b * xk[c])
		}
	}
}
