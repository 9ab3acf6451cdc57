package data

import (
	"fmt"
	"image/color"
	"image/png"
	"os"
	"path/filepath"
	"testing"
)

// The oracle images in testdata/pil come from Pillow (testdata/pil/gen.py), not from
// crdgo.

// readGolden reads a PNG written by gen.py as c-channel pixels through the standard
// library only (not through the code under test).
func readGolden(t *testing.T, name string, c int) pixels {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", "pil", name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	b := img.Bounds()
	p := pixels{w: b.Dx(), h: b.Dy(), c: c}
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			n := color.NRGBAModel.Convert(img.At(x, y)).(color.NRGBA)
			if c == 1 {
				p.pix = append(p.pix, n.R)
			} else {
				p.pix = append(p.pix, n.R, n.G, n.B)
			}
		}
	}
	return p
}

func readTestdata(t *testing.T, name string) []byte {
	t.Helper()
	buf, err := os.ReadFile(filepath.Join("testdata", "pil", name))
	if err != nil {
		t.Fatal(err)
	}
	return buf
}

// maxDiff is the largest |got − want| over all samples, and how many samples differ.
func maxDiff(t *testing.T, label string, got, want pixels) (max, n int) {
	t.Helper()
	if got.w != want.w || got.h != want.h || got.c != want.c {
		t.Fatalf("%s: got %dx%dx%d pixels; want %dx%dx%d", label, got.w, got.h, got.c, want.w, want.h, want.c)
	}
	for i := range got.pix {
		d := int(got.pix[i]) - int(want.pix[i])
		if d < 0 {
			d = -d
		}
		if d > 0 {
			n++
		}
		if d > max {
			max = d
		}
	}
	return max, n
}

func TestResizeMatchesPIL(t *testing.T) {
	src, err := decode(readTestdata(t, "src.png"), 3)
	if err != nil {
		t.Fatal(err)
	}
	for _, sz := range [][2]int{{48, 48}, {64, 40}, {17, 13}, {5, 3}, {37, 60}, {20, 29}, {1, 1}} {
		name := fmt.Sprintf("resize_%dx%d.png", sz[0], sz[1])
		got := resize(src, sz[0], sz[1])
		if m, n := maxDiff(t, name, got, readGolden(t, name, 3)); m != 0 {
			t.Errorf("resize(src.png, %dx%d): %d samples differ from PIL BICUBIC, by up to %d; want identical", sz[0], sz[1], n, m)
		}
	}
	l, err := decode(readTestdata(t, "src.png"), 1)
	if err != nil {
		t.Fatal(err)
	}
	if m, n := maxDiff(t, "l.png", l, readGolden(t, "l.png", 1)); m != 0 {
		t.Errorf("decode(src.png, channels 1): %d samples differ from PIL convert(\"L\"), by up to %d; want identical", n, m)
	}
	got := resize(l, 30, 30)
	if m, n := maxDiff(t, "l_resize_30x30.png", got, readGolden(t, "l_resize_30x30.png", 1)); m != 0 {
		t.Errorf("resize(L, 30x30): %d samples differ from PIL, by up to %d; want identical", n, m)
	}
}

func TestResizeSameSizeIsIdentity(t *testing.T) {
	p := pixels{w: 3, h: 2, c: 1, pix: []uint8{1, 2, 3, 4, 5, 6}}
	if q := resize(p, 3, 2); &q.pix[0] != &p.pix[0] {
		t.Errorf("resize to the same size copied the pixels; want them returned as they are")
	}
}

// TestDecodeMatchesPIL decodes each format as Pillow's Image.open(f).convert("RGB") does.
// PNG decoding is exact. Go's JPEG decoder differs from libjpeg's (integer IDCT
// rounding; libjpeg's "fancy" triangular chroma upsampling where Go replicates chroma
// samples), so JPEG pixels may differ by a few levels; the bounds below are what was
// measured on these files, so a regression shows.
func TestDecodeMatchesPIL(t *testing.T) {
	for _, tc := range []struct {
		file    string
		maxDiff int
	}{
		{"src.png", 0},
		{"paletted.png", 0},
		{"rgba.png", 0},
		{"l.png", 0},
		{"src.jpg", 2},
		{"src422.jpg", 3},
		{"src444.jpg", 2},
		{"l.jpg", 1},
	} {
		got, err := decode(readTestdata(t, tc.file), 3)
		if err != nil {
			t.Errorf("decode(%s): %v", tc.file, err)
			continue
		}
		want := "decoded_" + tc.file + ".png"
		switch tc.file {
		case "src.png":
			want = "src.png"
		case "l.png":
			want = "l.png"
		}
		m, n := maxDiff(t, tc.file, got, readGolden(t, want, 3))
		t.Logf("decode(%s): %d of %d samples differ from PIL, by up to %d", tc.file, n, len(got.pix), m)
		if m > tc.maxDiff {
			t.Errorf("decode(%s): %d samples differ from PIL by up to %d; want at most %d", tc.file, n, m, tc.maxDiff)
		}
	}
}
