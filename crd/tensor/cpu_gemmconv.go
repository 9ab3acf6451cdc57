package tensor

// Convolutions as GEMMs over column matrices (im2col). The column matrix of a
// convolution in geometry g has kSize = cinG·kh·kw rows and one column per
// output position. It is never built whole: the output positions are cut into
// blocks whose column matrix holds at most colLimit floats, so the scratch
// stays in cache and bounded at any image size (a 3×3 conv of 64 channels at
// 256² would otherwise need 150 MB). A block is either several whole samples
// side by side (small images: one GEMM over the batch has a longer inner
// dimension than one per sample — the 7×7 maps of a PatchGAN have 49
// positions) or a band of output rows of one sample (large images).

// defaultColLimit is the most floats one block's column matrix holds (4 MiB).
const defaultColLimit = 1 << 20

// colSeg is one piece of a block: output rows [oy0, oy1) of sample n.
type colSeg struct{ n, oy0, oy1 int }

// colBlock is a set of output positions whose GEMMs run together.
type colBlock struct {
	segs []colSeg
	cols int // Σ (oy1−oy0)·ow
}

// single reports a block of one segment (rows of one sample), whose matrices
// the GEMMs can read and write in place with the plane's row stride.
func (b colBlock) single() bool { return len(b.segs) == 1 }

// colBlocks cuts the N·oh·ow output positions of g into blocks of at most
// colLimit column-matrix floats (at least one output row).
func colBlocks(g convGeom, colLimit int) []colBlock {
	ohw := g.oh * g.ow
	per := g.kSize * ohw // floats of one sample's column matrix
	var out []colBlock
	switch {
	case per <= colLimit:
		nb := max(1, min(g.n, colLimit/per))
		for n0 := 0; n0 < g.n; n0 += nb {
			var b colBlock
			for n := n0; n < min(g.n, n0+nb); n++ {
				b.segs = append(b.segs, colSeg{n, 0, g.oh})
				b.cols += ohw
			}
			out = append(out, b)
		}
	default:
		rows := max(1, colLimit/(g.kSize*g.ow))
		for n := 0; n < g.n; n++ {
			for oy := 0; oy < g.oh; oy += rows {
				hi := min(g.oh, oy+rows)
				out = append(out, colBlock{segs: []colSeg{{n, oy, hi}}, cols: (hi - oy) * g.ow})
			}
		}
	}
	return out
}

// im2col writes the column matrix of channels [c0, c0+g.cinG) of the block's
// positions into col (kSize × b.cols, row stride b.cols): row
// (c·kh + i)·kw + j holds, for every output position, the input pixel kernel
// tap (i, j) of channel c sees, or 0 in the padding. img is (N, cin, h, w).
func (c *CPU) im2col(col, img []float32, g convGeom, c0 int, b colBlock) {
	ld := b.cols
	c.parallelFor(g.kSize, max(1, 4096/max(b.cols, 1)), func(lo, hi int) {
		for r := lo; r < hi; r++ {
			ch := r / (g.kh * g.kw)
			i := (r / g.kw) % g.kh
			j := r % g.kw
			off := 0
			for _, s := range b.segs {
				src := img[(s.n*g.cin+c0+ch)*g.h*g.w : (s.n*g.cin+c0+ch+1)*g.h*g.w]
				for oy := s.oy0; oy < s.oy1; oy++ {
					drow := col[r*ld+off : r*ld+off+g.ow]
					off += g.ow
					iy := oy*g.sh - g.ph + i*g.dh
					if iy < 0 || iy >= g.h {
						clear(drow)
						continue
					}
					srow := src[iy*g.w : (iy+1)*g.w]
					ix0 := -g.pw + j*g.dw
					if g.sw == 1 {
						// Contiguous: zeros, a copy, zeros.
						lo := max(0, -ix0)
						hi := min(g.ow, g.w-ix0)
						if hi <= lo {
							clear(drow)
							continue
						}
						clear(drow[:lo])
						copy(drow[lo:hi], srow[ix0+lo:ix0+hi])
						clear(drow[hi:])
						continue
					}
					for ox := range drow {
						ix := ox*g.sw + ix0
						if ix >= 0 && ix < g.w {
							drow[ox] = srow[ix]
						} else {
							drow[ox] = 0
						}
					}
				}
			}
		}
	})
}

