package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/crdgo/crdgo/crd/ablation"
)

type reportFlags struct {
	json, plot, metric string
}

func newReportCmd() *cobra.Command {
	f := &reportFlags{}
	cmd := &cobra.Command{
		Use:   "report RUN…",
		Short: "Tables of run folders: mean ± sd over seeds of the final and best metrics",
		Long: `Read run folders (crdgo train's, with or without --nodes, or an ablation's
folder with its <variant>/seed-<k> runs) and print one markdown table per
recipe: for each variant, the mean ± sd over its seeds of the final and the
best value of every metric evaluated (PSNR, SSIM, L1; FID and KID with
Inception weights), the trained network's parameters and MACs, and the wall
time. Runs whose recipes or students differ in one table are refused, naming
the field.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			runs, unfinished, err := ablation.Collect(args)
			if err != nil {
				return err
			}
			for _, d := range unfinished {
				fmt.Fprintf(cmd.ErrOrStderr(), "report: %s has not finished: left out\n", d)
			}
			tables, err := ablation.Build(runs)
			if err != nil {
				return err
			}
			if err := ablation.Markdown(cmd.OutOrStdout(), tables); err != nil {
				return err
			}
			if f.json != "" {
				w, err := os.Create(f.json)
				if err != nil {
					return fmt.Errorf("--json: %w", err)
				}
				if err := ablation.WriteJSON(w, tables); err != nil {
					w.Close()
					return err
				}
				if err := w.Close(); err != nil {
					return fmt.Errorf("--json: %w", err)
				}
			}
			if f.plot != "" {
				return ablation.Plot(f.plot, tables, f.metric)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&f.json, "json", "", "also write the tables as JSON to this file")
	cmd.Flags().StringVar(&f.plot, "plot", "", "also draw the metric over steps, one band per variant, into this PNG file")
	cmd.Flags().StringVar(&f.metric, "metric", "", "the plot's metric: psnr, ssim, l1, fid or kid (default: the first present)")
	return cmd
}
