package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/livepush/livepush/internal/testlog"

	sse "github.com/tmaxmax/go-sse"

	"github.com/livepush/livepush/internal/cli"
	"github.com/livepush/livepush/internal/natsconn"
	"github.com/livepush/livepush/internal/natsconn/natsconntest"
)

// start runs the push command as `go run ./cmd/push` would, with env as its environment, and returns its base URL.
func start(t *testing.T, env map[string]string, args ...string) (string, *testlog.Buffer) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	addr := make(chan net.Addr, 1)
	logs := &testlog.Buffer{}
	done := make(chan error, 1)
	args = append([]string{"-addr", "127.0.0.1:0", "-drain-timeout", "2s"}, args...)
	go func() {
		done <- run(ctx, args, func(k string) string { return env[k] }, logs, func(a net.Addr) { addr <- a })
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("push exited with %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("push did not stop within 10s of its signal")
		}
	})
	select {
	case a := <-addr:
		return "http://" + a.String(), logs
	case err := <-done:
		t.Fatalf("push exited at start: %v\n%s", err, logs)
	case <-time.After(20 * time.Second):
		t.Fatalf("push did not listen\n%s", logs)
	}
	panic("unreachable")
}

// events reads an SSE stream until it has n events of kind, or fails after d.
func events(t *testing.T, url, kind string, n int, d time.Duration) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), d)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var got []string
	for ev, err := range sse.Read(resp.Body, nil) {
		if err != nil {
			break
		}
		if ev.Type == kind {
			if got = append(got, ev.Data); len(got) == n {
				return got
			}
		}
	}
	t.Fatalf("got %d %s events from %s within %v, want %d", len(got), kind, url, d, n)
	return nil
}

// The one-command demo: no NATS_URL, so an embedded nats-server and the simulators run in the process.
func TestOneCommandServesMovingPricesAndScores(t *testing.T) {
	base, logs := start(t, nil, "-data", t.TempDir(), "-rate", "200", "-sports-speed", "300")
	waitReady(t, base)
	waitLog(t, logs, `msg="ready: open the ticker page" url=http://localhost:`)
	page, status := getBody(t, base+"/")
	if status != 200 || !strings.Contains(page, "<title>") || !strings.Contains(page, "Livepush") {
		t.Errorf("GET / = %d, want the ticker page", status)
	}

	// Prices move: the same symbol at different prices, live.
	prices := map[string]map[float64]bool{}
	for _, data := range events(t, base+"/sse?topic=market.*", "quote", 400, 20*time.Second) {
		var q struct {
			Symbol string
			Price  float64
		}
		json.Unmarshal([]byte(data), &q)
		if prices[q.Symbol] == nil {
			prices[q.Symbol] = map[float64]bool{}
		}
		prices[q.Symbol][q.Price] = true
	}
	moved := 0
	for _, ps := range prices {
		if len(ps) > 1 {
			moved++
		}
	}
	if len(prices) < 50 || moved < 10 {
		t.Errorf("%d symbols quoted, %d of them moved; want at least 50 and 10", len(prices), moved)
	}

	scores := events(t, base+"/sse?topic=sports.>", "score", 5, 20*time.Second)
	leagues := map[string]bool{}
	for _, data := range scores {
		var s struct{ League, Status string }
		json.Unmarshal([]byte(data), &s)
		leagues[s.League] = true
	}
	if len(leagues) == 0 {
		t.Errorf("no league in %v", scores)
	}
}

