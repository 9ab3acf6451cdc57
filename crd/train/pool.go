package train

import (
	"math/rand/v2"

	"github.com/crdgo/crdgo/crd/data"
	"github.com/crdgo/crdgo/crd/nn"
	"github.com/crdgo/crdgo/crd/tensor"
)

// imagePool is CycleGAN's history of generated images (reference code, file
// utils/image_pool.py): while fewer than size images are stored, each query
// stores and returns the current image; afterwards, with probability 1/2, it
// returns a uniformly chosen stored image and stores the current one in its
// place, else it returns the current image. Images are host copies, so the
// pool survives tape resets and goes into checkpoints.
type imagePool struct {
	size   int
	images [][]float32 // each C×H×W
	shape  tensor.Shape
}

func newImagePool(size int) *imagePool { return &imagePool{size: size} }

// query runs the pool on a batch of fakes (n images of per floats each, host)
// and returns the images the discriminator sees for them, in the same layout.
func (p *imagePool) query(fakes []float32, per int, shape tensor.Shape, rng *rand.Rand) []float32 {
	res := make([]float32, len(fakes))
	p.shape = shape.Clone()
	for i := 0; i < len(fakes)/per; i++ {
		img := append([]float32(nil), fakes[i*per:(i+1)*per]...)
		dst := res[i*per : (i+1)*per]
		if len(p.images) < p.size {
			p.images = append(p.images, img)
			copy(dst, img)
			continue
		}
		if rng.Float64() > 0.5 {
			j := rng.IntN(p.size)
			copy(dst, p.images[j])
			p.images[j] = img
		} else {
			copy(dst, img)
		}
	}
	return res
}

// poolFakes returns what the discriminator sees for this rank's fakes
// (N,C,H,W): the pool runs on the global batch's fakes, gathered from every
// rank in rank order, with the same generator on every rank, so every rank
// holds the pool one process would hold; each rank takes its own part of the
// result. part says which part of the global batch this rank's is.
func (t *Trainer) poolFakes(ss *stepSync, p *imagePool, fakes *tensor.Tensor, part *data.Batch, phase string) (*nn.Var, error) {
	if p.size == 0 {
		return nn.Const(fakes), nil
	}
	s := fakes.Shape
	per := s[1] * s[2] * s[3]
	local := make([]float32, fakes.Numel())
	t.be.Download(local, fakes)
	global, err := ss.gather(phase, local[:part.N*per], per, part.Offset, part.Total)
	if err != nil {
		return nil, err
	}
	res := p.query(global, per, tensor.Shape{s[1], s[2], s[3]}, t.rng)
	mine := res[part.Offset*per : (part.Offset+part.N)*per]
	if part.N == 0 {
		mine = local // a placeholder's own image, weighted 0
	}
	out := t.tp.New(s...)
	t.be.Upload(out, mine)
	return nn.Const(out), nil
}
