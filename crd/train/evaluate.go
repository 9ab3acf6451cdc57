package train

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"

	"go.uber.org/zap"

	"github.com/crdgo/crdgo/crd/data"
	"github.com/crdgo/crdgo/crd/metric"
	"github.com/crdgo/crdgo/crd/model"
	"github.com/crdgo/crdgo/crd/nn"
	"github.com/crdgo/crdgo/crd/tensor"
	"github.com/crdgo/crdgo/crd/weights"
)

// FIDNet is Inception-v3 as pytorch-fid uses it: (N,2048) pool features of
// images in [0, 1] (docs/crd.md §5.7).
type FIDNet interface {
	Features(tp *nn.Tape, x01 *nn.Var) *nn.Var
}

// Scores are one generator's results on the evaluation set. Fields that could
// not be measured are NaN (no Inception weights; no ground truth).
type Scores struct {
	FID    float64 `json:"fid"`
	KID    float64 `json:"kid"`
	KIDStd float64 `json:"kid_std"`
	PSNR   float64 `json:"psnr"` // dB, images as uint8 (tensor2im), peak 1 on [0,1]
	SSIM   float64 `json:"ssim"`
	L1     float64 `json:"l1"` // mean |output − target| on [0,1]
	// PSNRTeacher and SSIMTeacher compare the student's output with the
	// teacher's on the same inputs, both as uint8 (docs/crd.md §7): how
	// close the distillation came, on paired and unpaired tasks alike. Only
	// a student evaluated together with its teacher has them.
	PSNRTeacher float64 `json:"psnr_teacher"`
	SSIMTeacher float64 `json:"ssim_teacher"`
	Warning     string  `json:"warning,omitempty"`
}

// ScoreNames are the measurements of Scores by JSON name, in the order
// logs and tables show them.
var ScoreNames = []string{"fid", "kid", "kid_std", "psnr", "ssim", "l1", "psnr_teacher", "ssim_teacher"}

// scoreFields are the measurements of Scores by JSON name.
func (s *Scores) scoreFields() map[string]*float64 {
	return map[string]*float64{"fid": &s.FID, "kid": &s.KID, "kid_std": &s.KIDStd, "psnr": &s.PSNR, "ssim": &s.SSIM, "l1": &s.L1,
		"psnr_teacher": &s.PSNRTeacher, "ssim_teacher": &s.SSIMTeacher}
}

// Measured are the measurements of s that were made (not NaN) and are
// finite, by JSON name.
func (s Scores) Measured() map[string]float64 {
	out := map[string]float64{}
	for k, v := range s.scoreFields() {
		if !math.IsNaN(*v) && !math.IsInf(*v, 0) {
			out[k] = *v
		}
	}
	return out
}

// MarshalJSON leaves out what was not measured (NaN) and what JSON cannot
// hold (±Inf, e.g. the PSNR of identical images).
func (s Scores) MarshalJSON() ([]byte, error) {
	out := map[string]any{}
	for k, v := range s.Measured() {
		out[k] = v
	}
	if s.Warning != "" {
		out["warning"] = s.Warning
	}
	return json.Marshal(out)
}

// UnmarshalJSON reads what MarshalJSON wrote; absent measurements are NaN.
func (s *Scores) UnmarshalJSON(b []byte) error {
	var in map[string]json.RawMessage
	if err := json.Unmarshal(b, &in); err != nil {
		return err
	}
	*s = nanScores()
	for k, p := range s.scoreFields() {
		if raw, ok := in[k]; ok {
			if err := json.Unmarshal(raw, p); err != nil {
				return fmt.Errorf("scores: %s: %w", k, err)
			}
		}
	}
	if raw, ok := in["warning"]; ok {
		return json.Unmarshal(raw, &s.Warning)
	}
	return nil
}

// EvalResult is an evaluation of teacher and student.
type EvalResult struct {
	Images  int    `json:"images"`
	Teacher Scores `json:"teacher"`
	Student Scores `json:"student"`
	// RealStats says where the real statistics came from.
	RealStats string `json:"real_stats,omitempty"`
}

