package data

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"path"
	"strings"

	"go.uber.org/zap"
)

// Compat selects between the intended semantics (the default) and the released code's
// (docs/crd.md §0). The data loader differs in one place, §9 D4: the released code drops the
// last file of each unaligned and single split.
type Compat string

const (
	CompatIntended Compat = "intended" // every image of a split, sorted by key
	CompatOfficial Compat = "official" // drop the last file of each sorted unaligned/single split
)

// Options is the preprocessing of a dataset (docs/crd.md §4.3).
//
// Training (Eval false): each image is resized to LoadSize×LoadSize with PIL's bicubic
// filter, a CropSize×CropSize window at a random offset is cut out, flipped left-right
// with probability 1/2 when Flip is set, and mapped from [0, 255] to [−1, 1] by
// (v/255 − 0.5)/0.5. Evaluation (Eval true): resized to CropSize×CropSize, no crop, no
// flip, and an unaligned dataset pairs A[i] with B[i mod |B|] instead of a random B.
type Options struct {
	LoadSize int    `yaml:"load_size"` // side of the resized image before the crop (training only)
	CropSize int    `yaml:"crop_size"` // side of the examples: H = W = CropSize
	Flip     bool   `yaml:"flip"`      // random left-right flip (training only)
	Channels int    `yaml:"channels"`  // 3 (RGB) or 1 (PIL "L" luma)
	Eval     bool   `yaml:"eval"`      // evaluation preprocessing (see above)
	BtoA     bool   `yaml:"btoa"`      // aligned data: A is the right half, B the left (cityscapes BtoA)
	Compat   Compat `yaml:"compat"`    // "intended" (default when empty) or "official"
}

// DefaultOptions returns the reference training preprocessing: 286 → random 256 crop,
// flip, RGB, intended semantics.
func DefaultOptions() Options {
	return Options{LoadSize: 286, CropSize: 256, Flip: true, Channels: 3, Compat: CompatIntended}
}

// Validate reports every invalid field at once.
func (o Options) Validate() error {
	var errs []error
	if o.CropSize < 1 || o.CropSize > MaxImageSide {
		errs = append(errs, fmt.Errorf("data.crop_size: must be in [1, %d], got %d", MaxImageSide, o.CropSize))
	}
	if !o.Eval && (o.LoadSize < o.CropSize || o.LoadSize > MaxImageSide) {
		errs = append(errs, fmt.Errorf("data.load_size: must be in [crop_size (%d), %d], got %d", o.CropSize, MaxImageSide, o.LoadSize))
	}
	if o.Channels != 1 && o.Channels != 3 {
		errs = append(errs, fmt.Errorf("data.channels: must be 1 or 3, got %d", o.Channels))
	}
	switch o.Compat {
	case "", CompatIntended, CompatOfficial:
	default:
		errs = append(errs, fmt.Errorf("data.compat: must be %q or %q, got %q", CompatIntended, CompatOfficial, o.Compat))
	}
	return errors.Join(errs...)
}

type layout int

const (
	aligned   layout = iota // one split of A|B side-by-side images
	unaligned               // two splits, A and B drawn independently
	single                  // one split of A images, no B
)

func (l layout) String() string {
	return [...]string{"aligned", "unaligned", "single"}[l]
}

// Dataset is a list of image files in a Source and how to turn them into examples. It is
// immutable once opened and safe for concurrent use.
type Dataset struct {
	src            Source
	layout         layout
	splitA, splitB string
	a, b           []string // keys, sorted
	opt            Options
}

// Example is one preprocessed example: A and B are C×H×W float32 in [−1, 1] with
// C = Options.Channels and H = W = Options.CropSize (B is nil for a single dataset).
// PathA and PathB are the source keys of the files they came from (the same file for
// aligned data); Index is the example's index in the dataset.
type Example struct {
	A, B         []float32
	PathA, PathB string
	Index        int
}

// ImageError is an image file that could not be opened, read or decoded. The Loader skips
// an example that needs one, and logs and counts it.
type ImageError struct {
	Source string // Source.String()
	Key    string
	Err    error
}

func (e *ImageError) Error() string { return fmt.Sprintf("data: %s/%s: %v", e.Source, e.Key, e.Err) }
func (e *ImageError) Unwrap() error { return e.Err }

// OpenAligned opens the pix2pix layout: split (e.g. "train", "val") holds A|B images, A
// the left half (columns [0, w/2)) and B the right (pix2pix's AlignedDataset); both halves
// of an example get the same crop offset and flip.
func OpenAligned(ctx context.Context, src Source, split string, opt Options, log *zap.Logger) (*Dataset, error) {
	return open(ctx, src, aligned, split, "", opt, log)
}

