package crd

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// The Python oracle: testdata/crd_reference.py is a copy of the float64 reference that
// produced docs/crd.md §1.5 (pure Python, its own slicing, the reference's expansion-form pdist
// and explicit unit vectors). testdata/oracle.py runs it on cases written here.

const python = "/usr/bin/python3"

type oracleResult struct {
	RKD, Dist, Angle, MuS, MuT, Total float64
	Grad                              json.RawMessage
}

func (r *oracleResult) UnmarshalJSON(b []byte) error {
	var m struct {
		RKD   float64         `json:"rkd"`
		Dist  float64         `json:"dist"`
		Angle float64         `json:"angle"`
		MuS   float64         `json:"mu_s"`
		MuT   float64         `json:"mu_t"`
		Total float64         `json:"total"`
		Grad  json.RawMessage `json:"grad"`
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return err
	}
	*r = oracleResult{m.RKD, m.Dist, m.Angle, m.MuS, m.MuT, m.Total, m.Grad}
	return nil
}

func runOracle(t *testing.T, cases []map[string]any) []oracleResult {
	t.Helper()
	if _, err := os.Stat(python); err != nil {
		skipWithoutPython(t, "no %s: the Python oracle cannot run (%v)", python, err)
	}
	in, err := json.Marshal(map[string]any{"cases": cases})
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(python, "testdata/oracle.py")
	cmd.Stdin = bytes.NewReader(in)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s testdata/oracle.py: %v\n%s", python, err, stderr.String())
	}
	var res struct{ Results []oracleResult }
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("oracle output: %v", err)
	}
	if len(res.Results) != len(cases) {
		t.Fatalf("oracle returned %d results for %d cases", len(res.Results), len(cases))
	}
	return res.Results
}

// flatten reads a nested JSON array of numbers into a flat slice, row-major.
func flatten(t *testing.T, raw json.RawMessage) []float64 {
	t.Helper()
	var out []float64
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case []any:
			for _, e := range v {
				walk(e)
			}
		case float64:
			out = append(out, v)
		default:
			t.Fatalf("oracle gradient: unexpected %T", v)
		}
	}
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatal(err)
	}
	walk(v)
	return out
}

// nested returns a C×H×W float32 image as [C][H][W] float64 lists.
func nested(x []float32, c, h, w int) [][][]float64 {
	out := make([][][]float64, c)
	for ch := range c {
		out[ch] = make([][]float64, h)
		for y := range h {
			out[ch][y] = make([]float64, w)
			for q := range w {
				out[ch][y][q] = float64(x[(ch*h+y)*w+q])
			}
		}
	}
	return out
}

// gradClose reports whether max|got − want| ≤ tol·max|want| + 1e-12 (the floor is for
// n = 2, whose gradient is zero up to rounding), and the max-norm relative error.
func gradClose(got []float32, want []float64, tol float64) (float64, bool) {
	var e, s float64
	for q := range want {
		e = max(e, math.Abs(float64(got[q])-want[q]))
		s = max(s, math.Abs(want[q]))
	}
	return e / max(s, 1e-300), e <= tol*s+1e-12
}

// TestRKDAgainstOracle compares loss parts and gradients with the Python reference.
// Near-identical vectors on large values are left to TestRKDAgainstNaive: the oracle's
// expansion-form pdist cancels there (docs/crd.md §1.2). Where the student has exact duplicates
// only the loss is compared: the oracle's gradient is the K-form of docs/crd.md §1.4 on uncentred
// vectors, whose 1/eps² entries (~1e22 at n = 4) cancel to ~1e-3 relative there;
// TestRKDGradientAgainstNaive checks those gradients against the reference's leg-by-leg form.
func TestRKDAgainstOracle(t *testing.T) {
	const seed = 40
	var cs []relCase
	for _, c := range relCases(seed) {
		if !strings.Contains(c.name, "near") {
			cs = append(cs, c)
		}
	}
	cases := make([]map[string]any, len(cs))
	for q, c := range cs {
		cases[q] = map[string]any{"kind": "rkd", "x": vecs(c.x, c.n, c.d), "y": vecs(c.y, c.n, c.d)}
	}
	res := runOracle(t, cases)
	for q, c := range cs {
		grad := make([]float32, c.n*c.d)
		got := RKD(c.x, c.y, c.n, c.d, grad, 1)
		want := res[q]
		for _, v := range []struct {
			what      string
			got, want float64
		}{
			{"RKD", got.RKD, want.RKD}, {"L_dist", got.Distance, want.Dist}, {"L_angle", got.Angle, want.Angle},
			{"μ_S", got.StudentMean, want.MuS}, {"μ_T", got.TeacherMean, want.MuT},
		} {
			if math.Abs(v.got-v.want) > 1e-9*math.Abs(v.want)+1e-15 {
				t.Errorf("seed %d %s: %s = %.15g; oracle %.15g", seed, c.name, v.what, v.got, v.want)
			}
		}
		if studentDuplicates(c) {
			continue
		}
		// float32 rounding of the result (6e-8) plus the oracle's float64 rounding.
		if e, ok := gradClose(grad, flatten(t, want.Grad), 1e-6); !ok {
			t.Errorf("seed %d %s: gradient max-norm rel. error %.3g against the oracle; want ≤ 1e-6", seed, c.name, e)
		}
	}
}

