package train

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/crdgo/crdgo/crd/model"
	"github.com/crdgo/crdgo/crd/nn"
	"github.com/crdgo/crdgo/crd/tensor"
	"github.com/crdgo/crdgo/crd/weights"
)

// A checkpoint is a folder OutDir/checkpoints/step-NNNNNNNN holding one
// safetensors file per network and optimizer, the image pools (CycleGAN),
// state.json (schedule position, RNG, recipe) and, written last,
// manifest.json with every file's size and SHA-256. It is written under a
// temporary name and renamed into place; a folder without a manifest, or whose
// files do not match it, is not a checkpoint.

// Manifest lists a checkpoint's files.
type Manifest struct {
	Step    int            `json:"step"`
	Recipe  string         `json:"recipe"`
	Version string         `json:"crdgo_version"`
	Created time.Time      `json:"created"`
	Files   []ManifestFile `json:"files"`
}

// ManifestFile is one file of a checkpoint.
type ManifestFile struct {
	Name   string `json:"name"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// checkpointState is state.json.
type checkpointState struct {
	State  State  `json:"state"`
	RNG    string `json:"rng"` // the pools' PCG, MarshalBinary, hex
	Recipe Recipe `json:"recipe"`
}

const manifestName = "manifest.json"

// netFile is one network of a run, its optimizer (nil for the best teacher)
// and the name of its files.
type netFile struct {
	name string
	net  model.Network
	opt  *nn.Adam
}

// netFiles are the networks of a run, in a fixed order.
func (t *Trainer) netFiles() []netFile {
	n := t.Nets
	all := []netFile{
		{"teacher_G", n.GT, t.optGT}, {"teacher_G_B", n.GTB, t.optGTB}, {"teacher_G_best", n.GTBest, nil},
		{"teacher_D", n.D, t.optD}, {"teacher_D_B", n.DB, t.optDB}, {"student_G", n.S, t.optS},
	}
	return slices.DeleteFunc(all, func(f netFile) bool { return f.net == nil })
}

// SaveCheckpoint writes the trainer's whole state under dir/step-NNNNNNNN and
// returns that folder.
func (t *Trainer) SaveCheckpoint(dir string) (_ string, err error) {
	final := filepath.Join(dir, fmt.Sprintf("step-%08d", t.state.Step))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("checkpoint: %w", err)
	}
	// A fresh name (step-N.tmpDIGITS): nothing in the way is ever removed.
	tmp, err := os.MkdirTemp(dir, filepath.Base(final)+".tmp")
	if err != nil {
		return "", fmt.Errorf("checkpoint: %w", err)
	}
	defer func() {
		if err != nil {
			os.RemoveAll(tmp) // this call's own folder; TidyCheckpoints if this fails too
		}
	}()
	var files []string
	for _, nf := range t.netFiles() {
		if err := nf.net.Params().Save(filepath.Join(tmp, nf.name+".safetensors"), map[string]string{"recipe": t.rec.Name}); err != nil {
			return "", fmt.Errorf("checkpoint %s: %s: %w", final, nf.name, err)
		}
		files = append(files, nf.name+".safetensors")
		if nf.opt != nil {
			ts, meta := nf.opt.StateTensors()
			name := "optim_" + nf.name + ".safetensors"
			if err := weights.WriteSafetensorsFile(filepath.Join(tmp, name), ts, meta); err != nil {
				return "", fmt.Errorf("checkpoint %s: %s: %w", final, name, err)
			}
			files = append(files, name)
		}
	}
	if t.poolA != nil {
		var ts []weights.Tensor
		for _, p := range []struct {
			name string
			pool *imagePool
		}{{"pool_A", t.poolA}, {"pool_B", t.poolB}} {
			for i, img := range p.pool.images {
				ts = append(ts, weights.Tensor{Name: fmt.Sprintf("%s/%04d", p.name, i), DType: weights.F32,
					Shape: p.pool.shape.Clone(), F32: img})
			}
		}
		if err := weights.WriteSafetensorsFile(filepath.Join(tmp, "pools.safetensors"), ts, nil); err != nil {
			return "", fmt.Errorf("checkpoint %s: pools: %w", final, err)
		}
		files = append(files, "pools.safetensors")
	}
	rngState, err := t.pcg.MarshalBinary()
	if err != nil {
		return "", err
	}
	st, err := json.MarshalIndent(checkpointState{State: t.state, RNG: hex.EncodeToString(rngState), Recipe: t.rec}, "", "  ")
	if err != nil {
		return "", err
	}
	if err := writeFileSync(filepath.Join(tmp, "state.json"), st); err != nil {
		return "", err
	}
	files = append(files, "state.json")
	version := t.cfg.Version
	if version == "" {
		version = "dev"
	}
	m := Manifest{Step: t.state.Step, Recipe: t.rec.Name, Version: version, Created: time.Now().UTC()}
	for _, f := range files {
		mf, err := hashFile(filepath.Join(tmp, f))
		if err != nil {
			return "", err
		}
		mf.Name = f
		m.Files = append(m.Files, mf)
	}
	mb, _ := json.MarshalIndent(m, "", "  ")
	if err := writeFileSync(filepath.Join(tmp, manifestName), mb); err != nil {
		return "", err
	}
	if err := replaceDir(tmp, final); err != nil {
		return "", fmt.Errorf("checkpoint: %w", err)
	}
	if t.intact == nil {
		t.intact = map[string]bool{}
	}
	t.intact[final] = true // its hashes were just computed from the files written
	return final, nil
}

// replaceDir renames the finished folder tmp to final. An existing final (the same
// step saved again, e.g. at the end of an epoch) is first moved aside to
// final.oldDIGITS (a fresh name) and removed only once tmp has its name, so that
// at every moment one complete copy exists under a name TidyCheckpoints knows.
func replaceDir(tmp, final string) error {
	dir := filepath.Dir(final)
	if _, err := os.Lstat(final); err != nil {
		if err := os.Rename(tmp, final); err != nil {
			return err
		}
		return syncDir(dir)
	}
	if own, err := ownFolder(final); err != nil || !own {
		return fmt.Errorf("%s exists and holds files crdgo does not write into a checkpoint: move it away (%v)", final, err)
	}
	// A fresh name: MkdirTemp finds one, and it is given back for the rename
	// (os.Rename does not replace a directory). Nothing else creates such names
	// while the run folder is locked.
	old, err := os.MkdirTemp(dir, filepath.Base(final)+".old")
	if err != nil {
		return err
	}
	if err := os.Remove(old); err != nil {
		return err
	}
	if err := os.Rename(final, old); err != nil {
		return err
	}
	if err := os.Rename(tmp, final); err != nil {
		return err
	}
	if err := syncDir(dir); err != nil {
		return err
	}
	return os.RemoveAll(old)
}

func writeFileSync(path string, b []byte) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

func hashFile(path string) (ManifestFile, error) {
	f, err := os.Open(path)
	if err != nil {
		return ManifestFile{}, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return ManifestFile{}, fmt.Errorf("checkpoint: hash %s: %w", path, err)
	}
	return ManifestFile{Size: n, SHA256: hex.EncodeToString(h.Sum(nil))}, nil
}

// VerifyCheckpoint reads dir's manifest and checks every file's size and hash.
func VerifyCheckpoint(dir string) (Manifest, error) {
	f, err := os.Open(filepath.Join(dir, manifestName))
	if err != nil {
		return Manifest{}, fmt.Errorf("checkpoint %s: no manifest (incomplete checkpoint): %w", dir, err)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxManifest+1))
	f.Close()
	if err != nil {
		return Manifest{}, fmt.Errorf("checkpoint %s: manifest: %w", dir, err)
	}
	m, err := ParseManifest(b)
	if err != nil {
		return Manifest{}, fmt.Errorf("checkpoint %s: %w", dir, err)
	}
	for _, f := range m.Files {
		got, err := hashFile(filepath.Join(dir, f.Name))
		if err != nil {
			return Manifest{}, fmt.Errorf("checkpoint %s: %w", dir, err)
		}
		if got.Size != f.Size || got.SHA256 != f.SHA256 {
			return Manifest{}, fmt.Errorf("checkpoint %s: %s: size %d sha256 %s, manifest says %d %s", dir, f.Name, got.Size, got.SHA256[:12], f.Size, f.SHA256[:12])
		}
	}
	return m, nil
}

// maxManifest bounds a manifest.json: a few dozen file entries.
const maxManifest = 64 << 10

// maxManifestFiles bounds the files a manifest may list (a CycleGAN checkpoint
// has 12).
const maxManifestFiles = 64

// ParseManifest decodes and checks a checkpoint's manifest.json: a step ≥ 0,
// 1 to 64 files, each a distinct plain file name (no path, not the manifest
// itself) with a size ≥ 0 and a 64-digit lower-case hex SHA-256.
func ParseManifest(b []byte) (Manifest, error) {
	if len(b) > maxManifest {
		return Manifest{}, fmt.Errorf("manifest: %d bytes, at most %d", len(b), maxManifest)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var m Manifest
	if err := dec.Decode(&m); err != nil {
		return Manifest{}, fmt.Errorf("manifest: %w", err)
	}
	if dec.More() {
		return Manifest{}, fmt.Errorf("manifest: data after the JSON object")
	}
	switch {
	case m.Step < 0:
		return Manifest{}, fmt.Errorf("manifest: step %d", m.Step)
	case len(m.Files) == 0:
		return Manifest{}, fmt.Errorf("manifest lists no files")
	case len(m.Files) > maxManifestFiles:
		return Manifest{}, fmt.Errorf("manifest lists %d files, at most %d", len(m.Files), maxManifestFiles)
	}
	seen := map[string]bool{}
	for _, f := range m.Files {
		switch {
		case f.Name == "" || f.Name != path.Base(f.Name) || f.Name != filepath.Base(f.Name) || f.Name == manifestName || f.Name == "." || f.Name == ".." || !ownCheckpointFile(f.Name):
			return Manifest{}, fmt.Errorf("manifest names %q: not a checkpoint file", f.Name)
		case seen[f.Name]:
			return Manifest{}, fmt.Errorf("manifest names %q twice", f.Name)
		case f.Size < 0:
			return Manifest{}, fmt.Errorf("manifest: %s: size %d", f.Name, f.Size)
		case !isSHA256(f.SHA256):
			return Manifest{}, fmt.Errorf("manifest: %s: sha256 %q: want 64 lower-case hex digits", f.Name, f.SHA256)
		}
		seen[f.Name] = true
	}
	return m, nil
}

func isSHA256(s string) bool {
	if len(s) != 64 {
		return false
	}
	for _, c := range s {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// Checkpoints lists the step folders under dir, newest first.
func Checkpoints(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	type cp struct {
		step int
		path string
	}
	var cps []cp
	for _, e := range ents {
		s, ok := strings.CutPrefix(e.Name(), "step-")
		if !ok || !e.IsDir() {
			continue
		}
		n, err := strconv.Atoi(s)
		if err != nil {
			continue
		}
		cps = append(cps, cp{n, filepath.Join(dir, e.Name())})
	}
	slices.SortFunc(cps, func(a, b cp) int { return b.step - a.step })
	out := make([]string, len(cps))
	for i, c := range cps {
		out[i] = c.path
	}
	return out, nil
}

// LatestCheckpoint returns the newest complete, intact checkpoint under dir;
// broken ones are logged and skipped. It returns "" when there is none.
func LatestCheckpoint(dir string, log *zap.Logger) (string, error) {
	cps, err := Checkpoints(dir)
	if err != nil {
		return "", err
	}
	for _, c := range cps {
		if _, err := VerifyCheckpoint(c); err != nil {
			log.Warn("skipping broken checkpoint", zap.String("dir", c), zap.Error(err))
			continue
		}
		return c, nil
	}
	return "", nil
}

// maxStateJSON bounds state.json: the schedule position, the RNG and the
// recipe (at most MaxRecipeBytes of YAML, about as much JSON).
const maxStateJSON = 4 * MaxRecipeBytes

// readState reads and checks a checkpoint's state.json.
func readState(dir string) (checkpointState, error) {
	path := filepath.Join(dir, "state.json")
	f, err := os.Open(path)
	if err != nil {
		return checkpointState{}, fmt.Errorf("checkpoint %s: %w", dir, err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxStateJSON+1))
	if err != nil {
		return checkpointState{}, fmt.Errorf("checkpoint %s: %w", dir, err)
	}
	if len(b) > maxStateJSON {
		return checkpointState{}, fmt.Errorf("checkpoint %s: state.json: larger than %d bytes", dir, maxStateJSON)
	}
	var cs checkpointState
	if err := json.Unmarshal(b, &cs); err != nil {
		return checkpointState{}, fmt.Errorf("checkpoint %s: state.json: %w", dir, err)
	}
	if err := cs.State.validate(); err != nil {
		return checkpointState{}, fmt.Errorf("checkpoint %s: state.json: %w", dir, err)
	}
	return cs, nil
}

// validate checks a State read from outside: counts and positions are ≥ 0, the
// phase is known, and the best FIDs are numbers ≥ 0 (0: none yet).
func (s State) validate() error {
	var errs []error
	for _, f := range []struct {
		name string
		v    int
	}{{"step", s.Step}, {"teacher_steps", s.TeacherSteps}, {"student_steps", s.StudentSteps}, {"epoch", s.Epoch},
		{"cursor.epoch", s.Cursor.Epoch}, {"cursor.pos", s.Cursor.Pos}, {"student_epochs", s.StudentEpochs},
		{"round_epochs", s.RoundEpochs}, {"student_cursor.epoch", s.StudentCursor.Epoch}, {"student_cursor.pos", s.StudentCursor.Pos}} {
		if f.v < 0 {
			errs = append(errs, fmt.Errorf("state.%s: %d: want ≥ 0", f.name, f.v))
		}
	}
	if s.TeacherSteps+s.StudentSteps > s.Step {
		errs = append(errs, fmt.Errorf("state: teacher_steps %d + student_steps %d: want ≤ step %d", s.TeacherSteps, s.StudentSteps, s.Step))
	}
	if s.Phase != PhaseTeacher && s.Phase != PhaseStudent {
		errs = append(errs, fmt.Errorf("state.phase: %q: want %q or %q", s.Phase, PhaseTeacher, PhaseStudent))
	}
	for _, f := range []struct {
		name string
		v    float64
	}{{"best_teacher", s.BestTeacher}, {"best_student", s.BestStudent}} {
		if !(f.v >= 0) || math.IsInf(f.v, 0) {
			errs = append(errs, fmt.Errorf("state.%s: %v: want a number ≥ 0", f.name, f.v))
		}
	}
	return errors.Join(errs...)
}

// ReadCheckpointRecipe returns the recipe a checkpoint was trained with.
func ReadCheckpointRecipe(dir string) (Recipe, error) {
	cs, err := readState(dir)
	if err != nil {
		return Recipe{}, err
	}
	if err := cs.Recipe.Validate(); err != nil {
		return Recipe{}, fmt.Errorf("checkpoint %s: recipe: %w", dir, err)
	}
	return cs.Recipe, nil
}

// LoadCheckpoint restores everything SaveCheckpoint wrote (after verifying the
// manifest), so that training continues bit for bit.
func (t *Trainer) LoadCheckpoint(dir string) error {
	if _, err := VerifyCheckpoint(dir); err != nil {
		return err
	}
	cs, err := readState(dir)
	if err != nil {
		return err
	}
	if cs.Recipe.Name != t.rec.Name || cs.Recipe.Mode != t.rec.Mode || cs.Recipe.Teacher != t.rec.Teacher ||
		cs.Recipe.Student != t.rec.Student || cs.Recipe.Discriminator != t.rec.Discriminator {
		return fmt.Errorf("checkpoint %s: trained with recipe %q (%s), this run is %q (%s): networks differ",
			dir, cs.Recipe.Name, cs.Recipe.Mode, t.rec.Name, t.rec.Mode)
	}
	for _, nf := range t.netFiles() {
		if _, err := nf.net.Params().Load(filepath.Join(dir, nf.name+".safetensors"), nn.LoadOptions{}); err != nil {
			return fmt.Errorf("checkpoint: %w", err)
		}
		if nf.opt != nil {
			p := filepath.Join(dir, "optim_"+nf.name+".safetensors")
			ts, meta, err := weights.ReadSafetensorsFile(p)
			if err != nil {
				return fmt.Errorf("checkpoint: %w", err)
			}
			if err := nf.opt.LoadStateTensors(ts, meta); err != nil {
				return fmt.Errorf("checkpoint %s: %w", p, err)
			}
		}
	}
	if t.poolA != nil {
		ts, _, err := weights.ReadSafetensorsFile(filepath.Join(dir, "pools.safetensors"))
		if err != nil {
			return fmt.Errorf("checkpoint: %w", err)
		}
		t.poolA.images, t.poolB.images = nil, nil
		for _, x := range ts {
			p := t.poolA
			if strings.HasPrefix(x.Name, "pool_B/") {
				p = t.poolB
			}
			if x.F32 == nil || len(x.Shape) != 3 {
				return fmt.Errorf("checkpoint %s: pools: tensor %q: want a C×H×W float image", dir, x.Name)
			}
			p.images = append(p.images, x.F32)
			p.shape = append(p.shape[:0], x.Shape...)
		}
	}
	rs, err := hex.DecodeString(cs.RNG)
	if err != nil {
		return fmt.Errorf("checkpoint %s: rng: %w", dir, err)
	}
	pcg := &rand.PCG{}
	if err := pcg.UnmarshalBinary(rs); err != nil {
		return fmt.Errorf("checkpoint %s: rng: %w", dir, err)
	}
	*t.pcg = *pcg
	t.state = cs.State
	t.loadedFrom = dir
	if t.intact == nil {
		t.intact = map[string]bool{}
	}
	t.intact[dir] = true
	return nil
}

// ResolveCheckpoint accepts a checkpoint folder, a run folder (its newest
// intact checkpoint) or a run's checkpoints/ folder.
func ResolveCheckpoint(path string, log *zap.Logger) (string, error) {
	if _, err := os.Stat(filepath.Join(path, manifestName)); err == nil {
		return path, nil
	}
	for _, dir := range []string{filepath.Join(path, "checkpoints"), path} {
		cp, err := LatestCheckpoint(dir, log)
		if err != nil {
			return "", err
		}
		if cp != "" {
			return cp, nil
		}
	}
	return "", fmt.Errorf("checkpoint %s: no intact checkpoint there (a step-N folder with manifest.json, a run folder, or its checkpoints/)", path)
}

// Generator names the generator of a checkpoint to load.
type Generator string

const (
	TeacherGenerator Generator = "teacher" // teacher_G (pix2pix G_T, CycleGAN G_A)
	StudentGenerator Generator = "student" // student_G
)

// LoadGenerator builds the teacher or student generator of the checkpoint's
// recipe and loads its weights (after verifying the manifest).
func LoadGenerator(be tensor.Backend, checkpoint string, which Generator) (model.Network, Recipe, error) {
	if _, err := VerifyCheckpoint(checkpoint); err != nil {
		return nil, Recipe{}, err
	}
	r, err := ReadCheckpointRecipe(checkpoint)
	if err != nil {
		return nil, Recipe{}, err
	}
	spec, file := r.Student, "student_G"
	switch which {
	case StudentGenerator:
	case TeacherGenerator:
		spec, file = r.Teacher, "teacher_G"
	default:
		return nil, r, fmt.Errorf("generator %q: want teacher or student", which)
	}
	g, err := buildNetwork(be, spec, 3, 3)
	if err != nil {
		return nil, r, err
	}
	if _, err := g.Params().Load(filepath.Join(checkpoint, file+".safetensors"), nn.LoadOptions{}); err != nil {
		return nil, r, err
	}
	return g, r, nil
}
