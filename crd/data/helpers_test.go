package data

import (
	"bytes"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"math/rand/v2"
	"testing"
	"testing/fstest"
)

// noise is a w×h RGB image of uniform random values from seed.
func noise(seed uint64, w, h int) *image.NRGBA {
	g := rand.New(rand.NewPCG(seed, 0))
	img := image.NewNRGBA(image.Rect(0, 0, w, h))
	for i := range img.Pix {
		img.Pix[i] = uint8(g.UintN(256))
		if i%4 == 3 {
			img.Pix[i] = 255
		}
	}
	return img
}

// sideBySide puts a and b (same height) next to each other, a on the left.
func sideBySide(a, b *image.NRGBA) *image.NRGBA {
	wa, wb, h := a.Rect.Dx(), b.Rect.Dx(), a.Rect.Dy()
	img := image.NewNRGBA(image.Rect(0, 0, wa+wb, h))
	for y := range h {
		copy(img.Pix[y*img.Stride:], a.Pix[y*a.Stride:y*a.Stride+4*wa])
		copy(img.Pix[y*img.Stride+4*wa:], b.Pix[y*b.Stride:y*b.Stride+4*wb])
	}
	return img
}

func encodePNG(t testing.TB, img image.Image) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func encodeJPEG(t testing.TB, img image.Image) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, img, &jpeg.Options{Quality: 90}); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// memSource is a Source over the given files.
func memSource(files map[string][]byte) Source {
	fsys := fstest.MapFS{}
	for k, v := range files {
		fsys[k] = &fstest.MapFile{Data: v}
	}
	return FS(fsys, "mem://test")
}

// solid is a w×h image of one colour.
func solid(w, h int, c color.NRGBA) *image.NRGBA {
	img := image.NewNRGBA(image.Rect(0, 0, w, h))
	for i := 0; i < len(img.Pix); i += 4 {
		img.Pix[i], img.Pix[i+1], img.Pix[i+2], img.Pix[i+3] = c.R, c.G, c.B, c.A
	}
	return img
}

func equalF32(a, b []float32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