// col2im adds the block's column matrix col (kSize × b.cols) back into
// channels [c0, c0+g.cinG) of img (N, cin, h, w): the adjoint of im2col.
func (c *CPU) col2im(img, col []float32, g convGeom, c0 int, b colBlock) {
	ld := b.cols
	kk := g.kh * g.kw
	// Planes are independent, so split over (segment, channel); within one
	// plane the taps are added in a fixed order.
	nseg := len(b.segs)
	starts := make([]int, nseg)
	for k := 1; k < nseg; k++ {
		starts[k] = starts[k-1] + (b.segs[k-1].oy1-b.segs[k-1].oy0)*g.ow
	}
	c.parallelFor(nseg*g.cinG, 1, func(lo, hi int) {
		for job := lo; job < hi; job++ {
			s, ch := b.segs[job/g.cinG], job%g.cinG
			dstImg := img[(s.n*g.cin+c0+ch)*g.h*g.w : (s.n*g.cin+c0+ch+1)*g.h*g.w]
			base := starts[job/g.cinG]
			for t := 0; t < kk; t++ {
				i, j := t/g.kw, t%g.kw
				r := ch*kk + t
				for oy := s.oy0; oy < s.oy1; oy++ {
					iy := oy*g.sh - g.ph + i*g.dh
					if iy < 0 || iy >= g.h {
						continue
					}
					drow := dstImg[iy*g.w : (iy+1)*g.w]
					srow := col[r*ld+base+(oy-s.oy0)*g.ow : r*ld+base+(oy-s.oy0+1)*g.ow]
					ix0 := -g.pw + j*g.dw
					if g.sw == 1 {
						lo := max(0, -ix0)
						hi := min(g.ow, g.w-ix0)
						if hi > lo {
							d := drow[ix0+lo : ix0+hi]
							s := srow[lo:hi]
							for k := range d {
								d[k] += s[k]
							}
						}
						continue
					}
					for ox, v := range srow {
						ix := ox*g.sw + ix0
						if ix >= 0 && ix < g.w {
							drow[ix] += v
						}
					}
				}
			}
		}
	})
}

// blockRows returns the (ch × b.cols) matrix of channels [c0, c0+ch) of t
// (N, C, oh·ow) at the block's positions: a view with row stride oh·ow when
// the block is one segment, else a gathered copy in scratch (row stride
// b.cols). ld is the row stride; release returns scratch.
func (c *CPU) blockRows(t []float32, totalC, c0, ch int, g convGeom, b colBlock, gather bool) (m []float32, ld int, release func()) {
	ohw := g.oh * g.ow
	if b.single() {
		s := b.segs[0]
		off := (s.n*totalC+c0)*ohw + s.oy0*g.ow
		return t[off:], ohw, func() {}
	}
	buf := c.getScratch(ch * b.cols)
	if gather {
		col := 0
		for _, s := range b.segs {
			n := (s.oy1 - s.oy0) * g.ow
			for k := 0; k < ch; k++ {
				src := (s.n*totalC+c0+k)*ohw + s.oy0*g.ow
				copy(buf[k*b.cols+col:k*b.cols+col+n], t[src:src+n])
			}
			col += n
		}
	}
	return buf, b.cols, func() { c.putScratch(buf) }
}

// scatterRows writes (add: adds) a gathered (ch × b.cols) matrix back to
// channels [c0, c0+ch) of t (N, C, oh·ow).
func scatterRows(t, m []float32, totalC, c0, ch int, g convGeom, b colBlock, add bool) {
	ohw := g.oh * g.ow
	col := 0
	for _, s := range b.segs {
		n := (s.oy1 - s.oy0) * g.ow
		for k := 0; k < ch; k++ {
			dst := t[(s.n*totalC+c0+k)*ohw+s.oy0*g.ow:][:n]
			src := m[k*b.cols+col:][:n]
			if add {
				for i := range dst {
					dst[i] += src[i]
				}
			} else {
				copy(dst, src)
			}
		}
		col += n
	}
}

// columns returns the block's column matrix for group gr: im2col into
// scratch, or, for a pointwise convolution over one segment, the image itself.
func (c *CPU) columns(img []float32, g convGeom, gr int, b colBlock) (col []float32, ld int, release func()) {
	if g.pointwise() {
		return c.blockRows(img, g.cin, gr*g.cinG, g.cinG, g, b, true)
	}
	col = c.getScratch(g.kSize * b.cols)
	c.im2col(col, img, g, gr*g.cinG, b)
	return col, b.cols, func() { c.putScratch(col) }
}

// convForwardGEMM sets out (N, cout, oh·ow) = W·im2col(img) for every group.
func (c *CPU) convForwardGEMM(out, img, w []float32, g convGeom) {
	for _, b := range colBlocks(g, c.colLimit) {
		for gr := 0; gr < g.groups; gr++ {
			col, ldc, rel := c.columns(img, g, gr, b)
			y, ldy, relY := c.blockRows(out, g.cout, gr*g.coutG, g.coutG, g, b, false)
			c.sgemm(false, false, g.coutG, b.cols, g.kSize, 1,
				w[gr*g.coutG*g.kSize:(gr+1)*g.coutG*g.kSize], g.kSize, col, ldc, 0, y, ldy)
			if !b.single() {
				scatterRows(out, y, g.cout, gr*g.coutG, g.coutG, g, b, false)
			}
			relY()
			rel()
		}
	}
}

