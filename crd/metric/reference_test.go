package metric

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// python is the interpreter CI installs numpy and scipy for.
const python = "/usr/bin/python3"

// The spec and results exchanged with testdata/reference.py.
type refSpec struct {
	Stats     []refStatsCase `json:"stats,omitempty"`
	FID       []refFIDCase   `json:"fid,omitempty"`
	KID       []refKIDCase   `json:"kid,omitempty"`
	Image     []refImageCase `json:"image,omitempty"`
	Tensor2im []refT2ICase   `json:"tensor2im,omitempty"`
}

type refStatsCase struct {
	Feats    string `json:"feats"`
	N        int    `json:"n"`
	Dim      int    `json:"dim"`
	MuOut    string `json:"mu_out"`
	SigmaOut string `json:"sigma_out"`
}

// refFIDCase gives either features (Feats1/2, the reference computes its own
// statistics) or statistics (Mu1, Sigma1, …).
type refFIDCase struct {
	Dim    int    `json:"dim"`
	Feats1 string `json:"feats1,omitempty"`
	N1     int    `json:"n1,omitempty"`
	Feats2 string `json:"feats2,omitempty"`
	N2     int    `json:"n2,omitempty"`
	Mu1    string `json:"mu1,omitempty"`
	Sigma1 string `json:"sigma1,omitempty"`
	Mu2    string `json:"mu2,omitempty"`
	Sigma2 string `json:"sigma2,omitempty"`
}

type refKIDCase struct {
	X       string `json:"x"`
	NX      int    `json:"nx"`
	Y       string `json:"y"`
	NY      int    `json:"ny"`
	Dim     int    `json:"dim"`
	IdxX    string `json:"idx_x"`
	IdxY    string `json:"idx_y"`
	Subsets int    `json:"subsets"`
	M       int    `json:"m"`
}

type refImageCase struct {
	A         string  `json:"a"`
	B         string  `json:"b"`
	C         int     `json:"c"`
	H         int     `json:"h"`
	W         int     `json:"w"`
	DataRange float64 `json:"data_range"`
}

type refT2ICase struct {
	X string `json:"x"`
	N int    `json:"n"`
}

type refResult struct {
	FID []struct {
		FID     float64 `json:"fid"`
		FIDEig  float64 `json:"fid_eig"`
		Trace   float64 `json:"trace"`
		Warned  bool    `json:"warned"`
		ImagMax float64 `json:"imag_max"`
		Retried bool    `json:"retried"`
	} `json:"fid"`
	KID []struct {
		MMDs []float64 `json:"mmds"`
		Mean float64   `json:"mean"`
		Std  float64   `json:"std"`
	} `json:"kid"`
	Image []struct {
		SSIM         float64 `json:"ssim"`
		SSIMFiltered float64 `json:"ssim_filtered"`
		PSNR         float64 `json:"psnr"`
		PSNRInf      bool    `json:"psnr_inf"`
		MAE          float64 `json:"mae"`
	} `json:"image"`
	Tensor2im []struct {
		U8 []int `json:"u8"`
	} `json:"tensor2im"`
}

// refDir is a scratch folder for one reference run.
type refDir struct {
	t   *testing.T
	dir string
}

// newRef skips the test when /usr/bin/python3 cannot import numpy and scipy
// (fails it where CRDGO_CI is set), and fails it on any other problem.
func newRef(t *testing.T) *refDir {
	t.Helper()
	if out, err := exec.Command(python, "-c", "import numpy, scipy.linalg, scipy.ndimage").CombinedOutput(); err != nil {
		skipWithoutPython(t, "reference check needs %s with numpy and scipy (CI installs them: apt-get install python3-numpy python3-scipy): %v: %s",
			python, err, bytes.TrimSpace(out))
	}
	return &refDir{t: t, dir: t.TempDir()}
}

func (r *refDir) write(name string, data any) string {
	r.t.Helper()
	var buf bytes.Buffer
	if err := binary.Write(&buf, binary.LittleEndian, data); err != nil {
		r.t.Fatalf("encode %s: %v", name, err)
	}
	if err := os.WriteFile(filepath.Join(r.dir, name), buf.Bytes(), 0o644); err != nil {
		r.t.Fatal(err)
	}
	return name
}

func (r *refDir) readF64(name string, n int) []float64 {
	r.t.Helper()
	b, err := os.ReadFile(filepath.Join(r.dir, name))
	if err != nil {
		r.t.Fatal(err)
	}
	if len(b) != 8*n {
		r.t.Fatalf("%s: %d bytes; want %d float64", name, len(b), n)
	}
	x := make([]float64, n)
	for i := range x {
		x[i] = math.Float64frombits(binary.LittleEndian.Uint64(b[8*i:]))
	}
	return x
}

func (r *refDir) run(spec refSpec) refResult {
	r.t.Helper()
	js, err := json.Marshal(spec)
	if err != nil {
		r.t.Fatal(err)
	}
	specPath := filepath.Join(r.dir, "spec.json")
	if err := os.WriteFile(specPath, js, 0o644); err != nil {
		r.t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(python, filepath.Join("testdata", "reference.py"), specPath)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		r.t.Fatalf("testdata/reference.py: %v\n%s", err, stderr.Bytes())
	}
	var res refResult
	if err := json.Unmarshal(stdout.Bytes(), &res); err != nil {
		r.t.Fatalf("testdata/reference.py output: %v\n%s", err, stdout.Bytes())
	}
	return res
}

// reluFeatures returns n rows of dim features shaped like pooled Inception
// activations: non-negative, per-feature offsets, correlated through a few
// shared factors; shift moves the distribution.
func reluFeatures(rng *rand.Rand, n, dim int, shift float64) []float64 {
	const factors = 8
	load := make([]float64, factors*dim)
	for i := range load {
		load[i] = rng.NormFloat64() * 0.3
	}
	base := make([]float64, dim)
	for j := range base {
		base[j] = rng.Float64() + shift*rng.Float64()
	}
	x := make([]float64, n*dim)
	var f [factors]float64
	for i := 0; i < n; i++ {
		for k := range f {
			f[k] = rng.NormFloat64()
		}
		for j := 0; j < dim; j++ {
			v := base[j] + 0.5*rng.NormFloat64()
			for k := range f {
				v += f[k] * load[k*dim+j]
			}
			x[i*dim+j] = math.Max(v, 0)
		}
	}
	return x
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
