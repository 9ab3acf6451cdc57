package train

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/crdgo/crdgo/crd"
)

// Mode is the distillation setting: the teacher's objective and step order.
type Mode string

const (
	Pix2Pix  Mode = "pix2pix"  // paired data, conditional D, hinge + L1 (docs/crd.md §2, §4.1)
	CycleGAN Mode = "cyclegan" // unpaired data, two G and two D, rounds (docs/crd.md §2, §4.2)
)

// Recipe is a training recipe: what the paper's scripts fix per dataset
// (docs/crd.md §6), as YAML. Run-time settings (paths, logging) are in Config.
type Recipe struct {
	Name        string `yaml:"name"`
	Description string `yaml:"description"`
	// Extrapolation marks recipes that are not part of the CRD release
	// (cityscapes): crdgo's extension, labelled as such wherever shown.
	Extrapolation bool   `yaml:"extrapolation"`
	Mode          Mode   `yaml:"mode"`
	Compat        string `yaml:"compat"` // intended (default) or official (docs/crd.md §0, §9)
	Seed          uint64 `yaml:"seed"`
	// Variant names the ablation variant this recipe was derived with
	// (ApplyVariant, docs/crd.md §11); empty: the recipe as written,
	// which is the variant "crd".
	Variant string `yaml:"variant"`

	Data          DataRecipe `yaml:"data"`
	Teacher       NetSpec    `yaml:"teacher"`
	Student       NetSpec    `yaml:"student"`
	Discriminator NetSpec    `yaml:"discriminator"`
	Loss          LossRecipe `yaml:"loss"`
	Schedule      Schedule   `yaml:"schedule"`
	Eval          EvalRecipe `yaml:"eval"`
}

// DataRecipe names the dataset and its preprocessing (docs/crd.md §4.3).
type DataRecipe struct {
	Dataset   string   `yaml:"dataset"`   // folder under the data root
	Aliases   []string `yaml:"aliases"`   // other folder names accepted (summer2winter_yosemite, §9 D16)
	Direction string   `yaml:"direction"` // AtoB or BtoA
	// Aligned splits (pix2pix): Train and Val hold A|B images.
	Train string `yaml:"train"`
	Val   string `yaml:"val"`
	// Unaligned splits (CycleGAN).
	TrainA string `yaml:"train_a"`
	TrainB string `yaml:"train_b"`
	ValA   string `yaml:"val_a"`
	ValB   string `yaml:"val_b"`

	LoadSize int  `yaml:"load_size"`
	CropSize int  `yaml:"crop_size"`
	Flip     bool `yaml:"flip"`
	// Synth, when set, is a synthetic dataset `crdgo train` generates when the
	// folder is missing (the demo recipes).
	Synth *SynthRecipe `yaml:"synth"`
}

// SynthRecipe is a synthetic dataset of `crdgo data synth`.
type SynthRecipe struct {
	Kind  string `yaml:"kind"` // edges2shapes or shapes2night
	Size  int    `yaml:"size"`
	N     int    `yaml:"n"`
	NTest int    `yaml:"n_test"`
	Seed  uint64 `yaml:"seed"`
}

// NetSpec is a network of the recipe (docs/crd.md §5).
type NetSpec struct {
	Arch   string `yaml:"arch"`   // mobile_resnet_9blocks, resnet_9blocks, unet_256 (generators); patchgan (D)
	NGF    int    `yaml:"ngf"`    // generator width
	NDF    int    `yaml:"ndf"`    // discriminator width
	Blocks int    `yaml:"blocks"` // residual blocks (9)
	Downs  int    `yaml:"downs"`  // U-Net down-samplings (8 at 256²)
	Layers int    `yaml:"layers"` // PatchGAN n_layers (3)
	Norm   string `yaml:"norm"`   // instance or batch
}