// convBackwardGEMM is the GEMM form of a convolution's backward pass in
// geometry g: colGrad (N, cout, oh·ow) is the gradient at the column side, img
// (N, cin, h, w) the image side's input. It adds the filter gradient
// dw += colGrad·im2col(img)ᵀ and the image gradient dimg += col2im(Wᵀ·colGrad)
// (either may be nil).
func (c *CPU) convBackwardGEMM(dimg, dw, colGrad, img, w []float32, g convGeom) {
	for _, b := range colBlocks(g, c.colLimit) {
		for gr := 0; gr < g.groups; gr++ {
			gy, ldg, relG := c.blockRows(colGrad, g.cout, gr*g.coutG, g.coutG, g, b, true)
			wg := w[gr*g.coutG*g.kSize : (gr+1)*g.coutG*g.kSize]
			if dw != nil {
				col, ldc, rel := c.columns(img, g, gr, b)
				c.sgemm(false, true, g.coutG, g.kSize, b.cols, 1, gy, ldg, col, ldc,
					1, dw[gr*g.coutG*g.kSize:(gr+1)*g.coutG*g.kSize], g.kSize)
				rel()
			}
			if dimg != nil {
				if g.pointwise() {
					d, ldd, relD := c.blockRows(dimg, g.cin, gr*g.cinG, g.cinG, g, b, false)
					beta := float32(1)
					if !b.single() {
						beta = 0
					}
					c.sgemm(true, false, g.kSize, b.cols, g.coutG, 1, wg, g.kSize, gy, ldg, beta, d, ldd)
					if !b.single() {
						scatterRows(dimg, d, g.cin, gr*g.cinG, g.cinG, g, b, true)
					}
					relD()
				} else {
					col := c.getScratch(g.kSize * b.cols)
					c.sgemm(true, false, g.kSize, b.cols, g.coutG, 1, wg, g.kSize, gy, ldg, 0, col, b.cols)
					c.col2im(dimg, col, g, gr*g.cinG, b)
					c.putScratch(col)
				}
			}
			relG()
		}
	}
}

// ConvTranspose2D is the data gradient of a convolution: per block and group,
// col = W_gᵀ·x_g, then y = col2im(col) + b.
func (c *CPU) ConvTranspose2D(y, x, w, b *Tensor, p ConvParams) {
	g := convT2DGeom("ConvTranspose2D", x, w, b, y, p)
	clear(y.Data)
	c.convBackwardGEMM(y.Data, nil, x.Data, nil, w.Data, g)
	if b != nil {
		c.addBias(y.Data, b.Data, g.n, g.cin, g.h*g.w)
	}
}

// ConvTranspose2DBackward adds the gradients of ConvTranspose2D: the input
// gradient is the forward convolution of dy, the weight gradient its filter
// gradient with the roles of x and dy exchanged.
func (c *CPU) ConvTranspose2DBackward(dx, dw, db, dy, x, w *Tensor, p ConvParams) {
	g := convT2DGeom("ConvTranspose2DBackward", x, w, db, dy, p)
	if dx != nil {
		mustShape("ConvTranspose2DBackward", "dx", dx, x.Shape...)
	}
	if dw != nil {
		mustShape("ConvTranspose2DBackward", "dw", dw, w.Shape...)
	}
	if db != nil {
		c.biasGrad(db.Data, dy.Data, g.n, g.cin, g.h*g.w)
	}
	if dx == nil && dw == nil {
		return
	}
	for _, b := range colBlocks(g, c.colLimit) {
		for gr := 0; gr < g.groups; gr++ {
			col, ldc, rel := c.columns(dy.Data, g, gr, b)
			wg := w.Data[gr*g.coutG*g.kSize : (gr+1)*g.coutG*g.kSize]
			if dx != nil {
				d, ldd, relD := c.blockRows(dx.Data, g.cout, gr*g.coutG, g.coutG, g, b, false)
				beta := float32(1)
				if !b.single() {
					beta = 0
				}
				c.sgemm(false, false, g.coutG, b.cols, g.kSize, 1, wg, g.kSize, col, ldc, beta, d, ldd)
				if !b.single() {
					scatterRows(dx.Data, d, g.cout, gr*g.coutG, g.coutG, g, b, true)
				}
				relD()
			}
			if dw != nil {
				xg, ldx, relX := c.blockRows(x.Data, g.cout, gr*g.coutG, g.coutG, g, b, true)
				c.sgemm(false, true, g.coutG, g.kSize, b.cols, 1, xg, ldx, col, ldc,
					1, dw.Data[gr*g.coutG*g.kSize:(gr+1)*g.coutG*g.kSize], g.kSize)
				relX()
			}
			rel()
		}
	}
}
