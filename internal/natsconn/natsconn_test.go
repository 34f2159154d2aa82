package natsconn_test

import (
	"errors"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/livepush/livepush/internal/testlog"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/livepush/livepush/internal/natsconn"
	"github.com/livepush/livepush/internal/natsconn/natsconntest"
)

func connect(t *testing.T, cfg natsconn.Config) (*nats.Conn, *testlog.Buffer) {
	t.Helper()
	logs := &testlog.Buffer{}
	nc, err := cfg.Connect("natsconn-test", slog.New(slog.NewTextHandler(logs, nil)))
	if err != nil {
		t.Fatalf("Connect(%s): %v", cfg.Redacted(), err)
	}
	t.Cleanup(nc.Close)
	return nc, logs
}

// usable waits until nc is connected and proves it: a message goes round, and JetStream answers.
func usable(t *testing.T, nc *nats.Conn) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !nc.IsConnected(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("not connected within 10s: %v", natsconn.Problem(nc))
		}
	}
	if err := natsconn.Problem(nc); err != nil {
		t.Errorf("connected, but Problem says %v", err)
	}
	sub, err := nc.SubscribeSync("market.TEST")
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Publish("market.TEST", []byte(`{"x":1}`)); err != nil {
		t.Fatal(err)
	}
	if m, err := sub.NextMsg(5 * time.Second); err != nil || string(m.Data) != `{"x":1}` {
		t.Fatalf("message round trip: %v %v", m, err)
	}
	js, _ := jetstream.New(nc)
	if _, err := js.AccountInfo(t.Context()); err != nil {
		t.Fatalf("JetStream: %v", err)
	}
}

func withUser(u, user, password string) string {
	p, _ := url.Parse(u)
	p.User = url.UserPassword(user, password)
	return p.String()
}

func TestConnectsTheWaysOperatorsSecureNATS(t *testing.T) {
	cases := []struct {
		name   string
		server natsconntest.Options
		config func(s *natsconntest.Server) natsconn.Config
	}{
		{"user and password", natsconntest.Options{Auth: natsconntest.UserPassword}, func(s *natsconntest.Server) natsconn.Config {
			return natsconn.Config{URL: s.URL, User: s.User, Password: s.Password}
		}},
		{"user and password in the URL", natsconntest.Options{Auth: natsconntest.UserPassword}, func(s *natsconntest.Server) natsconn.Config {
			return natsconn.Config{URL: withUser(s.URL, s.User, s.Password)}
		}},
		{"token", natsconntest.Options{Auth: natsconntest.Token}, func(s *natsconntest.Server) natsconn.Config {
			return natsconn.Config{URL: s.URL, Token: s.Token}
		}},
		{"nkey seed file", natsconntest.Options{Auth: natsconntest.NKey}, func(s *natsconntest.Server) natsconn.Config {
			return natsconn.Config{URL: s.URL, NKeyFile: s.NKeyFile}
		}},
		{"credentials file (operator mode)", natsconntest.Options{Auth: natsconntest.Creds}, func(s *natsconntest.Server) natsconn.Config {
			return natsconn.Config{URL: s.URL, CredsFile: s.CredsFile}
		}},
		{"TLS with a private CA", natsconntest.Options{TLS: true}, func(s *natsconntest.Server) natsconn.Config {
			return natsconn.Config{URL: s.URL, CAFile: s.CAFile}
		}},
		{"TLS with a client certificate", natsconntest.Options{TLS: true, VerifyClients: true}, func(s *natsconntest.Server) natsconn.Config {
			return natsconn.Config{URL: s.URL, CAFile: s.CAFile, CertFile: s.CertFile, KeyFile: s.KeyFile}
		}},
		{"TLS, client certificate and credentials", natsconntest.Options{Auth: natsconntest.Creds, TLS: true, VerifyClients: true}, func(s *natsconntest.Server) natsconn.Config {
			return natsconn.Config{URL: s.URL, CredsFile: s.CredsFile, CAFile: s.CAFile, CertFile: s.CertFile, KeyFile: s.KeyFile}
		}},
		{"nats:// URL to a TLS server, with the CA", natsconntest.Options{TLS: true}, func(s *natsconntest.Server) natsconn.Config {
			return natsconn.Config{URL: strings.Replace(s.URL, "tls://", "nats://", 1), CAFile: s.CAFile}
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := natsconntest.Start(t, c.server)
			nc, logs := connect(t, c.config(s))
			usable(t, nc)
			if s.Password != "" && strings.Contains(logs.String(), s.Password) {
				t.Errorf("the log shows the password:\n%s", logs)
			}
		})
	}
}

