package crd

import (
	"math"
	"testing"
)

// The worked test vectors of docs/crd.md §1.5 (computed in float64 by crd_reference.py and
// reproduced with the reference RKDLoss). The inputs are float32 here, so a value differs
// from the float64 vector by the rounding of the inputs (≈ 1e-8 relative); the tolerance
// asked for is 1e-5 relative, and the test holds every value to relTol.
const relTol = 1e-6

// exampleImage is x[c,h,w] = ((a·idx + b) mod m)/q − 1 with idx = 16c + 4h + w (C=3, H=W=4).
func exampleImage(a, b, m, q int) []float32 {
	x := make([]float32, 48)
	for idx := range x {
		x[idx] = float32(float64((a*idx+b)%m)/float64(q) - 1)
	}
	return x
}

func example1() (s, t []float32) { return exampleImage(5, 3, 13, 6), exampleImage(7, 0, 11, 5) }
func example2() (s, t []float32) { return exampleImage(2, 5, 19, 9), exampleImage(3, 1, 17, 8) }

var shape1 = [4]int{1, 3, 4, 4}

func closeRel(got, want, tol float64) bool {
	return math.Abs(got-want) <= tol*math.Abs(want)
}

func checkRelation(t *testing.T, label string, got Relation, muT, muS, dist, angle, rkd float64) {
	t.Helper()
	for _, c := range []struct {
		name      string
		got, want float64
	}{
		{"μ_T", got.TeacherMean, muT}, {"μ_S", got.StudentMean, muS},
		{"L_dist", got.Distance, dist}, {"L_angle", got.Angle, angle}, {"RKD", got.RKD, rkd},
	} {
		if !closeRel(c.got, c.want, relTol) {
			t.Errorf("%s: %s = %.12g; want %.12g (rel. err %.2e)", label, c.name, c.got, c.want, math.Abs(c.got-c.want)/math.Abs(c.want))
		}
	}
}

func TestWorkedExample1(t *testing.T) {
	s, tt := example1()
	grad := make([]float32, 48)
	total, per := CycleGAN(s, tt, shape1, 2, grad, 1)
	r := per[0]
	checkRelation(t, "rows", r.Row, 3.27333126109, 3.28435849456, 0.00461785871231, 0.00244745754243, 0.00951277379716)
	checkRelation(t, "columns", r.Column, 3.44418957618, 3.31091140867, 0.00109970233478, 0.00076590055133, 0.00263150343744)
	checkRelation(t, "patches", r.Patch, 2.87764670643, 2.78796411016, 0.0263062410054, 0.0225355646993, 0.0713773704041)
	if !closeRel(total, 2.08804119097, relTol) {
		t.Errorf("CycleGAN total = %.12g; want 2.08804119097", total)
	}

	// The printed gradient of 25·(rows + cols + patches), 6 decimals.
	want := []float64{
		-0.088011, -0.339116, -0.076334, -0.182767, -0.280595, -0.150371, -0.139105, +0.326755, +0.152951, +0.221295, +0.152974, +0.255360, +0.036226, -0.416557, +0.177243, +0.350053,
		-0.307838, -0.339116, -0.076334, -0.226171, +0.324546, -0.371299, +0.488812, -0.156913, +0.141942, +0.221295, +0.152974, +0.322586, -0.752900, +0.191583, -0.016076, +0.402911,
		-0.351242, -0.046152, -0.076334, +0.398904, +1.202769, -0.321008, +0.454337, -0.165252, +0.192234, -0.469132, +0.265852, -0.057187, -0.139420, +0.180574, -1.471852, +0.402911,
	}
	checkPrinted(t, "∂CycleGAN/∂S", grad, want, 5e-7)

	// The printed gradient of the rows RKD alone, 7 decimals.
	xs, ys := make([]float32, 48), make([]float32, 48)
	Rows(xs, s, 3, 4, 4)
	Rows(ys, tt, 3, 4, 4)
	gs := make([]float32, 48)
	RKD(xs, ys, 4, 12, gs, 1)
	gi := make([]float32, 48)
	AddRows(gi, gs, 3, 4, 4)
	wantRows := []float64{
		+0.0063533, -0.0041760, +0.0063533, -0.0024398, -0.0006727, -0.0016255, -0.0006727, +0.0120529, -0.0010113, +0.0012374, -0.0010113, -0.0014516, -0.0046693, +0.0045641, -0.0046693, -0.0081615,
		-0.0024398, -0.0041760, +0.0063533, -0.0041760, +0.0120529, -0.0016255, -0.0006727, -0.0016255, -0.0014516, +0.0012374, -0.0010113, +0.0012374, -0.0081615, +0.0045641, -0.0046693, +0.0045641,
		-0.0041760, -0.0042710, +0.0063533, -0.0041760, -0.0016255, +0.0010635, -0.0006727, -0.0016255, +0.0012374, -0.0009163, -0.0010113, +0.0012374, +0.0045641, +0.0041237, -0.0046693, +0.0045641,
	}
	checkPrinted(t, "∂RKD_rows/∂S", gi, wantRows, 5e-8)
}

