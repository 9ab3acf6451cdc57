package ablation

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"go.uber.org/zap"

	"github.com/crdgo/crdgo/crd/model"
	"github.com/crdgo/crdgo/crd/train"
)

// Metric is a measurement a report knows: its name in metrics.jsonl, its
// label and whether more is better.
type Metric struct {
	Name   string
	Label  string
	Higher bool
	Format string // of one value
}

// Metrics are the measurements of an evaluation (docs/crd.md §7), in table
// order: the paired ones on synthetic data, FID and KID with Inception
// weights, and the student's closeness to its teacher's outputs (runs that
// have a teacher).
func Metrics() []Metric {
	return []Metric{
		{"psnr", "PSNR dB", true, "%.2f"}, {"ssim", "SSIM", true, "%.3f"}, {"l1", "L1", false, "%.4f"},
		{"fid", "FID", false, "%.2f"}, {"kid", "KID", false, "%.4f"},
		{"psnr_teacher", "PSNR to teacher dB", true, "%.2f"}, {"ssim_teacher", "SSIM to teacher", true, "%.3f"},
	}
}

func metricByName(name string) (Metric, bool) {
	for _, m := range Metrics() {
		if m.Name == name {
			return m, true
		}
	}
	return Metric{}, false
}

// Point is one evaluation of a run's subject network: the step and the
// measurements present, by Metric name.
type Point struct {
	Step   int
	Values map[string]float64
}

// RunData is what a report reads from one run folder.
type RunData struct {
	Dir    string
	Recipe train.Recipe // from the newest intact checkpoint
	// Subject is the network the run trains as its result: the student, or
	// the teacher's seat of a run without distillation (variant alone).
	Subject train.Generator
	// Points are the subject's evaluations in step order, the last one of
	// each step (a step evaluated twice keeps its last line).
	Points []Point
	// TeacherPoints are the teacher's evaluations, likewise (none in a run
	// without a teacher, variant alone).
	TeacherPoints []Point
	// Steps is the last step in metrics.jsonl; Seconds the wall time of the
	// processes that trained the run, summed (from the ablation marker when
	// the run has one, else from metrics.jsonl).
	Steps   int
	Seconds float64
	// TeacherPhase is the last step of an offline run's teacher phase (0
	// for other runs): a pix2pix offline student's step k is step
	// TeacherPhase + k.
	TeacherPhase int
}

// maxLine bounds one metrics.jsonl line, as the trainer's reporter does.
const maxLine = 1 << 24

// ReadRun reads the run folder dir: its recipe from the newest intact
// checkpoint, the evaluations and times from metrics.jsonl. A line that is
// not a metrics line is an error naming the file and the line.
func ReadRun(dir string) (RunData, error) {
	rd := RunData{Dir: dir}
	cp, err := train.LatestCheckpoint(filepath.Join(dir, "checkpoints"), zap.NewNop())
	if err != nil {
		return rd, fmt.Errorf("report: %s: %w", dir, err)
	}
	if cp == "" {
		return rd, fmt.Errorf("report: %s: no intact checkpoint, so the run's recipe is unknown", dir)
	}
	if rd.Recipe, err = train.ReadCheckpointRecipe(cp); err != nil {
		return rd, fmt.Errorf("report: %w", err)
	}
	rd.Subject = rd.Recipe.SubjectGenerator()
	p := filepath.Join(dir, "metrics.jsonl")
	f, err := os.Open(p)
	if err != nil {
		return rd, fmt.Errorf("report: %w", err)
	}
	defer f.Close()
	if err := rd.readMetrics(f, p); err != nil {
		return rd, err
	}
	if m, ok, err := readMarker(dir); err != nil {
		return rd, fmt.Errorf("report: %w", err)
	} else if ok && m.Finished && m.Seconds > 0 {
		rd.Seconds = m.Seconds
	}
	return rd, nil
}

