package push

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/coder/websocket"

	"github.com/livepush/livepush/subscriber/wire"
)

// Topic validation cannot be bypassed on any transport with an encoding trick. Each raw query below decodes to
// something other than a public topic.
var smuggled = []string{
	"%24SYS.%3E",                // $SYS.> percent-encoded
	"%2524SYS.%253E",            // double-encoded: decodes once to a literal %24SYS
	"market.%E2%80%8BAAPL",      // zero-width space
	"market.%EF%BC%A1APL",       // fullwidth A
	"market.%CE%91APL",          // Greek capital alpha
	"market.AAPL%20",            // trailing space
	"%20market.AAPL",            // leading space
	"market.AAPL%0A",            // newline
	"market.AAPL%00",            // NUL
	"market.AAPL%09",            // tab
	"market%2EAAPL%2E%3E",       // dots encoded: market.AAPL.> (too many tokens for market)
	"_INBOX.%3E",                // _INBOX.>
	"%3E",                       // >
	"sports.nba.g-1%2F..%2F%24", // path-like
}

func TestTopicValidationCannotBeBypassed(t *testing.T) {
	n := startNATS(t)
	e := startEdge(t, n, Config{}, HubOptions{})
	for _, raw := range smuggled {
		for _, path := range []string{"/sse", "/api/snapshot", "/api/poll"} {
			resp, err := http.Get(e.url + path + "?topic=market.MSFT&topic=" + raw)
			if err != nil {
				t.Fatal(err)
			}
			var body wire.ErrorBody
			json.NewDecoder(resp.Body).Decode(&body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusBadRequest || body.Code != "invalid_topic" {
				t.Errorf("%s?topic=%s: %d %+v, want 400 invalid_topic", path, raw, resp.StatusCode, body)
			}
		}
		// The WebSocket URL subscribes too.
		c := dialWS(t, e.url, "?topic="+raw, nil)
		if m := c.expect(t, "error"); m.Code != "invalid_topic" {
			t.Errorf("/ws?topic=%s: %+v, want invalid_topic", raw, m)
		}
	}
	// JSON escapes decode before validation as well.
	c := dialWS(t, e.url, "", nil)
	for _, escaped := range []string{`\u0024SYS.>`, `market.\u0041APL\u0000`, `market.\u200bAAPL`, `_INBOX\u002e>`} {
		c.send(t, `{"type":"subscribe","id":"x","topics":["`+escaped+`"]}`)
		if m := c.expect(t, "error"); m.Code != "invalid_topic" {
			t.Errorf("subscribe %s: %+v, want invalid_topic", escaped, m)
		}
	}
}

func TestConnectionLimits(t *testing.T) {
	n := startNATS(t)
	e := startEdge(t, n, Config{Limits: Limits{MaxConnections: 3, MaxConnectionsPerIP: 2}}, HubOptions{ReplayBuffer: 16})

	// Per address: the third connection from 127.0.0.1 is refused, on SSE with 429 and on WebSocket with 1013.
	openSSE(t, e.url, map[string][]string{"topic": {"market.*"}}, nil)
	w := dialWS(t, e.url, "?topic=market.*", nil)
	w.expect(t, "subscribed")
	resp, err := http.Get(e.url + "/sse?topic=market.*")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
		t.Errorf("third connection from one address: %s (Retry-After %q), want 429 with Retry-After",
			resp.Status, resp.Header.Get("Retry-After"))
	}
	conn, _, err := websocket.Dial(t.Context(), "ws"+strings.TrimPrefix(e.url, "http")+"/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := conn.Read(t.Context()); websocket.CloseStatus(err) != websocket.StatusTryAgainLater {
		t.Errorf("third WebSocket from one address: %v, want close 1013", err)
	}
	// A long poll that must read from the stream (its cursor is older than the edge's memory) counts too.
	first := n.publish(t, "market.AAPL", `{"kind":"quote"}`)
	for range 40 {
		n.publish(t, "market.AAPL", `{"kind":"quote"}`)
	}
	e.waitHead(t, n.publish(t, "market.AAPL", `{"kind":"quote"}`))
	body, status, err := get(t.Context(), fmt.Sprintf("%s/api/poll?topic=market.AAPL&timeout=1s&cursor=%d", e.url, first-1))
	if err != nil || status != http.StatusTooManyRequests {
		t.Errorf("a long poll from the stream beyond the limit: %d %s %v, want 429", status, body, err)
	}

	// Per process: from another source address the edge holds one more, then says it is full.
	other := &http.Client{Transport: &http.Transport{DialContext: (&net.Dialer{
		LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}}).DialContext}}
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, e.url+"/sse?topic=market.*", nil)
	held, err := other.Do(req)
	if err != nil || held.StatusCode != 200 {
		t.Fatalf("connection from 127.0.0.2: %v %v", err, held)
	}
	defer held.Body.Close()
	resp, err = other.Get(e.url + "/sse?topic=market.*")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Errorf("connection beyond the process limit: %s, want 503 with Retry-After", resp.Status)
	}

	// Leaving frees the slot.
	w.conn.CloseNow()
	e.waitSubscribers(t, 2)
	w2 := dialWS(t, e.url, "?topic=market.*", nil)
	w2.expect(t, "subscribed")
}

