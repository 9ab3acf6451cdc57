package storage

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"path"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/minio/minio-go/v7/pkg/s3utils"
)

// DefaultEndpoint is the S3 endpoint of a URL that names none.
const DefaultEndpoint = "s3.amazonaws.com"

// Location is a parsed store URL:
//
//	file:///abs/dir                 a folder (a plain path, absolute or relative, too)
//	s3://BUCKET[/PREFIX][?endpoint=HOST:PORT&region=R&tls=false&path-style=true]
//
// An s3 URL's query takes endpoint (default s3.amazonaws.com; "http://" or
// "https://" in front of it sets tls), region (default: asked of the server),
// tls (default true) and path-style (true, false or auto, the default: path style
// for IP addresses and most hosts that are not AWS). Anything else in the query,
// and credentials in the URL, are errors: credentials come from Options, the
// environment or a file, never from a URL that ends up in logs.
type Location struct {
	Scheme string // "file" or "s3"
	Dir    string // file: the folder, absolute and clean

	Bucket    string
	Prefix    string // s3: "" or a key prefix with no leading or trailing slash
	Endpoint  string // s3: host or host:port
	Region    string // s3: "" asks the server
	TLS       bool   // s3: https
	PathStyle string // s3: "auto", "true" or "false"
}

// ParseURL parses a store URL; see Location.
func ParseURL(raw string) (Location, error) {
	bad := func(format string, a ...any) (Location, error) {
		return Location{}, fmt.Errorf("storage: URL %q: %s", redact(raw), fmt.Sprintf(format, a...))
	}
	if raw == "" {
		return bad("empty; want file:///dir, a path, or s3://bucket/prefix?endpoint=host:port")
	}
	if strings.ContainsAny(raw, "\x00") {
		return bad("contains NUL")
	}
	if !strings.Contains(raw, "://") {
		abs, err := filepath.Abs(raw)
		if err != nil {
			return bad("%v", err)
		}
		return Location{Scheme: "file", Dir: abs}, nil
	}
	u, err := url.Parse(raw)
	if err != nil {
		return bad("%v", errors.Unwrap(err))
	}
	if u.User != nil {
		return bad("credentials in a URL are not accepted (URLs end up in logs): use the access-key flags, AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or a credentials file")
	}
	if u.Fragment != "" || u.RawFragment != "" || strings.Contains(raw, "#") {
		return bad("a fragment (#…) means nothing here")
	}
	switch u.Scheme {
	case "file":
		if u.Host != "" && u.Host != "localhost" {
			return bad("file URLs name a local folder: file:///dir (host %q)", u.Host)
		}
		if u.RawQuery != "" || u.ForceQuery {
			return bad("file URLs take no query")
		}
		if u.Opaque != "" || !strings.HasPrefix(u.Path, "/") {
			return bad("want an absolute path: file:///dir")
		}
		return Location{Scheme: "file", Dir: path.Clean(u.Path)}, nil
	case "s3":
	default:
		return bad("scheme %q: want file or s3", u.Scheme)
	}
	loc := Location{Scheme: "s3", Bucket: u.Host, Endpoint: DefaultEndpoint, TLS: true, PathStyle: "auto"}
	if err := s3utils.CheckValidBucketNameStrict(loc.Bucket); err != nil {
		return bad("bucket %q: %v", loc.Bucket, err)
	}
	if u.Opaque != "" {
		return bad("want s3://bucket/prefix")
	}
	loc.Prefix = strings.TrimSuffix(strings.TrimPrefix(u.Path, "/"), "/")
	if loc.Prefix != "" && !ValidKey(loc.Prefix) {
		return bad("prefix %q: want a slash-separated path with no empty, \".\" or \"..\" element", loc.Prefix)
	}
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return bad("query: %v", err)
	}
	tlsSet := ""
	for k, vs := range q {
		if len(vs) != 1 {
			return bad("%s given %d times", k, len(vs))
		}
		v := vs[0]
		switch k {
		case "endpoint":
			ep, tls, err := parseEndpoint(v)
			if err != nil {
				return bad("endpoint %q: %v", v, err)
			}
			loc.Endpoint = ep
			if tls != "" {
				if tlsSet != "" && tlsSet != tls {
					return bad("endpoint %q contradicts tls=%s", v, tlsSet)
				}
				tlsSet = tls
				loc.TLS = tls == "true"
			}
		case "region":
			if v == "" || strings.ContainsFunc(v, func(r rune) bool {
				return !(r == '-' || r == '_' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9')
			}) {
				return bad("region %q: want letters, digits, - and _", v)
			}
			loc.Region = v
		case "tls":
			b, err := strconv.ParseBool(v)
			if err != nil {
				return bad("tls %q: want true or false", v)
			}
			s := strconv.FormatBool(b)
			if tlsSet != "" && tlsSet != s {
				return bad("tls=%s contradicts the endpoint's scheme", v)
			}
			tlsSet = s
			loc.TLS = b
		case "path-style":
			switch v {
			case "auto":
			default:
				b, err := strconv.ParseBool(v)
				if err != nil {
					return bad("path-style %q: want true, false or auto", v)
				}
				v = strconv.FormatBool(b)
			}
			loc.PathStyle = v
		default:
			return bad("unknown parameter %q: want endpoint, region, tls or path-style", k)
		}
	}
	return loc, nil
}

