package proxytest

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
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

func get(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s %s", url, resp.Status, b)
	}
	return string(b)
}

// TestProxiesForward starts both proxies with the repository's files in front of two upstreams and checks that
// requests reach both, with the headers the edges rely on.
func TestProxiesForward(t *testing.T) {
	a, b := echo(t, "a"), echo(t, "b")
	for _, start := range []func(testing.TB, ...string) *Proxy{StartNginx, StartHAProxy} {
		p := start(t, a, b)
		t.Run(p.Name, func(t *testing.T) {
			seen := map[string]bool{}
			for range 6 {
				answer := get(t, p.URL+"/x")
				seen[answer[:1]] = true
				if !strings.Contains(answer, "xff=127.0.0.1") || !strings.Contains(answer, "xfp=http") {
					t.Errorf("%s: upstream saw %q: want X-Forwarded-For and X-Forwarded-Proto", p.Name, answer)
				}
				host := "host=127.0.0.1:" + strings.Split(p.Addr, ":")[1] // HAProxy passes Host as it came
				if p.Name == "nginx" {
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
	}{{StartNginx, http.StatusBadGateway}, {StartHAProxy, http.StatusServiceUnavailable}} {
		p := tc.start(t, dead)
		t.Run(p.Name, func(t *testing.T) {
			resp, err := http.Get(p.URL + "/sse?topic=market.AAPL")
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" ||
				string(body) != "retry: 2000\n\n" {
				t.Errorf("/sse with no edge: %s %q %q; want 200 text/event-stream \"retry: 2000\\n\\n\"",
					resp.Status, resp.Header.Get("Content-Type"), body)
			}
			resp, err = http.Get(p.URL + "/api/snapshot?topic=market.AAPL")
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
