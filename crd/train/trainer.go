// Package train is CRD's trainer: the teachers' objectives and the student's
// (docs/crd.md §2, §3), the step orders of pix2pix and CycleGAN distillation
// (§4.1, §4.2), recipes, checkpoints, evaluation and reports. One Step
// computes a phase's gradients, hands each phase's flat gradient buffer to a
// GradSync hook (a no-op in one process; the distributed system sums buffers
// across ranks there), then applies Adam, so every replica stays identical.
package train

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"math/rand/v2"

	"go.uber.org/zap"

	"github.com/crdgo/crdgo/crd"
	"github.com/crdgo/crdgo/crd/data"
	"github.com/crdgo/crdgo/crd/model"
	"github.com/crdgo/crdgo/crd/nn"
	"github.com/crdgo/crdgo/crd/tensor"
)

// Config is one training run: a recipe and the run's own settings.
type Config struct {
	Recipe Recipe
	// DataRoot holds the recipe's dataset folder (DataRoot/<dataset>/…). With
	// Data set it only names the root in messages (a URL, say).
	DataRoot string
	// Data, when set, is where the datasets are instead of DataRoot on local
	// disk: a Source holding one folder per dataset (an object store through a
	// local cache, see package storage).
	Data data.Source
	// OutDir receives checkpoints/, samples/, metrics.jsonl and loss.png.
	OutDir string
	// RealStats overrides the recipe's real statistics file (npz).
	RealStats string
	// MaxSteps stops training after this many steps (0: the recipe's epochs).
	// Without online distillation (schedule.distill offline or none) it is
	// the budget of the online schedule: the run takes the teacher steps and
	// then the student steps that the online run's first MaxSteps steps take
	// (docs/crd.md §11).
	MaxSteps int
	// LogEvery, SampleEvery and CheckpointEvery are in steps (0: defaults).
	LogEvery, SampleEvery, CheckpointEvery int
	// EvalEvery, when > 0, adds an evaluation every EvalEvery steps to the
	// schedule's own (docs/crd.md §4.1), for metric curves (crdgo ablate).
	// These evaluations score the networks a run is training and change
	// nothing in it: they never pick CycleGAN's best teacher.
	EvalEvery int
	// KeepCheckpoints is how many step checkpoints to keep (0: 3).
	KeepCheckpoints int
	// KeepEvery, when > 0, also keeps every checkpoint whose step is a
	// multiple of it (the long-run history retention would otherwise drop).
	KeepEvery int
	// Workers decode data (0: GOMAXPROCS).
	Workers int
	// Version is crdgo's version, written into checkpoint manifests ("dev" if empty).
	Version string
}

// Validate checks the run settings (the recipe validates itself on load).
func (c Config) Validate() error {
	var errs []error
	if err := c.Recipe.Validate(); err != nil {
		errs = append(errs, err)
	}
	if c.DataRoot == "" {
		errs = append(errs, fmt.Errorf("data root: empty: want the folder that holds %q", c.Recipe.Data.Dataset))
	}
	if c.OutDir == "" {
		errs = append(errs, fmt.Errorf("out dir: empty: want a folder for checkpoints and reports"))
	}
	for _, f := range []struct {
		name string
		v    int
	}{{"max steps", c.MaxSteps}, {"log every", c.LogEvery}, {"sample every", c.SampleEvery},
		{"checkpoint every", c.CheckpointEvery}, {"eval every", c.EvalEvery}, {"keep checkpoints", c.KeepCheckpoints}, {"keep every", c.KeepEvery}, {"workers", c.Workers}} {
		if f.v < 0 {
			errs = append(errs, fmt.Errorf("%s: %d: want ≥ 0", f.name, f.v))
		}
	}
	return errors.Join(errs...)
}

// Networks are the models of one distillation run. Unused fields are nil:
// pix2pix has GT, D and S; CycleGAN adds GTB (G_B), DB (D_B) and GTBest (the
// best G_A, the teacher of student rounds).
type Networks struct {
	GT, GTB, GTBest model.Network
	D, DB           model.Network
	S               model.Network
}