// studentDuplicates reports whether two student vectors of c are identical.
func studentDuplicates(c relCase) bool {
	for i := range c.n {
		for j := range i {
			if slices.Equal(c.x[i*c.d:(i+1)*c.d], c.x[j*c.d:(j+1)*c.d]) {
				return true
			}
		}
	}
	return false
}

// officialInOracle: the oracle's official term reads patch k of image 0, so it covers
// N ≤ L (every recipe); beyond, the flattened patch k is patch k mod L of image k / L, which
// TestCombinationsAgainstNaive checks.
func officialInOracle(shape [4]int, p int) bool {
	L, _ := PatchesSize(shape[1], shape[2], shape[3], p)
	return shape[1] == 3 && shape[0] <= L
}

// TestCombinationsAgainstOracle checks CycleGAN (with its gradient) and both Pix2Pix modes.
func TestCombinationsAgainstOracle(t *testing.T) {
	const seed = 41
	r := rand.New(rand.NewPCG(seed, 0))
	type combo struct {
		shape [4]int
		p     int
		s, t  []float32
	}
	var combos []combo
	for _, sh := range []struct {
		shape [4]int
		p     int
	}{{[4]int{1, 3, 4, 4}, 2}, {[4]int{1, 3, 7, 5}, 2}, {[4]int{1, 2, 6, 9}, 4}, {[4]int{3, 3, 5, 6}, 3}, {[4]int{5, 3, 4, 4}, 2}} {
		size := sh.shape[0] * sh.shape[1] * sh.shape[2] * sh.shape[3]
		combos = append(combos, combo{sh.shape, sh.p, randSet(r, 1, size), randSet(r, 1, size)})
	}
	var cases []map[string]any
	for _, c := range combos {
		N, C, H, W := c.shape[0], c.shape[1], c.shape[2], c.shape[3]
		var ss, ts [][][][]float64
		for b := range N {
			ss = append(ss, nested(c.s[b*C*H*W:], C, H, W))
			ts = append(ts, nested(c.t[b*C*H*W:], C, H, W))
		}
		if N == 1 {
			cases = append(cases, map[string]any{"kind": "cyclegan", "s": ss[0], "t": ts[0], "p": c.p})
		}
		cases = append(cases, map[string]any{"kind": "pix2pix", "s": ss, "t": ts, "p": c.p, "official": false})
		if officialInOracle(c.shape, c.p) {
			cases = append(cases, map[string]any{"kind": "pix2pix", "s": ss, "t": ts, "p": c.p, "official": true})
		}
	}
	res := runOracle(t, cases)
	q := 0
	for _, c := range combos {
		label := fmt.Sprintf("seed %d %v P=%d", seed, c.shape, c.p)
		if c.shape[0] == 1 {
			grad := make([]float32, len(c.s))
			got, _ := CycleGAN(c.s, c.t, c.shape, c.p, grad, 1)
			if math.Abs(got-res[q].Total) > 1e-9*math.Abs(res[q].Total) {
				t.Errorf("%s: CycleGAN = %.15g; oracle %.15g", label, got, res[q].Total)
			}
			if e, ok := gradClose(grad, flatten(t, res[q].Grad), 1e-6); !ok {
				t.Errorf("%s: CycleGAN gradient max-norm rel. error %.3g against the oracle; want ≤ 1e-6", label, e)
			}
			q++
		}
		got, _ := Pix2Pix(c.s, c.t, c.shape, c.p, Intended, nil, 0)
		if math.Abs(got-res[q].Total) > 1e-9*math.Abs(res[q].Total) {
			t.Errorf("%s: Pix2Pix intended = %.15g; oracle %.15g", label, got, res[q].Total)
		}
		q++
		if officialInOracle(c.shape, c.p) {
			got, _ := Pix2Pix(c.s, c.t, c.shape, c.p, Official, nil, 0)
			if math.Abs(got-res[q].Total) > 1e-9*math.Abs(res[q].Total) {
				t.Errorf("%s: Pix2Pix official = %.15g; oracle %.15g", label, got, res[q].Total)
			}
			q++
		}
	}
}

// skipWithoutPython skips a test that needs /usr/bin/python3 with its
// packages, and fails it where CRDGO_CI is set (.ci/run sets it): CI installs
// them, so a missing one there is a broken environment, not a reason to pass.
func skipWithoutPython(t *testing.T, format string, args ...any) {
	t.Helper()
	if os.Getenv("CRDGO_CI") != "" {
		t.Fatalf("CRDGO_CI is set: "+format, args...)
	}
	t.Skipf(format, args...)
}
