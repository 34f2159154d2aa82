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
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	sse "github.com/tmaxmax/go-sse"

	"github.com/livepush/livepush/internal/cli"
	"github.com/livepush/livepush/internal/natsconn"
)

// syncBuffer collects a command's log output from several goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// start runs the push command as `go run ./cmd/push` would, with env as its environment, and returns its base URL.
func start(t *testing.T, env map[string]string, args ...string) (string, *syncBuffer) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	addr := make(chan net.Addr, 1)
	logs := &syncBuffer{}
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
	if !strings.Contains(logs.String(), "http://localhost:") {
		t.Errorf("the log does not say which address to open:\n%s", logs)
	}
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
