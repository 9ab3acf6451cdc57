// Package crd is the Content Relationship Distillation loss (docs/crd.md §1): it cuts the student's
// and the teacher's output images into slice sets and asks the student to reproduce the
// teacher's relations inside each set. It works on plain float32 slices, NCHW, and knows
// nothing of the tensor engine; it returns the loss and, on request, ∂loss/∂S.
//
// # Slice sets (§1.1)
//
// A C×H×W image gives three sets of vectors: its H rows (channel-major, d = C·W), its W
// columns (pixel-major, channel-minor, d = C·H) and its ⌊H/P⌋·⌊W/P⌋ non-overlapping P×P
// patches (ordered (c, ki, kj), d = C·P²; a remainder is dropped, as F.unfold drops it). See
// Rows, Columns, Patches and PatchChannels; the Add… functions are their adjoints.
//
// # Relations (§1.2)
//
// For student vectors x_1..x_n and teacher vectors y_1..y_n, RKD = 1·L_dist + 2·L_angle:
//
//	D_ij = |x_i − x_j|²,  d_ij = sqrt(max(D_ij, 1e-12)) (i ≠ j),  d_ii = 0
//	μ = mean of the n(n−1) off-diagonal d_ij,  ψ_ij = d_ij/μ
//	L_dist = (1/n²) Σ_ij h(ψ_ij − ψ^T_ij)
//	u_ij = (x_j − x_i)/max(|x_j − x_i|, 1e-12),  A_ijk = ⟨u_ij, u_ik⟩ (vertex i)
//	L_angle = (1/n³) Σ_ijk h(A_ijk − A^T_ijk)
//
// with h the smooth-L1 of β = 1. Every eps of the reference is kept: duplicated vectors get
// d = 1e-6 and angle 0, degenerate triplets (j = i or k = i) are exactly 0 (§9 D12).
//
// # Computation (§1.4)
//
// The reference forms an n×n×d tensor of normalised differences (O(n³d)). Here the angle
// numerators come from squared distances by polarisation,
//
//	⟨x_j − x_i, x_k − x_i⟩ = (D_ij + D_ik − D_jk)/2,
//
// so a relation costs O(n²d) for D and O(n³) for the angles, forward and backward. D is
// formed from explicit differences in float64 (exactly 0 for identical vectors: rule 3), all
// sums over pairs and triplets are float64 (rule 2), and the angle pass streams one vertex at
// a time (O(n²) memory: rule 5). The gradient is the analytic one of §1.4,
// ∂RKD/∂X = (K − W)X + diag(δ + W·1)X, formed as M·(X − x̄) with M an n×n matrix (its rows sum
// to zero, so centring changes nothing but the rounding). One refinement of §1.4: a leg
// between two identical student vectors, whose gradient the reference scales by 1/1e-12
// (§9 D12), is kept out of K and added on its own, so no 1/eps factor ever multiplies a
// vector that is not one of the duplicates (in K they cancel only up to ~1e-16·1e24).
// Work runs on GOMAXPROCS goroutines split into fixed tasks whose partial sums are reduced
// in a fixed order: the same inputs give the same bits whatever the scheduling or the number
// of threads.
//
// Scratch memory is about 15 n² + 4 n·d float64 per relation (≈ 14 MB for the 256×256
// recipe); a Workspace keeps it between calls. At 256×256 one CycleGAN call, teacher and
// student sides, forward and backward, costs ≈ 100 ms of CPU time (AMD EPYC, float64 scalar
// code): ≈ 60 ms wall on two otherwise idle cores (BenchmarkCycleGAN).
//
// # Combinations (§1.3, §9)
//
// CycleGAN: 25·Σ_b (rows + columns + patches) — the reference defines batch 1; the per-image
// sum for B > 1 is crdgo's choice (§9 D11). Pix2Pix: 2.5·Σ_b (rows + columns + patches),
// where with compat Intended each image's patches are related to each other, and with
// Official the patch term is the released code's: the C = 3 colour planes of patch k of the
// first image, for k < B (§1.3, §9 D2).
package crd

