package storage_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/crdgo/crdgo/storage"
)

func TestParseURL(t *testing.T) {
	wd, _ := os.Getwd()
	for _, c := range []struct {
		in   string
		want storage.Location
	}{
		{"file:///data/crd", storage.Location{Scheme: "file", Dir: "/data/crd"}},
		{"file:///data/crd/", storage.Location{Scheme: "file", Dir: "/data/crd"}},
		{"file://localhost/data/../crd", storage.Location{Scheme: "file", Dir: "/crd"}},
		{"/data/x", storage.Location{Scheme: "file", Dir: "/data/x"}},
		{"data", storage.Location{Scheme: "file", Dir: filepath.Join(wd, "data")}},
		{"s3://crd", storage.Location{Scheme: "s3", Bucket: "crd", Endpoint: "s3.amazonaws.com", TLS: true, PathStyle: "auto"}},
		{"s3://crd/datasets/edges2shapes/?endpoint=127.0.0.1:9000&tls=false&path-style=true&region=us-east-1",
			storage.Location{Scheme: "s3", Bucket: "crd", Prefix: "datasets/edges2shapes", Endpoint: "127.0.0.1:9000", Region: "us-east-1", TLS: false, PathStyle: "true"}},
		{"s3://my.bucket-1/a?endpoint=http://minio:9000", storage.Location{Scheme: "s3", Bucket: "my.bucket-1", Prefix: "a", Endpoint: "minio:9000", TLS: false, PathStyle: "auto"}},
		{"s3://bkt/a?endpoint=https://[::1]:9000/&path-style=0", storage.Location{Scheme: "s3", Bucket: "bkt", Prefix: "a", Endpoint: "[::1]:9000", TLS: true, PathStyle: "false"}},
		{"s3://bkt/sp%20ace", storage.Location{Scheme: "s3", Bucket: "bkt", Prefix: "sp ace", Endpoint: "s3.amazonaws.com", TLS: true, PathStyle: "auto"}},
	} {
		got, err := storage.ParseURL(c.in)
		if err != nil {
			t.Errorf("ParseURL(%q): %v", c.in, err)
			continue
		}
		if got != c.want {
			t.Errorf("ParseURL(%q) = %+v; want %+v", c.in, got, c.want)
		}
		back, err := storage.ParseURL(got.String())
		if err != nil || back != got {
			t.Errorf("ParseURL(%q).String() = %q parses to %+v, %v; want the same location", c.in, got.String(), back, err)
		}
	}
}

func TestParseURLErrors(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"", "empty"},
		{"http://x/y", "scheme"},
		{"file://host/x", "local folder"},
		{"file:///x?y=1", "no query"},
		{"s3://AKIA:secretvalue@bucket/x", "credentials"},
		{"s3://user@bucket/x", "credentials"},
		{"s3://bkt/x#frag", "fragment"},
		{"s3://Bad_Bucket/x", "bucket"},
		{"s3://ab/x", "bucket"},
		{"s3:///x", "bucket"},
		{"s3://bkt/a//c", "prefix"},
		{"s3://bkt/a/../c", "prefix"},
		{"s3://bkt/x?endpoint=", "endpoint"},
		{"s3://bkt/x?endpoint=host:99999", "port"},
		{"s3://bkt/x?endpoint=host/path", "endpoint"},
		{"s3://bkt/x?endpoint=::1:9000", "brackets"},
		{"s3://bkt/x?tls=maybe", "tls"},
		{"s3://bkt/x?endpoint=http://h:1&tls=true", "contradicts"},
		{"s3://bkt/x?path-style=sideways", "path-style"},
		{"s3://bkt/x?region=us east", "region"},
		{"s3://bkt/x?endpoint=a:1&endpoint=b:2", "2 times"},
		{"s3://bkt/x?acess_key=k", "unknown parameter"},
	} {
		_, err := storage.ParseURL(c.in)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("ParseURL(%q) = %v; want an error about %q", c.in, err, c.want)
		}
		if err != nil && strings.Contains(err.Error(), "secretvalue") {
			t.Errorf("ParseURL(%q) = %v: the error shows the secret", c.in, err)
		}
	}
}

