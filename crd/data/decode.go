package data

import (
	"bytes"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"io"
)

// Limits on one image file, checked before anything is allocated from its header.
const (
	MaxImageBytes  = 256 << 20 // bytes read from one file
	MaxImageSide   = 16384     // pixels, width or height
	MaxImagePixels = 1 << 25   // width·height (32 Mpx: 8192×4096)
)

// pixels is an 8-bit image: w×h pixels of c interleaved channels (1: L, 3: RGB), rows
// top to bottom, len(pix) = w·h·c. It is the PIL image of the reference pipeline.
type pixels struct {
	w, h, c int
	pix     []uint8
}

var (
	pngMagic  = []byte("\x89PNG\r\n\x1a\n")
	jpegMagic = []byte{0xff, 0xd8}
)

// readImage reads one image file whole (at most MaxImageBytes) and decodes it with
// decode.
func readImage(r io.Reader, channels int) (pixels, error) {
	buf, err := readAtMost(r, MaxImageBytes)
	if err != nil {
		return pixels{}, err
	}
	return decode(buf, channels)
}

// readAtMost reads r to its end, failing once it has read more than limit bytes.
func readAtMost(r io.Reader, limit int64) ([]byte, error) {
	buf, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, fmt.Errorf("read: %w", err)
	}
	if int64(len(buf)) > limit {
		return nil, fmt.Errorf("file larger than %d bytes", limit)
	}
	return buf, nil
}

// decode decodes a PNG or JPEG file and converts it as PIL's Image.convert does: to RGB
// (channels 3: grey replicated, palette looked up, alpha dropped without compositing) or
// to L (channels 1: L = (19595·R + 38470·G + 7471·B + 2¹⁵) >> 16 of the RGB values).
// The format is recognised by its magic bytes, not by the file name or by the image
// formats some other package registered, and the dimensions in the header are checked
// against MaxImageSide and MaxImagePixels before the decoder allocates the image.
func decode(buf []byte, channels int) (pixels, error) {
	var decodeConfig func(io.Reader) (image.Config, error)
	var decodeImage func(io.Reader) (image.Image, error)
	switch {
	case bytes.HasPrefix(buf, pngMagic):
		decodeConfig, decodeImage = png.DecodeConfig, png.Decode
	case bytes.HasPrefix(buf, jpegMagic):
		decodeConfig, decodeImage = jpeg.DecodeConfig, jpeg.Decode
	default:
		return pixels{}, errors.New("not a PNG or JPEG file")
	}
	cfg, err := decodeConfig(bytes.NewReader(buf))
	if err != nil {
		return pixels{}, err
	}
	if err := checkDims(cfg.Width, cfg.Height); err != nil {
		return pixels{}, err
	}
	img, err := decodeImage(bytes.NewReader(buf))
	if err != nil {
		return pixels{}, err
	}
	b := img.Bounds()
	if b.Dx() != cfg.Width || b.Dy() != cfg.Height {
		return pixels{}, fmt.Errorf("decoded %dx%d image, header says %dx%d", b.Dx(), b.Dy(), cfg.Width, cfg.Height)
	}
	p := toRGB(img)
	if channels == 1 {
		p = toL(p)
	}
	return p, nil
}

func checkDims(w, h int) error {
	switch {
	case w <= 0 || h <= 0:
		return fmt.Errorf("image is %dx%d pixels", w, h)
	case w > MaxImageSide || h > MaxImageSide:
		return fmt.Errorf("image is %dx%d pixels, more than %d on a side", w, h, MaxImageSide)
	case w*h > MaxImagePixels:
		return fmt.Errorf("image is %dx%d pixels, more than %d in all", w, h, MaxImagePixels)
	}
	return nil
}

// toRGB converts a decoded image to 8-bit RGB. The common decoder outputs (YCbCr from
// JPEG, converted as libjpeg does; Gray, NRGBA, Paletted from PNG) have direct loops; anything else goes through
// color.NRGBA64, keeping the high byte, as PIL does with 16-bit PNGs.
func toRGB(img image.Image) pixels {
	b := img.Bounds()
	w, h := b.Dx(), b.Dy()
	p := pixels{w: w, h: h, c: 3, pix: make([]uint8, w*h*3)}
	o := 0
	switch m := img.(type) {
	case *image.YCbCr:
		if b.Min == (image.Point{}) {
			return ycbcrToRGB(m)
		}
		for y := b.Min.Y; y < b.Max.Y; y++ {
			for x := b.Min.X; x < b.Max.X; x++ {
				yi, ci := m.YOffset(x, y), m.COffset(x, y)
				p.pix[o], p.pix[o+1], p.pix[o+2] = ycc(m.Y[yi], m.Cb[ci], m.Cr[ci])
				o += 3
			}
		}
	case *image.Gray:
		for y := b.Min.Y; y < b.Max.Y; y++ {
			for _, v := range m.Pix[m.PixOffset(b.Min.X, y):][:w] {
				p.pix[o], p.pix[o+1], p.pix[o+2] = v, v, v
				o += 3
			}
		}
	case *image.NRGBA:
		for y := b.Min.Y; y < b.Max.Y; y++ {
			row := m.Pix[m.PixOffset(b.Min.X, y):][:4*w]
			for x := 0; x < w; x++ {
				copy(p.pix[o:o+3], row[4*x:4*x+3])
				o += 3
			}
		}
	case *image.Paletted:
		var lut [256][3]uint8
		for i, c := range m.Palette[:min(len(m.Palette), len(lut))] {
			n := color.NRGBAModel.Convert(c).(color.NRGBA)
			lut[i] = [3]uint8{n.R, n.G, n.B}
		}
		// Indices beyond the palette (the PNG decoder rejects them; other producers may
		// not) read as black, PIL's value for a short palette.
		for y := b.Min.Y; y < b.Max.Y; y++ {
			for _, i := range m.Pix[m.PixOffset(b.Min.X, y):][:w] {
				copy(p.pix[o:o+3], lut[i][:])
				o += 3
			}
		}
	default:
		for y := b.Min.Y; y < b.Max.Y; y++ {
			for x := b.Min.X; x < b.Max.X; x++ {
				n := color.NRGBA64Model.Convert(img.At(x, y)).(color.NRGBA64)
				p.pix[o], p.pix[o+1], p.pix[o+2] = uint8(n.R>>8), uint8(n.G>>8), uint8(n.B>>8)
				o += 3
			}
		}
	}
	return p
}

