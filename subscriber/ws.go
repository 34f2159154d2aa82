package subscriber

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"

	"github.com/livepush/livepush/subscriber/topic"
	"github.com/livepush/livepush/subscriber/wire"
)

// wsSession is one WebSocket connection while Run reads it: Subscribe and Unsubscribe send their requests through
// it and wait for the reply that Run's read loop passes on.
type wsSession struct {
	conn    *websocket.Conn
	writeMu sync.Mutex // held while the first subscribe is sent, so no request overtakes it

	mu      sync.Mutex
	ids     int
	pending map[string]*wsRequest
	done    bool // the connection has ended: requests go to the client's topics instead
}

// wsRequest is a subscribe or unsubscribe waiting for its reply.
type wsRequest struct {
	typ    string
	topics []string
	reply  chan error // buffered: the reader never waits for the requester
}

// request makes a control message: ids are strings, a cursor (since) and a rate are sent only when set.
func request(typ, id string, topics []string, since uint64, maxRate float64) wire.Request {
	r := wire.Request{Type: typ, ID: json.RawMessage(strconv.Quote(id)), Topics: topics}
	if since > 0 {
		r.Since = json.RawMessage(strconv.Quote(strconv.FormatUint(since, 10)))
	}
	if maxRate > 0 {
		r.MaxRate = &maxRate
	}
	return r
}

func (s *wsSession) write(msg wire.Request) error {
	b, _ := wire.MarshalLine(msg) // strings and a number: cannot fail
	// Never the caller's context: a write whose context ends closes the whole connection.
	ctx, cancel := context.WithTimeout(context.Background(), writeTimeout)
	defer cancel()
	return s.conn.Write(ctx, websocket.MessageText, b)
}

// Subscribe adds topic patterns (WebSocket only). On a live connection it subscribes them there and waits for the
// edge's reply: nil once the edge has subscribed them (their snapshot then arrives through Run's handle), an *Error
// if the edge refuses them. While the client is reconnecting (or before Run) the patterns are queued: Subscribe
// checks them against the topic grammar, returns nil, and the next connection subscribes them. Either way they join
// what every later reconnect subscribes to.
//
// If ctx ends first, Subscribe returns its error, and the request may still take effect. Without a deadline in ctx
// it waits at most 10s for the reply. It returns ErrNotWebSocket on the other transports.
func (c *Client) Subscribe(ctx context.Context, topics ...string) error {
	return c.change(ctx, wire.TypeSubscribe, topics)
}

// Unsubscribe removes topic patterns (WebSocket only), as given to New or Subscribe; once it returns nil, no update
// of theirs reaches handle unless another pattern matches it. Otherwise it behaves like Subscribe.
func (c *Client) Unsubscribe(ctx context.Context, topics ...string) error {
	return c.change(ctx, wire.TypeUnsubscribe, topics)
}

func (c *Client) change(ctx context.Context, typ string, topics []string) error {
	if c.transport != TransportWebSocket {
		return ErrNotWebSocket
	}
	var clean []string
	for _, t := range topics {
		if t = strings.TrimSpace(t); t != "" && !slices.Contains(clean, t) {
			clean = append(clean, t)
		}
	}
	if len(clean) == 0 {
		return ErrNoTopic
	}
	for {
		c.mu.Lock()
		s := c.ws
		if s == nil {
			if typ == wire.TypeSubscribe {
				for _, t := range clean {
					if err := topic.ValidatePattern(t); err != nil {
						c.mu.Unlock()
						return &Error{Code: "invalid_topic", Message: err.Error()}
					}
				}
			}
			c.applyLocked(typ, clean)
			c.mu.Unlock()
			return nil
		}
		c.mu.Unlock()
		if err, sent := s.request(ctx, typ, clean); sent {
			return err
		}
		// The session ended before the request went out: queue it, or send it on the next one.
	}
}

// request sends a request and waits for its reply. sent is false if the session had ended already.
func (s *wsSession) request(ctx context.Context, typ string, topics []string) (err error, sent bool) {
	s.writeMu.Lock()
	s.mu.Lock()
	if s.done {
		s.mu.Unlock()
		s.writeMu.Unlock()
		return nil, false
	}
	s.ids++
	id := strconv.Itoa(s.ids)
	req := &wsRequest{typ: typ, topics: topics, reply: make(chan error, 1)}
	s.pending[id] = req
	s.mu.Unlock()
	s.write(request(typ, id, topics, 0, 0)) // a failed write ends the session, which answers req
	s.writeMu.Unlock()

	var timeout <-chan time.Time
	if _, ok := ctx.Deadline(); !ok {
		t := time.NewTimer(replyTimeout)
		defer t.Stop()
		timeout = t.C
	}
	select {
	case err := <-req.reply:
		return err, true
	case <-ctx.Done():
		return ctx.Err(), true
	case <-timeout:
		return fmt.Errorf("subscriber: no reply to %s within %v", typ, replyTimeout), true
	}
}

// applyLocked changes the topics a reconnect subscribes to. c.mu must be held.
func (c *Client) applyLocked(typ string, topics []string) {
	for _, t := range topics {
		i := slices.Index(c.topics, t)
		switch {
		case typ == wire.TypeSubscribe && i < 0:
			c.topics = append(c.topics, t)
		case typ == wire.TypeUnsubscribe && i >= 0:
			c.topics = slices.Delete(c.topics, i, i+1)
		}
	}
}

// endSession detaches s: requests still waiting count as queued, so the next connection carries them out.
func (c *Client) endSession(s *wsSession) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ws == s {
		c.ws = nil
	}
	s.mu.Lock()
	s.done = true
	pending := s.pending
	s.pending = nil
	s.mu.Unlock()
	for _, req := range pending {
		c.applyLocked(req.typ, req.topics)
		req.reply <- nil
	}
}