// LossRecipe holds the loss weights (docs/crd.md §2, §3).
type LossRecipe struct {
	GANMode GANMode `yaml:"gan_mode"` // lsgan (CycleGAN) or hinge (pix2pix)
	// pix2pix teacher: λ_recon·L1 + λ_gan·GAN.
	Recon float64 `yaml:"lambda_recon"`
	GAN   float64 `yaml:"lambda_gan"`
	// CycleGAN teacher: cycle λ_A, λ_B, identity λ_idt (× λ), image pool size.
	CycleA   float64 `yaml:"lambda_a"`
	CycleB   float64 `yaml:"lambda_b"`
	Identity float64 `yaml:"lambda_identity"`
	PoolSize int     `yaml:"pool_size"`
	// Student: CRD patch size, VGG style and feature weights, the factor both
	// are multiplied by (2 in pix2pix, docs/crd.md §3), and the weight of the GAN
	// term through the frozen teacher D (1 in CycleGAN; pix2pix: 0, an
	// experiment flag).
	Patch            int     `yaml:"crd_patch"`
	Style            float64 `yaml:"style"`
	Feature          float64 `yaml:"feature"`
	PerceptualFactor float64 `yaml:"perceptual_factor"`
	StudentGAN       float64 `yaml:"student_gan"`
	// OutputL1 weighs mean|S − T|, an output-distillation term that is not
	// part of CRD (0 in every paper recipe). CRD's relations are invariant to a
	// global affine change of intensity; without VGG weights nothing else
	// anchors the student's colours, so the demo recipes use it in place of the
	// perceptual terms.
	OutputL1 float64 `yaml:"output_l1"`
	// CRDOff lists the slice sets left out of the CRD term: "rows",
	// "columns", "patches" (docs/crd.md §11). Empty: the full term;
	// all three: no CRD term at all (it is not computed).
	CRDOff []string `yaml:"crd_off"`
}

// CRDTerms are the slice sets the CRD term keeps (crd.AllTerms unless CRDOff
// drops some). Names were checked by Validate; an unknown one drops nothing.
func (l LossRecipe) CRDTerms() crd.Terms {
	t := crd.AllTerms
	for _, n := range l.CRDOff {
		switch n {
		case "rows":
			t &^= crd.TermRows
		case "columns":
			t &^= crd.TermColumns
		case "patches":
			t &^= crd.TermPatches
		}
	}
	return t
}

// Distill is when the student learns from the teacher (docs/crd.md §11).
type Distill string

const (
	// DistillOnline is CRD's schedule: the teacher, its discriminator and
	// the student train together (pix2pix: every step, §4.1; CycleGAN:
	// student rounds between teacher epochs, §4.2). The default.
	DistillOnline Distill = "online"
	// DistillOffline trains the teacher first, for the whole schedule, then
	// the student against the frozen final teacher, for as many student
	// epochs (and at the same learning rates) as the online schedule gives it.
	DistillOffline Distill = "offline"
	// DistillNone trains the teacher's seat only: no student step. The
	// ablation "alone" puts the student's architecture in that seat, so it
	// trains on the task's own loss with its own discriminator.
	DistillNone Distill = "none"
)

// Schedule is the optimisation schedule (docs/crd.md §4).
type Schedule struct {
	Batch          int     `yaml:"batch"`
	Epochs         int     `yaml:"epochs"`          // nepochs at the initial rate
	DecayEpochs    int     `yaml:"decay_epochs"`    // nepochs_decay, linear decay
	NDis           int     `yaml:"n_dis"`           // pix2pix: D/teacher every n_dis steps; CycleGAN: round length factor
	SaveEpochFreq  int     `yaml:"save_epoch_freq"` // evaluate/checkpoint every k epochs (CycleGAN: student rounds)
	SaveLatestFreq int     `yaml:"save_latest_freq"`
	LR             float64 `yaml:"lr"`
	Beta1          float64 `yaml:"beta1"`
	Beta2          float64 `yaml:"beta2"`
	// Distill is online (the default when empty), offline or none.
	Distill Distill `yaml:"distill"`
}

// DistillMode is Distill with the default filled in.
func (s Schedule) DistillMode() Distill {
	if s.Distill == "" {
		return DistillOnline
	}
	return s.Distill
}

