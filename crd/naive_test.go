package crd

import (
	"math"
	"math/rand/v2"
)

// An independent float64 evaluation of the loss, written from the definitions of docs/crd.md
// §1.1–§1.3 the way the reference computes them: explicit unit vectors u_ij and all n³ dot
// products (O(n³d): small n only). It shares no code with the package.

type naiveRel struct{ dist, angle, rkd, muS, muT float64 }

func naiveRKD(x, y [][]float64) naiveRel {
	n := len(x)
	pd := func(X [][]float64) ([][]float64, float64) {
		d := make([][]float64, n)
		var sum float64
		for i := range n {
			d[i] = make([]float64, n)
			for j := range n {
				if i == j {
					continue
				}
				var s float64
				for c := range X[i] {
					t := X[i][c] - X[j][c]
					s += t * t
				}
				d[i][j] = math.Sqrt(math.Max(s, 1e-12))
				sum += d[i][j]
			}
		}
		mu := sum / float64(n*(n-1))
		for i := range n {
			for j := range n {
				d[i][j] /= mu
			}
		}
		return d, mu
	}
	ang := func(X [][]float64) [][][]float64 {
		u := make([][][]float64, n)
		for i := range n {
			u[i] = make([][]float64, n)
			for j := range n {
				e := make([]float64, len(X[i]))
				var r float64
				for c := range e {
					e[c] = X[j][c] - X[i][c]
					r += e[c] * e[c]
				}
				r = math.Max(math.Sqrt(r), 1e-12)
				for c := range e {
					e[c] /= r
				}
				u[i][j] = e
			}
		}
		A := make([][][]float64, n)
		for i := range n {
			A[i] = make([][]float64, n)
			for j := range n {
				A[i][j] = make([]float64, n)
				for k := range n {
					var s float64
					for c := range u[i][j] {
						s += u[i][j][c] * u[i][k][c]
					}
					A[i][j][k] = s
				}
			}
		}
		return A
	}
	h := func(z float64) float64 {
		if math.Abs(z) < 1 {
			return z * z / 2
		}
		return math.Abs(z) - 0.5
	}
	var r naiveRel
	ps, muS := pd(x)
	pt, muT := pd(y)
	r.muS, r.muT = muS, muT
	for i := range n {
		for j := range n {
			r.dist += h(ps[i][j] - pt[i][j])
		}
	}
	r.dist /= float64(n * n)
	as, at := ang(x), ang(y)
	for i := range n {
		for j := range n {
			for k := range n {
				r.angle += h(as[i][j][k] - at[i][j][k])
			}
		}
	}
	r.angle /= float64(n * n * n)
	r.rkd = r.dist + 2*r.angle
	return r
}

// img is a C×H×W image in float64 for the naive path.
type img struct {
	c, h, w int
	v       []float64
}

func (m img) at(c, y, x int) float64 { return m.v[(c*m.h+y)*m.w+x] }

func naiveRows(m img) [][]float64 {
	var out [][]float64
	for y := range m.h {
		var v []float64
		for c := range m.c {
			for x := range m.w {
				v = append(v, m.at(c, y, x))
			}
		}
		out = append(out, v)
	}
	return out
}

func naiveCols(m img) [][]float64 {
	var out [][]float64
	for x := range m.w {
		var v []float64
		for y := range m.h {
			for c := range m.c {
				v = append(v, m.at(c, y, x))
			}
		}
		out = append(out, v)
	}
	return out
}

func naivePatches(m img, p int) [][]float64 {
	var out [][]float64
	for by := 0; by+p <= m.h; by += p {
		for bx := 0; bx+p <= m.w; bx += p {
			var v []float64
			for c := range m.c {
				for ki := range p {
					for kj := range p {
						v = append(v, m.at(c, by+ki, bx+kj))
					}
				}
			}
			out = append(out, v)
		}
	}
	return out
}

// naiveChannelsOfPatch is the official pix2pix set: patch l of m as C vectors of p².
func naiveChannelsOfPatch(m img, p, l int) [][]float64 {
	by, bx := (l/(m.w/p))*p, (l%(m.w/p))*p
	var out [][]float64
	for c := range m.c {
		var v []float64
		for ki := range p {
			for kj := range p {
				v = append(v, m.at(c, by+ki, bx+kj))
			}
		}
		out = append(out, v)
	}
	return out
}

// batch splits a flat NCHW float32 batch into naive images.
func batch(x []float32, shape [4]int) []img {
	N, C, H, W := shape[0], shape[1], shape[2], shape[3]
	out := make([]img, N)
	for b := range N {
		v := make([]float64, C*H*W)
		for q := range v {
			v[q] = float64(x[b*C*H*W+q])
		}
		out[b] = img{C, H, W, v}
	}
	return out
}

func naiveCycleGAN(s, t []img, p int) float64 {
	var tot float64
	for b := range s {
		tot += naiveRKD(naiveRows(s[b]), naiveRows(t[b])).rkd +
			naiveRKD(naiveCols(s[b]), naiveCols(t[b])).rkd +
			naiveRKD(naivePatches(s[b], p), naivePatches(t[b], p)).rkd
	}
	return 25 * tot
}

