// Package data reads image-to-image datasets and turns them into batches of float32 NCHW
// examples in [−1, 1], as the reference code's data loaders do (docs/crd.md §4.3, §6), and
// writes the synthetic datasets that give every recipe a ground truth on a machine with
// no downloads. It knows nothing of tensors, networks or clusters: files come from a
// Source, batches are plain []float32.
//
// # Layouts
//
// Aligned (pix2pix): one split folder ("train", "val") of A|B images side by side; the
// left half, columns [0, ⌊w/2⌋), is A. Unaligned (CycleGAN): two split folders ("trainA",
// "trainB"; "testA", "testB") of unrelated images. Single: one split of A images. A
// split's images are the files directly in its folder with an image extension, sorted by
// key (the reference lists them recursively and, in its unaligned and single loaders,
// drops the last one: Options.Compat "official" reproduces the drop, §9 D4).
//
// # Preprocessing and how close it is to the reference
//
// Images are decoded from PNG or JPEG (by magic bytes) and converted as PIL's
// Image.convert("RGB") or ("L") does; training resizes to LoadSize², crops CropSize² at a
// random offset and flips with probability 1/2 (A and B of an aligned example share the
// offset and the flip; unaligned A and B are augmented independently and B is drawn at
// random); evaluation resizes to CropSize², in order. Measured against Pillow 9.4 on the
// images in testdata/pil (written by testdata/pil/gen.py):
//
//   - the bicubic resize is Pillow's Resample.c ported bit for bit (fixed-point weights,
//     antialiasing when shrinking, 8-bit intermediate): identical output at every size
//     tried, up and down. golang.org/x/image/draw.CatmullRom, the same filter with a float
//     intermediate, differs by up to 10 levels near sharp edges (a quarter of the samples
//     differ by at least one level);
//   - PNG decoding (RGB, grey, palette, alpha, 16-bit) and RGB → L are identical;
//   - JPEG: chroma upsampling and colour conversion follow libjpeg (its "fancy" triangle
//     upsampling for 4:2:0 and 4:2:2, its fixed-point YCbCr tables); the inverse DCT is Go's,
//     not libjpeg's, and leaves differences of at most 2–3 levels (1 for greyscale) on a
//     small fraction of samples. Go's decoder as-is, which repeats chroma samples, differed
//     by up to 102 levels at colour edges of the 4:2:0 test image;
//   - ToTensor and Normalize are computed as torchvision does in float32, (v/255 − 0.5)/0.5.
//
// # Determinism
//
// Nothing here uses a global random generator. The epoch-e order is Permutation(seed, e,
// n); example i of epoch e (its crop, flip and, for unaligned data, its B) depends on
// (seed, e, i) alone; each synthetic image on (seed, kind, split, index) alone. The same
// configuration therefore gives the same bytes whatever the number of goroutines, and a
// Loader resumed at a checkpoint's Cursor continues exactly. The generators are PCG
// (math/rand/v2's PCG-DXSM) with this package's own bounded-integer and shuffle code, so
// they do not depend on how math/rand/v2 implements IntN or Shuffle.
//
// # Unreadable files
//
// A file that cannot be opened, read or decoded is an *ImageError naming it. The Loader
// skips the example, logs the file and counts it (LoaderStats.Skipped); an epoch with no
// readable example is an error naming the source and split, as is a split with no image
// files when it is opened. Files over MaxImageBytes and images over MaxImageSide on a side
// or MaxImagePixels in all are rejected from their header, before anything is allocated
// for them.
package data
