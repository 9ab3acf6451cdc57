// Package ablation runs a recipe's ablations — the same data, budget and
// student over variants and seeds (docs/crd.md §11) — and reports
// run folders as tables of mean ± sd over seeds.
//
// Execute trains every (variant, seed) of a Plan as its own run folder
// DIR/<variant>/seed-<k>, several at a time, and resumes: a finished run is
// skipped, an interrupted one continues from its newest intact checkpoint
// (crdgo train --resume). Collect and Build read any run folders — an
// ablation's, crdgo train's, one trained with --nodes N — into tables.
package ablation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/crdgo/crdgo/crd/tensor"
	"github.com/crdgo/crdgo/crd/train"
	"github.com/crdgo/crdgo/internal/zaplevel"
	"github.com/crdgo/crdgo/runlock"
)

// Config is one ablation: a recipe over variants and seeds.
type Config struct {
	Recipe   train.Recipe // the recipe as written (variant "crd")
	Variants []string     // train.Variants() names
	Seeds    int          // seeds 1..Seeds
	Out      string       // runs go to Out/<variant>/seed-<k>
	DataRoot string       // the datasets (synthetic ones are generated here)
	// MaxSteps is every run's budget: the first MaxSteps steps of the online
	// schedule (0: the recipe's epochs). Runs without online distillation
	// update each network as often as the online run (train.Config.MaxSteps).
	MaxSteps int
	// EvalEvery adds an evaluation every so many steps (0: the schedule's).
	EvalEvery int
	// Jobs is how many runs train at once (0: 1); Threads the compute
	// threads they share (0: every CPU), Threads/Jobs each, at least 1.
	Jobs, Threads int
	Backend       tensor.CPUKind // "": the default
	// Extras loads a run's pretrained networks onto its engine; nil: none.
	Extras func(be tensor.Backend) (train.Extras, error)
	// RealStats overrides the recipe's FID statistics file (train.Config).
	RealStats string
	// Version is crdgo's version, for the checkpoints' manifests.
	Version string
	// Progress receives one line per run finished or skipped; nil: none.
	Progress io.Writer
	// TrainLog is the trainers' logger (nil: Execute's, at warning level).
	TrainLog *zap.Logger
}

// Validate reports every problem at once, naming the field.
func (c Config) Validate() error {
	var errs []error
	if err := c.Recipe.Validate(); err != nil {
		errs = append(errs, err)
	}
	if len(c.Variants) == 0 {
		errs = append(errs, fmt.Errorf("variants: none: want some of %s", strings.Join(train.Variants(), ", ")))
	}
	seen := map[string]bool{}
	for _, v := range c.Variants {
		if !slices.Contains(train.Variants(), v) {
			errs = append(errs, fmt.Errorf("variants: %q: want one of %s (or all)", v, strings.Join(train.Variants(), ", ")))
		} else if seen[v] {
			errs = append(errs, fmt.Errorf("variants: %q twice", v))
		}
		seen[v] = true
	}
	if c.Seeds < 1 || c.Seeds > 1000 {
		errs = append(errs, fmt.Errorf("seeds: %d: want 1 to 1000", c.Seeds))
	}
	if c.Out == "" {
		errs = append(errs, fmt.Errorf("out: empty: want the ablation's folder"))
	}
	if c.DataRoot == "" {
		errs = append(errs, fmt.Errorf("data root: empty: want the folder that holds %q", c.Recipe.Data.Dataset))
	}
	for _, f := range []struct {
		name string
		v    int
	}{{"max steps", c.MaxSteps}, {"eval every", c.EvalEvery}, {"jobs", c.Jobs}, {"threads", c.Threads}} {
		if f.v < 0 {
			errs = append(errs, fmt.Errorf("%s: %d: want ≥ 0", f.name, f.v))
		}
	}
	return errors.Join(errs...)
}

// Run is one (variant, seed) of an ablation.
type Run struct {
	Variant string
	Seed    int          // 1-based
	Dir     string       // Out/<variant>/seed-<k>
	Recipe  train.Recipe // the variant, with the seed's recipe seed
}

// Name is the run's folder relative to the ablation's: "<variant>/seed-<k>".
func (r Run) Name() string { return fmt.Sprintf("%s/seed-%d", r.Variant, r.Seed) }

// SeedOf is the recipe seed of seed k (1-based) of a recipe whose seed is
// base: seed 1 is the recipe's own; the others are 1000 apart, so that no
// run's streams (the CycleGAN student loader uses seed + 1) meet another's.
func SeedOf(base uint64, k int) uint64 { return base + 1000*uint64(k-1) }

// Plan lists the runs of c, seed by seed (every variant of seed 1 first), so
// that an ablation cut short has every variant at its first seeds.
func Plan(c Config) ([]Run, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	var runs []Run
	for k := 1; k <= c.Seeds; k++ {
		for _, v := range c.Variants {
			r, err := train.ApplyVariant(c.Recipe, v)
			if err != nil {
				return nil, err
			}
			r.Seed = SeedOf(c.Recipe.Seed, k)
			run := Run{Variant: v, Seed: k, Recipe: r}
			run.Dir = filepath.Join(c.Out, v, fmt.Sprintf("seed-%d", k))
			runs = append(runs, run)
		}
	}
	return runs, nil
}

