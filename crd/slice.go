package crd

import "fmt"

// Slicing of one C×H×W image (docs/crd.md §1.1). Each gather copies the image into an n×d
// row-major slice set; each Add… is its adjoint: it scatter-adds an n×d gradient back into a
// C×H×W gradient (+=, because the three slice sets of one image share every pixel).
//
// Inside the engine a wrong length is a bug, so these functions panic naming the function and
// the sizes; outside input is checked by CheckShape before it gets here.

// RowsSize returns the size of the row set of a C×H×W image: n = H vectors of d = C·W.
func RowsSize(c, h, w int) (n, d int) { return h, c * w }

// ColumnsSize returns the size of the column set of a C×H×W image: n = W vectors of d = C·H.
func ColumnsSize(c, h, w int) (n, d int) { return w, c * h }

// PatchesSize returns the size of the patch set of a C×H×W image with p×p patches at stride
// p: n = ⌊H/p⌋·⌊W/p⌋ vectors of d = C·p². Rows and columns past the last whole patch are
// dropped, as F.unfold drops them.
func PatchesSize(c, h, w, p int) (n, d int) { return (h / p) * (w / p), c * p * p }

// Rows copies the H row vectors of the image x (C×H×W) into dst (H × C·W). Vector h is
// channel-major: dst[h, c·W + w] = x[c, h, w] (the reference's transpose(0,1) then reshape).
func Rows(dst, x []float32, c, h, w int) {
	checkSet("Rows", len(dst), len(x), c, h, w, h*c*w)
	d := c * w
	for ch := 0; ch < c; ch++ {
		for y := 0; y < h; y++ {
			copy(dst[y*d+ch*w:y*d+ch*w+w], x[(ch*h+y)*w:(ch*h+y)*w+w])
		}
	}
}

// AddRows is the adjoint of Rows: dx[c, h, w] += g[h, c·W + w], dx C×H×W, g H × C·W.
func AddRows(dx, g []float32, c, h, w int) { addRows(dx, g, 1, c, h, w) }

func addRows[G float32 | float64](dx []float32, g []G, alpha float64, c, h, w int) {
	checkSet("AddRows", len(g), len(dx), c, h, w, h*c*w)
	d := c * w
	for ch := 0; ch < c; ch++ {
		for y := 0; y < h; y++ {
			src := g[y*d+ch*w : y*d+ch*w+w]
			dst := dx[(ch*h+y)*w : (ch*h+y)*w+w]
			for x := range src {
				dst[x] += float32(alpha * float64(src[x]))
			}
		}
	}
}

// Columns copies the W column vectors of the image x (C×H×W) into dst (W × C·H). Vector w is
// pixel-major, channel-minor: dst[w, h·C + c] = x[c, h, w] (the reference's transpose(0,2)).
func Columns(dst, x []float32, c, h, w int) {
	checkSet("Columns", len(dst), len(x), c, h, w, w*c*h)
	d := c * h
	for ch := 0; ch < c; ch++ {
		for y := 0; y < h; y++ {
			row := x[(ch*h+y)*w : (ch*h+y)*w+w]
			for x, v := range row {
				dst[x*d+y*c+ch] = v
			}
		}
	}
}

// AddColumns is the adjoint of Columns: dx[c, h, w] += g[w, h·C + c].
func AddColumns(dx, g []float32, c, h, w int) { addColumns(dx, g, 1, c, h, w) }

func addColumns[G float32 | float64](dx []float32, g []G, alpha float64, c, h, w int) {
	checkSet("AddColumns", len(g), len(dx), c, h, w, w*c*h)
	d := c * h
	for ch := 0; ch < c; ch++ {
		for y := 0; y < h; y++ {
			row := dx[(ch*h+y)*w : (ch*h+y)*w+w]
			for x := range row {
				row[x] += float32(alpha * float64(g[x*d+y*c+ch]))
			}
		}
	}
}

// Patches copies the p×p patches (stride p, no padding) of the image x (C×H×W) into dst
// (n × C·p², n = ⌊H/p⌋·⌊W/p⌋). Patch l = bi·⌊W/p⌋ + bj is numbered row-major over the block
// grid and ordered (c, ki, kj) inside: dst[l, c·p² + ki·p + kj] = x[c, p·bi + ki, p·bj + kj]
// (F.unfold with kernel and stride p, then permute).
func Patches(dst, x []float32, c, h, w, p int) {
	n, d := checkPatches("Patches", len(dst), len(x), c, h, w, p)
	for l := 0; l < n; l++ {
		gatherPatch(dst[l*d:(l+1)*d], x, c, h, w, p, l)
	}
}

