package data

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"image"
	"image/jpeg"
	"image/png"
	"io"
	"os"
)

// ReadImage decodes one PNG or JPEG image (size-checked as every dataset file)
// and returns it with the evaluation preprocessing: bicubic resize to
// size×size, C×size×size float32 in [−1, 1] with C = channels (1 or 3). It is
// what `crdgo translate` feeds a generator.
func ReadImage(r io.Reader, size, channels int) ([]float32, error) {
	opt := Options{CropSize: size, LoadSize: size, Channels: channels, Eval: true}
	if err := opt.Validate(); err != nil {
		return nil, fmt.Errorf("data: read image: %w", err)
	}
	p, err := readImage(r, channels)
	if err != nil {
		return nil, fmt.Errorf("data: read image: %w", err)
	}
	d := &Dataset{opt: opt}
	return d.transform(p, augment{}), nil
}

// ImageDims reads the width and height from the header of the PNG or JPEG file
// at path, without decoding it, and checks them against MaxImageSide and
// MaxImagePixels as ReadImage does.
func ImageDims(path string) (w, h int, err error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	br := bufio.NewReader(f)
	head, _ := br.Peek(len(pngMagic))
	var cfg image.Config
	switch {
	case bytes.HasPrefix(head, pngMagic):
		cfg, err = png.DecodeConfig(br)
	case bytes.HasPrefix(head, jpegMagic):
		cfg, err = jpeg.DecodeConfig(br)
	default:
		return 0, 0, errors.New("not a PNG or JPEG file")
	}
	if err != nil {
		return 0, 0, err
	}
	if err := checkDims(cfg.Width, cfg.Height); err != nil {
		return 0, 0, err
	}
	return cfg.Width, cfg.Height, nil
}