// Evaluator measures generators on a recipe's evaluation set (docs/crd.md §7).
type Evaluator struct {
	be        tensor.Backend
	log       *zap.Logger
	ds        *data.Dataset
	inception FIDNet
	paired    bool
	max       int

	real      *metric.Stats // FID reference statistics, nil without Inception
	realActs  []float64     // real activations (KID), when computed from images
	realN     int
	realFrom  string
	realFixed bool

	group *evalGroup // data-parallel: the ranks share the images; nil: one process
}

// evalGroup is how the ranks of a run evaluate together: rank r of w takes
// its contiguous part of the evaluation images (data.Split), and what each
// image gives (scores, Inception activations) is gathered from every rank, so
// every rank ends with the one-process results, bit for bit, and no rank
// waits while another evaluates alone.
type evalGroup struct {
	ctx  context.Context
	sync GradSync
	step func() uint64
}

// part is this rank's share [lo, hi) of n evaluation images.
func (e *Evaluator) part(n int) (lo, hi int) {
	if e.group == nil {
		return 0, n
	}
	return data.Split(n, e.group.sync.World(), e.group.sync.Rank())
}

// gather returns the n×per values of every image, given this rank's part
// local (its images' values, at their place). One process: local itself.
func (e *Evaluator) gather(phase string, local []float32, per, n int) ([]float32, error) {
	if e.group == nil {
		return local, nil
	}
	lo, _ := e.part(n)
	all := make([]float32, n*per)
	copy(all[lo*per:], local)
	if err := e.group.sync.SumInPlace(e.group.ctx, e.group.step(), phase, all); err != nil {
		return nil, fmt.Errorf("eval: %s across %d ranks: %w", phase, e.group.sync.World(), err)
	}
	return all, nil
}

// OpenEvalSet opens the recipe's evaluation images in the dataset folder src
// (LocalDataset, FindDataset): aligned val (pix2pix) or valA paired in order
// with valB (CycleGAN), evaluation preprocessing.
func OpenEvalSet(ctx context.Context, src data.Source, r Recipe, log *zap.Logger) (*data.Dataset, error) {
	opt := data.Options{CropSize: r.Data.CropSize, LoadSize: r.Data.CropSize, Channels: 3, Eval: true,
		BtoA: r.Data.Direction == "BtoA", Compat: data.Compat(r.Compat)}
	if r.Mode == Pix2Pix {
		return data.OpenAligned(ctx, src, r.Data.Val, opt, log)
	}
	return data.OpenUnaligned(ctx, src, r.Data.ValA, r.Data.ValB, opt, log)
}

// DatasetDir finds the recipe's dataset under root (its name or an alias).
func DatasetDir(root string, r Recipe) (string, error) {
	for _, name := range append([]string{r.Data.Dataset}, r.Data.Aliases...) {
		p := filepath.Join(root, name)
		if st, err := os.Stat(p); err == nil && st.IsDir() {
			return p, nil
		} else if err == nil {
			return "", fmt.Errorf("dataset %q: %s is a file, not a folder (want the dataset's folder under --data-root %s)", r.Data.Dataset, p, root)
		}
	}
	return "", fmt.Errorf("dataset %q not found under %s (download it as docs/crd.md §6 says, or pass --data-root)", r.Data.Dataset, root)
}

