package proxytest

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// echo is an upstream that answers with the Host and forwarding headers it received and its own name.
func echo(t *testing.T, name string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s host=%s xff=%s xfp=%s peer=%s", name, r.Host, r.Header.Get("X-Forwarded-For"),
			r.Header.Get("X-Forwarded-Proto"), strings.Split(r.RemoteAddr, ":")[0])
	})}
	var wg sync.WaitGroup
	wg.Go(func() { srv.Serve(ln) })
	t.Cleanup(func() { srv.Close(); wg.Wait() })
	return ln.Addr().String()
}

// get fetches url through p's client and returns the body and the protocol of the answer.
func get(t *testing.T, p *Proxy, url string) (string, string) {
	t.Helper()
	client := p.Client()
	defer client.CloseIdleConnections()
	resp, err := client.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s %s", url, resp.Status, b)
	}
	return string(b), resp.Proto
}

var allProxies = []func(testing.TB, ...string) *Proxy{StartNginx, StartNginxTLS, StartHAProxy, StartCaddy}

// TestProxiesForward starts every proxy with the repository's files in front of two upstreams and checks that
// requests reach both, with the headers the edges rely on, over the protocol the proxy says it speaks.
func TestProxiesForward(t *testing.T) {
	a, b := echo(t, "a"), echo(t, "b")
	for _, start := range allProxies {
		p := start(t, a, b)
		t.Run(p.Name, func(t *testing.T) {
			scheme, proto := "http", "HTTP/1.1"
			if p.Cert != nil {
				scheme = "https"
			}
			if p.Proto == "h2" {
				proto = "HTTP/2.0"
			}
			seen := map[string]bool{}
			for range 20 { // Caddy picks at random among upstreams equally loaded: 20 miss one with odds of 2^-19
				answer, got := get(t, p, p.URL+"/x")
				seen[answer[:1]] = true
				if got != proto {
					t.Errorf("%s: answered over %s, want %s", p.Name, got, proto)
				}
				if !strings.Contains(answer, "xff=127.0.0.1") || !strings.Contains(answer, "xfp="+scheme+" ") {
					t.Errorf("%s: upstream saw %q: want X-Forwarded-For and X-Forwarded-Proto %s", p.Name, answer, scheme)
				}
				host := "host=127.0.0.1:" + strings.Split(p.Addr, ":")[1] // HAProxy and Caddy pass Host as it came
				if strings.HasPrefix(p.Name, "nginx") {
					host = "host=127.0.0.1 " // nginx's $host drops the port
				}
				if !strings.Contains(answer, host) {
					t.Errorf("%s: upstream saw %q, want %q", p.Name, answer, host)
				}
			}
			if !seen["a"] || !seen["b"] {
				t.Errorf("%s: requests reached %v, want both upstreams\n%s", p.Name, seen, p.Config())
			}
		})
	}
}

