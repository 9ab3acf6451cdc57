package data

import (
	"bytes"
	"context"
	"fmt"
	"image"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"go.uber.org/zap/zaptest"
)

func synthesize(t *testing.T, dir string, cfg SynthConfig) {
	t.Helper()
	if err := Synthesize(context.Background(), dir, cfg, nil, zaptest.NewLogger(t)); err != nil {
		t.Fatal(err)
	}
}

// tree maps every file under dir to its bytes.
func tree(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	files := map[string][]byte{}
	err := filepath.WalkDir(dir, func(p string, e os.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		rel, _ := filepath.Rel(dir, p)
		files[filepath.ToSlash(rel)] = b
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

func TestSynthLayoutAndDeterminism(t *testing.T) {
	for _, tc := range []struct {
		kind    string
		folders map[string]int // files per folder
		w, h    int
	}{
		{SynthEdges2Shapes, map[string]int{"train": 5, "val": 3}, 64, 32},
		{SynthShapes2Night, map[string]int{"trainA": 5, "trainB": 5, "testA": 3, "testB": 3}, 32, 32},
	} {
		t.Run(tc.kind, func(t *testing.T) {
			cfg := SynthConfig{Kind: tc.kind, Size: 32, N: 5, NTest: 3, Seed: 7, Workers: 1}
			one, many, other := t.TempDir(), t.TempDir(), t.TempDir()
			synthesize(t, one, cfg)
			cfg.Workers = 3
			synthesize(t, many, cfg)
			a, b := tree(t, one), tree(t, many)
			if !mapsEqual(a, b) {
				t.Errorf("files differ between 1 and 3 workers")
			}
			want := []string{"synth.json"}
			for f, n := range tc.folders {
				for i := range n {
					want = append(want, fmt.Sprintf("%s/%04d.png", f, i))
				}
			}
			var got []string
			for name, body := range a {
				got = append(got, name)
				if name == "synth.json" {
					continue
				}
				img, err := png.Decode(bytes.NewReader(body))
				if err != nil {
					t.Fatalf("%s: %v", name, err)
				}
				if r := img.Bounds(); r.Dx() != tc.w || r.Dy() != tc.h {
					t.Errorf("%s is %dx%d; want %dx%d", name, r.Dx(), r.Dy(), tc.w, tc.h)
				}
			}
			slices.Sort(got)
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Errorf("files %v; want %v", got, want)
			}
			cfg.Seed = 8
			synthesize(t, other, cfg)
			c := tree(t, other)
			for name := range a {
				if name != "synth.json" && bytes.Equal(a[name], c[name]) {
					t.Errorf("%s is the same for seeds 7 and 8", name)
				}
			}
			// Again into the same directory: nothing to do. Another dataset there: refused.
			cfg.Seed = 7
			synthesize(t, one, cfg)
			if !mapsEqual(tree(t, one), a) {
				t.Errorf("synthesizing the same dataset again changed the files")
			}
			cfg.N = 6
			err := Synthesize(context.Background(), one, cfg, nil, zaptest.NewLogger(t))
			if err == nil || !strings.Contains(err.Error(), "not empty") {
				t.Errorf("Synthesize(n 6) over the n 5 dataset = %v; want a not-empty error", err)
			}
		})
	}
}

func mapsEqual(a, b map[string][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || !bytes.Equal(v, w) {
			return false
		}
	}
	return true
}

func TestSynthConfigValidate(t *testing.T) {
	if err := DefaultSynthConfig().Validate(); err != nil {
		t.Errorf("DefaultSynthConfig().Validate() = %v", err)
	}
	err := SynthConfig{Kind: "zebras", Size: 8, N: 0, NTest: 0, Workers: -1}.Validate()
	for _, w := range []string{`"zebras"`, "synth.size", "synth.n:", "synth.n_test", "synth.workers"} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("Validate(bad config) = %v; want it to mention %s", err, w)
		}
	}
}