// NewEvaluator prepares the evaluation of recipe r. inception may be nil:
// then only the paired metrics are measured. realStats is an npz with mu and
// sigma (GAN Compression's real_stat files), or "" to compute the statistics
// from the real images of the evaluation set.
func NewEvaluator(ctx context.Context, be tensor.Backend, ds *data.Dataset, r Recipe, inception FIDNet, realStats string, log *zap.Logger) (*Evaluator, error) {
	e := &Evaluator{be: be, log: log, ds: ds, inception: inception, paired: r.Eval.Paired, max: r.Eval.MaxImages}
	if a, b := ds.Images(); e.paired && a != b {
		return nil, fmt.Errorf("eval: %s: eval.paired compares A image i with B image i, but there are %d A and %d B images", ds, a, b)
	}
	if inception == nil || realStats == "" {
		return e, nil
	}
	arrs, err := weights.ReadNPZ(realStats)
	if err != nil {
		return nil, fmt.Errorf("eval: real statistics: %w", err)
	}
	mu, okM := arrs["mu"]
	sigma, okS := arrs["sigma"]
	if !okM || !okS || len(mu.Shape) != 1 {
		return nil, fmt.Errorf("eval: real statistics %s: want arrays mu (D) and sigma (D,D)", realStats)
	}
	st, err := metric.StatsFromArrays(mu.Data, sigma.Data, mu.Shape[0])
	if err != nil {
		return nil, fmt.Errorf("eval: real statistics %s: %w", realStats, err)
	}
	e.real, e.realFrom, e.realFixed = &st, realStats, true
	return e, nil
}

// n is the number of images translated and scored: every A image of the
// evaluation set (CycleGAN: all of valA, not max(|valA|, |valB|)), or the
// recipe's eval.max_images.
func (e *Evaluator) n() int {
	a, _ := e.ds.Images()
	if e.max > 0 {
		return min(e.max, a)
	}
	return a
}

// nReal is the number of real target images the FID statistics come from when
// they are computed from the evaluation set: every B image (CycleGAN: all of
// valB), or eval.max_images.
func (e *Evaluator) nReal() int {
	_, b := e.ds.Images()
	if e.max > 0 {
		return min(e.max, b)
	}
	return b
}

// Evaluate runs teacher and student (either may be nil) over the evaluation
// set in evaluation mode and scores them; with both, the student is also
// compared with the teacher's outputs (Scores.PSNRTeacher).
func (e *Evaluator) Evaluate(ctx context.Context, teacher, student model.Network) (EvalResult, error) {
	res := EvalResult{Images: e.n(), Teacher: nanScores(), Student: nanScores()}
	if e.inception != nil && e.real == nil {
		if err := e.realFromImages(ctx); err != nil {
			return res, err
		}
	}
	res.RealStats = e.realFrom
	var ref [][]uint8
	if teacher != nil {
		s, outs, err := e.score(ctx, teacher, nil, student != nil)
		if err != nil {
			return res, err
		}
		res.Teacher, ref = s, outs
	}
	if student != nil {
		s, _, err := e.score(ctx, student, ref, false)
		if err != nil {
			return res, err
		}
		res.Student = s
	}
	return res, nil
}

func nanScores() Scores {
	n := math.NaN()
	return Scores{FID: n, KID: n, KIDStd: n, PSNR: n, SSIM: n, L1: n, PSNRTeacher: n, SSIMTeacher: n}
}

const evalBatch = 8

// realFromImages computes the FID statistics of the evaluation set's target
// images (GAN Compression recomputes them this way when no npz exists).
func (e *Evaluator) realFromImages(ctx context.Context) error {
	tp := nn.NewTape(e.be)
	n := e.nReal()
	lo, hi := e.part(n)
	var local []float32
	for i := lo; i < hi; i += evalBatch {
		var imgs [][]float32
		for j := i; j < min(hi, i+evalBatch); j++ {
			ex, err := e.ds.Example(ctx, 0, 0, j)
			if err != nil {
				return fmt.Errorf("eval: %w", err)
			}
			imgs = append(imgs, ex.B)
		}
		f, err := e.features(tp, imgs, true)
		if err != nil {
			return err
		}
		local = append(local, f...)
	}
	all, err := e.gather("eval real activations", local, model.InceptionDim, n)
	if err != nil {
		return err
	}
	acts := widen(all)
	st, err := metric.ComputeStats(acts, n, model.InceptionDim)
	if err != nil {
		return fmt.Errorf("eval: real statistics of %s: %w", e.ds, err)
	}
	e.real, e.realActs, e.realN = &st, acts, n
	e.realFrom = fmt.Sprintf("computed from %d real images of %s", n, e.ds)
	return nil
}