func TestControlMessageFloodCloses1008(t *testing.T) {
	n := startNATS(t)
	e := startEdge(t, n, Config{Limits: Limits{ControlRate: 5}}, HubOptions{})
	c := dialWS(t, e.url, "", nil)
	for i := range 50 {
		if err := c.conn.Write(t.Context(), websocket.MessageText, fmt.Appendf(nil, `{"type":"ping","id":%d}`, i)); err != nil {
			break
		}
	}
	select {
	case err := <-c.closed:
		if websocket.CloseStatus(err) != websocket.StatusPolicyViolation || !strings.Contains(err.Error(), "too many") {
			t.Fatalf("flood closed with %v, want 1008 saying why", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a flood of control messages did not close the connection")
	}
	// A client within the rate is fine.
	ok := dialWS(t, e.url, "", nil)
	for i := range 5 {
		ok.send(t, fmt.Sprintf(`{"type":"ping","id":%d}`, i))
		ok.expect(t, "pong")
		time.Sleep(200 * time.Millisecond)
	}
}

// Control messages sent several to a frame, one per line, count one each against the rate.
func TestControlMessagesCountedPerLine(t *testing.T) {
	n := startNATS(t)
	e := startEdge(t, n, Config{Limits: Limits{ControlRate: 5}}, HubOptions{}) // bursts of 10
	c := dialWS(t, e.url, "", nil)
	for i := range 6 { // 12 messages in 6 frames
		if err := c.conn.Write(t.Context(), websocket.MessageText, fmt.Appendf(nil, `{"type":"ping","id":%d}`+"\n"+`{"type":"ping"}`, i)); err != nil {
			break
		}
	}
	select {
	case err := <-c.closed:
		if websocket.CloseStatus(err) != websocket.StatusPolicyViolation {
			t.Fatalf("closed with %v, want 1008", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("12 control messages in 6 frames passed a burst of 10")
	}
}

// WebSocket pings beyond the control rate get no pong: a ping flood cannot make the edge write as fast as it sends.
func TestPingFloodGetsPongsAtTheControlRate(t *testing.T) {
	n := startNATS(t)
	e := startEdge(t, n, Config{Limits: Limits{ControlRate: 1}}, HubOptions{}) // bursts of 2
	c := dialWS(t, e.url, "", nil)
	ponged := 0
	for range 10 {
		ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
		if c.conn.Ping(ctx) == nil {
			ponged++
		}
		cancel()
	}
	// 2 at once, then about one a second over the 2 s of unanswered pings.
	if ponged < 1 || ponged > 5 {
		t.Errorf("%d of 10 pings sent within 2 s got a pong, want the burst of 2 and about one a second after", ponged)
	}
}

// A control message that is not UTF-8 is refused: decoding it would replace its bad bytes, and an id echoed back
// would carry them to a client whose WebSocket library fails on them.
func TestControlMessageNotUTF8Refused(t *testing.T) {
	n := startNATS(t)
	e := startEdge(t, n, Config{}, HubOptions{})
	c := dialWS(t, e.url, "", nil)
	if err := c.conn.Write(t.Context(), websocket.MessageText, []byte("{\"type\":\"ping\",\"id\":\"\xff\"}")); err != nil {
		t.Fatal(err)
	}
	if m := c.expect(t, "error"); m.Code != "bad_request" || !strings.Contains(m.Message, "UTF-8") || len(m.ID) != 0 {
		t.Errorf("got %+v, want a bad_request error with no id", m)
	}
	c.send(t, `{"type":"ping","id":"ok"}`)
	c.expect(t, "pong")
}

// Subscribing again to topics a connection holds, to change their rate, takes no more of its topic allowance.
func TestResubscribeCountsOnlyNewTopics(t *testing.T) {
	n := startNATS(t)
	e := startEdge(t, n, Config{MaxTopics: 8}, HubOptions{})
	c := dialWS(t, e.url, "", nil)
	topics := `["market.A","market.B","market.C","market.D","market.E","market.F"]`
	c.send(t, `{"type":"subscribe","id":"all","topics":`+topics+`}`)
	c.expect(t, "subscribed")
	c.send(t, `{"type":"subscribe","id":"slower","topics":`+topics+`,"maxRate":1}`)
	c.expect(t, "subscribed")
	c.send(t, `{"type":"subscribe","id":"twice","topics":["market.G","market.G","market.A","market.H"]}`)
	c.expect(t, "subscribed")
	c.send(t, `{"type":"subscribe","id":"one-too-many","topics":["market.I"]}`)
	if m := c.expect(t, "error"); m.Code != "too_many_topics" {
		t.Errorf("a ninth topic: %+v, want too_many_topics", m)
	}
}

// A client that sends its request headers too slowly is cut off (slowloris), and so is a WebSocket handshake that
// never completes.
func TestSlowHeadersCutOff(t *testing.T) {
	n := startNATS(t)
	e := startEdge(t, n, Config{ReadHeaderTimeout: 300 * time.Millisecond}, HubOptions{})
	for _, partial := range []string{
		"GET /sse?topic=market.* HTTP/1.1\r\nHost: x\r\n",
		"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n",
	} {
		conn, err := net.Dial("tcp", strings.TrimPrefix(e.url, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(conn, partial) // and never the blank line that ends the headers
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		start := time.Now()
		_, err = io.ReadAll(conn)
		conn.Close()
		if err != nil || time.Since(start) > 3*time.Second {
			t.Errorf("%q: still connected after %v (%v), want it closed after the header timeout", partial[:20], time.Since(start), err)
		}
	}
}

// A request announcing a body that never comes is answered at once and its connection closed: Go's server would
// wait for up to 256 KiB of it before answering, with no deadline and outside every connection limit.
func TestBodyThatNeverComesIsRefused(t *testing.T) {
	n := startNATS(t)
	e := startEdge(t, n, Config{}, HubOptions{})
	for _, req := range []string{
		"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n",
		"GET /api/snapshot?topic=market.AAPL HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
		"POST /api/poll?topic=market.AAPL HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n",
	} {
		conn, err := net.Dial("tcp", strings.TrimPrefix(e.url, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(conn, req)
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		answer, err := io.ReadAll(conn) // to the end: the edge closes the connection
		conn.Close()
		if err != nil || !bytes.HasPrefix(answer, []byte("HTTP/1.1 400")) || !bytes.Contains(answer, []byte(`"code":"bad_request"`)) {
			t.Errorf("%.40q: %v, answered %q; want 400 bad_request at once and the connection closed", req, err, answer)
		}
	}
}

func TestCORS(t *testing.T) {
	n := startNATS(t)
	page := fstest.MapFS{"livepush.js": {Data: []byte("export function connect() {}\n")}}
	open := startEdge(t, n, Config{CORSOrigins: []string{"https://app.example"}, Page: page}, HubOptions{})
	closed := startEdge(t, n, Config{}, HubOptions{})
	check := func(base, path, origin, want string) {
		t.Helper()
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, base+path, nil)
		req.Header.Set("Origin", origin)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if got := resp.Header.Get("Access-Control-Allow-Origin"); got != want {
			t.Errorf("%s from %s: Access-Control-Allow-Origin %q, want %q", path, origin, got, want)
		}
	}
	// /readyz: a page elsewhere tells an edge that is catching up from one that is current. /livepush.js: a page
	// elsewhere imports it as a module, which browsers fetch with CORS.
	for _, path := range []string{"/api/snapshot?topic=market.*", "/api/topics", "/readyz", "/healthz", "/livepush.js"} {
		check(open.url, path, "https://app.example", "https://app.example")
		check(open.url, path, "https://evil.example", "")
		check(closed.url, path, "https://app.example", "")
	}
	// SSE writes its own headers: the same rule holds.
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, open.url+"/sse?topic=market.*", nil)
	req.Header.Set("Origin", "https://app.example")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := resp.Header.Get("Access-Control-Allow-Origin"); got != "https://app.example" {
		t.Errorf("SSE Access-Control-Allow-Origin %q", got)
	}

	// A refused stream carries the header too, and exposes Retry-After, so that a page elsewhere learns why and
	// how long to wait.
	full := startEdge(t, n, Config{CORSOrigins: []string{"https://app.example"}, Limits: Limits{MaxConnections: 1}}, HubOptions{})
	held := openSSE(t, full.url, url.Values{"topic": {"market.*"}}, nil)
	defer held.close()
	req, _ = http.NewRequestWithContext(t.Context(), http.MethodGet, full.url+"/sse?topic=market.*", nil)
	req.Header.Set("Origin", "https://app.example")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Access-Control-Allow-Origin") != "https://app.example" ||
		!strings.Contains(resp.Header.Get("Access-Control-Expose-Headers"), "Retry-After") {
		t.Errorf("a refused SSE stream from an allowed origin: %s, headers %v; want 503 with CORS headers exposing Retry-After",
			resp.Status, resp.Header)
	}
}

// Load balancers check health with HEAD, and a browser sends a CORS preflight before a cross-site request with a
// token in Authorization: both get answers, not 404 or 405.
func TestHeadAndPreflight(t *testing.T) {
	n := startNATS(t)
	e := startEdge(t, n, Config{CORSOrigins: []string{"https://app.example"}}, HubOptions{})
	for _, path := range []string{"/healthz", "/readyz", "/metrics", "/api/topics", "/api/snapshot?topic=market.*"} {
		resp, err := http.Head(e.url + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("HEAD %s: %d, want 200", path, resp.StatusCode)
		}
	}
	for _, path := range []string{"/sse?topic=market.*", "/ws"} {
		resp, err := http.Head(e.url + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != "GET" {
			t.Errorf("HEAD %s: %d, Allow %q; want 405, Allow GET", path, resp.StatusCode, resp.Header.Get("Allow"))
		}
	}
	// What is not a WebSocket handshake gets a JSON error, as everything else here does.
	for _, h := range []http.Header{
		{},
		{"Connection": {"Upgrade"}, "Upgrade": {"websocket"}, "Sec-Websocket-Version": {"8"}, "Sec-Websocket-Key": {"dGhlIHNhbXBsZSBub25jZQ=="}},
		{"Connection": {"keep-alive, Upgrade"}, "Upgrade": {"websocket"}, "Sec-Websocket-Version": {"13"}, "Sec-Websocket-Key": {"short"}},
	} {
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, e.url+"/ws", nil)
		maps.Copy(req.Header, h)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode/100 != 4 || resp.Header.Get("Content-Type") != "application/json; charset=utf-8" || !bytes.Contains(body, []byte(`"code":"bad_request"`)) {
			t.Errorf("GET /ws with %v: %d %s %s, want a 4xx JSON error", h, resp.StatusCode, resp.Header.Get("Content-Type"), body)
		}
	}
	for _, path := range []string{"/api/snapshot?topic=market.*", "/api/poll?topic=market.*", "/sse?topic=market.*"} {
		for origin, allowed := range map[string]bool{"https://app.example": true, "https://evil.example": false} {
			req, _ := http.NewRequestWithContext(t.Context(), http.MethodOptions, e.url+path, nil)
			req.Header.Set("Origin", origin)
			req.Header.Set("Access-Control-Request-Method", "GET")
			req.Header.Set("Access-Control-Request-Headers", "authorization")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			got := resp.Header.Get("Access-Control-Allow-Origin") == origin &&
				strings.Contains(strings.ToLower(resp.Header.Get("Access-Control-Allow-Headers")), "authorization")
			if resp.StatusCode != http.StatusNoContent || got != allowed {
				t.Errorf("preflight of %s from %s: %d %v, want 204 and allowed %v", path, origin, resp.StatusCode, resp.Header, allowed)
			}
		}
	}
}