import (
	"fmt"
	"strings"
)

// Weights of the CRD combinations (docs/crd.md §1.3).
const (
	CycleGANWeight = 25.0 // per term, CycleGAN student
	Pix2PixWeight  = 2.5  // per term and image, pix2pix student
)

// Compat selects between the loss as docs/crd.md defines it and the released code's behaviour
// (docs/crd.md §0, §9). It changes only the pix2pix patch term.
type Compat int

const (
	// Intended is the default: each image's own patches are related (§9 D2).
	Intended Compat = iota
	// Official reproduces the released pix2pix patch term (§1.3).
	Official
)

func (c Compat) String() string {
	switch c {
	case Intended:
		return "intended"
	case Official:
		return "official"
	}
	return fmt.Sprintf("Compat(%d)", int(c))
}

// ParseCompat reads "intended" or "official".
func ParseCompat(s string) (Compat, error) {
	switch strings.ToLower(s) {
	case "intended":
		return Intended, nil
	case "official":
		return Official, nil
	}
	return 0, fmt.Errorf("crd: compat %q: want intended or official", s)
}

// ImageTerms holds the three relations of one image: its rows, columns and patches. In
// Pix2Pix with Official, Patch of entry k is instead the k-th official patch term.
type ImageTerms struct {
	Row, Column, Patch Relation
}

// CheckShape reports why an (N,C,H,W) batch with patch size p cannot be passed to CycleGAN
// and Pix2Pix with the given compat, or nil. Each slice set needs n ≥ 2 vectors, so H ≥ 2,
// W ≥ 2 and at least two whole patches; H and W need not be multiples of p (the remainder is
// dropped). Official needs C = 3: the released code reshapes to (−1, 3, P, P).
func CheckShape(shape [4]int, p int, compat Compat) error {
	N, C, H, W := shape[0], shape[1], shape[2], shape[3]
	var errs []string
	switch {
	case N < 1 || C < 1 || H < 1 || W < 1:
		errs = append(errs, fmt.Sprintf("every size must be ≥ 1, got N,C,H,W = %d,%d,%d,%d", N, C, H, W))
	case N > maxElems || C > maxElems || H > MaxSet || W > MaxSet || // then no product overflows
		N*C > maxElems || N*C*H*W > maxElems:
		errs = append(errs, fmt.Sprintf("N,C,H,W = %d,%d,%d,%d is too large (H, W ≤ %d, N·C·H·W ≤ %d)",
			N, C, H, W, MaxSet, int64(maxElems)))
	default:
		if H < 2 {
			errs = append(errs, fmt.Sprintf("H = %d: the row set needs H ≥ 2", H))
		}
		if W < 2 {
			errs = append(errs, fmt.Sprintf("W = %d: the column set needs W ≥ 2", W))
		}
		if p < 1 || p > H || p > W {
			errs = append(errs, fmt.Sprintf("patch size %d: want 1 ≤ P ≤ min(H, W) = %d", p, min(H, W)))
		} else if n, _ := PatchesSize(C, H, W, p); n < 2 || n > MaxSet {
			errs = append(errs, fmt.Sprintf("patch size %d gives %d whole patches of a %d×%d image: want 2 to %d",
				p, n, H, W, MaxSet))
		}
	}
	switch compat {
	case Intended:
	case Official:
		if C != 3 {
			errs = append(errs, fmt.Sprintf("compat official: C = %d, the released patch term needs C = 3", C))
		}
	default:
		errs = append(errs, fmt.Sprintf("compat %d: want Intended or Official", int(compat)))
	}
	if errs != nil {
		return fmt.Errorf("crd: shape %v, patch %d: %s", shape, p, strings.Join(errs, "; "))
	}
	return nil
}

// MaxSet is the largest slice set CheckShape accepts (H, W and the number of patches): the
// angle pass costs O(n³) time and the scratch about 15·n² float64 (500 MB at 2048). Recipes
// use 256.
const MaxSet = 1 << 11