// With NATS_URL the edge joins that NATS and serves what anyone publishes there, running no simulators.
func TestJoinsNATSByURL(t *testing.T) {
	ns, err := natsconn.StartEmbedded(natsconn.EmbeddedOptions{StoreDir: t.TempDir(), Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Stop()
	url := ns.ClientURL()
	base, _ := start(t, map[string]string{"NATS_URL": url})
	waitReady(t, base)

	nc, err := ns.Connect()
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	got := make(chan []string, 1)
	go func() { got <- events(t, base+"/sse?topic=market.*", "quote", 1, 10*time.Second) }()
	time.Sleep(300 * time.Millisecond) // let the stream open
	payload := `{"topic":"market.ZZZ","kind":"quote","price":1}`
	for range 20 {
		nc.Publish("market.ZZZ", []byte(payload))
		select {
		case data := <-got:
			if data[0] != payload {
				t.Fatalf("got %s, want %s", data[0], payload)
			}
			// And no simulator runs here: nothing but what we published.
			head, _ := getBody(t, base+"/api/topics")
			if strings.Contains(head, "market.AAPL") {
				t.Errorf("simulators ran without -feeds: %s", head)
			}
			return
		case <-time.After(200 * time.Millisecond):
		}
	}
	t.Fatal("published update never reached the stream")
}

func TestFlagsAndEnvironment(t *testing.T) {
	var out bytes.Buffer
	err := run(t.Context(), []string{"-help"}, func(string) string { return "" }, &out, nil)
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("-help: %v", err)
	}
	for _, want := range []string{"-addr", "PUSH_ADDR", "NATS_URL", "PUSH_DATA_DIR", "-feeds", "PUSH_ALLOWED_ORIGINS", "-stream-max-age"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("-help does not mention %s", want)
		}
	}
	err = run(t.Context(), nil, func(k string) string {
		return map[string]string{"PUSH_MAX_TOPICS": "lots"}[k]
	}, io.Discard, nil)
	var usage cli.UsageError
	if !errors.As(err, &usage) || !strings.Contains(err.Error(), "PUSH_MAX_TOPICS") {
		t.Errorf("bad environment value: %v, want a usage error naming PUSH_MAX_TOPICS", err)
	}
	if err := run(t.Context(), []string{"-log-level", "loud"}, func(string) string { return "" }, io.Discard, nil); !errors.As(err, &usage) {
		t.Errorf("bad log level: %v, want a usage error", err)
	}
}

func TestHealthcheckFlag(t *testing.T) {
	base, _ := start(t, nil, "-data", t.TempDir())
	waitReady(t, base)
	if err := run(t.Context(), []string{"-healthcheck", base + "/healthz"}, func(string) string { return "" }, io.Discard, nil); err != nil {
		t.Errorf("-healthcheck on a healthy edge: %v", err)
	}
	if err := run(t.Context(), []string{"-healthcheck", base + "/nope"}, func(string) string { return "" }, io.Discard, nil); err == nil {
		t.Error("-healthcheck on a 404 succeeded")
	}
}

// waitLog waits until the log has a line containing want.
func waitLog(t *testing.T, logs *testlog.Buffer, want string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if strings.Contains(logs.String(), want) {
			return
		}
	}
	t.Fatalf("the log never said %s:\n%s", want, logs)
}

// A NATS_URL nothing answers at is named, with the reason, in the log and in /readyz; the log does not send anyone
// to a page that cannot show anything.
func TestUnreachableNATSIsNamed(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close() // nothing listens there now: connections are refused
	base, logs := start(t, map[string]string{"NATS_URL": "nats://livepush:s3cret@" + dead})

	want := "NATS nats://" + dead + " unreachable: connection refused"
	var body string
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		var status int
		if body, status = getBody(t, base+"/readyz"); status == 503 && strings.Contains(body, want) {
			break
		}
	}
	var ready struct{ Status, Reason string }
	if err := json.Unmarshal([]byte(body), &ready); err != nil || ready.Status != "not ready" || ready.Reason != want {
		t.Errorf("/readyz = %s\nwant status \"not ready\", reason %q", body, want)
	}
	waitLog(t, logs, `msg="NATS unreachable" url=nats://`+dead+` reason="connection refused"`)
	waitLog(t, logs, `msg="not ready yet: the page waits until then" reason="`+want+`"`)
	if strings.Contains(logs.String(), "open the ticker page") {
		t.Errorf("the log sends people to the page while NATS is away:\n%s", logs)
	}
	if strings.Contains(logs.String()+body, "s3cret") {
		t.Errorf("the password shows:\n%s\n%s", logs, body)
	}
}