func TestConfigRewrite(t *testing.T) {
	_, nginx := repoFile(t, "deploy/nginx/livepush.conf")
	site, err := NginxSite(nginx, "127.0.0.1:9", []string{"127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"listen 127.0.0.1:9;", "server 127.0.0.1:1 max_fails=1 fail_timeout=5s;\n",
		"server 127.0.0.1:3 max_fails=1 fail_timeout=5s;\n"} {
		if !strings.Contains(site, want) {
			t.Errorf("nginx site lacks %q:\n%s", want, site)
		}
	}
	if strings.Contains(site, "edge-") || strings.Contains(site, "8080") {
		t.Errorf("nginx site keeps the file's addresses:\n%s", site)
	}
	if _, err := NginxSite(strings.ReplaceAll(nginx, "listen", "#"), "x", []string{"y"}); err == nil {
		t.Error("a site without listen rewritten without error")
	}

	_, nginxTLS := repoFile(t, "deploy/nginx/livepush-tls.conf")
	site, err = NginxTLSSite(nginxTLS, "127.0.0.1:8", "127.0.0.1:9", "/t/cert.pem", "/t/key.pem", []string{"127.0.0.1:1", "127.0.0.1:2"})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"    listen 127.0.0.1:8;\n", "    listen 127.0.0.1:9 ssl http2;\n",
		"    ssl_certificate /t/cert.pem;\n", "    ssl_certificate_key /t/key.pem;\n",
		"server 127.0.0.1:1 max_fails=1 fail_timeout=5s;\n", "server 127.0.0.1:2 max_fails=1 fail_timeout=5s;\n"} {
		if !strings.Contains(site, want) {
			t.Errorf("nginx TLS site lacks %q:\n%s", want, site)
		}
	}
	if d := directives(site); strings.Contains(d, "letsencrypt") || strings.Contains(d, "edge-") || strings.Contains(d, " 443") {
		t.Errorf("nginx TLS site keeps the file's addresses or certificate:\n%s", site)
	}
	if _, err := NginxTLSSite(nginx, "x", "y", "c", "k", []string{"z"}); err == nil {
		t.Error("a site without a TLS server rewritten as one without error")
	}

	_, haproxy := repoFile(t, "deploy/haproxy/haproxy.cfg")
	cfg, err := HAProxyConfig(haproxy, "fd@3", []string{"127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"bind fd@3\n", "server edge-1 127.0.0.1:1 check\n", "server edge-1 127.0.0.1:1 track edges/edge-1\n"} {
		if !strings.Contains(cfg, want) {
			t.Errorf("haproxy config lacks %q:\n%s", want, cfg)
		}
	}
	if strings.Contains(cfg, "edge-2") || strings.Contains(cfg, ":8080") {
		t.Errorf("haproxy config keeps the file's addresses:\n%s", cfg)
	}
	_, caddy := repoFile(t, "deploy/caddy/Caddyfile")
	cfg, err = CaddyConfig(caddy, "127.0.0.1:9", "127.0.0.1:8", "/t/cert.pem", "/t/key.pem", []string{"127.0.0.1:1", "127.0.0.1:2"})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"{\n\tadmin off\n\thttp_port 8\n\thttps_port 9\n}\n", "\nhttps://:9 {\n\tbind 127.0.0.1\n\ttls /t/cert.pem /t/key.pem\n",
		"\tto 127.0.0.1:1 127.0.0.1:2\n"} {
		if !strings.Contains(cfg, want) {
			t.Errorf("Caddyfile lacks %q:\n%s", want, cfg)
		}
	}
	if d := directives(cfg); strings.Contains(d, "edge-") || strings.Contains(d, "example.com") {
		t.Errorf("Caddyfile keeps the file's addresses:\n%s", cfg)
	}
	if _, err := CaddyConfig("a {\n}\nb {\n}\n", "x:1", "y:2", "c", "k", []string{"z"}); err == nil {
		t.Error("a Caddyfile of two sites rewritten without error")
	}

	cfg, err = HAProxyConfig(haproxy, "fd@3", []string{"127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(cfg, "server edge-3 127.0.0.1:3 check\n") || !strings.Contains(cfg, "server edge-3 127.0.0.1:3 track edges/edge-3\n") {
		t.Errorf("haproxy config with three upstreams:\n%s", cfg)
	}
}

// TestProxiesWithoutUpstream: with no edge reachable, a stream request gets an empty event stream asking the
// browser to come back (EventSource gives up for good on any other answer), anything else the proxy's error.
func TestProxiesWithoutUpstream(t *testing.T) {
	const dead = "127.0.0.1:1" // nothing listens on port 1
	for _, tc := range []struct {
		start  func(testing.TB, ...string) *Proxy
		status int
	}{{StartNginx, http.StatusBadGateway}, {StartNginxTLS, http.StatusBadGateway}, {StartHAProxy, http.StatusServiceUnavailable},
		{StartCaddy, http.StatusServiceUnavailable}} {
		p := tc.start(t, dead)
		t.Run(p.Name, func(t *testing.T) {
			client := p.Client()
			defer client.CloseIdleConnections()
			expectRetryStream(t, client, p.URL+"/sse?topic=market.AAPL", "with no edge")
			resp, err := client.Get(p.URL + "/api/snapshot?topic=market.AAPL")
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.status {
				t.Errorf("/api/snapshot with no edge: %s, want %d", resp.Status, tc.status)
			}
		})
	}
}

// TestProxiesTurnARefusedStreamIntoARetryStream: an edge that refuses a stream (503 when full, 429 past a client's
// limit) is answered to the browser as an empty event stream asking it to come back, through every proxy: an
// EventSource would give up for good on the refusal itself.
func TestProxiesTurnARefusedStreamIntoARetryStream(t *testing.T) {
	for _, status := range []int{http.StatusServiceUnavailable, http.StatusTooManyRequests} {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/readyz" { // health checks: the edge is up, only full
				return
			}
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(status)
			fmt.Fprint(w, `{"code":"busy","error":"full"}`)
		})}
		var wg sync.WaitGroup
		wg.Go(func() { srv.Serve(ln) })
		t.Cleanup(func() { srv.Close(); wg.Wait() })
		for _, start := range allProxies {
			p := start(t, ln.Addr().String())
			t.Run(fmt.Sprintf("%s/%d", p.Name, status), func(t *testing.T) {
				client := p.Client()
				defer client.CloseIdleConnections()
				expectRetryStream(t, client, p.URL+"/sse?topic=market.AAPL", fmt.Sprintf("refused with %d by the edge", status))
			})
		}
	}
}

// expectRetryStream gets url, which must answer with the empty event stream that asks a browser to come back.
func expectRetryStream(t *testing.T, client *http.Client, url, when string) {
	t.Helper()
	resp, err := client.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" ||
		string(body) != "retry: 2000\n\n" {
		t.Errorf("/sse %s: %s %q %q; want 200 text/event-stream \"retry: 2000\\n\\n\"",
			when, resp.Status, resp.Header.Get("Content-Type"), body)
	}
}