// Trainer runs CRD distillation. It is not safe for concurrent use.
type Trainer struct {
	cfg Config
	rec Recipe
	be  tensor.Backend
	log *zap.Logger
	tp  *nn.Tape

	Nets                          Networks
	optGT, optGTB, optD, optDB    *nn.Adam
	optS                          *nn.Adam
	vgg                           FeatureNet
	inception                     FIDNet
	crdLoss                       *crdLoss
	poolA, poolB                  *imagePool
	rng                           *rand.Rand // the image pools' draws
	pcg                           *rand.PCG
	state                         State
	ganMode                       GANMode
	styleW, featureW, studentGANW float32
	outputL1W                     float32
	// An offline schedule's teacher and student steps under MaxSteps
	// (setOfflineCaps), once Run has seen the data.
	capT, capS int
	capsSet    bool

	// Retention (retention.go): checkpoints known intact, broken ones already
	// reported, and the checkpoint the state was loaded from.
	intact, reported map[string]bool
	intactObjects    map[string]bool // checkpoints in an ObjectStore found intact, by name
	loadedFrom       string
}

// Extras are the pretrained networks a run may use; either may be nil.
type Extras struct {
	// VGG is the frozen VGG16 of the perceptual terms; nil turns them off.
	VGG FeatureNet
	// Inception computes FID and KID; nil leaves only the paired metrics.
	Inception FIDNet
}

// New builds the networks of the recipe with seeded weights and their
// optimizers.
func New(cfg Config, be tensor.Backend, ext Extras, log *zap.Logger) (*Trainer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	r := cfg.Recipe
	t := &Trainer{cfg: cfg, rec: r, be: be, log: log, tp: nn.NewTape(be), vgg: ext.VGG, inception: ext.Inception, ganMode: r.Loss.GANMode}
	compat, err := crd.ParseCompat(r.Compat)
	if err != nil {
		return nil, err
	}
	t.crdLoss = &crdLoss{kind: CRDPix2Pix, patch: r.Loss.Patch, compat: compat, terms: r.Loss.CRDTerms()}
	if r.Mode == CycleGAN {
		t.crdLoss.kind = CRDCycleGAN
	}
	f := float32(r.Loss.PerceptualFactor)
	t.styleW, t.featureW = f*float32(r.Loss.Style), f*float32(r.Loss.Feature)
	t.studentGANW = float32(r.Loss.StudentGAN)
	t.outputL1W = float32(r.Loss.OutputL1)
	if r.Schedule.DistillMode() != DistillNone && t.crdLoss.terms == 0 && t.outputL1W == 0 && t.studentGANW == 0 &&
		(t.vgg == nil || t.styleW == 0 && t.featureW == 0) {
		return nil, fmt.Errorf("recipe %s: the student has no loss term: loss.crd_off drops every CRD set, loss.output_l1 and loss.student_gan are 0 and there are no perceptual terms (--vgg)", r.Name)
	}

	// Seeded initialisation in a fixed order: teacher(s), discriminator(s), student.
	rng := rand.New(rand.NewPCG(r.Seed, 0x9e3779b97f4a7c15))
	var errs []error
	build := func(who string, spec NetSpec, inC, outC int, init bool) model.Network {
		n, err := buildNetwork(be, spec, inC, outC)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", who, err))
			return nil
		}
		if init {
			n.Params().Initialize(rng)
		}
		return n
	}
	dIn := 3
	if r.Mode == Pix2Pix {
		dIn = 6 // conditional: cat(a, ·)
	}
	cyc := r.Mode == CycleGAN
	n := &t.Nets
	n.GT = build("teacher", r.Teacher, 3, 3, true)
	if cyc {
		n.GTB = build("teacher G_B", r.Teacher, 3, 3, true)
	}
	n.D = build("discriminator", r.Discriminator, dIn, 1, true)
	if cyc {
		n.DB = build("discriminator D_B", r.Discriminator, dIn, 1, true)
	}
	n.S = build("student", r.Student, 3, 3, true)
	if cyc {
		n.GTBest = build("best teacher", r.Teacher, 3, 3, false)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if n.GTBest != nil {
		if err := n.GTBest.Params().CopyFrom(n.GT.Params()); err != nil {
			return nil, err
		}
	}
	s := r.Schedule
	adam := func(net model.Network) *nn.Adam {
		if net == nil {
			return nil
		}
		return nn.NewAdam(net.Params(), float32(s.LR), float32(s.Beta1), float32(s.Beta2))
	}
	t.optGT, t.optGTB, t.optD, t.optDB, t.optS = adam(n.GT), adam(n.GTB), adam(n.D), adam(n.DB), adam(n.S)
	t.pcg = rand.NewPCG(r.Seed, 0x51a5e)
	t.rng = rand.New(t.pcg)
	if r.Mode == CycleGAN {
		t.poolA, t.poolB = newImagePool(r.Loss.PoolSize), newImagePool(r.Loss.PoolSize)
	}
	t.state = State{Phase: PhaseTeacher}
	return t, nil
}