// waitProblem waits until Problem(nc) says want, and returns what the log said meanwhile.
func waitProblem(t *testing.T, nc *nats.Conn, logs *testlog.Buffer, want string) string {
	t.Helper()
	var got error
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if got = natsconn.Problem(nc); got != nil && got.Error() == want {
			var u *natsconn.Unreachable
			if !errors.As(got, &u) {
				t.Errorf("Problem is a %T, want an *Unreachable", got)
			}
			// The log says it too, once the watch has seen it.
			for time.Now().Before(deadline) && !strings.Contains(logs.String(), u.Reason) {
				time.Sleep(50 * time.Millisecond)
			}
			return logs.String()
		}
	}
	t.Fatalf("Problem = %v\nwant    %s\nlog:\n%s", got, want, logs)
	return ""
}

func TestRefusalsNameTheServerAndTheProblem(t *testing.T) {
	userServer := natsconntest.Start(t, natsconntest.Options{Auth: natsconntest.UserPassword})
	tokenServer := natsconntest.Start(t, natsconntest.Options{Auth: natsconntest.Token})
	credsServer := natsconntest.Start(t, natsconntest.Options{Auth: natsconntest.Creds})
	tlsServer := natsconntest.Start(t, natsconntest.Options{TLS: true, VerifyClients: true})
	plainServer := natsconntest.Start(t, natsconntest.Options{})

	// A port nobody listens on: taken, then given back.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadURL := "nats://" + ln.Addr().String()
	ln.Close()

	// A credentials file for another operator's account.
	otherCreds := natsconntest.Start(t, natsconntest.Options{Auth: natsconntest.Creds}).CredsFile

	cases := []struct {
		name  string
		cfg   natsconn.Config
		want  string
		never string // a secret the problem and the log must not show
	}{
		{"nothing listens", natsconn.Config{URL: deadURL},
			"NATS " + deadURL + " unreachable: connection refused", ""},
		{"wrong password", natsconn.Config{URL: userServer.URL, User: userServer.User, Password: "wrong-pw"},
			"NATS " + userServer.URL + " refused the credentials: authorization violation", "wrong-pw"},
		{"wrong password in the URL", natsconn.Config{URL: withUser(userServer.URL, userServer.User, "wrong-pw")},
			"NATS " + userServer.URL + " refused the credentials: authorization violation", "wrong-pw"},
		{"no credentials", natsconn.Config{URL: userServer.URL},
			"NATS " + userServer.URL + " requires credentials: authorization violation (give NATS_CREDS, NATS_NKEY, NATS_USER and NATS_PASSWORD, or NATS_TOKEN)", ""},
		{"wrong token", natsconn.Config{URL: tokenServer.URL, Token: "not-the-token"},
			"NATS " + tokenServer.URL + " refused the credentials: authorization violation", "not-the-token"},
		{"credentials of another operator", natsconn.Config{URL: credsServer.URL, CredsFile: otherCreds},
			"NATS " + credsServer.URL + " refused the credentials: authorization violation", ""},
		{"untrusted CA", natsconn.Config{URL: tlsServer.URL, CAFile: tlsServer.OtherCAFile, CertFile: tlsServer.CertFile, KeyFile: tlsServer.KeyFile},
			"NATS " + tlsServer.URL + " TLS handshake failed: x509: certificate signed by unknown authority", ""},
		{"system roots for a private CA", natsconn.Config{URL: tlsServer.URL},
			"NATS " + tlsServer.URL + " TLS handshake failed: x509: certificate signed by unknown authority", ""},
		{"TLS asked of a server without it", natsconn.Config{URL: strings.Replace(plainServer.URL, "nats://", "tls://", 1)},
			"NATS " + strings.Replace(plainServer.URL, "nats://", "tls://", 1) + " does not offer TLS: TLS was asked for (a tls:// URL, -nats-ca or -nats-cert) and the server has none", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			nc, logs := connect(t, c.cfg)
			log := waitProblem(t, nc, logs, c.want)
			u := natsconn.Problem(nc).(*natsconn.Unreachable)
			if !strings.Contains(log, "url="+u.Server) || !strings.Contains(log, u.Reason) {
				t.Errorf("the log does not name the URL %s and the reason %q:\n%s", u.Server, u.Reason, log)
			}
			if c.never != "" && strings.Contains(log, c.never) {
				t.Errorf("the log shows the secret %q:\n%s", c.never, log)
			}
		})
	}

	// The client certificate missing: the server ends the handshake, and the reason says so.
	t.Run("no client certificate", func(t *testing.T) {
		nc, _ := connect(t, natsconn.Config{URL: tlsServer.URL, CAFile: tlsServer.CAFile})
		var got error
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			if got = natsconn.Problem(nc); got != nil && strings.Contains(got.Error(), "TLS handshake failed") {
				break
			}
		}
		if want := "NATS " + tlsServer.URL + " TLS handshake failed: the server wants a client certificate (-nats-cert and -nats-key)"; got == nil || got.Error() != want {
			t.Errorf("Problem = %v\nwant    %s", got, want)
		}
	})
}

