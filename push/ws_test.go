package push

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/coder/websocket"

	"github.com/livepush/livepush/subscriber/wire"
)

// wsMessage is any message the edge sends on a WebSocket.
type wsMessage struct {
	Type    string          `json:"type"`
	ID      json.RawMessage `json:"id"`
	Topics  []string        `json:"topics"`
	Topic   string          `json:"topic"`
	Cursor  string          `json:"cursor"`
	Data    json.RawMessage `json:"data"`
	Code    string          `json:"code"`
	Message string          `json:"message"`
	Skipped uint64          `json:"skipped"`
}

type wsClient struct {
	conn   *websocket.Conn
	msgs   chan wsMessage
	frames chan int // messages per frame
	closed chan error
}

func dialWS(t testing.TB, base, query string, header http.Header) *wsClient {
	t.Helper()
	u := "ws" + strings.TrimPrefix(base, "http") + "/ws" + query
	conn, _, err := websocket.Dial(t.Context(), u, &websocket.DialOptions{HTTPHeader: header})
	if err != nil {
		t.Fatalf("dial %s: %v", u, err)
	}
	conn.SetReadLimit(1 << 24)
	c := &wsClient{conn: conn, msgs: make(chan wsMessage, 4096), frames: make(chan int, 4096), closed: make(chan error, 1)}
	go func() {
		defer close(c.msgs)
		for {
			typ, data, err := conn.Read(context.Background())
			if err != nil {
				c.closed <- err
				return
			}
			if typ != websocket.MessageText || bytes.HasSuffix(data, []byte("\n")) {
				t.Errorf("frame of type %v ending in a newline: %q", typ, data)
			}
			if !utf8.Valid(data) { // a browser fails the connection on such a text frame
				t.Errorf("text frame that is not UTF-8: %q", data)
			}
			lines := bytes.Split(data, []byte("\n"))
			c.frames <- len(lines)
			for _, line := range lines {
				var m wsMessage
				if err := json.Unmarshal(line, &m); err != nil {
					t.Errorf("line %q is not JSON: %v", line, err)
					continue
				}
				c.msgs <- m
			}
		}
	}()
	t.Cleanup(func() { conn.CloseNow() })
	return c
}

func (c *wsClient) send(t testing.TB, msg string) {
	t.Helper()
	if err := c.conn.Write(t.Context(), websocket.MessageText, []byte(msg)); err != nil {
		t.Fatalf("write %s: %v", msg, err)
	}
}

func (c *wsClient) next(t testing.TB) wsMessage {
	t.Helper()
	select {
	case m, ok := <-c.msgs:
		if !ok {
			t.Fatal("WebSocket closed")
		}
		return m
	case <-time.After(5 * time.Second):
		t.Fatal("no WebSocket message within 5s")
	}
	panic("unreachable")
}

// expect returns the next message, failing unless it has type typ.
func (c *wsClient) expect(t testing.TB, typ string) wsMessage {
	t.Helper()
	m := c.next(t)
	if m.Type != typ {
		t.Fatalf("got %+v, want a %q message", m, typ)
	}
	return m
}

func (m wsMessage) received(t testing.TB) received {
	return received{Kind: m.Type, Topic: m.Topic, Cursor: mustCursor(t, m.Cursor), Data: string(m.Data)}
}

