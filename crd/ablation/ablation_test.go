package ablation

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/crdgo/crdgo/crd/tensor"
	"github.com/crdgo/crdgo/crd/train"
	"github.com/crdgo/crdgo/node"
)

// tinyRecipe is the demo recipe small enough for tests: 32×32 synthetic data,
// narrow networks.
func tinyRecipe(t *testing.T, name string) train.Recipe {
	t.Helper()
	r, err := train.LoadRecipe(name)
	if err != nil {
		t.Fatal(err)
	}
	r.Data.CropSize, r.Data.LoadSize = 32, 36
	r.Data.Synth.Size, r.Data.Synth.N, r.Data.Synth.NTest = 32, 24, 6
	r.Teacher.NGF, r.Teacher.Blocks = 4, 2
	r.Student.NGF, r.Student.Blocks = 2, 2
	r.Discriminator.NDF = 8
	r.Loss.Patch = 8
	if err := r.Validate(); err != nil {
		t.Fatal(err)
	}
	return r
}

func tinyConfig(t *testing.T, root, out string) Config {
	return Config{Recipe: tinyRecipe(t, "demo"), Variants: []string{train.VariantAlone, train.VariantCRD}, Seeds: 2,
		Out: out, DataRoot: root, MaxSteps: 4, EvalEvery: 2, Jobs: 2, Threads: 2}
}

func TestPlan(t *testing.T) {
	c := tinyConfig(t, "data", "abl")
	runs, err := Plan(c)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range runs {
		got = append(got, r.Name())
		if r.Recipe.Seed != SeedOf(c.Recipe.Seed, r.Seed) || r.Recipe.Variant != r.Variant {
			t.Errorf("%s: recipe seed %d, variant %q", r.Name(), r.Recipe.Seed, r.Recipe.Variant)
		}
		if want := filepath.Join("abl", r.Variant, fmt.Sprintf("seed-%d", r.Seed)); r.Dir != want {
			t.Errorf("%s: dir %s; want %s", r.Name(), r.Dir, want)
		}
	}
	if want := []string{"alone/seed-1", "crd/seed-1", "alone/seed-2", "crd/seed-2"}; !slices.Equal(got, want) {
		t.Fatalf("Plan = %v; want %v", got, want)
	}
	c.Variants = []string{"crd", "nope", "crd"}
	c.Seeds = 0
	_, err = Plan(c)
	for _, want := range []string{`variants: "nope"`, `variants: "crd" twice`, "seeds: 0"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Plan(bad) = %v; want %q in it", err, want)
		}
	}
}