// A password given as a flag works, with a warning: any user of the host can read it in the process list.
func TestNATSSecretOnTheCommandLineIsWarnedAbout(t *testing.T) {
	s := natsconntest.Start(t, natsconntest.Options{Auth: natsconntest.UserPassword})
	_, logs := start(t, nil, "-nats", strings.Replace(s.URL, "nats://", "nats://"+s.User+":"+url.QueryEscape(s.Password)+"@", 1))
	waitLog(t, logs, `msg="NATS secrets given as flags, which any user of this host can read in the process list: prefer NATS_URL, NATS_PASSWORD, NATS_TOKEN or a credentials file" flags=[-nats]`)
	waitLog(t, logs, "open the ticker page")
	if strings.Contains(logs.String(), url.QueryEscape(s.Password)) {
		t.Errorf("the log shows the password:\n%s", logs)
	}
}

// The edge joins NATS however its operators secure it, with the secrets in the environment as the README advises.
func TestJoinsSecuredNATS(t *testing.T) {
	cases := []struct {
		name   string
		server natsconntest.Options
		env    func(s *natsconntest.Server) map[string]string
	}{
		{"user and password", natsconntest.Options{Auth: natsconntest.UserPassword}, func(s *natsconntest.Server) map[string]string {
			return map[string]string{"NATS_URL": s.URL, "NATS_USER": s.User, "NATS_PASSWORD": s.Password}
		}},
		{"token", natsconntest.Options{Auth: natsconntest.Token}, func(s *natsconntest.Server) map[string]string {
			return map[string]string{"NATS_URL": s.URL, "NATS_TOKEN": s.Token}
		}},
		{"nkey", natsconntest.Options{Auth: natsconntest.NKey}, func(s *natsconntest.Server) map[string]string {
			return map[string]string{"NATS_URL": s.URL, "NATS_NKEY": s.NKeyFile}
		}},
		{"credentials and TLS with a client certificate", natsconntest.Options{Auth: natsconntest.Creds, TLS: true, VerifyClients: true},
			func(s *natsconntest.Server) map[string]string {
				return map[string]string{"NATS_URL": s.URL, "NATS_CREDS": s.CredsFile, "NATS_CA": s.CAFile,
					"NATS_CERT": s.CertFile, "NATS_KEY": s.KeyFile}
			}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := natsconntest.Start(t, c.server)
			base, logs := start(t, c.env(s), "-feeds", "-symbols", "AAA,BBB", "-no-sports")
			waitReady(t, base)
			events(t, base+"/sse?topic=market.*", "quote", 3, 10*time.Second)
			waitLog(t, logs, "open the ticker page")
		})
	}

	t.Run("wrong password", func(t *testing.T) {
		s := natsconntest.Start(t, natsconntest.Options{Auth: natsconntest.UserPassword})
		base, logs := start(t, map[string]string{"NATS_URL": s.URL, "NATS_USER": s.User, "NATS_PASSWORD": "not-it"})
		want := "NATS " + s.URL + " refused the credentials: authorization violation"
		waitLog(t, logs, want)
		if body, status := getBody(t, base+"/readyz"); status != 503 || !strings.Contains(body, want) {
			t.Errorf("/readyz = %d %s, want 503 saying %q", status, body, want)
		}
	})

	t.Run("untrusted CA", func(t *testing.T) {
		s := natsconntest.Start(t, natsconntest.Options{TLS: true})
		base, logs := start(t, map[string]string{"NATS_URL": s.URL, "NATS_CA": s.OtherCAFile})
		want := "NATS " + s.URL + " TLS handshake failed: x509: certificate signed by unknown authority"
		waitLog(t, logs, want)
		if body, status := getBody(t, base+"/readyz"); status != 503 || !strings.Contains(body, want) {
			t.Errorf("/readyz = %d %s, want 503 saying %q", status, body, want)
		}
	})
}

