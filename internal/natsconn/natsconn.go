// Package natsconn gets a Livepush process its NATS connection: to a deployment by URL, with the credentials and
// TLS its operators configured, or to a nats-server embedded in the process for the one-command demo and for tests.
// Either way the connection rides through outages: it retries the first connect, reconnects forever, and logs each
// change of state. While it is down, Problem names the server and the reason.
package natsconn

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/livepush/livepush/internal/cli"
)

// Config says where a NATS deployment is and how to prove who we are to it. The zero value connects to nobody: URL
// is required. At most one of CredsFile, NKeyFile, User (with Password) and Token may be set; credentials in the URL
// (nats://user:pass@host, nats://token@host) win over User and Token.
type Config struct {
	// URL is one server URL or several, comma-separated: nats://host:4222, or tls://host:4222 to require TLS.
	URL string
	// CredsFile is a user credentials file (a user JWT and its NKey seed), as `nsc` or `nats` write them.
	CredsFile string
	// NKeyFile holds an NKey user seed (SU…), for a server that lists NKey users.
	NKeyFile string
	// User and Password, for a server that lists users.
	User, Password string
	// Token, for a server that takes an authorization token.
	Token string
	// CAFile is a PEM file of the certificate authorities to trust for the server's certificate. Setting it (or
	// CertFile) requires TLS. Zero: the system's roots, if the server asks for TLS.
	CAFile string
	// CertFile and KeyFile are a PEM client certificate and its key, for a server that verifies clients.
	CertFile, KeyFile string

	// onCommandLine names the secrets RegisterFlags saw given as flags, for Connect to warn about.
	onCommandLine []string
}

// RegisterFlags defines the NATS connection flags on f, the same for every command: -nats (NATS_URL, with the
// command's default and meaning), credentials and TLS. Secrets come from the environment or files by preference:
// a flag's value shows in process listings. The returned func copies the parsed values into c; call it after Parse.
func (c *Config) RegisterFlags(f *cli.Flags, defaultURL, urlUsage string) func() {
	u := f.Sensitive("nats", "NATS_URL", defaultURL, urlUsage+"; a password in it is better given by NATS_URL than on the command line", Redact)
	creds := f.String("nats-creds", "NATS_CREDS", "", "NATS user credentials `file` (JWT and seed, as nsc writes it)")
	nkey := f.String("nats-nkey", "NATS_NKEY", "", "NATS NKey user seed `file`")
	user := f.String("nats-user", "NATS_USER", "", "NATS user name (with NATS_PASSWORD)")
	password := f.Secret("nats-password", "NATS_PASSWORD", "NATS password")
	token := f.Secret("nats-token", "NATS_TOKEN", "NATS authorization token")
	ca := f.String("nats-ca", "NATS_CA", "", "PEM `file` of the authorities that sign the NATS servers' certificates; requires TLS")
	cert := f.String("nats-cert", "NATS_CERT", "", "PEM client certificate `file` for NATS servers that verify clients (with -nats-key)")
	key := f.String("nats-key", "NATS_KEY", "", "PEM `file` of the key of -nats-cert")
	return func() {
		*c = Config{URL: *u, CredsFile: *creds, NKeyFile: *nkey, User: *user, Password: *password, Token: *token,
			CAFile: *ca, CertFile: *cert, KeyFile: *key}
		f.Visit(func(fl *flag.Flag) { // set on the command line, not from the environment
			switch {
			case fl.Name == "nats-password", fl.Name == "nats-token",
				fl.Name == "nats" && Redact(*u) != *u:
				c.onCommandLine = append(c.onCommandLine, "-"+fl.Name)
			}
		})
	}
}

// HasAuthOrTLS tells whether any credential or TLS setting is given.
func (c Config) HasAuthOrTLS() bool {
	return c.CredsFile != "" || c.NKeyFile != "" || c.User != "" || c.Password != "" || c.Token != "" ||
		c.CAFile != "" || c.CertFile != "" || c.KeyFile != ""
}

