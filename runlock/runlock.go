// Package runlock gives a folder to one process at a time: a run folder that
// `crdgo train` writes checkpoints and metrics into, a dataset folder that
// `crdgo data synth` fills.
//
// The lock is an exclusive flock(2) on the file LockFile inside the folder. The
// kernel holds it for the open file, so it ends with the process however the
// process ends: a crash or a SIGKILL leaves no stale lock behind, and nothing
// has to be cleaned up by hand. The file itself stays (removing it would let a
// third process lock a fresh file while a second still waits on the old one);
// while the lock is held it names its holder — PID, host, command line and start
// time — so that the process turned away can say who has the folder.
//
// flock is advisory: it keeps crdgo processes apart, not other programs. On NFS
// Linux emulates it with POSIX byte-range locks, which the server arbitrates.
package runlock

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/gofrs/flock"
)

// LockFile is the name of the lock file in a locked folder.
const LockFile = "crdgo.lock"

// ErrHeld is what Acquire's error wraps when another process holds the folder.
var ErrHeld = errors.New("held by another process")

// Holder describes the process that holds a folder.
type Holder struct {
	PID     int       `json:"pid"`
	Host    string    `json:"host"`
	Command string    `json:"command"`
	Started time.Time `json:"started"`
}

func (h Holder) String() string {
	return fmt.Sprintf("pid %d on host %s (%s), since %s", h.PID, h.Host, h.Command, h.Started.Local().Format(time.DateTime))
}

// HeldError is Acquire's error when the folder is taken. Holder is zero when
// the holder had not written its name yet (it has just taken the lock) or its
// record could not be read.
type HeldError struct {
	Dir    string
	Holder Holder
}

func (e *HeldError) Error() string {
	who := "another process (it has not written its name yet)"
	if e.Holder.PID != 0 {
		who = e.Holder.String()
	}
	return fmt.Sprintf("%s is in use by %s: wait for it to end or stop it; the lock is released when that process exits (%s)",
		e.Dir, who, filepath.Join(e.Dir, LockFile))
}

// Is makes errors.Is(err, ErrHeld) true.
func (e *HeldError) Is(target error) bool { return target == ErrHeld }

// Lock is a held folder. Release it when done; exiting releases it too.
type Lock struct {
	fl *flock.Flock
}

// maxCommand bounds the command line written into the lock file.
const maxCommand = 1024

// Acquire creates dir if it is missing and takes its lock, without waiting.
// When another process holds it the error is a *HeldError naming that process.
func Acquire(dir string) (*Lock, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("runlock: %w", err)
	}
	path := filepath.Join(dir, LockFile)
	fl := flock.New(path, flock.SetFlag(os.O_CREATE|os.O_RDWR), flock.SetPermissions(0o644))
	ok, err := fl.TryLock()
	if err != nil {
		return nil, fmt.Errorf("runlock: lock %s: %w", path, err)
	}
	if !ok {
		return nil, &HeldError{Dir: dir, Holder: readHolder(path)}
	}
	host, err := os.Hostname()
	if err != nil {
		host = "unknown"
	}
	cmd := strings.Join(os.Args, " ")
	if len(cmd) > maxCommand {
		cmd = cmd[:maxCommand] + "…"
	}
	h := Holder{PID: os.Getpid(), Host: host, Command: cmd, Started: time.Now().UTC().Truncate(time.Second)}
	if err := writeHolder(path, h); err != nil {
		fl.Unlock()
		return nil, fmt.Errorf("runlock: %s: %w", path, err)
	}
	return &Lock{fl: fl}, nil
}

// Release empties the holder record and releases the lock. It is safe to call
// more than once.
func (l *Lock) Release() error {
	if l == nil || !l.fl.Locked() {
		return nil
	}
	// Empty first, while still held: a process that reads the record after the
	// unlock must not see this one's name.
	trunc := os.Truncate(l.fl.Path(), 0)
	if err := l.fl.Unlock(); err != nil {
		return fmt.Errorf("runlock: unlock %s: %w", l.fl.Path(), err)
	}
	if trunc != nil {
		return fmt.Errorf("runlock: %w", trunc)
	}
	return nil
}

func writeHolder(path string, h Holder) error {
	b, err := json.Marshal(h)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	if err := f.Truncate(0); err != nil {
		f.Close()
		return err
	}
	if _, err := f.WriteAt(append(b, '\n'), 0); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// readHolder reads the holder's record. The holder writes it just after taking
// the lock, so an empty file is read again for a moment before giving up.
func readHolder(path string) Holder {
	deadline := time.Now().Add(500 * time.Millisecond)
	for {
		var h Holder
		if b, err := readSmall(path, 4*maxCommand); err == nil && json.Unmarshal(b, &h) == nil && h.PID != 0 {
			return h
		}
		if time.Now().After(deadline) {
			return Holder{}
		}
		time.Sleep(20 * time.Millisecond) // polled under the deadline above: the holder is another process
	}
}

func readSmall(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, limit))
}