// TestSynthOpensAsDatasets reads what synth writes through the dataset code, in the
// layouts the recipes use.
func TestSynthOpensAsDatasets(t *testing.T) {
	ctx := context.Background()
	log := zaptest.NewLogger(t)
	dir := t.TempDir()
	synthesize(t, filepath.Join(dir, "e2s"), SynthConfig{Kind: SynthEdges2Shapes, Size: 16, N: 4, NTest: 2, Seed: 1})
	synthesize(t, filepath.Join(dir, "s2n"), SynthConfig{Kind: SynthShapes2Night, Size: 16, N: 4, NTest: 2, Seed: 1})
	opt := Options{LoadSize: 18, CropSize: 16, Flip: true, Channels: 3}
	for _, open := range []func() (*Dataset, error){
		func() (*Dataset, error) { return OpenAligned(ctx, Dir(filepath.Join(dir, "e2s")), "train", opt, log) },
		func() (*Dataset, error) {
			return OpenAligned(ctx, Dir(filepath.Join(dir, "e2s")), "val", evalOpts(16, 3), log)
		},
		func() (*Dataset, error) {
			return OpenUnaligned(ctx, Dir(filepath.Join(dir, "s2n")), "trainA", "trainB", opt, log)
		},
		func() (*Dataset, error) {
			return OpenUnaligned(ctx, Dir(filepath.Join(dir, "s2n")), "testA", "testB", evalOpts(16, 3), log)
		},
	} {
		d, err := open()
		if err != nil {
			t.Fatal(err)
		}
		for i := range d.Len() {
			if _, err := d.Example(ctx, 1, 0, i); err != nil {
				t.Errorf("%s: Example(%d): %v", d, i, err)
			}
		}
	}
}

func at(img *image.RGBA, x, y float64) [3]int {
	i := img.PixOffset(int(x), int(y))
	return [3]int{int(img.Pix[i]), int(img.Pix[i+1]), int(img.Pix[i+2])}
}

// TestEdges2ShapesBFollowsFromA checks what makes the paired task learnable: A shows each
// shape's outline (dark on the boundary, white inside), B fills it with its type's colour,
// and shapes do not overlap.
func TestEdges2ShapesBFollowsFromA(t *testing.T) {
	const size = 64
	dominant := map[shapeKind]int{circle: 0, square: 2, triangle: 1} // R, B, G
	kinds := map[shapeKind]int{}
	for i := range 200 {
		g := pcgRand{stream(3, streamSynth, 0, uint64(i))}
		shapes := randomShapes(g, size)
		if len(shapes) == 0 {
			t.Fatalf("scene %d has no shapes", i)
		}
		a, b := edgesImage(shapes, size), shadedImage(shapes, size)
		for k, sh := range shapes {
			kinds[sh.kind]++
			if sh.cx-sh.r < 0 || sh.cy-sh.r < 0 || sh.cx+sh.r > size || sh.cy+sh.r > size {
				t.Errorf("scene %d shape %d (%+v) leaves the image", i, k, sh)
			}
			for _, o := range shapes[:k] {
				if math.Hypot(sh.cx-o.cx, sh.cy-o.cy) < sh.r+o.r {
					t.Errorf("scene %d: shapes %+v and %+v overlap", i, sh, o)
				}
			}
			if c := at(a, sh.cx, sh.cy); c != [3]int{255, 255, 255} {
				t.Errorf("scene %d shape %d: A at the centre = %v; want white", i, k, c)
			}
			// A point on the boundary: a vertex's midpoint to the next for polygons.
			bx, by := sh.cx+sh.r, sh.cy
			if p := sh.poly(); p != nil {
				bx, by = (p[0][0]+p[1][0])/2, (p[0][1]+p[1][1])/2
			}
			if c := at(a, bx, by); c[0] > 160 {
				t.Errorf("scene %d shape %d: A on the outline at (%.1f, %.1f) = %v; want dark", i, k, bx, by, c)
			}
			c := at(b, sh.cx, sh.cy)
			d := dominant[sh.kind]
			for ch := range 3 {
				if ch != d && c[ch] >= c[d] {
					t.Errorf("scene %d shape %d (kind %d): B at the centre = %v; want channel %d to dominate", i, k, sh.kind, c, d)
				}
			}
		}
	}
	if len(kinds) != 3 {
		t.Errorf("200 scenes drew shape kinds %v; want all three", kinds)
	}
}

