package data

import (
	"bytes"
	"context"
	"encoding/binary"
	"hash/crc32"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"go.uber.org/zap"
)

// TestDecodeFormats decodes each kind of file the PNG and JPEG decoders produce and
// checks the RGB (and L) values against what PIL's convert gives for them.
func TestDecodeFormats(t *testing.T) {
	c := color.NRGBA{R: 200, G: 100, B: 50, A: 255}
	gray := image.NewGray(image.Rect(0, 0, 5, 4))
	for i := range gray.Pix {
		gray.Pix[i] = 77
	}
	pal := image.NewPaletted(image.Rect(0, 0, 5, 4), color.Palette{color.NRGBA{1, 2, 3, 255}, c})
	for i := range pal.Pix {
		pal.Pix[i] = 1
	}
	translucent := solid(5, 4, color.NRGBA{R: 200, G: 100, B: 50, A: 10}) // alpha dropped, not composited
	deep := image.NewRGBA64(image.Rect(0, 0, 5, 4))
	for y := range 4 {
		for x := range 5 {
			deep.SetRGBA64(x, y, color.RGBA64{R: 200<<8 | 0xff, G: 100 << 8, B: 50<<8 | 0x80, A: 0xffff})
		}
	}
	g16 := image.NewGray16(image.Rect(0, 0, 5, 4))
	for i := 0; i < len(g16.Pix); i += 2 {
		g16.Pix[i], g16.Pix[i+1] = 77, 200
	}
	for _, tc := range []struct {
		name    string
		file    []byte
		want    [3]uint8
		tol     int // JPEG is lossy
		wantErr string
	}{
		{"png rgb", encodePNG(t, solid(5, 4, c)), [3]uint8{200, 100, 50}, 0, ""},
		{"png gray", encodePNG(t, gray), [3]uint8{77, 77, 77}, 0, ""},
		{"png paletted", encodePNG(t, pal), [3]uint8{200, 100, 50}, 0, ""},
		{"png rgba", encodePNG(t, translucent), [3]uint8{200, 100, 50}, 0, ""},
		{"png 16-bit rgb", encodePNG(t, deep), [3]uint8{200, 100, 50}, 0, ""},
		{"png 16-bit gray", encodePNG(t, g16), [3]uint8{77, 77, 77}, 0, ""},
		{"jpeg rgb", encodeJPEG(t, solid(5, 4, c)), [3]uint8{200, 100, 50}, 3, ""},
		{"jpeg gray", encodeJPEG(t, gray), [3]uint8{77, 77, 77}, 1, ""},
		{"gif", []byte("GIF89a\x05\x00\x04\x00"), [3]uint8{}, 0, "not a PNG or JPEG"},
		{"empty", nil, [3]uint8{}, 0, "not a PNG or JPEG"},
		{"truncated png", encodePNG(t, solid(5, 4, c))[:40], [3]uint8{}, 0, "unexpected EOF"},
	} {
		p, err := decode(tc.file, 3)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("decode(%s) = %v; want an error containing %q", tc.name, err, tc.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("decode(%s): %v", tc.name, err)
			continue
		}
		if p.w != 5 || p.h != 4 || p.c != 3 {
			t.Errorf("decode(%s): %dx%dx%d; want 5x4x3", tc.name, p.w, p.h, p.c)
			continue
		}
		for i := 0; i < len(p.pix); i += 3 {
			for ch := range 3 {
				if d := int(p.pix[i+ch]) - int(tc.want[ch]); d > tc.tol || -d > tc.tol {
					t.Fatalf("decode(%s): pixel %d = %v; want %v ± %d", tc.name, i/3, p.pix[i:i+3], tc.want, tc.tol)
				}
			}
		}
		l, err := decode(tc.file, 1)
		if err != nil || l.c != 1 || len(l.pix) != 20 {
			t.Fatalf("decode(%s, channels 1) = %d channels, %d values, %v", tc.name, l.c, len(l.pix), err)
		}
		r, g, b := uint32(p.pix[0]), uint32(p.pix[1]), uint32(p.pix[2])
		if want := uint8((r*19595 + g*38470 + b*7471 + 0x8000) >> 16); l.pix[0] != want {
			t.Errorf("decode(%s, channels 1) = %d; want PIL's L of %v = %d", tc.name, l.pix[0], p.pix[:3], want)
		}
	}
}

// withIHDR returns a copy of the PNG file with its header's width and height replaced
// (and the chunk's CRC fixed), so that it claims a size its data does not have.
func withIHDR(t testing.TB, file []byte, w, h uint32) []byte {
	t.Helper()
	f := bytes.Clone(file)
	if string(f[12:16]) != "IHDR" {
		t.Fatalf("first chunk is %q; want IHDR", f[12:16])
	}
	binary.BigEndian.PutUint32(f[16:], w)
	binary.BigEndian.PutUint32(f[20:], h)
	binary.BigEndian.PutUint32(f[29:], crc32.ChecksumIEEE(f[12:29]))
	return f
}