// ycbcrToRGB converts a decoded JPEG as libjpeg(-turbo) does by default, which is what
// PIL returns: 4:2:0 and 4:2:2 chroma upsampled with libjpeg's "fancy" triangle filter
// (3/4 of the nearer chroma sample, 1/4 of the next, edges replicated, libjpeg's
// alternating rounding bias), where Go's decoder leaves the chroma planes subsampled and
// image.YCbCr.At repeats each sample; other ratios repeat samples as libjpeg does too.
// The colour conversion is libjpeg's fixed-point ycc_rgb_convert. What remains different
// from PIL is the inverse DCT (Go's is not libjpeg's jidctint), a level or so.
// m.Bounds().Min must be the origin, as jpeg.Decode returns it.
func ycbcrToRGB(m *image.YCbCr) pixels {
	w, h := m.Rect.Dx(), m.Rect.Dy()
	cw, ch := w, h // chroma plane size
	switch m.SubsampleRatio {
	case image.YCbCrSubsampleRatio420:
		cw, ch = (w+1)/2, (h+1)/2
	case image.YCbCrSubsampleRatio422:
		cw = (w + 1) / 2
	}
	cb := make([]uint8, w*h)
	cr := make([]uint8, w*h)
	for _, pl := range []struct{ in, out []uint8 }{{m.Cb, cb}, {m.Cr, cr}} {
		in := func(x, y int) int32 { return int32(pl.in[y*m.CStride+x]) }
		o := 0
		for y := range h {
			for x := range w {
				var v int32
				switch {
				case m.SubsampleRatio == image.YCbCrSubsampleRatio420 && cw > 2: // h2v2_fancy_upsample
					r, c := y/2, x/2
					r2 := min(r+1, ch-1) // the next nearer chroma row
					if y%2 == 0 {
						r2 = max(r-1, 0)
					}
					c2, bias := min(c+1, cw-1), int32(7)
					if x%2 == 0 {
						c2, bias = max(c-1, 0), 8
					}
					this := 3*in(c, r) + in(c, r2)
					next := 3*in(c2, r) + in(c2, r2)
					v = (3*this + next + bias) >> 4
				case m.SubsampleRatio == image.YCbCrSubsampleRatio422 && cw > 2: // h2v1_fancy_upsample
					c := x / 2
					c2, bias := min(c+1, cw-1), int32(2)
					if x%2 == 0 {
						c2, bias = max(c-1, 0), 1
					}
					v = (3*in(c, y) + in(c2, y) + bias) >> 2
				default:
					v = int32(pl.in[m.COffset(x, y)])
				}
				pl.out[o] = uint8(v)
				o++
			}
		}
	}
	p := pixels{w: w, h: h, c: 3, pix: make([]uint8, w*h*3)}
	for y := range h {
		for x := range w {
			i := y*w + x
			p.pix[3*i], p.pix[3*i+1], p.pix[3*i+2] = ycc(m.Y[y*m.YStride+x], cb[i], cr[i])
		}
	}
	return p
}

// ycc is libjpeg's ycc_rgb_convert for one pixel (16-bit fixed point, FIX(x) = ⌊x·2¹⁶ + ½⌋).
func ycc(y, cb, cr uint8) (r, g, b uint8) {
	const (
		half  = 1 << 15
		crToR = 91881  // FIX(1.40200)
		cbToB = 116130 // FIX(1.77200)
		crToG = 46802  // FIX(0.71414)
		cbToG = 22554  // FIX(0.34414)
	)
	yy, u, v := int32(y), int32(cb)-128, int32(cr)-128
	return clamp255(yy + (crToR*v+half)>>16),
		clamp255(yy + (-cbToG*u-crToG*v+half)>>16),
		clamp255(yy + (cbToB*u+half)>>16)
}

func clamp255(v int32) uint8 {
	return uint8(min(max(v, 0), 255))
}

// toL converts RGB to PIL's "L" with PIL's fixed-point ITU-R 601-2 luma (the reference's
// transforms.Grayscale(1) for one-channel models).
func toL(p pixels) pixels {
	q := pixels{w: p.w, h: p.h, c: 1, pix: make([]uint8, p.w*p.h)}
	for i := range q.pix {
		r, g, b := uint32(p.pix[3*i]), uint32(p.pix[3*i+1]), uint32(p.pix[3*i+2])
		q.pix[i] = uint8((r*19595 + g*38470 + b*7471 + 0x8000) >> 16)
	}
	return q
}

// sub copies the columns [x0, x1) of p: the A and B halves of an aligned image.
func (p pixels) sub(x0, x1 int) pixels {
	w := x1 - x0
	q := pixels{w: w, h: p.h, c: p.c, pix: make([]uint8, w*p.h*p.c)}
	for y := 0; y < p.h; y++ {
		copy(q.pix[y*w*p.c:(y+1)*w*p.c], p.pix[(y*p.w+x0)*p.c:(y*p.w+x1)*p.c])
	}
	return q
}
