package main

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"

	"github.com/crdgo/crdgo/crd/model"
	"github.com/crdgo/crdgo/crd/tensor"
)

func runModelInfoCmd(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := newModelCmd(&globalFlags{logFormat: "console", logLevel: "error"})
	var stdout bytes.Buffer
	cmd.SetOut(&stdout)
	cmd.SetErr(&bytes.Buffer{})
	cmd.SetArgs(append([]string{"info"}, args...))
	err := cmd.Execute()
	return stdout.String(), err
}

// TestModelInfoFigures checks the five 256×256 figures of the papers (docs/crd.md
// §5.5) at the precision they are printed with.
func TestModelInfoFigures(t *testing.T) {
	cases := []struct {
		args         []string
		params, macs string
	}{
		{[]string{"--arch", "resnet_9blocks"}, "11.378 M", "56.80 G"},
		{[]string{"--arch", "mobile_resnet_9blocks"}, "1.987 M", "18.31 G"},
		{[]string{"--arch", "mobile_resnet_9blocks", "--ngf", "16", "--size", "256"}, "0.137 M", "1.408 G"},
		{[]string{"--arch", "unet_256"}, "54.41", "18.14 G"},
		{[]string{"--arch", "unet_256", "--ngf", "16"}, "3.404 M", "1.219 G"},
	}
	for _, c := range cases {
		out, err := runModelInfoCmd(t, c.args...)
		if err != nil {
			t.Fatalf("model info %v: %v", c.args, err)
		}
		if !strings.Contains(out, "params   "+c.params) || !strings.Contains(out, "MACs     "+c.macs) {
			t.Errorf("model info %v:\n%s\nwant params %s and MACs %s", c.args, out, c.params, c.macs)
		}
	}
}

func TestModelInfoJSON(t *testing.T) {
	out, err := runModelInfoCmd(t, "--arch", "patchgan", "--ndf", "128", "--in-channels", "6", "--norm", "batch",
		"--convention", "v002", "--json", "--layers")
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Params, MACs int64
		Convention   string
		ByConv       map[string]int64 `json:"macs_by_convention"`
		Layers       []struct{ MACs int64 }
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("invalid JSON: %v\n%s", err, out)
	}
	// crd_reference.py macs: PatchGAN D in=6 ndf128 n3 (batch).
	if got.Params != 11042433 || got.MACs != 12572491776 || got.Convention != "v002" ||
		got.ByConv["v003"] != 12575048704 || got.ByConv["conv"] != 12572491776 {
		t.Errorf("model info --json = %+v", got)
	}
	var sum int64
	for _, l := range got.Layers {
		sum += l.MACs
	}
	if sum != got.MACs || len(got.Layers) != 8 {
		t.Errorf("%d layers adding up to %d MACs; want 8 adding up to %d", len(got.Layers), sum, got.MACs)
	}
}

func TestModelInfoErrors(t *testing.T) {
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"--arch", "unet_256", "--size", "64"}, "multiple of 256"},
		{[]string{"--arch", "resnet_9blocks", "--ngf", "0", "--norm", "layer"}, "ngf 0"},
		{[]string{"--arch", "resnet_9blocks", "--ngf", "0", "--norm", "layer"}, `norm "layer"`},
		{[]string{"--convention", "v004"}, "--convention"},
		{[]string{"--arch", "vgg16", "--weights", "/nonexistent.pth"}, "/nonexistent.pth"},
	}
	for _, c := range cases {
		_, err := runModelInfoCmd(t, c.args...)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("model info %v = %v; want an error mentioning %q", c.args, err, c.want)
		}
	}
}

func TestModelInfoWeights(t *testing.T) {
	s := model.DefaultSpec(model.ArchPatchGAN)
	s.NDF = 8
	net, err := model.New(tensor.NewCPU(tensor.PureGo, 1), s)
	if err != nil {
		t.Fatal(err)
	}
	net.Params().Initialize(rand.New(rand.NewPCG(1, 0)))
	path := filepath.Join(t.TempDir(), "d.safetensors")
	if err := net.Params().Save(path, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := runModelInfoCmd(t, "--arch", "patchgan", "--ndf", "8", "--weights", path); err != nil {
		t.Errorf("model info --weights (a matching file): %v", err)
	}
	_, err = runModelInfoCmd(t, "--arch", "patchgan", "--ndf", "16", "--weights", path)
	if err == nil || !strings.Contains(err.Error(), `"model.0.weight": shape [8 3 4 4] in file, model wants (16,3,4,4)`) {
		t.Errorf("model info --weights (ndf 8 file, ndf 16 model) = %v; want the tensor named", err)
	}
}