// OpenUnaligned opens the CycleGAN layout: splitA and splitB (e.g. "trainA", "trainB")
// hold unrelated images. The dataset has max(|A|, |B|) examples; example i is A[i mod |A|]
// with a B drawn uniformly at random (in Eval mode B[i mod |B|]), the two augmented
// independently. Options.BtoA must be off: swap the splits instead.
func OpenUnaligned(ctx context.Context, src Source, splitA, splitB string, opt Options, log *zap.Logger) (*Dataset, error) {
	if opt.BtoA {
		return nil, fmt.Errorf("data: %s: btoa applies to aligned data; open the unaligned splits %s and %s the other way round instead", src, splitA, splitB)
	}
	return open(ctx, src, unaligned, splitA, splitB, opt, log)
}

// OpenSingle opens one split of A images (the reference's "single" mode, used to
// translate or evaluate testA alone); examples have no B.
func OpenSingle(ctx context.Context, src Source, split string, opt Options, log *zap.Logger) (*Dataset, error) {
	if opt.BtoA {
		return nil, fmt.Errorf("data: %s: btoa applies to aligned data, not to the single split %s", src, split)
	}
	return open(ctx, src, single, split, "", opt, log)
}

func open(ctx context.Context, src Source, l layout, splitA, splitB string, opt Options, log *zap.Logger) (*Dataset, error) {
	if err := opt.Validate(); err != nil {
		return nil, fmt.Errorf("data: %s: %w", src, err)
	}
	if opt.Compat == "" {
		opt.Compat = CompatIntended
	}
	d := &Dataset{src: src, layout: l, splitA: splitA, splitB: splitB, opt: opt}
	dropLast := opt.Compat == CompatOfficial && l != aligned // docs/crd.md §9 D4
	var err error
	if d.a, err = listImages(ctx, src, splitA, dropLast); err != nil {
		return nil, err
	}
	if l == unaligned {
		if d.b, err = listImages(ctx, src, splitB, dropLast); err != nil {
			return nil, err
		}
	}
	log.Info("dataset opened",
		zap.Stringer("source", src), zap.Stringer("layout", l),
		zap.String("split_a", splitA), zap.Int("images_a", len(d.a)),
		zap.String("split_b", splitB), zap.Int("images_b", len(d.b)),
		zap.Bool("drop_last", dropLast), zap.Int("examples", d.Len()))
	return d, nil
}

// imageExts are the reference's IMG_EXTENSIONS (data/image_folder.py), compared without
// case. Files with other extensions are not part of a split; PPM, BMP and TIFF files are,
// and are reported as unreadable (only PNG and JPEG are decoded).
var imageExts = map[string]bool{".jpg": true, ".jpeg": true, ".png": true, ".ppm": true, ".bmp": true, ".tif": true, ".tiff": true}

func listImages(ctx context.Context, src Source, split string, dropLast bool) ([]string, error) {
	keys, err := src.List(ctx, split)
	if err != nil {
		return nil, err
	}
	imgs := keys[:0]
	for _, k := range keys {
		if imageExts[strings.ToLower(path.Ext(k))] {
			imgs = append(imgs, k)
		}
	}
	if dropLast && len(imgs) > 0 {
		imgs = imgs[:len(imgs)-1]
	}
	if len(imgs) == 0 {
		extra := ""
		if dropLast {
			extra = " after dropping the last file (compat official)"
		}
		return nil, fmt.Errorf("data: %s: split %s has no images%s (%d files listed; want .jpg, .jpeg or .png)", src, split, extra, len(keys))
	}
	return imgs, nil
}

// Len is the number of examples: |split| for aligned and single data, max(|A|, |B|) for
// unaligned data.
func (d *Dataset) Len() int { return max(len(d.a), len(d.b)) }

// Images is the number of distinct A and B images: an aligned split's files are both,
// an unaligned dataset has its two splits' sizes, single data has no B. Example i with
// i < a has A image i, and with i < b B image i (evaluation mode for unaligned data).
func (d *Dataset) Images() (a, b int) {
	switch d.layout {
	case aligned:
		return len(d.a), len(d.a)
	case unaligned:
		return len(d.a), len(d.b)
	}
	return len(d.a), 0
}

// Channels and Size give the shape of an example's A and B: Channels×Size×Size.
func (d *Dataset) Channels() int { return d.opt.Channels }
func (d *Dataset) Size() int     { return d.opt.CropSize }

// Paired reports whether examples have a B.
func (d *Dataset) Paired() bool { return d.layout != single }

// String names the dataset in errors and logs: "file:///data/h2z trainA+trainB".
func (d *Dataset) String() string {
	if d.layout == unaligned {
		return fmt.Sprintf("%s %s+%s", d.src, d.splitA, d.splitB)
	}
	return fmt.Sprintf("%s %s", d.src, d.splitA)
}

