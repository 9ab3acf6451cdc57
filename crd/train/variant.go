package train

import (
	"fmt"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/crdgo/crdgo/crd/model"
)

// The ablation variants of a recipe (docs/crd.md §11). Each is a
// change of the recipe's student objective or schedule, made by ApplyVariant;
// the data, the budget, the student and (except in VariantAlone) the teacher
// stay the recipe's.
const (
	// VariantAlone trains the student's network alone on the task's own loss,
	// with no teacher: it takes the teacher's seat (pix2pix: λ_recon·L1 to
	// the ground truth + λ_gan·GAN with its own conditional D; CycleGAN: the
	// GAN, cycle and identity losses with its own G_B at the student's width
	// and the recipe's D_A and D_B) and no distillation step runs.
	VariantAlone = "alone"
	// VariantOutput is plain output distillation: the student's loss is
	// loss.output_l1·mean|S − T| (10 when the recipe has none) and nothing
	// else — no CRD, no perceptual terms, no GAN term.
	VariantOutput = "output"
	// VariantRowsColumns is CRD with the row and column sets only (no patch
	// term); every other term as in the recipe.
	VariantRowsColumns = "crd-rows-columns"
	// VariantCRD is the recipe as written: full CRD (rows, columns, patches;
	// distance and angle) plus the recipe's other student terms.
	VariantCRD = "crd"
	// VariantOffline is full CRD without the online teacher discriminator:
	// the teacher is trained first and then frozen (schedule.distill
	// offline), and the student has no GAN term (loss.student_gan 0).
	VariantOffline = "crd-offline"
)

// DefaultOutputL1 is the output-L1 weight VariantOutput uses when the recipe
// has none: the demo recipes' weight.
const DefaultOutputL1 = 10

// Variants lists the ablation variants, simplest first.
func Variants() []string {
	return []string{VariantAlone, VariantOutput, VariantRowsColumns, VariantCRD, VariantOffline}
}

// ApplyVariant returns r changed into variant v, with r.Variant set to v. It
// refuses a recipe that is already a variant of something else, and one whose
// variant would not differ from the recipe as written.
func ApplyVariant(r Recipe, v string) (Recipe, error) {
	if r.Variant != "" && r.Variant != VariantCRD {
		return Recipe{}, fmt.Errorf("recipe %s: already the variant %q: start from the recipe as written", r.Name, r.Variant)
	}
	if r.Schedule.DistillMode() != DistillOnline || len(r.Loss.CRDOff) > 0 {
		return Recipe{}, fmt.Errorf("recipe %s: schedule.distill %q, loss.crd_off %v: variants start from full online CRD", r.Name, r.Schedule.DistillMode(), r.Loss.CRDOff)
	}
	// Copies of the slices the variants change: r's stay untouched.
	r.Loss.CRDOff = nil
	r.Data.Aliases = append([]string(nil), r.Data.Aliases...)
	if r.Data.Synth != nil {
		s := *r.Data.Synth
		r.Data.Synth = &s
	}
	switch v {
	case VariantAlone:
		r.Teacher = r.Student
		r.Schedule.Distill = DistillNone
	case VariantOutput:
		r.Loss.CRDOff = []string{"rows", "columns", "patches"}
		if r.Loss.OutputL1 == 0 {
			r.Loss.OutputL1 = DefaultOutputL1
		}
		r.Loss.PerceptualFactor = 0
		r.Loss.StudentGAN = 0
	case VariantRowsColumns:
		r.Loss.CRDOff = []string{"patches"}
	case VariantCRD:
	case VariantOffline:
		r.Schedule.Distill = DistillOffline
		r.Loss.StudentGAN = 0
	default:
		return Recipe{}, fmt.Errorf("variant %q: want one of %s", v, strings.Join(Variants(), ", "))
	}
	r.Variant = v
	if err := r.Validate(); err != nil {
		return Recipe{}, fmt.Errorf("recipe %s, variant %s: %w", r.Name, v, err)
	}
	return r, nil
}

// VariantName is r's variant, VariantCRD for a recipe as written.
func (r Recipe) VariantName() string {
	if r.Variant == "" {
		return VariantCRD
	}
	return r.Variant
}

// SubjectGenerator is the network a run trains as its result: the student,
// or in a run with no distillation (VariantAlone) the network in the
// teacher's seat.
func (r Recipe) SubjectGenerator() Generator {
	if r.Schedule.DistillMode() == DistillNone {
		return TeacherGenerator
	}
	return StudentGenerator
}

// VariantFields are the recipe fields (YAML paths) that ApplyVariant may
// change. "teacher" stands for every teacher.* field, which VariantAlone
// replaces with the student's.
func VariantFields() []string {
	return []string{"variant", "teacher", "loss.crd_off", "loss.output_l1", "loss.perceptual_factor", "loss.student_gan", "schedule.distill"}
}

// FieldDiff is one recipe field whose values differ: its YAML path and the
// two values as YAML prints them.
type FieldDiff struct {
	Field string
	A, B  string
}

// DiffRecipes lists the fields of a and b that differ, by YAML path
// ("student.ngf"), in path order.
func DiffRecipes(a, b Recipe) ([]FieldDiff, error) {
	fa, err := flatRecipe(a)
	if err != nil {
		return nil, err
	}
	fb, err := flatRecipe(b)
	if err != nil {
		return nil, err
	}
	keys := map[string]bool{}
	for k := range fa {
		keys[k] = true
	}
	for k := range fb {
		keys[k] = true
	}
	var out []FieldDiff
	for k := range keys {
		va, oka := fa[k]
		vb, okb := fb[k]
		if !oka {
			va = "(none)"
		}
		if !okb {
			vb = "(none)"
		}
		if va != vb {
			out = append(out, FieldDiff{Field: k, A: va, B: vb})
		}
	}
	slices.SortFunc(out, func(x, y FieldDiff) int { return strings.Compare(x.Field, y.Field) })
	return out, nil
}

// flatRecipe maps every leaf field of r to its value, by YAML path.
func flatRecipe(r Recipe) (map[string]string, error) {
	b, err := yaml.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("recipe %s: %w", r.Name, err)
	}
	var m map[string]any
	if err := yaml.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("recipe %s: %w", r.Name, err)
	}
	out := map[string]string{}
	var walk func(prefix string, v any)
	walk = func(prefix string, v any) {
		if mm, ok := v.(map[string]any); ok {
			for k, x := range mm {
				p := k
				if prefix != "" {
					p = prefix + "." + k
				}
				walk(p, x)
			}
			return
		}
		out[prefix] = fmt.Sprint(v)
	}
	walk("", m)
	return out, nil
}

// Profile counts the parameters and MACs of the recipe's teacher or student
// generator at the recipe's crop size (docs/crd.md §5.5).
func (r Recipe) Profile(which Generator) (*model.Profile, error) {
	spec, err := r.Net(which).modelSpec(3, 3)
	if err != nil {
		return nil, fmt.Errorf("recipe %s: %s: %w", r.Name, which, err)
	}
	return model.Count(spec, r.Data.CropSize, r.Data.CropSize)
}
