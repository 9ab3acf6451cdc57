package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"strings"
	"unicode/utf8"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/crdgo/crdgo/crd/model"
	"github.com/crdgo/crdgo/crd/tensor"
)

func newModelCmd(g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "model",
		Short: "Inspect the networks: parameters, MACs, weight files",
	}
	cmd.AddCommand(newModelInfoCmd(g))
	return cmd
}

type modelInfoFlags struct {
	arch, norm, convention, weights string
	ngf, ndf, inC, outC             int
	blocks, downs, nLayers, size    int
	layers, json                    bool
}

func newModelInfoCmd(g *globalFlags) *cobra.Command {
	f := &modelInfoFlags{}
	cmd := &cobra.Command{
		Use:   "info",
		Short: "Print a network's parameter count and MACs (as GAN Compression, OMGD and CRD count them)",
		Long: `Prints the parameters and multiply-accumulates of one forward pass of a
network on a 1×C×size×size input, counted as torchprofile's profile_macs counts
them (the convention of the GAN Compression, OMGD and CRD papers): a
convolution prod(output)·C_in/groups·k², a transposed convolution
prod(output)·C_in·k², batch norm prod(output) and instance norm 0 (torchprofile
≥ 0.0.3, --convention v003; v002 counts instance norms and not batch norms;
conv counts convolutions only). Nothing is computed: the forward pass runs on
a shape-only backend, so any size is instantaneous.

Defaults are the recipes': ngf and ndf 64, 9 residual blocks, 8 U-Net
down-samplings (256² images), 3 PatchGAN layers, norm batch for unet_256 and
instance otherwise. --weights checks that a file (safetensors or PyTorch
.pth) has every tensor of the network with its shape, without allocating the
network.`,
		Example: `  crdgo model info --arch mobile_resnet_9blocks --ngf 16
  crdgo model info --arch unet_256 --size 64 --downs 6 --layers
  crdgo model info --arch patchgan --ndf 128 --in-channels 6 --json
  crdgo model info --arch vgg16 --weights ~/.cache/torch/hub/checkpoints/vgg16-397923af.pth`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := g.newLogger()
			if err != nil {
				return err
			}
			defer func() { _ = log.Sync() }()
			return runModelInfo(cmd, f, log)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.arch, "arch", model.ArchMobileResnet, "architecture: "+strings.Join(model.Archs(), ", "))
	fl.IntVar(&f.ngf, "ngf", 64, "generator base width")
	fl.IntVar(&f.ndf, "ndf", 64, "discriminator base width")
	fl.IntVar(&f.inC, "in-channels", 3, "input channels (6 for a conditional pix2pix discriminator)")
	fl.IntVar(&f.outC, "out-channels", 3, "generator output channels")
	fl.StringVar(&f.norm, "norm", "", "instance or batch (default: batch for unet_256, instance otherwise)")
	fl.IntVar(&f.blocks, "blocks", 9, "residual blocks of the ResNet generators")
	fl.IntVar(&f.downs, "downs", 8, "U-Net down-samplings (num_downs): the input side must be a multiple of 2^downs")
	fl.IntVar(&f.nLayers, "n-layers", 3, "PatchGAN layers (n_layers_D)")
	fl.IntVar(&f.size, "size", 256, "input height and width")
	fl.StringVar(&f.convention, "convention", string(model.MACsV003), "MAC counting convention: v003 (torchprofile ≥ 0.0.3), v002 (≤ 0.0.2) or conv")
	fl.BoolVar(&f.layers, "layers", false, "print a per-layer table")
	fl.BoolVar(&f.json, "json", false, "print JSON")
	fl.StringVar(&f.weights, "weights", "", "check that this weight file loads into the network")
	return cmd
}

// spec fills the arch's defaults, then the flags.
func (f *modelInfoFlags) spec() model.Spec {
	s := model.DefaultSpec(f.arch)
	s.NGF, s.NDF, s.InC, s.OutC = f.ngf, f.ndf, f.inC, f.outC
	s.Blocks, s.Downs, s.Layers = f.blocks, f.downs, f.nLayers
	if f.norm != "" {
		s.Norm = model.Norm(f.norm)
	}
	if s.Arch == model.ArchVGG16 || s.Arch == model.ArchInception {
		s.InC = 0 // fixed at 3; a flag cannot change it
	}
	return s
}

func runModelInfo(cmd *cobra.Command, f *modelInfoFlags, log *zap.Logger) error {
	conv, err := model.ParseConvention(f.convention)
	if err != nil {
		return fmt.Errorf("--convention: %w", err)
	}
	s := f.spec()
	p, err := model.Count(s, f.size, f.size)
	if err != nil {
		return err
	}
	if f.weights != "" {
		if err := model.CheckWeights(s, f.weights); err != nil {
			return err
		}
		log.Info("weights match the network", zap.String("file", f.weights), zap.String("arch", s.Arch))
	}
	w := cmd.OutOrStdout()
	if f.json {
		return writeModelJSON(w, p, conv, f.layers)
	}
	return writeModelText(w, p, conv, f.layers)
}

