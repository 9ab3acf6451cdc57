package model

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/crdgo/crdgo/crd/nn"
	"github.com/crdgo/crdgo/crd/tensor"
	"github.com/crdgo/crdgo/crd/weights"
)

// python is the interpreter with PyTorch (Debian's python3-torch; make deps
// installs it).
const python = "/usr/bin/python3"

type torchCase struct {
	Name string `json:"name"`
	Spec struct {
		Arch   string `json:"arch"`
		NGF    int    `json:"ngf"`
		NDF    int    `json:"ndf"`
		InC    int    `json:"in_c"`
		OutC   int    `json:"out_c"`
		Blocks int    `json:"blocks"`
		Downs  int    `json:"downs"`
		Layers int    `json:"layers"`
		Norm   string `json:"norm"`
	} `json:"spec"`
	Train   bool     `json:"train"`
	Weights string   `json:"weights"`
	IO      string   `json:"io"`
	Params  int      `json:"params"`
	Outputs []string `json:"outputs"`
	Grads   bool     `json:"grads"`
}

func (c torchCase) spec() Spec {
	s := c.Spec
	return Spec{Arch: s.Arch, NGF: s.NGF, NDF: s.NDF, InC: s.InC, OutC: s.OutC, Blocks: s.Blocks, Downs: s.Downs, Layers: s.Layers, Norm: Norm(s.Norm)}
}

// runTorchModels runs testdata/torch_models.py into a temporary directory and
// returns the directory and its cases, or skips when PyTorch is missing.
func runTorchModels(t *testing.T) (string, []torchCase) {
	t.Helper()
	if out, err := exec.Command(python, "-c", "import torch").CombinedOutput(); err != nil {
		skipWithoutPython(t, "%s cannot import torch (%v: %s): install python3-torch (make deps) to compare with PyTorch", python, err, strings.TrimSpace(string(out)))
	}
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	start := time.Now()
	out, err := exec.CommandContext(ctx, python, "testdata/torch_models.py", dir).CombinedOutput()
	if err != nil {
		t.Fatalf("testdata/torch_models.py: %v\n%s", err, out)
	}
	t.Logf("torch_models.py: %.1fs %s", time.Since(start).Seconds(), strings.TrimSpace(string(out)))
	b, err := os.ReadFile(filepath.Join(dir, "manifest.json"))
	if err != nil {
		t.Fatal(err)
	}
	var m struct {
		Torch string      `json:"torch"`
		Cases []torchCase `json:"cases"`
	}
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("manifest.json: %v", err)
	}
	return dir, m.Cases
}

// TestTorchConformance builds every architecture in PyTorch (the reference
// modules, written out in testdata/torch_models.py) with random weights, loads
// the weights into crdgo and compares parameter counts, forward outputs
// (relative error ≤ 1e-4 of the output's largest magnitude), running
// statistics after a training-mode pass, and the gradients of ⟨r, output⟩ with
// respect to the input and every parameter (≤ 1e-3).
func TestTorchConformance(t *testing.T) {
	dir, cases := runTorchModels(t)
	archs := map[string]bool{}
	for _, c := range cases {
		archs[c.Spec.Arch] = true
	}
	for _, a := range Archs() {
		if !archs[a] {
			t.Errorf("torch_models.py wrote no case for %s", a)
		}
	}
	be := tensor.NewCPU(tensor.DefaultCPUKind(), 0)
	for _, c := range cases {
		t.Run(c.Name, func(t *testing.T) { checkTorchCase(t, be, dir, c) })
	}
}