func TestLocationJoin(t *testing.T) {
	l, _ := storage.ParseURL("s3://bkt?endpoint=h:1")
	if got := l.Join("datasets/").Join("/x").String(); got != "s3://bkt/datasets/x?endpoint=h%3A1" {
		t.Errorf("Join = %q", got)
	}
	f, _ := storage.ParseURL("/d")
	if got := f.Join("a/b").Dir; got != "/d/a/b" {
		t.Errorf("Join = %q", got)
	}
}

func TestParseCredentials(t *testing.T) {
	file := []byte(`# comment
[default]
aws_access_key_id = AKIADEFAULT
aws_secret_access_key=s3cr3t/default

[profile ci]
; another comment
AWS_ACCESS_KEY_ID = ci-key
aws_secret_access_key = ci-secret
region = us-east-1
`)
	for _, c := range []struct{ profile, ak, sk string }{{"default", "AKIADEFAULT", "s3cr3t/default"}, {"ci", "ci-key", "ci-secret"}} {
		ak, sk, err := storage.ParseCredentials(file, c.profile)
		if err != nil || ak != c.ak || sk != c.sk {
			t.Errorf("ParseCredentials(%s) = %q, %q, %v; want %q, %q", c.profile, ak, sk, err, c.ak, c.sk)
		}
	}
	for _, c := range []struct{ in, profile, want string }{
		{"[default]\naws_access_key_id = a\n", "default", "both"},
		{"[x]\naws_access_key_id = a\naws_secret_access_key = b\n", "default", "no [default]"},
		{"[default\n", "default", "without ]"},
		{"[default]\njunk-line-with-SECRET\n", "default", "line 2"},
	} {
		_, _, err := storage.ParseCredentials([]byte(c.in), c.profile)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("ParseCredentials(%q) = %v; want an error about %q", c.in, err, c.want)
		}
		if err != nil && strings.Contains(err.Error(), "SECRET") {
			t.Errorf("ParseCredentials(%q) = %v: the error shows the line", c.in, err)
		}
	}
}

func FuzzParseURL(f *testing.F) {
	for _, s := range []string{
		"file:///data/crd", "data/x", "s3://crd/datasets?endpoint=127.0.0.1:9000&tls=false&path-style=true",
		"s3://bkt/a?endpoint=https://[::1]:9000/", "s3://u:p@b/x", "s3://bkt/%zz", "s3://bkt/a%2Fb", "s3://bkt?region=x&tls=1",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		loc, err := storage.ParseURL(s)
		if err != nil {
			return
		}
		if loc.Scheme == "s3" && loc.Prefix != "" && !storage.ValidKey(loc.Prefix) {
			t.Fatalf("ParseURL(%q).Prefix = %q: not a valid key", s, loc.Prefix)
		}
		back, err := storage.ParseURL(loc.String())
		if err != nil || back != loc {
			t.Fatalf("ParseURL(%q) = %+v; its String %q parses to %+v, %v", s, loc, loc.String(), back, err)
		}
	})
}

func FuzzParseCredentials(f *testing.F) {
	f.Add([]byte("[default]\naws_access_key_id = a\naws_secret_access_key = b\n"), "default")
	f.Add([]byte("[profile x]\naws_access_key_id=a\n"), "x")
	f.Add([]byte("[\n=\n"), "")
	f.Fuzz(func(t *testing.T, data []byte, profile string) {
		ak, sk, err := storage.ParseCredentials(data, profile)
		if err == nil && (ak == "" || sk == "") {
			t.Fatalf("ParseCredentials(%q, %q) = %q, %q with no error", data, profile, ak, sk)
		}
	})
}