// AddPatches is the adjoint of Patches: dx[c, p·bi + ki, p·bj + kj] += g[l, c·p² + ki·p + kj].
func AddPatches(dx, g []float32, c, h, w, p int) { addPatches(dx, g, 1, c, h, w, p) }

func addPatches[G float32 | float64](dx []float32, g []G, alpha float64, c, h, w, p int) {
	n, d := checkPatches("AddPatches", len(g), len(dx), c, h, w, p)
	for l := 0; l < n; l++ {
		scatterPatch(dx, g[l*d:(l+1)*d], alpha, c, h, w, p, l)
	}
}

// PatchChannels copies patch l (numbered as in Patches) of the image x (C×H×W) into dst as C
// vectors of p², one per channel: dst[c, ki·p + kj] = x[c, p·bi + ki, p·bj + kj]. It is the
// set the released pix2pix code relates in its patch term (docs/crd.md §1.3, §9 D2).
func PatchChannels(dst, x []float32, c, h, w, p, l int) {
	checkPatchChannels("PatchChannels", len(dst), len(x), c, h, w, p, l)
	gatherPatch(dst, x, c, h, w, p, l)
}

// AddPatchChannels is the adjoint of PatchChannels.
func AddPatchChannels(dx, g []float32, c, h, w, p, l int) {
	addPatchChannels(dx, g, 1, c, h, w, p, l)
}

func addPatchChannels[G float32 | float64](dx []float32, g []G, alpha float64, c, h, w, p, l int) {
	checkPatchChannels("AddPatchChannels", len(g), len(dx), c, h, w, p, l)
	scatterPatch(dx, g, alpha, c, h, w, p, l)
}

// gatherPatch copies patch l of x, ordered (c, ki, kj), into dst (C·p²). Patches and
// PatchChannels differ only in how the caller splits that vector.
func gatherPatch(dst, x []float32, c, h, w, p, l int) {
	bi, bj := l/(w/p), l%(w/p)
	for ch := 0; ch < c; ch++ {
		for ki := 0; ki < p; ki++ {
			src := (ch*h+bi*p+ki)*w + bj*p
			copy(dst[(ch*p+ki)*p:(ch*p+ki)*p+p], x[src:src+p])
		}
	}
}

func scatterPatch[G float32 | float64](dx []float32, g []G, alpha float64, c, h, w, p, l int) {
	bi, bj := l/(w/p), l%(w/p)
	for ch := 0; ch < c; ch++ {
		for ki := 0; ki < p; ki++ {
			o := (ch*h+bi*p+ki)*w + bj*p
			dst := dx[o : o+p]
			src := g[(ch*p+ki)*p : (ch*p+ki)*p+p]
			for q := range dst {
				dst[q] += float32(alpha * float64(src[q]))
			}
		}
	}
}

func checkSet(fn string, set, img, c, h, w, want int) {
	if c < 1 || h < 1 || w < 1 {
		panic(fmt.Sprintf("crd: %s: bad image size C×H×W = %d×%d×%d", fn, c, h, w))
	}
	if img != c*h*w || set != want {
		panic(fmt.Sprintf("crd: %s: image length %d, set length %d; want %d and %d for C×H×W = %d×%d×%d",
			fn, img, set, c*h*w, want, c, h, w))
	}
}

func checkPatches(fn string, set, img, c, h, w, p int) (n, d int) {
	if p < 1 || p > h || p > w {
		panic(fmt.Sprintf("crd: %s: patch size %d for H×W = %d×%d", fn, p, h, w))
	}
	n, d = PatchesSize(c, h, w, p)
	checkSet(fn, set, img, c, h, w, n*d)
	return n, d
}

func checkPatchChannels(fn string, set, img, c, h, w, p, l int) {
	if p < 1 || p > h || p > w {
		panic(fmt.Sprintf("crd: %s: patch size %d for H×W = %d×%d", fn, p, h, w))
	}
	if n, _ := PatchesSize(c, h, w, p); l < 0 || l >= n {
		panic(fmt.Sprintf("crd: %s: patch %d of %d", fn, l, n))
	}
	checkSet(fn, set, img, c, h, w, c*p*p)
}