// The connection keeps trying: a server that comes up later is joined without a restart.
func TestJoinsAServerThatComesUpLater(t *testing.T) {
	s := natsconntest.Start(t, natsconntest.Options{Auth: natsconntest.Token})
	port := s.Addr().(*net.TCPAddr).Port
	s.Shutdown()
	s.WaitForShutdown()
	nc, logs := connect(t, natsconn.Config{URL: s.URL, Token: s.Token})
	waitProblem(t, nc, logs, "NATS "+s.URL+" unreachable: connection refused")

	// The same port again, now serving.
	natsconntest.Start(t, natsconntest.Options{Auth: natsconntest.Token, Port: port, Token: s.Token})
	usable(t, nc)
	if !strings.Contains(logs.String(), "NATS connected") {
		t.Errorf("the log does not say NATS is connected:\n%s", logs)
	}
}

func TestCheckRefusesSettingsThatCannotWork(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "not.pem")
	os.WriteFile(notPEM, []byte("hello"), 0o600)
	cases := []struct {
		cfg  natsconn.Config
		want string
	}{
		{natsconn.Config{}, "no NATS URL"},
		{natsconn.Config{URL: "nats://h:4222", User: "u", Password: "p", Token: "t"}, "one way to authenticate"},
		{natsconn.Config{URL: "nats://h:4222", Password: "p"}, "NATS_PASSWORD needs NATS_USER"},
		{natsconn.Config{URL: "nats://h:4222", CertFile: notPEM}, "-nats-cert and -nats-key go together"},
		{natsconn.Config{URL: "nats://h:4222", CredsFile: filepath.Join(dir, "missing.creds")}, "missing.creds"},
		{natsconn.Config{URL: "nats://h:4222", CredsFile: notPEM}, "no user JWT"},
		{natsconn.Config{URL: "nats://h:4222", CAFile: notPEM}, "no PEM certificate"},
		{natsconn.Config{URL: "nats://h:4222", NKeyFile: notPEM}, "NKey seed"},
		{natsconn.Config{URL: "nats://u:secret@h:4222:x"}, "does not parse"},
	}
	for _, c := range cases {
		_, err := c.cfg.Connect("test", slog.New(slog.DiscardHandler))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Connect(%+v) = %v, want an error saying %q", c.cfg, err, c.want)
		}
		if err != nil && strings.Contains(err.Error(), "secret") {
			t.Errorf("the error shows the password: %v", err)
		}
	}
}

func TestRedact(t *testing.T) {
	for in, want := range map[string]string{
		"nats://127.0.0.1:4222":                          "nats://127.0.0.1:4222",
		"nats://user:pass@h:4222":                        "nats://user:xxxxx@h:4222",
		"nats://s3cr3t@h:4222":                           "nats://xxxxx@h:4222",
		"nats://a:b@n1:4222,nats://n2:4222,tls://t@n3:1": "nats://a:xxxxx@n1:4222,nats://n2:4222,tls://xxxxx@n3:1",
	} {
		if got := natsconn.Redact(in); got != want {
			t.Errorf("Redact(%q) = %q, want %q", in, got, want)
		}
	}
}
