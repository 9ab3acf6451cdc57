package storage

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"strings"
)

// resolveCredentials picks the S3 keys: Options' (flags), then the credentials
// file, then AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY. from says which, for a
// log line; the keys themselves go nowhere else.
func resolveCredentials(o Options) (access, secret, from string, err error) {
	if o.AccessKey != "" {
		return o.AccessKey, o.SecretKey, "options", nil
	}
	if o.CredentialsFile != "" {
		data, err := os.ReadFile(o.CredentialsFile)
		if err != nil {
			return "", "", "", fmt.Errorf("credentials file: %w", err)
		}
		profile := o.Profile
		if profile == "" {
			profile = "default"
		}
		a, s, err := ParseCredentials(data, profile)
		if err != nil {
			return "", "", "", fmt.Errorf("credentials file %s: %w", o.CredentialsFile, err)
		}
		return a, s, "file " + o.CredentialsFile, nil
	}
	a, s := o.getenv("AWS_ACCESS_KEY_ID"), o.getenv("AWS_SECRET_ACCESS_KEY")
	switch {
	case a != "" && s != "":
		return a, s, "environment", nil
	case a != "" || s != "":
		return "", "", "", errors.New("AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY: set both or neither")
	}
	return "", "", "", errors.New("no credentials: give an access key and a secret key, a credentials file, or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
}

// ParseCredentials reads the keys of one profile from an AWS shared-credentials
// file:
//
//	[default]
//	aws_access_key_id = …
//	aws_secret_access_key = …
//
// Comments start with # or ;. Errors name lines, never values.
func ParseCredentials(data []byte, profile string) (access, secret string, err error) {
	if len(data) > 1<<20 {
		return "", "", fmt.Errorf("%d bytes: too large for a credentials file", len(data))
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	section, found := "", false
	for line := 1; sc.Scan(); line++ {
		t := strings.TrimSpace(sc.Text())
		switch {
		case t == "" || t[0] == '#' || t[0] == ';':
			continue
		case t[0] == '[':
			if !strings.HasSuffix(t, "]") {
				return "", "", fmt.Errorf("line %d: a section header without ]", line)
			}
			section = strings.TrimSpace(t[1 : len(t)-1])
			section = strings.TrimSpace(strings.TrimPrefix(section, "profile "))
			if section == profile {
				found = true
			}
			continue
		}
		k, v, ok := strings.Cut(t, "=")
		if !ok {
			return "", "", fmt.Errorf("line %d: want key = value", line)
		}
		if section != profile {
			continue
		}
		k, v = strings.ToLower(strings.TrimSpace(k)), strings.TrimSpace(v)
		switch k {
		case "aws_access_key_id":
			access = v
		case "aws_secret_access_key":
			secret = v
		}
	}
	if err := sc.Err(); err != nil {
		return "", "", err
	}
	switch {
	case !found:
		return "", "", fmt.Errorf("no [%s] profile", profile)
	case access == "" || secret == "":
		return "", "", fmt.Errorf("profile [%s]: want both aws_access_key_id and aws_secret_access_key", profile)
	}
	return access, secret, nil
}
