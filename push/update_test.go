package push

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// The SSE event name and the latency sample come from the payload's top-level "kind" and "ts", whatever an outside
// producer nests or quotes before them (the scanning itself: subscriber/wire's TestScanPayload).
func TestKindAndTimeFromTheTopLevel(t *testing.T) {
	c := Contract{Kinds: []string{"quote", "score", "halt", "meta"}}
	now := time.Date(2026, 11, 25, 10, 0, 1, 0, time.UTC)
	for _, tc := range []struct{ payload, kind, ts string }{
		{`{"kind":"quote","ts":"2026-11-25T10:00:00Z"}`, "quote", "2026-11-25T10:00:00Z"},
		{`{"meta":{"kind":"meta","ts":"2026-11-25T09:00:00Z"},"kind":"score","ts":"2026-11-25T10:00:00Z"}`, "score", "2026-11-25T10:00:00Z"},
		{`{"note":"\"kind\":\"quote\"","list":[{"kind":"meta"}],"kind":"halt"}`, "halt", ""},
		{"{\n  \"kind\" : \"quote\" ,\n  \"ts\": \"2026-11-25T10:00:00Z\"\n}", "quote", "2026-11-25T10:00:00Z"},
		{`{"kind":3,"ts":7}`, "update", ""},
		{`{"kinds":"quote"}`, "update", ""},
		{`{"kind":"qu\u006fte"}`, "quote", ""}, // read as clients read it, escapes decoded
	} {
		u, err := c.Update("market.X", 1, []byte(tc.payload), now)
		if err != nil {
			t.Fatalf("%s: %v", tc.payload, err)
		}
		var want time.Time
		if tc.ts != "" {
			want, _ = time.Parse(time.RFC3339, tc.ts)
		}
		if u.Kind != tc.kind || !u.Published.Equal(want) {
			t.Errorf("%s: kind %q, published %v; want %q, %v", tc.payload, u.Kind, u.Published, tc.kind, want)
		}
	}
}

// A producer's kind names an SSE event only if the contract lists it; the edge's own event names are never a
// producer's to use, on any transport.
func TestEventNamesComeFromTheAllowlist(t *testing.T) {
	for _, tc := range []struct {
		kinds         []string
		payload, want string
	}{
		{nil, `{"kind":"quote"}`, "quote"},
		{nil, `{"kind":"score"}`, "score"},
		{nil, `{"kind":"close","reason":"server_restart"}`, "update"},
		{nil, `{"kind":"reset"}`, "update"},
		{nil, `{"kind":"\u0071uote"}`, "quote"}, // read as clients read it
		{nil, `{"kind":"\u0063lose"}`, "update"},
		{nil, `{"kind":"error"}`, "update"},
		{nil, `{"kind":"trade"}`, "update"},
		{nil, `{"price":1}`, "update"},
		{[]string{"trade"}, `{"kind":"trade"}`, "trade"},
		{[]string{"trade"}, `{"kind":"quote"}`, "update"},
	} {
		u, err := Contract{Kinds: tc.kinds}.Update("market.X", 7, []byte(tc.payload), time.Now())
		if err != nil {
			t.Fatalf("%s: %v", tc.payload, err)
		}
		if u.Kind != tc.want || !strings.Contains(string(u.SSE()), "\nevent: "+tc.want+"\n") {
			t.Errorf("kinds %v, payload %s: event %q (%q), want %q", tc.kinds, tc.payload, u.Kind, u.SSE(), tc.want)
		}
	}
	for _, bad := range []string{"close", "reset", "error", "message", "has space", ""} {
		if err := (Contract{Kinds: []string{bad}}).Validate(); err == nil {
			t.Errorf("kind %q accepted as an event name", bad)
		}
	}
}

// What breaks the producer contract is rejected with a reason, before it reaches the hub.
func TestContractRejects(t *testing.T) {
	c := Contract{MaxPayload: 200}
	for _, tc := range []struct{ payload, reason string }{
		{`not json`, RejectNotObject},
		{`["an","array"]`, RejectNotObject},
		{`{"a":1}{"b":2}`, RejectNotObject},
		{`{"topic":"market.X","kind":"quote","note":"` + "\xff\xfe" + `"}`, RejectInvalidUTF8},
		{`{"topic":"market.X","note":"` + strings.Repeat("x", 200) + `"}`, RejectTooLarge},
		{`{"topic":"market.Y","kind":"quote"}`, RejectTopicMismatch},
		{`{"topic":7,"kind":"quote"}`, RejectTopicMismatch},
		{`{"\u0074opic":"market.Y"}`, RejectTopicMismatch}, // "topic" spelt with an escape is still the topic
		// Clients read the first of duplicate members, JSON decoders the last: neither may be fooled.
		{`{"topic":"market.Y","topic":"market.X"}`, RejectDuplicate},
		{`{"topic":"market.X","kind":"quote","p":{"kind":"x"},"kind":"score"}`, RejectDuplicate},
		{`{"ts":"2026-11-25T10:00:00Z","topic":"market.X","\u0074s":"2026-11-25T10:00:01Z"}`, RejectDuplicate},
	} {
		_, err := c.Update("market.X", 1, []byte(tc.payload), time.Now())
		var rejected *RejectedError
		if !errors.As(err, &rejected) || !errors.Is(err, ErrRejected) || rejected.Reason != tc.reason {
			t.Errorf("%q: %v, want rejected for %s", tc.payload, err, tc.reason)
		}
	}
}

// A payload without a topic gets its subject's, so an SSE client (which sees only the payload) can tell it; one
// whose topic is the subject passes byte for byte.
func TestTopicAddedWhenMissing(t *testing.T) {
	for payload, want := range map[string]string{
		`{"price":1}`:                   `{"topic":"market.X","price":1}`,
		`{}`:                            `{"topic":"market.X"}`,
		`{ }`:                           `{"topic":"market.X" }`,
		`{"meta":{"topic":"market.Y"}}`: `{"topic":"market.X","meta":{"topic":"market.Y"}}`,
		`{"topic":"market.X","p":2}`:    `{"topic":"market.X","p":2}`,
		`{"topic":"market.\u0058"}`:     `{"topic":"market.\u0058"}`, // the subject, written with an escape
	} {
		u, err := NewUpdate("market.X", 1, []byte(payload), time.Now())
		if err != nil {
			t.Fatalf("%s: %v", payload, err)
		}
		if string(u.Data) != want {
			t.Errorf("%s became %s, want %s", payload, u.Data, want)
		}
	}
}

// A ts that is no time, or no plausible one, is left out of the latency metrics.
func TestImplausibleTimesIgnored(t *testing.T) {
	now := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	for ts, ok := range map[string]bool{
		"2026-11-25T09:59:59.5Z":    true,
		"2026-11-25T10:00:30Z":      true, // clocks differ a little
		"2026-11-25T11:00:00Z":      false,
		"1970-01-01T00:00:00Z":      false,
		"yesterday":                 false,
		"2026-11-25 09:59:59":       false,
		"9999-12-31T23:59:59.999Z":  false,
		"2026-11-24T10:00:01+00:00": true,
	} {
		u, err := NewUpdate("market.X", 1, []byte(`{"ts":"`+ts+`"}`), now)
		if err != nil {
			t.Fatal(err)
		}
		if u.Published.IsZero() == ok {
			t.Errorf("ts %s: published %v, want taken %v", ts, u.Published, ok)
		}
	}
}
