package push

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/livepush/livepush/internal/stream"
)

// The stream is deleted and created again under a running edge (an operator moving it to other storage, say), so its
// cursors start over. The edge notices, tells its subscribers why it closes them, serves the new stream, and refuses
// the old cursors as ahead of the stream, which clients take as a reset.
func TestStreamRecreatedUnderARunningEdge(t *testing.T) {
	n := startNATS(t)
	e := startEdgeOn(t, n, listen(t, "127.0.0.1:0"), Config{}, HubOptions{},
		func(s *Source) { s.checkEvery = 100 * time.Millisecond })
	var old uint64
	for i := range 50 {
		old = n.publish(t, "market.AAPL", fmt.Sprintf(`{"kind":"quote","price":%d}`, i))
	}
	e.waitHead(t, old)
	ws := dialWS(t, e.url, "?topic=market.AAPL", nil)
	ws.expect(t, "subscribed")
	if m := ws.expect(t, "update"); mustCursor(t, m.Cursor) != old {
		t.Fatalf("snapshot at cursor %s, want %d", m.Cursor, old)
	}
	sse := openSSE(t, e.url, url.Values{"topic": {"market.AAPL"}}, nil)
	if r := sse.next(t); r.Cursor != old {
		t.Fatalf("SSE snapshot at cursor %d, want %d", r.Cursor, old)
	}

	if err := n.JS.DeleteStream(t.Context(), n.Stream.StreamName()); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Ensure(t.Context(), n.JS, n.Stream, testLogger(t)); err != nil {
		t.Fatal(err)
	}
	fresh := n.publish(t, "market.AAPL", `{"kind":"quote","price":1000}`)
	if fresh >= old {
		t.Fatalf("the new stream's first cursor is %d: not a restart", fresh)
	}

	// Both subscribers are told why they go.
	select {
	case err := <-ws.closed:
		if websocket.CloseStatus(err) != websocket.StatusServiceRestart || !strings.Contains(err.Error(), "recreated") {
			t.Errorf("WebSocket closed with %v, want 1012 saying the stream was recreated", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the WebSocket subscriber was not closed after the stream was recreated")
	}
	for deadline := time.Now().Add(10 * time.Second); ; {
		r, ok := <-sse.events
		if !ok {
			t.Fatal("the SSE stream ended without a close event")
		}
		if r.Kind == "close" {
			if !strings.Contains(r.Data, "stream_recreated") {
				t.Errorf("SSE close event %q, want reason stream_recreated", r.Data)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no SSE close event after the stream was recreated")
		}
	}

	// A client with a cursor of the old stream is refused as ahead of it, and a new one gets the new stream.
	e.waitReady(t)
	body, status, err := get(t.Context(), fmt.Sprintf("%s/api/poll?topic=market.AAPL&timeout=0&cursor=%d", e.url, old))
	if err != nil || status != 400 || !strings.Contains(string(body), "bad_cursor") {
		t.Errorf("poll from an old cursor: %d %s %v, want 400 bad_cursor", status, body, err)
	}
	again := dialWS(t, e.url, "?topic=market.AAPL", nil)
	again.expect(t, "subscribed")
	if m := again.expect(t, "update"); mustCursor(t, m.Cursor) != fresh || !strings.Contains(string(m.Data), "1000") {
		t.Fatalf("snapshot after the recreation: %+v, want cursor %d with price 1000", m, fresh)
	}
	live := n.publish(t, "market.AAPL", `{"kind":"quote","price":1001}`)
	if m := again.expect(t, "update"); mustCursor(t, m.Cursor) != live {
		t.Fatalf("live update at cursor %s, want %d", m.Cursor, live)
	}
}

// A busy stream, checked often, is never taken for a recreated one: the consumer is not restarted and no subscriber
// is closed.
func TestBusyStreamIsNotTakenForRecreated(t *testing.T) {
	n := startNATS(t)
	var src *Source
	e := startEdgeOn(t, n, listen(t, "127.0.0.1:0"), Config{}, HubOptions{},
		func(s *Source) { s.checkEvery = 10 * time.Millisecond; src = s })
	ws := dialWS(t, e.url, "?topic=market.BUSY", nil)
	ws.expect(t, "subscribed")
	var last uint64
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); {
		for range 50 {
			if _, err := n.JS.PublishAsync("market.BUSY", []byte(`{"kind":"quote"}`)); err != nil {
				t.Fatal(err)
			}
		}
		select {
		case <-n.JS.PublishAsyncComplete():
		case <-time.After(5 * time.Second):
			t.Fatal("publishing timed out")
		}
		info, err := n.JS.Stream(t.Context(), n.Stream.StreamName())
		if err != nil {
			t.Fatal(err)
		}
		last = info.CachedInfo().State.LastSeq
	}
	e.waitHead(t, last)
	if got := src.started.Load(); got != 1 {
		t.Errorf("the consumer started %d times while the stream was busy, want once", got)
	}
	select {
	case err := <-ws.closed:
		t.Errorf("the subscriber was closed: %v", err)
	default:
	}
}

// A resume whose cursor was checked against the old stream, and that runs after the stream was recreated, is refused
// as ahead of the stream (the client starts over from a snapshot) instead of joining the new stream with an old
// cursor.
func TestResumeAcrossARecreationIsRefused(t *testing.T) {
	h := NewHub(HubOptions{})
	for i := range 10 {
		u, _ := NewUpdate("market.AAPL", uint64(i+1), []byte(`{"kind":"quote"}`), time.Now())
		h.Publish(u)
	}
	h.beginHistory(0)
	checked := h.checkCursor(t.Context(), 5)
	if checked.err != nil {
		t.Fatalf("cursor 5 of the old stream: %v", checked.err)
	}
	h.streamRecreated()
	u, _ := NewUpdate("market.AAPL", 1, []byte(`{"kind":"quote"}`), time.Now()) // the new stream's first
	h.Publish(u)

	s, _ := h.newSubscriber(&countingSink{}, "test", "", nil)
	defer s.Close(reasonClientGone)
	_, err := h.resume(t.Context(), s, Subscription{Patterns: []string{"market.AAPL"}}, 5, nil, checked)
	if !errors.Is(err, ErrCursorAhead) {
		t.Fatalf("resume from 5 after the recreation: %v, want ErrCursorAhead", err)
	}
}

// A stream that ends with a message the edge refuses is not ahead of the edge: the consumer is not taken for stalled,
// restarted, and made to refuse the message again every check while producers are quiet.
func TestRefusedMessageAtTheTailIsNotAStall(t *testing.T) {
	n := startNATS(t)
	var src *Source
	e := startEdgeOn(t, n, listen(t, "127.0.0.1:0"), Config{}, HubOptions{},
		func(s *Source) { s.checkEvery, s.stallAfter = 20*time.Millisecond, 100*time.Millisecond; src = s })
	e.waitHead(t, n.publish(t, "market.GOOD", quote("GOOD")))
	n.publish(t, "market.aapl", "x")   // a subject outside the grammar, and not JSON
	time.Sleep(500 * time.Millisecond) // 25 checks, most of them past the stall threshold
	if got := src.started.Load(); got != 1 {
		t.Errorf("the consumer started %d times, want once", got)
	}
	if got := scrape(t, e.url)[`livepush_stream_dropped_total{reason="bad_subject"}`]; got != 1 {
		t.Errorf("the refused message was counted %v times, want once", got)
	}
	good := n.publish(t, "market.GOOD", quote("GOOD"))
	e.waitHead(t, good)
}

// A stream deleted under the edge is created again, and the edge follows the new one: the ordered consumer alone
// would wait for the old one for good while /readyz said ready.
func TestDeletedStreamIsCreatedAgain(t *testing.T) {
	n := startNATS(t)
	e := startEdgeOn(t, n, listen(t, "127.0.0.1:0"), Config{}, HubOptions{},
		func(s *Source) { s.checkEvery = 20 * time.Millisecond })
	e.waitHead(t, n.publish(t, "market.OLD", quote("OLD")))
	if err := n.JS.DeleteStream(t.Context(), n.Stream.StreamName()); err != nil {
		t.Fatal(err)
	}
	var cursor uint64
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		ack, err := n.JS.Publish(t.Context(), "market.NEW", []byte(quote("NEW")))
		if err == nil {
			cursor = ack.Sequence
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the stream was not created again: %v", err)
		}
	}
	ws := dialWS(t, e.url, "?topic=market.NEW", nil)
	ws.expect(t, "subscribed")
	if u := ws.expect(t, "update").received(t); u.Cursor != cursor {
		t.Errorf("the new stream's update has cursor %d, want %d", u.Cursor, cursor)
	}
}

// After the edge's NATS connection moves (its node lost, say), the ordered consumer recreates itself without a
// word and may deliver nothing for seconds: /readyz says so until the consumer delivers again, so that a load
// balancer sends clients to an edge that is current meanwhile.
func TestReconnectIsNotReadyUntilTheConsumerDelivers(t *testing.T) {
	n := startNATS(t)
	e := startEdgeOn(t, n, listen(t, "127.0.0.1:0"), Config{}, HubOptions{},
		func(s *Source) { s.checkEvery = time.Hour }) // only a delivery may clear the trouble here
	e.waitHead(t, n.publish(t, "market.AAPL", quote("AAPL")))
	if status, body := e.readiness(t); status != http.StatusOK {
		t.Fatalf("before the reconnect: %d %s", status, body)
	}

	reconnects := n.NC.Stats().Reconnects
	if err := n.NC.ForceReconnect(); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); n.NC.Stats().Reconnects == reconnects || !n.NC.IsConnected(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the connection did not reconnect within 10s")
		}
	}
	if ok, answer := e.waitInterrupted(t); !ok {
		t.Errorf("reconnected, with nothing delivered since: /readyz answered %s, want 503 saying the consumer was interrupted", answer)
	}

	e.waitHead(t, n.publish(t, "market.AAPL", quote("AAPL")))
	if status, body := e.readiness(t); status != http.StatusOK {
		t.Errorf("the consumer delivered again: /readyz answered %d %s, want 200", status, body)
	}
}

