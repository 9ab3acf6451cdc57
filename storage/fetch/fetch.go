package fetch

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// Options says where and how to fetch.
type Options struct {
	// Root is the data root: a dataset lands in Root/<Dataset.Dir>; downloads wait
	// in Root/.downloads.
	Root string
	// BaseURL, when set, replaces the sources: the archive is BaseURL/<Archive>
	// (a local mirror, or a test server).
	BaseURL string
	// KeepArchive keeps the downloaded archive after a successful unpack.
	KeepArchive bool
	Limits      Limits
	// Attempts per source, Wait before the first retry (doubling, up to 10×).
	Attempts int
	Wait     time.Duration
	// StallTimeout ends a request that receives nothing for that long.
	StallTimeout time.Duration
	// Client makes the requests (one with a 30 s header timeout when nil).
	Client *http.Client
	// Progress, when set, is called as the download goes: bytes so far (counting
	// those of a resumed part) and the total (-1 when the server does not say).
	Progress func(done, total int64)
	Log      *zap.Logger
}

// DefaultOptions fetches into root with 5 attempts per source, 1 s apart at first.
func DefaultOptions(root string) Options {
	return Options{Root: root, Limits: DefaultLimits(), Attempts: 5, Wait: time.Second, StallTimeout: time.Minute}
}

func (o Options) log() *zap.Logger {
	if o.Log == nil {
		return zap.NewNop()
	}
	return o.Log
}

func (o Options) client() *http.Client {
	if o.Client != nil {
		return o.Client
	}
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.ResponseHeaderTimeout = 30 * time.Second
	return &http.Client{Transport: t}
}

// Result says what Fetch did.
type Result struct {
	Dir        string         // the dataset's folder
	Already    bool           // it was there: nothing fetched
	Resumed    bool           // the download went on from a partial file
	Source     string         // where the archive came from
	Counts     map[string]int // files per split
	Mismatches []string       // splits whose count differs from the catalog's
}

// marker is the file Fetch writes into a dataset's folder before the folder gets
// its final name: a folder with it is complete.
const marker = ".crdgo-fetched"

