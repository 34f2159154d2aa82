package subscriber

import (
	"errors"
	"testing"
	"time"
)

func TestParseUpdateLine(t *testing.T) {
	data := `{"topic":"market.AAPL","kind":"quote","price":189.12,"x":{"y":"}"}}`
	u, ok := parseUpdateLine([]byte(`{"type":"update","topic":"market.AAPL","cursor":"1234","data":` + data + `}`))
	if !ok || u.Topic != "market.AAPL" || u.Cursor != 1234 || u.Kind != "quote" || string(u.Data) != data {
		t.Fatalf("got %+v %s, %v", u, u.Data, ok)
	}
	for _, line := range []string{
		`{"type":"subscribed","id":"1","topics":["market.AAPL"]}`,
		`{"type":"update","cursor":"1","topic":"market.A","data":{}}`, // another field order: encoding/json's job
		`{"type":"update","topic":"market.A","cursor":"x1","data":{}}`,
		`{"type":"update","topic":"market.A","cursor":"1","data":[1]}`,
		`{"type":"update","topic":"mar\"ket","cursor":"1","data":{}}`,
	} {
		if u, ok := parseUpdateLine([]byte(line)); ok {
			t.Errorf("%s: parsed as %+v, want a fallback", line, u)
		}
	}
}

func TestBackoff(t *testing.T) {
	c, err := New(Options{URLs: []string{"http://x"}, Topics: []string{"market.A"}, MinBackoff: 100 * time.Millisecond,
		MaxBackoff: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	for attempt, hi := range map[int]time.Duration{1: 100 * time.Millisecond, 2: 200 * time.Millisecond,
		4: 800 * time.Millisecond, 5: time.Second, 30: time.Second} {
		for range 100 {
			if d := c.delay(ended{}, attempt); d < hi/2 || d > hi {
				t.Fatalf("attempt %d: %v, want within [%v, %v]", attempt, d, hi/2, hi)
			}
		}
	}
	for range 100 {
		if d := c.delay(ended{soon: true}, 1); d >= 100*time.Millisecond {
			t.Fatalf("restart: %v, want under MinBackoff", d)
		}
		if d := c.delay(ended{soon: true, atLeast: time.Second}, 1); d < time.Second || d > 1250*time.Millisecond {
			t.Fatalf("retry: 1000: waited %v", d)
		}
	}
}

func TestNewChecksOptions(t *testing.T) {
	ok := Options{URLs: []string{"http://localhost:8080/"}, Topics: []string{"market.*"}}
	for _, tc := range []struct {
		change func(*Options)
		want   error
	}{
		{func(o *Options) { o.URLs = nil }, ErrNoURL},
		{func(o *Options) { o.URLs = []string{"localhost:8080"} }, ErrBadURL},
		{func(o *Options) { o.URLs = []string{"ftp://host"} }, ErrBadURL},
		{func(o *Options) { o.Topics = []string{" "} }, ErrNoTopic},
		{func(o *Options) { o.Transport = "bogus" }, ErrUnknownTransport},
	} {
		o := ok
		tc.change(&o)
		if _, err := New(o); !errors.Is(err, tc.want) {
			t.Errorf("New(%+v): %v, want %v", o, err, tc.want)
		}
	}
	c, err := New(ok)
	if err != nil || c.urls[0] != "http://localhost:8080" || c.transport != TransportSSE {
		t.Fatalf("New(%+v) = %+v, %v", ok, c, err)
	}
	if err := c.Subscribe(t.Context(), "market.X"); !errors.Is(err, ErrNotWebSocket) {
		t.Errorf("Subscribe on SSE: %v, want ErrNotWebSocket", err)
	}
	ws, _ := New(Options{URLs: []string{"ws://h:1"}, Transport: "ws", Topics: []string{"market.A"}})
	if ws.urls[0] != "http://h:1" {
		t.Errorf("ws:// URL became %q", ws.urls[0])
	}
	// Before Run, Subscribe and Unsubscribe queue, checking the grammar.
	if err := ws.Subscribe(t.Context(), "sports.>", "market.A"); err != nil {
		t.Fatal(err)
	}
	var e *Error
	if err := ws.Subscribe(t.Context(), "$SYS.>"); !errors.As(err, &e) || e.Code != "invalid_topic" {
		t.Fatalf("queued invalid topic: %v", err)
	}
	if err := ws.Unsubscribe(t.Context(), "market.A"); err != nil {
		t.Fatal(err)
	}
	if got := ws.Topics(); len(got) != 1 || got[0] != "sports.>" {
		t.Fatalf("topics %v, want [sports.>]", got)
	}
}
