package tensor

import "fmt"

// convGeom is the geometry of one 2-D convolution seen from its "image" side
// (x for Conv2D, y for ConvTranspose2D) and its "column" side.
type convGeom struct {
	n, cin, h, w       int // image side
	cout, oh, ow       int // column side (output of a convolution)
	kh, kw             int
	sh, sw, ph, pw     int
	dh, dw, groups     int
	cinG, coutG, kSize int // channels per group, rows of a group's column matrix
}

func (g convGeom) pointwise() bool {
	return g.kh == 1 && g.kw == 1 && g.sh == 1 && g.sw == 1 && g.ph == 0 && g.pw == 0
}

// depthwise reports a convolution with one input and one output channel per group.
func (g convGeom) depthwise() bool {
	return g.groups == g.cin && g.groups == g.cout && g.groups > 1
}

// conv2DGeom checks Conv2D's shapes and returns its geometry.
func conv2DGeom(op string, x, w, b, y *Tensor, p ConvParams) convGeom {
	p = p.Norm()
	if len(x.Shape) != 4 || len(w.Shape) != 4 {
		panic(fmt.Sprintf("tensor: %s: x %v, w %v: want 4-D", op, x.Shape, w.Shape))
	}
	g := convGeom{
		n: x.Shape[0], cin: x.Shape[1], h: x.Shape[2], w: x.Shape[3],
		cout: w.Shape[0], kh: w.Shape[2], kw: w.Shape[3],
		sh: p.StrideH, sw: p.StrideW, ph: p.PadH, pw: p.PadW, dh: p.DilationH, dw: p.DilationW,
		groups: p.Groups,
	}
	if g.cin%g.groups != 0 || g.cout%g.groups != 0 || w.Shape[1] != g.cin/g.groups {
		panic(fmt.Sprintf("tensor: %s: x %v, w %v, groups %d", op, x.Shape, w.Shape, g.groups))
	}
	g.oh = ConvOut(g.h, g.kh, g.sh, g.ph, g.dh)
	g.ow = ConvOut(g.w, g.kw, g.sw, g.pw, g.dw)
	if g.oh <= 0 || g.ow <= 0 {
		panic(fmt.Sprintf("tensor: %s: x %v with kernel %v, params %+v: empty output", op, x.Shape, w.Shape, p))
	}
	g.cinG, g.coutG = g.cin/g.groups, g.cout/g.groups
	g.kSize = g.cinG * g.kh * g.kw
	if y != nil {
		mustShape(op, "y", y, g.n, g.cout, g.oh, g.ow)
	}
	if b != nil {
		mustShape(op, "b", b, g.cout)
	}
	return g
}

// convT2DGeom checks ConvTranspose2D's shapes. The returned geometry is that of
// the forward convolution whose data gradient the transposed convolution is:
// its image side is y (N,Cout,OH,OW) and its column side is x (N,Cin,H,W).
func convT2DGeom(op string, x, w, b, y *Tensor, p ConvParams) convGeom {
	p = p.Norm()
	if len(x.Shape) != 4 || len(w.Shape) != 4 {
		panic(fmt.Sprintf("tensor: %s: x %v, w %v: want 4-D", op, x.Shape, w.Shape))
	}
	n, cin, h, wd := x.Shape[0], x.Shape[1], x.Shape[2], x.Shape[3]
	if w.Shape[0] != cin || cin%p.Groups != 0 {
		panic(fmt.Sprintf("tensor: %s: x %v, w %v, groups %d", op, x.Shape, w.Shape, p.Groups))
	}
	cout := w.Shape[1] * p.Groups
	kh, kw := w.Shape[2], w.Shape[3]
	oh := ConvTransposeOut(h, kh, p.StrideH, p.PadH, p.DilationH, p.OutPadH)
	ow := ConvTransposeOut(wd, kw, p.StrideW, p.PadW, p.DilationW, p.OutPadW)
	if p.OutPadH >= max(p.StrideH, p.DilationH) || p.OutPadW >= max(p.StrideW, p.DilationW) || oh <= 0 || ow <= 0 {
		panic(fmt.Sprintf("tensor: %s: x %v, w %v, params %+v: bad output padding or empty output", op, x.Shape, w.Shape, p))
	}
	g := convGeom{
		n: n, cin: cout, h: oh, w: ow, // image side: y
		cout: cin, oh: h, ow: wd, // column side: x
		kh: kh, kw: kw, sh: p.StrideH, sw: p.StrideW, ph: p.PadH, pw: p.PadW,
		dh: p.DilationH, dw: p.DilationW, groups: p.Groups,
	}
	g.cinG, g.coutG = g.cin/g.groups, g.cout/g.groups
	g.kSize = g.cinG * g.kh * g.kw
	// The forward convolution of y has h rows, or more when the output padding
	// reaches the stride (PyTorch allows OutPad < max(stride, dilation)): those
	// extra rows of y are touched by no input pixel and get only the bias.
	if ConvOut(oh, kh, g.sh, g.ph, g.dh) < h || ConvOut(ow, kw, g.sw, g.pw, g.dw) < wd {
		panic(fmt.Sprintf("tensor: %s: inconsistent geometry %+v", op, p))
	}
	if y != nil {
		mustShape(op, "y", y, n, cout, oh, ow)
	}
	if b != nil {
		mustShape(op, "b", b, cout)
	}
	return g
}