func TestDecodeRejectsHugeImagesBeforeAllocating(t *testing.T) {
	small := encodePNG(t, solid(4, 4, color.NRGBA{A: 255}))
	for _, tc := range []struct {
		w, h uint32
		want string
	}{
		{MaxImageSide + 1, 1, "more than 16384 on a side"},
		{1, 1 << 30, "on a side"},
		{16384, 16384, "in all"},
	} {
		f := withIHDR(t, small, tc.w, tc.h)
		var err error
		if n := allocBytes(func() { _, err = decode(f, 3) }); n > 1<<20 {
			t.Errorf("decode(PNG claiming %dx%d) allocated %d bytes; want it rejected from the header", tc.w, tc.h, n)
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("decode(PNG claiming %dx%d) = %v; want an error containing %q", tc.w, tc.h, err, tc.want)
		}
	}
}

// allocBytes is how many bytes fn allocates on the heap.
func allocBytes(fn func()) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	fn()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

func TestReadCapsFileSize(t *testing.T) {
	// A reader that never ends must not be read without bound (MaxImageBytes in
	// readImage; a small limit here to keep the test light).
	_, err := readAtMost(endless{}, 1000)
	if err == nil || !strings.Contains(err.Error(), "larger than 1000 bytes") {
		t.Errorf("readAtMost(endless stream, 1000) = %v; want a too-large error", err)
	}
	buf, err := readAtMost(strings.NewReader("12345"), 5)
	if err != nil || string(buf) != "12345" {
		t.Errorf("readAtMost(5 bytes, 5) = %q, %v; want all of it", buf, err)
	}
}

type endless struct{}

func (endless) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = 0x89
	}
	return len(p), nil
}

// fuzzMaxPixels bounds the images FuzzExample decodes: 16× the largest seed
// (64×40). Each of the three layouts decodes the file, and a mutated header of
// 2^20 pixels (the bound until issue 19) cost three 4 MiB images a run.
const fuzzMaxPixels = 1 << 16

// FuzzExample feeds arbitrary bytes through the whole example path (source, decode,
// split, resize, crop, flip) as an aligned, an unaligned and a single dataset: an error
// is fine, a panic or a huge allocation is not, and what loads has the promised shape.
func FuzzExample(f *testing.F) {
	entries, err := os.ReadDir(filepath.Join("testdata", "pil"))
	if err != nil {
		f.Fatal(err)
	}
	for _, e := range entries {
		if ext := filepath.Ext(e.Name()); ext == ".png" || ext == ".jpg" {
			buf, err := os.ReadFile(filepath.Join("testdata", "pil", e.Name()))
			if err != nil {
				f.Fatal(err)
			}
			f.Add(buf)
			f.Add(buf[:len(buf)/2])
		}
	}
	f.Add(withIHDR(f, encodePNG(f, solid(4, 4, color.NRGBA{A: 255})), fuzzMaxPixels, 1))
	f.Add([]byte{0xff, 0xd8, 0xff})
	f.Add([]byte("\x89PNG\r\n\x1a\n"))
	ctx := context.Background()
	log := zap.NewNop()
	opt := Options{LoadSize: 10, CropSize: 8, Flip: true, Channels: 3}
	f.Fuzz(func(t *testing.T, file []byte) {
		// Big but valid headers would make each run slow, not wrong: skip them as
		// image/png's own fuzz test does (decode's limits are tested above).
		if cfg, err := png.DecodeConfig(bytes.NewReader(file)); err == nil && cfg.Width*cfg.Height > fuzzMaxPixels {
			return
		}
		if cfg, err := jpeg.DecodeConfig(bytes.NewReader(file)); err == nil && cfg.Width*cfg.Height > fuzzMaxPixels {
			return
		}
		src := memSource(map[string][]byte{"x/f.png": file})
		for _, open := range []func() (*Dataset, error){
			func() (*Dataset, error) { return OpenAligned(ctx, src, "x", opt, log) },
			func() (*Dataset, error) { return OpenUnaligned(ctx, src, "x", "x", opt, log) },
			func() (*Dataset, error) { return OpenSingle(ctx, src, "x", opt, log) },
		} {
			d, err := open()
			if err != nil {
				t.Fatal(err)
			}
			ex, err := d.Example(ctx, 1, 0, 0)
			if err != nil {
				continue
			}
			if len(ex.A) != 3*8*8 || (d.Paired() && len(ex.B) != 3*8*8) {
				t.Fatalf("Example: len(A) = %d, len(B) = %d; want %d", len(ex.A), len(ex.B), 3*8*8)
			}
			for _, v := range ex.A {
				if !(v >= -1 && v <= 1) {
					t.Fatalf("Example: value %v outside [-1, 1]", v)
				}
			}
		}
	})
}
