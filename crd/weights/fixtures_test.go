package weights

import (
	"bytes"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The reference files in testdata/py were written by testdata/make_fixtures.py with
// PyTorch 1.13 and NumPy; TestPythonFixtures writes them afresh and runs the same checks.

func TestFixtures(t *testing.T) { checkFixtures(t, filepath.Join("testdata", "py")) }

func TestPythonFixtures(t *testing.T) { checkFixtures(t, pythonFixtures(t)) }

func checkFixtures(t *testing.T, dir string) {
	path := func(name string) string { return filepath.Join(dir, name) }

	// expected reads a Python-written safetensors file and orders it as its "order" says.
	expected := func(t *testing.T, name string) ([]Tensor, map[string]string) {
		t.Helper()
		ts, meta, err := ReadSafetensorsFile(path(name))
		if err != nil {
			t.Fatal(err)
		}
		by := map[string]Tensor{}
		for _, x := range ts {
			by[x.Name] = x
		}
		var out []Tensor
		for _, n := range strings.Split(meta["order"], ",") {
			out = append(out, by[n])
		}
		return out, meta
	}

	for _, tc := range []struct{ file, want string }{
		{"sd.pth", "sd_expected.safetensors"},
		{"sd_legacy.pth", "sd_expected.safetensors"},
		{"vgg_like_legacy.pth", "vgg_like_expected.safetensors"},
		{"ckpt.pth", "ckpt_expected.safetensors"},
	} {
		t.Run(tc.file, func(t *testing.T) {
			want, meta := expected(t, tc.want)
			if js, ok := meta["dtypes"]; ok {
				var dts map[string]DType
				if err := json.Unmarshal([]byte(js), &dts); err != nil {
					t.Fatal(err)
				}
				for i := range want {
					want[i].DType = dts[want[i].Name]
				}
			}
			got, err := ReadPyTorch(path(tc.file))
			if err != nil {
				t.Fatal(err)
			}
			sameTensors(t, "ReadPyTorch("+tc.file+")", got, want)
			viaFile, meta2, err := ReadFile(path(tc.file))
			if err != nil || meta2 != nil {
				t.Fatalf("ReadFile(%s): meta %v, err %v", tc.file, meta2, err)
			}
			sameTensors(t, "ReadFile("+tc.file+")", viaFile, want)
		})
	}

	t.Run("module.pth", func(t *testing.T) {
		_, err := ReadPyTorch(path("module.pth"))
		if err == nil || !strings.Contains(err.Error(), "global torch.nn.modules.container.Sequential") {
			t.Fatalf("ReadPyTorch(pickled module) = %v; want the refused global named", err)
		}
	})

	t.Run("mixed.safetensors", func(t *testing.T) {
		ts, meta, err := ReadSafetensorsFile(path("mixed.safetensors"))
		if err != nil {
			t.Fatal(err)
		}
		if meta["format"] != "np" || meta["writer"] != "make_fixtures.py" || len(meta) != 2 {
			t.Errorf("metadata %v", meta)
		}
		wantOrder := "u8 f64 bool i8 f32 i64 f16 bf16 u64 i32 i16 scalar u16 u32 empty"
		if got := strings.Join(names(ts), " "); got != wantOrder {
			t.Errorf("file order %s; want %s", got, wantOrder)
		}
		ref, err := ReadNPZ(path("mixed.npz"))
		if err != nil {
			t.Fatal(err)
		}
		for _, x := range ts {
			switch x.Name {
			case "i64":
				if x.I64[0] != math.MinInt64 || x.I64[1] != math.MaxInt64 {
					t.Errorf("i64 = %v", x.I64)
				}
				continue
			case "u64":
				if x.I64[0] != 1<<62 {
					t.Errorf("u64 = %v", x.I64)
				}
				continue
			}
			a, ok := ref[x.Name]
			if !ok {
				t.Fatalf("mixed.npz lacks %q", x.Name)
			}
			if jsonShape(x.Shape) != jsonShape(a.Shape) {
				t.Errorf("%s: shape %v; npz %v", x.Name, x.Shape, a.Shape)
			}
			for i, v := range a.Data {
				var got float64
				if x.DType.IsFloat() {
					got = float64(x.F32[i])
					v = float64(float32(v)) // F64 originals are rounded to float32
				} else {
					got = float64(x.I64[i])
				}
				if got != v {
					t.Errorf("%s (%s) [%d] = %v; numpy %v", x.Name, x.DType, i, got, v)
				}
			}
		}
	})

	t.Run("golden_writer.safetensors", func(t *testing.T) {
		want, err := os.ReadFile(path("golden_writer.safetensors"))
		if err != nil {
			t.Fatal(err)
		}
		ts := []Tensor{
			{Name: "zeta", Shape: []int{2, 3}, F32: []float32{0, 0.5, 1, 1.5, 2, 2.5}},
			{Name: "alpha", DType: I64, Shape: []int{1, 2}, I64: []int64{-1, 1 << 40}},
			{Name: "mid", DType: F32, Shape: []int{}, F32: []float32{3.25}},
			{Name: "empty", DType: F32, Shape: []int{0, 2}},
		}
		var got bytes.Buffer
		if err := WriteSafetensors(&got, ts, map[string]string{"b": "2", "a": "x/y"}); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got.Bytes(), want) {
			t.Fatalf("WriteSafetensors wrote\n%q\nPython wrote\n%q", got.Bytes(), want)
		}
	})

	t.Run("stats.npz", func(t *testing.T) {
		m, err := ReadNPZ(path("stats.npz"))
		if err != nil {
			t.Fatal(err)
		}
		mu, sigma := m["mu"], m["sigma"]
		if len(m) != 2 || jsonShape(mu.Shape) != "[32]" || jsonShape(sigma.Shape) != "[32,32]" {
			t.Fatalf("stats.npz: %d arrays, mu %v, sigma %v", len(m), mu.Shape, sigma.Shape)
		}
		for i := range 32 {
			if sigma.Data[i*32+i] <= 0 {
				t.Errorf("sigma[%d,%d] = %v; a covariance's diagonal is positive", i, i, sigma.Data[i*32+i])
			}
			for j := range i {
				if sigma.Data[i*32+j] != sigma.Data[j*32+i] {
					t.Errorf("sigma[%d,%d] = %v, sigma[%d,%d] = %v; a covariance is symmetric", i, j, sigma.Data[i*32+j], j, i, sigma.Data[j*32+i])
				}
			}
		}
	})

	t.Run("orders.npz", func(t *testing.T) {
		m, err := ReadNPZ(path("orders.npz"))
		if err != nil {
			t.Fatal(err)
		}
		for _, pair := range [][2]string{{"c2", "f2"}, {"c3", "f3"}, {"ct", "t"}} {
			c, f := m[pair[0]], m[pair[1]]
			if jsonShape(c.Shape) != jsonShape(f.Shape) {
				t.Fatalf("%s shape %v, %s shape %v", pair[0], c.Shape, pair[1], f.Shape)
			}
			for i := range c.Data {
				if c.Data[i] != f.Data[i] {
					t.Fatalf("%s[%d] = %v (C order); %s[%d] = %v (Fortran order)", pair[0], i, c.Data[i], pair[1], i, f.Data[i])
				}
			}
		}
		// t = c3.T: t[k,j,i] = c3[i,j,k], with c3 of shape (2,3,4).
		c3, tr := m["c3"], m["t"]
		for i := range 2 {
			for j := range 3 {
				for k := range 4 {
					if a, b := c3.Data[(i*3+j)*4+k], tr.Data[(k*3+j)*2+i]; a != b {
						t.Fatalf("c3[%d,%d,%d] = %v; t[%d,%d,%d] = %v", i, j, k, a, k, j, i, b)
					}
				}
			}
		}
		ts, _, err := ReadFile(path("orders.npz"))
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.Join(names(ts), " "); got != "c2 f2 c3 f3 t ct" || ts[0].DType != F32 || ts[2].DType != F64 {
			t.Fatalf("ReadFile(orders.npz): %s, dtypes %s %s", got, ts[0].DType, ts[2].DType)
		}
	})
}

func jsonShape(s []int) string {
	b, _ := json.Marshal(s)
	return string(b)
}
