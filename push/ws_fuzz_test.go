package push

import (
	"encoding/json"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/livepush/livepush/subscriber/topic"
)

// recordingSink keeps what the edge writes to a connection, line by line.
type recordingSink struct {
	mu    sync.Mutex
	lines [][]byte
}

func (r *recordingSink) write(batch []*Update) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, u := range batch {
		r.lines = append(r.lines, append([]byte(nil), u.json...))
	}
	return nil
}
func (r *recordingSink) heartbeat() error    { return nil }
func (r *recordingSink) close(_ closeReason) {}
func (r *recordingSink) abort()              {}

// FuzzWSControl feeds any frame to the WebSocket control handler. Whatever comes in, the edge must not panic, must
// answer with valid JSON messages of known types, errors must carry a code and a message, and a subscription must
// only ever hold topics the grammar accepts.
// Seeds are in testdata/fuzz; run longer with go test -run '^$' -fuzz FuzzWSControl ./push
func FuzzWSControl(f *testing.F) {
	for _, s := range []string{
		`{"type":"subscribe","id":"1","topics":["market.AAPL","sports.>"]}`,
		`{"type":"subscribe","id":2,"topics":["market.*"],"since":"0","maxRate":2}`,
		`{"type":"unsubscribe","id":"3","topics":["market.AAPL"]}`,
		`{"type":"ping","id":"4"}`,
		"{\"type\":\"ping\"}\n{\"type\":\"ping\",\"id\":[1]}",
		`{"type":"subscribe","topics":["$SYS.>"]}`,
		`{"type":"subscribe","topics":["market.AAPL"],"since":"abc"}`,
		`not json`, `{}`, `[]`, `{"type":null}`, `{"type":"subscribe","topics":null}`,
	} {
		f.Add([]byte(s))
	}
	h := NewHub(HubOptions{QueueLimit: 1 << 16})
	srv := NewServer(Config{Log: testLogger(f)}, h, nil)
	f.Fuzz(func(t *testing.T, frame []byte) {
		sink := &recordingSink{}
		sub, _ := h.newSubscriber(sink, "ws", "fuzz", nil)
		defer sub.Close(reasonClientGone)
		srv.wsHandle(sub, &wsConn{}, frame) // the handlers read only a token's grant from it, and this edge checks none
		waitIdle(t, sub)
		for _, line := range sink.lines {
			var m struct {
				Type    string   `json:"type"`
				Code    string   `json:"code"`
				Message string   `json:"message"`
				Topics  []string `json:"topics"`
			}
			if err := json.Unmarshal(line, &m); err != nil {
				t.Fatalf("edge wrote invalid JSON %q: %v", line, err)
			}
			switch m.Type {
			case "subscribed", "unsubscribed":
				for _, p := range m.Topics {
					if topic.ValidatePattern(p) != nil {
						t.Fatalf("%s an invalid topic %q", m.Type, p)
					}
				}
			case "error":
				if m.Code == "" || m.Message == "" || len(line) > 1024 {
					t.Fatalf("error without code or message, or too long: %q", line)
				}
			case "pong", "reset", "update":
			default:
				t.Fatalf("unknown message type in %q", line)
			}
		}
		for _, p := range sub.Patterns() {
			if topic.ValidatePattern(p) != nil {
				t.Fatalf("subscribed to invalid pattern %q", p)
			}
		}
	})
}

// waitIdle waits until s's writer has written everything queued.
func waitIdle(t *testing.T, s *Subscriber) {
	for deadline := time.Now().Add(5 * time.Second); ; runtime.Gosched() {
		s.mu.Lock()
		idle := len(s.queue) == 0 && !s.writing
		s.mu.Unlock()
		if idle {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("writer did not finish")
		}
	}
}