// checkPrinted compares a gradient with a table printed to a fixed number of decimals: the
// difference may be the printing's rounding (half a unit of the last digit) plus float32
// rounding of the result.
func checkPrinted(t *testing.T, label string, got []float32, want []float64, halfUnit float64) {
	t.Helper()
	for q := range want {
		if d := math.Abs(float64(got[q]) - want[q]); d > halfUnit+1e-7*math.Abs(want[q]) {
			t.Errorf("%s[c=%d,h=%d,w=%d] = %.8f; want %.7f", label, q/16, q/4%4, q%4, got[q], want[q])
		}
	}
}

func TestWorkedExample2(t *testing.T) {
	s1, t1 := example1()
	s2, t2 := example2()
	s := append(append([]float32{}, s1...), s2...)
	tt := append(append([]float32{}, t1...), t2...)
	shape := [4]int{2, 3, 4, 4}

	total, per := Pix2Pix(s, tt, shape, 2, Intended, nil, 0)
	checkRelation(t, "image 2 rows", per[1].Row, 3.3348109694, 3.2030091058, 0.0294178124468, 0.025495564647, 0.0804089417409)
	checkRelation(t, "image 2 columns", per[1].Column, 3.14435486595, 2.69853489771, 0.0047841304273, 0.00212368095656, 0.00903149234043)
	checkRelation(t, "image 2 patches", per[1].Patch, 3.33526879076, 2.70572573476, 0.0236420927149, 0.0217718303057, 0.0671857533263)
	checkRelation(t, "image 1 rows", per[0].Row, 3.27333126109, 3.28435849456, 0.00461785871231, 0.00244745754243, 0.00951277379716)
	if !closeRel(total, 0.600369587616, relTol) {
		t.Errorf("Pix2Pix intended total = %.12g; want 0.600369587616", total)
	}

	total, per = Pix2Pix(s, tt, shape, 2, Official, nil, 0)
	checkRelation(t, "official k=0", per[0].Patch, 1.56616723752, 1.49390996035, 0.00081036923792, 0.000707725244719, 0.00222581972736)
	checkRelation(t, "official k=1", per[1].Patch, 1.89601060409, 1.49390996035, 0.00140154381444, 0.00958870068855, 0.0205789451915)
	checkRelation(t, "official image 2 rows", per[1].Row, 3.3348109694, 3.2030091058, 0.0294178124468, 0.025495564647, 0.0804089417409)
	if !closeRel(total, 0.310973690587, relTol) {
		t.Errorf("Pix2Pix official total = %.12g; want 0.310973690587", total)
	}
}

func TestWorkedExample3Duplicates(t *testing.T) {
	s, tt := example1()
	for c := range 3 { // teacher row 1 := row 0 in every channel
		copy(tt[c*16+4:c*16+8], tt[c*16:c*16+4])
	}
	xs, ys := make([]float32, 48), make([]float32, 48)
	Rows(xs, s, 3, 4, 4)
	Rows(ys, tt, 3, 4, 4)
	var w Workspace
	r := w.RKD(xs, ys, 4, 12, make([]float32, 48), 1)
	if w.dt[0*4+1] != 0 {
		t.Errorf("teacher D_01 = %g; want exactly 0", w.dt[1])
	}
	if got := clampDist(w.dt[1]); got != 1e-6 {
		t.Errorf("teacher d_01 = %g; want 1e-6", got)
	}
	if got := clampDist(w.dt[1]) / r.TeacherMean; !closeRel(got, 3.75072034174e-07, relTol) {
		t.Errorf("teacher ψ_01 = %.12g; want 3.75072034174e-07", got)
	}
	checkRelation(t, "rows vs duplicated teacher", r, 2.66615452203, 3.28435849456, 0.128994752652, 0.0617150746261, 0.252424901905)
}
