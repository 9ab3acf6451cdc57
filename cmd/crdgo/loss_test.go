package main

import (
	"bytes"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/crdgo/crdgo/crd"
)

// exampleImage is docs/crd.md §1.5's x[c,h,w] = ((a·idx + b) mod m)/q − 1, idx = 16c + 4h + w.
func exampleImage(a, b, m, q int) []float64 {
	x := make([]float64, 48)
	for idx := range x {
		x[idx] = float64((a*idx+b)%m)/float64(q) - 1
	}
	return x
}

func runLoss(t *testing.T, input []byte) (crd.LossReport, []byte, error) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "in.json")
	if err := os.WriteFile(path, input, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := newLossCmd(&globalFlags{logFormat: "console", logLevel: "error"})
	var stdout bytes.Buffer
	cmd.SetOut(&stdout)
	cmd.SetErr(&bytes.Buffer{})
	cmd.SetArgs([]string{path})
	if err := cmd.Execute(); err != nil {
		return crd.LossReport{}, nil, err
	}
	var out crd.LossReport
	dec := json.NewDecoder(bytes.NewReader(stdout.Bytes()))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&out); err != nil {
		t.Fatalf("crdgo loss printed invalid JSON: %v\n%s", err, stdout.String())
	}
	return out, stdout.Bytes(), nil
}

// TestLossWorkedExample1 runs the command on docs/crd.md §1.5 example 1 and checks every printed
// relation, the totals and the gradient against the document's values.
func TestLossWorkedExample1(t *testing.T) {
	in, err := json.Marshal(map[string]any{
		"shape_NCHW": []int{1, 3, 4, 4}, "patch_size": 2,
		"teacher": exampleImage(7, 0, 11, 5), "student": exampleImage(5, 3, 13, 6),
	})
	if err != nil {
		t.Fatal(err)
	}
	out, raw, err := runLoss(t, in)
	if err != nil {
		t.Fatalf("crdgo loss: %v", err)
	}
	// The inputs are rounded to float32 (≈ 1e-8 relative); the document's values are float64.
	const tol = 1e-6
	check := func(what string, got, want float64) {
		t.Helper()
		if math.Abs(got-want) > tol*math.Abs(want) {
			t.Errorf("%s = %.12g; want %.12g", what, got, want)
		}
	}
	if len(out.PerImage) != 1 {
		t.Fatalf("per_image has %d entries; want 1", len(out.PerImage))
	}
	im := out.PerImage[0]
	for _, c := range []struct {
		set                string
		got                crd.RelationJSON
		dist, angle, total float64
	}{
		{"row", im.Row, 0.00461785871231, 0.00244745754243, 0.00951277379716},
		{"column", im.Column, 0.00109970233478, 0.00076590055133, 0.00263150343744},
		{"patch", im.Patch, 0.0263062410054, 0.0225355646993, 0.0713773704041},
	} {
		check(c.set+".distance", c.got.Distance, c.dist)
		check(c.set+".angle", c.got.Angle, c.angle)
		check(c.set+".rkd", c.got.RKD, c.total)
	}
	if out.CycleGANTotal == nil || out.Pix2PixTotalOfficial == nil {
		t.Fatalf("cyclegan_total or pix2pix_total_official missing at N = 1, C = 3:\n%s", raw)
	}
	check("cyclegan_total", *out.CycleGANTotal, 2.08804119097)
	check("pix2pix_total", out.Pix2PixTotal, 2.5*(0.00951277379716+0.00263150343744+0.0713773704041))
	// Official at B = 1: rows and columns, plus the channels of patch 0 (§1.5 example 2, k = 0).
	check("pix2pix_total_official", *out.Pix2PixTotalOfficial, 2.5*(0.00951277379716+0.00263150343744+0.00222581972736))

	want := []float64{ // §1.5: gradient of 25·(rows + cols + patches), 6 decimals
		-0.088011, -0.339116, -0.076334, -0.182767, -0.280595, -0.150371, -0.139105, +0.326755, +0.152951, +0.221295, +0.152974, +0.255360, +0.036226, -0.416557, +0.177243, +0.350053,
		-0.307838, -0.339116, -0.076334, -0.226171, +0.324546, -0.371299, +0.488812, -0.156913, +0.141942, +0.221295, +0.152974, +0.322586, -0.752900, +0.191583, -0.016076, +0.402911,
		-0.351242, -0.046152, -0.076334, +0.398904, +1.202769, -0.321008, +0.454337, -0.165252, +0.192234, -0.469132, +0.265852, -0.057187, -0.139420, +0.180574, -1.471852, +0.402911,
	}
	if len(out.GradCycleGANTotal) != len(want) {
		t.Fatalf("grad_cyclegan_total has %d entries; want %d", len(out.GradCycleGANTotal), len(want))
	}
	for q, w := range want {
		if d := math.Abs(out.GradCycleGANTotal[q] - w); d > 5e-7+1e-7*math.Abs(w) {
			t.Errorf("grad_cyclegan_total[%d] = %.8f; want %.6f", q, out.GradCycleGANTotal[q], w)
		}
	}
}

