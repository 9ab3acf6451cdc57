package train

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"go.uber.org/zap"
)

// Checkpoint folders other than step-N, all crdgo's own and all transient
// (DIGITS makes each name fresh, so that nothing in the way is ever removed):
//
//	step-N.tmpDIGITS  a checkpoint being written; renamed to step-N once its
//	                  manifest is on disk
//	step-N.oldDIGITS  an older step-N moved aside while a new step-N takes its
//	                  name; removed once the new one is in place
//
// A crash can leave either behind. TidyCheckpoints finishes what the crash
// interrupted. Folders named step-N.tmp or step-N.old (no digits) were made by
// crdgo before issue 19 and are tidied the same way.
var transientName = regexp.MustCompile(`^(step-[0-9]{8,})\.(tmp|old)[0-9]*$`)

// ownCheckpointFile reports whether name is a file SaveCheckpoint writes into a
// checkpoint folder (or a temporary file of weights.WriteSafetensorsFile).
func ownCheckpointFile(name string) bool {
	switch {
	case name == "state.json", name == manifestName:
		return true
	case strings.HasPrefix(name, ".") && strings.Contains(name, ".safetensors.tmp"):
		return true
	case strings.HasSuffix(name, ".safetensors") && !strings.HasPrefix(name, "."):
		return true
	}
	return false
}

// ownFolder reports whether dir holds nothing but regular files a checkpoint is
// made of: the proof that removing it removes only what crdgo wrote.
func ownFolder(dir string) (bool, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return false, err
	}
	for _, e := range ents {
		if !e.Type().IsRegular() || !ownCheckpointFile(e.Name()) {
			return false, nil
		}
	}
	return true, nil
}

// TidyCheckpoints finishes, in dir (a run's checkpoints/ folder), what a crash
// interrupted while a checkpoint was written: a step-N.old… whose step-N is
// missing is the newest copy of step N and is renamed back; a step-N.old… next
// to its step-N, and every step-N.tmp…, are removed. Only a folder that holds
// nothing but checkpoint files is renamed or removed; anything else is reported
// and left alone. The caller holds the run folder's lock.
func TidyCheckpoints(dir string, log *zap.Logger) error {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("checkpoints: %w", err)
	}
	for _, e := range ents {
		m := transientName.FindStringSubmatch(e.Name())
		if m == nil || !e.IsDir() {
			continue
		}
		p := filepath.Join(dir, e.Name())
		final := filepath.Join(dir, m[1])
		own, err := ownFolder(p)
		if err != nil {
			return fmt.Errorf("checkpoints: %w", err)
		}
		if !own {
			log.Warn("leaving a folder with a checkpoint's name that holds other files", zap.String("dir", p))
			continue
		}
		if m[2] == "old" {
			if _, err := os.Lstat(final); errors.Is(err, os.ErrNotExist) {
				if err := os.Rename(p, final); err != nil {
					return fmt.Errorf("checkpoints: restore %s: %w", final, err)
				}
				log.Warn("restored a checkpoint a crash left moved aside", zap.String("dir", final))
				continue
			}
		}
		if err := os.RemoveAll(p); err != nil {
			return fmt.Errorf("checkpoints: remove %s: %w", p, err)
		}
		log.Info("removed an unfinished checkpoint folder a crash left", zap.String("dir", p))
	}
	return syncDir(dir)
}

// pruneCheckpoints applies the retention rule to dir after a checkpoint was
// written: keep the newest keep *intact* checkpoints and everything newer than
// the oldest of them; remove what is older. A broken checkpoint (its files do not
// match its manifest) is reported and kept while it is among the newest, and
// goes only once keep intact checkpoints newer than it exist, so that retention
// never leaves fewer intact checkpoints than keep, and never removes the newest
// intact one. Verifying hashes reads every file, so a checkpoint found intact is
// remembered for the life of the trainer (the run folder's lock keeps other
// crdgo processes from changing it).
func (t *Trainer) pruneCheckpoints(dir string, keep int) {
	cps, err := Checkpoints(dir)
	if err != nil {
		t.log.Warn("cannot list checkpoints for retention", zap.String("dir", dir), zap.Error(err))
		return
	}
	if t.intact == nil {
		t.intact = map[string]bool{}
	}
	intact := 0
	cut := len(cps) // cps[cut:] are removed
	for i, c := range cps {
		if !t.intact[c] {
			if _, err := VerifyCheckpoint(c); err != nil {
				if !t.reported[c] {
					t.log.Warn("broken checkpoint: kept until enough newer intact ones exist", zap.String("dir", c), zap.Error(err))
					if t.reported == nil {
						t.reported = map[string]bool{}
					}
					t.reported[c] = true
				}
				continue
			}
			t.intact[c] = true
		}
		intact++
		if intact == keep {
			cut = i + 1
			break
		}
	}
	for _, c := range cps[cut:] {
		if ke := t.cfg.KeepEvery; ke > 0 && t.intact[c] && stepOf(c)%ke == 0 {
			continue // history: every KeepEvery-th step stays
		}
		if ok, err := ownFolder(c); err != nil || !ok {
			t.log.Warn("not removing an old checkpoint folder that holds other files", zap.String("dir", c), zap.Error(err))
			continue
		}
		if err := os.RemoveAll(c); err != nil {
			t.log.Warn("cannot remove old checkpoint", zap.String("dir", c), zap.Error(err))
			continue
		}
		delete(t.intact, c)
	}
}

// alreadyDone is Run's summary when the schedule was complete before it started
// (a finished run resumed): nothing is trained, evaluated, drawn or written, so
// the newest checkpoint and metrics.jsonl stay as they are.
func (t *Trainer) alreadyDone() Summary {
	t.log.Info("the run is already complete: nothing to train", zap.Int("step", t.state.Step),
		zap.Int("epoch", t.state.Epoch), zap.String("checkpoint", t.loadedFrom))
	return Summary{Steps: t.state.Step, Epochs: t.state.Epoch, Checkpoint: t.loadedFrom}
}

// stepOf is the step of a checkpoint folder named step-N (-1 if it is not one).
func stepOf(dir string) int {
	n, err := strconv.Atoi(strings.TrimPrefix(filepath.Base(dir), "step-"))
	if err != nil {
		return -1
	}
	return n
}