// TestExecuteResumesAndReports runs a tiny ablation, reruns it (every run
// skipped), interrupts one run's record and reruns (it alone trains again,
// from its checkpoint), then reports it.
func TestExecuteResumesAndReports(t *testing.T) {
	root, out := t.TempDir(), t.TempDir()
	c := tinyConfig(t, root, out)
	var progress bytes.Buffer
	c.Progress = &progress
	log := zaptest.NewLogger(t)
	ctx := context.Background()
	outcomes, err := Execute(ctx, c, log)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range outcomes {
		if o.Skipped || o.Summary.Steps != c.MaxSteps {
			t.Errorf("%s: skipped %v, steps %d; want %d trained", o.Run.Name(), o.Skipped, o.Summary.Steps, c.MaxSteps)
		}
		m, ok, err := readMarker(o.Run.Dir)
		if err != nil || !ok || !m.Finished || m.Steps != c.MaxSteps {
			t.Errorf("%s: marker %+v, %v, %v", o.Run.Name(), m, ok, err)
		}
	}
	if n := strings.Count(progress.String(), "\n"); n != 4 {
		t.Errorf("progress: %d lines; want one per run:\n%s", n, progress.String())
	}

	progress.Reset()
	outcomes, err = Execute(ctx, c, log)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range outcomes {
		if !o.Skipped {
			t.Errorf("second Execute: %s trained again", o.Run.Name())
		}
	}

	// An interrupted run: not finished, its last checkpoint gone.
	dir := filepath.Join(out, "crd", "seed-2")
	m, _, _ := readMarker(dir)
	m.Finished = false
	if err := writeMarker(dir, m); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(dir, "checkpoints", "step-00000004")); err != nil {
		t.Fatal(err)
	}
	outcomes, err = Execute(ctx, c, log)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range outcomes {
		if o.Skipped == (o.Run.Dir == dir) {
			t.Errorf("third Execute: %s skipped = %v", o.Run.Name(), o.Skipped)
		}
	}

	// Other settings in the same folder are refused, naming the setting.
	c2 := c
	c2.MaxSteps = 6
	if _, err := Execute(ctx, c2, log); err == nil || !strings.Contains(err.Error(), "max steps 4, now 6") {
		t.Errorf("Execute with other max steps: %v", err)
	}

	// An unfinished run below the folder is left out, and said to be.
	m, _, _ = readMarker(dir)
	m.Finished = false
	if err := writeMarker(dir, m); err != nil {
		t.Fatal(err)
	}
	if runs, unfinished, err := Collect([]string{out}); err != nil || len(runs) != 3 || !slices.Equal(unfinished, []string{dir}) {
		t.Fatalf("Collect with one run unfinished: %d runs, unfinished %v, %v", len(runs), unfinished, err)
	}
	m.Finished = true
	if err := writeMarker(dir, m); err != nil {
		t.Fatal(err)
	}
	runs, _, err := Collect([]string{out})
	if err != nil {
		t.Fatal(err)
	}
	if len(runs) != 4 {
		t.Fatalf("Collect found %d runs; want 4", len(runs))
	}
	tables, err := Build(runs)
	if err != nil {
		t.Fatal(err)
	}
	if len(tables) != 1 || len(tables[0].Rows) != 2 {
		t.Fatalf("tables = %+v; want one with two rows", tables)
	}
	tb := tables[0]
	if !slices.Equal(tb.Metrics, []string{"psnr", "ssim", "l1", "psnr_teacher", "ssim_teacher"}) {
		t.Errorf("metrics %v; want the paired ones and the student's against its teacher", tb.Metrics)
	}
	for _, row := range tb.Rows {
		_, has := row.Final["psnr_teacher"]
		if want := row.Variant != train.VariantAlone; has != want {
			t.Errorf("%s: PSNR to teacher present %v; want %v (only a run with a teacher has it)", row.Variant, has, want)
		}
	}
	for _, row := range tb.Rows {
		// The row's numbers are the runs' own: recompute them from metrics.jsonl.
		var finals, bests []float64
		for _, d := range row.Runs {
			evals := evalPSNRs(t, d, row.Variant == train.VariantAlone)
			if len(evals) != 2 { // step 2 (EvalEvery) and the final one, step 4
				t.Fatalf("%s: PSNRs %v; want evaluations at steps 2 and 4", d, evals)
			}
			finals = append(finals, evals[len(evals)-1])
			bests = append(bests, slices.Max(evals))
		}
		f, b := row.Final["psnr"], row.Best["psnr"]
		if wf, wb := stat(finals), stat(bests); math.Abs(f.Mean-wf.Mean) > 1e-12 || math.Abs(f.SD-wf.SD) > 1e-12 || math.Abs(b.Mean-wb.Mean) > 1e-12 {
			t.Errorf("%s: PSNR final %+v best %+v; recomputed %+v, %+v", row.Variant, f, b, wf, wb)
		}
		if f.N != 2 || !(b.Mean >= f.Mean) {
			t.Errorf("%s: PSNR final %+v, best %+v", row.Variant, f, b)
		}
		if row.Params <= 0 || row.MACs <= 0 {
			t.Errorf("%s: params %d, MACs %d", row.Variant, row.Params, row.MACs)
		}
	}
	// alone's network is the student's: same size.
	if tb.Rows[0].Params != tb.Rows[1].Params || tb.Rows[0].Variant != train.VariantAlone {
		t.Errorf("rows %s %d params, %s %d params; want alone first, both the student's size", tb.Rows[0].Variant, tb.Rows[0].Params, tb.Rows[1].Variant, tb.Rows[1].Params)
	}
	var md bytes.Buffer
	if err := Markdown(&md, tables); err != nil {
		t.Fatal(err)
	}
	if tt := tb.Teacher["psnr"]; tt.N != 2 || !(tt.Mean > 0) {
		t.Errorf("teacher reference %+v; want the 2 crd runs' final teacher PSNR", tt)
	}
	for _, want := range []string{"### demo", "| alone | 2 | 4 |", "| crd | 2 | 4 |", "PSNR dB final", "PSNR dB best", " ± ", "The teacher (mobile_resnet_9blocks ngf 4)"} {
		if !strings.Contains(md.String(), want) {
			t.Errorf("markdown lacks %q:\n%s", want, md.String())
		}
	}
	var js bytes.Buffer
	if err := WriteJSON(&js, tables); err != nil {
		t.Fatal(err)
	}
	var back struct {
		Tables []struct {
			Rows []struct {
				Variant string
				Final   map[string]struct{ Mean, SD float64 }
			}
		}
	}
	if err := json.Unmarshal(js.Bytes(), &back); err != nil || len(back.Tables) != 1 || back.Tables[0].Rows[1].Final["psnr"].Mean != tb.Rows[1].Final["psnr"].Mean {
		t.Errorf("JSON: %v, %+v", err, back)
	}
	png := filepath.Join(t.TempDir(), "psnr.png")
	if err := Plot(png, tables, ""); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(png); err != nil || st.Size() < 1000 {
		t.Errorf("plot: %v, %v", st, err)
	}
	if err := Plot(png, tables, "fid"); err == nil || !strings.Contains(err.Error(), "no fid") {
		t.Errorf("plot of a metric no run has: %v", err)
	}
}

