package push

import (
	"net/url"
	"testing"
)

// An outside producer publishes with plain NATS, as `nats pub` would: its payload must reach every transport byte
// for byte, with the stream sequence as cursor.
func TestOutsideProducerReachesSubscribersUnchanged(t *testing.T) {
	n := startNATS(t)
	e := startEdge(t, n, Config{}, HubOptions{})
	s := openSSE(t, e.url, url.Values{"topic": {"market.EXT"}}, nil)
	w := dialWS(t, e.url, "?topic=market.EXT", nil)
	w.expect(t, "subscribed")

	payload := `{"topic":"market.EXT","kind":"quote","symbol":"EXT","price":1.5,"note":"unicode ✓ \u00e9 \"quoted\"","ts":"2026-11-25T10:00:00Z"}`
	if err := n.nc.Publish("market.EXT", []byte(payload)); err != nil {
		t.Fatal(err)
	}
	got := s.next(t)
	if got.Data != payload || got.Kind != "quote" || got.Cursor == 0 {
		t.Errorf("SSE got %+v\nwant data %s", got, payload)
	}
	m := w.expect(t, "update")
	if string(m.Data) != payload || m.Topic != "market.EXT" || mustCursor(t, m.Cursor) != got.Cursor {
		t.Errorf("WebSocket got %+v\nwant data %s at cursor %d", m, payload, got.Cursor)
	}
}

// Payloads the edge cannot deliver as JSON are skipped, and do not stop the stream.
func TestUndeliverablePayloadsSkipped(t *testing.T) {
	n := startNATS(t)
	e := startEdge(t, n, Config{}, HubOptions{})
	w := dialWS(t, e.url, "?topic=market.EXT", nil)
	w.expect(t, "subscribed")
	n.nc.Publish("market.EXT", []byte("not json"))
	n.nc.Publish("market.EXT", []byte(`["an","array"]`))
	n.nc.Publish("market.ext", []byte(`{"kind":"quote"}`)) // stored by the stream, but not a valid topic
	pretty := n.publish(t, "market.EXT", "{\n  \"kind\": \"quote\",\n  \"price\": 2\n}\n")
	m := w.expect(t, "update")
	if mustCursor(t, m.Cursor) != pretty || string(m.Data) != `{"kind":"quote","price":2}` {
		t.Fatalf("got %+v, want the multi-line payload compacted at cursor %d", m, pretty)
	}
}

// An edge consumes the stream once, however many clients it serves: fan-out is in process.
func TestOneStreamConsumerPerEdge(t *testing.T) {
	n := startNATS(t)
	e := startEdge(t, n, Config{}, HubOptions{})
	before := n.srv.NumSubscriptions()
	for i := range 20 {
		openSSE(t, e.url, url.Values{"topic": {"market.*"}}, nil)
		w := dialWS(t, e.url, "?topic=sports.>&topic=market.A"+string(rune('A'+i)), nil)
		w.expect(t, "subscribed")
	}
	e.waitSubscribers(t, 40)
	str, err := n.js.Stream(t.Context(), n.cfg.StreamName())
	if err != nil {
		t.Fatal(err)
	}
	if c := str.CachedInfo().State.Consumers; c != 1 {
		t.Fatalf("stream has %d consumers with 40 clients on one edge, want 1", c)
	}
	if after := n.srv.NumSubscriptions(); after != before {
		t.Errorf("NATS subscriptions went from %d to %d with 40 clients, want no change", before, after)
	}
}
