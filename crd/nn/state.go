package nn

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/crdgo/crdgo/crd/weights"
)

// StateDict returns every parameter and buffer as named tensors in
// registration order, with PyTorch's names and dtypes (num_batches_tracked is
// int64), ready for weights.WriteSafetensors.
func (ps *ParamSet) StateDict() []weights.Tensor {
	ps.mustPacked("StateDict")
	out := make([]weights.Tensor, 0, len(ps.params))
	for _, p := range ps.params {
		v := p.Var.Value
		host := make([]float32, v.Numel())
		ps.be.Download(host, v)
		t := weights.Tensor{Name: p.Name, Shape: v.Shape.Clone()}
		if p.Int {
			t.DType = weights.I64
			t.I64 = make([]int64, len(host))
			for i, x := range host {
				t.I64[i] = int64(x)
			}
		} else {
			t.DType = weights.F32
			t.F32 = host
		}
		out = append(out, t)
	}
	return out
}

// LoadOptions tune LoadStateDict.
type LoadOptions struct {
	// Prefix is stripped from file names before matching ("module." of
	// DataParallel checkpoints, "vgg." of a wrapper).
	Prefix string
	// AllowExtra ignores tensors in the file that the set does not have (the
	// classifier of a torchvision VGG file when only features are built).
	AllowExtra bool
	// AllowMissingBuffers keeps the initial value of buffers the file lacks
	// (num_batches_tracked is absent from files saved by old PyTorch).
	AllowMissingBuffers bool
}

// LoadStateDict copies named tensors into the set. Every parameter must be
// present with its exact shape; all mismatches are reported at once, naming
// each tensor, and nothing is changed unless everything matches.
func (ps *ParamSet) LoadStateDict(ts []weights.Tensor, opt LoadOptions) error {
	ps.mustPacked("LoadStateDict")
	byName := make(map[string]*weights.Tensor, len(ts))
	for i := range ts {
		name, ok := strings.CutPrefix(ts[i].Name, opt.Prefix)
		if !ok {
			if !opt.AllowExtra {
				return fmt.Errorf("tensor %q: lacks prefix %q", ts[i].Name, opt.Prefix)
			}
			continue
		}
		byName[name] = &ts[i]
	}
	var errs []error
	used := 0
	for _, p := range ps.params {
		t, ok := byName[p.Name]
		if !ok {
			if p.Buffer && opt.AllowMissingBuffers {
				continue
			}
			errs = append(errs, fmt.Errorf("tensor %q %v: missing from file", opt.Prefix+p.Name, p.Var.Value.Shape))
			continue
		}
		used++
		if !p.Var.Value.Shape.Equal(t.Shape) {
			errs = append(errs, fmt.Errorf("tensor %q: shape %v in file, model wants %v", t.Name, t.Shape, p.Var.Value.Shape))
			continue
		}
		if t.F32 == nil && t.I64 == nil {
			errs = append(errs, fmt.Errorf("tensor %q: dtype %s holds no numbers", t.Name, t.DType))
			continue
		}
		if t.F32 != nil {
			for i, v := range t.F32 {
				if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
					errs = append(errs, fmt.Errorf("tensor %q: element %d is %v", t.Name, i, v))
					break
				}
			}
		}
	}
	if !opt.AllowExtra && used < len(byName) {
		var extra []string
		for name := range byName {
			if ps.byName[name] == nil {
				extra = append(extra, strconv.Quote(opt.Prefix+name))
			}
		}
		if len(extra) > 0 {
			errs = append(errs, fmt.Errorf("file has %d tensors the model lacks: %s", len(extra), truncList(extra, 8)))
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	for _, p := range ps.params {
		t, ok := byName[p.Name]
		if !ok {
			continue
		}
		host := t.F32
		if host == nil {
			host = make([]float32, len(t.I64))
			for i, v := range t.I64 {
				host[i] = float32(v)
			}
		}
		ps.be.Upload(p.Var.Value, host)
	}
	return nil
}

func truncList(s []string, n int) string {
	if len(s) <= n {
		return strings.Join(s, ", ")
	}
	return strings.Join(s[:n], ", ") + fmt.Sprintf(", … (%d more)", len(s)-n)
}

// Save writes the set's state dict to a safetensors file (atomically: a
// temporary file renamed into place) with meta as the file's metadata.
func (ps *ParamSet) Save(path string, meta map[string]string) error {
	return weights.WriteSafetensorsFile(path, ps.StateDict(), meta)
}

// Load reads a safetensors or PyTorch file and loads it (LoadStateDict).
func (ps *ParamSet) Load(path string, opt LoadOptions) (map[string]string, error) {
	ts, meta, err := weights.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if err := ps.LoadStateDict(ts, opt); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return meta, nil
}

// Names of the Adam state in a safetensors file: one exp_avg and one
// exp_avg_sq tensor per parameter (PyTorch's names for m and v), and the step
// count in the metadata.
const (
	adamMPrefix = "exp_avg/"
	adamVPrefix = "exp_avg_sq/"
	adamStepKey = "adam.step"
)

// StateTensors returns the optimizer state as named tensors plus metadata.
func (a *Adam) StateTensors() ([]weights.Tensor, map[string]string) {
	m, v := make([]float32, a.m.Numel()), make([]float32, a.v.Numel())
	a.ps.be.Download(m, a.m)
	a.ps.be.Download(v, a.v)
	var out []weights.Tensor
	off := 0
	for _, p := range a.ps.params {
		if p.Buffer {
			continue
		}
		n := p.Var.Value.Numel()
		s := p.Var.Value.Shape.Clone()
		out = append(out,
			weights.Tensor{Name: adamMPrefix + p.Name, DType: weights.F32, Shape: s, F32: m[off : off+n]},
			weights.Tensor{Name: adamVPrefix + p.Name, DType: weights.F32, Shape: s, F32: v[off : off+n]})
		off += n
	}
	return out, map[string]string{adamStepKey: strconv.Itoa(a.step)}
}

// LoadStateTensors restores state written by StateTensors; every parameter's
// moments must be present with the parameter's shape.
func (a *Adam) LoadStateTensors(ts []weights.Tensor, meta map[string]string) error {
	step, err := strconv.Atoi(meta[adamStepKey])
	if err != nil || step < 0 {
		return fmt.Errorf("optimizer state: metadata %s = %q: want a step count ≥ 0", adamStepKey, meta[adamStepKey])
	}
	byName := make(map[string]*weights.Tensor, len(ts))
	for i := range ts {
		byName[ts[i].Name] = &ts[i]
	}
	m, v := make([]float32, a.m.Numel()), make([]float32, a.v.Numel())
	var errs []error
	off := 0
	for _, p := range a.ps.params {
		if p.Buffer {
			continue
		}
		n := p.Var.Value.Numel()
		for _, dst := range []struct {
			prefix string
			buf    []float32
		}{{adamMPrefix, m}, {adamVPrefix, v}} {
			t := byName[dst.prefix+p.Name]
			switch {
			case t == nil:
				errs = append(errs, fmt.Errorf("optimizer state: tensor %q missing", dst.prefix+p.Name))
			case t.F32 == nil || !p.Var.Value.Shape.Equal(t.Shape):
				errs = append(errs, fmt.Errorf("optimizer state: tensor %q: %s %v, want F32 %v", t.Name, t.DType, t.Shape, p.Var.Value.Shape))
			default:
				copy(dst.buf[off:off+n], t.F32)
			}
		}
		off += n
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	return a.SetState(m, v, step)
}