// evalPSNRs are the subject's PSNRs of a run's evaluations, by step, the
// last line of a step winning.
func evalPSNRs(t *testing.T, dir string, teacher bool) []float64 {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "metrics.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	byStep := map[int]float64{}
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var m train.MetricsLine
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatal(err)
		}
		if m.Eval != nil {
			v := m.Eval.Student.PSNR
			if teacher {
				v = m.Eval.Teacher.PSNR
			}
			byStep[m.Step] = v
		}
	}
	var steps []int
	for s := range byStep {
		steps = append(steps, s)
	}
	slices.Sort(steps)
	var out []float64
	for _, s := range steps {
		out = append(out, byStep[s])
	}
	return out
}

// trainOne trains the recipe for steps into a fresh run folder.
func trainOne(t *testing.T, r train.Recipe, root string, steps int) string {
	t.Helper()
	log := zaptest.NewLogger(t)
	ctx := context.Background()
	if _, err := train.PrepareData(ctx, root, r, nil, log); err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	tr, err := train.New(train.Config{Recipe: r, DataRoot: root, OutDir: out, MaxSteps: steps, Workers: 1},
		tensor.NewCPU(tensor.DefaultCPUKind(), 1), train.Extras{}, log)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tr.Run(ctx, train.RunOptions{Output: train.NewRunFolder(out, nil, log)}); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestBuildRefusesMixedRuns(t *testing.T) {
	root := t.TempDir()
	r := tinyRecipe(t, "demo")
	a := trainOne(t, r, root, 2)
	wider := r
	wider.Student.NGF = 3
	b := trainOne(t, wider, root, 2)
	runs, _, err := Collect([]string{a, b})
	if err != nil {
		t.Fatal(err)
	}
	_, err = Build(runs)
	if err == nil || !strings.Contains(err.Error(), "field student.ngf differs (2 vs 3)") {
		t.Fatalf("Build(two students) = %v; want the field named", err)
	}

	// Two variants may differ in their own fields, not in others.
	alone, err := train.ApplyVariant(r, train.VariantAlone)
	if err != nil {
		t.Fatal(err)
	}
	c := trainOne(t, alone, root, 2)
	runs, _, err = Collect([]string{a, c})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Build(runs); err != nil {
		t.Fatalf("Build(crd, alone) = %v", err)
	}
	lr := alone
	lr.Schedule.LR = 1e-3
	d := trainOne(t, lr, root, 2)
	runs, _, err = Collect([]string{a, d})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Build(runs); err == nil || !strings.Contains(err.Error(), "schedule.lr") {
		t.Fatalf("Build(crd, alone at another lr) = %v; want schedule.lr named", err)
	}
}

func TestReadRunRefusesCorruptLines(t *testing.T) {
	root := t.TempDir()
	dir := trainOne(t, tinyRecipe(t, "demo"), root, 2)
	p := filepath.Join(dir, "metrics.jsonl")
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	n := strings.Count(string(b), "\n")
	for _, bad := range []string{`{"step": 3, "epoch": 0, "seconds": 1, "los`, `{"step": -1, "seconds": 0}`, `not json`} {
		if err := os.WriteFile(p, append(append([]byte{}, b...), bad+"\n"...), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := ReadRun(dir)
		if want := fmt.Sprintf("%s:%d:", p, n+1); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("line %q: ReadRun = %v; want the file and line %d named", bad, err, n+1)
		}
	}
	empty := t.TempDir()
	if _, _, err := Collect([]string{empty}); err == nil || !strings.Contains(err.Error(), "no run folder") {
		t.Errorf("Collect(empty folder) = %v", err)
	}
}

func TestReadMetricsWallTime(t *testing.T) {
	// Two processes: the second resumed at step 20 (its clock restarts).
	in := `{"step":10,"epoch":0,"seconds":5}
{"step":20,"epoch":0,"seconds":9,"eval":{"images":4,"teacher":{"psnr":20},"student":{"psnr":15,"ssim":0.5}}}

{"step":30,"epoch":0,"seconds":3}
{"step":40,"epoch":0,"seconds":7,"eval":{"images":4,"teacher":{"psnr":22},"student":{"psnr":14}}}
{"step":40,"epoch":0,"seconds":8,"eval":{"images":4,"teacher":{"psnr":22},"student":{"psnr":16}}}
`
	rd := RunData{Subject: train.StudentGenerator}
	if err := rd.readMetrics(strings.NewReader(in), "m.jsonl"); err != nil {
		t.Fatal(err)
	}
	if rd.Seconds != 17 || rd.Steps != 40 {
		t.Errorf("seconds %v, steps %d; want 9+8 = 17, 40", rd.Seconds, rd.Steps)
	}
	if len(rd.Points) != 2 || rd.Points[1].Values["psnr"] != 16 || rd.Points[0].Values["ssim"] != 0.5 {
		t.Errorf("points %+v", rd.Points)
	}
	f, b, ok := finalBest(rd.Points, Metric{Name: "psnr", Higher: true})
	if !ok || f != 16 || b != 16 {
		t.Errorf("final %v best %v", f, b)
	}
	rd = RunData{Subject: train.TeacherGenerator}
	if err := rd.readMetrics(strings.NewReader(in), "m.jsonl"); err != nil {
		t.Fatal(err)
	}
	if f, b, _ := finalBest(rd.Points, Metric{Name: "psnr", Higher: true}); f != 22 || b != 22 {
		t.Errorf("teacher: final %v best %v; want 22, 22", f, b)
	}
}

func FuzzReadMetrics(f *testing.F) {
	f.Add([]byte(`{"step":20,"epoch":0,"seconds":9,"eval":{"images":4,"teacher":{"psnr":20},"student":{"psnr":15}}}` + "\n"))
	f.Add([]byte(`{"step":1,"seconds":-1}`))
	f.Add([]byte("\n\n{"))
	f.Fuzz(func(t *testing.T, b []byte) {
		rd := RunData{Subject: train.StudentGenerator}
		if err := rd.readMetrics(bytes.NewReader(b), "fuzz"); err != nil {
			return
		}
		if rd.Seconds < 0 || math.IsNaN(rd.Seconds) {
			t.Fatalf("seconds %v from valid lines", rd.Seconds)
		}
	})
}

// TestReportReadsDataParallelRuns reports a run trained by 2 workers
// (crdgo train --nodes 2) next to one trained in one process.
func TestReportReadsDataParallelRuns(t *testing.T) {
	root := t.TempDir()
	r := tinyRecipe(t, "demo")
	one := trainOne(t, r, root, 2)
	two := t.TempDir()
	log := zaptest.NewLogger(t)
	cfg := node.LocalConfig{Train: train.Config{Recipe: r, DataRoot: root, OutDir: two, MaxSteps: 2, Workers: 1},
		Nodes: 2, Transport: "mem", Threads: 2, Output: train.NewRunFolder(two, nil, log)}
	if _, err := node.RunLocal(context.Background(), cfg, log); err != nil {
		t.Fatal(err)
	}
	runs, _, err := Collect([]string{one, two})
	if err != nil {
		t.Fatal(err)
	}
	tables, err := Build(runs)
	if err != nil {
		t.Fatal(err)
	}
	if len(tables) != 1 || len(tables[0].Rows) != 1 || len(tables[0].Rows[0].Runs) != 2 || tables[0].Rows[0].Final["psnr"].N != 2 {
		t.Fatalf("tables %+v; want one row of two runs", tables)
	}
}

func TestReadMetricsOfflineTeacherPhase(t *testing.T) {
	in := `{"step":300,"epoch":0,"phase":"teacher","seconds":5,"eval":{"images":4,"teacher":{"psnr":20}}}
{"step":400,"epoch":0,"phase":"student","seconds":9,"eval":{"images":4,"student":{"psnr":15}}}
`
	off, err := train.ApplyVariant(tinyRecipe(t, "demo"), train.VariantOffline)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		r    train.Recipe
		want int
	}{{off, 300}, {tinyRecipe(t, "demo"), 0}} {
		rd := RunData{Recipe: c.r, Subject: train.StudentGenerator}
		if err := rd.readMetrics(strings.NewReader(in), "m.jsonl"); err != nil {
			t.Fatal(err)
		}
		if rd.TeacherPhase != c.want || len(rd.Points) != 1 || len(rd.TeacherPoints) != 1 {
			t.Errorf("distill %s: teacher phase %d, points %+v, teacher points %+v; want %d and one each", c.r.Schedule.DistillMode(), rd.TeacherPhase, rd.Points, rd.TeacherPoints, c.want)
		}
	}
}