// MarkerFile is the file Execute keeps in each run folder: what the run is
// and whether it finished.
const MarkerFile = "ablation.json"

// Marker is MarkerFile's content.
type Marker struct {
	Recipe     string  `json:"recipe"`
	Variant    string  `json:"variant"`
	Seed       int     `json:"seed"`
	RecipeSeed uint64  `json:"recipe_seed"`
	MaxSteps   int     `json:"max_steps"`
	EvalEvery  int     `json:"eval_every"`
	Finished   bool    `json:"finished"`
	Steps      int     `json:"steps,omitempty"`
	Seconds    float64 `json:"seconds,omitempty"` // wall time of the runs that trained it, summed
}

// readMarker reads dir's marker; ok is false when there is none.
func readMarker(dir string) (m Marker, ok bool, err error) {
	p := filepath.Join(dir, MarkerFile)
	b, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		return Marker{}, false, nil
	}
	if err != nil {
		return Marker{}, false, fmt.Errorf("ablation: %w", err)
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return Marker{}, false, fmt.Errorf("ablation: %s: %w", p, err)
	}
	return m, true, nil
}

func writeMarker(dir string, m Marker) error {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(dir, MarkerFile+".tmp")
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("ablation: %w", err)
	}
	return os.Rename(tmp, filepath.Join(dir, MarkerFile))
}

// check compares a marker found in a run folder with the run planned there.
func (m Marker) check(dir string, want Marker) error {
	var errs []string
	if m.Recipe != want.Recipe {
		errs = append(errs, fmt.Sprintf("recipe %q, now %q", m.Recipe, want.Recipe))
	}
	if m.Variant != want.Variant || m.Seed != want.Seed || m.RecipeSeed != want.RecipeSeed {
		errs = append(errs, fmt.Sprintf("variant %s seed %d (recipe seed %d), now %s seed %d (%d)", m.Variant, m.Seed, m.RecipeSeed, want.Variant, want.Seed, want.RecipeSeed))
	}
	if m.MaxSteps != want.MaxSteps {
		errs = append(errs, fmt.Sprintf("max steps %d, now %d", m.MaxSteps, want.MaxSteps))
	}
	if m.EvalEvery != want.EvalEvery {
		errs = append(errs, fmt.Sprintf("eval every %d, now %d", m.EvalEvery, want.EvalEvery))
	}
	if errs != nil {
		return fmt.Errorf("ablation: %s was run with other settings (%s): choose another --out, or the same settings", filepath.Join(dir, MarkerFile), strings.Join(errs, "; "))
	}
	return nil
}

// Outcome is what happened to one run.
type Outcome struct {
	Run     Run
	Skipped bool // finished before: nothing was done
	Summary train.Summary
	Took    time.Duration
	Err     error
}

// Execute trains every run of the plan that has not finished, c.Jobs at a
// time, and returns their outcomes in plan order. A run that fails does not
// stop the others; the error lists every failed run. Cancelling ctx stops
// the runs in progress after a checkpoint (run Execute again to resume) and
// starts no more; Execute then returns ctx's error.
func Execute(ctx context.Context, c Config, log *zap.Logger) ([]Outcome, error) {
	runs, err := Plan(c)
	if err != nil {
		return nil, err
	}
	if err := prepareData(ctx, c, log); err != nil {
		return nil, err
	}
	jobs := max(1, c.Jobs)
	threads := c.Threads
	if threads == 0 {
		threads = runtime.NumCPU()
	}
	per := max(1, threads/jobs)
	if c.Backend == "" {
		c.Backend = tensor.DefaultCPUKind()
	}
	tlog := c.TrainLog
	if tlog == nil {
		tlog = zaplevel.AtLeast(log, zap.WarnLevel)
	}
	log.Info("ablation", zap.String("recipe", c.Recipe.Name), zap.Strings("variants", c.Variants), zap.Int("seeds", c.Seeds),
		zap.Int("runs", len(runs)), zap.Int("jobs", jobs), zap.Int("threads_per_run", per), zap.Int("max_steps", c.MaxSteps),
		zap.String("out", c.Out))

	out := make([]Outcome, len(runs))
	next := make(chan int)
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		done int
	)
	for range jobs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				o := runOne(ctx, c, runs[i], per, tlog.With(zap.String("run", runs[i].Name())))
				mu.Lock()
				out[i] = o
				done++
				if c.Progress != nil {
					fmt.Fprintln(c.Progress, progressLine(o, done, len(runs)))
				}
				mu.Unlock()
			}
		}()
	}
feed:
	for i := range runs {
		select {
		case next <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	if ctx.Err() != nil {
		return out, ctx.Err()
	}
	var errs []error
	for _, o := range out {
		if o.Err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", o.Run.Name(), o.Err))
		}
	}
	return out, errors.Join(errs...)
}

