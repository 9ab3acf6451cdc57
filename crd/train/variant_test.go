package train

import (
	"bufio"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"go.uber.org/zap/zaptest"

	"github.com/crdgo/crdgo/crd"
	"github.com/crdgo/crdgo/crd/tensor"
)

func TestApplyVariant(t *testing.T) {
	for _, name := range []string{"demo", "demo-cyclegan", "horse2zebra"} {
		base, err := LoadRecipe(name)
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range Variants() {
			r, err := ApplyVariant(base, v)
			if err != nil {
				t.Fatalf("%s: ApplyVariant(%s): %v", name, v, err)
			}
			if r.Variant != v || r.VariantName() != v {
				t.Errorf("%s %s: Variant = %q", name, v, r.Variant)
			}
			terms, distill := r.Loss.CRDTerms(), r.Schedule.DistillMode()
			switch v {
			case VariantAlone:
				if r.Teacher != base.Student || distill != DistillNone || r.SubjectGenerator() != TeacherGenerator {
					t.Errorf("%s alone: teacher %+v, distill %s, subject %s; want the student %+v in the teacher's seat, none", name, r.Teacher, distill, r.SubjectGenerator(), base.Student)
				}
			case VariantOutput:
				if terms != 0 || r.Loss.OutputL1 == 0 || r.Loss.StudentGAN != 0 || r.Loss.PerceptualFactor != 0 {
					t.Errorf("%s output: terms %v, output_l1 %v, student_gan %v, perceptual %v; want L1 only", name, terms, r.Loss.OutputL1, r.Loss.StudentGAN, r.Loss.PerceptualFactor)
				}
			case VariantRowsColumns:
				if terms != crd.TermRows|crd.TermColumns || r.Loss.StudentGAN != base.Loss.StudentGAN {
					t.Errorf("%s rows-columns: terms %v", name, terms)
				}
			case VariantCRD:
				if d, _ := DiffRecipes(base, r); len(d) != 1 || d[0].Field != "variant" {
					t.Errorf("%s crd: differs from the recipe in %v; want only the variant label", name, d)
				}
			case VariantOffline:
				if terms != crd.AllTerms || distill != DistillOffline || r.Loss.StudentGAN != 0 {
					t.Errorf("%s offline: terms %v, distill %s, student_gan %v", name, terms, distill, r.Loss.StudentGAN)
				}
			}
			if v != VariantAlone && r.Teacher != base.Teacher || r.Student != base.Student {
				t.Errorf("%s %s: networks changed", name, v)
			}
			for _, d := range mustDiff(t, base, r) {
				if !slices.ContainsFunc(VariantFields(), func(f string) bool { return d.Field == f || strings.HasPrefix(d.Field, f+".") }) {
					t.Errorf("%s %s: field %s changed (%s → %s), not one of VariantFields", name, v, d.Field, d.A, d.B)
				}
			}
		}
		if _, err := ApplyVariant(base, "crd-patches"); err == nil || !strings.Contains(err.Error(), "crd-patches") {
			t.Errorf("unknown variant: err = %v", err)
		}
		off, _ := ApplyVariant(base, VariantOffline)
		if _, err := ApplyVariant(off, VariantOutput); err == nil {
			t.Errorf("a variant of a variant: no error")
		}
	}
}

func mustDiff(t *testing.T, a, b Recipe) []FieldDiff {
	t.Helper()
	d, err := DiffRecipes(a, b)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestRecipeRejectsBadVariantFields(t *testing.T) {
	r, err := LoadRecipe("demo")
	if err != nil {
		t.Fatal(err)
	}
	r.Loss.CRDOff = []string{"rows", "diagonals", "rows"}
	r.Schedule.Distill = "later"
	r.Variant = "mine"
	err = r.Validate()
	for _, want := range []string{`loss.crd_off: "diagonals"`, `loss.crd_off: "rows" twice`, `schedule.distill: "later"`, `variant: "mine"`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() = %v; want it to contain %q", err, want)
		}
	}
}

func TestDiffRecipes(t *testing.T) {
	a, err := LoadRecipe("demo-ngf4")
	if err != nil {
		t.Fatal(err)
	}
	b := a
	b.Student.NGF = 8
	b.Loss.CRDOff = []string{"patches"}
	d := mustDiff(t, a, b)
	if len(d) != 2 || d[0].Field != "loss.crd_off" || d[1].Field != "student.ngf" || d[1].A != "4" || d[1].B != "8" {
		t.Fatalf("DiffRecipes = %+v; want loss.crd_off and student.ngf 4 → 8", d)
	}
	if d := mustDiff(t, a, a); len(d) != 0 {
		t.Fatalf("DiffRecipes(a, a) = %+v; want none", d)
	}
}

