package push

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/golang-jwt/jwt/v5"

	"github.com/livepush/livepush/subscriber/wire"
)

var secret = []byte("a test secret that is long enough")

func hs256(t *testing.T, topics []string, ttl time.Duration) string {
	t.Helper()
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, tokenClaims{Topics: topics,
		RegisteredClaims: jwt.RegisteredClaims{Subject: "trader-1", ExpiresAt: jwt.NewNumericDate(time.Now().Add(ttl))}}).
		SignedString(secret)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func authEdge(t *testing.T, cfg AuthConfig) (*testNATS, *testEdge) {
	t.Helper()
	a, err := NewAuthenticator(cfg)
	if err != nil {
		t.Fatal(err)
	}
	n := startNATS(t)
	return n, startEdge(t, n, Config{Auth: a}, HubOptions{})
}

// status GETs path with the given header and returns the status and the error code of the body.
func status(t *testing.T, u string, header http.Header) (int, string) {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, u, nil)
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body wire.ErrorBody
	if resp.Header.Get("Content-Type") == "application/json; charset=utf-8" {
		json.NewDecoder(resp.Body).Decode(&body)
	}
	return resp.StatusCode, body.Code
}

func bearer(tok string) http.Header { return http.Header{"Authorization": {"Bearer " + tok}} }

func TestAuthTopicsByToken(t *testing.T) {
	n, e := authEdge(t, AuthConfig{HMACSecret: secret, Anonymous: []string{"market.>"}})
	nba := hs256(t, []string{"sports.nba.*"}, time.Hour)
	cases := []struct {
		name   string
		path   string
		header http.Header
		status int
		code   string
	}{
		{"anonymous root, no token", "/api/snapshot?topic=market.*", nil, 200, ""},
		{"closed root, no token", "/api/snapshot?topic=sports.>", nil, 401, "unauthorized"},
		{"token too narrow", "/api/snapshot?topic=sports.>", bearer(nba), 403, "forbidden_topic"},
		{"token covers", "/api/snapshot?topic=sports.nba.g-1&topic=sports.nba.*", bearer(nba), 200, ""},
		{"token in the query", "/api/snapshot?topic=sports.nba.*&token=" + nba, nil, 200, ""},
		{"token in a cookie", "/api/snapshot?topic=sports.nba.*", http.Header{"Cookie": {"livepush_token=" + nba}}, 200, ""},
		{"expired token", "/api/snapshot?topic=sports.nba.*", bearer(hs256(t, []string{"sports.>"}, -time.Minute)), 401, "unauthorized"},
		{"wrong signature", "/api/snapshot?topic=sports.nba.*", bearer(nba[:len(nba)-4] + "AAAA"), 401, "unauthorized"},
		{"garbage", "/api/snapshot?topic=market.*", bearer("not.a.token"), 401, "unauthorized"},
		{"sse refused", "/sse?topic=sports.nhl.*", bearer(nba), 403, "forbidden_topic"},
		{"poll refused", "/api/poll?topic=sports.>", nil, 401, "unauthorized"},
	}
	for _, c := range cases {
		if got, code := status(t, e.url+c.path, c.header); got != c.status || code != c.code {
			t.Errorf("%s: %d %q, want %d %q", c.name, got, code, c.status, c.code)
		}
	}

	// The catalog shows only what the client may subscribe to.
	n.publish(t, "market.AAPL", quote("AAPL"))
	e.waitHead(t, n.publish(t, "sports.nhl.g-0001", score("nhl", "g-0001", 1, 0)))
	body, _, _ := get(t.Context(), e.url+"/api/topics")
	if !strings.Contains(string(body), "market.AAPL") || strings.Contains(string(body), "sports.nhl") {
		t.Errorf("anonymous catalog: %s", body)
	}

	// WebSocket: the token is read at connect time; each subscribe is checked against it.
	c := dialWS(t, e.url, "?token="+nba, nil)
	c.send(t, `{"type":"subscribe","id":"1","topics":["sports.>"]}`)
	if m := c.expect(t, "error"); m.Code != "forbidden_topic" {
		t.Errorf("subscribe beyond the token: %+v", m)
	}
	c.send(t, `{"type":"subscribe","id":"2","topics":["sports.nba.*","market.AAPL"]}`)
	c.expect(t, "subscribed")
}

