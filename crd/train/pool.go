package train

import (
	"math/rand/v2"

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

// query returns the batch the discriminator sees for the fakes (N,C,H,W).
func (p *imagePool) query(t *Trainer, fakes *tensor.Tensor, rng *rand.Rand) *nn.Var {
	if p.size == 0 {
		return nn.Const(fakes)
	}
	s := fakes.Shape
	per := s[1] * s[2] * s[3]
	host := make([]float32, fakes.Numel())
	t.be.Download(host, fakes)
	out := t.tp.New(s...)
	res := make([]float32, len(host))
	p.shape = tensor.Shape{s[1], s[2], s[3]}
	for i := 0; i < s[0]; i++ {
		img := append([]float32(nil), host[i*per:(i+1)*per]...)
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
	t.be.Upload(out, res)
	return nn.Const(out)
}