// Fetch downloads and unpacks d under o.Root, unless it is already there. A
// failed or interrupted Fetch leaves no folder under the dataset's name: the
// unpacking goes to a staging folder renamed into place at the end. A partial
// download is kept and resumed by the next Fetch; an archive that turns out
// corrupt is deleted, so that the next Fetch downloads it afresh.
func Fetch(ctx context.Context, d Dataset, o Options) (Result, error) {
	if d.Manual != "" {
		return Result{}, fmt.Errorf("fetch %s: %w:\n%s", d.Name, ErrManual, d.Manual)
	}
	if o.Attempts < 1 || o.Wait <= 0 || o.StallTimeout <= 0 || o.Limits.MaxFiles < 1 || o.Limits.MaxFileBytes < 1 || o.Limits.MaxTotalBytes < 1 {
		return Result{}, fmt.Errorf("fetch %s: options %+v: attempts, waits and limits must be > 0 (start from DefaultOptions)", d.Name, o)
	}
	final := filepath.Join(o.Root, d.Dir)
	res := Result{Dir: final}
	if _, err := os.Stat(filepath.Join(final, marker)); err == nil {
		res.Already = true
		res.Counts, res.Mismatches = countSplits(final, d)
		return res, nil
	}
	if _, err := os.Lstat(final); err == nil {
		return res, fmt.Errorf("fetch %s: %s exists but was not fetched by crdgo (no %s in it): move it away, or use it as it is", d.Name, final, marker)
	}
	downloads := filepath.Join(o.Root, ".downloads")
	if err := os.MkdirAll(downloads, 0o755); err != nil {
		return res, fmt.Errorf("fetch %s: %w", d.Name, err)
	}
	archive := filepath.Join(downloads, d.Archive)
	urls := d.URLs
	if o.BaseURL != "" {
		urls = []string{strings.TrimSuffix(o.BaseURL, "/") + "/" + d.Archive}
	}
	if _, err := os.Stat(archive); err == nil {
		o.log().Info("fetch: archive already downloaded", zap.String("file", archive))
		if err := check(archive, d.Size, d.SHA256); err != nil {
			os.Remove(archive)
			return res, fmt.Errorf("fetch %s: %s: %w (deleted it: run again to download it afresh)", d.Name, archive, err)
		}
	} else {
		var err error
		if res.Resumed, err = download(ctx, urls, archive, d.Size, d.SHA256, o); err != nil {
			return res, fmt.Errorf("fetch %s: download failed (run again to resume):\n%w", d.Name, err)
		}
		res.Source = strings.Join(urls, " or ")
	}

	staging, err := os.MkdirTemp(o.Root, ".fetch-"+d.Dir+"-")
	if err != nil {
		return res, fmt.Errorf("fetch %s: %w", d.Name, err)
	}
	defer os.RemoveAll(staging) // gone after the rename; the leftovers of a failure otherwise
	lim := o.Limits
	if d.MaxBytes > 0 {
		lim.MaxTotalBytes = min(lim.MaxTotalBytes, d.MaxBytes)
	}
	if err := unpack(archive, staging, lim); err != nil {
		if errors.Is(err, ErrCorrupt) || errors.Is(err, ErrUnsafe) {
			os.Remove(archive)
			return res, fmt.Errorf("fetch %s: %s: %w (deleted it: run again to download it afresh)", d.Name, archive, err)
		}
		return res, fmt.Errorf("fetch %s: unpack %s: %w", d.Name, archive, err)
	}
	root, err := findLayout(staging, d)
	if err != nil {
		os.Remove(archive)
		return res, fmt.Errorf("fetch %s: %s: %w (deleted it)", d.Name, archive, err)
	}
	for name, target := range d.Links {
		p := filepath.Join(root, name)
		if _, err := os.Lstat(p); err == nil {
			continue // the archive has it
		}
		if err := os.Symlink(target, p); err != nil {
			return res, fmt.Errorf("fetch %s: link %s → %s: %w", d.Name, name, target, err)
		}
	}
	res.Counts, res.Mismatches = countSplits(root, d)
	for _, m := range res.Mismatches {
		o.log().Warn("fetch: split count differs from the reported one", zap.String("dataset", d.Name), zap.String("split", m))
	}
	if err := os.WriteFile(filepath.Join(root, marker), []byte(fmt.Sprintf("%s from %s\n", d.Name, res.Source)), 0o644); err != nil {
		return res, fmt.Errorf("fetch %s: %w", d.Name, err)
	}
	if err := syncFS(root); err != nil { // the files reach the disk before the name does
		return res, fmt.Errorf("fetch %s: %w", d.Name, err)
	}
	if err := os.Rename(root, final); err != nil {
		return res, fmt.Errorf("fetch %s: %w", d.Name, err)
	}
	if !o.KeepArchive {
		os.Remove(archive)
	}
	return res, nil
}

func syncFS(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return unix.Syncfs(int(f.Fd()))
}

// findLayout finds the folder holding the dataset's splits: the staging folder,
// staging/<Dir>, or its single top-level folder.
func findLayout(staging string, d Dataset) (string, error) {
	cands := []string{filepath.Join(staging, d.Dir), staging}
	if entries, err := os.ReadDir(staging); err == nil && len(entries) == 1 && entries[0].IsDir() {
		cands = append(cands, filepath.Join(staging, entries[0].Name()))
	}
	for _, c := range cands {
		ok := true
		for _, s := range d.Splits {
			if fi, err := os.Stat(filepath.Join(c, s)); err != nil || !fi.IsDir() {
				ok = false
				break
			}
		}
		if ok {
			return c, nil
		}
	}
	return "", fmt.Errorf("%w: no %s/{%s} in it", ErrCorrupt, d.Dir, strings.Join(d.Splits, ","))
}

// countSplits counts the files of each split and lists those that differ from the
// catalog's counts.
func countSplits(root string, d Dataset) (map[string]int, []string) {
	counts := map[string]int{}
	var off []string
	for _, s := range d.Splits {
		entries, _ := os.ReadDir(filepath.Join(root, s))
		for _, e := range entries {
			if e.Type().IsRegular() {
				counts[s]++
			}
		}
		if want, ok := d.Counts[s]; ok && counts[s] != want {
			off = append(off, fmt.Sprintf("%s: %d files, reported %d", s, counts[s], want))
		}
	}
	slices.Sort(off)
	return counts, off
}
