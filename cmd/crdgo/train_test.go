package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// tinyRecipeYAML is the demo recipe shrunk for a test: 32×32, narrow networks.
const tinyRecipeYAML = `
name: tiny
description: test recipe
mode: pix2pix
seed: 5
data:
  dataset: tinyshapes
  direction: AtoB
  train: train
  val: val
  load_size: 36
  crop_size: 32
  flip: true
  synth: {kind: edges2shapes, size: 32, n: 16, n_test: 4, seed: 3}
teacher: {arch: mobile_resnet_9blocks, ngf: 4, blocks: 2, norm: instance}
student: {arch: mobile_resnet_9blocks, ngf: 2, blocks: 2, norm: instance}
discriminator: {arch: patchgan, ndf: 8, layers: 3, norm: instance}
loss: {gan_mode: hinge, lambda_recon: 100, lambda_gan: 1, crd_patch: 8, style: 1.0e+4, feature: 10, perceptual_factor: 2, student_gan: 1}
schedule: {batch: 4, epochs: 1, decay_epochs: 1, n_dis: 1, save_epoch_freq: 1, save_latest_freq: 3, lr: 2.0e-4, beta1: 0.5, beta2: 0.999}
eval: {paired: true}
`

func runCLI(t *testing.T, args ...string) string {
	t.Helper()
	root := newRootCmd()
	var out, errb bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errb)
	root.SetArgs(append([]string{"--log-level", "error"}, args...))
	if err := root.Execute(); err != nil {
		t.Fatalf("crdgo %s: %v\n%s", strings.Join(args, " "), err, errb.String())
	}
	return out.String()
}

// TestTrainEvalTranslate runs the three user commands end to end on a tiny
// synthetic recipe: train (which generates the data), resume after the end,
// eval with --json, and translate a file.
func TestTrainEvalTranslate(t *testing.T) {
	dir := t.TempDir()
	recipe := filepath.Join(dir, "tiny.yaml")
	if err := os.WriteFile(recipe, []byte(tinyRecipeYAML), 0o644); err != nil {
		t.Fatal(err)
	}
	data, out := filepath.Join(dir, "data"), filepath.Join(dir, "run")
	runCLI(t, "train", "--recipe", recipe, "--data-root", data, "--out", out, "--no-progress", "--threads", "2", "--log-every", "1")
	for _, f := range []string{"metrics.jsonl", "loss.png", "samples/latest.png"} {
		if _, err := os.Stat(filepath.Join(out, f)); err != nil {
			t.Errorf("train wrote no %s: %v", f, err)
		}
	}
	// A second run without --resume refuses to overwrite; with it, it resumes
	// at the end and finishes at once.
	root := newRootCmd()
	root.SetOut(&bytes.Buffer{})
	root.SetErr(&bytes.Buffer{})
	root.SetArgs([]string{"--log-level", "error", "train", "--recipe", recipe, "--data-root", data, "--out", out, "--no-progress"})
	if err := root.Execute(); err == nil || !strings.Contains(err.Error(), "--resume") {
		t.Errorf("second train without --resume: err = %v; want a hint to pass --resume", err)
	}
	runCLI(t, "train", "--recipe", recipe, "--data-root", data, "--out", out, "--no-progress", "--resume")

	var ev struct {
		Recipe string
		Eval   struct {
			Images           int
			Teacher, Student map[string]float64
		}
	}
	if err := json.Unmarshal([]byte(runCLI(t, "eval", "--checkpoint", out, "--data-root", data, "--json")), &ev); err != nil {
		t.Fatal(err)
	}
	if ev.Recipe != "tiny" || ev.Eval.Images != 4 || ev.Eval.Student["psnr"] <= 0 || ev.Eval.Teacher["ssim"] == 0 {
		t.Errorf("eval = %+v; want PSNR/SSIM of teacher and student on 4 images", ev)
	}
	if _, ok := ev.Eval.Teacher["psnr_teacher"]; ok || ev.Eval.Student["psnr_teacher"] <= 0 || ev.Eval.Student["ssim_teacher"] == 0 {
		t.Errorf("eval = %+v; want the student's PSNR/SSIM against the teacher, and the teacher without", ev)
	}
	if table := runCLI(t, "eval", "--checkpoint", out, "--data-root", data); !strings.Contains(table, "PSNR to teacher dB") {
		t.Errorf("eval printed %q; want a PSNR to teacher column", table)
	}

	in := filepath.Join(data, "tinyshapes", "val")
	ents, err := os.ReadDir(in)
	if err != nil || len(ents) == 0 {
		t.Fatalf("no val images: %v", err)
	}
	dst := filepath.Join(dir, "out.png")
	got := runCLI(t, "translate", "--checkpoint", out, filepath.Join(in, ents[0].Name()), dst)
	if !strings.Contains(got, "ms/image") {
		t.Errorf("translate printed %q; want a latency line", got)
	}
	if st, err := os.Stat(dst); err != nil || st.Size() == 0 {
		t.Errorf("translate wrote no image: %v", err)
	}
}