// readMetrics reads metrics.jsonl (named p in errors) into rd.
func (rd *RunData) readMetrics(r io.Reader, p string) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 1<<16), maxLine)
	var (
		line       int
		segment    float64 // the newest Seconds of the current process
		wall       float64
		sawSeconds bool
	)
	byStep, teacherByStep := map[int]Point{}, map[int]Point{}
	for sc.Scan() {
		line++
		b := sc.Bytes()
		if len(strings.TrimSpace(string(b))) == 0 {
			continue
		}
		var m train.MetricsLine
		if err := json.Unmarshal(b, &m); err != nil {
			return fmt.Errorf("report: %s:%d: not a metrics line: %w", p, line, err)
		}
		if m.Step < 0 || !(m.Seconds >= 0) || math.IsInf(m.Seconds, 0) {
			return fmt.Errorf("report: %s:%d: step %d, seconds %v: want both ≥ 0", p, line, m.Step, m.Seconds)
		}
		// A resumed run starts its clock again: a smaller Seconds opens a
		// new process's segment.
		if sawSeconds && m.Seconds < segment {
			wall += segment
		}
		segment, sawSeconds = m.Seconds, true
		rd.Steps = max(rd.Steps, m.Step)
		if m.Phase == train.PhaseTeacher && rd.Recipe.Schedule.DistillMode() == train.DistillOffline {
			rd.TeacherPhase = max(rd.TeacherPhase, m.Step)
		}
		if m.Eval == nil {
			continue
		}
		// A network the line does not score has no key (the trainer writes
		// {} for it): decoded into Scores it would read as zeros.
		var ev struct {
			Eval struct {
				Teacher *train.Scores `json:"teacher"`
				Student *train.Scores `json:"student"`
			} `json:"eval"`
		}
		if err := json.Unmarshal(b, &ev); err != nil {
			return fmt.Errorf("report: %s:%d: not a metrics line: %w", p, line, err)
		}
		subject, teacher := ev.Eval.Student, ev.Eval.Teacher
		if rd.Subject == train.TeacherGenerator {
			subject, teacher = teacher, nil
		}
		if vals := measured(teacher); len(vals) > 0 {
			teacherByStep[m.Step] = Point{Step: m.Step, Values: vals}
		}
		if vals := measured(subject); len(vals) > 0 {
			byStep[m.Step] = Point{Step: m.Step, Values: vals}
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("report: %s:%d: %w", p, line+1, err)
	}
	rd.Seconds = wall + segment
	rd.Points, rd.TeacherPoints = sortedPoints(byStep), sortedPoints(teacherByStep)
	return nil
}

// measured are the measurements of s present (not NaN, finite), by Metric
// name; none when s is nil.
func measured(s *train.Scores) map[string]float64 {
	vals := map[string]float64{}
	if s == nil {
		return vals
	}
	for name, v := range s.Measured() {
		if _, ok := metricByName(name); ok {
			vals[name] = v
		}
	}
	return vals
}

func sortedPoints(byStep map[int]Point) []Point {
	var out []Point
	for _, pt := range byStep {
		out = append(out, pt)
	}
	slices.SortFunc(out, func(a, b Point) int { return a.Step - b.Step })
	return out
}

// Collect reads the run folders named by paths: each path is a run folder
// (it holds metrics.jsonl) or a folder with run folders one or two levels
// below it (an ablation's DIR/<variant>/seed-<k>). A run found below a path
// whose ablation marker says it has not finished (an ablation in progress)
// is left out and listed in unfinished; a run folder named itself is read
// whatever its state.
func Collect(paths []string) (runs []RunData, unfinished []string, err error) {
	var dirs []string
	named := map[string]bool{}
	for _, p := range paths {
		st, err := os.Stat(p)
		if err != nil {
			return nil, nil, fmt.Errorf("report: %w", err)
		}
		if !st.IsDir() {
			return nil, nil, fmt.Errorf("report: %s: not a folder: want a run folder or an ablation's folder", p)
		}
		found, err := runFolders(p)
		if err != nil {
			return nil, nil, err
		}
		if len(found) == 0 {
			return nil, nil, fmt.Errorf("report: %s: no run folder (no metrics.jsonl in it, nor one or two levels below)", p)
		}
		if len(found) == 1 && found[0] == p {
			named[p] = true
		}
		slices.Sort(found)
		dirs = append(dirs, found...)
	}
	seen := map[string]bool{}
	for _, d := range dirs { // in the order of paths: tables come in that order
		if seen[d] {
			continue
		}
		seen[d] = true
		if !named[d] {
			m, ok, err := readMarker(d)
			if err != nil {
				return nil, nil, fmt.Errorf("report: %w", err)
			}
			if ok && !m.Finished {
				unfinished = append(unfinished, d)
				continue
			}
		}
		r, err := ReadRun(d)
		if err != nil {
			return nil, nil, err
		}
		runs = append(runs, r)
	}
	if len(runs) == 0 {
		return nil, unfinished, fmt.Errorf("report: %s: no finished run (%d unfinished)", strings.Join(paths, ", "), len(unfinished))
	}
	return runs, unfinished, nil
}

