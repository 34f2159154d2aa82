package main

import (
	"crypto/tls"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	sse "github.com/tmaxmax/go-sse"

	"github.com/livepush/livepush/internal/cli"
	"github.com/livepush/livepush/internal/tlscert/tlscerttest"
)

// trustingClient speaks only the protocols set by protocols and trusts the given certificates.
func trustingClient(t *testing.T, protocols func(*http.Protocols), trusted ...tlscerttest.Pair) *http.Client {
	t.Helper()
	var p http.Protocols
	protocols(&p)
	cfg := &tls.Config{RootCAs: trusted[0].Pool()}
	for _, pair := range trusted[1:] {
		cfg.RootCAs.AddCert(pair.Cert)
	}
	tr := &http.Transport{Protocols: &p, TLSClientConfig: cfg}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 20 * time.Second}
}

// The edge as an operator runs it in front of browsers: HTTPS with HTTP/2, its certificate renewed in place.
func TestServesHTTP2OverTLSAndReloadsItsCertificate(t *testing.T) {
	first, second := tlscerttest.New(t, "first"), tlscerttest.New(t, "second")
	certFile, keyFile := first.WriteFiles(t)
	base, logs := start(t, map[string]string{"PUSH_TLS_CERT": certFile, "PUSH_TLS_KEY": keyFile},
		"-data", t.TempDir(), "-rate", "200")
	secure := "https" + strings.TrimPrefix(base, "http")
	for deadline := time.Now().Add(15 * time.Second); !strings.Contains(logs.String(), "https://localhost:"); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) { // the address to open is logged once the edge is ready
			t.Errorf("the log does not give the https address to open:\n%s", logs)
			break
		}
	}
	client := trustingClient(t, func(p *http.Protocols) { p.SetHTTP2(true) }, first, second)
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		resp, err := client.Get(secure + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("not ready over HTTPS: %v\n%s", err, logs)
		}
	}

	resp, err := client.Get(secure + "/sse?topic=market.*")
	if err != nil {
		t.Fatal(err)
	}
	if resp.ProtoMajor != 2 || resp.TLS.PeerCertificates[0].Subject.CommonName != "first" {
		t.Fatalf("stream over %s with %q's certificate, want HTTP/2 with the first", resp.Proto,
			resp.TLS.PeerCertificates[0].Subject.CommonName)
	}
	quotes := 0
	for ev, err := range sse.Read(resp.Body, nil) {
		if err != nil {
			t.Fatalf("stream ended after %d quotes: %v", quotes, err)
		}
		if ev.Type == "quote" {
			if quotes++; quotes == 50 {
				break
			}
		}
	}
	resp.Body.Close()

	// The certificate is renewed in place: new connections get it within a few seconds, without a restart.
	second.Write(t, certFile, keyFile)
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		resp, err := trustingClient(t, func(p *http.Protocols) { p.SetHTTP2(true) }, first, second).Get(secure + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.TLS.PeerCertificates[0].Subject.CommonName == "second" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("new connections still get the first certificate 15s after the files changed\n%s", logs)
		}
	}
	if !strings.Contains(logs.String(), "certificate reloaded") {
		t.Errorf("the reload is not logged:\n%s", logs)
	}

	// The container health check reaches it over HTTPS on localhost, whatever name the certificate has.
	if err := run(t.Context(), []string{"-healthcheck", strings.Replace(secure, "127.0.0.1", "localhost", 1) + "/healthz"},
		func(string) string { return "" }, io.Discard, nil); err != nil {
		t.Errorf("-healthcheck over https: %v", err)
	}
}

func TestH2CFlag(t *testing.T) {
	base, _ := start(t, nil, "-data", t.TempDir(), "-h2c")
	waitReady(t, base)
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	resp, err := (&http.Client{Transport: &http.Transport{Protocols: &p}, Timeout: 10 * time.Second}).Get(base + "/api/topics")
	if err != nil {
		t.Fatalf("h2c: %v", err)
	}
	resp.Body.Close()
	if resp.ProtoMajor != 2 || resp.StatusCode != http.StatusOK {
		t.Fatalf("h2c GET /api/topics: %s over %s, want 200 over HTTP/2", resp.Status, resp.Proto)
	}
}

func TestTLSFlagsRefuseBadInput(t *testing.T) {
	pair, other := tlscerttest.New(t, "edge"), tlscerttest.New(t, "other")
	certFile, keyFile := pair.WriteFiles(t)
	_, otherKey := other.WriteFiles(t)
	missing := filepath.Join(t.TempDir(), "missing.pem")
	garbage := filepath.Join(t.TempDir(), "garbage.pem")
	if err := os.WriteFile(garbage, []byte("-----BEGIN NONSENSE-----"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		args  []string
		usage bool   // a usage error (exit 2) rather than a failure (exit 1)
		want  string // in the message
	}{
		{"certificate without key", []string{"-tls-cert", certFile}, true, "-tls-key"},
		{"key without certificate", []string{"-tls-key", keyFile}, true, "-tls-cert"},
		{"h2c with TLS", []string{"-tls-cert", certFile, "-tls-key", keyFile, "-h2c"}, true, "-h2c"},
		{"missing certificate file", []string{"-tls-cert", missing, "-tls-key", keyFile}, false, "missing.pem"},
		{"not a certificate", []string{"-tls-cert", garbage, "-tls-key", keyFile}, false, "garbage.pem"},
		{"key of another certificate", []string{"-tls-cert", certFile, "-tls-key", otherKey}, false, "does not match"},
	} {
		err := run(t.Context(), append(tc.args, "-data", t.TempDir()), func(string) string { return "" }, io.Discard, nil)
		var usage cli.UsageError
		switch {
		case err == nil:
			t.Errorf("%s: started", tc.name)
		case errors.As(err, &usage) != tc.usage:
			t.Errorf("%s: %v is a usage error: %v, want %v", tc.name, err, !tc.usage, tc.usage)
		case !strings.Contains(err.Error(), tc.want):
			t.Errorf("%s: %q does not mention %s", tc.name, err, tc.want)
		}
	}
}
