package data

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"image"
	"image/draw"
	"image/png"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"
)

// The synthetic datasets give every recipe a task with a ground truth on a machine with
// no downloads, in the folder layouts of the real ones (docs/crd.md §6):
//
//   - edges2shapes (paired, pix2pix layout): DIR/train/NNNN.png and DIR/val/NNNN.png, each
//     2S×S: A on the left, an edge map (dark outlines on white) of one to three shapes
//     (circle, square, triangle: random size, position and rotation, never overlapping), B
//     on the right, the same shapes filled and shaded on a plain background. B is a
//     function of A: the colour is the shape's type (circle red, square blue, triangle
//     green), the light comes from the top left (spheres for circles, a gradient across
//     squares and triangles, a drop shadow to the bottom right), so a generator can learn
//     A → B exactly and the type is readable from the outline.
//   - shapes2night (unpaired, CycleGAN layout): DIR/trainA (day: buildings with roofs and
//     windows, trees and a sun on a bright sky over green ground) and DIR/trainB (night:
//     the same kinds of scene darkened, windows lit, a moon for the sun), trainA and trainB
//     drawn from independent scenes. DIR/testA[i] and DIR/testB[i] are the day and the
//     night rendering of one scene: open the test splits with Options.Eval, which pairs
//     A[i] with B[i], and testB is the ground truth for PSNR/SSIM of A → B.
//
// Scene i of split s is drawn from a generator seeded by (Seed, kind, s, i), so the files
// are the same for the same configuration whatever the number of workers. DIR/synth.json,
// written last, records the configuration: a directory without it is incomplete.
// DIR/synth.partial.json, written first (before any image) and removed last, records it
// too: it is crdgo's proof that it wrote the files of an interrupted generation, and the
// only thing that lets Synthesize remove files (exactly those that configuration names).
// A folder without it is never emptied: a non-empty split folder is an error.
const (
	SynthEdges2Shapes = "edges2shapes"
	SynthShapes2Night = "shapes2night"
)

// SynthConfig describes a synthetic dataset.
type SynthConfig struct {
	Kind    string `json:"kind"`   // SynthEdges2Shapes or SynthShapes2Night
	Size    int    `json:"size"`   // S: images are S×S (edges2shapes files are 2S×S)
	N       int    `json:"n"`      // training examples: train pairs, or images in each of trainA, trainB
	NTest   int    `json:"n_test"` // val pairs, or images in each of testA, testB
	Seed    uint64 `json:"seed"`
	Workers int    `json:"-"` // goroutines; 0: GOMAXPROCS (the output does not depend on it)
}

// DefaultSynthConfig is the demo recipe's dataset: 2,000 64×64 edges2shapes pairs and 200
// for validation.
func DefaultSynthConfig() SynthConfig {
	return SynthConfig{Kind: SynthEdges2Shapes, Size: 64, N: 2000, NTest: 200, Seed: 1}
}

// Validate reports every invalid field at once.
func (c SynthConfig) Validate() error {
	var errs []error
	if c.Kind != SynthEdges2Shapes && c.Kind != SynthShapes2Night {
		errs = append(errs, fmt.Errorf("synth.kind: must be %q or %q, got %q", SynthEdges2Shapes, SynthShapes2Night, c.Kind))
	}
	if c.Size < 16 || c.Size > 4096 {
		errs = append(errs, fmt.Errorf("synth.size: must be in [16, 4096], got %d", c.Size))
	}
	if c.N < 1 || c.N > 10_000_000 {
		errs = append(errs, fmt.Errorf("synth.n: must be in [1, 10000000], got %d", c.N))
	}
	if c.NTest < 1 || c.NTest > 10_000_000 {
		errs = append(errs, fmt.Errorf("synth.n_test: must be in [1, 10000000], got %d", c.NTest))
	}
	if c.Workers < 0 {
		errs = append(errs, fmt.Errorf("synth.workers: must be ≥ 0 (0: one per CPU), got %d", c.Workers))
	}
	return errors.Join(errs...)
}

// synthFile is one file to write: scene index of split (the split also names the
// folder unless folder is set).
type synthFile struct {
	folder string
	scene  string // split whose scene generator is used
	index  int
	night  bool // shapes2night: render at night
}