func TestWSSubscribeUnsubscribe(t *testing.T) {
	n := startNATS(t)
	e := startEdge(t, n, Config{}, HubOptions{})
	snap := n.publish(t, "market.AAPL", quote("AAPL"))
	e.waitHead(t, snap)

	c := dialWS(t, e.url, "", nil)
	c.send(t, `{"type":"subscribe","id":"1","topics":["market.AAPL","sports.nba.*"]}`)
	sub := c.expect(t, "subscribed")
	if string(sub.ID) != `"1"` || len(sub.Topics) != 2 {
		t.Errorf("subscribed reply %+v", sub)
	}
	if u := c.expect(t, "update").received(t); u.Topic != "market.AAPL" || u.Cursor != snap {
		t.Errorf("snapshot %+v, want market.AAPL at %d", u, snap)
	}
	live := n.publish(t, "market.AAPL", quote("AAPL"))
	n.publish(t, "market.MSFT", quote("MSFT")) // not subscribed
	game := n.publish(t, "sports.nba.g-0003", score("nba", "g-0003", 3, 0))
	for _, want := range []uint64{live, game} {
		if u := c.expect(t, "update").received(t); u.Cursor != want {
			t.Fatalf("update %+v, want cursor %d", u, want)
		}
	}

	c.send(t, `{"type":"unsubscribe","id":"2","topics":["market.AAPL"]}`)
	if m := c.expect(t, "unsubscribed"); string(m.ID) != `"2"` || len(m.Topics) != 1 || m.Topics[0] != "market.AAPL" {
		t.Errorf("unsubscribed reply %+v", m)
	}
	// After the reply nothing more for AAPL: the NBA update published after the AAPL one must come next.
	n.publish(t, "market.AAPL", quote("AAPL"))
	sentinel := n.publish(t, "sports.nba.g-0003", score("nba", "g-0003", 5, 0))
	if u := c.expect(t, "update").received(t); u.Cursor != sentinel {
		t.Fatalf("after unsubscribe got %+v, want only the sports update %d", u, sentinel)
	}

	c.send(t, `{"type":"ping","id":7}`)
	if m := c.expect(t, "pong"); string(m.ID) != "7" {
		t.Errorf("pong %+v, want id 7 as sent", m)
	}
}

func TestWSTopicsInURL(t *testing.T) {
	n := startNATS(t)
	e := startEdge(t, n, Config{}, HubOptions{})
	c := dialWS(t, e.url, "?topic=market.*", nil)
	c.expect(t, "subscribed")
	want := n.publish(t, "market.TSLA", quote("TSLA"))
	if u := c.expect(t, "update").received(t); u.Cursor != want {
		t.Fatalf("update %+v, want %d", u, want)
	}
}

func TestWSOverlappingPatternsDeliverOnce(t *testing.T) {
	n := startNATS(t)
	e := startEdge(t, n, Config{}, HubOptions{})
	c := dialWS(t, e.url, "", nil)
	c.send(t, `{"type":"subscribe","id":"a","topics":["market.*"]}`)
	c.expect(t, "subscribed")
	c.send(t, `{"type":"subscribe","id":"b","topics":["market.AAPL","market.>"]}`)
	c.expect(t, "subscribed")
	first := n.publish(t, "market.AAPL", quote("AAPL"))
	second := n.publish(t, "market.IBM", quote("IBM"))
	for _, want := range []uint64{first, second} {
		if u := c.expect(t, "update").received(t); u.Cursor != want {
			t.Fatalf("update %+v, want %d exactly once", u, want)
		}
	}
}

func TestWSInvalidInputKeepsConnection(t *testing.T) {
	n := startNATS(t)
	e := startEdge(t, n, Config{}, HubOptions{})
	c := dialWS(t, e.url, "", nil)
	for i, p := range invalidPatterns {
		topics, _ := json.Marshal([]string{p})
		c.send(t, `{"type":"subscribe","id":"`+string(rune('a'+i))+`","topics":`+string(topics)+`}`)
		m := c.expect(t, "error")
		if m.Code != "invalid_topic" || m.Message == "" || string(m.ID) != `"`+string(rune('a'+i))+`"` {
			t.Errorf("topic %.20q: error %+v, want invalid_topic with the request's id", p, m)
		}
	}
	for _, bad := range []struct{ msg, code string }{
		{`not json`, "bad_request"},
		{`{"type":"subscribe"}`, "bad_request"},
		{`{"type":"subscribe","topics":"market.AAPL"}`, "bad_request"},
		{`{"type":"dance","id":"x"}`, "bad_request"},
		{`{"id":"x"}`, "bad_request"},
		{`{"type":"ping","id":{"nested":true}}`, "bad_request"},
	} {
		c.send(t, bad.msg)
		if m := c.expect(t, "error"); m.Code != bad.code {
			t.Errorf("%s: error %+v, want code %s", bad.msg, m, bad.code)
		}
	}
	// Still usable.
	c.send(t, `{"type":"subscribe","id":"ok","topics":["market.AAPL"]}`)
	c.expect(t, "subscribed")
	want := n.publish(t, "market.AAPL", quote("AAPL"))
	if u := c.expect(t, "update").received(t); u.Cursor != want {
		t.Fatalf("update %+v, want %d", u, want)
	}
}

