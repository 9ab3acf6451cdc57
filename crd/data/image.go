package data

import (
	"fmt"
	"io"
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
