package main

import (
	"bufio"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// memoryBudget is the memory a command may use, bytes: --max-memory when given
// (flag), else what is free now: MemAvailable in /proc/meminfo, lowered to the
// room left under the cgroup's memory.max and under RLIMIT_AS (ulimit -v) when
// they are set. from says where the number comes from; 0 means unknown.
func memoryBudget(flag string) (bytes int64, from string, err error) {
	if flag != "" {
		b, err := parseBytes(flag)
		if err != nil {
			return 0, "", fmt.Errorf("--max-memory %q: %w", flag, err)
		}
		return b, "--max-memory", nil
	}
	if v, ok := meminfo("MemAvailable"); ok {
		bytes, from = v, "MemAvailable in /proc/meminfo"
	}
	if limit, ok := readInt("/sys/fs/cgroup/memory.max"); ok {
		cur, _ := readInt("/sys/fs/cgroup/memory.current")
		if room := limit - cur; bytes == 0 || room < bytes {
			bytes, from = max(room, 0), "the cgroup's memory.max less memory.current"
		}
	}
	var rl syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_AS, &rl) == nil && rl.Cur != math.MaxUint64 && rl.Cur < math.MaxInt64 {
		used, _ := status("VmSize")
		if room := int64(rl.Cur) - used; bytes == 0 || room < bytes {
			bytes, from = max(room, 0), "RLIMIT_AS (ulimit -v) less this process's address space"
		}
	}
	return bytes, from, nil
}

// meminfo reads a "Key: N kB" line of /proc/meminfo, in bytes.
func meminfo(key string) (int64, bool) { return kbLine("/proc/meminfo", key) }

// status reads a "Key: N kB" line of /proc/self/status, in bytes.
func status(key string) (int64, bool) { return kbLine("/proc/self/status", key) }

func kbLine(path, key string) (int64, bool) {
	f, err := os.Open(path)
	if err != nil {
		return 0, false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || k != key {
			continue
		}
		n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		return n << 10, err == nil
	}
	return 0, false
}

// readInt reads a file holding one integer ("max" is no limit).
func readInt(path string) (int64, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, false
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	return n, err == nil
}

// parseBytes parses "4G", "512MiB", "1.5GB", "1000000" (K, M, G, T are powers of 1024).
func parseBytes(s string) (int64, error) {
	t := strings.TrimSpace(s)
	t = strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(t, "iB"), "B"), "b")
	mul := 1.0
	if n := len(t); n > 0 {
		switch t[n-1] {
		case 'k', 'K':
			mul, t = 1<<10, t[:n-1]
		case 'm', 'M':
			mul, t = 1<<20, t[:n-1]
		case 'g', 'G':
			mul, t = 1<<30, t[:n-1]
		case 't', 'T':
			mul, t = 1<<40, t[:n-1]
		}
	}
	v, err := strconv.ParseFloat(strings.TrimSpace(t), 64)
	if err != nil || !(v > 0) || v*mul >= math.MaxInt64 {
		return 0, fmt.Errorf("want a size such as 4G, 512M or 1000000 (bytes)")
	}
	return int64(v * mul), nil
}
