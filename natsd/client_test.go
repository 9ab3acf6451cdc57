package natsd

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nkeys"
	"go.uber.org/zap/zaptest"
)

func clientConfig(url string) ClientConfig {
	c := DefaultClientConfig()
	c.URL = url
	return c
}

func TestConnectUserPassword(t *testing.T) {
	cfg := DefaultConfig()
	cfg.User, cfg.Password = "crd", "s3cret"
	s := start(t, cfg)
	log := zaptest.NewLogger(t)

	_, err := Connect(clientConfig(s.ClientURL()), log)
	if err == nil || !strings.Contains(err.Error(), "requires credentials and none were given") {
		t.Fatalf("connect without credentials: %v; want a clear 'requires credentials' error", err)
	}
	bad := clientConfig(s.ClientURL())
	bad.User, bad.Password = "crd", "wrong"
	_, err = Connect(bad, log)
	if err == nil || !strings.Contains(err.Error(), "refused these credentials") || strings.Contains(err.Error(), "wrong") {
		t.Fatalf("connect with a wrong password: %v; want 'refused these credentials' without the password", err)
	}
	good := clientConfig(s.ClientURL())
	good.User, good.Password = "crd", "s3cret"
	nc, err := Connect(good, log)
	if err != nil {
		t.Fatal(err)
	}
	nc.Close()
}

func TestConnectNKey(t *testing.T) {
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := kp.PublicKey()
	seed, _ := kp.Seed()
	seedFile := filepath.Join(t.TempDir(), "user.nk")
	if err := os.WriteFile(seedFile, seed, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.User, cfg.Password = "ops", "pw" // both ways at once
	cfg.NKeys = []string{pub}
	s := start(t, cfg)
	c := clientConfig(s.ClientURL())
	c.NKeySeedFile = seedFile
	nc, err := Connect(c, zaptest.NewLogger(t))
	if err != nil {
		t.Fatalf("connect with the nkey: %v", err)
	}
	nc.Close()
	c = clientConfig(s.ClientURL())
	c.User, c.Password = "ops", "pw"
	if nc, err = Connect(c, zaptest.NewLogger(t)); err != nil {
		t.Fatalf("connect with user/password beside nkeys: %v", err)
	}
	nc.Close()
	if _, err := Connect(clientConfig(s.ClientURL()), zaptest.NewLogger(t)); err == nil {
		t.Fatal("connect without credentials succeeded")
	}
	if err := (Config{NKeys: []string{"SUAXXX"}, ReadyTimeout: time.Second}).Validate(); err == nil || !strings.Contains(err.Error(), "natsd.nkeys") {
		t.Errorf("Validate with a seed as a public key: %v; want natsd.nkeys", err)
	}
}

// writeCerts writes a CA and a server certificate for 127.0.0.1 (PEM).
func writeCerts(t *testing.T) (ca, cert, key string) {
	t.Helper()
	dir := t.TempDir()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "crdgo test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	srvKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	srvTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		KeyUsage: x509.KeyUsageDigitalSignature,
	}
	srvDER, err := x509.CreateCertificate(rand.Reader, srvTmpl, caTmpl, &srvKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(srvKey)
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	return write("ca.pem", "CERTIFICATE", caDER), write("server.pem", "CERTIFICATE", srvDER), write("server-key.pem", "EC PRIVATE KEY", keyDER)
}

func TestConnectTLS(t *testing.T) {
	ca, cert, key := writeCerts(t)
	cfg := DefaultConfig()
	cfg.TLS = TLSConfig{Cert: cert, Key: key}
	cfg.User, cfg.Password = "crd", "pw"
	s := start(t, cfg)
	c := clientConfig(s.ClientURL())
	c.User, c.Password, c.CA, c.RequireTLS = "crd", "pw", ca, true
	nc, err := Connect(c, zaptest.NewLogger(t))
	if err != nil {
		t.Fatalf("connect over TLS: %v", err)
	}
	if !nc.TLSRequired() {
		t.Error("connection does not use TLS")
	}
	nc.Close()
	c.CA = "" // the system roots do not know the test CA
	if _, err := Connect(c, zaptest.NewLogger(t)); err == nil || !strings.Contains(err.Error(), "TLS") {
		t.Fatalf("connect without the CA: %v; want a TLS error", err)
	}
}

func TestRedact(t *testing.T) {
	if got := redact("nats://u:p@h:1,nats://h2:2"); got != "nats://[redacted]@h:1,nats://h2:2" {
		t.Errorf("redact = %q", got)
	}
}