// maxElems bounds N·C·H·W so that no index overflows and one tensor stays ≤ 1 GiB.
const maxElems = 1 << 28

// CycleGAN returns the CycleGAN CRD term of a batch, 25·Σ_b (RKD_rows + RKD_cols +
// RKD_patches) (docs/crd.md §1.3; the reference is batch 1, §9 D11), and each image's relations.
// s (student) and t (teacher) are NCHW with the given shape; patch is P. If grad (NCHW) is not
// nil it adds scale·∂total/∂s into it. The shape must pass CheckShape(shape, patch, Intended).
func CycleGAN(s, t []float32, shape [4]int, patch int, grad []float32, scale float64) (total float64, per []ImageTerms) {
	var w Workspace
	return w.CycleGAN(s, t, shape, patch, grad, scale)
}

// Pix2Pix returns the pix2pix CRD term of a batch, 2.5·Σ_b (RKD_rows + RKD_cols + RKD_patch),
// and each image's relations (docs/crd.md §1.3). With Intended, image b's patch term relates its
// own patches. With Official, the patch term k < N relates the C = 3 channel planes of
// flattened patch k of the batch — patch k of image 0 when k < ⌊H/P⌋·⌊W/P⌋, as in every
// recipe — and per[k].Patch holds it. If grad (NCHW) is not nil it adds scale·∂total/∂s into
// it. The shape must pass CheckShape(shape, patch, compat).
func Pix2Pix(s, t []float32, shape [4]int, patch int, compat Compat, grad []float32, scale float64) (total float64, per []ImageTerms) {
	var w Workspace
	return w.Pix2Pix(s, t, shape, patch, compat, grad, scale)
}

// Terms selects the slice sets of a CRD term: the full term has all three
// (AllTerms); the ablations of docs/crd.md §11 drop some. A set not
// selected is not computed, and its Relation in ImageTerms stays zero.
type Terms uint8

const (
	TermRows Terms = 1 << iota
	TermColumns
	TermPatches

	AllTerms = TermRows | TermColumns | TermPatches
)

// String names the selected sets, "rows+columns+patches" for AllTerms and
// "none" for 0.
func (ts Terms) String() string {
	var names []string
	for _, n := range []struct {
		t    Terms
		name string
	}{{TermRows, "rows"}, {TermColumns, "columns"}, {TermPatches, "patches"}} {
		if ts&n.t != 0 {
			names = append(names, n.name)
		}
	}
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, "+")
}

// CycleGAN is the package-level CycleGAN with w's scratch.
func (w *Workspace) CycleGAN(s, t []float32, shape [4]int, patch int, grad []float32, scale float64) (float64, []ImageTerms) {
	return w.combine("CycleGAN", s, t, shape, patch, Intended, CycleGANWeight, AllTerms, grad, scale)
}

// Pix2Pix is the package-level Pix2Pix with w's scratch.
func (w *Workspace) Pix2Pix(s, t []float32, shape [4]int, patch int, compat Compat, grad []float32, scale float64) (float64, []ImageTerms) {
	return w.combine("Pix2Pix", s, t, shape, patch, compat, Pix2PixWeight, AllTerms, grad, scale)
}

// CycleGANTerms is CycleGAN with only the slice sets in terms: 25·Σ_b of the
// selected relations. With AllTerms it is CycleGAN, bit for bit.
func (w *Workspace) CycleGANTerms(s, t []float32, shape [4]int, patch int, terms Terms, grad []float32, scale float64) (float64, []ImageTerms) {
	return w.combine("CycleGAN", s, t, shape, patch, Intended, CycleGANWeight, terms, grad, scale)
}