// runFolders finds the run folders at dir or one or two levels below it.
func runFolders(dir string) ([]string, error) {
	isRun := func(d string) bool {
		_, err := os.Stat(filepath.Join(d, "metrics.jsonl"))
		return err == nil
	}
	if isRun(dir) {
		return []string{dir}, nil
	}
	var out []string
	level := []string{dir}
	for depth := 0; depth < 2; depth++ {
		var below []string
		for _, d := range level {
			ents, err := os.ReadDir(d)
			if err != nil {
				return nil, fmt.Errorf("report: %w", err)
			}
			for _, e := range ents {
				if !e.IsDir() {
					continue
				}
				sub := filepath.Join(d, e.Name())
				if isRun(sub) {
					out = append(out, sub)
				} else {
					below = append(below, sub)
				}
			}
		}
		level = below
	}
	return out, nil
}

// Stat is a mean and standard deviation over N runs (SD NaN for one run).
type Stat struct {
	Mean, SD float64
	N        int
}

// MarshalJSON leaves out an SD that one run cannot have.
func (s Stat) MarshalJSON() ([]byte, error) {
	m := map[string]any{"mean": s.Mean, "n": s.N}
	if !math.IsNaN(s.SD) {
		m["sd"] = s.SD
	}
	return json.Marshal(m)
}

// stat is the mean and the sample standard deviation (n − 1) of v.
func stat(v []float64) Stat {
	s := Stat{N: len(v), Mean: math.NaN(), SD: math.NaN()}
	if len(v) == 0 {
		return s
	}
	var sum float64
	for _, x := range v {
		sum += x
	}
	s.Mean = sum / float64(len(v))
	if len(v) > 1 {
		var ss float64
		for _, x := range v {
			ss += (x - s.Mean) * (x - s.Mean)
		}
		s.SD = math.Sqrt(ss / float64(len(v)-1))
	}
	return s
}

// Row is one variant of a table.
type Row struct {
	Variant string   `json:"variant"`
	Runs    []string `json:"runs"`
	// Final and Best are, per metric, the mean ± sd over the runs of each
	// run's last evaluation and of its best one (max PSNR/SSIM, min L1, FID,
	// KID) over the run.
	Final   map[string]Stat `json:"final"`
	Best    map[string]Stat `json:"best"`
	Steps   Stat            `json:"steps"`
	Seconds Stat            `json:"wall_seconds"`
	Params  int64           `json:"params"`
	MACs    int64           `json:"macs"`
}

// Table is one task: one recipe, one student, its variants.
type Table struct {
	Recipe  string   `json:"recipe"`
	Task    string   `json:"task"`
	Student string   `json:"student"`
	Size    int      `json:"image_size"`
	Metrics []string `json:"metrics"`
	Rows    []Row    `json:"rows"`
	// Teacher is the teacher's final values in the crd runs, for reference
	// (absent without crd runs).
	Teacher     map[string]Stat `json:"teacher_final,omitempty"`
	TeacherSpec string          `json:"teacher,omitempty"`
	runs        map[string][]RunData
}

