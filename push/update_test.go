package push

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// The SSE event name and the latency sample come from the payload's top-level "kind" and "ts", whatever an outside
// producer nests or quotes before them.
func TestKindAndTimeFromTheTopLevel(t *testing.T) {
	for _, tc := range []struct{ payload, kind, ts string }{
		{`{"kind":"quote","ts":"2026-11-25T10:00:00Z"}`, "quote", "2026-11-25T10:00:00Z"},
		{`{"meta":{"kind":"meta","ts":"2001-01-01T00:00:00Z"},"kind":"score","ts":"2026-11-25T10:00:00Z"}`, "score", "2026-11-25T10:00:00Z"},
		{`{"note":"\"kind\":\"fake\"","list":[{"kind":"x"}],"kind":"halt"}`, "halt", ""},
		{"{\n  \"kind\" : \"quote\" ,\n  \"ts\": \"2026-11-25T10:00:00Z\"\n}", "quote", "2026-11-25T10:00:00Z"},
		{`{"kind":3}`, "", ""},
		{`{"kinds":"quote"}`, "", ""},
		{`{"x":"\\","kind":"quote"}`, "quote", ""},
		{`{"kind":"has space"}`, "has space", ""},
		{`{"kind":"quote`, "", ""},
		{`{"kind":"quote","kind":"halt"}`, "halt", ""}, // the last of duplicate keys, as JSON decoders take it
		{`{"kind":"quote","kind":{"a":1}}`, "", ""},
	} {
		top := scanTopLevel([]byte(tc.payload))
		if got := string(top.kind.stringValue()); got != tc.kind {
			t.Errorf("kind of %s = %q, want %q", tc.payload, got, tc.kind)
		}
		if got := string(top.ts.stringValue()); got != tc.ts {
			t.Errorf("ts of %s = %q, want %q", tc.payload, got, tc.ts)
		}
	}
	now := time.Date(2026, 11, 25, 10, 0, 1, 0, time.UTC)
	u, err := NewUpdate("market.X", 1, []byte(`{"meta":{"ts":"2001-01-01T00:00:00Z"},"ts":"2026-11-25T10:00:00Z"}`), now)
	if err != nil {
		t.Fatal(err)
	}
	if !u.Published.Equal(time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)) {
		t.Errorf("NewUpdate took ts %v, want the top-level one", u.Published)
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
		{`{"topic":"market.X","topic":"market.Y"}`, RejectTopicMismatch},
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