// Redacted is URL without passwords or tokens, fit for logs.
func (c Config) Redacted() string { return Redact(c.URL) }

// Check refuses settings that cannot work together, and credential or TLS files that cannot be read, before any
// connection is tried. Its errors name the setting.
func (c Config) Check() error {
	if strings.TrimSpace(c.URL) == "" {
		return errors.New("natsconn: no NATS URL")
	}
	for u := range strings.SplitSeq(c.URL, ",") {
		if _, err := parseServer(u); err != nil {
			return err
		}
	}
	n := 0
	for _, set := range []bool{c.CredsFile != "", c.NKeyFile != "", c.User != "", c.Token != ""} {
		if set {
			n++
		}
	}
	switch {
	case n > 1:
		return errors.New("give one way to authenticate to NATS: a credentials file, an NKey seed, a user and password, or a token")
	case c.Password != "" && c.User == "":
		return errors.New("NATS_PASSWORD needs NATS_USER (-nats-user)")
	case (c.CertFile == "") != (c.KeyFile == ""):
		return errors.New("-nats-cert and -nats-key go together: a client certificate and its key")
	}
	if c.CredsFile != "" {
		b, err := os.ReadFile(c.CredsFile)
		if err != nil {
			return fmt.Errorf("NATS credentials: %w", err)
		}
		token, err := nkeys.ParseDecoratedJWT(b) // the whole file when it has no JWT block
		if err == nil {
			_, err = jwt.DecodeUserClaims(token)
		}
		if err != nil {
			return fmt.Errorf("NATS credentials %s: no user JWT in it: %w", c.CredsFile, err)
		}
		kp, err := nkeys.ParseDecoratedNKey(b)
		if err != nil {
			return fmt.Errorf("NATS credentials %s: no user seed in it: %w", c.CredsFile, err)
		}
		kp.Wipe()
	}
	if c.CAFile != "" {
		b, err := os.ReadFile(c.CAFile)
		if err != nil {
			return fmt.Errorf("NATS CA: %w", err)
		}
		if !x509.NewCertPool().AppendCertsFromPEM(b) {
			return fmt.Errorf("NATS CA %s: no PEM certificate in it", c.CAFile)
		}
	}
	if c.CertFile != "" {
		if _, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile); err != nil {
			return fmt.Errorf("NATS client certificate %s, key %s: %w", c.CertFile, c.KeyFile, err)
		}
	}
	return nil
}

// AuthOptions turns the credentials and TLS settings into connection options, for a command that makes its own
// connection (Connect uses them). nats.go reads the credentials file, the
// CA and the client certificate again at every connect, so files replaced on disk are picked up on the next
// reconnect.
func (c Config) AuthOptions() ([]nats.Option, error) {
	var opts []nats.Option
	switch {
	case c.CredsFile != "":
		opts = append(opts, nats.UserCredentials(c.CredsFile))
	case c.NKeyFile != "":
		o, err := nats.NkeyOptionFromSeed(c.NKeyFile)
		if err != nil {
			return nil, fmt.Errorf("NATS NKey seed %s: %w", c.NKeyFile, err)
		}
		opts = append(opts, o)
	case c.User != "":
		opts = append(opts, nats.UserInfo(c.User, c.Password))
	case c.Token != "":
		opts = append(opts, nats.Token(c.Token))
	}
	if c.CAFile != "" {
		opts = append(opts, nats.RootCAs(c.CAFile))
	}
	if c.CertFile != "" {
		opts = append(opts, nats.ClientCert(c.CertFile, c.KeyFile))
	}
	return opts, nil
}