// Build groups runs into one table per recipe, rows by variant, and refuses
// runs that do not belong together: within a table every recipe field must
// agree except the seed and, between variants, the fields a variant changes
// (train.VariantFields); the error names the field and both runs.
func Build(runs []RunData) ([]Table, error) {
	var tables []Table
	idx := map[string]int{}
	for _, r := range runs {
		i, ok := idx[r.Recipe.Name]
		if !ok {
			i = len(tables)
			idx[r.Recipe.Name] = i
			rec := r.Recipe
			tables = append(tables, Table{Recipe: rec.Name, Size: rec.Data.CropSize,
				Task:    fmt.Sprintf("%s, %s %d×%d", rec.Mode, rec.Data.Dataset, rec.Data.CropSize, rec.Data.CropSize),
				Student: fmt.Sprintf("%s ngf %d", rec.Student.Arch, rec.Student.NGF),
				runs:    map[string][]RunData{}})
		}
		t := &tables[i]
		for _, rs := range t.runs {
			if err := compatible(rs[0], r); err != nil {
				return nil, err
			}
		}
		v := r.Recipe.VariantName()
		t.runs[v] = append(t.runs[v], r)
	}
	for i := range tables {
		if err := tables[i].fill(); err != nil {
			return nil, err
		}
	}
	return tables, nil
}

// compatible says why runs a and b cannot share a table, or nil.
func compatible(a, b RunData) error {
	diffs, err := train.DiffRecipes(a.Recipe, b.Recipe)
	if err != nil {
		return err
	}
	sameVariant := a.Recipe.VariantName() == b.Recipe.VariantName()
	for _, d := range diffs {
		if d.Field == "seed" {
			continue
		}
		if !sameVariant && variantField(d.Field) {
			continue
		}
		return fmt.Errorf("report: %s and %s: recipe %s: field %s differs (%s vs %s): a table compares the variants of one recipe and one student; report these runs separately",
			a.Dir, b.Dir, a.Recipe.Name, d.Field, d.A, d.B)
	}
	return nil
}

func variantField(f string) bool {
	for _, v := range train.VariantFields() {
		if f == v || strings.HasPrefix(f, v+".") {
			return true
		}
	}
	return false
}

// fill computes the table's rows from its runs.
func (t *Table) fill() error {
	present := map[string]bool{}
	for _, rs := range t.runs {
		for _, r := range rs {
			for _, p := range r.Points {
				for k := range p.Values {
					present[k] = true
				}
			}
		}
	}
	for _, m := range Metrics() {
		if present[m.Name] {
			t.Metrics = append(t.Metrics, m.Name)
		}
	}
	var variants []string
	for v := range t.runs {
		variants = append(variants, v)
	}
	order := train.Variants()
	slices.SortFunc(variants, func(a, b string) int {
		ia, ib := slices.Index(order, a), slices.Index(order, b)
		if ia < 0 {
			ia = len(order)
		}
		if ib < 0 {
			ib = len(order)
		}
		if ia != ib {
			return ia - ib
		}
		return strings.Compare(a, b)
	})
	for _, v := range variants {
		rs := t.runs[v]
		row := Row{Variant: v, Final: map[string]Stat{}, Best: map[string]Stat{}}
		prof, err := rs[0].Recipe.Profile(rs[0].Subject)
		if err != nil {
			return fmt.Errorf("report: %s: %w", rs[0].Dir, err)
		}
		row.Params, row.MACs = prof.Params, prof.MACs(model.MACsV003)
		var steps, secs []float64
		for _, r := range rs {
			row.Runs = append(row.Runs, r.Dir)
			steps = append(steps, float64(r.Steps))
			secs = append(secs, r.Seconds)
		}
		row.Steps, row.Seconds = stat(steps), stat(secs)
		for _, name := range t.Metrics {
			m, _ := metricByName(name)
			var finals, bests []float64
			for _, r := range rs {
				f, b, ok := finalBest(r.Points, m)
				if ok {
					finals, bests = append(finals, f), append(bests, b)
				}
			}
			if len(finals) > 0 {
				row.Final[name], row.Best[name] = stat(finals), stat(bests)
			}
		}
		t.Rows = append(t.Rows, row)
	}
	if rs := t.runs[train.VariantCRD]; len(rs) > 0 {
		t.TeacherSpec = fmt.Sprintf("%s ngf %d", rs[0].Recipe.Teacher.Arch, rs[0].Recipe.Teacher.NGF)
		t.Teacher = map[string]Stat{}
		for _, name := range t.Metrics {
			m, _ := metricByName(name)
			var finals []float64
			for _, r := range rs {
				if f, _, ok := finalBest(r.TeacherPoints, m); ok {
					finals = append(finals, f)
				}
			}
			if len(finals) > 0 {
				t.Teacher[name] = stat(finals)
			}
		}
	}
	return nil
}