// Settings that cannot work stop the edge at once with a usage error.
func TestNATSSettingsThatCannotWork(t *testing.T) {
	for _, env := range []map[string]string{
		{"NATS_CREDS": "/nonexistent.creds"},                                       // credentials without NATS_URL
		{"NATS_URL": "nats://127.0.0.1:4222", "NATS_CREDS": "/nonexistent.creds"},  // a file that is not there
		{"NATS_URL": "nats://127.0.0.1:4222", "NATS_USER": "u", "NATS_TOKEN": "t"}, // two ways at once
	} {
		err := run(t.Context(), nil, func(k string) string { return env[k] }, io.Discard, nil)
		var usage cli.UsageError
		if !errors.As(err, &usage) {
			t.Errorf("%v: %v, want a usage error", env, err)
		}
	}
}

func getBody(t *testing.T, url string) (string, int) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b), resp.StatusCode
}

func waitReady(t *testing.T, base string) {
	t.Helper()
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if _, status := getBody(t, base+"/readyz"); status == 200 {
			return
		}
	}
	body, status := getBody(t, base+"/readyz")
	t.Fatalf("not ready: %d %s", status, body)
}

// A second edge started on the data directory of a running one refuses before it touches the store (two servers
// writing one store corrupt it), and says why; the first carries on.
func TestSecondEdgeOnTheSameDataDirectoryRefuses(t *testing.T) {
	dir := t.TempDir()
	base, _ := start(t, nil, "-data", dir)
	waitReady(t, base)

	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	err := run(ctx, []string{"-addr", "127.0.0.1:0", "-data", dir}, func(string) string { return "" }, io.Discard,
		func(net.Addr) {})
	if !errors.Is(err, natsconn.ErrStoreInUse) || !strings.Contains(err.Error(), dir) || !strings.Contains(err.Error(), "-data") {
		t.Fatalf("second edge on %s: %v, want a refusal naming the directory and -data", dir, err)
	}
	if _, status := getBody(t, base+"/readyz"); status != http.StatusOK {
		t.Errorf("the first edge is not ready after the second was refused: %d", status)
	}
}

// A busy port fails at once, before the embedded server opens (or locks) its store.
func TestBusyPortFailsBeforeTheStore(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	dir := t.TempDir() + "/store"
	began := time.Now()
	err = run(t.Context(), []string{"-addr", ln.Addr().String(), "-data", dir}, func(string) string { return "" },
		io.Discard, nil)
	if err == nil || !strings.Contains(err.Error(), "address already in use") {
		t.Fatalf("push on a busy port: %v, want address already in use", err)
	}
	if _, statErr := os.Stat(dir); !errors.Is(statErr, os.ErrNotExist) || time.Since(began) > 2*time.Second {
		t.Errorf("push on a busy port took %v and left the store %v: want it to fail before the store", time.Since(began), statErr)
	}
}

// By default an edge refuses connections before it runs out of file descriptors, which it shares with an embedded
// NATS: a stranger opening connections gets 503s, not an edge that can no longer accept or write its store.
func TestDefaultConnectionLimitStaysClearOfTheFileLimit(t *testing.T) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	base, logs := start(t, nil, "-no-market", "-no-sports", "-data", t.TempDir())
	waitReady(t, base)
	m := regexp.MustCompile(`connection limit.*max_conns=(-?\d+)`).FindStringSubmatch(logs.String())
	if m == nil {
		t.Fatalf("no connection limit logged:\n%s", logs)
	}
	if n, _ := strconv.Atoi(m[1]); n <= 0 || uint64(n) > lim.Cur-lim.Cur/10 {
		t.Errorf("default max_conns %d with %d files open at most, want a limit a tenth below it", n, lim.Cur)
	}
	if connectionLimit(500) != 500 || connectionLimit(-1) != 0 {
		t.Errorf("-max-conns 500 gives %d, -1 gives %d; want 500 and no limit (0)", connectionLimit(500), connectionLimit(-1))
	}
}
