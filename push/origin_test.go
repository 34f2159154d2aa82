package push

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/coder/websocket"

	"github.com/livepush/livepush/internal/tlscert/tlscerttest"
	"github.com/livepush/livepush/subscriber/wire"
)

// originCase is one WebSocket handshake as a browser behind a proxy, or a client faking one, would send it.
type originCase struct {
	name    string
	from    string // source address: 127.0.0.1 is the trusted proxy, 127.0.0.2 is not
	host    string // the Host header ("" keeps the URL's)
	origin  string
	headers map[string]string
	ok      bool
	says    []string // what a refusal's message must name
	notSays []string
}

// TestWSOriginBehindProxies runs handshakes against an edge that trusts the proxy at 127.0.0.1, from that address
// and from 127.0.0.2 (a client connecting directly), and checks who gets in, and that a refusal names what was
// seen and what to configure.
func TestWSOriginBehindProxies(t *testing.T) {
	n := startNATS(t)
	e := startEdge(t, n, Config{TrustedProxies: []string{"127.0.0.1"}}, HubOptions{})
	nginxTutorial := map[string]string{"X-Real-IP": "203.0.113.7", "X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "http"}
	cases := []originCase{
		// nginx's common block: Host $host drops the port of the proxy on :8090.
		{name: "tutorial nginx, own page", from: "127.0.0.1", host: "localhost", origin: "http://localhost:8090",
			headers: nginxTutorial, ok: true},
		{name: "tutorial nginx, foreign page", from: "127.0.0.1", host: "localhost", origin: "http://evil.example:8090",
			headers: nginxTutorial, says: []string{`"http://evil.example:8090"`, `Host "localhost"`,
				"-allowed-origins evil.example:8090", "X-Forwarded-Host $http_host"}, notSays: []string{"-trusted-proxies"}},
		{name: "foreign page whose name starts like ours", from: "127.0.0.1", host: "localhost",
			origin: "http://localhost.evil.example", headers: nginxTutorial},
		{name: "page served over https, proxy says http", from: "127.0.0.1", host: "localhost",
			origin: "https://localhost:8443", headers: nginxTutorial, says: []string{`says the browser used http but the page is https`}},
		// The upstream's name as Host (nginx without proxy_set_header Host), the public host forwarded.
		{name: "X-Forwarded-Host with port", from: "127.0.0.1", host: "edges", origin: "http://localhost:8090",
			headers: map[string]string{"X-Forwarded-Host": "localhost:8090", "X-Forwarded-Proto": "http"}, ok: true},
		{name: "X-Forwarded-Host with port, other port", from: "127.0.0.1", host: "edges", origin: "http://localhost:9999",
			headers: map[string]string{"X-Forwarded-Host": "localhost:8090"}, says: []string{`forwarded host "localhost:8090"`}},
		{name: "X-Forwarded-Host default port", from: "127.0.0.1", host: "edges", origin: "https://app.example",
			headers: map[string]string{"X-Forwarded-Host": "app.example:443", "X-Forwarded-Proto": "https"}, ok: true},
		{name: "X-Forwarded-Host list: the first is the browser's", from: "127.0.0.1", host: "edges",
			origin: "https://app.example", headers: map[string]string{"X-Forwarded-Host": "app.example, edges-lb:8080"}, ok: true},
		{name: "Forwarded", from: "127.0.0.1", host: "edges", origin: "https://shop.example:8443",
			headers: map[string]string{"Forwarded": `for=203.0.113.7;host="shop.example:8443";proto=https, for=10.0.0.2`}, ok: true},
		{name: "Forwarded, other scheme", from: "127.0.0.1", host: "edges", origin: "http://shop.example:8443",
			headers: map[string]string{"Forwarded": `for=203.0.113.7;host="shop.example:8443";proto=https`}},
		{name: "Forwarded with an escape is not read", from: "127.0.0.1", host: "edges", origin: "https://shop.example",
			headers: map[string]string{"Forwarded": `host="shop.example\"";proto=https`}},
		// HAProxy and Caddy pass the browser's Host as it came, port included, and say the scheme: the page's must be
		// it too, since a network attacker can serve an http:// page of the same name and port.
		{name: "Host passed as it came, https page", from: "127.0.0.1", host: "shop.example:8443",
			origin: "https://shop.example:8443", headers: map[string]string{"X-Forwarded-Proto": "https"}, ok: true},
		{name: "Host passed as it came, http page of an https site", from: "127.0.0.1", host: "shop.example:8443",
			origin: "http://shop.example:8443", headers: map[string]string{"X-Forwarded-Proto": "https"},
			says: []string{`says the browser used https but the page is http`}},
		{name: "Host passed as it came, scheme not said", from: "127.0.0.1", host: "shop.example:8443",
			origin: "http://shop.example:8443", ok: true},
		// TLS ended by a load balancer in front of the proxy, which then says http ($scheme): an https page of the
		// name cannot be forged, and gets in.
		{name: "same Host, https page, proxy says http", from: "127.0.0.1", host: "shop.example",
			origin: "https://shop.example", headers: nginxTutorial, ok: true},
		// A client connecting directly cannot use the forwarded headers, nor the portless relaxation.
		{name: "untrusted peer fakes X-Forwarded-Host", from: "127.0.0.2", host: "edges", origin: "http://evil.example",
			headers: map[string]string{"X-Forwarded-Host": "evil.example", "X-Forwarded-For": "203.0.113.7"},
			says:    []string{"127.0.0.2", "-trusted-proxies", "X-Forwarded-For, X-Forwarded-Host", "proxy_set_header Host $http_host"}},
		{name: "untrusted peer fakes Forwarded", from: "127.0.0.2", host: "edges", origin: "https://evil.example",
			headers: map[string]string{"Forwarded": "host=evil.example;proto=https"}, says: []string{"-trusted-proxies"}},
		{name: "untrusted proxy with Host $host", from: "127.0.0.2", host: "localhost", origin: "http://localhost:8090",
			headers: nginxTutorial, says: []string{"-trusted-proxies", `Host "localhost"`}},
		{name: "direct, foreign page", from: "127.0.0.2", origin: "https://evil.example",
			says: []string{`"https://evil.example"`, "-allowed-origins evil.example"}, notSays: []string{"-trusted-proxies"}},
		{name: "direct, own page", from: "127.0.0.2", origin: e.url, ok: true},
		{name: "no Origin: not a browser", from: "127.0.0.2", ok: true},
		{name: "Origin without a host", from: "127.0.0.1", host: "localhost", origin: "null", headers: nginxTutorial,
			says: []string{`Origin "null" is not a URL with a host`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { tc.run(t, e.url) })
	}
	e.waitSubscribers(t, 0)
}

func (tc originCase) run(t *testing.T, base string) {
	dialer := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(tc.from)}}
	header := http.Header{}
	if tc.origin != "" {
		header.Set("Origin", tc.origin)
	}
	for k, v := range tc.headers {
		header.Set(k, v)
	}
	conn, resp, err := websocket.Dial(t.Context(), "ws"+strings.TrimPrefix(base, "http")+"/ws", &websocket.DialOptions{
		HTTPClient: &http.Client{Transport: &http.Transport{DialContext: dialer.DialContext}},
		HTTPHeader: header,
		Host:       tc.host,
	})
	if tc.ok {
		if err != nil {
			t.Fatalf("refused: %v", err)
		}
		conn.Close(websocket.StatusNormalClosure, "")
		return
	}
	if err == nil {
		conn.CloseNow()
		t.Fatal("accepted; want 403")
	}
	if resp == nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("err %v, response %v; want 403", err, resp)
	}
	body, _ := io.ReadAll(resp.Body)
	var answer wire.ErrorBody
	if err := json.Unmarshal(body, &answer); err != nil || answer.Code != "forbidden_origin" {
		t.Fatalf("body %q: want a JSON error with code forbidden_origin", body)
	}
	t.Log(answer.Error)
	for _, want := range tc.says {
		if !strings.Contains(answer.Error, want) {
			t.Errorf("refusal does not say %q:\n%s", want, answer.Error)
		}
	}
	for _, unwanted := range tc.notSays {
		if strings.Contains(answer.Error, unwanted) {
			t.Errorf("refusal says %q, which does not apply:\n%s", unwanted, answer.Error)
		}
	}
}