// TestProgressLine: the line a finished run prints names whose score it is —
// the student's, or for "alone" the student's network trained in the
// teacher's slot — never "teacher" for a run that has no teacher.
func TestProgressLine(t *testing.T) {
	r := tinyRecipe(t, "demo-ngf4")
	alone, err := train.ApplyVariant(r, train.VariantAlone)
	if err != nil {
		t.Fatal(err)
	}
	eval := &train.EvalResult{Teacher: train.Scores{PSNR: 18.5, SSIM: 0.74}, Student: train.Scores{PSNR: 17.25, SSIM: 0.70}}
	for _, tc := range []struct {
		o    Outcome
		want string
	}{
		{Outcome{Run: Run{Variant: "crd", Seed: 2, Recipe: r}, Summary: train.Summary{Steps: 300, Eval: eval}, Took: 90 * time.Second},
			"ablate: [3/15] crd/seed-2: 300 steps in 1m30s; student PSNR 17.25 dB, SSIM 0.700"},
		{Outcome{Run: Run{Variant: "alone", Seed: 1, Recipe: alone}, Summary: train.Summary{Steps: 300, Eval: eval}, Took: time.Minute},
			"ablate: [3/15] alone/seed-1: 300 steps in 1m0s; student network (alone) PSNR 18.50 dB, SSIM 0.740"},
		{Outcome{Run: Run{Variant: "crd", Seed: 1, Recipe: r}, Skipped: true},
			"ablate: [3/15] crd/seed-1: finished before, skipped"},
		{Outcome{Run: Run{Variant: "crd", Seed: 1, Recipe: r}, Err: fmt.Errorf("boom"), Took: time.Second},
			"ablate: [3/15] crd/seed-1: failed after 1s: boom"},
	} {
		if got := progressLine(tc.o, 3, 15); got != tc.want {
			t.Errorf("progressLine:\n got %q\nwant %q", got, tc.want)
		}
	}
}
