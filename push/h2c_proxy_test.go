package push

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/livepush/livepush/internal/testlog"

	"github.com/coder/websocket"
)

// An edge with -h2c behind a real HAProxy that speaks HTTP/2 in clear text to it (`proto h2`), as its manual
// configures a backend: streams reach the edge over HTTP/2, WebSockets over HTTP/1.1 through a backend of their own.

// startHAProxy runs haproxy with config, its frontend bound to a listener the test opened and hands over (fd@3).
// It returns the frontend's address. haproxy ends with the test; if it dies before, the test fails.
func startHAProxy(t *testing.T, config string) string {
	t.Helper()
	bin, err := exec.LookPath("haproxy")
	if err != nil {
		t.Fatal("haproxy not found: this test runs a real HAProxy in front of the edge; install it (Debian: apt-get install haproxy)")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f, err := ln.(*net.TCPListener).File()
	ln.Close() // the duplicate in f stays open and listening for haproxy
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cfgFile := filepath.Join(t.TempDir(), "haproxy.cfg")
	if err := os.WriteFile(cfgFile, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	check := exec.Command(bin, "-c", "-f", cfgFile)
	check.ExtraFiles = []*os.File{f} // the check binds too
	if out, err := check.CombinedOutput(); err != nil {
		t.Fatalf("haproxy refuses the configuration: %v\n%s", err, out)
	}
	var out testlog.Buffer
	cmd := exec.Command(bin, "-db", "-f", cfgFile)
	cmd.ExtraFiles = []*os.File{f}
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		select {
		case err := <-exited:
			t.Errorf("haproxy died during the test: %v\n%s", err, out.String())
		default:
			cmd.Process.Signal(os.Interrupt)
			select {
			case <-exited:
			case <-time.After(5 * time.Second):
				cmd.Process.Kill()
				<-exited
			}
		}
	})
	return ln.Addr().String()
}

func TestH2CBehindHAProxy(t *testing.T) {
	n := startNATS(t)
	var logs testlog.Buffer
	e := startEdge(t, n, Config{H2C: true, Log: slog.New(slog.NewTextHandler(&logs, nil))}, HubOptions{})
	edge := strings.TrimPrefix(e.url, "http://")
	front := startHAProxy(t, fmt.Sprintf(`
defaults
    mode http
    timeout connect 5s
    timeout client 1h
    timeout server 1h
    timeout tunnel 1h

frontend public
    bind fd@3
    use_backend edges_ws if { path /ws }
    default_backend edges

backend edges
    server e1 %[1]s proto h2

backend edges_ws
    server e1 %[1]s
`, edge))
	base := "http://" + front

	c := openSSE(t, base, url.Values{"topic": {"market.*"}}, nil)
	e.waitSubscribers(t, 1)
	for range 5 {
		want := n.publish(t, "market.AAPL", quote("AAPL"))
		if r := c.next(t); r.Cursor != want {
			t.Fatalf("through HAProxy: got %d, want %d", r.Cursor, want)
		}
	}
	if !strings.Contains(logs.String(), "transport=sse proto=HTTP/2.0") {
		t.Errorf("HAProxy did not reach the edge over HTTP/2:\n%s", logs.String())
	}

	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, "ws://"+front+"/ws?topic=market.MSFT", nil)
	if err != nil {
		t.Fatalf("WebSocket through HAProxy: %v", err)
	}
	defer ws.CloseNow()
	if _, data, err := ws.Read(ctx); err != nil || !strings.Contains(string(data), `"subscribed"`) {
		t.Fatalf("first WebSocket message %q, %v; want subscribed", data, err)
	}
	want := n.publish(t, "market.MSFT", quote("MSFT"))
	if _, data, err := ws.Read(ctx); err != nil || !strings.Contains(string(data), fmt.Sprintf(`"cursor":"%d"`, want)) {
		t.Fatalf("WebSocket got %q, %v; want the update at %d", data, err, want)
	}

	// The edge drains through the proxy: the stream gets its close event.
	go e.stop()
	for {
		r := c.next(t)
		if r.Kind == "close" {
			if !strings.Contains(r.Data, reasonRestart.err) {
				t.Fatalf("close event %q, want %s", r.Data, reasonRestart.err)
			}
			break
		}
	}
}