// files lists what cfg writes, in a fixed order.
func (c SynthConfig) files() []synthFile {
	var fs []synthFile
	add := func(folder, scene string, n int, night bool) {
		for i := range n {
			fs = append(fs, synthFile{folder: folder, scene: scene, index: i, night: night})
		}
	}
	switch c.Kind {
	case SynthEdges2Shapes:
		add("train", "train", c.N, false)
		add("val", "val", c.NTest, false)
	case SynthShapes2Night:
		add("trainA", "trainA", c.N, false)
		add("trainB", "trainB", c.N, true)
		add("testA", "test", c.NTest, false)
		add("testB", "test", c.NTest, true)
	}
	return fs
}

// Files is the number of image files cfg writes (for progress bars).
func (c SynthConfig) Files() int { return len(c.files()) }

// Folders are the split folders cfg writes under its directory.
func (c SynthConfig) Folders() []string {
	if c.Kind == SynthEdges2Shapes {
		return []string{"train", "val"}
	}
	return []string{"trainA", "trainB", "testA", "testB"}
}

const (
	synthMarker   = "synth.json"         // written last: the dataset is complete
	partialMarker = "synth.partial.json" // written first, removed last: crdgo is writing this dataset
	maxMarker     = 1 << 16              // bytes: a marker is a few lines of JSON
)

// fileName is the path of f under dir.
func (c SynthConfig) fileName(dir string, f synthFile) string {
	width := max(4, len(strconv.Itoa(max(c.N, c.NTest)-1)))
	return filepath.Join(dir, f.folder, fmt.Sprintf("%0*d.png", width, f.index))
}

// readMarker decodes a marker file; ok is false when there is none.
func readMarker(path string) (cfg SynthConfig, ok bool, err error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return SynthConfig{}, false, nil
	}
	if err != nil {
		return SynthConfig{}, false, fmt.Errorf("data: synth: %w", err)
	}
	defer f.Close()
	buf, err := io.ReadAll(io.LimitReader(f, maxMarker+1))
	if err != nil {
		return SynthConfig{}, false, fmt.Errorf("data: synth: %s: %w", path, err)
	}
	if len(buf) > maxMarker {
		return SynthConfig{}, false, fmt.Errorf("data: synth: %s: larger than %d bytes: not a marker crdgo wrote", path, maxMarker)
	}
	if err := json.Unmarshal(buf, &cfg); err != nil {
		return SynthConfig{}, false, fmt.Errorf("data: synth: %s: %w", path, err)
	}
	return cfg, true, nil
}

// SynthDone reports whether dir holds the complete dataset cfg describes: its synth.json
// exists and records the same kind, size, counts and seed.
func SynthDone(dir string, cfg SynthConfig) (bool, error) {
	if st, err := os.Stat(dir); err == nil && !st.IsDir() {
		return false, fmt.Errorf("data: synth: %s is a file, not a directory", dir)
	}
	got, ok, err := readMarker(filepath.Join(dir, synthMarker))
	if !ok || err != nil {
		return false, err
	}
	got.Workers = cfg.Workers
	return got == cfg, nil
}

// CheckSynthTarget reports, without writing anything, why Synthesize would
// refuse to write cfg's dataset into dir: dir is a file, or a split folder holds
// files that an interrupted generation's marker does not name (a user's files,
// or another dataset's), or that marker is not one crdgo wrote. nil when dir
// already holds the dataset or Synthesize may write it. Callers check first so
// that a refused folder is left exactly as it was (no lock file either).
func CheckSynthTarget(dir string, cfg SynthConfig) error {
	if done, err := SynthDone(dir, cfg); err != nil || done {
		return err
	}
	own := map[string]bool{}
	if _, err := os.Lstat(filepath.Join(dir, synthMarker)); errors.Is(err, os.ErrNotExist) {
		marker := filepath.Join(dir, partialMarker)
		prev, ok, err := readMarker(marker)
		if err != nil {
			return err
		}
		if ok {
			if err := prev.Validate(); err != nil {
				return fmt.Errorf("data: synth: %s: %w: not a marker crdgo wrote; remove the folder yourself if it is yours to remove", marker, err)
			}
			for _, f := range prev.files() {
				own[prev.fileName(dir, f)] = true
			}
		}
	}
	for _, f := range cfg.Folders() {
		p := filepath.Join(dir, f)
		entries, err := os.ReadDir(p)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("data: synth: %w", err)
		}
		foreign := 0
		for _, e := range entries {
			if !own[filepath.Join(p, e.Name())] || !e.Type().IsRegular() {
				foreign++
			}
		}
		if foreign > 0 {
			return fmt.Errorf("data: synth: %s is not empty (%d entries) and %s does not describe this dataset: remove it or choose another directory", p, foreign, filepath.Join(dir, synthMarker))
		}
	}
	return nil
}