func widen(x []float32) []float64 {
	out := make([]float64, len(x))
	for i, v := range x {
		out[i] = float64(v)
	}
	return out
}

// features runs Inception on images in [−1,1] after the tensor2im uint8
// conversion (truncating generated images, rounding exact real ones) and
// returns their model.InceptionDim activations each.
func (e *Evaluator) features(tp *nn.Tape, imgs [][]float32, real bool) ([]float32, error) {
	tp.Reset()
	per := len(imgs[0])
	side := int(math.Sqrt(float64(per / 3)))
	x := make([]float32, len(imgs)*per)
	u := make([]uint8, per)
	for i, img := range imgs {
		toUint8(u, img, real)
		metric.Uint8ToUnit(x[i*per:(i+1)*per], u)
	}
	f := e.inception.Features(tp, tp.Input(x, len(imgs), 3, side, side))
	if got := f.Value.Numel(); got != len(imgs)*model.InceptionDim {
		return nil, fmt.Errorf("eval: Inception gave %d values for %d images; want %d each", got, len(imgs), model.InceptionDim)
	}
	host := make([]float32, f.Value.Numel())
	e.be.Download(host, f.Value)
	return host, nil
}

// toUint8 converts [−1,1] to uint8: generated images as tensor2im (truncate),
// real images by rounding (they came from uint8 exactly).
func toUint8(dst []uint8, x []float32, round bool) {
	if !round {
		metric.ToUint8Truncate(dst, x)
		return
	}
	for i, v := range x {
		dst[i] = uint8(math.Round(math.Min(255, math.Max(0, float64((v+1)/2*255)))))
	}
}

// pairedWords is what one image's paired scores take on the wire: PSNR, SSIM
// and L1, each a float64 in nn.Float64Words float32s.
const pairedWords = 3 * nn.Float64Words

// teacherWords is what one image's comparison with the teacher's output
// takes on the wire: PSNR and SSIM.
const teacherWords = 2 * nn.Float64Words

