package push

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/livepush/livepush/subscriber/wire"
)

// What a new user meets in the first hour: JSON that reads as written, misspelt parameters refused with a word,
// and a hint when a topic has no update.

func getJSON(t *testing.T, u string) (int, string, http.Header) {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

// wsRaw dials /ws and returns the connection, for reading frames as the edge wrote them.
func wsRaw(t *testing.T, base, query string) *websocket.Conn {
	t.Helper()
	conn, _, err := websocket.Dial(t.Context(), "ws"+strings.TrimPrefix(base, "http")+"/ws"+query, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.CloseNow() })
	return conn
}

func readFrame(t *testing.T, conn *websocket.Conn) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	_, b, err := conn.Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestJSONAnswersWriteTopicsAsTheyAre(t *testing.T) {
	n := startNATS(t)
	e := startEdge(t, n, Config{}, HubOptions{})

	// An error naming a pattern with ">" and a parameter with "&".
	for _, q := range []string{"/sse?topic=sports.>.x", "/api/snapshot?topic=sports.>.x", "/api/snapshot?topic=market.*&x%26y=1"} {
		status, body, h := getJSON(t, e.url+q)
		if status != 400 || strings.Contains(body, `\u00`) || !strings.Contains(body, "sports.>.x") && !strings.Contains(body, "x&y") {
			t.Errorf("GET %s = %d %s\nwant a 400 that writes > and & as they are", q, status, body)
		}
		if ct := h.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
			t.Errorf("GET %s: Content-Type %q", q, ct)
		}
	}
	// The catalog, health and readiness: plain JSON too.
	n.publish(t, "sports.nba.g-1", score("nba", "g-1", 1, 0))
	for _, q := range []string{"/api/topics", "/readyz", "/healthz"} {
		status, body, _ := getJSON(t, e.url+q)
		var v map[string]any
		if status != 200 || json.Unmarshal([]byte(body), &v) != nil || strings.Contains(body, `\u00`) {
			t.Errorf("GET %s = %d %s", q, status, body)
		}
	}

	// WebSocket replies: subscribed, unsubscribed and errors.
	conn := wsRaw(t, e.url, "")
	conn.Write(t.Context(), websocket.MessageText, []byte(`{"type":"subscribe","id":"1","topics":["sports.>"]}`))
	if f := readFrame(t, conn); !strings.HasPrefix(f, `{"type":"subscribed","id":"1","topics":["sports.>"]}`) {
		t.Errorf("subscribed frame %s, want sports.> written as is", f)
	}
	conn.Write(t.Context(), websocket.MessageText, []byte(`{"type":"unsubscribe","id":"2","topics":["sports.>"]}`))
	f := readFrame(t, conn)
	for ; !strings.Contains(f, `"unsubscribed"`); f = readFrame(t, conn) { // past the snapshot
	}
	if !strings.HasSuffix(f, `{"type":"unsubscribed","id":"2","topics":["sports.>"]}`) {
		t.Errorf("unsubscribed frame %s", f)
	}
	conn.Write(t.Context(), websocket.MessageText, []byte(`{"type":"subscribe","id":"3","topics":["sports.>.x"]}`))
	if f := readFrame(t, conn); !strings.Contains(f, `"code":"invalid_topic"`) || !strings.Contains(f, `sports.>.x`) {
		t.Errorf("error frame %s, want invalid_topic naming sports.>.x as written", f)
	}
}