// An edge whose stream consumer lived on a lost NATS node, while its own connection is fine, hears nothing from
// nats.go: no reconnect, no error. Its check sees it silent with the stream ahead and says not ready until it
// delivers again, instead of 200 until the stall restarts it (seen for 5 s on a three-node cluster). A paused
// consumer stands in for the lost one here.
func TestSilentConsumerBehindTheStreamIsNotReady(t *testing.T) {
	n := startNATS(t)
	e := startEdgeOn(t, n, listen(t, "127.0.0.1:0"), Config{}, HubOptions{},
		func(s *Source) { s.checkEvery, s.stallAfter = 50*time.Millisecond, time.Hour }) // no restart here
	e.waitHead(t, n.publish(t, "market.AAPL", quote("AAPL")))
	str, err := n.JS.Stream(t.Context(), n.Stream.StreamName())
	if err != nil {
		t.Fatal(err)
	}
	var consumers []string
	for name := range str.ConsumerNames(t.Context()).Name() {
		consumers = append(consumers, name)
	}
	if len(consumers) != 1 {
		t.Fatalf("the stream has consumers %v, want the edge's one", consumers)
	}
	if _, err := n.JS.PauseConsumer(t.Context(), n.Stream.StreamName(), consumers[0], time.Now().Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond) // quiet past a few checks: nothing missing yet, ready
	if status, body := e.readiness(t); status != http.StatusOK {
		t.Fatalf("paused with nothing to deliver: /readyz %d %s, want 200", status, body)
	}

	behind := n.publish(t, "market.AAPL", quote("AAPL"))
	if ok, answer := e.waitInterrupted(t); !ok {
		t.Errorf("the consumer silent with update %d in the stream: /readyz %s, want 503 saying the consumer was interrupted",
			behind, answer)
	}

	if _, err := n.JS.ResumeConsumer(t.Context(), n.Stream.StreamName(), consumers[0]); err != nil {
		t.Fatal(err)
	}
	e.waitHead(t, behind)
	if status, body := e.readiness(t); status != http.StatusOK {
		t.Errorf("the consumer delivered again: /readyz %d %s, want 200", status, body)
	}
}

// readiness is the edge's /readyz answer.
func (e *testEdge) readiness(t *testing.T) (int, string) {
	t.Helper()
	body, status, err := get(t.Context(), e.url+"/readyz")
	if err != nil {
		t.Fatal(err)
	}
	return status, string(body)
}

// waitInterrupted waits up to 2s for /readyz to answer 503 saying the stream consumer was interrupted, and reports
// whether it did, with its last answer.
func (e *testEdge) waitInterrupted(t *testing.T) (bool, string) {
	t.Helper()
	for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		status, body := e.readiness(t)
		if status == http.StatusServiceUnavailable && strings.Contains(body, "stream consumer interrupted") {
			return true, body
		}
		if time.Now().After(deadline) {
			return false, fmt.Sprintf("%d %s", status, body)
		}
	}
}
