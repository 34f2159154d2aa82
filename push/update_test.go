package push

import (
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
		{`{"kind":3}`, "update", ""},
		{`{"kinds":"quote"}`, "update", ""},
		{`{"x":"\\","kind":"quote"}`, "quote", ""},
		{`{"kind":"has space"}`, "update", ""},
		{`{"kind":"quote`, "update", ""},
		{`{"kind":"quote","kind":"halt"}`, "halt", ""}, // the last of duplicate keys, as JSON decoders take it
	} {
		if got := payloadKind([]byte(tc.payload)); got != tc.kind {
			t.Errorf("kind of %s = %q, want %q", tc.payload, got, tc.kind)
		}
		if got := string(topLevelString([]byte(tc.payload), `"ts"`)); got != tc.ts {
			t.Errorf("ts of %s = %q, want %q", tc.payload, got, tc.ts)
		}
	}
	u, err := NewUpdate("market.X", 1, []byte(`{"meta":{"ts":"2001-01-01T00:00:00Z"},"ts":"2026-11-25T10:00:00Z"}`), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if !u.Published.Equal(time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)) {
		t.Errorf("NewUpdate took ts %v, want the top-level one", u.Published)
	}
}