// EvalRecipe says how results are measured (docs/crd.md §7).
type EvalRecipe struct {
	// RealStats is the file name of the real statistics (GAN Compression's
	// real_stat/<dataset>_<side>.npz); when absent they are computed from the
	// real images of the evaluation side.
	RealStats string `yaml:"real_stats"`
	// Paired: the validation set has ground truth for the generated side, so
	// PSNR, SSIM and L1 are reported too (synthetic data).
	Paired bool `yaml:"paired"`
	// MaxImages caps the evaluation set (0: all).
	MaxImages int `yaml:"max_images"`
}

//go:embed recipes/*.yaml
var recipeFS embed.FS

// Recipes lists the names of the built-in recipes.
func Recipes() []string {
	ents, _ := fs.ReadDir(recipeFS, "recipes")
	var out []string
	for _, e := range ents {
		out = append(out, strings.TrimSuffix(e.Name(), ".yaml"))
	}
	slices.Sort(out)
	return out
}

// MaxRecipeBytes bounds a recipe file. Recipes are a page of YAML (the built-in
// ones are under 3 KiB), and every checkpoint's state.json carries a copy, so a
// file of more than 1 MiB is a mistake, refused before it is parsed.
const MaxRecipeBytes = 1 << 20

// LoadRecipe returns a built-in recipe by name, or reads a YAML file when
// nameOrPath ends in .yaml/.yml or names an existing file. Unknown fields are
// errors, and the recipe is validated.
func LoadRecipe(nameOrPath string) (Recipe, error) {
	var b []byte
	var err error
	src := nameOrPath
	if strings.HasSuffix(nameOrPath, ".yaml") || strings.HasSuffix(nameOrPath, ".yml") {
		b, err = readRecipeFile(nameOrPath)
	} else if b, err = recipeFS.ReadFile(path.Join("recipes", nameOrPath+".yaml")); err != nil {
		if st, serr := os.Stat(nameOrPath); serr == nil && !st.IsDir() {
			b, err = readRecipeFile(nameOrPath)
		} else {
			return Recipe{}, fmt.Errorf("recipe %q: not a built-in recipe (have %s) nor a YAML file", nameOrPath, strings.Join(Recipes(), ", "))
		}
	} else {
		src = "built-in recipe " + nameOrPath
	}
	if err != nil {
		return Recipe{}, fmt.Errorf("recipe: %w", err)
	}
	r, err := ParseRecipe(b)
	if err != nil {
		return Recipe{}, fmt.Errorf("%s: %w", src, err)
	}
	return r, nil
}

// readRecipeFile reads a recipe file of at most MaxRecipeBytes.
func readRecipeFile(name string) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxRecipeBytes+1))
	if err != nil {
		return nil, err
	}
	if len(b) > MaxRecipeBytes {
		return nil, fmt.Errorf("%s: larger than %d bytes (1 MiB): a recipe is a page of YAML", name, MaxRecipeBytes)
	}
	return b, nil
}

// ParseRecipe decodes YAML (unknown fields rejected) and validates it.
func ParseRecipe(b []byte) (Recipe, error) {
	if len(b) > MaxRecipeBytes {
		return Recipe{}, fmt.Errorf("parse: %d bytes: larger than %d bytes (1 MiB): a recipe is a page of YAML", len(b), MaxRecipeBytes)
	}
	var r Recipe
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&r); err != nil {
		return Recipe{}, fmt.Errorf("parse: %w", err)
	}
	if r.Compat == "" {
		r.Compat = "intended"
	}
	if err := r.Validate(); err != nil {
		return Recipe{}, err
	}
	return r, nil
}

