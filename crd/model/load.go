package model

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"github.com/crdgo/crdgo/crd/nn"
	"github.com/crdgo/crdgo/crd/tensor"
	"github.com/crdgo/crdgo/crd/weights"
)

// LoadVGG16 builds VGG16 features on be and loads path into it: a safetensors,
// torch.save (zip or legacy) or .npz file in one of the layouts that exist:
//   - torchvision's vgg16-397923af.pth: features.{0,…,28}.* and classifier.*;
//     the layers past relu4_3 and the classifier are ignored;
//   - the reference code's Vgg16 wrapper: [vgg.]to_relu_1_2.{0,2}.*,
//     to_relu_2_2.{5,7}.*, to_relu_3_3.{10,12,14}.*, to_relu_4_3.{17,19,21}.*
//     (docs/crd.md §5.6);
//   - either with a leading module. or other prefix, and crdgo's own Save.
//
// A missing tensor or a shape mismatch is an error naming the tensor.
func LoadVGG16(be tensor.Backend, path string) (*VGG16, error) {
	ts, _, err := weights.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("model: vgg16: %w", err)
	}
	ts, err = renameVGG(ts)
	if err != nil {
		return nil, fmt.Errorf("model: vgg16: %s: %w", path, err)
	}
	v := NewVGG16(be)
	if err := v.ps.LoadStateDict(ts, nn.LoadOptions{AllowExtra: true}); err != nil {
		return nil, fmt.Errorf("model: vgg16: %s: %w", path, err)
	}
	return v, nil
}

var vggWrapperName = regexp.MustCompile(`(?:^|\.)to_relu_\d_\d\.(\d+\.(?:weight|bias))$`)

// renameVGG maps every layout LoadVGG16 accepts to features.N.*; names it
// does not recognise are kept (LoadStateDict ignores them).
func renameVGG(ts []weights.Tensor) ([]weights.Tensor, error) {
	return renameAll(ts, func(name string) string {
		if m := vggWrapperName.FindStringSubmatch(name); m != nil {
			return "features." + m[1]
		}
		if i := strings.LastIndex(name, "features."); i > 0 && name[i-1] == '.' {
			return name[i:]
		}
		return name
	})
}

// LoadInception builds the FID Inception on be and loads path into it:
// pytorch-fid's pt_inception-2015-12-05-6726825d.pth (torchvision names,
// fc.* ignored), a state_dict of pytorch-fid's InceptionV3 wrapper
// (blocks.0.0.conv.weight …), either with a leading module., or crdgo's own
// Save. Every conv weight and every batch norm's weight, bias, running_mean
// and running_var must be present with its shape; num_batches_tracked may be
// missing (files from PyTorch < 0.4.1 lack it). Errors name the tensor.
func LoadInception(be tensor.Backend, path string) (*Inception, error) {
	ts, _, err := weights.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("model: inception: %w", err)
	}
	ts, err = renameAll(ts, inceptionName)
	if err != nil {
		return nil, fmt.Errorf("model: inception: %s: %w", path, err)
	}
	m := NewInception(be)
	have := make(map[string]bool, len(ts))
	for _, t := range ts {
		have[t.Name] = true
	}
	var errs []error
	for _, p := range m.ps.Params() {
		if p.Buffer && !p.Int && !have[p.Name] {
			errs = append(errs, fmt.Errorf("tensor %q %v: missing from file (FID needs the running statistics)", p.Name, p.Var.Value.Shape))
		}
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("model: inception: %s: %w", path, errors.Join(errs...))
	}
	if err := m.ps.LoadStateDict(ts, nn.LoadOptions{AllowExtra: true, AllowMissingBuffers: true}); err != nil {
		return nil, fmt.Errorf("model: inception: %s: %w", path, err)
	}
	return m, nil
}

// inceptionBlocks are the modules of pytorch-fid's InceptionV3.blocks[i][j]
// (the max-pools and the final average pool have no parameters).
var inceptionBlocks = [][]string{
	{"Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3"},
	{"Conv2d_3b_1x1", "Conv2d_4a_3x3"},
	{"Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e"},
	{"Mixed_7a", "Mixed_7b", "Mixed_7c"},
}

var inceptionWrapperName = regexp.MustCompile(`^blocks\.(\d+)\.(\d+)\.(.+)$`)

func inceptionName(name string) string {
	name = strings.TrimPrefix(name, "module.")
	if m := inceptionWrapperName.FindStringSubmatch(name); m != nil {
		i, err1 := strconv.Atoi(m[1])
		j, err2 := strconv.Atoi(m[2])
		if err1 == nil && err2 == nil && i < len(inceptionBlocks) && j < len(inceptionBlocks[i]) {
			return inceptionBlocks[i][j] + "." + m[3]
		}
	}
	return name
}

// renameAll renames every tensor with f, failing when two tensors get the
// same name.
func renameAll(ts []weights.Tensor, f func(string) string) ([]weights.Tensor, error) {
	from := make(map[string]string, len(ts))
	out := make([]weights.Tensor, len(ts))
	for i, t := range ts {
		n := f(t.Name)
		if prev, dup := from[n]; dup {
			return nil, fmt.Errorf("tensors %q and %q both stand for %q", prev, t.Name, n)
		}
		from[n] = t.Name
		t.Name = n
		out[i] = t
	}
	return out, nil
}

// CheckWeights loads the weights file at path into the network s describes
// on the shape-only backend (tensor.Meta): every tensor's name and shape is
// checked and no parameter memory is allocated. VGG16 and Inception files
// are checked as LoadVGG16 and LoadInception read them.
func CheckWeights(s Spec, path string) error {
	be := tensor.NewMeta()
	switch s.Arch {
	case ArchVGG16:
		_, err := LoadVGG16(be, path)
		return err
	case ArchInception:
		_, err := LoadInception(be, path)
		return err
	}
	net, err := New(be, s)
	if err != nil {
		return err
	}
	_, err = net.Params().Load(path, nn.LoadOptions{})
	return err
}
