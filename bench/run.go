package bench

import (
	"bufio"
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/cpu"
)

//go:embed torch_step.py
var torchStepPy []byte

// Result is what one side of a benchmark reports for one configuration.
type Result struct {
	Impl         string    `json:"impl"`
	Threads      int       `json:"threads"`
	MS           []float64 `json:"ms"`
	PeakRSSBytes int64     `json:"peak_rss_bytes"`
	LossD        float64   `json:"loss_d"`
	LossG        float64   `json:"loss_g"`
}

// Median is the median step time in ms.
func (r Result) Median() float64 {
	s := slices.Clone(r.MS)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// PeakRSS reads this process's peak resident set size (VmHWM) in bytes.
func PeakRSS() (int64, error) {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			return kb * 1024, err
		}
	}
	return 0, fmt.Errorf("bench: no VmHWM in /proc/self/status")
}

// Machine describes the CPU the benchmark ran on.
func Machine() string {
	model := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "model name"); ok {
				model = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	return fmt.Sprintf("%s, %d logical CPUs, %s/%s", model, runtime.NumCPU(), runtime.GOOS, runtime.GOARCH)
}

// Side is one implementation of a benchmark: a command that prints one Result
// as a JSON line on stdout.
type Side struct {
	Name string
	Cmd  []string
	Env  []string
}

// RunSide runs the side's command and decodes its Result.
func RunSide(ctx context.Context, s Side, timeout time.Duration) (Result, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, s.Cmd[0], s.Cmd[1:]...)
	cmd.Env = append(os.Environ(), s.Env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return Result{}, fmt.Errorf("bench: %s: %s: %w\n%s", s.Name, strings.Join(s.Cmd, " "), err, tail(errb.String(), 2000))
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	var r Result
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &r); err != nil {
		return Result{}, fmt.Errorf("bench: %s: decode result %q: %w", s.Name, tail(out.String(), 300), err)
	}
	if len(r.MS) == 0 {
		return Result{}, fmt.Errorf("bench: %s: no timings", s.Name)
	}
	return r, nil
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

// WriteTorchScript writes the embedded PyTorch step script into dir and
// returns its path, so the benchmark runs from any working directory.
func WriteTorchScript(dir string) (string, error) {
	p := filepath.Join(dir, "torch_step.py")
	return p, os.WriteFile(p, torchStepPy, 0o644)
}

// CheckPython reports whether python can import torch, with the reason if not.
func CheckPython(ctx context.Context, python string) error {
	out, err := exec.CommandContext(ctx, python, "-c", "import torch; print(torch.__version__)").CombinedOutput()
	if err != nil {
		return fmt.Errorf("bench: %s cannot import torch (install Debian's python3-torch): %v: %s", python, err, tail(string(out), 300))
	}
	return nil
}

// Alternate runs every side's command repeats times, interleaved (A B A B …)
// so that a slow spell of a shared machine falls on both sides alike, and
// pools each side's step times: the Result's MS holds all timed steps of all
// runs and PeakRSSBytes the largest peak.
func Alternate(ctx context.Context, sides []Side, repeats int, timeout time.Duration) ([]Result, error) {
	out := make([]Result, len(sides))
	for r := 0; r < max(1, repeats); r++ {
		for i, s := range sides {
			res, err := RunSide(ctx, s, timeout)
			if err != nil {
				return nil, err
			}
			if r == 0 {
				out[i] = res
				continue
			}
			out[i].MS = append(out[i].MS, res.MS...)
			out[i].PeakRSSBytes = max(out[i].PeakRSSBytes, res.PeakRSSBytes)
		}
	}
	return out, nil
}

// ThreadEnv pins every threading library of both sides to n threads.
func ThreadEnv(n int) []string {
	s := strconv.Itoa(n)
	return []string{"OMP_NUM_THREADS=" + s, "OPENBLAS_NUM_THREADS=" + s, "MKL_NUM_THREADS=" + s, "GOMAXPROCS=" + s}
}

// OpenBLASCoretype resolves the --openblas-coretype flag of the benchmarks:
// "auto" picks SkylakeX (the AVX-512 kernels) when the CPU has AVX-512
// F/BW/DQ/VL and otherwise keeps the environment's choice; "keep" keeps the
// environment's; anything else is the name to set. It returns the value to
// set (or "") and a line for the table's header.
func OpenBLASCoretype(flag string) (set, says string) {
	env := os.Getenv("OPENBLAS_CORETYPE")
	switch flag {
	case "keep":
		if env == "" {
			return "", "OpenBLAS kernels: the library's own choice"
		}
		return "", "OpenBLAS kernels: OPENBLAS_CORETYPE=" + env + " (environment)"
	case "auto":
		if cpu.X86.HasAVX512F && cpu.X86.HasAVX512BW && cpu.X86.HasAVX512DQ && cpu.X86.HasAVX512VL {
			return "SkylakeX", "OpenBLAS kernels: OPENBLAS_CORETYPE=SkylakeX (AVX-512, set for both sides)"
		}
		return OpenBLASCoretype("keep")
	}
	return flag, "OpenBLAS kernels: OPENBLAS_CORETYPE=" + flag + " (set for both sides)"
}
