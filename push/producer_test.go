package push

import (
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"
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
	if err := n.NC.Publish("market.EXT", []byte(payload)); err != nil {
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
	n.NC.Publish("market.EXT", []byte("not json"))
	n.NC.Publish("market.EXT", []byte(`["an","array"]`))
	n.NC.Publish("market.ext", []byte(`{"kind":"quote"}`)) // stored by the stream, but not a valid topic
	pretty := n.publish(t, "market.EXT", "{\n  \"kind\": \"quote\",\n  \"price\": 2\n}\n")
	m := w.expect(t, "update")
	if mustCursor(t, m.Cursor) != pretty || string(m.Data) != `{"topic":"market.EXT","kind":"quote","price":2}` {
		t.Fatalf("got %+v, want the multi-line payload compacted at cursor %d", m, pretty)
	}
}

// An edge consumes the stream once, however many clients it serves: fan-out is in process.
func TestOneStreamConsumerPerEdge(t *testing.T) {
	n := startNATS(t)
	e := startEdge(t, n, Config{}, HubOptions{})
	// The server's count includes JetStream's internal subscriptions, some set up a moment after the consumer is
	// created (once seen in a loaded CI run): count once it holds still.
	settled := func() uint32 {
		last := n.Server.NumSubscriptions()
		for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); {
			time.Sleep(200 * time.Millisecond)
			now := n.Server.NumSubscriptions()
			if now == last {
				break
			}
			last = now
		}
		return last
	}
	before := settled()
	for i := range 20 {
		openSSE(t, e.url, url.Values{"topic": {"market.*"}}, nil)
		w := dialWS(t, e.url, "?topic=sports.>&topic=market.A"+string(rune('A'+i)), nil)
		w.expect(t, "subscribed")
	}
	e.waitSubscribers(t, 40)
	str, err := n.JS.Stream(t.Context(), n.Stream.StreamName())
	if err != nil {
		t.Fatal(err)
	}
	if c := str.CachedInfo().State.Consumers; c != 1 {
		t.Fatalf("stream has %d consumers with 40 clients on one edge, want 1", c)
	}
	if after := settled(); after != before {
		t.Errorf("NATS subscriptions went from %d to %d with 40 clients, want no change", before, after)
	}
}

// A careless or hostile producer publishing with plain NATS cannot imitate the edge's control events, break a
// browser's WebSocket with invalid UTF-8, label an update with another topic (for every reader: first or last of
// duplicate members) or fill memory with one huge payload:
// every transport sees the same, checked updates, and each rejection is counted by reason.
func TestProducerContractOnEveryTransport(t *testing.T) {
	n := startNATS(t)
	e := startEdgeOn(t, n, listen(t, "127.0.0.1:0"), Config{}, HubOptions{}, func(s *Source) {
		WithContract(Contract{MaxPayload: 4096})(s)
	})
	first := n.publish(t, "market.EVIL", `{"topic":"market.EVIL","kind":"quote","price":1}`)
	e.waitHead(t, first)
	topics := []string{"market.EVIL"}
	readers := map[string]reader{
		"sse":      openSSE(t, e.url, url.Values{"topic": topics}, nil),
		"ws":       transports[1].connect(t, e.url, topics, ""),
		"longpoll": startLongPoll(t, e.url, topics, strconv.FormatUint(first, 10)),
	}
	for name, r := range readers {
		if name != "longpoll" {
			if got := r.next(t); got.Cursor != first {
				t.Fatalf("%s: snapshot %+v, want cursor %d", name, got, first)
			}
		}
	}

	for _, bad := range []string{
		`{"topic":"market.EVIL","kind":"quote","note":"` + "\xc3\x28" + `"}`, // invalid UTF-8
		`{"topic":"market.OTHER","kind":"quote","price":2}`,                  // another topic's label
		`{"topic":"market.EVIL","kind":"quote","pad":"` + strings.Repeat("x", 5000) + `"}`,
		`[1,2,3]`,
		`{"topic":"market.OTHER","topic":"market.EVIL","kind":"quote"}`, // a first topic for readers that stop there
	} {
		if err := n.NC.Publish("market.EVIL", []byte(bad)); err != nil {
			t.Fatal(err)
		}
	}
	imitation := n.publish(t, "market.EVIL", `{"topic":"market.EVIL","kind":"close","reason":"server_restart","message":"go away"}`)
	bare := n.publish(t, "market.EVIL", `{"kind":"quote","price":3}`)
	for name, r := range readers {
		got := r.next(t)
		if got.Cursor != imitation || got.Topic != "market.EVIL" {
			t.Errorf("%s: first update after the bad ones is %+v, want cursor %d", name, got, imitation)
		}
		if name == "sse" && got.Kind != "update" {
			t.Errorf("sse: a producer's kind close became event %q, want update", got.Kind)
		}
		got = r.next(t)
		if got.Cursor != bare || got.Topic != "market.EVIL" || topicOf(t, got.Data) != "market.EVIL" {
			t.Errorf("%s: payload without a topic arrived as %+v, want it labelled market.EVIL", name, got)
		}
	}
	m := scrape(t, e.url)
	for _, reason := range []string{RejectInvalidUTF8, RejectTopicMismatch, RejectTooLarge, RejectNotObject, RejectDuplicate} {
		if v := m[`livepush_stream_dropped_total{reason="`+reason+`"}`]; v != 1 {
			t.Errorf("dropped for %s: %v, want 1", reason, v)
		}
	}
}
