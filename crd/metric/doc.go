// Package metric computes the image-quality numbers of docs/crd.md §7 that need no
// neural network: the Fréchet distance (FID) and the kernel distance (KID)
// between two sets of Inception activations, and PSNR, SSIM and L1 between
// pairs of images, plus the uint8 conversion the reference applies before any
// of them (tensor2im).
//
// The Inception network lives in crd/model; this package receives its 2048-d
// pooled activations as float64 rows (one image per row) and never imports the
// engine. Statistics files (.npz with mu and sigma) are read by crd/weights and
// handed over through StatsFromArrays.
//
// Everything here is a pure function of its arguments: no package state, safe
// for concurrent use. Linear algebra is gonum's pure-Go BLAS/LAPACK, in float64.
package metric