// answer passes a reply to the request it answers, applying the change if the edge made it. It reports false if no
// request waits for id.
func (c *Client) answer(s *wsSession, id string, err error) bool {
	s.mu.Lock()
	req := s.pending[id]
	delete(s.pending, id)
	s.mu.Unlock()
	if req == nil {
		return false
	}
	if err == nil {
		c.mu.Lock()
		c.applyLocked(req.typ, req.topics)
		c.mu.Unlock()
	}
	req.reply <- err
	return true
}

const firstID = "0" // the id of the subscribe that opens each connection; requests count from 1

// runWS follows one WebSocket connection until it ends.
func (c *Client) runWS(ctx context.Context, base string, handle func(Update) error) ended {
	wsCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	wd := newWatchdog(c.idleTimeout, cancel)
	defer wd.stop()
	header := http.Header{}
	if err := c.authorize(wsCtx, header); err != nil {
		return failed(err)
	}
	// frames=lines: a batch of updates arrives as one frame of lines, one Read (and one allocation) for all of them.
	conn, resp, err := websocket.Dial(wsCtx, "ws"+strings.TrimPrefix(base, "http")+"/ws?frames=lines", &websocket.DialOptions{
		HTTPClient: c.http,
		HTTPHeader: header,
		OnPingReceived: func(context.Context, []byte) bool {
			wd.kick() // the edge's heartbeat
			return true
		},
	})
	if err != nil {
		if resp != nil && resp.StatusCode != http.StatusSwitchingProtocols && resp.StatusCode >= 400 {
			return c.httpFailure(resp)
		}
		return failed(wd.err(err))
	}
	defer conn.CloseNow()
	conn.SetReadLimit(maxMessage)

	s := &wsSession{conn: conn, pending: make(map[string]*wsRequest)}
	s.writeMu.Lock()
	c.mu.Lock()
	topics := slices.Clone(c.topics)
	c.ws = s
	c.mu.Unlock()
	defer c.endSession(s)
	since := c.Cursor()
	first := request(wire.TypeSubscribe, firstID, topics, since, c.maxRate)
	live := len(topics) == 0 // nothing to subscribe (all unsubscribed): live at once
	if live {
		c.live(base, since)
	} else if err := s.write(first); err != nil {
		s.writeMu.Unlock()
		return failed(err)
	}
	s.writeMu.Unlock()

	for {
		_, frame, err := conn.Read(wsCtx)
		if err != nil {
			end := c.wsClosed(base, wd.err(err))
			end.live = live
			return end
		}
		wd.kick()
		for line := range bytes.SplitSeq(frame, []byte("\n")) {
			if len(line) == 0 {
				continue
			}
			if u, ok := parseUpdateLine(line); ok {
				if err := c.deliver(u, handle); err != nil {
					return handlerErr(err)
				}
				continue
			}
			var m wire.Message
			if err := json.Unmarshal(line, &m); err != nil {
				c.log.Warn("unreadable WebSocket message: skipped", "url", base, "err", err)
				continue
			}
			id := m.IDString()
			switch m.Type {
			case wire.TypeUpdate:
				u, err := updateOf(m)
				if err != nil {
					c.log.Warn("unreadable update: skipped", "url", base, "err", err)
					continue
				}
				if err := c.deliver(u, handle); err != nil {
					return handlerErr(err)
				}
			case wire.TypeSubscribed, wire.TypeUnsubscribed:
				if id == firstID && !live {
					live = true
					c.live(base, since)
				} else {
					c.answer(s, id, nil)
				}
			case wire.TypeError:
				e := &Error{Code: m.Code, Message: m.Message}
				switch {
				case id == firstID && !live:
					if permanentCode(m.Code) {
						return permanent(e)
					}
					return c.badCursor(base, since, failed(e))
				case c.answer(s, id, e):
				default:
					c.log.Warn("the edge reported an error", "url", base, "err", e)
				}
			case wire.TypeReset:
				cursor, _ := wire.ParseCursor([]byte(m.Cursor))
				c.reset(base, cursor, m.Reason)
			case wire.TypeConflated:
				c.conflated(base, m.Skipped)
			}
		}
	}
}

// wsClosed says how a connection that failed with err ended and how soon to come back: at once after a restart
// (1012, 1001), after a while when the edge is busy (1013), never when it was closed for policy (1008, 4xxx, …).
func (c *Client) wsClosed(base string, err error) ended {
	var ce websocket.CloseError
	if !errors.As(err, &ce) {
		return failed(err)
	}
	reason := wire.CloseName(int(ce.Code))
	c.emit(Event{Kind: Closed, URL: base, Reason: reason, Message: ce.Reason})
	switch code := ce.Code; {
	case code == websocket.StatusServiceRestart || code == websocket.StatusGoingAway:
		return ended{err: closeError(reason, ce.Reason), soon: true}
	case code == websocket.StatusTryAgainLater:
		return ended{err: closeError(reason, ce.Reason), atLeast: tryLaterWait}
	case code == wire.CloseTokenExpired && c.tokenRefused():
		return ended{err: closeError(reason, ce.Reason), soon: true} // Options.Token may give a fresh one
	case code == websocket.StatusPolicyViolation || code == websocket.StatusProtocolError ||
		code == websocket.StatusUnsupportedData || code == websocket.StatusInvalidFramePayloadData ||
		code == websocket.StatusMessageTooBig || code == websocket.StatusMandatoryExtension ||
		code >= 4000 && code < 5000:
		return permanent(&Error{Code: reason, Message: cmpOr(ce.Reason, "closed by the edge"), CloseCode: int(code)})
	}
	return failed(closeError(reason, ce.Reason))
}