// buildNetwork makes one network of a recipe; its values are zero until
// initialised or loaded.
func buildNetwork(be tensor.Backend, spec NetSpec, inC, outC int) (model.Network, error) {
	ms, err := spec.modelSpec(inC, outC)
	if err != nil {
		return nil, err
	}
	return model.New(be, ms)
}

// Recipe is the trainer's recipe.
func (t *Trainer) Recipe() Recipe { return t.rec }

// State is the trainer's position in its schedule.
func (t *Trainer) State() State { return t.state }

// Tape is the trainer's tape (its arena holds the step's memory).
func (t *Trainer) Tape() *nn.Tape { return t.tp }

// setLR sets the learning rate of every optimizer from the schedule.
func (t *Trainer) setLR(teacherEpoch, studentEpoch int) {
	s := t.rec.Schedule
	lt := float32(s.LR * s.LRFactor(teacherEpoch))
	for _, o := range []*nn.Adam{t.optGT, t.optGTB, t.optD, t.optDB} {
		if o != nil {
			o.LR = lt
		}
	}
	t.optS.LR = float32(s.LR * s.LRFactor(studentEpoch))
}

// Losses are one step's scalar losses, by name, for logs and metrics.
type Losses map[string]float64

// scalar downloads a scalar Var.
func (t *Trainer) scalar(v *nn.Var) float64 {
	var b [1]float32
	t.be.Download(b[:], v.Value)
	return float64(b[0])
}

// syncApply sums each phase's gradients across the ranks, then steps its
// optimizer. Nothing moves if the step's collective operations failed (a batch
// norm's statistics, a pool's fakes) or any phase's sum fails. A placeholder
// rank's gradients are cleared first: its example counts as nothing.
func (t *Trainer) syncApply(ss *stepSync, phases ...phaseOpt) error {
	if ss.err != nil {
		return ss.err
	}
	if ss.World() > 1 {
		for _, p := range phases {
			if !ss.contributes {
				p.opt.Params().ZeroGrad()
			}
			g := p.opt.Params().Grads()
			host := g.Data
			if host == nil { // a device backend: round trip through the host
				host = make([]float32, g.Numel())
				t.be.Download(host, g)
			}
			if err := ss.sum(p.name, host); err != nil {
				return err
			}
			if g.Data == nil {
				t.be.Upload(g, host)
			}
		}
	}
	for _, p := range phases {
		p.opt.Step()
	}
	return nil
}

type phaseOpt struct {
	name string
	opt  *nn.Adam
}

// Checksum is a 64-bit FNV-1a hash of the trainer's whole replicated state:
// every network's parameters and buffers, every optimizer's moments and step
// count, in a fixed order. Data-parallel replicas that applied the same
// updates have the same checksum; one flipped bit changes it.
func (t *Trainer) Checksum() uint64 {
	h := fnv.New64a()
	var b [4]byte
	add := func(x *tensor.Tensor) {
		if x == nil {
			return
		}
		host := x.Data
		if host == nil {
			host = make([]float32, x.Numel())
			t.be.Download(host, x)
		}
		for _, v := range host {
			binary.LittleEndian.PutUint32(b[:], math.Float32bits(v))
			h.Write(b[:])
		}
	}
	for _, nf := range t.netFiles() {
		ps := nf.net.Params()
		add(ps.Values())
		add(ps.Buffers())
		if nf.opt != nil {
			m, v, step := nf.opt.State()
			add(m)
			add(v)
			binary.LittleEndian.PutUint32(b[:], uint32(step))
			h.Write(b[:])
		}
	}
	return h.Sum64()
}