// Options returns the connection options every Livepush process uses, named name in the server's monitoring.
func Options(name string, log *slog.Logger) []nats.Option {
	return []nats.Option{
		nats.Name(name),
		nats.RetryOnFailedConnect(true),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(500 * time.Millisecond),
		nats.ReconnectJitter(250*time.Millisecond, time.Second),
		nats.DisconnectErrHandler(func(nc *nats.Conn, err error) {
			if err == nil && nc.IsClosed() {
				return // the process closed it: not news
			}
			log.Warn("NATS disconnected", "url", Redact(nc.ConnectedUrl()), "err", err)
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("NATS reconnected", "url", nc.ConnectedUrlRedacted())
		}),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			log.Warn("NATS error", "err", err)
		}),
	}
}

// Connect connects to the NATS deployment at url (a comma-separated list of servers is fine) without credentials
// or TLS settings: Config{URL: url}.Connect.
func Connect(url, name string, log *slog.Logger) (*nats.Conn, error) {
	return Config{URL: url}.Connect(name, log)
}

// Connect connects to the NATS deployment cfg describes, named name in the server's monitoring. It returns at once
// even if no server answers yet: the connection keeps trying in the background, and Problem tells why it is not up.
// It returns an error only for a configuration that cannot work (see Check).
func (cfg Config) Connect(name string, log *slog.Logger) (*nats.Conn, error) {
	if err := cfg.Check(); err != nil {
		return nil, err
	}
	auth, err := cfg.AuthOptions()
	if err != nil {
		return nil, err
	}
	if len(cfg.onCommandLine) > 0 {
		log.Warn("NATS secrets given as flags, which any user of this host can read in the process list: "+
			"prefer NATS_URL, NATS_PASSWORD, NATS_TOKEN or a credentials file", "flags", cfg.onCommandLine)
	}
	w := newWatch(cfg, log)
	closed := make(chan struct{})
	opts := append(Options(name, log), auth...)
	opts = append(opts,
		nats.SetCustomDialer(w),
		// Refused credentials are retried like an unreachable server: the server's accounts or our credentials
		// file may be fixed while we run. Problem and the log say what is wrong meanwhile.
		nats.IgnoreAuthErrorAbort(),
		nats.ConnectHandler(func(nc *nats.Conn) {
			log.Info("NATS connected", "url", nc.ConnectedUrlRedacted())
		}),
		nats.ReconnectErrHandler(w.failed),
		nats.ErrorHandler(func(nc *nats.Conn, _ *nats.Subscription, err error) { // replaces Options' handler
			if !nc.IsConnected() { // a refusal on each reconnect: the watch reports it, without repeating itself
				w.failed(nc, err)
				return
			}
			log.Warn("NATS error", "err", err)
		}),
		nats.ClosedHandler(func(*nats.Conn) { close(closed) }),
	)
	nc, err := nats.Connect(cfg.URL, opts...)
	if err != nil {
		return nil, fmt.Errorf("NATS %s: %w", cfg.Redacted(), err)
	}
	w.start(nc, closed)
	return nc, nil
}

// Redact returns a comma-separated list of URLs with their passwords, and tokens given as a user name, replaced by
// "xxxxx".
func Redact(urls string) string {
	if !strings.Contains(urls, "@") {
		return urls
	}
	parts := strings.Split(urls, ",")
	for i, raw := range parts {
		u, err := url.Parse(strings.TrimSpace(raw))
		if err != nil || u.User == nil {
			if strings.Contains(raw, "@") {
				parts[i] = "(a URL that does not parse)"
			}
			continue
		}
		if _, hasPassword := u.User.Password(); hasPassword {
			u.User = url.UserPassword(u.User.Username(), "xxxxx")
		} else {
			u.User = url.User("xxxxx") // a user name alone is a token
		}
		parts[i] = u.String()
	}
	return strings.Join(parts, ",")
}

// parseServer parses one server URL as nats.go does: a bare host:port is nats://.
func parseServer(raw string) (*url.URL, error) {
	raw = strings.TrimSpace(raw)
	if !strings.Contains(raw, "://") {
		raw = "nats://" + raw
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("NATS URL %q does not parse", Redact(raw))
	}
	if u.Hostname() == "" {
		return nil, fmt.Errorf("NATS URL %q has no host", Redact(raw))
	}
	return u, nil
}