func TestParseForwarded(t *testing.T) {
	for _, tc := range []struct{ in, host, proto string }{
		{`host=example.com;proto=https`, "example.com", "https"},
		{`For="[2001:db8::1]:4711";Host="[2001:db8::2]:8443";Proto=https`, "[2001:db8::2]:8443", "https"},
		{`for=1.2.3.4;host=a.example, for=5.6.7.8;host=b.example`, "a.example", ""},
		{`for=1.2.3.4`, "", ""},
		{`host="a,b.example";proto=https`, "", ""}, // a quoted comma: not simple
		{`host="a\"b";proto=https`, "", ""},
		{`host=";proto=https`, "", ""},
	} {
		host, proto := parseForwarded(tc.in)
		if host != tc.host || proto != tc.proto {
			t.Errorf("parseForwarded(%q) = %q, %q; want %q, %q", tc.in, host, proto, tc.host, tc.proto)
		}
	}
}

// TestWSOriginOnATLSEdge: an edge that ends TLS itself lets in its own https:// pages, not an http:// page of the
// same name and port, which only a network attacker could serve.
func TestWSOriginOnATLSEdge(t *testing.T) {
	n := startNATS(t)
	e, pair := startTLSEdge(t, n, Config{}, HubOptions{})
	client := clientFor(t, h1Only, []tlscerttest.Pair{pair})
	host := strings.TrimPrefix(e.url, "https://")
	for _, tc := range []struct {
		origin string
		ok     bool
	}{{"https://" + host, true}, {"http://" + host, false}} {
		conn, resp, err := websocket.Dial(t.Context(), "wss://"+host+"/ws", &websocket.DialOptions{
			HTTPClient: client, HTTPHeader: http.Header{"Origin": {tc.origin}}})
		switch {
		case tc.ok && err != nil:
			t.Errorf("Origin %s: refused: %v", tc.origin, err)
		case !tc.ok && err == nil:
			t.Errorf("Origin %s: accepted, want 403", tc.origin)
		case !tc.ok && (resp == nil || resp.StatusCode != http.StatusForbidden):
			t.Errorf("Origin %s: %v, want 403", tc.origin, err)
		case !tc.ok:
			body, _ := io.ReadAll(resp.Body)
			if !strings.Contains(string(body), "served over https") {
				t.Errorf("Origin %s: refusal %s does not say why", tc.origin, body)
			}
		}
		if conn != nil {
			conn.Close(websocket.StatusNormalClosure, "")
		}
	}
}