// removeInterrupted removes what an interrupted Synthesize wrote into dir, and
// nothing else: only when dir holds partialMarker and no synth.json, only the
// regular files the marker's configuration names, then the split folders and the
// marker if they are left empty. A file the user put there stays, and then makes
// the split folder non-empty, which Synthesize refuses.
func removeInterrupted(dir string, log *zap.Logger) error {
	marker := filepath.Join(dir, partialMarker)
	prev, ok, err := readMarker(marker)
	if !ok || err != nil {
		return err
	}
	if _, err := os.Lstat(filepath.Join(dir, synthMarker)); err == nil {
		return nil // complete: the marker outlived the last write by a moment
	}
	if err := prev.Validate(); err != nil {
		return fmt.Errorf("data: synth: %s: %w: not a marker crdgo wrote; remove the folder yourself if it is yours to remove", marker, err)
	}
	removed := 0
	for _, f := range prev.files() {
		p := prev.fileName(dir, f)
		if st, err := os.Lstat(p); err != nil || !st.Mode().IsRegular() {
			continue
		}
		if err := os.Remove(p); err != nil {
			return fmt.Errorf("data: synth: remove %s of an interrupted generation: %w", p, err)
		}
		removed++
	}
	for _, f := range prev.Folders() {
		os.Remove(filepath.Join(dir, f)) // only if empty: what else is there stays
	}
	if err := os.Remove(marker); err != nil {
		return fmt.Errorf("data: synth: %w", err)
	}
	log.Warn("removed the files of an interrupted synthetic dataset generation", zap.String("dir", dir),
		zap.String("kind", prev.Kind), zap.Int("files", removed))
	return nil
}