// TestNginxTLSRedirectsPlainHTTP: the TLS file's plain-HTTP server sends every request to the same path over
// HTTPS, as tutorials write it (to the default port: the test's HTTPS port is another, so the redirect is read,
// not followed).
func TestNginxTLSRedirectsPlainHTTP(t *testing.T) {
	p := StartNginxTLS(t, echo(t, "a"))
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	req, _ := http.NewRequest(http.MethodGet, p.RedirectURL+"/sse?topic=market.*&lastEventId=7", nil)
	req.Host = "shop.example"
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	const want = "https://shop.example/sse?topic=market.*&lastEventId=7"
	if resp.StatusCode != http.StatusMovedPermanently || resp.Header.Get("Location") != want {
		t.Errorf("plain HTTP: %s, Location %q; want 301 to %s", resp.Status, resp.Header.Get("Location"), want)
	}
}

// TestWebSocketThroughTLSProxies: a WebSocket over TLS (HTTP/1.1, as browsers open them; neither nginx nor Caddy
// offers WebSockets over HTTP/2) is upgraded through each TLS proxy and carries messages both ways.
func TestWebSocketThroughTLSProxies(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/readyz" { // Caddy's health check
			return
		}
		c, err := websocket.Accept(w, r, &websocket.AcceptOptions{InsecureSkipVerify: true})
		if err != nil {
			return
		}
		defer c.CloseNow()
		for {
			typ, msg, err := c.Read(r.Context())
			if err != nil {
				return
			}
			reply := fmt.Sprintf("%s via %s %s", msg, r.Header.Get("X-Forwarded-Proto"), r.Proto)
			if err := c.Write(r.Context(), typ, []byte(reply)); err != nil {
				return
			}
		}
	})}
	var wg sync.WaitGroup
	wg.Go(func() { srv.Serve(ln) })
	t.Cleanup(func() { srv.Close(); wg.Wait() })

	for _, start := range []func(testing.TB, ...string) *Proxy{StartNginxTLS, StartCaddy} {
		p := start(t, ln.Addr().String())
		t.Run(p.Name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			c, resp, err := websocket.Dial(ctx, "wss://"+p.Addr+"/ws", &websocket.DialOptions{HTTPClient: &http.Client{
				Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: p.Cert.Pool(), NextProtos: []string{"http/1.1"}}}}})
			if err != nil {
				t.Fatalf("WebSocket through %s: %v (%v)\n%s", p.Name, err, resp, p.Logs())
			}
			defer c.CloseNow()
			if err := c.Write(ctx, websocket.MessageText, []byte("hello")); err != nil {
				t.Fatal(err)
			}
			_, msg, err := c.Read(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if string(msg) != "hello via https HTTP/1.1" {
				t.Errorf("the upstream answered %q, want %q", msg, "hello via https HTTP/1.1")
			}
			c.Close(websocket.StatusNormalClosure, "")
		})
	}
}

// TestNginxTLSConfigKeepsTheProxySettings: the TLS file proxies as the plain one does. Every directive of the plain
// file is in the TLS one, and the TLS one adds only what TLS needs, so a change to one cannot silently miss the
// other.
func TestNginxTLSConfigKeepsTheProxySettings(t *testing.T) {
	lines := func(conf string) map[string]bool {
		set := map[string]bool{}
		for _, line := range strings.Split(directives(conf), "\n") {
			set[line] = true
		}
		return set
	}
	_, plainConf := repoFile(t, "deploy/nginx/livepush.conf")
	_, tlsConf := repoFile(t, "deploy/nginx/livepush-tls.conf")
	plain, secure := lines(plainConf), lines(tlsConf)
	tlsOnly := func(d string) bool {
		for _, prefix := range []string{"listen ", "server_name ", "ssl_", "return 301 https://"} {
			if strings.HasPrefix(d, prefix) {
				return true
			}
		}
		return false
	}
	for d := range plain {
		if !secure[d] && !strings.HasPrefix(d, "listen ") && !strings.HasPrefix(d, "server_name ") {
			t.Errorf("livepush-tls.conf lacks %q of livepush.conf", d)
		}
	}
	for d := range secure {
		if !plain[d] && !tlsOnly(d) {
			t.Errorf("livepush-tls.conf has %q, which livepush.conf does not: both or neither", d)
		}
	}
	for _, want := range []string{"listen 443 ssl http2;", "return 301 https://$host$request_uri;", "proxy_set_header X-Forwarded-Proto $scheme;"} {
		if !secure[want] {
			t.Errorf("livepush-tls.conf lacks %q", want)
		}
	}
}

// directives is an nginx configuration without its comments and blank lines, one directive a line, spaces folded.
func directives(conf string) string {
	var out []string
	for _, line := range strings.Split(conf, "\n") {
		line, _, _ = strings.Cut(line, "#")
		if line = strings.Join(strings.Fields(line), " "); line != "" {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}