func TestWSOversizedFrameCloses1009(t *testing.T) {
	n := startNATS(t)
	e := startEdge(t, n, Config{}, HubOptions{})
	c := dialWS(t, e.url, "", nil)
	big := `{"type":"ping","id":"` + strings.Repeat("x", maxControlMessage) + `"}`
	c.conn.Write(t.Context(), websocket.MessageText, []byte(big))
	select {
	case err := <-c.closed:
		if websocket.CloseStatus(err) != websocket.StatusMessageTooBig {
			t.Fatalf("closed with %v, want 1009", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("connection not closed after an oversized frame")
	}
}

func TestWSForeignOriginRefused(t *testing.T) {
	n := startNATS(t)
	e := startEdge(t, n, Config{}, HubOptions{})
	u := "ws" + strings.TrimPrefix(e.url, "http") + "/ws"
	_, resp, err := websocket.Dial(t.Context(), u, &websocket.DialOptions{HTTPHeader: http.Header{"Origin": {"https://evil.example"}}})
	if err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("cross-site WebSocket: err %v, response %v; want 403", err, resp)
	}
	// The configured origin is allowed.
	e2 := startEdge(t, n, Config{AllowedOrigins: []string{"app.example"}}, HubOptions{})
	u2 := "ws" + strings.TrimPrefix(e2.url, "http") + "/ws"
	conn, _, err := websocket.Dial(t.Context(), u2, &websocket.DialOptions{HTTPHeader: http.Header{"Origin": {"https://app.example"}}})
	if err != nil {
		t.Fatalf("allowed origin refused: %v", err)
	}
	conn.CloseNow()
}

// countingConn counts the writes to a connection: each is one write system call.
type countingConn struct {
	net.Conn
	writes atomic.Int64
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

// A batch leaves in one socket write: with frames=single a reply, 16 updates and a large one as 18 frames (of each
// length encoding: under 126 bytes, under 64 KiB, over), each of them exactly one JSON message, as a client that
// parses a frame as JSON (json.loads(ws.recv())) needs; with frames=lines the same batch as one frame.
func TestWSSingleFramesLeaveInOneWrite(t *testing.T) {
	for _, single := range []bool{true, false} {
		counter := &countingConn{}
		accepted := make(chan *wsConn, 1)
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			h := &rawHijack{ResponseWriter: w, wrap: func(c net.Conn) net.Conn {
				counter.Conn = c
				return counter
			}}
			c, err := websocket.Accept(h, r, nil)
			if err != nil {
				t.Error(err)
				return
			}
			accepted <- newWSConn(c, h.frames, single, 5*time.Second)
		}))
		t.Cleanup(srv.Close)
		client, _, err := websocket.Dial(t.Context(), "ws"+strings.TrimPrefix(srv.URL, "http"), nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { client.CloseNow() })
		client.SetReadLimit(1 << 20)
		wc := <-accepted
		t.Cleanup(func() { wc.conn.CloseNow() })

		large, err := Contract{MaxPayload: 1 << 20}.Update("market.BIG", 99,
			[]byte(`{"kind":"quote","note":"`+strings.Repeat("x", 70_000)+`"}`), time.Now())
		if err != nil {
			t.Fatal(err)
		}
		batch := append([]*Update{wsReply(wire.Message{Type: wire.TypePong, ID: json.RawMessage(`"7"`)})}, benchBatch(16)...)
		batch = append(batch, large)
		before := counter.writes.Load()
		if err := wc.write(batch); err != nil {
			t.Fatal(err)
		}
		writes := counter.writes.Load() - before

		var got []string
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		for frames := 0; len(got) < len(batch); frames++ {
			typ, frame, err := client.Read(ctx)
			if err != nil {
				t.Fatalf("single=%v: after %d messages: %v", single, len(got), err)
			}
			if typ != websocket.MessageText {
				t.Fatalf("single=%v: a %v frame", single, typ)
			}
			if single {
				var m map[string]any
				if err := json.Unmarshal(frame, &m); err != nil {
					t.Fatalf("frame %d is not one JSON message: %v\n%.300s", frames, err, frame)
				}
				got = append(got, string(frame))
			} else {
				got = append(got, strings.Split(string(frame), "\n")...)
			}
			if !single && frames > 0 {
				t.Errorf("frames=lines: the batch came in %d frames, want 1", frames+1)
			}
		}
		for i, u := range batch {
			if want := strings.TrimSuffix(string(u.JSON()), "\n"); got[i] != want {
				t.Errorf("single=%v: message %d is %.100s, want %.100s", single, i, got[i], want)
			}
		}
		t.Logf("single=%v: %d messages in %d socket writes", single, len(batch), writes)
		if writes != 1 {
			t.Errorf("single=%v: the batch took %d socket writes, want 1", single, writes)
		}
	}
}

