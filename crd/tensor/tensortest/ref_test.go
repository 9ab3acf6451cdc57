package tensortest

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"testing"

	"github.com/crdgo/crdgo/crd/tensor"
)

// goldenCase is one line of testdata/torch_golden.json, written by
// testdata/torch_golden.py from PyTorch's float64 results.
type goldenCase struct {
	Op      string                     `json:"op"`
	Params  map[string]json.RawMessage `json:"params"`
	Inputs  map[string]goldenArray     `json:"inputs"`
	Outputs map[string]goldenArray     `json:"outputs"`
}

type goldenArray struct {
	Shape []int `json:"shape"`
	// Data holds float32 inputs (9 digits) or float64 outputs (12 digits).
	Data []float64 `json:"data"`
}

func (g goldenArray) array() Array { return Array{Shape: g.Shape, Data: g.Data} }

// TestRefsMatchPyTorch holds every reference to PyTorch's own outputs: the
// references are the suite's oracle, so they answer to an independent one.
func TestRefsMatchPyTorch(t *testing.T) {
	raw, err := os.ReadFile("testdata/torch_golden.json")
	if err != nil {
		t.Fatal(err)
	}
	var golden struct {
		Torch string       `json:"torch"`
		Cases []goldenCase `json:"cases"`
	}
	if err := json.Unmarshal(raw, &golden); err != nil {
		t.Fatalf("testdata/torch_golden.json: %v", err)
	}
	seen := map[string]int{}
	for i, c := range golden.Cases {
		seen[c.Op]++
		t.Run(fmt.Sprintf("%d_%s", i, c.Op), func(t *testing.T) {
			got, err := evalGolden(c)
			if err != nil {
				t.Fatal(err)
			}
			for name, want := range c.Outputs {
				g, ok := got[name]
				if !ok {
					t.Fatalf("no output %q", name)
				}
				if !sameShape(g.Shape, want.Shape) {
					t.Fatalf("%s: shape %v; PyTorch %v", name, g.Shape, want.Shape)
				}
				// Both are float64; the goldens carry 12 digits and the two
				// sum in different orders.
				scale := math.Max(maxAbs(want.Data), 1e-300)
				for j, w := range want.Data {
					if e := math.Abs(g.Data[j]-w) / scale; e > 1e-10 || math.IsNaN(e) {
						t.Errorf("%s(%s)%v = %.12g; PyTorch %s gives %.12g", c.Op, params(c), index(want.Shape, j), g.Data[j], golden.Torch, w)
						break
					}
				}
			}
		})
	}
	for _, op := range []string{"conv2d", "conv_transpose2d", "instance_norm", "batch_norm_train", "batch_norm_eval",
		"pad", "unary", "binary", "sum", "permute", "narrow", "cat", "max_pool2d", "avg_pool2d",
		"adaptive_avg_pool2d", "interpolate_bilinear", "matmul", "adam"} {
		if seen[op] == 0 {
			t.Errorf("testdata/torch_golden.json has no %s case", op)
		}
	}
}

func params(c goldenCase) string {
	b, _ := json.Marshal(c.Params)
	return string(b)
}