// edgeMap marks the 10% of pixels with the largest luminance gradient.
func edgeMap(img *image.RGBA) []bool {
	s := img.Rect.Dx()
	lum := func(x, y int) float64 {
		c := at(img, float64(x), float64(y))
		return 0.299*float64(c[0]) + 0.587*float64(c[1]) + 0.114*float64(c[2])
	}
	grad := make([]float64, s*s)
	for y := range s - 1 {
		for x := range s - 1 {
			grad[y*s+x] = math.Abs(lum(x+1, y)-lum(x, y)) + math.Abs(lum(x, y+1)-lum(x, y))
		}
	}
	sorted := slices.Clone(grad)
	slices.Sort(sorted)
	thr := sorted[len(sorted)*9/10]
	m := make([]bool, len(grad))
	for i, g := range grad {
		m[i] = g > thr && g > 0
	}
	return m
}

func iou(a, b []bool) float64 {
	var in, un int
	for i := range a {
		if a[i] && b[i] {
			in++
		}
		if a[i] || b[i] {
			un++
		}
	}
	return float64(in) / float64(max(un, 1))
}

// TestShapes2NightTestPairsShareAScene checks the ground truth of the unpaired set: testB[i]
// is the night rendering of testA[i]'s scene (its edges coincide with testA[i]'s far more
// than with another test scene's), it is darker, and the training splits come from
// independent scenes.
func TestShapes2NightTestPairsShareAScene(t *testing.T) {
	cfg := SynthConfig{Kind: SynthShapes2Night, Size: 64, N: 8, NTest: 8, Seed: 5}
	byFolder := map[string][]*image.RGBA{}
	for _, f := range cfg.files() {
		byFolder[f.folder] = append(byFolder[f.folder], cfg.render(f).(*image.RGBA))
	}
	mean := func(img *image.RGBA) float64 {
		s := 0.0
		for i, v := range img.Pix {
			if i%4 != 3 {
				s += float64(v)
			}
		}
		return s / float64(len(img.Pix)*3/4)
	}
	for i := range cfg.NTest {
		day, night := byFolder["testA"][i], byFolder["testB"][i]
		if md, mn := mean(day), mean(night); mn > 0.5*md {
			t.Errorf("test %d: night mean %.1f, day mean %.1f; want night much darker", i, mn, md)
		}
		same := iou(edgeMap(day), edgeMap(night))
		for j := range cfg.NTest {
			if j == i {
				continue
			}
			if other := iou(edgeMap(day), edgeMap(byFolder["testB"][j])); other >= same {
				t.Errorf("testA[%d]'s edges match testB[%d] (IoU %.2f) as well as testB[%d] (IoU %.2f); want its own night scene to match best", i, j, other, i, same)
			}
		}
	}
	for i := range cfg.N {
		a, b := byFolder["trainA"][i], byFolder["trainB"][i]
		if same := iou(edgeMap(a), edgeMap(b)); same > 0.5 {
			t.Errorf("trainA[%d] and trainB[%d] share edges (IoU %.2f); want independent scenes", i, i, same)
		}
	}
}

func BenchmarkSynthRender(b *testing.B) {
	for _, kind := range []string{SynthEdges2Shapes, SynthShapes2Night} {
		b.Run(kind, func(b *testing.B) {
			cfg := SynthConfig{Kind: kind, Size: 64, N: 1, NTest: 1, Seed: 1}
			var buf bytes.Buffer
			i := 0
			for b.Loop() {
				buf.Reset()
				if err := png.Encode(&buf, cfg.render(synthFile{folder: "train", scene: "train", index: i})); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
	}
}
