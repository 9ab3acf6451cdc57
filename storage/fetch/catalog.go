// Package fetch downloads the public datasets of the CRD paper, as the reference
// download scripts do, and unpacks them into the layouts the recipes read
// (docs/crd.md §6): a resumable download (HTTP Range) from the first source that
// answers, size and SHA-256 checks where they are known, and an unpacking that
// refuses path traversal, links and devices and caps files and bytes (zip and tar
// bombs), into a staging folder renamed into place only when complete.
package fetch

import (
	"errors"
	"slices"
	"strings"
)

// Dataset is one downloadable dataset.
type Dataset struct {
	Name    string
	Aliases []string
	// Archive is the file name at every source: horse2zebra.zip.
	Archive string
	// URLs are the sources, tried in order (the reference script's, then mirrors).
	URLs []string
	// Dir is the folder the dataset lands in under the data root.
	Dir string
	// Splits are the folders the unpacked dataset must have.
	Splits []string
	// Links are made after unpacking, name → target (the reference script links
	// valA → testA), relative to the dataset's folder.
	Links map[string]string
	// Counts are the files per split as reported (docs/crd.md §6); a difference is
	// reported, not an error (the counts of some splits were not re-checked).
	Counts map[string]int
	// Size and SHA256 of the archive, checked when not zero. Unknown here for the
	// public archives (this project's machines cannot reach them); Content-Length
	// and the archive's own checksums (zip CRC-32, gzip CRC-32) still apply.
	Size   int64
	SHA256 string
	// MaxBytes caps the unpacked bytes (Limits.MaxTotalBytes when 0).
	MaxBytes int64
	// Manual, when set, is why and how to get the dataset by hand: it cannot be
	// downloaded by a script.
	Manual string
}

// ErrManual is the error of a dataset that must be downloaded by hand.
var ErrManual = errors.New("cannot be downloaded by a script")

const (
	cycleganPrimary = "https://people.eecs.berkeley.edu/~taesung_park/CycleGAN/datasets/"
	cycleganMirror  = "http://efrosgans.eecs.berkeley.edu/cyclegan/datasets/"
)

func cyclegan(name string, counts map[string]int, aliases ...string) Dataset {
	return Dataset{
		Name:    name,
		Aliases: aliases,
		Archive: name + ".zip",
		URLs:    []string{cycleganPrimary + name + ".zip", cycleganMirror + name + ".zip"},
		Dir:     name,
		Splits:  []string{"trainA", "trainB", "testA", "testB"},
		Links:   map[string]string{"valA": "testA", "valB": "testB"},
		Counts:  counts,
	}
}

// Catalog lists the datasets fetch knows, in the order of docs/crd.md §6.
func Catalog() []Dataset {
	return []Dataset{
		cyclegan("horse2zebra", map[string]int{"trainA": 1067, "trainB": 1334, "testA": 120, "testB": 140}),
		cyclegan("summer2winter_yosemite", map[string]int{"trainA": 1231, "trainB": 962, "testA": 309, "testB": 238}, "summer2winter"),
		{
			Name:    "edges2shoes",
			Aliases: []string{"edges2shoes-r"},
			Archive: "edges2shoes-r.tar.gz",
			URLs: []string{
				"https://hanlab.mit.edu/files/gan_compression/datasets/edges2shoes-r.tar.gz",
				"https://huggingface.co/mit-han-lab/gan-compression/resolve/main/datasets/edges2shoes-r.tar.gz",
			},
			// GAN Compression's re-split of the 50,025 pairs: val holds 2,048.
			Dir:    "edges2shoes-r",
			Splits: []string{"train", "val"},
			Counts: map[string]int{"train": 47977, "val": 2048},
		},
		{
			Name:   "cityscapes",
			Dir:    "cityscapes",
			Splits: []string{"train", "val"},
			Counts: map[string]int{"train": 2975, "val": 500},
			Manual: `Cityscapes needs an account: its licence forbids scripted downloads.
  1. Register at https://www.cityscapes-dataset.com and download gtFine_trainvaltest.zip
     and leftImg8bit_trainvaltest.zip.
  2. Unzip both into one folder, e.g. database/cityscapes-origin.
  3. Run GAN Compression's datasets/prepare_cityscapes_dataset.py on it: it resizes photo
     and colour label map to 256×256 and writes DATA/cityscapes/train (2,975) and
     DATA/cityscapes/val (500) as A = photo | B = label, plus the table for mIoU
     (datasets/table.txt).
The cityscapes recipe is crdgo's extrapolation (it is not in the CRD release; docs/crd.md §6).`,
		},
	}
}

// Lookup finds a dataset by name or alias.
func Lookup(name string) (Dataset, bool) {
	for _, d := range Catalog() {
		if d.Name == name || slices.Contains(d.Aliases, name) {
			return d, true
		}
	}
	return Dataset{}, false
}

// Names lists the datasets' names, for help and errors.
func Names() string {
	var names []string
	for _, d := range Catalog() {
		names = append(names, d.Name)
	}
	return strings.Join(names, ", ")
}
