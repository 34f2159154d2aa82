package tlscert_test

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/livepush/livepush/internal/testlog"

	"github.com/livepush/livepush/internal/tlscert"
	"github.com/livepush/livepush/internal/tlscert/tlscerttest"
)

// serve runs a TLS server on a loopback port whose certificates come from r; each connection completes its
// handshake and is closed. It returns the address.
func serve(t *testing.T, r *tlscert.Reloader) string {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", r.TLSConfig())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.(*tls.Conn).Handshake()
			}()
		}
	}()
	return ln.Addr().String()
}

// served returns the certificate a new connection to addr is shown; the client trusts the pairs given.
func served(t *testing.T, addr string, trusted ...tlscerttest.Pair) *x509.Certificate {
	t.Helper()
	pool := x509.NewCertPool()
	for _, p := range trusted {
		pool.AddCert(p.Cert)
	}
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr,
		&tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})
	if err != nil {
		t.Fatalf("handshake with %s: %v", addr, err)
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0]
}

// waitServed waits until new connections are shown want.
func waitServed(t *testing.T, addr string, want tlscerttest.Pair, trusted ...tlscerttest.Pair) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := served(t, addr, trusted...)
		if got.Equal(want.Cert) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("new connections still see %q after 5s, want %q", got.Subject.CommonName, want.Cert.Subject.CommonName)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestNewConnectionsSeeReplacedCertificate(t *testing.T) {
	first, second := tlscerttest.New(t, "first"), tlscerttest.New(t, "second")
	certFile, keyFile := first.WriteFiles(t)
	r, err := tlscert.New(tlscert.Config{CertFile: certFile, KeyFile: keyFile, CheckEvery: 50 * time.Millisecond,
		Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	addr := serve(t, r)
	if got := served(t, addr, first, second); !got.Equal(first.Cert) {
		t.Fatalf("served %q, want the first certificate", got.Subject.CommonName)
	}
	second.Write(t, certFile, keyFile)
	waitServed(t, addr, second, first, second)
}

func TestBadNewPairKeepsTheOneInUse(t *testing.T) {
	good, other, next := tlscerttest.New(t, "good"), tlscerttest.New(t, "other"), tlscerttest.New(t, "next")
	certFile, keyFile := good.WriteFiles(t)
	var log testlog.Buffer
	r, err := tlscert.New(tlscert.Config{CertFile: certFile, KeyFile: keyFile, CheckEvery: 20 * time.Millisecond,
		Log: slog.New(slog.NewTextHandler(&log, nil))})
	if err != nil {
		t.Fatal(err)
	}
	addr := serve(t, r)

	// Halfway through a rotation: the new certificate is there, its key is not yet.
	(tlscerttest.Pair{CertPEM: other.CertPEM, KeyPEM: good.KeyPEM}).Write(t, certFile, keyFile)
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(log.String(), "do not load") {
		if time.Now().After(deadline) {
			t.Fatalf("no error logged for a mismatched pair; log:\n%s", log.String())
		}
		if got := served(t, addr, good, other); !got.Equal(good.Cert) {
			t.Fatalf("served %q from a mismatched pair, want the good one kept", got.Subject.CommonName)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n := strings.Count(log.String(), "do not load"); n != 1 {
		t.Errorf("the same bad pair logged %d times, want once", n)
	}
	// Garbage, then files gone: still the good one.
	if err := os.WriteFile(certFile, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	time.Sleep(60 * time.Millisecond)
	if got := served(t, addr, good); !got.Equal(good.Cert) {
		t.Fatalf("served %q after garbage was written, want the good one kept", got.Subject.CommonName)
	}
	os.Remove(certFile)
	time.Sleep(60 * time.Millisecond)
	if got := served(t, addr, good); !got.Equal(good.Cert) {
		t.Fatalf("served %q after the file was removed, want the good one kept", got.Subject.CommonName)
	}
	if !strings.Contains(log.String(), "unreadable") {
		t.Errorf("no error logged for a missing file; log:\n%s", log.String())
	}
	// The rotation completes: the next change is tried again.
	next.Write(t, certFile, keyFile)
	waitServed(t, addr, next, good, next)
}

func TestNewRefusesABadPair(t *testing.T) {
	a, b := tlscerttest.New(t, "a"), tlscerttest.New(t, "b")
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	aCert, aKey, bKey := write("a.pem", a.CertPEM), write("a-key.pem", a.KeyPEM), write("b-key.pem", b.KeyPEM)
	garbage := write("garbage.pem", []byte("hello"))
	missing := filepath.Join(dir, "missing.pem")
	for _, tc := range []struct {
		name, cert, key string
		want            string // in the error
	}{
		{"missing certificate", missing, aKey, "missing.pem"},
		{"missing key", aCert, missing, "missing.pem"},
		{"not PEM", garbage, aKey, "garbage.pem"},
		{"key of another certificate", aCert, bKey, "does not match"},
		{"key given as certificate", aKey, aKey, "a-key.pem"},
	} {
		_, err := tlscert.New(tlscert.Config{CertFile: tc.cert, KeyFile: tc.key})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one mentioning %q", tc.name, err, tc.want)
		}
	}
	if _, err := tlscert.New(tlscert.Config{CertFile: aCert}); !errors.Is(err, tlscert.ErrNoFiles) {
		t.Errorf("no key file: %v, want ErrNoFiles", err)
	}
}
