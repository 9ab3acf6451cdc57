package train

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"slices"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"

	"github.com/crdgo/crdgo/crd/data"
	"github.com/crdgo/crdgo/crd/model"
	"github.com/crdgo/crdgo/crd/nn"
)

// MetricsLine is one line of metrics.jsonl: the losses at a step, or an
// evaluation.
type MetricsLine struct {
	Step    int         `json:"step"`
	Epoch   int         `json:"epoch"`
	Phase   Phase       `json:"phase,omitempty"`
	LR      float64     `json:"lr,omitempty"`
	Seconds float64     `json:"seconds"` // since the run (or resume) started
	Losses  Losses      `json:"losses,omitempty"`
	Eval    *EvalResult `json:"eval,omitempty"`
}

// reporter appends metrics.jsonl and keeps the loss history for the plot.
type reporter struct {
	dir     string
	f       *os.File
	w       *bufio.Writer
	history []MetricsLine
	start   time.Time
}

// openReporter opens OutDir/metrics.jsonl for appending, keeping the lines of
// steps ≤ fromStep (a resumed run drops what came after its checkpoint).
func openReporter(dir string, fromStep int) (*reporter, error) {
	if err := os.MkdirAll(filepath.Join(dir, "samples"), 0o755); err != nil {
		return nil, fmt.Errorf("report: %w", err)
	}
	p := filepath.Join(dir, "metrics.jsonl")
	var kept []MetricsLine
	if b, err := os.ReadFile(p); err == nil {
		sc := bufio.NewScanner(bytes.NewReader(b))
		sc.Buffer(make([]byte, 0, 1<<16), 1<<24)
		for sc.Scan() {
			var m MetricsLine
			if json.Unmarshal(sc.Bytes(), &m) == nil && m.Step <= fromStep {
				kept = append(kept, m)
			}
		}
	}
	f, err := os.Create(p)
	if err != nil {
		return nil, fmt.Errorf("report: %w", err)
	}
	r := &reporter{dir: dir, f: f, w: bufio.NewWriter(f), start: time.Now()}
	for _, m := range kept {
		if err := r.write(m); err != nil {
			return nil, err
		}
	}
	return r, r.w.Flush()
}

func (r *reporter) write(m MetricsLine) error {
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	r.w.Write(b)
	r.w.WriteByte('\n')
	if m.Losses != nil {
		r.history = append(r.history, m)
	}
	return nil
}

func (r *reporter) log(m MetricsLine) error {
	m.Seconds = time.Since(r.start).Seconds()
	if err := r.write(m); err != nil {
		return err
	}
	return r.w.Flush()
}

func (r *reporter) close() error {
	if err := r.w.Flush(); err != nil {
		r.f.Close()
		return err
	}
	return r.f.Close()
}

// plotLosses draws the loss history into OutDir/loss.png.
func (r *reporter) plotLosses(title string) error {
	if len(r.history) < 2 {
		return nil
	}
	keys := map[string]bool{}
	for _, m := range r.history {
		for k := range m.Losses {
			keys[k] = true
		}
	}
	var names []string
	for k := range keys {
		names = append(names, k)
	}
	slices.Sort(names)
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = "step"
	p.Y.Label.Text = "loss (log scale)"
	p.Y.Scale = plot.LogScale{}
	p.Y.Tick.Marker = plot.LogTicks{Prec: 2}
	var args []any
	for _, k := range names {
		var pts plotter.XYs
		for _, m := range r.history {
			if v, ok := m.Losses[k]; ok && v > 0 && !math.IsInf(v, 0) {
				pts = append(pts, plotter.XY{X: float64(m.Step), Y: v})
			}
		}
		if len(pts) > 1 {
			args = append(args, k, pts)
		}
	}
	if len(args) == 0 {
		return nil
	}
	if err := plotutil.AddLines(p, args...); err != nil {
		return fmt.Errorf("report: loss plot: %w", err)
	}
	p.Legend.Top = true
	w, err := p.WriterTo(8*vg.Inch, 5*vg.Inch, "png")
	if err != nil {
		return fmt.Errorf("report: loss plot: %w", err)
	}
	tmp := filepath.Join(r.dir, "loss.png.tmp")
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	if _, err := w.WriteTo(f); err != nil {
		f.Close()
		return fmt.Errorf("report: loss plot: %w", err)
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(r.dir, "loss.png"))
}

// sampleGrid draws one row per example: input | teacher | student | target,
// generators in evaluation mode.
func sampleGrid(tp *nn.Tape, teacher, student model.Network, exs []data.Example) image.Image {
	var cols [][][]float32
	cols = append(cols, pick(exs, func(e data.Example) []float32 { return e.A }))
	for _, g := range []model.Network{teacher, student} {
		g.SetTraining(false)
		cols = append(cols, Translate(tp, g, exs))
		g.SetTraining(true)
	}
	if exs[0].B != nil {
		cols = append(cols, pick(exs, func(e data.Example) []float32 { return e.B }))
	}
	side := int(math.Sqrt(float64(len(exs[0].A) / 3)))
	const gap = 2
	img := image.NewRGBA(image.Rect(0, 0, len(cols)*(side+gap)-gap, len(exs)*(side+gap)-gap))
	for y := range img.Bounds().Dy() {
		for x := range img.Bounds().Dx() {
			img.Set(x, y, color.White)
		}
	}
	for c, col := range cols {
		for r, chw := range col {
			drawCHW(img, chw, side, side, c*(side+gap), r*(side+gap))
		}
	}
	return img
}

func pick(exs []data.Example, f func(data.Example) []float32) [][]float32 {
	out := make([][]float32, len(exs))
	for i, e := range exs {
		out[i] = f(e)
	}
	return out
}

// drawCHW draws a 3×h×w image in [−1,1] at (x0, y0), converted as tensor2im.
func drawCHW(img *image.RGBA, chw []float32, h, w, x0, y0 int) {
	u := make([]uint8, len(chw))
	toUint8(u, chw, false)
	hw := h * w
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			i := y*w + x
			img.SetRGBA(x0+x, y0+y, color.RGBA{u[i], u[hw+i], u[2*hw+i], 255})
		}
	}
}

// writePNG writes img atomically (temporary file, then rename).
func writePNG(path string, img image.Image) error {
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	if err := png.Encode(f, img); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// WriteImage writes a 3×H×W image in [−1,1] as PNG (tensor2im conversion).
func WriteImage(path string, chw []float32, h, w int) error {
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	drawCHW(img, chw, h, w, 0, 0)
	return writePNG(path, img)
}
