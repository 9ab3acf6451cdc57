package fetch

import (
	"archive/tar"
	"archive/zip"
	"bufio"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
)

// Limits bound what an archive may unpack to.
type Limits struct {
	MaxFiles      int   // entries
	MaxFileBytes  int64 // one file
	MaxTotalBytes int64 // all files
}

// DefaultLimits allows 500,000 entries, 256 MiB per file and 32 GiB in all: far
// above the real datasets (edges2shoes-r: 50,025 files, about 2 GB), far below a
// bomb's expansion.
func DefaultLimits() Limits {
	return Limits{MaxFiles: 500_000, MaxFileBytes: 256 << 20, MaxTotalBytes: 32 << 30}
}

// ErrCorrupt wraps the errors of an archive that cannot be read to its end.
var ErrCorrupt = errors.New("archive corrupt")

// ErrUnsafe wraps the errors of an archive that would write outside its folder,
// make links or devices, or exceed the limits.
var ErrUnsafe = errors.New("archive refused")

// unpack extracts the archive at src (zip or tar.gz, by magic bytes) into the
// empty folder dst.
func unpack(src, dst string, lim Limits) error {
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	var magic [4]byte
	if _, err := io.ReadFull(f, magic[:]); err != nil {
		return fmt.Errorf("%w: %d bytes at most: %v", ErrCorrupt, len(magic), err)
	}
	u := &unpacker{dst: dst, lim: lim}
	switch {
	case bytes.Equal(magic[:], []byte("PK\x03\x04")) || bytes.Equal(magic[:], []byte("PK\x05\x06")):
		fi, err := f.Stat()
		if err != nil {
			return err
		}
		return u.zip(f, fi.Size())
	case magic[0] == 0x1f && magic[1] == 0x8b:
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return err
		}
		return u.tarGz(bufio.NewReaderSize(f, 1<<20))
	}
	return fmt.Errorf("%w: neither zip nor gzip (starts %q)", ErrCorrupt, magic[:])
}

type unpacker struct {
	dst   string
	lim   Limits
	files int
	bytes int64
}

// target checks an entry's name and returns where it goes.
func (u *unpacker) target(name string) (string, error) {
	if name == "" || strings.ContainsAny(name, "\\\x00") || strings.HasPrefix(name, "/") {
		return "", fmt.Errorf("%w: entry %q: not a relative slash-separated path", ErrUnsafe, name)
	}
	clean := path.Clean(name)
	if clean == "." {
		return u.dst, nil
	}
	for elem := range strings.SplitSeq(clean, "/") {
		if elem == ".." {
			return "", fmt.Errorf("%w: entry %q: leaves the folder", ErrUnsafe, name)
		}
	}
	return filepath.Join(u.dst, filepath.FromSlash(clean)), nil
}

func (u *unpacker) count() error {
	u.files++
	if u.files > u.lim.MaxFiles {
		return fmt.Errorf("%w: more than %d entries", ErrUnsafe, u.lim.MaxFiles)
	}
	return nil
}

func (u *unpacker) dir(name string) error {
	p, err := u.target(name)
	if err != nil {
		return err
	}
	if err := u.count(); err != nil {
		return err
	}
	return os.MkdirAll(p, 0o755)
}

// file writes one regular file, counting its bytes as they come (headers may lie).
func (u *unpacker) file(name string, r io.Reader) error {
	p, err := u.target(name)
	if err != nil {
		return err
	}
	if err := u.count(); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(p, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if errors.Is(err, os.ErrExist) {
		return fmt.Errorf("%w: entry %q appears twice", ErrUnsafe, name)
	}
	if err != nil {
		return err
	}
	defer f.Close()
	limit := min(u.lim.MaxFileBytes, u.lim.MaxTotalBytes-u.bytes)
	n, err := io.Copy(f, io.LimitReader(r, limit+1))
	u.bytes += n
	if err != nil {
		return fmt.Errorf("%w: entry %q: %v", ErrCorrupt, name, err)
	}
	if n > limit {
		if limit < u.lim.MaxFileBytes {
			return fmt.Errorf("%w: more than %d bytes unpacked in all", ErrUnsafe, u.lim.MaxTotalBytes)
		}
		return fmt.Errorf("%w: entry %q: larger than %d bytes", ErrUnsafe, name, u.lim.MaxFileBytes)
	}
	return f.Close()
}

func (u *unpacker) zip(r io.ReaderAt, size int64) error {
	zr, err := zip.NewReader(r, size)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	if len(zr.File) > u.lim.MaxFiles {
		return fmt.Errorf("%w: %d entries, more than %d", ErrUnsafe, len(zr.File), u.lim.MaxFiles)
	}
	for _, zf := range zr.File {
		mode := zf.Mode()
		switch {
		case mode.IsDir():
			if err := u.dir(zf.Name); err != nil {
				return err
			}
		case mode.IsRegular():
			rc, err := zf.Open()
			if err != nil {
				return fmt.Errorf("%w: entry %q: %v", ErrCorrupt, zf.Name, err)
			}
			err = u.file(zf.Name, rc) // zip's reader checks the CRC-32 at the end
			rc.Close()
			if err != nil {
				return err
			}
		default:
			return fmt.Errorf("%w: entry %q is a %v, not a file or folder", ErrUnsafe, zf.Name, mode.Type())
		}
	}
	return nil
}

func (u *unpacker) tarGz(r io.Reader) error {
	gz, err := gzip.NewReader(r)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	defer gz.Close()
	tr := tar.NewReader(gz)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("%w: %v", ErrCorrupt, err)
		}
		switch h.Typeflag {
		case tar.TypeDir:
			err = u.dir(h.Name)
		case tar.TypeReg:
			err = u.file(h.Name, tr)
		case tar.TypeXGlobalHeader:
			continue
		default:
			return fmt.Errorf("%w: entry %q is of tar type %q, not a file or folder", ErrUnsafe, h.Name, h.Typeflag)
		}
		if err != nil {
			return err
		}
	}
	// Reading to the end checks gzip's CRC-32 and size of the whole stream.
	if _, err := io.Copy(io.Discard, gz); err != nil {
		return fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	return nil
}