// progressLine is the line Execute prints when a run ends.
func progressLine(o Outcome, done, total int) string {
	head := fmt.Sprintf("ablate: [%d/%d] %s:", done, total, o.Run.Name())
	switch {
	case o.Err != nil:
		return fmt.Sprintf("%s failed after %s: %v", head, o.Took.Round(time.Second), o.Err)
	case o.Skipped:
		return head + " finished before, skipped"
	}
	s := fmt.Sprintf("%s %d steps in %s", head, o.Summary.Steps, o.Took.Round(time.Second))
	if e := o.Summary.Eval; e != nil {
		sc, who := e.Student, "student"
		if o.Run.Recipe.SubjectGenerator() == train.TeacherGenerator {
			// VariantAlone trains the student's network in the teacher's slot.
			sc, who = e.Teacher, "student network (alone)"
		}
		s += fmt.Sprintf("; %s PSNR %.2f dB, SSIM %.3f", who, sc.PSNR, sc.SSIM)
	}
	return s
}

// prepareData generates the recipe's synthetic dataset if it is missing,
// holding the dataset folder's lock while it writes.
func prepareData(ctx context.Context, c Config, log *zap.Logger) error {
	if c.Recipe.Data.Synth != nil {
		dir, complete, err := train.SynthDir(c.DataRoot, c.Recipe)
		if err != nil {
			return err
		}
		if !complete {
			l, err := runlock.Acquire(dir)
			if err != nil {
				return err
			}
			defer l.Release()
		}
	}
	_, err := train.PrepareData(ctx, c.DataRoot, c.Recipe, nil, log)
	return err
}

// runOne trains one run to its end, resuming from its newest intact
// checkpoint, or skips it when its marker says it finished.
func runOne(ctx context.Context, c Config, r Run, threads int, log *zap.Logger) (o Outcome) {
	o.Run = r
	start := time.Now()
	defer func() { o.Took = time.Since(start) }()
	want := Marker{Recipe: c.Recipe.Name, Variant: r.Variant, Seed: r.Seed, RecipeSeed: r.Recipe.Seed, MaxSteps: c.MaxSteps, EvalEvery: c.EvalEvery}
	m, ok, err := readMarker(r.Dir)
	if err != nil {
		o.Err = err
		return o
	}
	if ok {
		if err := m.check(r.Dir, want); err != nil {
			o.Err = err
			return o
		}
		if m.Finished {
			o.Skipped = true
			return o
		}
		want.Seconds = m.Seconds
	}
	if err := os.MkdirAll(r.Dir, 0o755); err != nil {
		o.Err = fmt.Errorf("ablation: %w", err)
		return o
	}
	lock, err := runlock.Acquire(r.Dir)
	if err != nil {
		o.Err = err
		return o
	}
	defer lock.Release()
	if err := writeMarker(r.Dir, want); err != nil {
		o.Err = err
		return o
	}
	ckDir := filepath.Join(r.Dir, "checkpoints")
	if err := train.TidyCheckpoints(ckDir, log); err != nil {
		o.Err = err
		return o
	}
	cp, err := train.LatestCheckpoint(ckDir, log)
	if err != nil {
		o.Err = err
		return o
	}
	if cp != "" {
		// Resume only what this run would have trained: the same recipe.
		got, err := train.ReadCheckpointRecipe(cp)
		if err != nil {
			o.Err = err
			return o
		}
		if d, err := train.DiffRecipes(got, r.Recipe); err != nil {
			o.Err = err
			return o
		} else if len(d) > 0 {
			o.Err = fmt.Errorf("ablation: %s: trained with another recipe: field %s is %s, the plan has %s: choose another --out", cp, d[0].Field, d[0].A, d[0].B)
			return o
		}
	}
	be := tensor.NewCPU(c.Backend, threads)
	var ext train.Extras
	if c.Extras != nil {
		if ext, err = c.Extras(be); err != nil {
			o.Err = err
			return o
		}
	}
	cfg := train.Config{Recipe: r.Recipe, DataRoot: c.DataRoot, OutDir: r.Dir, RealStats: c.RealStats, MaxSteps: c.MaxSteps, EvalEvery: c.EvalEvery,
		Workers: threads, Version: c.Version}
	tr, err := train.New(cfg, be, ext, log)
	if err != nil {
		o.Err = err
		return o
	}
	if cp != "" {
		if err := tr.LoadCheckpoint(cp); err != nil {
			o.Err = err
			return o
		}
	}
	sum, err := tr.Run(ctx, train.RunOptions{Output: train.NewRunFolder(r.Dir, nil, log)})
	o.Summary = sum
	want.Seconds += time.Since(start).Seconds()
	want.Steps = sum.Steps
	if err != nil {
		o.Err = err
		if werr := writeMarker(r.Dir, want); werr != nil {
			o.Err = errors.Join(err, werr)
		}
		return o
	}
	want.Finished = true
	if err := writeMarker(r.Dir, want); err != nil {
		o.Err = err
	}
	return o
}
