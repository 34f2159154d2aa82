package push

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	sse "github.com/tmaxmax/go-sse"

	"github.com/livepush/livepush/subscriber/wire"
)

// sseClient reads one SSE stream and hands its events over a channel.
type sseClient struct {
	resp   *http.Response
	events chan received
	cancel context.CancelFunc
}

func openSSE(t testing.TB, base string, query url.Values, header http.Header) *sseClient {
	t.Helper()
	return openSSEWith(t, http.DefaultClient, base, query, header)
}

// openSSEWith opens a stream with client: over HTTP/2, say.
func openSSEWith(t testing.TB, client *http.Client, base string, query url.Values, header http.Header) *sseClient {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/sse?"+query.Encode(), nil)
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := client.Do(req)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(resp.Body)
		cancel()
		t.Fatalf("GET /sse: %s %s", resp.Status, body)
	}
	c := &sseClient{resp: resp, events: make(chan received, 1024), cancel: cancel}
	go func() {
		defer close(c.events)
		for ev, err := range sse.Read(resp.Body, nil) {
			if err != nil {
				return
			}
			r := received{Kind: ev.Type, Data: ev.Data}
			if ev.Type != "close" && ev.Type != "reset" {
				r.Cursor = mustCursor(t, ev.LastEventID)
				r.Topic = topicOf(t, ev.Data)
			}
			c.events <- r
		}
	}()
	t.Cleanup(c.close)
	return c
}

func (c *sseClient) close() {
	c.cancel()
	c.resp.Body.Close()
}

// next returns the next event, failing the test if none comes within 5s.
func (c *sseClient) next(t testing.TB) received {
	t.Helper()
	select {
	case r, ok := <-c.events:
		if !ok {
			t.Fatal("SSE stream ended")
		}
		return r
	case <-time.After(5 * time.Second):
		t.Fatal("no SSE event within 5s")
	}
	panic("unreachable")
}

func TestSSESnapshotThenLive(t *testing.T) {
	n := startNATS(t)
	// Before the edge starts: the edge's cache must come from the stream itself.
	n.publish(t, "market.AAPL", quote("AAPL"))
	n.publish(t, "market.MSFT", quote("MSFT"))
	lastAAPL := n.publish(t, "market.AAPL", quote("AAPL"))
	n.publish(t, "sports.nba.g-0001", score("nba", "g-0001", 2, 0))
	e := startEdge(t, n, Config{}, HubOptions{})
	lastMSFT := n.publish(t, "market.MSFT", quote("MSFT"))
	e.waitHead(t, lastMSFT)

	c := openSSE(t, e.url, url.Values{"topic": {"market.*"}}, nil)
	if ct := c.resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Errorf("Content-Type %q", ct)
	}
	// The snapshot: the latest quote of each symbol, oldest first.
	first, second := c.next(t), c.next(t)
	if first.Topic != "market.AAPL" || first.Cursor != lastAAPL || first.Kind != "quote" {
		t.Errorf("first snapshot event %+v, want market.AAPL at %d", first, lastAAPL)
	}
	if second.Topic != "market.MSFT" || second.Cursor != lastMSFT {
		t.Errorf("second snapshot event %+v, want market.MSFT at %d", second, lastMSFT)
	}

	// Then live, in order, sports not included.
	prev := second.Cursor
	var want []uint64
	for i := range 20 {
		n.publish(t, "sports.nba.g-0001", score("nba", "g-0001", i, 1))
		want = append(want, n.publish(t, "market.NVDA", quote("NVDA")))
	}
	for _, w := range want {
		r := c.next(t)
		if r.Cursor != w || r.Topic != "market.NVDA" {
			t.Fatalf("got %s at %d, want market.NVDA at %d", r.Topic, r.Cursor, w)
		}
		if r.Cursor <= prev {
			t.Fatalf("cursor %d after %d", r.Cursor, prev)
		}
		prev = r.Cursor
	}
}

func TestSSESportsScores(t *testing.T) {
	n := startNATS(t)
	e := startEdge(t, n, Config{}, HubOptions{})
	c := openSSE(t, e.url, url.Values{"topic": {"sports.>"}}, nil)
	var want []uint64
	for i := range 5 {
		want = append(want, n.publish(t, "sports.epl.g-0007", score("epl", "g-0007", i, 0)))
		n.publish(t, "market.AAPL", quote("AAPL"))
		want = append(want, n.publish(t, "sports.nhl.g-0002", score("nhl", "g-0002", 0, i)))
	}
	for _, w := range want {
		r := c.next(t)
		if r.Cursor != w || r.Kind != "score" || !strings.HasPrefix(r.Topic, "sports.") {
			t.Fatalf("got %+v, want a score at %d", r, w)
		}
		var s struct {
			Home struct{ Score int }
			Away struct{ Score int }
		}
		if err := json.Unmarshal([]byte(r.Data), &s); err != nil {
			t.Fatalf("score payload %q: %v", r.Data, err)
		}
	}
}

func TestSSEHeadersFlushedAtOnce(t *testing.T) {
	// A client must see the response before the first update: EventSource fires onopen, curl shows the stream.
	n := startNATS(t)
	e := startEdge(t, n, Config{}, HubOptions{})
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, e.url+"/sse?topic=market.NONE", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("no response headers for a stream with no updates: %v", err)
	}
	defer resp.Body.Close()
	for _, h := range []string{"Cache-Control", "X-Accel-Buffering"} {
		if resp.Header.Get(h) == "" {
			t.Errorf("missing %s header", h)
		}
	}
}

func TestSSEHeartbeat(t *testing.T) {
	n := startNATS(t)
	e := startEdge(t, n, Config{}, HubOptions{Heartbeat: 100 * time.Millisecond})
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, e.url+"/sse?topic=market.QUIET", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	got := make(chan string, 1)
	go func() {
		buf := make([]byte, 4096)
		var all strings.Builder
		for {
			k, err := resp.Body.Read(buf)
			all.Write(buf[:k])
			if strings.Count(all.String(), ": heartbeat") >= 2 || err != nil {
				got <- all.String()
				return
			}
		}
	}()
	select {
	case s := <-got:
		if strings.Count(s, ": heartbeat") < 2 {
			t.Fatalf("stream ended without two heartbeats: %q", s)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("no heartbeat comments on an idle stream")
	}
}

func TestSSEInvalidTopics(t *testing.T) {
	n := startNATS(t)
	e := startEdge(t, n, Config{}, HubOptions{})
	for _, p := range invalidPatterns {
		resp, err := http.Get(e.url + "/sse?" + url.Values{"topic": {p}}.Encode())
		if err != nil {
			t.Fatal(err)
		}
		var body wire.ErrorBody
		err = json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest || err != nil || body.Code != "invalid_topic" || body.Error == "" {
			t.Errorf("topic %.20q: %s %+v (%v), want 400 with an invalid_topic JSON body", p, resp.Status, body, err)
		}
		if len(body.Error) > 300 {
			t.Errorf("topic %.20q: error message %q echoes too much", p, body.Error)
		}
	}
	resp, err := http.Get(e.url + "/sse")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("no topic: %s, want 400", resp.Status)
	}
}

// invalidPatterns are refused on every transport.
var invalidPatterns = []string{
	"$SYS.>", "_INBOX.x", ">", "market..X", strings.Repeat("A", 1024), "market.AAPL\nmarket.MSFT", "$JS.API.>",
	"market.aapl", "", " market.AAPL",
}
