// Package tlscert serves a TLS certificate from a pair of PEM files and picks up new files without a restart, as
// certificate managers (certbot, cert-manager, a mounted Kubernetes secret) replace them.
package tlscert

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Config names the files of a certificate and its key.
type Config struct {
	// CertFile holds the certificate in PEM, the chain after it; KeyFile its private key in PEM.
	CertFile, KeyFile string
	// CheckEvery is how often, at most, a handshake looks whether the files changed. Zero: 2s.
	CheckEvery time.Duration
	// Log receives the reloads and the errors of a bad new pair. Nil: slog.Default().
	Log *slog.Logger
}

// Reloader hands out the certificate of its files to TLS handshakes. A handshake at least CheckEvery after the
// last check compares the files' size and modification time with those of the pair in use and loads them again
// when they differ. A new pair that does not load (one file rewritten and not yet the other, a key that does not
// match) is logged and the pair in use stays; the next change of the files is tried again.
type Reloader struct {
	cfg       Config
	cert      atomic.Pointer[tls.Certificate]
	nextCheck atomic.Int64 // unix nanoseconds before which handshakes do not look at the files

	mu    sync.Mutex // held by the one handshake that checks the files
	stamp stamp      // of the files when last looked at
}

// stamp tells whether a file changed without reading it.
type stamp struct {
	certSize, keySize int64
	certMod, keyMod   time.Time
}

// ErrNoFiles is returned by New when CertFile or KeyFile is empty.
var ErrNoFiles = errors.New("tlscert: a certificate needs both a certificate file and a key file")

// New loads the pair named by cfg, or returns an error saying which file is wrong and why.
func New(cfg Config) (*Reloader, error) {
	if cfg.CertFile == "" || cfg.KeyFile == "" {
		return nil, ErrNoFiles
	}
	if cfg.CheckEvery <= 0 {
		cfg.CheckEvery = 2 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	r := &Reloader{cfg: cfg}
	st, err := r.statFiles()
	if err != nil {
		return nil, err
	}
	cert, err := r.load()
	if err != nil {
		return nil, err
	}
	r.stamp = st
	r.cert.Store(cert)
	r.nextCheck.Store(time.Now().Add(cfg.CheckEvery).UnixNano())
	r.logLoaded("certificate loaded", cert)
	return r, nil
}

// GetCertificate is for tls.Config.GetCertificate: the current certificate, checked against the files first when
// it is time to.
func (r *Reloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	r.check()
	return r.cert.Load(), nil
}

// Certificate returns the certificate in use.
func (r *Reloader) Certificate() *tls.Certificate { return r.cert.Load() }

// TLSConfig returns a server configuration that takes its certificate from r.
func (r *Reloader) TLSConfig() *tls.Config {
	return &tls.Config{GetCertificate: r.GetCertificate, MinVersion: tls.VersionTLS12}
}

func (r *Reloader) check() {
	now := time.Now()
	if now.UnixNano() < r.nextCheck.Load() || !r.mu.TryLock() {
		return // not yet, or another handshake is looking: both go on with the pair in use
	}
	defer r.mu.Unlock()
	r.nextCheck.Store(now.Add(r.cfg.CheckEvery).UnixNano())
	st, err := r.statFiles()
	if err != nil {
		if st != r.stamp { // say it once per state of the files, not at every check
			r.stamp = st
			r.cfg.Log.Error("certificate files unreadable: keeping the certificate in use", "err", err)
		}
		return
	}
	if st == r.stamp {
		return
	}
	r.stamp = st
	cert, err := r.load()
	if err != nil {
		r.cfg.Log.Error("new certificate files do not load: keeping the certificate in use", "err", err)
		return
	}
	r.cert.Store(cert)
	r.logLoaded("certificate reloaded", cert)
}

// statFiles returns the files' stamp. Stat follows symbolic links, so a secret volume that swaps a link to a new
// directory counts as a change.
func (r *Reloader) statFiles() (stamp, error) {
	var st stamp
	cert, err := os.Stat(r.cfg.CertFile)
	if err != nil {
		return st, fmt.Errorf("tlscert: certificate file: %w", err)
	}
	st.certSize, st.certMod = cert.Size(), cert.ModTime()
	key, err := os.Stat(r.cfg.KeyFile)
	if err != nil {
		return st, fmt.Errorf("tlscert: key file: %w", err)
	}
	st.keySize, st.keyMod = key.Size(), key.ModTime()
	return st, nil
}

func (r *Reloader) load() (*tls.Certificate, error) {
	cert, err := tls.LoadX509KeyPair(r.cfg.CertFile, r.cfg.KeyFile)
	if err != nil {
		var pathErr *fs.PathError
		if errors.As(err, &pathErr) {
			return nil, fmt.Errorf("tlscert: %w", err)
		}
		return nil, fmt.Errorf("tlscert: %s with %s: %w", r.cfg.CertFile, r.cfg.KeyFile, err)
	}
	return &cert, nil
}

func (r *Reloader) logLoaded(msg string, cert *tls.Certificate) {
	leaf := cert.Leaf // parsed by LoadX509KeyPair
	if leaf == nil {
		r.cfg.Log.Info(msg, "file", r.cfg.CertFile)
		return
	}
	attrs := []any{"file", r.cfg.CertFile, "subject", leaf.Subject.String(), "dns", leaf.DNSNames,
		"not_after", leaf.NotAfter.UTC().Format(time.RFC3339)}
	if time.Now().After(leaf.NotAfter) {
		r.cfg.Log.Warn(msg+": it has expired, clients will refuse it", attrs...)
		return
	}
	r.cfg.Log.Info(msg, attrs...)
}