// Conv2D computes y = conv(x, w) + b through im2col + GEMM, with a direct kernel
// for depthwise convolutions.
func (c *CPU) Conv2D(y, x, w, b *Tensor, p ConvParams) {
	g := conv2DGeom("Conv2D", x, w, b, y, p)
	if g.depthwise() && w.Shape[1] == 1 {
		c.depthwiseForward(y.Data, x.Data, w.Data, g)
	} else {
		c.convForwardGEMM(y.Data, x.Data, w.Data, g)
	}
	if b != nil {
		c.addBias(y.Data, b.Data, g.n, g.cout, g.oh*g.ow)
	}
}

func (c *CPU) addBias(y, b []float32, n, ch, hw int) {
	c.parallelFor(n*ch, max(1, 8192/max(hw, 1)), func(lo, hi int) {
		for p := lo; p < hi; p++ {
			v := b[p%ch]
			row := y[p*hw : (p+1)*hw]
			for i := range row {
				row[i] += v
			}
		}
	})
}

// biasGrad adds db[c] += Σ_{n,hw} dy[n,c,hw], summed in float64.
func (c *CPU) biasGrad(db, dy []float32, n, ch, hw int) {
	c.parallelFor(ch, 1, func(lo, hi int) {
		for k := lo; k < hi; k++ {
			var s float64
			for i := 0; i < n; i++ {
				s += sum64(dy[(i*ch+k)*hw : (i*ch+k+1)*hw])
			}
			db[k] += float32(s)
		}
	})
}

// Conv2DBackward adds the gradients of Conv2D.
func (c *CPU) Conv2DBackward(dx, dw, db, dy, x, w *Tensor, p ConvParams) {
	g := conv2DGeom("Conv2DBackward", x, w, db, dy, p)
	if dx != nil {
		mustShape("Conv2DBackward", "dx", dx, x.Shape...)
	}
	if dw != nil {
		mustShape("Conv2DBackward", "dw", dw, w.Shape...)
	}
	if db != nil {
		c.biasGrad(db.Data, dy.Data, g.n, g.cout, g.oh*g.ow)
	}
	if g.depthwise() && w.Shape[1] == 1 {
		if dx != nil {
			c.depthwiseBackwardData(dx.Data, dy.Data, w.Data, g)
		}
		if dw != nil {
			c.depthwiseBackwardFilter(dw.Data, dy.Data, x.Data, g)
		}
		return
	}
	var dxd, dwd []float32
	if dx != nil {
		dxd = dx.Data
	}
	if dw != nil {
		dwd = dw.Data
	}
	c.convBackwardGEMM(dxd, dwd, dy.Data, x.Data, w.Data, g)
}

// depthwiseForward computes a depthwise convolution directly:
// out[n,c,oy,ox] = Σ_{i,j} w[c,i,j]·img[n,c,oy·s−p+i·d, ox·s−p+j·d].
func (c *CPU) depthwiseForward(out, img, w []float32, g convGeom) {
	hw, ohw, kk := g.h*g.w, g.oh*g.ow, g.kh*g.kw
	c.parallelFor(g.n*g.cin, 1, func(lo, hi int) {
		for pl := lo; pl < hi; pl++ {
			ch := pl % g.cin
			src := img[pl*hw : (pl+1)*hw]
			dst := out[pl*ohw : (pl+1)*ohw]
			wk := w[ch*kk : (ch+1)*kk]
			if g.kh == 3 && g.kw == 3 && g.sh == 1 && g.sw == 1 && g.ph == 0 && g.pw == 0 && g.dh == 1 && g.dw == 1 {
				dw3x3Valid(dst, src, wk, g.w, g.oh, g.ow)
				continue
			}
			for oy := 0; oy < g.oh; oy++ {
				for ox := 0; ox < g.ow; ox++ {
					var s float32
					for i := 0; i < g.kh; i++ {
						iy := oy*g.sh - g.ph + i*g.dh
						if iy < 0 || iy >= g.h {
							continue
						}
						for j := 0; j < g.kw; j++ {
							ix := ox*g.sw - g.pw + j*g.dw
							if ix >= 0 && ix < g.w {
								s += wk[i*g.kw+j] * src[iy*g.w+ix]
							}
						}
					}
					dst[oy*g.ow+ox] = s
				}
			}
		}
	})
}