// Pix2PixTerms is Pix2Pix with only the slice sets in terms (TermPatches
// selects the patch term of compat). With AllTerms it is Pix2Pix, bit for bit.
func (w *Workspace) Pix2PixTerms(s, t []float32, shape [4]int, patch int, compat Compat, terms Terms, grad []float32, scale float64) (float64, []ImageTerms) {
	return w.combine("Pix2Pix", s, t, shape, patch, compat, Pix2PixWeight, terms, grad, scale)
}

func (w *Workspace) combine(fn string, s, t []float32, shape [4]int, p int, compat Compat, weight float64,
	terms Terms, grad []float32, scale float64) (float64, []ImageTerms) {
	if err := CheckShape(shape, p, compat); err != nil {
		panic(fmt.Sprintf("crd: %s: %s", fn, strings.TrimPrefix(err.Error(), "crd: ")))
	}
	N, C, H, W := shape[0], shape[1], shape[2], shape[3]
	img := C * H * W
	if len(s) != N*img || len(t) != N*img || (grad != nil && len(grad) != N*img) {
		panic(fmt.Sprintf("crd: %s: shape %v: len(s)=%d len(t)=%d len(grad)=%d; want %d each (grad may be nil)",
			fn, shape, len(s), len(t), len(grad), N*img))
	}
	alpha := weight * scale
	per := make([]ImageTerms, N)
	var total float64
	for b := range N {
		sb, tb := s[b*img:(b+1)*img], t[b*img:(b+1)*img]
		var gb []float32
		if grad != nil {
			gb = grad[b*img : (b+1)*img]
		}
		it := &per[b]

		if terms&TermRows != 0 {
			n, d := RowsSize(C, H, W)
			w.sets(n * d)
			Rows(w.xs, sb, C, H, W)
			Rows(w.ys, tb, C, H, W)
			it.Row = w.relate(w.xs, w.ys, n, d, gb != nil)
			if gb != nil {
				addRows(gb, w.g64[:n*d], alpha, C, H, W)
			}
		}

		if terms&TermColumns != 0 {
			n, d := ColumnsSize(C, H, W)
			w.sets(n * d)
			Columns(w.xs, sb, C, H, W)
			Columns(w.ys, tb, C, H, W)
			it.Column = w.relate(w.xs, w.ys, n, d, gb != nil)
			if gb != nil {
				addColumns(gb, w.g64[:n*d], alpha, C, H, W)
			}
		}

		if compat == Intended && terms&TermPatches != 0 {
			n, d := PatchesSize(C, H, W, p)
			w.sets(n * d)
			Patches(w.xs, sb, C, H, W, p)
			Patches(w.ys, tb, C, H, W, p)
			it.Patch = w.relate(w.xs, w.ys, n, d, gb != nil)
			if gb != nil {
				addPatches(gb, w.g64[:n*d], alpha, C, H, W, p)
			}
		}
		total += it.Row.RKD + it.Column.RKD
	}
	if compat == Official && terms&TermPatches != 0 {
		// The released code's s is the (N·L, 3, P, P) tensor of all patches, image-major; its
		// loop relates s[k] for k < N as 3 vectors of P² (docs/crd.md §1.3).
		L, _ := PatchesSize(C, H, W, p)
		w.sets(C * p * p)
		for k := range N {
			b, l := k/L, k%L
			sb, tb := s[b*img:(b+1)*img], t[b*img:(b+1)*img]
			PatchChannels(w.xs, sb, C, H, W, p, l)
			PatchChannels(w.ys, tb, C, H, W, p, l)
			per[k].Patch = w.relate(w.xs, w.ys, C, p*p, grad != nil)
			if grad != nil {
				addPatchChannels(grad[b*img:(b+1)*img], w.g64[:C*p*p], alpha, C, H, W, p, l)
			}
		}
	}
	for b := range N {
		total += per[b].Patch.RKD
	}
	return weight * total, per
}

// sets sizes the float32 slice-set buffers to m elements.
func (w *Workspace) sets(m int) {
	if cap(w.xs) < m {
		w.xs, w.ys = make([]float32, m), make([]float32, m)
	}
	w.xs, w.ys = w.xs[:m], w.ys[:m]
}
