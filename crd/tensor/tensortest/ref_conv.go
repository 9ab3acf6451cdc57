package tensortest

import (
	"fmt"

	"github.com/crdgo/crdgo/crd/tensor"
)

// RefConv2D is torch.nn.functional.conv2d: x (N,Cin,H,W), w (Cout,Cin/G,KH,KW),
// b (Cout) or absent, result (N,Cout,OH,OW) with
// OH = ⌊(H + 2·PadH − DilationH·(KH−1) − 1) / StrideH⌋ + 1 (OW likewise) and
//
//	y[n,o,oy,ox] = b[o] + Σ_{c,i,j} x[n, g·Cin/G + c, oy·SH − PH + i·DH, ox·SW − PW + j·DW] · w[o,c,i,j]
//
// where g = o / (Cout/G) is o's group and taps outside the image count as 0.
func RefConv2D(x, w, b Array, p tensor.ConvParams) Array {
	p = p.Norm()
	n, cin, h, wd := must4D("RefConv2D", "x", x)
	cout, cg, kh, kw := must4D("RefConv2D", "w", w)
	gr := p.Groups
	if cin%gr != 0 || cout%gr != 0 || cg != cin/gr {
		panic(fmt.Sprintf("tensortest: RefConv2D: x %v, w %v, groups %d", x.Shape, w.Shape, gr))
	}
	mustVec("RefConv2D", "b", b, cout)
	oh := (h+2*p.PadH-p.DilationH*(kh-1)-1)/p.StrideH + 1
	ow := (wd+2*p.PadW-p.DilationW*(kw-1)-1)/p.StrideW + 1
	if oh <= 0 || ow <= 0 {
		panic(fmt.Sprintf("tensortest: RefConv2D: x %v, w %v, %+v: empty output", x.Shape, w.Shape, p))
	}
	og := cout / gr
	y := Zeros(n, cout, oh, ow)
	for in := 0; in < n; in++ {
		for o := 0; o < cout; o++ {
			g := o / og
			for oy := 0; oy < oh; oy++ {
				for ox := 0; ox < ow; ox++ {
					s := vecAt(b, o, 0)
					for c := 0; c < cg; c++ {
						ci := g*cg + c
						for i := 0; i < kh; i++ {
							iy := oy*p.StrideH - p.PadH + i*p.DilationH
							if iy < 0 || iy >= h {
								continue
							}
							for j := 0; j < kw; j++ {
								ix := ox*p.StrideW - p.PadW + j*p.DilationW
								if ix < 0 || ix >= wd {
									continue
								}
								s += x.Data[((in*cin+ci)*h+iy)*wd+ix] * w.Data[((o*cg+c)*kh+i)*kw+j]
							}
						}
					}
					y.Data[((in*cout+o)*oh+oy)*ow+ox] = s
				}
			}
		}
	}
	return y
}

// RefConvTranspose2D is torch.nn.functional.conv_transpose2d: x (N,Cin,H,W),
// w (Cin,Cout/G,KH,KW) as PyTorch stores it, b (Cout) or absent, result
// (N,Cout,OH,OW) with OH = (H−1)·StrideH − 2·PadH + DilationH·(KH−1) + OutPadH + 1.
// Every input pixel scatters its kernel into the output:
//
//	y[n, g·Cout/G + o, iy·SH − PH + i·DH, ix·SW − PW + j·DW] += x[n,c,iy,ix] · w[c,o,i,j]
//
// for c in group g = c / (Cin/G), dropping positions outside the output; then b
// is added. PyTorch requires OutPad < max(Stride, Dilation) on each axis.
func RefConvTranspose2D(x, w, b Array, p tensor.ConvParams) Array {
	p = p.Norm()
	n, cin, h, wd := must4D("RefConvTranspose2D", "x", x)
	wcin, og, kh, kw := must4D("RefConvTranspose2D", "w", w)
	gr := p.Groups
	if wcin != cin || cin%gr != 0 {
		panic(fmt.Sprintf("tensortest: RefConvTranspose2D: x %v, w %v, groups %d", x.Shape, w.Shape, gr))
	}
	if p.OutPadH >= max(p.StrideH, p.DilationH) || p.OutPadW >= max(p.StrideW, p.DilationW) || p.OutPadH < 0 || p.OutPadW < 0 {
		panic(fmt.Sprintf("tensortest: RefConvTranspose2D: output padding %d×%d with %+v", p.OutPadH, p.OutPadW, p))
	}
	cout := og * gr
	mustVec("RefConvTranspose2D", "b", b, cout)
	oh := (h-1)*p.StrideH - 2*p.PadH + p.DilationH*(kh-1) + p.OutPadH + 1
	ow := (wd-1)*p.StrideW - 2*p.PadW + p.DilationW*(kw-1) + p.OutPadW + 1
	if oh <= 0 || ow <= 0 {
		panic(fmt.Sprintf("tensortest: RefConvTranspose2D: x %v, w %v, %+v: empty output", x.Shape, w.Shape, p))
	}
	cg := cin / gr
	y := Zeros(n, cout, oh, ow)
	for in := 0; in < n; in++ {
		for c := 0; c < cin; c++ {
			g := c / cg
			for iy := 0; iy < h; iy++ {
				for ix := 0; ix < wd; ix++ {
					v := x.Data[((in*cin+c)*h+iy)*wd+ix]
					for o := 0; o < og; o++ {
						oc := g*og + o
						for i := 0; i < kh; i++ {
							oy := iy*p.StrideH - p.PadH + i*p.DilationH
							if oy < 0 || oy >= oh {
								continue
							}
							for j := 0; j < kw; j++ {
								ox := ix*p.StrideW - p.PadW + j*p.DilationW
								if ox < 0 || ox >= ow {
									continue
								}
								y.Data[((in*cout+oc)*oh+oy)*ow+ox] += v * w.Data[((c*og+o)*kh+i)*kw+j]
							}
						}
					}
				}
			}
		}
	}
	if !b.absent() {
		for i := range y.Data {
			y.Data[i] += b.Data[(i/(oh*ow))%cout]
		}
	}
	return y
}