// augment is the random part of one image's preprocessing.
type augment struct {
	x, y int  // crop offset in the LoadSize×LoadSize image
	flip bool // left-right
}

// draw takes one image's crop offset and flip from g: x, then y, then the flip coin (the
// reference's order). The coin is drawn even when flipping is off, so that turning Flip
// on or off leaves the crops alone.
func (d *Dataset) draw(g *rand.PCG) augment {
	if d.opt.Eval {
		return augment{}
	}
	r := d.opt.LoadSize - d.opt.CropSize + 1
	a := augment{x: uniform(g, r), y: uniform(g, r)}
	a.flip = coin(g) && d.opt.Flip
	return a
}

// Example returns example i (0 ≤ i < Len) of epoch epoch under seed. Everything random
// in it (the crop offsets, the flips, the B index of unaligned data) comes from a
// generator seeded by (seed, epoch, i) alone, so the same arguments give the same bytes
// in any order, on any goroutine, after any restart. In Eval mode seed and epoch do not
// matter.
//
// A file that cannot be opened, read or decoded gives an *ImageError naming it; a
// cancelled ctx gives ctx's error.
func (d *Dataset) Example(ctx context.Context, seed uint64, epoch, i int) (Example, error) {
	if i < 0 || i >= d.Len() {
		return Example{}, fmt.Errorf("data: %s: example %d out of range [0, %d)", d, i, d.Len())
	}
	g := stream(seed, streamExample, uint64(epoch), uint64(i))
	ex := Example{Index: i}
	switch d.layout {
	case aligned:
		key := d.a[i]
		p, err := d.read(ctx, key)
		if err != nil {
			return Example{}, err
		}
		if p.w < 2 {
			return Example{}, &ImageError{Source: d.src.String(), Key: key, Err: fmt.Errorf("image is %d pixel(s) wide, too narrow to split into A|B", p.w)}
		}
		half := p.w / 2 // PIL: A = AB.crop((0, 0, w2, h)), B = AB.crop((w2, 0, w, h)), w2 = int(w / 2)
		a, b := p.sub(0, half), p.sub(half, p.w)
		if d.opt.BtoA {
			a, b = b, a
		}
		aug := d.draw(g)
		ex.A, ex.B = d.transform(a, aug), d.transform(b, aug)
		ex.PathA, ex.PathB = key, key
	case unaligned:
		ia, ib := i%len(d.a), i%len(d.b)
		if !d.opt.Eval {
			ib = uniform(g, len(d.b)) // first, as the reference draws B's index before the transforms
		}
		ex.PathA, ex.PathB = d.a[ia], d.b[ib]
		pa, err := d.read(ctx, ex.PathA)
		if err != nil {
			return Example{}, err
		}
		pb, err := d.read(ctx, ex.PathB)
		if err != nil {
			return Example{}, err
		}
		augA := d.draw(g)
		augB := d.draw(g)
		ex.A, ex.B = d.transform(pa, augA), d.transform(pb, augB)
	case single:
		ex.PathA = d.a[i]
		p, err := d.read(ctx, ex.PathA)
		if err != nil {
			return Example{}, err
		}
		ex.A = d.transform(p, d.draw(g))
	}
	return ex, nil
}

// read opens, reads and decodes one file.
func (d *Dataset) read(ctx context.Context, key string) (pixels, error) {
	rc, err := d.src.Open(ctx, key)
	if err != nil {
		if ctx.Err() != nil {
			return pixels{}, ctx.Err()
		}
		return pixels{}, &ImageError{Source: d.src.String(), Key: key, Err: err}
	}
	defer rc.Close()
	p, err := readImage(rc, d.opt.Channels)
	if err != nil {
		if ctx.Err() != nil {
			return pixels{}, ctx.Err()
		}
		return pixels{}, &ImageError{Source: d.src.String(), Key: key, Err: err}
	}
	return p, nil
}

// transform resizes p (to LoadSize, or CropSize in Eval mode), crops and flips it as aug
// says, and returns it as C×S×S float32 in [−1, 1], S = CropSize. The arithmetic is
// torchvision's in float32: ToTensor's v/255, then Normalize's (x − 0.5)/0.5.
func (d *Dataset) transform(p pixels, aug augment) []float32 {
	load := d.opt.LoadSize
	if d.opt.Eval {
		load = d.opt.CropSize
	}
	p = resize(p, load, load)
	s, c := d.opt.CropSize, p.c
	out := make([]float32, c*s*s)
	for y := range s {
		row := p.pix[((aug.y+y)*p.w+aug.x)*c:]
		for x := range s {
			sx := x
			if aug.flip {
				sx = s - 1 - x
			}
			for ch := range c {
				v := float32(row[sx*c+ch]) / 255
				out[(ch*s+y)*s+x] = (v - 0.5) / 0.5
			}
		}
	}
	return out
}
