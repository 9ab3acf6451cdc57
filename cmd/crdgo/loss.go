package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"time"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/crdgo/crdgo/crd"
)

// maxLossInput bounds the JSON file `crdgo loss` reads (and so every slice it decodes).
const maxLossInput = 256 << 20

func newLossCmd(g *globalFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "loss FILE.json",
		Short: "Evaluate the CRD loss and its gradient on one teacher/student batch (for cross-checking)",
		Long: `loss reads a teacher and a student output batch and prints the CRD relations
(CRD.md §1) as JSON, for cross-checking other implementations. FILE "-" reads stdin.

Input:
  {"shape_NCHW": [N, C, H, W], "patch_size": P,
   "teacher": [N·C·H·W numbers], "student": [N·C·H·W numbers]}
teacher and student are flat, row-major NCHW. H and W need not be multiples of P:
like F.unfold, the patch set drops the rows and columns past the last whole patch.
Each slice set needs at least 2 vectors (H ≥ 2, W ≥ 2, two whole patches).

Output:
  {"per_image": [{"row": {"distance": L_dist, "angle": L_angle, "rkd": RKD},
                  "column": {…}, "patch": {…}}, …],
   "cyclegan_total": 25·(row + column + patch)           (N = 1 only),
   "pix2pix_total": 2.5·Σ_b (row + column + patch),
   "pix2pix_total_official": the released code's pix2pix term (C = 3 only),
   "grad_cyclegan_total": ∂cyclegan_total/∂student, flat NCHW (N = 1 only)}
per_image's patch terms relate each image's own patches (compat intended). The
CycleGAN term is defined for batch 1 (CRD.md §9 D11); for N > 1 crdgo trains on
25·Σ_b of the per-image terms. The inputs are rounded to float32, the engine's
type (a float64 reference sees ~1e-8 relative differences from that alone); the
loss is computed in float64, and the gradient entries are the float32 values the
training op produces, printed exactly.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			log, err := g.newLogger()
			if err != nil {
				return err
			}
			defer log.Sync()
			name := args[0]
			var r io.Reader = cmd.InOrStdin()
			if name != "-" {
				f, err := os.Open(name)
				if err != nil {
					return fmt.Errorf("loss: %w", err)
				}
				defer f.Close()
				r = f
			}
			in, err := readLossInput(name, r, maxLossInput)
			if err != nil {
				return err
			}
			start := time.Now()
			out, err := evalLoss(name, in)
			if err != nil {
				return err
			}
			log.Debug("loss evaluated", zap.String("file", name), zap.Ints("shape_NCHW", in.shape[:]),
				zap.Int("patch_size", in.patch), zap.Duration("elapsed", time.Since(start)))
			enc := json.NewEncoder(cmd.OutOrStdout())
			if err := enc.Encode(out); err != nil {
				return fmt.Errorf("loss: %s: writing the result: %w", name, err)
			}
			return nil
		},
	}
}

// lossFile is the JSON `crdgo loss` reads.
type lossFile struct {
	Shape   []int     `json:"shape_NCHW"`
	Patch   *int      `json:"patch_size"`
	Teacher []float64 `json:"teacher"`
	Student []float64 `json:"student"`
}

// lossInput is a validated lossFile.
type lossInput struct {
	shape    [4]int
	patch    int
	teacher  []float32
	student  []float32
	official bool // C = 3: the released pix2pix patch term is defined
}

// readLossInput decodes and validates the input of `crdgo loss` from r (name for errors),
// reading at most limit bytes. It reports every problem it finds at once.
func readLossInput(name string, r io.Reader, limit int64) (lossInput, error) {
	data, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return lossInput{}, fmt.Errorf("loss: %s: %w", name, err)
	}
	if int64(len(data)) > limit {
		return lossInput{}, fmt.Errorf("loss: %s: larger than %d bytes", name, limit)
	}
	var f lossFile
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return lossInput{}, fmt.Errorf("loss: %s: %w", name, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return lossInput{}, fmt.Errorf("loss: %s: data after the JSON object", name)
	}

	var errs []error
	bad := func(format string, a ...any) {
		errs = append(errs, fmt.Errorf("loss: %s: "+format, append([]any{name}, a...)...))
	}
	var in lossInput
	switch {
	case f.Shape == nil:
		bad(`"shape_NCHW" is missing`)
	case len(f.Shape) != 4:
		bad(`"shape_NCHW" = %v: want 4 sizes [N, C, H, W]`, f.Shape)
	default:
		copy(in.shape[:], f.Shape)
	}
	if f.Patch == nil {
		bad(`"patch_size" is missing`)
	} else {
		in.patch = *f.Patch
	}
	if len(errs) == 0 {
		if err := crd.CheckShape(in.shape, in.patch, crd.Intended); err != nil {
			bad(`"shape_NCHW", "patch_size": %w`, err)
		}
	}
	if len(errs) == 0 { // the sizes are checked, so their product cannot overflow
		want := in.shape[0] * in.shape[1] * in.shape[2] * in.shape[3]
		in.teacher = toFloat32(f.Teacher, "teacher", want, bad)
		in.student = toFloat32(f.Student, "student", want, bad)
		in.official = in.shape[1] == 3
	}
	if err := errors.Join(errs...); err != nil {
		return lossInput{}, err
	}
	return in, nil
}

// toFloat32 checks the length and range of one tensor of the input and converts it.
func toFloat32(v []float64, key string, want int, bad func(string, ...any)) []float32 {
	if v == nil {
		bad("%q is missing", key)
		return nil
	}
	if len(v) != want {
		bad("%q has %d numbers; shape_NCHW wants N·C·H·W = %d", key, len(v), want)
		return nil
	}
	out := make([]float32, len(v))
	for q, x := range v {
		if math.IsNaN(x) || math.Abs(x) > math.MaxFloat32 {
			bad("%q[%d] = %g: outside the float32 range", key, q, x)
			return nil
		}
		out[q] = float32(x)
	}
	return out
}

type relationJSON struct {
	Distance float64 `json:"distance"`
	Angle    float64 `json:"angle"`
	RKD      float64 `json:"rkd"`
}

type imageJSON struct {
	Row    relationJSON `json:"row"`
	Column relationJSON `json:"column"`
	Patch  relationJSON `json:"patch"`
}

type lossOutput struct {
	PerImage             []imageJSON `json:"per_image"`
	CycleGANTotal        *float64    `json:"cyclegan_total,omitempty"`
	Pix2PixTotal         float64     `json:"pix2pix_total"`
	Pix2PixTotalOfficial *float64    `json:"pix2pix_total_official,omitempty"`
	GradCycleGANTotal    []float64   `json:"grad_cyclegan_total,omitempty"`
}

// evalLoss computes the output of `crdgo loss` for a validated input.
func evalLoss(name string, in lossInput) (lossOutput, error) {
	var w crd.Workspace
	var out lossOutput
	total, per := w.Pix2Pix(in.student, in.teacher, in.shape, in.patch, crd.Intended, nil, 0)
	out.Pix2PixTotal = total
	rel := func(r crd.Relation) relationJSON { return relationJSON{r.Distance, r.Angle, r.RKD} }
	for _, it := range per {
		out.PerImage = append(out.PerImage, imageJSON{rel(it.Row), rel(it.Column), rel(it.Patch)})
	}
	if in.shape[0] == 1 {
		grad := make([]float32, len(in.student))
		total, _ := w.CycleGAN(in.student, in.teacher, in.shape, in.patch, grad, 1)
		out.CycleGANTotal = &total
		out.GradCycleGANTotal = make([]float64, len(grad))
		for q, g := range grad {
			out.GradCycleGANTotal[q] = float64(g)
		}
	}
	if in.official {
		total, _ := w.Pix2Pix(in.student, in.teacher, in.shape, in.patch, crd.Official, nil, 0)
		out.Pix2PixTotalOfficial = &total
	}
	return out, checkFinite(name, out)
}

// checkFinite names the first value of out that JSON cannot carry. Only extreme inputs get
// there: the gradient of exactly duplicated student vectors is scaled by 1/1e-12 (CRD.md
// §9 D12) and can overflow float32.
func checkFinite(name string, out lossOutput) error {
	bad := func(what string, v float64) error {
		return fmt.Errorf("loss: %s: %s = %v is not finite", name, what, v)
	}
	for b, it := range out.PerImage {
		for _, r := range []struct {
			set string
			rel relationJSON
		}{{"row", it.Row}, {"column", it.Column}, {"patch", it.Patch}} {
			for _, v := range []float64{r.rel.Distance, r.rel.Angle, r.rel.RKD} {
				if math.IsNaN(v) || math.IsInf(v, 0) {
					return bad(fmt.Sprintf("per_image[%d].%s", b, r.set), v)
				}
			}
		}
	}
	for _, v := range []*float64{out.CycleGANTotal, &out.Pix2PixTotal, out.Pix2PixTotalOfficial} {
		if v != nil && (math.IsNaN(*v) || math.IsInf(*v, 0)) {
			return bad("a total", *v)
		}
	}
	for q, v := range out.GradCycleGANTotal {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return bad(fmt.Sprintf("grad_cyclegan_total[%d]", q), v)
		}
	}
	return nil
}