func checkTorchCase(t *testing.T, be tensor.Backend, dir string, c torchCase) {
	s := c.spec()
	wpath := filepath.Join(dir, c.Weights)
	var net Network
	var err error
	switch s.Arch {
	case ArchVGG16:
		net, err = LoadVGG16(be, wpath)
	case ArchInception:
		net, err = LoadInception(be, wpath)
	default:
		if net, err = New(be, s); err == nil {
			_, err = net.Params().Load(wpath, nn.LoadOptions{})
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	if got := net.Params().NumParams(); got != c.Params {
		t.Errorf("%s: NumParams = %d; PyTorch has %d", s, got, c.Params)
	}
	checkSaveLoad(t, be, net, s)

	ts, _, err := weights.ReadFile(filepath.Join(dir, c.IO))
	if err != nil {
		t.Fatal(err)
	}
	io := map[string]*weights.Tensor{}
	for i := range ts {
		io[ts[i].Name] = &ts[i]
	}
	in := io["input"]

	net.SetTraining(c.Train)
	tp := nn.NewTape(be)
	var x *nn.Var
	var xs *nn.ParamSet
	if c.Grads {
		// A one-tensor ParamSet gives the input a gradient of its own.
		xs = nn.NewParamSet(be)
		x = xs.Add("input", nn.Init{}, in.Shape...)
		xs.Pack()
		be.Upload(x.Value, in.F32)
	} else {
		x = tp.Input(in.F32, in.Shape...)
	}
	var outs []*nn.Var
	if v, ok := net.(*VGG16); ok {
		taps := v.Features(tp, x)
		outs = taps[:]
	} else {
		outs = []*nn.Var{net.Forward(tp, x)}
	}
	if len(outs) != len(c.Outputs) {
		t.Fatalf("%d outputs; PyTorch wrote %d", len(outs), len(c.Outputs))
	}
	for i, name := range c.Outputs {
		compare(t, be, name, outs[i].Value, io[name], 1e-4)
	}
	if c.Train {
		for _, p := range net.Params().Params() {
			if want := io["after."+p.Name]; want != nil {
				compare(t, be, "after a training pass: "+p.Name, p.Var.Value, want, 1e-4)
			}
		}
	}
	if !c.Grads {
		return
	}
	r := io["r"]
	net.Params().ZeroGrad()
	tp.BackwardFrom(outs[0], tp.Input(r.F32, r.Shape...).Value)
	compare(t, be, "grad.input", x.Grad, io["grad.input"], 1e-3)
	// The gradient of a bias that an instance norm follows is 0 in exact
	// arithmetic: both sides hold rounding noise there (seen: 1e-6 to 5e-6 of
	// the largest parameter gradient). Each tensor is therefore compared
	// relative to its own largest gradient or, when larger, 1e-2 of the
	// largest gradient of any parameter: an absolute tolerance of 1e-5 of
	// that for tensors with small gradients.
	var global float64
	for _, p := range net.Params().Params() {
		if want := io["grad."+p.Name]; want != nil && !p.Buffer {
			global = max(global, maxAbs(want.F32))
		}
	}
	n := 0
	for _, p := range net.Params().Params() {
		if p.Buffer {
			continue
		}
		want := io["grad."+p.Name]
		if want == nil {
			t.Errorf("grad.%s: PyTorch wrote no gradient", p.Name)
			continue
		}
		compareFloor(t, be, "grad."+p.Name, p.Var.Grad, want, 1e-3, 1e-2*global)
		n++
	}
	if n == 0 {
		t.Error("no parameter gradient compared")
	}
}

// compare fails when max|got − want| exceeds tol·max|want|.
func compare(t *testing.T, be tensor.Backend, what string, got *tensor.Tensor, want *weights.Tensor, tol float64) {
	t.Helper()
	compareFloor(t, be, what, got, want, tol, 0)
}

func maxAbs(v []float32) float64 {
	var m float64
	for _, x := range v {
		m = max(m, math.Abs(float64(x)))
	}
	return m
}

// compareFloor fails when max|got − want| exceeds tol·max(max|want|, floor).
func compareFloor(t *testing.T, be tensor.Backend, what string, got *tensor.Tensor, want *weights.Tensor, tol, floor float64) {
	t.Helper()
	if want == nil {
		t.Errorf("%s: missing from PyTorch's file", what)
		return
	}
	if !slices.Equal([]int(got.Shape), want.Shape) {
		t.Errorf("%s: shape %v; PyTorch %v", what, got.Shape, want.Shape)
		return
	}
	g := make([]float32, got.Numel())
	be.Download(g, got)
	var maxW, maxD float64
	at := 0
	for i, w := range want.F32 {
		maxW = max(maxW, math.Abs(float64(w)))
		if d := math.Abs(float64(g[i]) - float64(w)); d > maxD || math.IsNaN(d) {
			maxD, at = d, i
		}
	}
	if maxW == 0 && floor == 0 {
		t.Errorf("%s: PyTorch's tensor is all zeros: the case tests nothing", what)
		return
	}
	if rel := maxD / max(maxW, floor); !(rel <= tol) {
		t.Errorf("%s %v: max |crdgo − PyTorch| = %.3g at element %d (crdgo %g, PyTorch %g), %.3g of max(max |PyTorch| %.3g, floor %.3g); want ≤ %g",
			what, got.Shape, maxD, at, g[at], want.F32[at], rel, maxW, floor, tol)
	}
}

// checkSaveLoad saves net's state dict as safetensors, loads it into a fresh
// network of the same spec and checks that every tensor came back unchanged.
func checkSaveLoad(t *testing.T, be tensor.Backend, net Network, s Spec) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "saved.safetensors")
	if err := net.Params().Save(path, map[string]string{"arch": s.Arch}); err != nil {
		t.Fatal(err)
	}
	fresh, err := New(be, s)
	if err != nil {
		t.Fatal(err)
	}
	meta, err := fresh.Params().Load(path, nn.LoadOptions{})
	if err != nil {
		t.Fatalf("reloading what Save wrote: %v", err)
	}
	if meta["arch"] != s.Arch {
		t.Errorf("metadata arch = %q; want %q", meta["arch"], s.Arch)
	}
	a, b := net.Params().StateDict(), fresh.Params().StateDict()
	for i := range a {
		if a[i].Name != b[i].Name || !slices.Equal(a[i].F32, b[i].F32) || !slices.Equal(a[i].I64, b[i].I64) {
			t.Errorf("tensor %d %q: differs after Save and Load", i, a[i].Name)
		}
	}
}

func ExampleCount() {
	p, err := Count(DefaultSpec(ArchMobileResnet), 256, 256)
	if err != nil {
		panic(err)
	}
	fmt.Printf("%d params, %d MACs\n", p.Params, p.MACs(MACsV003))
	// Output: 1987075 params, 18314428416 MACs
}

// skipWithoutPython skips a test that needs /usr/bin/python3 with its
// packages, and fails it where CRDGO_CI is set (.ci/run sets it): CI installs
// them, so a missing one there is a broken environment, not a reason to pass.
func skipWithoutPython(t *testing.T, format string, args ...any) {
	t.Helper()
	if os.Getenv("CRDGO_CI") != "" {
		t.Fatalf("CRDGO_CI is set: "+format, args...)
	}
	t.Skipf(format, args...)
}
