package node

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"strconv"

	"github.com/crdgo/crdgo/crd/data"
	"github.com/crdgo/crdgo/crd/train"
)

// What a node and its job must agree on before the node is admitted
// (docs/cluster.md, "The state machine"): the recipe's content and the
// dataset's. The coordinator computes both the same way from its own copy
// (crdgo coordinator --recipe, --data-root) and compares them at join.

// RecipeHash identifies a recipe's content: the SHA-256 of its JSON encoding,
// as loaded (before --batch or the job's seed change it).
func RecipeHash(r train.Recipe) (string, error) {
	b, err := json.Marshal(r)
	if err != nil {
		return "", fmt.Errorf("recipe %s: %w", r.Name, err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:]), nil
}

// DatasetHash identifies the files a recipe trains and evaluates on: the
// SHA-256 of every file of its training and evaluation splits, in key order,
// each as "split/key", size and SHA-256 of the content. src is the dataset's
// folder (train.LocalDataset, train.FindDataset). It reads every file once.
func DatasetHash(ctx context.Context, src data.Source, r train.Recipe) (string, error) {
	splits := []string{r.Data.Train, r.Data.Val}
	if r.Mode == train.CycleGAN {
		splits = []string{r.Data.TrainA, r.Data.TrainB, r.Data.ValA, r.Data.ValB}
	}
	h := sha256.New()
	io.WriteString(h, "crdgo dataset v1\n")
	seen := map[string]bool{}
	for _, split := range splits {
		if seen[split] { // a recipe may evaluate on its training split
			continue
		}
		seen[split] = true
		keys, err := src.List(ctx, split)
		if err != nil {
			return "", fmt.Errorf("dataset hash: %s: %w", src, err)
		}
		if len(keys) == 0 {
			return "", fmt.Errorf("dataset hash: %s/%s: no files", src, split)
		}
		for _, key := range keys {
			if err := ctx.Err(); err != nil {
				return "", err
			}
			sum, n, err := hashKey(ctx, src, key)
			if err != nil {
				return "", err
			}
			io.WriteString(h, key+"\x00"+strconv.FormatInt(n, 10)+"\x00"+sum+"\n")
		}
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func hashKey(ctx context.Context, src data.Source, key string) (string, int64, error) {
	f, err := src.Open(ctx, key)
	if err != nil {
		return "", 0, fmt.Errorf("dataset hash: %s: %w", key, err)
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return "", 0, fmt.Errorf("dataset hash: %s: %w", key, err)
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}

// DatasetOf is the recipe's dataset folder as a trainer with cfg reads it:
// under cfg.Data when set, else under cfg.DataRoot on local disk.
func DatasetOf(ctx context.Context, cfg train.Config) (data.Source, error) {
	if cfg.Data != nil {
		return train.FindDataset(ctx, cfg.Data, cfg.Recipe)
	}
	return train.LocalDataset(cfg.DataRoot, cfg.Recipe)
}