// evalGolden runs the reference for one golden case.
func evalGolden(c goldenCase) (map[string]Array, error) {
	var perr error
	param := func(name string, v any) {
		raw, ok := c.Params[name]
		if !ok {
			perr = fmt.Errorf("missing parameter %q", name)
			return
		}
		if err := json.Unmarshal(raw, v); err != nil {
			perr = fmt.Errorf("parameter %q: %v", name, err)
		}
	}
	in := func(name string) Array {
		a, ok := c.Inputs[name]
		if !ok {
			return Array{}
		}
		// Inputs are float32 values written with 9 digits: round back.
		x := a.array().Clone()
		for i, v := range x.Data {
			x.Data[i] = f32(v)
		}
		return x
	}
	act := func() tensor.Activation {
		var a string
		param("act", &a)
		switch a {
		case "relu":
			return tensor.Activation{Kind: tensor.ActReLU}
		case "leaky":
			return tensor.Activation{Kind: tensor.ActLeakyReLU, Slope: 0.2}
		}
		return tensor.Activation{}
	}
	pair := func(name string) (int, int) {
		var v [2]int
		param(name, &v)
		return v[0], v[1]
	}
	out := map[string]Array{}
	switch c.Op {
	case "conv2d", "conv_transpose2d":
		var p tensor.ConvParams
		p.StrideH, p.StrideW = pair("stride")
		p.PadH, p.PadW = pair("padding")
		p.DilationH, p.DilationW = pair("dilation")
		param("groups", &p.Groups)
		if c.Op == "conv2d" {
			out["y"] = RefConv2D(in("x"), in("w"), in("b"), p)
		} else {
			p.OutPadH, p.OutPadW = pair("output_padding")
			out["y"] = RefConvTranspose2D(in("x"), in("w"), in("b"), p)
		}
	case "instance_norm":
		var eps float64
		param("eps", &eps)
		out["y"] = RefInstanceNorm(in("x"), in("gamma"), in("beta"), eps, act())
	case "batch_norm_train":
		var eps float64
		param("eps", &eps)
		out["y"], out["mean"], out["var"] = RefBatchNormTrain(in("x"), in("gamma"), in("beta"), eps, act())
	case "batch_norm_eval":
		var eps float64
		param("eps", &eps)
		out["y"] = RefBatchNormEval(in("x"), in("mean"), in("var"), in("gamma"), in("beta"), eps, act())
	case "pad":
		var p tensor.Padding
		var mode string
		param("left", &p.Left)
		param("right", &p.Right)
		param("top", &p.Top)
		param("bottom", &p.Bottom)
		param("mode", &mode)
		if mode == "reflect" {
			p.Mode = tensor.PadReflect
		}
		out["y"] = RefPad2D(in("x"), p)
	case "unary":
		var kind string
		var op tensor.UnaryOp
		param("kind", &kind)
		param("a", &op.A)
		param("b", &op.B)
		op.Kind = -1
		for k, n := range unaryNames {
			if n == kind {
				op.Kind = k
			}
		}
		if op.Kind < 0 {
			return nil, fmt.Errorf("unknown unary op %q", kind)
		}
		out["y"] = RefUnary(op, in("x"))
	case "binary":
		var name string
		param("op", &name)
		op := tensor.BinaryOp(-1)
		for k, n := range binaryNames {
			if n == name {
				op = k
			}
		}
		if op < 0 {
			return nil, fmt.Errorf("unknown binary op %q", name)
		}
		out["y"] = RefBinary(op, in("a"), in("b"))
	case "sum":
		var shape []int
		param("shape", &shape)
		out["y"] = RefReduceSum(in("x"), shape)
	case "permute":
		var perm []int
		param("perm", &perm)
		out["y"] = RefPermute(in("x"), perm)
	case "narrow":
		var axis, start, n int
		param("axis", &axis)
		param("start", &start)
		param("n", &n)
		out["y"] = RefSliceAxis(in("x"), axis, start, n)
	case "cat":
		var axis int
		param("axis", &axis)
		out["y"] = RefConcat(axis, in("a"), in("b"))
	case "max_pool2d", "avg_pool2d":
		var p tensor.PoolParams
		p.KH, p.KW = pair("k")
		p.StrideH, p.StrideW = pair("s")
		p.PadH, p.PadW = pair("p")
		if c.Op == "max_pool2d" {
			out["y"] = RefMaxPool2D(in("x"), p)
		} else {
			param("count_include_pad", &p.CountIncludePad)
			out["y"] = RefAvgPool2D(in("x"), p)
		}
	case "adaptive_avg_pool2d":
		oh, ow := pair("out")
		out["y"] = RefAdaptiveAvgPool2D(in("x"), oh, ow)
	case "interpolate_bilinear":
		oh, ow := pair("out")
		var ac bool
		param("align_corners", &ac)
		out["y"] = RefResizeBilinear(in("x"), oh, ow, ac)
	case "matmul":
		var ta, tb bool
		param("trans_a", &ta)
		param("trans_b", &tb)
		out["y"] = RefMatMul(in("a"), in("b"), ta, tb)
	case "adam":
		var p tensor.AdamParams
		var steps int
		param("lr", &p.LR)
		param("beta1", &p.Beta1)
		param("beta2", &p.Beta2)
		param("eps", &p.Eps)
		param("weight_decay", &p.WeightDecay)
		param("steps", &steps)
		// The script gave PyTorch float32-representable hyper-parameters.
		prm := in("param")
		m, v := Zeros(len(prm.Data)), Zeros(len(prm.Data))
		for s := 0; s < steps; s++ {
			p.Step = s + 1
			prm, m, v = RefAdam(prm, in(fmt.Sprintf("grad%d", s)), m, v, p)
		}
		out["param"], out["m"], out["v"] = prm, m, v
	default:
		return nil, fmt.Errorf("unknown op %q", c.Op)
	}
	if perr != nil {
		return nil, perr
	}
	return out, nil
}
