package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/crdgo/crdgo/crd"
)

// maxLossInput bounds the JSON file `crdgo loss` reads: its time, since crd.ReadLossFile
// stops at the first number past the shape's N·C·H·W and holds nothing else.
const maxLossInput = 256 << 20

func newLossCmd(g *globalFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "loss FILE.json",
		Short: "Evaluate the CRD loss and its gradient on one teacher/student batch (for cross-checking)",
		Long: `loss reads a teacher and a student output batch and prints the CRD relations
(docs/crd.md §1) as JSON, for cross-checking other implementations. FILE "-" reads stdin.

Input:
  {"shape_NCHW": [N, C, H, W], "patch_size": P,
   "teacher": [N·C·H·W numbers], "student": [N·C·H·W numbers]}
teacher and student are flat, row-major NCHW. H and W need not be multiples of P:
like F.unfold, the patch set drops the rows and columns past the last whole patch.
Each slice set needs at least 2 vectors (H ≥ 2, W ≥ 2, two whole patches).

Output:
  {"per_image": [{"row": {"distance": L_dist, "angle": L_angle, "rkd": RKD},
                  "column": {…}, "patch": {…}}, …],
   "cyclegan_total": 25·(row + column + patch)           (N = 1 only),
   "pix2pix_total": 2.5·Σ_b (row + column + patch),
   "pix2pix_total_official": the released code's pix2pix term (C = 3 only),
   "grad_cyclegan_total": ∂cyclegan_total/∂student, flat NCHW (N = 1 only)}
per_image's patch terms relate each image's own patches (compat intended). The
CycleGAN term is defined for batch 1 (docs/crd.md §9 D11); for N > 1 crdgo trains on
25·Σ_b of the per-image terms. The inputs are rounded to float32, the engine's
type (a float64 reference sees ~1e-8 relative differences from that alone); the
loss is computed in float64, and the gradient entries are the float32 values the
training op produces, printed exactly. The file is read as a stream, at most
256 MiB: put "shape_NCHW" first and a tensor with too many numbers is refused at
its first extra number.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			log, err := g.newLogger()
			if err != nil {
				return err
			}
			defer log.Sync()
			name := args[0]
			var r io.Reader = cmd.InOrStdin()
			if name != "-" {
				f, err := os.Open(name)
				if err != nil {
					return fmt.Errorf("loss: %w", err)
				}
				defer f.Close()
				r = f
			}
			in, err := crd.ReadLossFile(name, r, maxLossInput)
			if err != nil {
				return err
			}
			start := time.Now()
			out, err := in.Report(name)
			if err != nil {
				return err
			}
			log.Debug("loss evaluated", zap.String("file", name), zap.Ints("shape_NCHW", in.Shape[:]),
				zap.Int("patch_size", in.Patch), zap.Duration("elapsed", time.Since(start)))
			enc := json.NewEncoder(cmd.OutOrStdout())
			if err := enc.Encode(out); err != nil {
				return fmt.Errorf("loss: %s: writing the result: %w", name, err)
			}
			return nil
		},
	}
}