// dw3x3Valid is the unpadded stride-1 3×3 depthwise kernel for one plane: the
// mobile ResNet block's case (reflection padding is a separate op).
func dw3x3Valid(dst, src, k []float32, w, oh, ow int) {
	k0, k1, k2, k3, k4, k5, k6, k7, k8 := k[0], k[1], k[2], k[3], k[4], k[5], k[6], k[7], k[8]
	for oy := 0; oy < oh; oy++ {
		r0 := src[oy*w : oy*w+ow+2]
		r1 := src[(oy+1)*w : (oy+1)*w+ow+2]
		r2 := src[(oy+2)*w : (oy+2)*w+ow+2]
		d := dst[oy*ow : (oy+1)*ow]
		for x := range d {
			d[x] = k0*r0[x] + k1*r0[x+1] + k2*r0[x+2] +
				k3*r1[x] + k4*r1[x+1] + k5*r1[x+2] +
				k6*r2[x] + k7*r2[x+1] + k8*r2[x+2]
		}
	}
}

// depthwiseBackwardData adds the input gradient of a depthwise convolution.
func (c *CPU) depthwiseBackwardData(dimg, dout, w []float32, g convGeom) {
	hw, ohw, kk := g.h*g.w, g.oh*g.ow, g.kh*g.kw
	c.parallelFor(g.n*g.cin, 1, func(lo, hi int) {
		for pl := lo; pl < hi; pl++ {
			ch := pl % g.cin
			dst := dimg[pl*hw : (pl+1)*hw]
			src := dout[pl*ohw : (pl+1)*ohw]
			wk := w[ch*kk : (ch+1)*kk]
			for i := 0; i < g.kh; i++ {
				for j := 0; j < g.kw; j++ {
					wv := wk[i*g.kw+j]
					for oy := 0; oy < g.oh; oy++ {
						iy := oy*g.sh - g.ph + i*g.dh
						if iy < 0 || iy >= g.h {
							continue
						}
						drow := dst[iy*g.w : (iy+1)*g.w]
						srow := src[oy*g.ow : (oy+1)*g.ow]
						ix0 := -g.pw + j*g.dw
						if g.sw == 1 {
							lo := max(0, -ix0)
							hi := min(g.ow, g.w-ix0)
							for ox := lo; ox < hi; ox++ {
								drow[ox+ix0] += wv * srow[ox]
							}
							continue
						}
						for ox, v := range srow {
							ix := ox*g.sw + ix0
							if ix >= 0 && ix < g.w {
								drow[ix] += wv * v
							}
						}
					}
				}
			}
		}
	})
}

// depthwiseBackwardFilter adds dw[c,i,j] += Σ_{n,oy,ox} dout·img at the tap,
// summed in float64 per channel.
func (c *CPU) depthwiseBackwardFilter(dwt, dout, img []float32, g convGeom) {
	hw, ohw, kk := g.h*g.w, g.oh*g.ow, g.kh*g.kw
	c.parallelFor(g.cin, 1, func(lo, hi int) {
		acc := make([]float64, kk)
		for ch := lo; ch < hi; ch++ {
			clear(acc)
			for n := 0; n < g.n; n++ {
				pl := n*g.cin + ch
				src := img[pl*hw : (pl+1)*hw]
				gy := dout[pl*ohw : (pl+1)*ohw]
				for i := 0; i < g.kh; i++ {
					for j := 0; j < g.kw; j++ {
						var s float32
						for oy := 0; oy < g.oh; oy++ {
							iy := oy*g.sh - g.ph + i*g.dh
							if iy < 0 || iy >= g.h {
								continue
							}
							srow := src[iy*g.w : (iy+1)*g.w]
							grow := gy[oy*g.ow : (oy+1)*g.ow]
							ix0 := -g.pw + j*g.dw
							if g.sw == 1 {
								lo := max(0, -ix0)
								hi := min(g.ow, g.w-ix0)
								for ox := lo; ox < hi; ox++ {
									s += grow[ox] * srow[ox+ix0]
								}
								continue
							}
							for ox, v := range grow {
								ix := ox*g.sw + ix0
								if ix >= 0 && ix < g.w {
									s += v * srow[ix]
								}
							}
						}
						acc[i*g.kw+j] += float64(s)
					}
				}
			}
			for t := range acc {
				dwt[ch*kk+t] += float32(acc[t])
			}
		}
	})
}

func sum64(a []float32) float64 {
	var s0, s1, s2, s3 float64
	i := 0
	for ; i+4 <= len(a); i += 4 {
		s0 += float64(a[i])
		s1 += float64(a[i+1])
		s2 += float64(a[i+2])
		s3 += float64(a[i+3])
	}
	for ; i < len(a); i++ {
		s0 += float64(a[i])
	}
	return (s0 + s1) + (s2 + s3)
}
