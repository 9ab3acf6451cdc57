package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

// Comparison is a side-by-side benchmark: for every configuration, crdgo's
// side and the baselines' sides run in fresh processes, alternately, Repeats
// times each, and one table row compares their median step times and peak
// memory.
type Comparison struct {
	// Configs are the configurations, in row order.
	Configs []Config
	// Repeats is the number of processes per side and configuration.
	Repeats int
	// Timeout bounds one process.
	Timeout time.Duration
	// Sides returns the sides of a configuration, crdgo's first; every
	// configuration has the same sides in the same order.
	Sides func(c Config) []Side
	// Baselines name the sides after crdgo's for the header: Name for the
	// times ("PyTorch naive ms/step"), Short for the ratio ("crdgo/naive").
	Baselines []Baseline
}

// Config is one configuration of a side-by-side benchmark: a label for its
// row and whatever the sides need.
type Config struct {
	Label       string
	Size, Batch int
}

// Baseline names a side that crdgo is compared with.
type Baseline struct{ Name, Short string }

// Run times every configuration and writes the Markdown table to w, a row
// as each configuration finishes.
func (c Comparison) Run(ctx context.Context, w io.Writer) error {
	head := "| config | crdgo ms/step |"
	sep := "|---|---|"
	for _, b := range c.Baselines {
		head += fmt.Sprintf(" %s ms/step | ratio crdgo/%s |", b.Name, b.Short)
		sep += "---|---|"
	}
	head += " crdgo peak RSS |"
	sep += "---|"
	for _, b := range c.Baselines {
		head += fmt.Sprintf(" %s peak RSS |", b.Name)
		sep += "---|"
	}
	fmt.Fprintln(w, head)
	fmt.Fprintln(w, sep)
	for _, cfg := range c.Configs {
		res, err := Alternate(ctx, c.Sides(cfg), c.Repeats, c.Timeout)
		if err != nil {
			return err
		}
		gr := res[0]
		row := fmt.Sprintf("| %s | %.1f |", cfg.Label, gr.Median())
		for i := range c.Baselines {
			if i+1 >= len(res) {
				row += " – | – |"
				continue
			}
			tr := res[i+1]
			row += fmt.Sprintf(" %.1f | %.2f |", tr.Median(), gr.Median()/tr.Median())
		}
		row += " " + MiB(gr.PeakRSSBytes) + " |"
		for i := range c.Baselines {
			if i+1 >= len(res) {
				row += " – |"
				continue
			}
			row += " " + MiB(res[i+1].PeakRSSBytes) + " |"
		}
		fmt.Fprintln(w, row)
	}
	return nil
}

// MiB formats a byte count in MiB.
func MiB(b int64) string { return fmt.Sprintf("%.0f MiB", float64(b)/(1<<20)) }

// ParseConfigs reads a comma-separated list of SIZExBATCH configurations.
func ParseConfigs(s string) ([]Config, error) {
	var out []Config
	for _, c := range strings.Split(s, ",") {
		var size, batch int
		c = strings.TrimSpace(c)
		if n, err := fmt.Sscanf(c, "%dx%d", &size, &batch); err != nil || n != 2 || fmt.Sprintf("%dx%d", size, batch) != c ||
			size < 16 || size%4 != 0 || batch < 1 || size > 1024 || batch > 64 {
			return nil, fmt.Errorf("--configs: %q: want SIZExBATCH with SIZE a multiple of 4 in [16,1024] and BATCH in [1,64]", c)
		}
		out = append(out, Config{Label: fmt.Sprintf("%d×%d b%d", size, size, batch), Size: size, Batch: batch})
	}
	return out, nil
}

// TorchScript checks that python can import torch and writes a script into
// a temporary folder; the caller runs cleanup when done.
func TorchScript(ctx context.Context, python string, write func(dir string) (string, error)) (path string, cleanup func(), err error) {
	if err := CheckPython(ctx, python); err != nil {
		return "", nil, err
	}
	dir, err := os.MkdirTemp("", "crdgo-bench-")
	if err != nil {
		return "", nil, err
	}
	cleanup = func() { os.RemoveAll(dir) }
	if path, err = write(dir); err != nil {
		cleanup()
		return "", nil, err
	}
	return path, cleanup, nil
}