// parseEndpoint checks host[:port], with an optional http:// or https:// in front
// (which returns tls "false" or "true").
func parseEndpoint(s string) (hostport, tls string, err error) {
	switch {
	case strings.HasPrefix(s, "http://"):
		s, tls = strings.TrimPrefix(s, "http://"), "false"
	case strings.HasPrefix(s, "https://"):
		s, tls = strings.TrimPrefix(s, "https://"), "true"
	}
	s = strings.TrimSuffix(s, "/")
	if s == "" || strings.ContainsAny(s, "/?#@ \t\r\n\\") {
		return "", "", errors.New("want host or host:port")
	}
	host := s
	if strings.HasPrefix(s, "[") || strings.Count(s, ":") == 1 {
		h, p, err := net.SplitHostPort(s)
		if err != nil {
			return "", "", errors.New("want host or host:port")
		}
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > 65535 || p != strconv.Itoa(n) {
			return "", "", fmt.Errorf("port %q: want 1 to 65535", p)
		}
		host = h
	} else if strings.Contains(s, ":") {
		return "", "", errors.New("an IPv6 address goes in brackets: [::1]:9000")
	}
	if host == "" {
		return "", "", errors.New("no host")
	}
	return s, tls, nil
}

// String is the canonical URL of l; ParseURL(l.String()) gives l back.
func (l Location) String() string {
	if l.Scheme == "file" {
		return (&url.URL{Scheme: "file", Path: l.Dir}).String()
	}
	q := []string{"endpoint=" + url.QueryEscape(l.Endpoint)}
	if l.Region != "" {
		q = append(q, "region="+url.QueryEscape(l.Region))
	}
	if !l.TLS {
		q = append(q, "tls=false")
	}
	if l.PathStyle != "auto" && l.PathStyle != "" {
		q = append(q, "path-style="+l.PathStyle)
	}
	u := url.URL{Scheme: "s3", Host: l.Bucket, RawQuery: strings.Join(q, "&")}
	if l.Prefix != "" {
		u.Path = "/" + l.Prefix
	}
	return u.String()
}

// Join returns l with sub appended to its folder or prefix.
func (l Location) Join(sub string) Location {
	sub = strings.Trim(sub, "/")
	if sub == "" {
		return l
	}
	if l.Scheme == "file" {
		l.Dir = filepath.Join(l.Dir, filepath.FromSlash(sub))
		return l
	}
	if l.Prefix == "" {
		l.Prefix = sub
	} else {
		l.Prefix += "/" + sub
	}
	return l
}

// redact drops anything that looks like credentials (user:password@) from a URL
// before it goes into an error.
func redact(raw string) string {
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return raw
	}
	end := strings.IndexAny(rest, "/?#")
	if end < 0 {
		end = len(rest)
	}
	if at := strings.LastIndex(rest[:end], "@"); at >= 0 {
		return scheme + "://REDACTED@" + rest[at+1:]
	}
	return raw
}