// Validate reports every problem at once; each names the field, quotes the bad
// value and gives the allowed range.
func (r Recipe) Validate() error {
	var errs []error
	bad := func(field string, v any, want string) {
		errs = append(errs, fmt.Errorf("%s: %v: want %s", field, v, want))
	}
	intIn := func(field string, v, lo, hi int) {
		if v < lo || v > hi {
			bad(field, v, fmt.Sprintf("an integer in [%d, %d]", lo, hi))
		}
	}
	floatIn := func(field string, v, lo, hi float64) {
		if !(v >= lo && v <= hi) {
			bad(field, v, fmt.Sprintf("a number in [%g, %g]", lo, hi))
		}
	}
	if r.Name == "" {
		bad("name", `""`, "a non-empty name")
	}
	if r.Mode != Pix2Pix && r.Mode != CycleGAN {
		bad("mode", fmt.Sprintf("%q", r.Mode), `"pix2pix" or "cyclegan"`)
	}
	if r.Compat != "intended" && r.Compat != "official" {
		bad("compat", fmt.Sprintf("%q", r.Compat), `"intended" or "official"`)
	}
	d := r.Data
	if d.Dataset == "" {
		bad("data.dataset", `""`, "a folder name")
	} else if err := checkDatasetName(d.Dataset); err != nil {
		errs = append(errs, fmt.Errorf("data.dataset: %w", err))
	}
	for _, a := range d.Aliases {
		if err := checkDatasetName(a); err != nil {
			errs = append(errs, fmt.Errorf("data.aliases: %w", err))
		}
	}
	switch d.Direction {
	case "AtoB":
	case "BtoA":
		if r.Mode == CycleGAN {
			bad("data.direction", `"BtoA"`, `"AtoB" for cyclegan (the reference's BtoA cannot work, docs/crd.md §9 D6; swap the A and B folders instead)`)
		}
	default:
		bad("data.direction", fmt.Sprintf("%q", d.Direction), `"AtoB" or "BtoA"`)
	}
	if r.Mode == Pix2Pix && (d.Train == "" || d.Val == "") {
		bad("data.train/data.val", fmt.Sprintf("%q/%q", d.Train, d.Val), "the aligned split folders (e.g. train, val)")
	}
	if r.Mode == CycleGAN && (d.TrainA == "" || d.TrainB == "" || d.ValA == "" || d.ValB == "") {
		bad("data.train_a/train_b/val_a/val_b", fmt.Sprintf("%q/%q/%q/%q", d.TrainA, d.TrainB, d.ValA, d.ValB), "the unaligned split folders (e.g. trainA, trainB, testA, testB)")
	}
	intIn("data.crop_size", d.CropSize, 16, 4096)
	intIn("data.load_size", d.LoadSize, d.CropSize, 4096)
	if d.Synth != nil {
		if d.Synth.Kind != "edges2shapes" && d.Synth.Kind != "shapes2night" {
			bad("data.synth.kind", fmt.Sprintf("%q", d.Synth.Kind), `"edges2shapes" or "shapes2night"`)
		}
		intIn("data.synth.size", d.Synth.Size, 16, 1024)
		intIn("data.synth.n", d.Synth.N, 1, 1_000_000)
	}
	errs = append(errs, r.Teacher.validateGenerator("teacher", d.CropSize)...)
	errs = append(errs, r.Student.validateGenerator("student", d.CropSize)...)
	if r.Discriminator.Arch != "patchgan" {
		bad("discriminator.arch", fmt.Sprintf("%q", r.Discriminator.Arch), `"patchgan"`)
	}
	intIn("discriminator.ndf", r.Discriminator.NDF, 1, 1024)
	intIn("discriminator.layers", r.Discriminator.Layers, 1, 8)
	if r.Discriminator.Norm != "instance" && r.Discriminator.Norm != "batch" {
		bad("discriminator.norm", fmt.Sprintf("%q", r.Discriminator.Norm), `"instance" or "batch"`)
	}
	l := r.Loss
	if l.GANMode != LSGAN && l.GANMode != Hinge && l.GANMode != Vanilla {
		bad("loss.gan_mode", fmt.Sprintf("%q", l.GANMode), `"lsgan", "hinge" or "vanilla"`)
	}
	for _, f := range []struct {
		name string
		v    float64
	}{{"loss.lambda_recon", l.Recon}, {"loss.lambda_gan", l.GAN}, {"loss.lambda_a", l.CycleA}, {"loss.lambda_b", l.CycleB},
		{"loss.lambda_identity", l.Identity}, {"loss.style", l.Style}, {"loss.feature", l.Feature},
		{"loss.perceptual_factor", l.PerceptualFactor}, {"loss.student_gan", l.StudentGAN}, {"loss.output_l1", l.OutputL1}} {
		floatIn(f.name, f.v, 0, 1e9)
	}
	seen := map[string]bool{}
	for _, n := range l.CRDOff {
		switch {
		case n != "rows" && n != "columns" && n != "patches":
			bad("loss.crd_off", fmt.Sprintf("%q", n), `"rows", "columns" or "patches"`)
		case seen[n]:
			bad("loss.crd_off", fmt.Sprintf("%q twice", n), "each set at most once")
		}
		seen[n] = true
	}
	if r.Variant != "" && !slices.Contains(Variants(), r.Variant) {
		bad("variant", fmt.Sprintf("%q", r.Variant), "empty or one of "+strings.Join(Variants(), ", "))
	}
	intIn("loss.pool_size", l.PoolSize, 0, 100_000)
	intIn("loss.crd_patch", l.Patch, 1, d.CropSize/2)
	s := r.Schedule
	intIn("schedule.batch", s.Batch, 1, 1024)
	if r.Mode == CycleGAN && s.Batch != 1 && r.Compat == "official" {
		bad("schedule.batch", s.Batch, "1 with compat official (the released CycleGAN CRD term is defined at batch 1, §9 D11)")
	}
	intIn("schedule.epochs", s.Epochs, 0, 100_000)
	intIn("schedule.decay_epochs", s.DecayEpochs, 0, 100_000)
	if s.Epochs+s.DecayEpochs < 1 {
		bad("schedule.epochs + schedule.decay_epochs", s.Epochs+s.DecayEpochs, "≥ 1")
	}
	switch s.Distill {
	case "", DistillOnline, DistillOffline, DistillNone:
	default:
		bad("schedule.distill", fmt.Sprintf("%q", s.Distill), `"online", "offline" or "none"`)
	}
	intIn("schedule.n_dis", s.NDis, 1, 1000)
	intIn("schedule.save_epoch_freq", s.SaveEpochFreq, 1, 100_000)
	intIn("schedule.save_latest_freq", s.SaveLatestFreq, 1, 1<<30)
	floatIn("schedule.lr", s.LR, 1e-9, 1)
	floatIn("schedule.beta1", s.Beta1, 0, 0.999999)
	floatIn("schedule.beta2", s.Beta2, 0, 0.999999)
	intIn("eval.max_images", r.Eval.MaxImages, 0, 1<<30)
	return errors.Join(errs...)
}