// Once coder/websocket has sent a close frame through a frameWriter, the edge's own frames stop: nothing may follow
// a close frame.
func TestFrameWriterStopsAfterClose(t *testing.T) {
	conn := &countingDiscard{}
	fw := &frameWriter{conn: conn}
	if err := fw.writeFrames(wire.AppendTextFrame(nil, []byte(`{"type":"pong"}`))); err != nil {
		t.Fatal(err)
	}
	fw.Write([]byte{0x8a, 0}) // a pong passes
	if err := fw.writeFrames(wire.AppendTextFrame(nil, []byte(`{"type":"pong"}`))); err != nil {
		t.Fatalf("after a pong: %v", err)
	}
	fw.Write([]byte{0x88, 2, 0x03, 0xe8}) // close, 1000
	if err := fw.writeFrames(wire.AppendTextFrame(nil, []byte(`{"type":"pong"}`))); !errors.Is(err, net.ErrClosed) {
		t.Errorf("a data frame after the close frame: %v, want net.ErrClosed", err)
	}
	if conn.writes != 4 {
		t.Errorf("%d writes reached the connection, want 4 (two batches, the pong, the close)", conn.writes)
	}
}

// The edge's frames and the library's control frames share the socket: a client that pings all the while a burst
// of updates arrives gets every pong and every update, intact and in order.
func TestWSFramesBesidePings(t *testing.T) {
	for _, frames := range []string{"single", "lines"} {
		t.Run(frames, func(t *testing.T) { testWSFramesBesidePings(t, frames) })
	}
}

func testWSFramesBesidePings(t *testing.T, frames string) {
	n := startNATS(t)
	// No conflation, whatever the load on the machine running the test: every update must arrive.
	e := startEdge(t, n, Config{}, HubOptions{QueueLimit: 4096, LatencyBudget: time.Hour})
	c := dialWS(t, e.url, "?topic=market.*&frames="+frames, nil)
	c.expect(t, "subscribed")
	const updates = 2000
	var pings atomic.Int64
	var wg sync.WaitGroup
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	wg.Go(func() {
		for ctx.Err() == nil {
			pctx, pcancel := context.WithTimeout(ctx, 5*time.Second)
			err := c.conn.Ping(pctx)
			pcancel()
			if err != nil {
				if ctx.Err() == nil {
					t.Errorf("ping %d: %v", pings.Load()+1, err)
				}
				return
			}
			pings.Add(1)
		}
	})
	var last uint64
	for i := range updates {
		if _, err := n.JS.PublishAsync(fmt.Sprintf("market.P%d", i%10), []byte(quote(fmt.Sprintf("P%d", i%10)))); err != nil {
			t.Fatal(err)
		}
	}
	<-n.JS.PublishAsyncComplete()
	for range updates {
		u := c.expect(t, "update").received(t)
		if u.Cursor <= last {
			t.Fatalf("update %d after %d", u.Cursor, last)
		}
		last = u.Cursor
	}
	cancel()
	wg.Wait()
	t.Logf("%d updates and %d pings answered", updates, pings.Load())
	if pings.Load() == 0 {
		t.Error("no ping was answered")
	}
}
