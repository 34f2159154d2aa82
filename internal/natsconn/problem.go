package natsconn

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
)

// Unreachable says why a NATS connection is down: which server, and what went wrong, in words an operator acts on.
type Unreachable struct {
	// Server is the URL tried last, without credentials.
	Server string
	// What happened: "unreachable", "refused the credentials", "TLS handshake failed", …
	What string
	// Reason is the cause: "connection refused", "authorization violation", "x509: certificate signed by unknown
	// authority", …
	Reason string
	// Err is the error behind it, nil while the first attempt is under way.
	Err error
}

func (u *Unreachable) Error() string { return "NATS " + u.Server + " " + u.What + ": " + u.Reason }
func (u *Unreachable) Unwrap() error { return u.Err }

// watched maps each connection made by Connect to its watch.
var watched sync.Map // *nats.Conn → *watch

// Problem returns nil while nc is connected, and otherwise an *Unreachable naming the server it tries and why it
// fails (for a connection made by Connect; others get a plain "NATS not connected").
func Problem(nc *nats.Conn) error {
	if nc.IsConnected() {
		return nil
	}
	if w, ok := watched.Load(nc); ok {
		return w.(*watch).problem(nc)
	}
	return errors.New("NATS not connected")
}

// pollEvery is how often a watch looks at a connection that is down; reportEvery how often it repeats an unchanged
// problem in the log.
const (
	pollEvery   = 250 * time.Millisecond
	reportEvery = 30 * time.Second
)

// watch follows one connection to tell why it is down. nats.go reports dial failures and refused credentials
// through callbacks, but a failed TLS handshake or a refusal during the first connect only through LastError, for
// a moment: the watch dials for nats.go to see every dial failure, takes what the callbacks give, and polls
// LastError while the connection is down.
type watch struct {
	servers        []*url.URL // as configured, credentials removed
	withCreds      bool       // credentials are configured: a refusal means they are wrong, not missing
	withClientCert bool
	log            *slog.Logger
	dialer         net.Dialer

	mu   sync.Mutex
	addr string // the address dialed last
	err  error  // the last failure since the connection was last up
}

func newWatch(cfg Config, log *slog.Logger) *watch {
	w := &watch{withCreds: cfg.CredsFile != "" || cfg.NKeyFile != "" || cfg.User != "" || cfg.Token != "",
		withClientCert: cfg.CertFile != "", log: log, dialer: net.Dialer{Timeout: 2 * time.Second}}
	for raw := range strings.SplitSeq(cfg.URL, ",") {
		u, err := parseServer(raw)
		if err != nil {
			continue
		}
		if u.User != nil {
			w.withCreds = true
			u.User = nil
		}
		w.servers = append(w.servers, u)
	}
	return w
}

// Dial dials for nats.go, noting where and how it failed.
func (w *watch) Dial(network, addr string) (net.Conn, error) {
	conn, err := w.dialer.Dial(network, addr)
	w.mu.Lock()
	w.addr = addr
	if err != nil {
		w.err = err
	}
	w.mu.Unlock()
	return conn, err
}