// trainVariant trains the tiny recipe's variant v for maxSteps and returns
// the trainer and its initial networks' values (a fresh trainer).
func trainVariant(t *testing.T, base Recipe, v string, root string, maxSteps int) (tr, fresh *Trainer) {
	t.Helper()
	r, err := ApplyVariant(base, v)
	if err != nil {
		t.Fatal(err)
	}
	tr, _ = runTiny(t, r, root, t.TempDir(), maxSteps)
	fresh, err = New(Config{Recipe: r, DataRoot: root, OutDir: t.TempDir()}, tensor.NewCPU(tensor.DefaultCPUKind(), 2), Extras{}, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	return tr, fresh
}

func equalParams(a, b []float32) bool { return slices.Equal(a, b) }

// TestVariantsChangeTheStep checks what each variant trains, on the tiny
// pix2pix recipe: alone never trains the student (nor runs a teacher for
// it); the teacher's training is the same in every online variant and in
// none (the student never feeds back into it); output computes no CRD term;
// rows-columns has no patch relation; offline trains the teacher first, then
// only the student.
func TestVariantsChangeTheStep(t *testing.T) {
	base := tinyRecipe(t, "demo")
	root := t.TempDir()
	const steps = 3
	params := func(tr *Trainer, which string) []float32 {
		n := tr.Nets
		switch which {
		case "GT":
			return n.GT.Params().Values().Data
		case "D":
			return n.D.Params().Values().Data
		}
		return n.S.Params().Values().Data
	}
	crdRun, crdFresh := trainVariant(t, base, VariantCRD, root, steps)
	if equalParams(params(crdRun, "S"), params(crdFresh, "S")) {
		t.Fatal("crd: the student did not train")
	}
	if l := crdRun.crdLoss.Last; len(l) == 0 || !(l[0].Patch.RKD > 0) || !(l[0].Row.RKD > 0) {
		t.Fatalf("crd: the last CRD relations %+v; want rows and patches", l)
	}

	alone, aloneFresh := trainVariant(t, base, VariantAlone, root, steps)
	if !equalParams(params(alone, "S"), params(aloneFresh, "S")) {
		t.Error("alone: the student network changed: a distillation step ran")
	}
	if equalParams(params(alone, "GT"), params(aloneFresh, "GT")) {
		t.Error("alone: the network in the teacher's seat did not train")
	}
	if got, want := alone.Nets.GT.Params().NumParams(), crdRun.Nets.S.Params().NumParams(); got != want {
		t.Errorf("alone: the trained network has %d parameters; the student has %d", got, want)
	}
	if alone.crdLoss.Last != nil {
		t.Error("alone: a CRD term was computed")
	}
	if st := alone.State(); st.Step != steps || st.StudentSteps != 0 {
		t.Errorf("alone: state %+v", st)
	}

	none := base
	none.Schedule.Distill = DistillNone // the recipe's teacher, no student
	noneRun, _ := runTiny(t, none, root, t.TempDir(), steps)
	for _, which := range []string{"GT", "D"} {
		if !equalParams(params(noneRun, which), params(crdRun, which)) {
			t.Errorf("%s after %d steps differs between distill none and online CRD: the student fed back into the teacher", which, steps)
		}
	}

	out, _ := trainVariant(t, base, VariantOutput, root, steps)
	if out.crdLoss.Last != nil {
		t.Error("output: a CRD term was computed")
	}
	if equalParams(params(out, "S"), params(crdRun, "S")) {
		t.Error("output: the same student as crd")
	}

	rc, _ := trainVariant(t, base, VariantRowsColumns, root, steps)
	for b, it := range rc.crdLoss.Last {
		if it.Patch != (crd.Relation{}) || !(it.Row.RKD > 0) || !(it.Column.RKD > 0) {
			t.Errorf("rows-columns: image %d relations %+v; want rows and columns, no patch", b, it)
		}
	}
	if len(rc.crdLoss.Last) == 0 {
		t.Error("rows-columns: no CRD term computed")
	}

	off, offFresh := trainVariant(t, base, VariantOffline, root, steps)
	st := off.State()
	if st.TeacherSteps != steps || st.StudentSteps != steps || st.Step != 2*steps || st.Phase != PhaseStudent {
		t.Fatalf("offline with max steps %d: state %+v; want %d teacher steps, then %d student steps", steps, st, steps, steps)
	}
	for _, which := range []string{"GT", "D"} {
		if !equalParams(params(off, which), params(noneRun, which)) {
			t.Errorf("offline: %s differs from a teacher trained alone for %d steps: the student phase moved it", which, steps)
		}
	}
	if equalParams(params(off, "S"), params(offFresh, "S")) {
		t.Error("offline: the student did not train")
	}
}

// TestOfflineScheduleUpdatesAsOften checks that an offline schedule gives
// each network as many updates as the online one, in both modes.
func TestOfflineScheduleUpdatesAsOften(t *testing.T) {
	for _, name := range []string{"demo", "demo-cyclegan"} {
		t.Run(name, func(t *testing.T) {
			base := tinyRecipe(t, name)
			base.Data.Synth.N = 8
			if base.Mode == CycleGAN {
				base.Schedule.Epochs, base.Schedule.DecayEpochs, base.Schedule.SaveEpochFreq, base.Schedule.NDis = 2, 1, 2, 1
			} else {
				base.Schedule.Epochs, base.Schedule.DecayEpochs = 1, 1
			}
			root := t.TempDir()
			online, _ := runTiny(t, base, root, t.TempDir(), 0)
			offR, err := ApplyVariant(base, VariantOffline)
			if err != nil {
				t.Fatal(err)
			}
			out := t.TempDir()
			offline, _ := runTiny(t, offR, root, out, 0)
			on, of := online.State(), offline.State()
			if on.TeacherSteps != of.TeacherSteps || on.StudentSteps+boolInt(base.Mode == Pix2Pix)*on.TeacherSteps != of.StudentSteps || of.StudentSteps == 0 {
				t.Errorf("online %+v, offline %+v: want the same teacher and student updates", on, of)
			}
			if of.Step != of.TeacherSteps+of.StudentSteps {
				t.Errorf("offline: step %d, teacher %d + student %d", of.Step, of.TeacherSteps, of.StudentSteps)
			}
			// Every student step of the offline run comes after every teacher step.
			lines := readMetricsLines(t, filepath.Join(out, "metrics.jsonl"))
			seenStudent := false
			for _, m := range lines {
				if m.Losses == nil {
					continue
				}
				_, teacherLoss := m.Losses["G_T"]
				if !teacherLoss {
					_, teacherLoss = m.Losses["G"]
				}
				_, studentLoss := m.Losses["S"]
				if studentLoss {
					seenStudent = true
				}
				if teacherLoss && (studentLoss || seenStudent) {
					t.Fatalf("offline: step %d trains the teacher after (or with) the student: %v", m.Step, m.Losses)
				}
			}
			if !seenStudent {
				t.Fatal("offline: no student step logged")
			}
		})
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func readMetricsLines(t *testing.T, p string) []MetricsLine {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []MetricsLine
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<24)
	for sc.Scan() {
		var m MetricsLine
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		out = append(out, m)
	}
	return out
}

// TestEvalEvery checks Config.EvalEvery's extra evaluations: one every k
// steps, the student's in an online run, and the last step's once.
func TestEvalEvery(t *testing.T) {
	r := tinyRecipe(t, "demo")
	root, out := t.TempDir(), t.TempDir()
	log := zaptest.NewLogger(t)
	ctx := context.Background()
	if _, err := PrepareData(ctx, root, r, nil, log); err != nil {
		t.Fatal(err)
	}
	tr, err := New(Config{Recipe: r, DataRoot: root, OutDir: out, MaxSteps: 5, EvalEvery: 2, Workers: 1},
		tensor.NewCPU(tensor.DefaultCPUKind(), 2), Extras{}, log)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tr.Run(ctx, RunOptions{Output: NewRunFolder(out, nil, log)}); err != nil {
		t.Fatal(err)
	}
	var steps []int
	for _, m := range readMetricsLines(t, filepath.Join(out, "metrics.jsonl")) {
		if m.Eval != nil {
			steps = append(steps, m.Step)
			if !(m.Eval.Student.PSNR > 0) {
				t.Errorf("evaluation at step %d: no student PSNR", m.Step)
			}
		}
	}
	if !slices.Equal(steps, []int{2, 4, 5}) {
		t.Fatalf("evaluations at steps %v; want [2 4 5]", steps)
	}
}

func TestOnlineSplit(t *testing.T) {
	// demo-cyclegan: 4 teacher epochs, a round of 2 student epochs after
	// epochs 2 and 4; 400 steps an epoch.
	s := Schedule{Epochs: 2, DecayEpochs: 2, SaveEpochFreq: 2, NDis: 1}
	for _, c := range []struct{ max, teacher, student int }{
		{1600, 800, 800}, {1000, 800, 200}, {500, 500, 0}, {2000, 1200, 800}, {3200, 1600, 1600}, {9000, 1600, 1600},
	} {
		if tt, st := s.onlineSplit(CycleGAN, 400, c.max); tt != c.teacher || st != c.student {
			t.Errorf("onlineSplit(cyclegan, 400 an epoch, %d) = %d, %d; want %d, %d", c.max, tt, st, c.teacher, c.student)
		}
	}
	if tt, st := s.onlineSplit(Pix2Pix, 500, 400); tt != 400 || st != 400 {
		t.Errorf("onlineSplit(pix2pix, 400) = %d, %d; want 400, 400", tt, st)
	}
}