func TestAuthStreamEndsWhenTokenExpires(t *testing.T) {
	_, e := authEdge(t, AuthConfig{HMACSecret: secret})
	tok := hs256(t, []string{"market.>"}, 1500*time.Millisecond)

	s := openSSE(t, e.url, url.Values{"topic": {"market.*"}, "token": {tok}}, nil)
	w := dialWS(t, e.url, "?topic=market.*", http.Header{"Authorization": {"Bearer " + tok}})
	w.expect(t, "subscribed")
	if r := s.next(t); r.Kind != "close" || !strings.Contains(r.Data, "token_expired") || !strings.Contains(r.Data, `"retry":1000`) {
		t.Errorf("SSE: %+v, want a token_expired close event saying retry 1000 (ms) in its data", r)
	}
	select {
	case err := <-w.closed:
		if websocket.CloseStatus(err) != 4001 {
			t.Errorf("WebSocket closed with %v, want 4001", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("WebSocket still open after its token expired")
	}

	// A bad token on a WebSocket closes it with 4001 and a reason a browser can read.
	conn, _, err := websocket.Dial(t.Context(), "ws"+strings.TrimPrefix(e.url, "http")+"/ws?token=nope", nil)
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = conn.Read(t.Context())
	if websocket.CloseStatus(err) != 4001 || !strings.Contains(err.Error(), "malformed token") {
		t.Errorf("bad token: %v, want close 4001 saying the token is malformed", err)
	}
}

// A WebSocket client sends a fresh token before its first expires, and its connection goes on past that time with
// its updates. A token that does not verify, or allows less than the connection has, is refused and changes
// nothing.
func TestAuthWebSocketTokenRefresh(t *testing.T) {
	n, e := authEdge(t, AuthConfig{HMACSecret: secret})
	w := dialWS(t, e.url, "?topic=market.*", bearer(hs256(t, []string{"market.>"}, 1500*time.Millisecond)))
	w.expect(t, "subscribed")

	w.send(t, `{"type":"auth","id":1,"token":"nope"}`)
	if m := w.expect(t, "error"); m.Code != "unauthorized" || string(m.ID) != "1" {
		t.Errorf("bad token: %+v, want an unauthorized error for id 1", m)
	}
	narrow := hs256(t, []string{"market.AAPL"}, time.Hour)
	w.send(t, `{"type":"auth","id":2,"token":"`+narrow+`"}`)
	if m := w.expect(t, "error"); m.Code != "forbidden_topic" {
		t.Errorf("a token without market.*: %+v, want forbidden_topic", m)
	}
	w.send(t, `{"type":"auth","id":3,"token":"`+hs256(t, []string{"market.>"}, time.Hour)+`"}`)
	if m := w.expect(t, "authenticated"); string(m.ID) != "3" {
		t.Errorf("fresh token: %+v, want authenticated for id 3", m)
	}

	time.Sleep(2 * time.Second) // past the first token's expiry
	cursor := n.publish(t, "market.AAPL", quote("AAPL"))
	if m := w.expect(t, "update"); mustCursor(t, m.Cursor) != cursor {
		t.Errorf("after the first token's expiry: %+v, want the update at %d", m, cursor)
	}

	// Without authentication configured, an auth message is an error and the connection goes on.
	v := dialWS(t, startEdge(t, n, Config{}, HubOptions{}).url, "", nil)
	v.send(t, `{"type":"auth","id":"x","token":"t"}`)
	if m := v.expect(t, "error"); m.Code != "bad_request" {
		t.Errorf("auth on an edge without tokens: %+v, want bad_request", m)
	}
	v.send(t, `{"type":"ping","id":"y"}`)
	v.expect(t, "pong")
}

// jwkServer serves a key set with an RSA key (RS256) and an EC key (ES256).
func jwkServer(t *testing.T, rsaKey *rsa.PrivateKey, ecKey *ecdsa.PrivateKey) string {
	b64 := func(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }
	point, err := ecKey.PublicKey.Bytes() // 0x04 || X || Y
	if err != nil {
		t.Fatal(err)
	}
	set := map[string]any{"keys": []map[string]string{
		{"kid": "rsa-1", "kty": "RSA", "n": b64(rsaKey.N.Bytes()), "e": b64(big.NewInt(int64(rsaKey.E)).Bytes())},
		{"kid": "ec-1", "kty": "EC", "crv": "P-256", "x": b64(point[1:33]), "y": b64(point[33:])},
	}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { json.NewEncoder(w).Encode(set) }))
	t.Cleanup(srv.Close)
	return srv.URL
}

func TestAuthJWKS(t *testing.T) {
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	_, e := authEdge(t, AuthConfig{JWKSURL: jwkServer(t, rsaKey, ecKey), Issuer: "https://issuer.example"})
	sign := func(method jwt.SigningMethod, kid string, key any, iss string) string {
		tok := jwt.NewWithClaims(method, tokenClaims{Topics: []string{"market.>"},
			RegisteredClaims: jwt.RegisteredClaims{Issuer: iss, ExpiresAt: jwt.NewNumericDate(time.Now().Add(time.Hour))}})
		tok.Header["kid"] = kid
		s, err := tok.SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	otherKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	for _, c := range []struct {
		name  string
		token string
		want  int
	}{
		{"RS256 from the key set", sign(jwt.SigningMethodRS256, "rsa-1", rsaKey, "https://issuer.example"), 200},
		{"ES256 from the key set", sign(jwt.SigningMethodES256, "ec-1", ecKey, "https://issuer.example"), 200},
		{"unknown kid", sign(jwt.SigningMethodRS256, "rsa-9", rsaKey, "https://issuer.example"), 401},
		{"signed by another key", sign(jwt.SigningMethodRS256, "rsa-1", otherKey, "https://issuer.example"), 401},
		{"other issuer", sign(jwt.SigningMethodRS256, "rsa-1", rsaKey, "https://evil.example"), 401},
		{"HS256 not accepted", hs256(t, []string{"market.>"}, time.Hour), 401},
	} {
		if got, _ := status(t, e.url+"/api/snapshot?topic=market.*", bearer(c.token)); got != c.want {
			t.Errorf("%s: %d, want %d", c.name, got, c.want)
		}
	}
}

// The Bearer scheme is case-insensitive (RFC 9110), and an edge that requires an expiry refuses tokens without one.
func TestAuthSchemeCaseAndRequiredExpiry(t *testing.T) {
	_, e := authEdge(t, AuthConfig{HMACSecret: secret, RequireExpiry: true})
	tok := hs256(t, []string{"market.>"}, time.Hour)
	for _, scheme := range []string{"Bearer", "bearer", "BEARER"} {
		if code, _ := status(t, e.url+"/api/snapshot?topic=market.AAPL", http.Header{"Authorization": {scheme + " " + tok}}); code != http.StatusOK {
			t.Errorf("Authorization: %s …: %d, want 200", scheme, code)
		}
	}
	forever, err := jwt.NewWithClaims(jwt.SigningMethodHS256, tokenClaims{Topics: []string{"market.>"}}).SignedString(secret)
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, e.url+"/api/snapshot?topic=market.AAPL", nil)
	req.Header.Set("Authorization", "Bearer "+forever)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(string(body), "exp") {
		t.Errorf("a token without exp: %d %s, want 401 saying an expiry is required", resp.StatusCode, body)
	}
}