// score evaluates g on the evaluation set. With ref (the teacher's outputs
// as uint8 for this rank's part of the images, in order) it also compares
// g's outputs with them; with keep it returns g's own outputs so.
func (e *Evaluator) score(ctx context.Context, g model.Network, ref [][]uint8, keep bool) (Scores, [][]uint8, error) {
	g.SetTraining(false)
	defer g.SetTraining(true)
	tp := nn.NewTape(e.be)
	ftp := nn.NewTape(e.be)
	s := nanScores()
	n := e.n()
	lo, hi := e.part(n)
	var paired, toTeacher, acts []float32
	var kept [][]uint8
	for i := lo; i < hi; i += evalBatch {
		if err := ctx.Err(); err != nil {
			return s, nil, err
		}
		var exs []data.Example
		for j := i; j < min(hi, i+evalBatch); j++ {
			ex, err := e.ds.Example(ctx, 0, 0, j)
			if err != nil {
				return s, nil, fmt.Errorf("eval: %w", err)
			}
			exs = append(exs, ex)
		}
		outs := Translate(tp, g, exs)
		for k, out := range outs {
			if !keep && ref == nil {
				break
			}
			u := make([]uint8, len(out))
			toUint8(u, out, false)
			if keep {
				kept = append(kept, u)
			}
			if ref != nil {
				t := ref[i-lo+k]
				if len(t) != len(u) {
					return s, nil, fmt.Errorf("eval: image %d: the teacher gave %d values, the student %d", i+k, len(t), len(u))
				}
				a, b := make([]float32, len(u)), make([]float32, len(t))
				metric.Uint8ToUnit(a, u)
				metric.Uint8ToUnit(b, t)
				side := int(math.Sqrt(float64(len(a) / 3)))
				var w [teacherWords]float32
				nn.PutFloat64(w[0:], metric.PSNR(a, b, 1))
				nn.PutFloat64(w[nn.Float64Words:], metric.SSIM(a, b, 3, side, side))
				toTeacher = append(toTeacher, w[:]...)
			}
		}
		if e.paired {
			for k, ex := range exs {
				a, b := toUnit(outs[k], false), toUnit(ex.B, true)
				side := int(math.Sqrt(float64(len(a) / 3)))
				var w [pairedWords]float32
				nn.PutFloat64(w[0:], metric.PSNR(a, b, 1))
				nn.PutFloat64(w[nn.Float64Words:], metric.SSIM(a, b, 3, side, side))
				nn.PutFloat64(w[2*nn.Float64Words:], metric.MeanAbs(a, b))
				paired = append(paired, w[:]...)
			}
		}
		if e.inception != nil {
			f, err := e.features(ftp, outs, false)
			if err != nil {
				return s, nil, err
			}
			acts = append(acts, f...)
		}
	}
	if e.paired {
		all, err := e.gather("eval paired scores", paired, pairedWords, n)
		if err != nil {
			return s, nil, err
		}
		// Summed in image order, as one process sums them.
		var psnr, ssim, l1 float64
		for i := range n {
			w := all[i*pairedWords:]
			psnr += nn.Float64(w)
			ssim += nn.Float64(w[nn.Float64Words:])
			l1 += nn.Float64(w[2*nn.Float64Words:])
		}
		s.PSNR, s.SSIM, s.L1 = psnr/float64(n), ssim/float64(n), l1/float64(n)
	}
	if ref != nil {
		all, err := e.gather("eval scores against the teacher", toTeacher, teacherWords, n)
		if err != nil {
			return s, nil, err
		}
		var psnr, ssim float64
		for i := range n {
			w := all[i*teacherWords:]
			psnr += nn.Float64(w)
			ssim += nn.Float64(w[nn.Float64Words:])
		}
		s.PSNRTeacher, s.SSIMTeacher = psnr/float64(n), ssim/float64(n)
	}
	if e.inception != nil {
		all, err := e.gather("eval activations", acts, model.InceptionDim, n)
		if err != nil {
			return s, nil, err
		}
		acts := widen(all)
		st, err := metric.ComputeStats(acts, n, model.InceptionDim)
		if err != nil {
			return s, nil, fmt.Errorf("eval: %w", err)
		}
		fid, warn, err := metric.FrechetDistance(*e.real, st)
		if err != nil {
			return s, nil, fmt.Errorf("eval: FID: %w", err)
		}
		s.FID, s.Warning = fid, warn
		if e.realActs != nil {
			opt := metric.DefaultKIDOptions()
			if m, sd, err := metric.KID(e.realActs, e.realN, acts, n, model.InceptionDim, opt); err == nil {
				s.KID, s.KIDStd = m, sd
			} else if !errors.Is(err, context.Canceled) {
				e.log.Warn("KID not computed", zap.Error(err))
			}
		}
	}
	return s, kept, nil
}

// toUnit maps [−1,1] to [0,1] through uint8 as the evaluation does.
func toUnit(x []float32, round bool) []float32 {
	u := make([]uint8, len(x))
	toUint8(u, x, round)
	out := make([]float32, len(x))
	metric.Uint8ToUnit(out, u)
	return out
}

// Translate runs g on the A images of exs (one batch) and returns each output
// (C×H×W in [−1,1]). The caller sets g's training mode.
func Translate(tp *nn.Tape, g model.Network, exs []data.Example) [][]float32 {
	tp.Reset()
	per := len(exs[0].A)
	side := int(math.Sqrt(float64(per / 3)))
	x := make([]float32, len(exs)*per)
	for i, ex := range exs {
		copy(x[i*per:], ex.A)
	}
	y := g.Forward(tp, tp.Input(x, len(exs), 3, side, side))
	host := make([]float32, y.Value.Numel())
	tp.Backend().Download(host, y.Value)
	out := make([][]float32, len(exs))
	for i := range out {
		out[i] = host[i*per : (i+1)*per]
	}
	return out
}