// TestLossBatchKeys checks which keys appear for N > 1 and C ≠ 3.
func TestLossBatchKeys(t *testing.T) {
	x := make([]float64, 2*2*4*6)
	y := make([]float64, len(x))
	for q := range x {
		x[q] = math.Sin(float64(q))
		y[q] = math.Cos(float64(3 * q))
	}
	in, _ := json.Marshal(map[string]any{"shape_NCHW": []int{2, 2, 4, 6}, "patch_size": 3, "teacher": y, "student": x})
	out, raw, err := runLoss(t, in)
	if err != nil {
		t.Fatalf("crdgo loss: %v", err)
	}
	if len(out.PerImage) != 2 || out.CycleGANTotal != nil || out.GradCycleGANTotal != nil || out.Pix2PixTotalOfficial != nil {
		t.Errorf("N = 2, C = 2: want 2 per_image entries, pix2pix_total only; got\n%s", raw)
	}
	for _, key := range []string{"cyclegan_total", "grad_cyclegan_total", "pix2pix_total_official"} {
		if bytes.Contains(raw, []byte(`"`+key+`"`)) {
			t.Errorf("N = 2, C = 2: output has %q:\n%s", key, raw)
		}
	}
	var sum float64
	for _, it := range out.PerImage {
		sum += it.Row.RKD + it.Column.RKD + it.Patch.RKD
	}
	if math.Abs(out.Pix2PixTotal-2.5*sum) > 1e-12*math.Abs(out.Pix2PixTotal) {
		t.Errorf("pix2pix_total = %.15g; want 2.5·Σ per_image = %.15g", out.Pix2PixTotal, 2.5*sum)
	}
}

// TestLossRejects checks that bad input is an error naming the problem, never a panic.
func TestLossRejects(t *testing.T) {
	ok := func(n int) string { return strings.TrimSuffix(strings.Repeat("0.5,", n), ",") }
	for _, c := range []struct {
		name, input, want string
	}{
		{"not JSON", `{"shape_NCHW": [1,3,4,4],`, "unexpected EOF"},
		{"trailing data", `{"shape_NCHW":[1,1,4,4],"patch_size":2,"teacher":[` + ok(16) + `],"student":[` + ok(16) + `]} {}`, "data after"},
		{"unknown key", `{"shape":[1,1,4,4]}`, `unknown field "shape"`},
		{"missing everything", `{}`, `"shape_NCHW" is missing`},
		{"missing patch", `{"shape_NCHW":[1,1,4,4],"teacher":[],"student":[]}`, `"patch_size" is missing`},
		{"three sizes", `{"shape_NCHW":[1,4,4],"patch_size":2}`, "want 4 sizes"},
		{"zero size", `{"shape_NCHW":[1,0,4,4],"patch_size":2}`, "≥ 1"},
		{"negative size", `{"shape_NCHW":[-1,3,4,4],"patch_size":2}`, "≥ 1"},
		{"huge size", `{"shape_NCHW":[1000000000,1000000000,4,4],"patch_size":2}`, "too large"},
		{"one row", `{"shape_NCHW":[1,3,1,4],"patch_size":1}`, "H ≥ 2"},
		{"patch too big", `{"shape_NCHW":[1,3,4,4],"patch_size":5}`, "1 ≤ P ≤ min(H, W)"},
		{"one patch", `{"shape_NCHW":[1,3,4,6],"patch_size":4}`, "gives 1 whole patches"},
		{"short teacher", `{"shape_NCHW":[1,1,4,4],"patch_size":2,"teacher":[` + ok(15) + `],"student":[` + ok(16) + `]}`, `"teacher" has 15 numbers; shape_NCHW wants N·C·H·W = 16`},
		{"missing student", `{"shape_NCHW":[1,1,4,4],"patch_size":2,"teacher":[` + ok(16) + `]}`, `"student" is missing`},
		{"string value", `{"shape_NCHW":[1,1,4,4],"patch_size":2,"teacher":["a"],"student":[]}`, "cannot unmarshal string"},
		{"beyond float64", `{"shape_NCHW":[1,1,4,4],"patch_size":2,"teacher":[1e400],"student":[]}`, "cannot unmarshal number 1e400"},
		{"beyond float32", `{"shape_NCHW":[1,1,4,4],"patch_size":2,"teacher":[` + ok(15) + `,1e39],"student":[` + ok(16) + `]}`, `"teacher"[15] = 1e+39: outside the float32 range`},
		{"fractional size", `{"shape_NCHW":[1,1,4.5,4],"patch_size":2}`, "cannot unmarshal number 4.5"},
	} {
		_, _, err := runLoss(t, []byte(c.input))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v; want one containing %q", c.name, err, c.want)
		} else if !strings.Contains(err.Error(), "in.json") {
			t.Errorf("%s: error %q does not name the file", c.name, err)
		}
	}
}

func TestLossMissingAndEmptyFiles(t *testing.T) {
	_, err := runLossMissing(t)
	if err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Errorf("missing file: error %v; want \"no such file\"", err)
	}
	_, _, err = runLoss(t, nil)
	if err == nil || !strings.Contains(err.Error(), "in.json: empty file") {
		t.Errorf("empty file: error %v; want one naming the file and saying it is empty", err)
	}
}

func runLossMissing(t *testing.T) (crd.LossReport, error) {
	cmd := newLossCmd(&globalFlags{logFormat: "console", logLevel: "error"})
	cmd.SetOut(&bytes.Buffer{})
	cmd.SetErr(&bytes.Buffer{})
	cmd.SetArgs([]string{filepath.Join(t.TempDir(), "absent.json")})
	return crd.LossReport{}, cmd.Execute()
}
