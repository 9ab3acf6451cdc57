package train

import (
	"slices"
	"testing"
)

// TestBuiltInRecipes: every embedded recipe loads, validates, and is named as
// its file; the demos make run and make ablation use are among them.
func TestBuiltInRecipes(t *testing.T) {
	names := Recipes()
	for _, want := range []string{"demo", "demo-ngf4", "demo-cyclegan", "demo-unet", "horse2zebra"} {
		if !slices.Contains(names, want) {
			t.Errorf("built-in recipes %v lack %s", names, want)
		}
	}
	for _, name := range names {
		r, err := LoadRecipe(name)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if r.Name != name {
			t.Errorf("recipe file %s.yaml is named %q inside", name, r.Name)
		}
		if err := r.Validate(); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}
