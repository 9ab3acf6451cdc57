package ablation

import (
	"fmt"
	"image/color"
	"math"
	"os"
	"slices"

	"github.com/crdgo/crdgo/crd/train"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// Plot draws metric over training steps into a PNG file, one panel per table
// and one band per variant: the mean over the variant's runs at each
// evaluated step, shaded ± one standard deviation. An empty metric picks the
// first of Metrics present (PSNR on the synthetic recipes).
func Plot(path string, tables []Table, metric string) error {
	if len(tables) == 0 {
		return fmt.Errorf("report: plot %s: no table", path)
	}
	if metric == "" {
		for _, m := range Metrics() {
			for _, t := range tables {
				if slices.Contains(t.Metrics, m.Name) && metric == "" {
					metric = m.Name
				}
			}
		}
	}
	m, ok := metricByName(metric)
	if !ok {
		var names []string
		for _, m := range Metrics() {
			names = append(names, m.Name)
		}
		return fmt.Errorf("report: plot metric %q: want one of %v", metric, names)
	}
	var panels [][]*plot.Plot
	for _, t := range tables {
		if !slices.Contains(t.Metrics, m.Name) {
			return fmt.Errorf("report: plot %s: recipe %s has no %s evaluation", path, t.Recipe, m.Name)
		}
		p, err := t.panel(m)
		if err != nil {
			return err
		}
		panels = append(panels, []*plot.Plot{p})
	}
	w, h := 8*vg.Inch, vg.Length(len(panels))*4*vg.Inch
	img := vgimg.New(w, h)
	dc := draw.New(img)
	canvases := plot.Align(panels, draw.Tiles{Rows: len(panels), Cols: 1, PadTop: vg.Points(4), PadBottom: vg.Points(4)}, dc)
	for i := range panels {
		panels[i][0].Draw(canvases[i][0])
	}
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return fmt.Errorf("report: plot: %w", err)
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
		f.Close()
		return fmt.Errorf("report: plot %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("report: plot: %w", err)
	}
	return os.Rename(tmp, path)
}

// panel is one table's plot of metric m.
func (t *Table) panel(m Metric) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = fmt.Sprintf("%s — %s, student %s: mean ± sd over seeds", t.Recipe, t.Task, t.Student)
	p.X.Label.Text = "step (pix2pix crd-offline: student steps after its teacher phase)"
	p.Y.Label.Text = m.Label
	p.Legend.Top = true
	p.Legend.Left = !m.Higher
	ylo, yhi := math.Inf(1), math.Inf(-1)
	for i, row := range t.Rows {
		byStep := map[int][]float64{}
		for _, r := range t.runs[row.Variant] {
			// A pix2pix online student trains from step 1, an offline one
			// after its teacher phase: its curve starts at 0 too. (CycleGAN's
			// offline student starts where the online one's first round does.)
			shift := 0
			if r.Recipe.Mode == train.Pix2Pix {
				shift = r.TeacherPhase
			}
			for _, pt := range r.Points {
				if v, ok := pt.Values[m.Name]; ok && pt.Step >= shift {
					byStep[pt.Step-shift] = append(byStep[pt.Step-shift], v)
				}
			}
		}
		if len(byStep) == 0 {
			continue
		}
		var steps []int
		for s := range byStep {
			steps = append(steps, s)
		}
		slices.Sort(steps)
		mean := make(plotter.XYs, len(steps))
		lo, hi := make(plotter.XYs, len(steps)), make(plotter.XYs, len(steps))
		for j, s := range steps {
			st := stat(byStep[s])
			sd := st.SD
			if math.IsNaN(sd) {
				sd = 0
			}
			x := float64(s)
			mean[j] = plotter.XY{X: x, Y: st.Mean}
			lo[j], hi[j] = plotter.XY{X: x, Y: st.Mean - sd}, plotter.XY{X: x, Y: st.Mean + sd}
			ylo, yhi = math.Min(ylo, st.Mean-sd), math.Max(yhi, st.Mean+sd)
		}
		c := plotutil.Color(i)
		band := append(plotter.XYs{}, lo...)
		for j := len(hi) - 1; j >= 0; j-- {
			band = append(band, hi[j])
		}
		poly, err := plotter.NewPolygon(band)
		if err != nil {
			return nil, fmt.Errorf("report: plot: %w", err)
		}
		r, g, b, _ := c.RGBA()
		poly.Color = color.NRGBA{R: uint8(r >> 8), G: uint8(g >> 8), B: uint8(b >> 8), A: 60}
		poly.LineStyle.Width = 0
		line, err := plotter.NewLine(mean)
		if err != nil {
			return nil, fmt.Errorf("report: plot: %w", err)
		}
		line.Color = c
		line.Width = vg.Points(1.5)
		p.Add(poly, line)
		p.Legend.Add(fmt.Sprintf("%s (%d)", row.Variant, len(t.runs[row.Variant])), line)
	}
	if ylo < yhi { // the whole bands, a margin around them
		pad := 0.05 * (yhi - ylo)
		p.Y.Min, p.Y.Max = ylo-pad, yhi+pad
	}
	return p, nil
}