func conventionName(c model.Convention) string {
	switch c {
	case model.MACsV003:
		return "torchprofile ≥ 0.0.3"
	case model.MACsV002:
		return "torchprofile ≤ 0.0.2"
	}
	return "convolutions only"
}

// sig4 formats v with four significant digits, keeping trailing zeros
// (56.80, 18.31, 1.408), as the papers print MACs.
func sig4(v float64) string {
	if v == 0 {
		return "0.000"
	}
	d := 3 - int(math.Floor(math.Log10(math.Abs(v))))
	return fmt.Sprintf("%.*f", max(d, 0), v)
}

func shapeText(s tensor.Shape) string {
	parts := make([]string, len(s))
	for i, d := range s {
		parts[i] = fmt.Sprint(d)
	}
	return strings.Join(parts, "×")
}

func writeModelText(w io.Writer, p *model.Profile, conv model.Convention, layers bool) error {
	macs := p.MACs(conv)
	fmt.Fprintf(w, "arch     %s\n", p.Spec)
	fmt.Fprintf(w, "input    %s\n", shapeText(p.Input))
	fmt.Fprintf(w, "params   %.3f M  (%d)\n", float64(p.Params)/1e6, p.Params)
	fmt.Fprintf(w, "MACs     %s G  (%d, %s)\n", sig4(float64(macs)/1e9), macs, conventionName(conv))
	if !layers {
		return nil
	}
	rows := [][]string{{"layer", "op", "output", "params", "MACs", "%"}}
	for _, o := range p.Ops {
		m := o.MACs(conv)
		pct := 0.0
		if macs > 0 {
			pct = 100 * float64(m) / float64(macs)
		}
		op := string(o.Kind)
		if o.Detail != "" {
			op += " " + o.Detail
		}
		rows = append(rows, []string{o.Layer, op, shapeText(o.Out), fmt.Sprint(o.Params), fmt.Sprint(m), fmt.Sprintf("%.2f", pct)})
	}
	width := make([]int, len(rows[0]))
	for _, r := range rows {
		for c, v := range r {
			width[c] = max(width[c], utf8.RuneCountInString(v))
		}
	}
	fmt.Fprintln(w)
	for _, r := range rows {
		var b strings.Builder
		for c, v := range r {
			pad := strings.Repeat(" ", width[c]-utf8.RuneCountInString(v))
			if c < 2 { // names left, numbers right
				b.WriteString(v + pad)
			} else {
				b.WriteString(pad + v)
			}
			if c < len(r)-1 {
				b.WriteString("  ")
			}
		}
		if _, err := fmt.Fprintln(w, b.String()); err != nil {
			return err
		}
	}
	return nil
}

type modelJSON struct {
	Arch       string           `json:"arch"`
	Spec       specJSON         `json:"spec"`
	Input      []int            `json:"input"`
	Params     int64            `json:"params"`
	MACs       int64            `json:"macs"`
	Convention string           `json:"convention"`
	ByConv     map[string]int64 `json:"macs_by_convention"`
	Layers     []layerJSON      `json:"layers,omitempty"`
}

type specJSON struct {
	NGF    int    `json:"ngf,omitempty"`
	NDF    int    `json:"ndf,omitempty"`
	InC    int    `json:"in_channels,omitempty"`
	OutC   int    `json:"out_channels,omitempty"`
	Blocks int    `json:"blocks,omitempty"`
	Downs  int    `json:"downs,omitempty"`
	Layers int    `json:"n_layers,omitempty"`
	Norm   string `json:"norm,omitempty"`
}

type layerJSON struct {
	Layer  string `json:"layer"`
	Op     string `json:"op"`
	Detail string `json:"detail,omitempty"`
	Output []int  `json:"output"`
	Params int64  `json:"params"`
	MACs   int64  `json:"macs"`
}

func writeModelJSON(w io.Writer, p *model.Profile, conv model.Convention, layers bool) error {
	s := p.Spec
	out := modelJSON{
		Arch:       s.Arch,
		Input:      []int(p.Input),
		Params:     p.Params,
		MACs:       p.MACs(conv),
		Convention: string(conv),
		ByConv:     map[string]int64{},
	}
	// Only the fields the architecture reads.
	switch s.Arch {
	case model.ArchResnet, model.ArchMobileResnet:
		out.Spec = specJSON{NGF: s.NGF, InC: s.InC, OutC: s.OutC, Blocks: s.Blocks, Norm: string(s.Norm)}
	case model.ArchUnet:
		out.Spec = specJSON{NGF: s.NGF, InC: s.InC, OutC: s.OutC, Downs: s.Downs, Norm: string(s.Norm)}
	case model.ArchPatchGAN:
		out.Spec = specJSON{NDF: s.NDF, InC: s.InC, Layers: s.Layers, Norm: string(s.Norm)}
	}
	for _, c := range model.Conventions() {
		out.ByConv[string(c)] = p.MACs(c)
	}
	if layers {
		for _, o := range p.Ops {
			out.Layers = append(out.Layers, layerJSON{Layer: o.Layer, Op: string(o.Kind), Detail: o.Detail,
				Output: []int(o.Out), Params: o.Params, MACs: o.MACs(conv)})
		}
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}