// failed notes an error nats.go reported while nc was down.
func (w *watch) failed(nc *nats.Conn, err error) {
	if err == nil || nc.IsConnected() {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if errors.Is(err, nats.ErrNoServers) && w.err != nil {
		return // nats.go's summary of a first connect, for which the dial said more ("connection refused")
	}
	w.err = err
}

// start registers nc and follows it until it closes.
func (w *watch) start(nc *nats.Conn, closed <-chan struct{}) {
	watched.Store(nc, w)
	go func() {
		defer watched.Delete(nc)
		t := time.NewTicker(pollEvery)
		defer t.Stop()
		var reported string
		var reportedAt time.Time
		for {
			select {
			case <-closed:
				return
			case <-t.C:
			}
			if nc.IsConnected() {
				w.mu.Lock()
				w.err = nil
				w.mu.Unlock()
				reported = ""
				continue
			}
			if err := nc.LastError(); err != nil {
				w.failed(nc, err)
			}
			p := w.problem(nc).(*Unreachable)
			if p.Err == nil {
				continue // the first attempt is under way: nothing to say yet
			}
			if msg := p.Error(); msg != reported || time.Since(reportedAt) >= reportEvery {
				w.log.Warn("NATS "+p.What, "url", p.Server, "reason", p.Reason)
				reported, reportedAt = msg, time.Now()
			}
		}
	}()
}

func (w *watch) problem(nc *nats.Conn) error {
	w.mu.Lock()
	addr, err := w.addr, w.err
	w.mu.Unlock()
	p := &Unreachable{Server: w.serverFor(addr), Err: err}
	p.What, p.Reason = w.describe(err)
	if err == nil && nc.IsClosed() {
		p.What, p.Reason = "unreachable", "connection closed"
	}
	return p
}

// serverFor names the configured server that addr, a host:port nats.go dialed (host names resolved), belongs to.
func (w *watch) serverFor(addr string) string {
	switch {
	case len(w.servers) == 0:
		return "nats://" + addr
	case addr == "" || len(w.servers) == 1:
		return w.servers[0].String()
	}
	for _, u := range w.servers {
		if u.Host == addr {
			return u.String()
		}
	}
	host, port, _ := net.SplitHostPort(addr)
	for _, u := range w.servers {
		if u.Port() != port {
			continue
		}
		ips, _ := net.LookupHost(u.Hostname())
		for _, ip := range ips {
			if ip == host {
				return u.String()
			}
		}
	}
	return w.servers[0].Scheme + "://" + addr // a server the cluster told us about
}

// describe puts err in an operator's words.
func (w *watch) describe(err error) (what, reason string) {
	var dns *net.DNSError
	var unknownAuthority x509.UnknownAuthorityError
	var hostname x509.HostnameError
	var invalid x509.CertificateInvalidError
	var alert tls.AlertError
	var recordHeader tls.RecordHeaderError
	var netErr net.Error
	switch {
	case err == nil:
		return "unreachable", "connecting"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "unreachable", "connection refused"
	case errors.As(err, &dns):
		if dns.IsNotFound {
			return "unreachable", "no such host " + dns.Name
		}
		return "unreachable", "cannot resolve " + dns.Name + ": " + dns.Err
	case errors.Is(err, nats.ErrAuthorization), errors.Is(err, nats.ErrAuthExpired),
		errors.Is(err, nats.ErrAuthRevoked), errors.Is(err, nats.ErrAccountAuthExpired):
		reason := strings.ToLower(natsText(err)) // the server says "Authorization Violation"
		if w.withCreds {
			return "refused the credentials", reason
		}
		return "requires credentials", reason + " (give NATS_CREDS, NATS_NKEY, NATS_USER and NATS_PASSWORD, or NATS_TOKEN)"
	case errors.Is(err, nats.ErrSecureConnWanted):
		return "does not offer TLS", "TLS was asked for (a tls:// URL, -nats-ca or -nats-cert) and the server has none"
	case errors.As(err, &unknownAuthority), errors.As(err, &hostname), errors.As(err, &invalid),
		errors.As(err, &alert), errors.As(err, &recordHeader), errors.Is(err, nats.ErrTLS):
		return "TLS handshake failed", w.tlsText(err)
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "unreachable", "the server closed the connection during the handshake (is it a NATS port?)"
	case errors.Is(err, os.ErrDeadlineExceeded), errors.As(err, &netErr) && netErr.Timeout():
		return "unreachable", "timed out"
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return "unreachable", "no route to host"
	case errors.Is(err, nats.ErrNoServers):
		return "unreachable", "no servers available"
	}
	return "unreachable", natsText(err)
}

// natsText is err's message without nats.go's "nats: " prefix.
func natsText(err error) string {
	return strings.TrimPrefix(err.Error(), "nats: ")
}

// tlsText is a TLS error's message without nats.go's and crypto/tls's wrapping. A server that verifies clients
// refuses a certificate after the handshake, as TLS 1.3 does it: the client sees the connection close, or the alert.
func (w *watch) tlsText(err error) string {
	s := err.Error()
	if strings.Contains(s, "after TLS handshake") || strings.Contains(s, "certificate required") ||
		strings.Contains(s, "bad certificate") || strings.Contains(s, "unknown certificate authority") {
		if !w.withClientCert {
			return "the server wants a client certificate (-nats-cert and -nats-key)"
		}
		return "the server did not accept our client certificate (" + s[strings.LastIndex(s, ": ")+2:] + ")"
	}
	s = strings.TrimPrefix(s, "nats: tls error: ")
	return strings.TrimPrefix(s, "tls: failed to verify certificate: ")
}
