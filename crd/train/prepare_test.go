package train

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/zap/zaptest"
)

// treeHash maps every file and folder under dir to a hash of what it holds.
func treeHash(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		switch {
		case e.Type()&fs.ModeSymlink != 0:
			target, _ := os.Readlink(p)
			out[rel] = "-> " + target
		case e.IsDir():
			out[rel] = "dir"
		default:
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			h := sha256.Sum256(b)
			out[rel] = hex.EncodeToString(h[:])
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func sameTree(t *testing.T, what string, before, after map[string]string) {
	t.Helper()
	for k, v := range before {
		if after[k] != v {
			t.Errorf("%s: %s changed or vanished (%q → %q)", what, k, v, after[k])
		}
	}
	for k := range after {
		if _, ok := before[k]; !ok {
			t.Errorf("%s: %s appeared", what, k)
		}
	}
}

// TestPrepareDataNeverDeletesAUsersFolder reproduces issue 19's first defect: a
// recipe whose synthetic dataset names a folder that is not a complete synthetic
// dataset made train remove it (a README included), and names leaving the data
// root removed folders outside it. Every case must now be refused with the
// folder left as it was.
func TestPrepareDataNeverDeletesAUsersFolder(t *testing.T) {
	r := tinyRecipe(t, "demo")
	log := zaptest.NewLogger(t)
	ctx := context.Background()
	for _, tc := range []struct {
		name    string
		dataset string
		setup   func(t *testing.T, base, root string)
		want    string
	}{
		{"user folder named like the dataset", "edges2shapes", func(t *testing.T, base, root string) {
			write(t, filepath.Join(root, "edges2shapes", "README.md"), "my notes")
			write(t, filepath.Join(root, "edges2shapes", "train", "photo.png"), "my photo")
		}, "is not empty"},
		{"parent folder", "../victim", func(t *testing.T, base, root string) {
			write(t, filepath.Join(base, "victim", "README.md"), "my notes")
		}, "want a folder name inside --data-root"},
		{"the data root itself", ".", func(t *testing.T, base, root string) {
			write(t, filepath.Join(root, "other", "README.md"), "my notes")
		}, "want a folder name inside --data-root"},
		{"absolute path", "/tmp/victim-of-crdgo", nil, "want a folder name inside --data-root"},
		{"symlink out of the root", "link", func(t *testing.T, base, root string) {
			write(t, filepath.Join(base, "victim", "train", "photo.png"), "my photo")
			if err := os.Symlink(filepath.Join(base, "victim"), filepath.Join(root, "link")); err != nil {
				t.Fatal(err)
			}
		}, "outside --data-root"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			base := t.TempDir()
			root := filepath.Join(base, "data")
			if err := os.MkdirAll(root, 0o755); err != nil {
				t.Fatal(err)
			}
			if tc.setup != nil {
				tc.setup(t, base, root)
			}
			before := treeHash(t, base)
			rr := r
			rr.Data.Dataset = tc.dataset
			_, err := PrepareData(ctx, root, rr, nil, log)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("PrepareData(dataset %q) = %v; want an error containing %q", tc.dataset, err, tc.want)
			}
			sameTree(t, "PrepareData(dataset "+tc.dataset+")", before, treeHash(t, base))
		})
	}
}

// TestRecipeDatasetNames: names that leave the data root are refused when the
// recipe is loaded, before anything runs.
func TestRecipeDatasetNames(t *testing.T) {
	r := tinyRecipe(t, "demo")
	for _, name := range []string{"..", "../x", "/abs", ".", "a/../..", ""} {
		rr := r
		rr.Data.Dataset = name
		if err := rr.Validate(); err == nil || !strings.Contains(err.Error(), "data.dataset") {
			t.Errorf("Validate(data.dataset %q) = %v; want an error naming data.dataset", name, err)
		}
	}
	rr := r
	rr.Data.Aliases = []string{"../x"}
	if err := rr.Validate(); err == nil || !strings.Contains(err.Error(), "data.aliases") {
		t.Errorf("Validate(data.aliases [../x]) = %v; want an error naming data.aliases", err)
	}
	for _, name := range []string{"edges2shapes", "sub/edges2shapes"} {
		rr := r
		rr.Data.Dataset = name
		if err := rr.Validate(); err != nil {
			t.Errorf("Validate(data.dataset %q) = %v; want nil", name, err)
		}
	}
}

// TestDatasetDirThatIsAFile: a dataset path that is a file says so, not "not found".
func TestDatasetDirThatIsAFile(t *testing.T) {
	r := tinyRecipe(t, "demo")
	root := t.TempDir()
	write(t, filepath.Join(root, r.Data.Dataset), "not a folder")
	_, err := DatasetDir(root, r)
	if err == nil || !strings.Contains(err.Error(), "is a file") {
		t.Errorf("DatasetDir with a file in the dataset's place = %v; want an error saying it is a file", err)
	}
}

func write(t *testing.T, path, body string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}
