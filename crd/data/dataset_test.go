package data

import (
	"context"
	"errors"
	"fmt"
	"image/color"
	"strings"
	"sync"
	"testing"

	"go.uber.org/zap/zaptest"
)

// toFloat is torchvision's ToTensor + Normalize(0.5, 0.5) of p, C×H×W, written
// independently of Dataset.transform.
func toFloat(p pixels) []float32 {
	out := make([]float32, 0, len(p.pix))
	for ch := range p.c {
		for i := ch; i < len(p.pix); i += p.c {
			out = append(out, (float32(p.pix[i])/255-0.5)/0.5)
		}
	}
	return out
}

// window is the s×s window of p at (x, y), flipped left-right if flip.
func window(p pixels, x, y, s int, flip bool) pixels {
	q := pixels{w: s, h: s, c: p.c}
	for r := range s {
		for k := range s {
			sx := x + k
			if flip {
				sx = x + s - 1 - k
			}
			q.pix = append(q.pix, p.pix[((y+r)*p.w+sx)*p.c:][:p.c]...)
		}
	}
	return q
}

func evalOpts(size, channels int) Options {
	return Options{CropSize: size, Channels: channels, Eval: true}
}

func TestExampleEvalMatchesPIL(t *testing.T) {
	ctx := context.Background()
	src := memSource(map[string][]byte{"testA/src.png": readTestdata(t, "src.png")})
	for _, tc := range []struct {
		size, channels int
		golden         string
	}{{48, 3, "resize_48x48.png"}, {30, 1, "l_resize_30x30.png"}} {
		d, err := OpenSingle(ctx, src, "testA", evalOpts(tc.size, tc.channels), zaptest.NewLogger(t))
		if err != nil {
			t.Fatal(err)
		}
		ex, err := d.Example(ctx, 1, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		want := toFloat(readGolden(t, tc.golden, tc.channels))
		if !equalF32(ex.A, want) {
			t.Errorf("Example(eval, crop %d, channels %d).A differs from PIL's resize → ToTensor → Normalize (%s)", tc.size, tc.channels, tc.golden)
		}
		if ex.B != nil || ex.PathA != "testA/src.png" {
			t.Errorf("single Example: B has %d values, PathA %q; want none and testA/src.png", len(ex.B), ex.PathA)
		}
	}
}

// TestTrainingExampleIsAWindowOfPILResize checks the training path against Pillow: every
// example is one crop_size window of the PIL-resized image, flipped or not, and over
// epochs the windows move and both flips occur.
func TestTrainingExampleIsAWindowOfPILResize(t *testing.T) {
	ctx := context.Background()
	src := memSource(map[string][]byte{"trainA/src.png": readTestdata(t, "src.png")})
	opt := Options{LoadSize: 48, CropSize: 40, Flip: true, Channels: 3}
	d, err := OpenSingle(ctx, src, "trainA", opt, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	resized := readGolden(t, "resize_48x48.png", 3)
	type aug struct {
		x, y int
		flip bool
	}
	seen := map[aug]int{}
	flips := 0
	for epoch := range 24 {
		ex, err := d.Example(ctx, 7, epoch, 0)
		if err != nil {
			t.Fatal(err)
		}
		var found []aug
		for y := 0; y <= 8; y++ {
			for x := 0; x <= 8; x++ {
				for _, f := range []bool{false, true} {
					if equalF32(ex.A, toFloat(window(resized, x, y, 40, f))) {
						found = append(found, aug{x, y, f})
					}
				}
			}
		}
		if len(found) != 1 {
			t.Fatalf("Example(seed 7, epoch %d, 0) matches %d windows of the PIL-resized image (%v); want exactly 1", epoch, len(found), found)
		}
		seen[found[0]]++
		if found[0].flip {
			flips++
		}
	}
	if len(seen) < 12 || flips == 0 || flips == 24 {
		t.Errorf("24 epochs gave %d distinct windows and %d flips; want the crop to move and both flips to occur", len(seen), flips)
	}
}

func alignedSource(t *testing.T, n, half, h int, identicalHalves bool) Source {
	files := map[string][]byte{}
	for i := range n {
		a := noise(uint64(i), half, h)
		b := a
		if !identicalHalves {
			b = noise(uint64(1000+i), half, h)
		}
		files[fmt.Sprintf("train/%03d.png", i)] = encodePNG(t, sideBySide(a, b))
	}
	files["train/notes.txt"] = []byte("not an image")
	return memSource(files)
}

func TestAlignedSameCropAndFlipForAAndB(t *testing.T) {
	ctx := context.Background()
	opt := Options{LoadSize: 40, CropSize: 32, Flip: true, Channels: 3}
	for _, identical := range []bool{true, false} {
		d, err := OpenAligned(ctx, alignedSource(t, 4, 24, 24, identical), "train", opt, zaptest.NewLogger(t))
		if err != nil {
			t.Fatal(err)
		}
		if d.Len() != 4 {
			t.Fatalf("Len() = %d; want 4 (notes.txt is not an image)", d.Len())
		}
		for epoch := range 8 {
			for i := range d.Len() {
				ex, err := d.Example(ctx, 3, epoch, i)
				if err != nil {
					t.Fatal(err)
				}
				if len(ex.A) != 3*32*32 || len(ex.B) != 3*32*32 {
					t.Fatalf("Example: len(A), len(B) = %d, %d; want %d", len(ex.A), len(ex.B), 3*32*32)
				}
				if same := equalF32(ex.A, ex.B); same != identical {
					t.Errorf("halves identical %v: Example(epoch %d, %d): A == B is %v; want %v", identical, epoch, i, same, identical)
				}
			}
		}
	}
}

func TestAlignedHalvesAndBtoA(t *testing.T) {
	ctx := context.Background()
	log := zaptest.NewLogger(t)
	// Width 2·12+1: A is columns [0, 12), B the 13 columns [12, 25), as PIL splits at int(w/2).
	a, b := noise(1, 12, 12), noise(2, 13, 12)
	src := memSource(map[string][]byte{
		"val/ab.png": encodePNG(t, sideBySide(a, b)),
		"a/a.png":    encodePNG(t, a),
		"b/b.png":    encodePNG(t, b),
	})
	opt := evalOpts(16, 3)
	ab, err := OpenAligned(ctx, src, "val", opt, log)
	if err != nil {
		t.Fatal(err)
	}
	opt.BtoA = true
	ba, err := OpenAligned(ctx, src, "val", opt, log)
	if err != nil {
		t.Fatal(err)
	}
	opt.BtoA = false
	da, _ := OpenSingle(ctx, src, "a", opt, log)
	db, _ := OpenSingle(ctx, src, "b", opt, log)
	exAB, _ := ab.Example(ctx, 0, 0, 0)
	exBA, _ := ba.Example(ctx, 0, 0, 0)
	exA, _ := da.Example(ctx, 0, 0, 0)
	exB, _ := db.Example(ctx, 0, 0, 0)
	if !equalF32(exAB.A, exA.A) || !equalF32(exAB.B, exB.A) {
		t.Errorf("aligned 25-pixel-wide image: A, B are not the 12-column left and 13-column right parts")
	}
	if !equalF32(exBA.A, exB.A) || !equalF32(exBA.B, exA.A) {
		t.Errorf("btoa: A, B are not the right and left parts")
	}
}

func TestExampleIsDeterministic(t *testing.T) {
	ctx := context.Background()
	log := zaptest.NewLogger(t)
	opt := Options{LoadSize: 36, CropSize: 28, Flip: true, Channels: 3}
	src := alignedSource(t, 6, 20, 20, false)
	d1, err := OpenAligned(ctx, src, "train", opt, log)
	if err != nil {
		t.Fatal(err)
	}
	d2, err := OpenAligned(ctx, src, "train", opt, log)
	if err != nil {
		t.Fatal(err)
	}
	// The same (seed, epoch, i) from another dataset value, on other goroutines, in another
	// order, gives the same bytes.
	want := map[[2]int]Example{}
	for epoch := range 3 {
		for i := range d1.Len() {
			ex, err := d1.Example(ctx, 11, epoch, i)
			if err != nil {
				t.Fatal(err)
			}
			want[[2]int{epoch, i}] = ex
		}
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var bad []string
	for epoch := 2; epoch >= 0; epoch-- {
		for i := d2.Len() - 1; i >= 0; i-- {
			wg.Go(func() {
				ex, err := d2.Example(ctx, 11, epoch, i)
				w := want[[2]int{epoch, i}]
				if err != nil || !equalF32(ex.A, w.A) || !equalF32(ex.B, w.B) {
					mu.Lock()
					bad = append(bad, fmt.Sprintf("(epoch %d, %d): err %v", epoch, i, err))
					mu.Unlock()
				}
			})
		}
	}
	wg.Wait()
	if len(bad) > 0 {
		t.Errorf("Example(seed 11, …) differs between calls at %v", bad)
	}
	// Another epoch or another seed moves the crop (or flips) for most examples.
	for _, alt := range []struct {
		name  string
		seed  uint64
		epoch int
	}{{"epoch 1", 11, 1}, {"seed 12", 12, 0}} {
		differ := 0
		for i := range d1.Len() {
			ex, _ := d1.Example(ctx, alt.seed, alt.epoch, i)
			if !equalF32(ex.A, want[[2]int{0, i}].A) {
				differ++
			}
		}
		if differ < d1.Len()-1 {
			t.Errorf("%s: %d of %d examples differ from seed 11 epoch 0; want (nearly) all", alt.name, differ, d1.Len())
		}
	}
}

func TestUnaligned(t *testing.T) {
	ctx := context.Background()
	log := zaptest.NewLogger(t)
	files := map[string][]byte{}
	for i := range 3 {
		files[fmt.Sprintf("trainA/a%d.png", i)] = encodePNG(t, noise(uint64(i), 10, 10))
	}
	for i := range 5 {
		files[fmt.Sprintf("trainB/b%d.jpg", i)] = encodeJPEG(t, noise(uint64(10+i), 10, 10))
	}
	src := memSource(files)
	opt := Options{LoadSize: 12, CropSize: 8, Flip: true, Channels: 3}
	d, err := OpenUnaligned(ctx, src, "trainA", "trainB", opt, log)
	if err != nil {
		t.Fatal(err)
	}
	if d.Len() != 5 {
		t.Fatalf("Len() = %d; want max(3, 5) = 5", d.Len())
	}
	bSeen := map[string]bool{}
	for epoch := range 6 {
		for i := range 5 {
			ex, err := d.Example(ctx, 5, epoch, i)
			if err != nil {
				t.Fatal(err)
			}
			if want := fmt.Sprintf("trainA/a%d.png", i%3); ex.PathA != want {
				t.Errorf("Example(epoch %d, %d).PathA = %s; want %s", epoch, i, ex.PathA, want)
			}
			bSeen[ex.PathB] = true
		}
	}
	if len(bSeen) != 5 {
		t.Errorf("30 examples drew B from %d files; want all 5 (B is drawn at random)", len(bSeen))
	}
	// Eval pairs A[i mod |A|] with B[i mod |B|].
	opt.Eval = true
	e, err := OpenUnaligned(ctx, src, "trainA", "trainB", opt, log)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		ex, err := e.Example(ctx, 5, 0, i)
		if err != nil {
			t.Fatal(err)
		}
		if wa, wb := fmt.Sprintf("trainA/a%d.png", i%3), fmt.Sprintf("trainB/b%d.jpg", i); ex.PathA != wa || ex.PathB != wb {
			t.Errorf("eval Example(%d): paths %s, %s; want %s, %s", i, ex.PathA, ex.PathB, wa, wb)
		}
	}
	opt.BtoA = true
	if _, err := OpenUnaligned(ctx, src, "trainA", "trainB", opt, log); err == nil {
		t.Errorf("OpenUnaligned with btoa succeeded; want an error (swap the splits)")
	}
}

func TestCompatOfficialDropsLastFileOfUnalignedAndSingleSplits(t *testing.T) {
	ctx := context.Background()
	log := zaptest.NewLogger(t)
	files := map[string][]byte{}
	for i := range 3 {
		files[fmt.Sprintf("testA/%d.png", i)] = encodePNG(t, noise(uint64(i), 6, 6))
		files[fmt.Sprintf("testB/%d.png", i)] = encodePNG(t, noise(uint64(i), 6, 6))
		files[fmt.Sprintf("val/%d.png", i)] = encodePNG(t, noise(uint64(i), 12, 6))
	}
	src := memSource(files)
	for _, tc := range []struct {
		compat           Compat
		unaligned, align int
	}{{"", 3, 3}, {CompatIntended, 3, 3}, {CompatOfficial, 2, 3}} {
		opt := evalOpts(6, 3)
		opt.Compat = tc.compat
		u, err := OpenUnaligned(ctx, src, "testA", "testB", opt, log)
		if err != nil {
			t.Fatal(err)
		}
		s, err := OpenSingle(ctx, src, "testA", opt, log)
		if err != nil {
			t.Fatal(err)
		}
		a, err := OpenAligned(ctx, src, "val", opt, log)
		if err != nil {
			t.Fatal(err)
		}
		if u.Len() != tc.unaligned || s.Len() != tc.unaligned || a.Len() != tc.align {
			t.Errorf("compat %q: unaligned, single, aligned Len = %d, %d, %d; want %d, %d, %d",
				tc.compat, u.Len(), s.Len(), a.Len(), tc.unaligned, tc.unaligned, tc.align)
		}
		if tc.compat == CompatOfficial {
			if last := u.a[len(u.a)-1]; last != "testA/1.png" {
				t.Errorf("compat official: last A file %s; want testA/1.png (testA/2.png, the last sorted, dropped)", last)
			}
		}
	}
	// A split of one file is empty after the drop: an error that says why.
	one := memSource(map[string][]byte{"testA/0.png": files["testA/0.png"]})
	opt := evalOpts(6, 3)
	opt.Compat = CompatOfficial
	_, err := OpenSingle(ctx, one, "testA", opt, log)
	if err == nil || !strings.Contains(err.Error(), "compat official") {
		t.Errorf("OpenSingle(one file, compat official) = %v; want an empty-split error mentioning compat official", err)
	}
}

func TestEmptySplitIsAnErrorNamingSourceAndSplit(t *testing.T) {
	ctx := context.Background()
	log := zaptest.NewLogger(t)
	src := memSource(map[string][]byte{"trainA/readme.txt": []byte("x"), "trainB/b.png": encodePNG(t, noise(1, 4, 4))})
	for name, open := range map[string]func() error{
		"empty A": func() error {
			_, err := OpenUnaligned(ctx, src, "trainA", "trainB", DefaultOptions(), log)
			return err
		},
		"missing split": func() error {
			_, err := OpenAligned(ctx, src, "train", DefaultOptions(), log)
			return err
		},
	} {
		err := open()
		if err == nil || !strings.Contains(err.Error(), "mem://test") || !strings.Contains(err.Error(), "train") {
			t.Errorf("%s: error %v; want one naming mem://test and the split", name, err)
		}
	}
}

func TestOptionsValidate(t *testing.T) {
	if err := DefaultOptions().Validate(); err != nil {
		t.Errorf("DefaultOptions().Validate() = %v; want nil", err)
	}
	for _, tc := range []struct {
		opt  Options
		want []string
	}{
		{Options{LoadSize: 200, CropSize: 256, Channels: 3}, []string{"data.load_size", "200"}},
		{Options{LoadSize: 10, CropSize: 0, Channels: 2, Compat: "old"}, []string{"data.crop_size", "data.channels", "data.compat", `"old"`}},
		{Options{CropSize: 64, Channels: 3, Eval: true}, nil}, // load_size unused in eval
	} {
		err := tc.opt.Validate()
		if (err == nil) != (tc.want == nil) {
			t.Errorf("%+v.Validate() = %v; want error mentioning %v", tc.opt, err, tc.want)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%+v.Validate() = %q; want it to mention %s", tc.opt, err, w)
			}
		}
	}
}

func TestExampleUnreadableImageIsImageError(t *testing.T) {
	ctx := context.Background()
	good := encodePNG(t, noise(1, 8, 8))
	src := memSource(map[string][]byte{
		"trainA/0.png": good,
		"trainA/1.png": good[:len(good)/2],          // truncated
		"trainA/2.png": []byte("GIF89a not png"),    // wrong format
		"trainA/3.bmp": []byte("BM a bitmap maybe"), // listed, not decoded
		"trainA/4.png": encodePNG(t, solid(1, 4, color.NRGBA{A: 255})),
	})
	d, err := OpenAligned(ctx, src, "trainA", evalOpts(8, 3), zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.Example(ctx, 0, 0, 0); err != nil {
		t.Errorf("Example(0) = %v; want the good file to load", err)
	}
	for i, key := range []string{1: "trainA/1.png", 2: "trainA/2.png", 3: "trainA/3.bmp", 4: "trainA/4.png"} {
		if i == 0 {
			continue
		}
		_, err := d.Example(ctx, 0, 0, i)
		var ie *ImageError
		if !errors.As(err, &ie) || ie.Key != key || !strings.Contains(err.Error(), "mem://test/"+key) {
			t.Errorf("Example(%d) = %v; want an *ImageError naming mem://test/%s", i, err, key)
		}
	}
	if _, err := d.Example(ctx, 0, 0, 5); err == nil {
		t.Errorf("Example(5) of 5 succeeded; want an out-of-range error")
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := d.Example(cancelled, 0, 0, 0); !errors.Is(err, context.Canceled) {
		t.Errorf("Example with a cancelled context = %v; want context.Canceled, not an image error", err)
	}
}