func TestUnknownQueryParametersAreRefused(t *testing.T) {
	n := startNATS(t)
	e := startEdge(t, n, Config{}, HubOptions{})
	refused := []struct {
		query, param, takes string
	}{
		{"/sse?topic=market.AAPL&maxrate=1", "maxrate", "/sse takes topic, maxRate, lastEventId, token (did you mean maxRate?)"},
		{"/sse?topic=market.AAPL&cursor=12", "cursor", "/sse takes topic, maxRate, lastEventId, token"},
		{"/sse?topics=market.AAPL", "topics", "/sse takes topic, maxRate, lastEventId, token"},
		{"/ws?topic=market.AAPL&sinse=12", "sinse", "/ws takes topic, since, maxRate, frames, token"},
		{"/api/snapshot?topic=market.AAPL&maxRate=1", "maxRate", "/api/snapshot takes topic, token"},
		{"/api/poll?topic=market.AAPL&Cursor=1", "Cursor", "/api/poll takes topic, cursor, timeout, limit, maxRate, token (did you mean cursor?)"},
		{"/api/topics?topic=market.AAPL", "topic", "/api/topics takes token"},
	}
	for _, c := range refused {
		status, body, _ := getJSON(t, e.url+c.query)
		var got wire.ErrorBody
		json.Unmarshal([]byte(body), &got)
		want := `unknown query parameter "` + c.param + `": ` + c.takes
		if status != 400 || got.Code != "bad_request" || got.Error != want {
			t.Errorf("GET %s = %d %s\nwant 400 bad_request %q", c.query, status, body, want)
		}
	}

	// A known parameter with a value it does not take says which it takes.
	status, body, _ := getJSON(t, e.url+"/ws?topic=market.AAPL&frames=many")
	if status != 400 || !strings.Contains(body, `"code":"bad_request"`) || !strings.Contains(body, "use single") {
		t.Errorf("GET /ws?frames=many = %d %s, want 400 bad_request naming single and lines", status, body)
	}

	// A query Go cannot parse whole is refused, not read in part: the part dropped may be the cursor.
	for _, q := range []string{
		"/api/poll?topic=market.AAPL&cursor=1%",
		"/sse?topic=market.AAPL&lastEventId=%ZZ",
		"/api/snapshot?topic=market.AAPL&topic=market.MSFT;x",
		"/api/snapshot?topic=market.AAPL" + strings.Repeat("&cursor=1", 10_001),
	} {
		status, body, _ := getJSON(t, e.url+q)
		if status != 400 || !strings.Contains(body, `"code":"bad_request"`) || !strings.Contains(body, "malformed query string") {
			t.Errorf("GET %.60s = %d %s, want 400 bad_request: malformed query string", q, status, body)
		}
	}
	// A WebSocket's since and maxRate in the URL go with the topics there.
	for _, q := range []string{"/ws?since=5", "/ws?maxRate=abc"} {
		status, body, _ := getJSON(t, e.url+q)
		if status != 400 || !strings.Contains(body, `"code":"bad_request"`) || !strings.Contains(body, "give topic too") {
			t.Errorf("GET %s = %d %s, want 400 bad_request", q, status, body)
		}
	}

	cursor := n.publish(t, "market.AAPL", quote("AAPL"))
	e.waitHead(t, cursor)
	c := strconv.FormatUint(cursor, 10)
	for _, q := range []string{
		"/api/snapshot?topic=market.AAPL&token=x",
		"/api/poll?topic=market.AAPL&cursor=" + c + "&timeout=1ms&limit=5&maxRate=0&token=x",
		"/api/topics?token=x",
	} {
		if status, body, _ := getJSON(t, e.url+q); status != 200 {
			t.Errorf("GET %s = %d %s, want 200", q, status, body)
		}
	}
	sse := openSSE(t, e.url, url.Values{"topic": {"market.AAPL"}, "maxRate": {"2"}, "lastEventId": {c}, "token": {"x"}}, nil)
	sse.close()
	ws := dialWS(t, e.url, "?topic=market.AAPL&since="+c+"&maxRate=2&frames=lines&token=x", nil)
	ws.expect(t, "subscribed")
}

func TestTopicsNobodyPublishesAreNamed(t *testing.T) {
	n := startNATS(t)
	e := startEdge(t, n, Config{}, HubOptions{})
	aapl := n.publish(t, "market.AAPL", quote("AAPL"))
	e.waitHead(t, aapl)
	patterns := url.Values{"topic": {"market.AAPL", "market.AAPLX", "sports.nba.*", "sports.nba.g-9"}}

	// SSE: a comment after the hello for each, then the stream as usual.
	resp, err := http.Get(e.url + "/sse?" + patterns.Encode())
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	r := bufio.NewReader(resp.Body)
	var head []string
	for len(head) < 6 {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		head = append(head, strings.TrimRight(line, "\n"))
	}
	want := []string{"retry: 2000", ": livepush", ": no updates yet for market.AAPLX", ": no updates yet for sports.nba.g-9", "",
		"id: " + strconv.FormatUint(aapl, 10)}
	if strings.Join(head, "|") != strings.Join(want, "|") {
		t.Errorf("SSE stream begins\n%q\nwant\n%q", head, want)
	}

	// WebSocket: "unknown" in the subscribed reply, only the topics named in full that have no update.
	conn := wsRaw(t, e.url, "")
	conn.Write(t.Context(), websocket.MessageText, []byte(`{"type":"subscribe","id":"1","topics":["market.AAPL","market.AAPLX","sports.nba.*"]}`))
	if f := readFrame(t, conn); !strings.HasPrefix(f, `{"type":"subscribed","id":"1","topics":["market.AAPL","market.AAPLX","sports.nba.*"],"unknown":["market.AAPLX"]}`) {
		t.Errorf("subscribed frame %s, want unknown [market.AAPLX]", f)
	}
	conn.Write(t.Context(), websocket.MessageText, []byte(`{"type":"subscribe","id":"2","topics":["market.AAPL"]}`))
	for f := readFrame(t, conn); !strings.Contains(f, `"id":"2"`); f = readFrame(t, conn) {
		if strings.Contains(f, `"id":"2"`) && strings.Contains(f, "unknown") {
			t.Errorf("subscribed to a known topic: %s, want no unknown", f)
		}
	}

	// Snapshot and poll answers.
	for _, q := range []string{"/api/snapshot?", "/api/poll?"} {
		_, body, _ := getJSON(t, e.url+q+patterns.Encode())
		var answer struct{ Unknown []string }
		json.Unmarshal([]byte(body), &answer)
		if strings.Join(answer.Unknown, ",") != "market.AAPLX,sports.nba.g-9" {
			t.Errorf("GET %s: %s, want unknown [market.AAPLX sports.nba.g-9]", q, body)
		}
		if _, body, _ := getJSON(t, e.url+q+"topic=market.AAPL"); strings.Contains(body, "unknown") {
			t.Errorf("GET %stopic=market.AAPL: %s, want no unknown topics", q, body)
		}
	}

	// It is a hint, not a refusal: the first update of the topic arrives, on the stream that named it too.
	n.publish(t, "market.AAPLX", quote("AAPLX"))
	for f := readFrame(t, conn); !strings.Contains(f, `"topic":"market.AAPLX"`); f = readFrame(t, conn) {
	}
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("SSE stream ended before market.AAPLX's update: %v", err)
		}
		if strings.Contains(line, `"topic":"market.AAPLX"`) {
			break
		}
	}
}