func naivePix2Pix(s, t []img, p int, official bool) float64 {
	var tot float64
	for b := range s {
		tot += naiveRKD(naiveRows(s[b]), naiveRows(t[b])).rkd + naiveRKD(naiveCols(s[b]), naiveCols(t[b])).rkd
		if !official {
			tot += naiveRKD(naivePatches(s[b], p), naivePatches(t[b], p)).rkd
		}
	}
	if official {
		L := (s[0].h / p) * (s[0].w / p)
		for k := range s {
			tot += naiveRKD(naiveChannelsOfPatch(s[k/L], p, k%L), naiveChannelsOfPatch(t[k/L], p, k%L)).rkd
		}
	}
	return 2.5 * tot
}

// randSet returns n×d float32 values uniform in [-1, 1) from a seeded generator.
func randSet(r *rand.Rand, n, d int) []float32 {
	x := make([]float32, n*d)
	for q := range x {
		x[q] = float32(2*r.Float64() - 1)
	}
	return x
}

// vecs converts an n×d float32 set to naive vectors.
func vecs(x []float32, n, d int) [][]float64 {
	out := make([][]float64, n)
	for i := range n {
		out[i] = make([]float64, d)
		for c := range d {
			out[i][c] = float64(x[i*d+c])
		}
	}
	return out
}

// naiveGrad is ∂RKD/∂x as the reference's autograd forms it, written leg by leg in float64
// (O(n³d)): the distance part through d_ij = |x_i − x_j| and μ, the angle part through each
// unit vector u_ij = e_ij / max(|e_ij|, 1e-12), e_ij = x_j − x_i, whose gradient is the
// projection (I − u uᵀ)/|e| where |e| ≥ 1e-12 and I/1e-12 below (F.normalize's clamp passes
// no gradient there). No step relies on two large terms cancelling, so it stays exact where
// a vector is duplicated.
func naiveGrad(x, y [][]float64) [][]float64 {
	n, d := len(x), len(x[0])
	grad := make([][]float64, n)
	for i := range grad {
		grad[i] = make([]float64, d)
	}
	h1 := func(z float64) float64 { return math.Max(-1, math.Min(1, z)) }
	diff := func(X [][]float64, i, j int) ([]float64, float64) { // x_j − x_i and its squared norm
		e := make([]float64, d)
		var s float64
		for c := range e {
			e[c] = X[j][c] - X[i][c]
			s += e[c] * e[c]
		}
		return e, s
	}
	// Distance part.
	dist := func(X [][]float64) ([][]float64, float64) {
		D := make([][]float64, n)
		var sum float64
		for i := range n {
			D[i] = make([]float64, n)
			for j := range n {
				if i != j {
					_, D[i][j] = diff(X, i, j)
					sum += math.Sqrt(math.Max(D[i][j], 1e-12))
				}
			}
		}
		return D, sum / float64(n*(n-1))
	}
	DS, muS := dist(x)
	DT, muT := dist(y)
	g := func(i, j int) float64 {
		return h1(math.Sqrt(math.Max(DS[i][j], 1e-12))/muS - math.Sqrt(math.Max(DT[i][j], 1e-12))/muT)
	}
	var dmu float64 // ∂L_dist/∂μ
	for i := range n {
		for j := range n {
			if i != j {
				dmu -= g(i, j) * math.Sqrt(math.Max(DS[i][j], 1e-12)) / (muS * muS) / float64(n*n)
			}
		}
	}
	for i := range n {
		for j := range n {
			if i == j || DS[i][j] < 1e-12 {
				continue
			}
			dd := math.Sqrt(DS[i][j])
			dLdd := g(i, j)/(muS*float64(n*n)) + dmu/float64(n*(n-1))
			e, _ := diff(x, i, j)
			for c := range d { // ∂d_ij/∂x_j = e/d, ∂d_ij/∂x_i = −e/d
				grad[j][c] += dLdd * e[c] / dd
				grad[i][c] -= dLdd * e[c] / dd
			}
		}
	}
	// Angle part.
	unit := func(X [][]float64, i int) ([][]float64, []float64) {
		u := make([][]float64, n)
		r := make([]float64, n)
		for j := range n {
			e, s := diff(X, i, j)
			r[j] = math.Sqrt(s)
			for c := range e {
				e[c] /= math.Max(r[j], 1e-12)
			}
			u[j] = e
		}
		return u, r
	}
	dot := func(a, b []float64) float64 {
		var s float64
		for c := range a {
			s += a[c] * b[c]
		}
		return s
	}
	cb := 2 / float64(n*n*n)
	for i := range n {
		us, r := unit(x, i)
		ut, _ := unit(y, i)
		for j := range n {
			gu := make([]float64, d) // ∂L/∂u_ij = Σ_k (b_ijk + b_ikj) u_ik
			for k := range n {
				b := cb * h1(dot(us[j], us[k])-dot(ut[j], ut[k]))
				for c := range gu {
					gu[c] += 2 * b * us[k][c]
				}
			}
			ge := make([]float64, d) // ∂L/∂e_ij
			if r[j] >= 1e-12 {
				p := dot(gu, us[j])
				for c := range ge {
					ge[c] = (gu[c] - p*us[j][c]) / r[j]
				}
			} else {
				for c := range ge {
					ge[c] = gu[c] / 1e-12
				}
			}
			for c := range d {
				grad[j][c] += ge[c]
				grad[i][c] -= ge[c]
			}
		}
	}
	return grad
}