// writeSynced writes b to path and flushes it to disk.
func writeSynced(path string, b []byte) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// Synthesize writes the dataset cfg describes into dir (created if missing), calling
// progress (if not nil; from several goroutines at once) after each file. If dir already
// holds that dataset (SynthDone) it does nothing. It first removes the files of an
// interrupted generation (those its synth.partial.json names); then, if one of the split
// folders exists and is not empty, it refuses rather than mix datasets or delete files it
// did not write.
func Synthesize(ctx context.Context, dir string, cfg SynthConfig, progress func(), log *zap.Logger) error {
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("data: synth: %w", err)
	}
	if done, err := SynthDone(dir, cfg); err != nil {
		return err
	} else if done {
		log.Info("synthetic dataset already present", zap.String("dir", dir), zap.String("kind", cfg.Kind))
		return nil
	}
	if err := removeInterrupted(dir, log); err != nil {
		return err
	}
	for _, f := range cfg.Folders() {
		p := filepath.Join(dir, f)
		entries, err := os.ReadDir(p)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("data: synth: %w", err)
		}
		if len(entries) > 0 {
			return fmt.Errorf("data: synth: %s is not empty (%d entries) and %s does not describe this dataset: remove it or choose another directory", p, len(entries), filepath.Join(dir, synthMarker))
		}
	}
	marker, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return fmt.Errorf("data: synth: %w", err)
	}
	marker = append(marker, '\n')
	// The partial marker goes to disk before any image: from here on, whatever is
	// left by a crash can be proved crdgo's and removed.
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("data: synth: %w", err)
	}
	if err := writeSynced(filepath.Join(dir, partialMarker), marker); err != nil {
		return fmt.Errorf("data: synth: %w", err)
	}
	if err := syncDir(dir); err != nil {
		return fmt.Errorf("data: synth: %w", err)
	}
	for _, f := range cfg.Folders() {
		if err := os.MkdirAll(filepath.Join(dir, f), 0o755); err != nil {
			return fmt.Errorf("data: synth: %w", err)
		}
	}
	start := time.Now()
	files := cfg.files()
	workers := cfg.Workers
	if workers == 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	g, ctx := errgroup.WithContext(ctx)
	next := make(chan synthFile)
	g.Go(func() error {
		defer close(next)
		for _, f := range files {
			select {
			case next <- f:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return nil
	})
	for range workers {
		g.Go(func() error {
			var buf bytes.Buffer
			enc := png.Encoder{BufferPool: &pngBuffers{}} // one per goroutine: reuses the deflate state
			for f := range next {
				buf.Reset()
				if err := enc.Encode(&buf, cfg.render(f)); err != nil {
					return fmt.Errorf("data: synth: encode %s/%d: %w", f.folder, f.index, err)
				}
				name := cfg.fileName(dir, f)
				if err := os.WriteFile(name, buf.Bytes(), 0o644); err != nil {
					return fmt.Errorf("data: synth: %w", err)
				}
				if progress != nil {
					progress()
				}
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	if err := writeSynced(filepath.Join(dir, synthMarker), marker); err != nil {
		return fmt.Errorf("data: synth: %w", err)
	}
	if err := os.Remove(filepath.Join(dir, partialMarker)); err != nil {
		return fmt.Errorf("data: synth: %w", err)
	}
	log.Info("synthetic dataset written", zap.String("dir", dir), zap.String("kind", cfg.Kind),
		zap.Int("files", len(files)), zap.Duration("elapsed", time.Since(start)))
	return nil
}

// pngBuffers keeps one goroutine's PNG encoder buffers between files.
type pngBuffers struct{ b *png.EncoderBuffer }

func (p *pngBuffers) Get() *png.EncoderBuffer  { return p.b }
func (p *pngBuffers) Put(b *png.EncoderBuffer) { p.b = b }

// render draws one file.
func (c SynthConfig) render(f synthFile) image.Image {
	h := fnv.New64a()
	h.Write([]byte(c.Kind + "/" + f.scene))
	g := pcgRand{stream(c.Seed, streamSynth, h.Sum64(), uint64(f.index))}
	s := float64(c.Size)
	switch c.Kind {
	case SynthEdges2Shapes:
		shapes := randomShapes(g, s)
		a, b := edgesImage(shapes, c.Size), shadedImage(shapes, c.Size)
		ab := image.NewRGBA(image.Rect(0, 0, 2*c.Size, c.Size))
		draw.Draw(ab, a.Bounds(), a, image.Point{}, draw.Src)
		draw.Draw(ab, a.Bounds().Add(image.Pt(c.Size, 0)), b, image.Point{}, draw.Src)
		return ab
	default:
		return randomScene(g, s).render(c.Size, f.night)
	}
}

// pcgRand draws from a PCG stream with this package's own algorithms (uniform, and the
// top 53 bits for floats), so the files depend only on the PCG sequence, not on how
// math/rand/v2 happens to implement IntN or Float64.
type pcgRand struct{ g *rand.PCG }

func (r pcgRand) IntN(n int) int   { return uniform(r.g, n) }
func (r pcgRand) Float64() float64 { return float64(r.g.Uint64()>>11) / (1 << 53) }

// edges2shapes.

type shapeKind int

const (
	circle shapeKind = iota
	square
	triangle
)

// shape is a circle, square or equilateral triangle of circumradius r around (cx, cy),
// rotated by rot.
type shape struct {
	kind      shapeKind
	cx, cy, r float64
	rot       float64
}

func (sh shape) poly() polygon {
	switch sh.kind {
	case square:
		return regular(4, sh.cx, sh.cy, sh.r, sh.rot)
	case triangle:
		return regular(3, sh.cx, sh.cy, sh.r, sh.rot)
	}
	return nil
}

func (sh shape) sdf() func(x, y float64) float64 {
	if sh.kind == circle {
		return circleSDF(sh.cx, sh.cy, sh.r)
	}
	return sh.poly().sdf
}

func (sh shape) box() bbox { return circleBox(sh.cx, sh.cy, sh.r) }

// randomShapes places one to three shapes of circumradius 0.14–0.28·s in an s×s image,
// apart by at least 0.05·s, inside a margin of 0.04·s.
func randomShapes(g pcgRand, s float64) []shape {
	n := 1 + g.IntN(3)
	var out []shape
	for try := 0; len(out) < n && try < 100; try++ {
		sh := shape{kind: shapeKind(g.IntN(3)), r: s * (0.14 + 0.14*g.Float64()), rot: 2 * math.Pi * g.Float64()}
		m := sh.r + 0.04*s
		sh.cx, sh.cy = m+(s-2*m)*g.Float64(), m+(s-2*m)*g.Float64()
		ok := true
		for _, o := range out {
			if math.Hypot(sh.cx-o.cx, sh.cy-o.cy) < sh.r+o.r+0.05*s {
				ok = false
				break
			}
		}
		if ok {
			out = append(out, sh)
		}
	}
	return out
}

// edgesImage draws the outlines, 1/40 of the image wide (at least a pixel), dark grey on
// white, as HED edge maps look.
func edgesImage(shapes []shape, size int) *image.RGBA {
	c := newCanvas(size)
	c.fill(constant(rgb{255, 255, 255}))
	w := math.Max(1, float64(size)/40)
	for _, sh := range shapes {
		c.stroke(sh.box(), sh.sdf(), w, rgb{20, 20, 20})
	}
	return c.image()
}

var (
	shapeColour = [...]rgb{circle: {225, 55, 45}, square: {45, 95, 215}, triangle: {60, 175, 70}}
	background  = rgb{236, 232, 222}
	// light is the unit direction towards the light: from the top left, in front.
	light = func() [3]float64 {
		v := [3]float64{-1, -1, 1.4}
		n := math.Sqrt(v[0]*v[0] + v[1]*v[1] + v[2]*v[2])
		return [3]float64{v[0] / n, v[1] / n, v[2] / n}
	}()
)

// shadedImage draws the shapes filled in their type's colour and lit from the top left:
// circles as spheres (ambient, diffuse and a white highlight), squares and triangles with
// a linear gradient towards the light, every shape over a soft drop shadow.
func shadedImage(shapes []shape, size int) *image.RGBA {
	s := float64(size)
	c := newCanvas(size)
	c.fill(constant(background))
	off := 0.045 * s // the shadow falls away from the light
	for _, sh := range shapes {
		sdf := sh.sdf()
		c.paint(sh.box().grow(off+2), func(x, y float64) float64 { return sdf(x-off, y-off) / 1.5 },
			constant(background.scale(0.62)), 0.8)
	}
	for _, sh := range shapes {
		base := shapeColour[sh.kind]
		var col func(x, y float64) rgb
		if sh.kind == circle {
			col = func(x, y float64) rgb {
				nx, ny := (x-sh.cx)/sh.r, (y-sh.cy)/sh.r
				nz := math.Sqrt(math.Max(0, 1-nx*nx-ny*ny))
				diffuse := math.Max(0, nx*light[0]+ny*light[1]+nz*light[2])
				// Blinn-Phong highlight with the viewer on the z axis.
				hx, hy, hz := light[0], light[1], light[2]+1
				hn := math.Sqrt(hx*hx + hy*hy + hz*hz)
				spec := math.Pow(math.Max(0, (nx*hx+ny*hy+nz*hz)/hn), 24)
				return base.scale(0.3 + 0.75*diffuse).add(rgb{255, 255, 255}.scale(0.45 * spec))
			}
		} else {
			col = func(x, y float64) rgb {
				t := ((x-sh.cx)*light[0] + (y-sh.cy)*light[1]) / sh.r // −1 far side … 1 lit side
				return base.scale(0.8 + 0.25*t)
			}
		}
		c.paint(sh.box(), sh.sdf(), col, 1)
	}
	return c.image()
}

// shapes2night.

// scene is one landscape: where the horizon is, the sun (or moon), and the objects standing
// on the ground, back to front.
type scene struct {
	horizon      float64
	sunX, sunY   float64
	sunR         float64
	objects      []object
	skyTop, skyH rgb // day sky at the top and at the horizon
}

type object struct {
	tree   bool
	x0, x1 float64 // building walls, or the tree's trunk centre (x0) and canopy radius (x1)
	base   float64 // where it stands
	top    float64 // building: top of the walls; tree: canopy centre
	wall   rgb     // building wall or tree canopy colour
	roof   bool
	wins   [][4]float64 // windows: x0, y0, x1, y1
}

var (
	wallColours = []rgb{{222, 196, 150}, {190, 90, 70}, {170, 170, 175}, {235, 225, 200}, {150, 120, 95}}
	roofColour  = rgb{150, 50, 40}
	trunkColour = rgb{110, 75, 45}
	leafColour  = rgb{60, 140, 55}
	groundNear  = rgb{70, 135, 50}
	groundFar   = rgb{120, 175, 80}
	windowDay   = rgb{80, 105, 140}
	windowLit   = rgb{255, 215, 100}
)

func randomScene(g pcgRand, s float64) scene {
	u := func(a, b float64) float64 { return a + (b-a)*g.Float64() }
	sc := scene{
		horizon: u(0.55, 0.72) * s,
		sunR:    u(0.05, 0.08) * s,
		skyTop:  rgb{u(70, 110), u(140, 175), u(220, 245)},
		skyH:    rgb{u(185, 215), u(215, 235), u(240, 252)},
	}
	sc.sunX, sc.sunY = u(0.1, 0.9)*s, u(0.1, 0.3)*s
	n := 2 + g.IntN(3)
	for range n {
		base := sc.horizon + u(0.02, 0.2)*s
		if g.IntN(3) == 0 {
			r := u(0.06, 0.11) * s
			x := u(0.05, 0.95) * s
			sc.objects = append(sc.objects, object{tree: true, x0: x, x1: r, base: base, top: base - u(0.12, 0.2)*s - r, wall: leafColour.scale(u(0.8, 1.15))})
			continue
		}
		w := u(0.14, 0.3) * s
		x0 := u(-0.05, 0.95)*s - w/2
		o := object{x0: x0, x1: x0 + w, base: base, top: base - u(0.18, 0.42)*s, wall: wallColours[g.IntN(len(wallColours))], roof: g.IntN(2) == 0}
		// A grid of windows, inset from the walls.
		ww := 0.05 * s
		cols := max(1, int((w-0.04*s)/(ww*1.9)))
		rows := max(1, int((o.base-o.top-0.06*s)/(ww*2.1)))
		for r := range rows {
			for k := range cols {
				wx := o.x0 + (w-float64(cols)*ww*1.9)/2 + float64(k)*ww*1.9 + 0.45*ww
				wy := o.top + 0.05*s + float64(r)*ww*2.1
				o.wins = append(o.wins, [4]float64{wx, wy, wx + ww, wy + 1.3*ww})
			}
		}
		sc.objects = append(sc.objects, o)
	}
	// Back to front: what stands lower in the picture is nearer.
	for i := 1; i < len(sc.objects); i++ {
		for j := i; j > 0 && sc.objects[j].base < sc.objects[j-1].base; j-- {
			sc.objects[j], sc.objects[j-1] = sc.objects[j-1], sc.objects[j]
		}
	}
	return sc
}

// render draws the scene by day or by night. Night is a fixed function of the day scene:
// sky and ground darkened to blue, object colours at ~30% with a blue cast, windows lit,
// the sun replaced by a pale moon. Nothing random is drawn here, so the night rendering is
// the ground truth of the day one.
func (sc scene) render(size int, night bool) *image.RGBA {
	s := float64(size)
	c := newCanvas(size)
	dim := func(col rgb) rgb { return col }
	if night {
		dim = func(col rgb) rgb { return col.mul(rgb{0.22, 0.25, 0.38}) }
	}
	skyTop, skyH := sc.skyTop, sc.skyH
	gNear, gFar := groundNear, groundFar
	if night {
		skyTop, skyH = rgb{8, 12, 35}, rgb{35, 40, 80}
		gNear, gFar = rgb{12, 22, 14}, rgb{22, 36, 26}
	}
	c.fill(func(x, y float64) rgb {
		if y < sc.horizon {
			return lerp(skyTop, skyH, y/sc.horizon)
		}
		return lerp(gFar, gNear, (y-sc.horizon)/(s-sc.horizon))
	})
	sun := rgb{255, 236, 130}
	if night {
		sun = rgb{232, 232, 215}
	}
	c.paint(circleBox(sc.sunX, sc.sunY, sc.sunR), circleSDF(sc.sunX, sc.sunY, sc.sunR), constant(sun), 1)
	for _, o := range sc.objects {
		if o.tree {
			tw := 0.025 * s
			trunk := rect(o.x0-tw, o.top, o.x0+tw, o.base)
			c.paint(trunk.box(), trunk.sdf, constant(dim(trunkColour)), 1)
			c.paint(circleBox(o.x0, o.top, o.x1), circleSDF(o.x0, o.top, o.x1), constant(dim(o.wall)), 1)
			continue
		}
		walls := rect(o.x0, o.top, o.x1, o.base)
		// Walls are lit from the left: a gentle gradient across them.
		wall := o.wall
		c.paint(walls.box(), walls.sdf, func(x, y float64) rgb {
			return dim(wall.scale(1.05 - 0.15*(x-o.x0)/(o.x1-o.x0)))
		}, 1)
		if o.roof {
			w := o.x1 - o.x0
			roof := polygon{{o.x0 - 0.06*w, o.top}, {(o.x0 + o.x1) / 2, o.top - 0.45*w}, {o.x1 + 0.06*w, o.top}}
			c.paint(roof.box(), roof.sdf, constant(dim(roofColour)), 1)
		}
		win := dim(windowDay)
		if night {
			win = windowLit
		}
		for _, wr := range o.wins {
			p := rect(wr[0], wr[1], wr[2], wr[3])
			c.paint(p.box(), p.sdf, constant(win), 1)
		}
	}
	return c.image()
}

// syncDir flushes dir's entries (the marker's name) to disk.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
