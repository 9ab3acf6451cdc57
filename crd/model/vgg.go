package model

import (
	"fmt"
	"math"

	"github.com/crdgo/crdgo/crd/nn"
	"github.com/crdgo/crdgo/crd/tensor"
)

// VGG16 is torchvision's vgg16().features[0:23] (docs/crd.md §5.6): ten 3×3 convs
// with bias and ReLU, max-pooling after relu1_2, relu2_2 and relu3_3, ending at
// relu4_3. Parameters are named features.{0,2,5,7,10,12,14,17,19,21}.{weight,
// bias} as in torchvision's file. It has no batch norm; SetTraining is a no-op.
//
// The perceptual terms feed it (x+1)/2 of a [−1,1] image, without ImageNet
// normalisation (docs/crd.md §3): Features takes whatever features[0] receives.
type VGG16 struct {
	ps    *nn.ParamSet
	convs []*nn.Conv2d
}

// vggPlan lists the layers of features[0:23]: a conv (output channels) or a
// max-pool (0), with the module index of each conv.
var vggPlan = []struct{ index, cout int }{
	{0, 64}, {2, 64}, {4, 0},
	{5, 128}, {7, 128}, {9, 0},
	{10, 256}, {12, 256}, {14, 256}, {16, 0},
	{17, 512}, {19, 512}, {21, 512},
}

// vggTaps are the indices into the conv list after whose ReLU a tap is taken:
// relu1_2, relu2_2, relu3_3, relu4_3.
var vggTaps = [4]int{1, 3, 6, 9}

// NewVGG16 registers the ten convs and packs the set. Random initialisation
// follows torchvision (Kaiming normal, fan-out, for ReLU; zero bias) and is
// meant for tests: the perceptual loss loads pretrained weights (LoadVGG16).
func NewVGG16(be tensor.Backend) *VGG16 {
	ps := nn.NewParamSet(be)
	v := &VGG16{ps: ps}
	cin := 3
	for _, l := range vggPlan {
		if l.cout == 0 {
			continue
		}
		std := math.Sqrt(2 / float64(l.cout*9))
		v.convs = append(v.convs, nn.NewConv2d(ps, fmt.Sprintf("features.%d", l.index), cin, l.cout, 3, 3,
			tensor.ConvParams{PadH: 1, PadW: 1}, true, std))
		cin = l.cout
	}
	ps.Pack()
	return v
}

// Params returns the convs' weights and biases.
func (v *VGG16) Params() *nn.ParamSet { return v.ps }

// SetTraining does nothing: VGG16 features have no batch norm or dropout.
func (v *VGG16) SetTraining(bool) {}

// Features returns relu1_2 (N,64,H,W), relu2_2 (N,128,H/2,W/2), relu3_3
// (N,256,H/4,W/4) and relu4_3 (N,512,H/8,W/8) of x (N,3,H,W), H and W ≥ 8.
func (v *VGG16) Features(tp *nn.Tape, x *nn.Var) [4]*nn.Var {
	var taps [4]*nn.Var
	h, ci, ti := x, 0, 0
	pool := tensor.PoolParams{KH: 2, KW: 2}
	for _, l := range vggPlan {
		if l.cout == 0 {
			h = nn.MaxPool2D(tp, h, pool)
			continue
		}
		h = nn.ReLU(tp, v.convs[ci].Forward(tp, h))
		if ti < 4 && ci == vggTaps[ti] {
			taps[ti] = h
			ti++
		}
		ci++
	}
	return taps
}

// Forward returns relu4_3, the last tap.
func (v *VGG16) Forward(tp *nn.Tape, x *nn.Var) *nn.Var { return v.Features(tp, x)[3] }