func (n NetSpec) validateGenerator(who string, crop int) []error {
	var errs []error
	bad := func(field string, v any, want string) {
		errs = append(errs, fmt.Errorf("%s.%s: %v: want %s", who, field, v, want))
	}
	switch n.Arch {
	case "mobile_resnet_9blocks", "resnet_9blocks":
		if n.Blocks < 1 || n.Blocks > 64 {
			bad("blocks", n.Blocks, "an integer in [1, 64]")
		}
		if crop%4 != 0 {
			bad("arch", n.Arch, fmt.Sprintf("a crop size that is a multiple of 4 (data.crop_size is %d)", crop))
		}
	case "unet_256":
		if n.Downs < 1 || n.Downs > 12 || crop%(1<<n.Downs) != 0 {
			bad("downs", n.Downs, fmt.Sprintf("an integer in [1, 12] with 2^downs dividing data.crop_size (%d)", crop))
		}
	default:
		bad("arch", fmt.Sprintf("%q", n.Arch), `"mobile_resnet_9blocks", "resnet_9blocks" or "unet_256"`)
	}
	if n.NGF < 1 || n.NGF > 1024 {
		bad("ngf", n.NGF, "an integer in [1, 1024]")
	}
	if n.Norm != "instance" && n.Norm != "batch" {
		bad("norm", fmt.Sprintf("%q", n.Norm), `"instance" or "batch"`)
	}
	return errs
}

// TotalEpochs is nepochs + nepochs_decay.
func (s Schedule) TotalEpochs() int { return s.Epochs + s.DecayEpochs }

// LRFactor is the linear policy's multiplier for epoch e (1-based): constant
// for e ≤ nepochs, then down to 1/(decay+1) at the last epoch, never 0
// (docs/crd.md §4.3).
func (s Schedule) LRFactor(e int) float64 {
	return 1 - float64(max(0, e-s.Epochs))/float64(s.DecayEpochs+1)
}
