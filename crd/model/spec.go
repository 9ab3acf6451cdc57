package model

import (
	"errors"
	"fmt"
	"strings"

	"github.com/crdgo/crdgo/crd/tensor"
)

// Architecture names, spelled as the reference code's --netG/--netD options
// (patchgan is its "n_layers" discriminator).
const (
	ArchResnet       = "resnet_9blocks"
	ArchMobileResnet = "mobile_resnet_9blocks"
	ArchUnet         = "unet_256"
	ArchPatchGAN     = "patchgan"
	ArchVGG16        = "vgg16"
	ArchInception    = "inception_v3"
)

// Archs lists the architectures New builds.
func Archs() []string {
	return []string{ArchResnet, ArchMobileResnet, ArchUnet, ArchPatchGAN, ArchVGG16, ArchInception}
}

// Spec names an architecture and its size. Each architecture reads only its
// own fields: the generators NGF, InC, OutC, Norm, and Blocks (ResNets) or
// Downs (U-Net); patchgan NDF, InC, Layers, Norm; vgg16 and inception_v3 none
// (their InC may be 0 or 3). DefaultSpec gives the recipes' values.
type Spec struct {
	Arch                  string
	NGF, NDF              int
	InC, OutC             int
	Blocks, Downs, Layers int
	Norm                  Norm
}

// DefaultSpec returns the reference recipes' configuration of arch: ngf and
// ndf 64, 3 channels in and out, 9 residual blocks, 8 down-samplings (256²
// images), 3 discriminator layers; norm batch for unet_256 (the U-Net recipe)
// and instance otherwise. An unknown arch is kept and reported by Validate.
func DefaultSpec(arch string) Spec {
	s := Spec{Arch: arch, NGF: 64, NDF: 64, InC: 3, OutC: 3, Blocks: 9, Downs: 8, Layers: 3, Norm: NormInstance}
	if arch == ArchUnet {
		s.Norm = NormBatch
	}
	return s
}

// Limits on sizes, so that a mistyped flag is an error rather than an
// allocation of many gigabytes.
const (
	maxWidth    = 4096
	maxChannels = 64
	maxBlocks   = 64
	maxLayers   = 8
)

// Validate reports every problem with s at once, naming the field.
func (s Spec) Validate() error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	inRange := func(field string, v, lo, hi int) {
		if v < lo || v > hi {
			bad("%s %d: must be in [%d, %d]", field, v, lo, hi)
		}
	}
	norm := func() {
		if _, err := ParseNorm(string(s.Norm)); err != nil {
			bad("norm: %w", err)
		}
	}
	switch s.Arch {
	case ArchResnet, ArchMobileResnet, ArchUnet:
		inRange("ngf", s.NGF, 1, maxWidth)
		inRange("in_channels", s.InC, 1, maxChannels)
		inRange("out_channels", s.OutC, 1, maxChannels)
		norm()
		if s.Arch == ArchUnet {
			inRange("downs", s.Downs, 5, maxDowns)
		} else {
			inRange("blocks", s.Blocks, 0, maxBlocks)
		}
	case ArchPatchGAN:
		inRange("ndf", s.NDF, 1, maxWidth)
		inRange("in_channels", s.InC, 1, maxChannels)
		inRange("layers", s.Layers, 1, maxLayers)
		norm()
	case ArchVGG16, ArchInception:
		if s.InC != 0 && s.InC != 3 {
			bad("in_channels %d: %s takes 3-channel images", s.InC, s.Arch)
		}
	default:
		bad("arch %q: want one of %s", s.Arch, strings.Join(Archs(), ", "))
	}
	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("model %s: %w", s.Arch, errors.Join(errs...))
}

// New builds the network s describes on be, its parameters registered and
// packed but zero: call Params().Initialize or load weights next.
func New(be tensor.Backend, s Spec) (Network, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	switch s.Arch {
	case ArchResnet, ArchMobileResnet:
		return NewResnetGenerator(be, ResnetConfig{InC: s.InC, OutC: s.OutC, NGF: s.NGF, Blocks: s.Blocks, Norm: s.Norm, Mobile: s.Arch == ArchMobileResnet})
	case ArchUnet:
		return NewUnetGenerator(be, UnetConfig{InC: s.InC, OutC: s.OutC, NGF: s.NGF, Downs: s.Downs, Norm: s.Norm})
	case ArchPatchGAN:
		return NewPatchGAN(be, PatchGANConfig{InC: s.InC, NDF: s.NDF, Layers: s.Layers, Norm: s.Norm})
	case ArchVGG16:
		return NewVGG16(be), nil
	default: // ArchInception: Validate accepted nothing else
		return NewInception(be), nil
	}
}

// InputChannels is the number of channels the network's input has.
func (s Spec) InputChannels() int {
	if s.Arch == ArchVGG16 || s.Arch == ArchInception {
		return 3
	}
	return s.InC
}

// CheckSize reports whether an h×w input suits the network: the ResNets need
// sides that are multiples of 4 (the output has the input's size) and at least
// 8, the U-Net multiples of 2^Downs, PatchGAN a non-empty output map, VGG16
// sides of at least 8 (three 2×2 poolings); Inception resizes any input.
func (s Spec) CheckSize(h, w int) error {
	var err error
	for _, side := range []int{h, w} {
		switch {
		case side < 1 || side > 1<<14:
			err = fmt.Errorf("side %d: must be in [1, %d]", side, 1<<14)
		case s.Arch == ArchResnet || s.Arch == ArchMobileResnet:
			if side%4 != 0 || side < 8 {
				err = fmt.Errorf("side %d: %s needs a multiple of 4, at least 8", side, s.Arch)
			}
		case s.Arch == ArchUnet:
			if m := 1 << s.Downs; side%m != 0 {
				err = fmt.Errorf("side %d: %s with %d down-samplings needs a multiple of %d", side, s.Arch, s.Downs, m)
			}
		case s.Arch == ArchPatchGAN:
			if patchOut(side, s.Layers) < 1 {
				err = fmt.Errorf("side %d: too small for a %d-layer PatchGAN (empty output)", side, s.Layers)
			}
		case s.Arch == ArchVGG16:
			if side < 8 {
				err = fmt.Errorf("side %d: vgg16 needs at least 8", side)
			}
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// patchOut is the side of a PatchGAN's output map for an input side n.
func patchOut(n, layers int) int {
	for range layers {
		n = tensor.ConvOut(n, 4, 2, 1, 1)
	}
	n = tensor.ConvOut(n, 4, 1, 1, 1)
	return tensor.ConvOut(n, 4, 1, 1, 1)
}

// String describes s with the fields its architecture reads.
func (s Spec) String() string {
	switch s.Arch {
	case ArchResnet, ArchMobileResnet:
		return fmt.Sprintf("%s (ngf %d, blocks %d, norm %s, %d→%d channels)", s.Arch, s.NGF, s.Blocks, s.Norm, s.InC, s.OutC)
	case ArchUnet:
		return fmt.Sprintf("%s (ngf %d, downs %d, norm %s, %d→%d channels)", s.Arch, s.NGF, s.Downs, s.Norm, s.InC, s.OutC)
	case ArchPatchGAN:
		return fmt.Sprintf("%s (ndf %d, layers %d, norm %s, %d input channels)", s.Arch, s.NDF, s.Layers, s.Norm, s.InC)
	}
	return s.Arch
}