// finalBest is the last value of m over points and the best one.
func finalBest(points []Point, m Metric) (final, best float64, ok bool) {
	for _, p := range points {
		v, has := p.Values[m.Name]
		if !has {
			continue
		}
		if !ok || (m.Higher && v > best) || (!m.Higher && v < best) {
			best = v
		}
		final, ok = v, true
	}
	return final, best, ok
}

// Markdown writes the tables as markdown, one section per table.
func Markdown(w io.Writer, tables []Table) error {
	var b strings.Builder
	for i, t := range tables {
		if i > 0 {
			b.WriteString("\n")
		}
		fmt.Fprintf(&b, "### %s — %s; student %s\n\n", t.Recipe, t.Task, t.Student)
		b.WriteString("| variant | seeds | steps |")
		sep := "|---|---|---|"
		for _, name := range t.Metrics {
			m, _ := metricByName(name)
			fmt.Fprintf(&b, " %s final | %s best |", m.Label, m.Label)
			sep += "---|---|"
		}
		fmt.Fprintf(&b, " params | MACs (%d×%d) | wall min |\n%s---|---|---|\n", t.Size, t.Size, sep)
		for _, r := range t.Rows {
			fmt.Fprintf(&b, "| %s | %d | %s |", r.Variant, len(r.Runs), formatSteps(r.Steps))
			for _, name := range t.Metrics {
				m, _ := metricByName(name)
				fmt.Fprintf(&b, " %s | %s |", formatStat(r.Final[name], m.Format), formatStat(r.Best[name], m.Format))
			}
			mins := Stat{Mean: r.Seconds.Mean / 60, SD: r.Seconds.SD / 60, N: r.Seconds.N}
			fmt.Fprintf(&b, " %d | %s | %s |\n", r.Params, formatCount(r.MACs), formatStat(mins, "%.1f"))
		}
		if len(t.Teacher) > 0 {
			fmt.Fprintf(&b, "\nThe teacher (%s) at the end of the crd runs:", t.TeacherSpec)
			for _, name := range t.Metrics {
				if st, ok := t.Teacher[name]; ok {
					m, _ := metricByName(name)
					fmt.Fprintf(&b, " %s %s;", m.Label, formatStat(st, m.Format))
				}
			}
			b.WriteString(" the network alone trains is the student's.\n")
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func formatStat(s Stat, f string) string {
	switch {
	case s.N == 0:
		return "–"
	case math.IsNaN(s.SD):
		return fmt.Sprintf(f, s.Mean)
	}
	return fmt.Sprintf(f+" ± "+f, s.Mean, s.SD)
}

func formatSteps(s Stat) string {
	if s.N > 0 && (math.IsNaN(s.SD) || s.SD == 0) {
		return fmt.Sprintf("%.0f", s.Mean)
	}
	return formatStat(s, "%.0f")
}

func formatCount(n int64) string {
	switch {
	case n >= 1e9:
		return fmt.Sprintf("%.2f G", float64(n)/1e9)
	case n >= 1e6:
		return fmt.Sprintf("%.2f M", float64(n)/1e6)
	case n >= 1e3:
		return fmt.Sprintf("%.1f k", float64(n)/1e3)
	}
	return fmt.Sprint(n)
}

// WriteJSON writes the tables as JSON.
func WriteJSON(w io.Writer, tables []Table) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(map[string]any{"tables": tables}); err != nil {
		return fmt.Errorf("report: json: %w", err)
	}
	return nil
}
