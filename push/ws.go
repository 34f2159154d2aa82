package push

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/coder/websocket"
	"github.com/gin-gonic/gin"
	"golang.org/x/time/rate"

	"github.com/livepush/livepush/subscriber/topic"
	"github.com/livepush/livepush/subscriber/wire"
)

// The WebSocket transport speaks the JSON control protocol of docs/protocol.md. After the upgrade the handler
// returns; one goroutine reads control messages, and the subscriber's writer sends everything else. Every message
// the edge sends, replies included, goes through the subscriber's queue, so a reply is never overtaken by an update
// queued before it. Each message is a frame of its own, or with frames=lines each batch is one frame, one JSON
// object per line, separated by "\n". The edge writes these frames itself (frameWriter); coder/websocket does the
// handshake, the reading and the control frames.

// maxControlMessage is the largest control message accepted; a bigger frame closes the connection with 1009.
const maxControlMessage = 16 << 10

// The values of /ws's frames parameter.
const (
	framesSingle = "single" // one message per frame (the default): what json.loads(ws.recv()) and JSON.parse expect
	framesLines  = "lines"  // one or more messages per frame, one per line: fewer frames for clients that split
)

type wsConn struct {
	conn    *websocket.Conn
	timeout time.Duration
	// frames is under conn's write buffer: the edge writes its frames there itself, and the library its control
	// frames.
	frames *frameWriter
	single bool // a frame per message (frames=single), else a frame per batch, one message per line (frames=lines)
	// What the connection's token allows, and when it ends; set before the read loop starts and changed only by
	// it (an auth message), so control messages read them without a lock. expiry is nil without authentication.
	grant  *grant
	expiry *tokenExpiry
}

// leanHijack hands coder/websocket the connection with small buffers instead of net/http's 4 KiB pair, which would
// live as long as the connection, with a frameWriter under the write buffer, which it keeps for the edge's writes.
type leanHijack struct {
	gin.ResponseWriter
	frames *frameWriter
}

func (h *leanHijack) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, brw, err := h.ResponseWriter.Hijack()
	if err != nil {
		return nil, nil, err
	}
	brw, h.frames = wsBuffers(conn, brw.Reader)
	return conn, brw, nil
}

// wsBuffers returns the buffers coder/websocket gets for a hijacked connection: a small reader (unless r holds
// bytes read ahead) and a small writer over a frameWriter. The library writes only control frames, so the writer
// needs no more than their 127 bytes.
func wsBuffers(conn net.Conn, r *bufio.Reader) (*bufio.ReadWriter, *frameWriter) {
	if r.Buffered() == 0 { // nothing read ahead to keep: a client sends nothing before the handshake completes
		r = bufio.NewReaderSize(conn, 512)
	}
	fw := &frameWriter{conn: conn}
	return bufio.NewReadWriter(r, bufio.NewWriterSize(fw, 256)), fw
}

// frameWriter is the connection under coder/websocket's write buffer. The edge builds its data frames itself and
// writes a whole batch of them in one write: through the library, each message of frames=single would be a Write
// call of its own, with its own flush (a system call per message) and about 200 ns of locking, and a frame of
// lines over the write buffer's size would leave in two writes. The library still writes its control frames
// (pings, pongs, the close handshake) here; each reaches Write whole in one call (at most 127 bytes, and the write
// buffer is empty between frames), so mu keeps every frame whole, and once the library has sent a close frame, no
// data frame follows it. mu is held while writing, like the library's own write lock, but it is this connection's
// alone: no other connection waits on it.
type frameWriter struct {
	conn      net.Conn
	mu        sync.Mutex
	closeSent bool
	deadline  writeDeadline // every write's, the library's included, once the handshake is done
}

// Write takes the library's frames.
func (w *frameWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if h, n, _ := wire.ParseFrameHeader(p); n > 0 && h.Op == wire.OpClose {
		w.closeSent = true
	}
	w.deadline.extend(w.conn)
	return w.conn.Write(p)
}

// writeFrames writes frames built by wire.AppendTextFrame or appendLinesFrame in one write.
func (w *frameWriter) writeFrames(frames []byte) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closeSent {
		return net.ErrClosed
	}
	w.deadline.extend(w.conn)
	_, err := w.conn.Write(frames)
	return err
}

// appendLinesFrame appends one text frame carrying the batch's messages, one per line, with no newline after the
// last.
func appendLinesFrame(b []byte, batch []*Update) []byte {
	n := -1
	for _, u := range batch {
		n += len(u.json)
	}
	b = wire.AppendFrameHeader(b, wire.FrameHeader{Fin: true, Op: wire.OpText, Length: uint64(n)})
	for _, u := range batch {
		b = append(b, u.json...)
	}
	return b[:len(b)-1]
}

// wsReply makes a reply to a client's control message.
func wsReply(m wire.Message) *Update {
	return newControl(marshalJSON(m), nil) // sports.> as it is, not sports.\u003e
}

func wsError(id json.RawMessage, code, format string, args ...any) *Update {
	return wsReply(wire.Message{Type: wire.TypeError, ID: id, Code: code, Message: fmt.Sprintf(format, args...)})
}

func (s *Server) handleWS(c *gin.Context) {
	// The origin is checked here rather than by Accept, which knows nothing of proxies and answers a bare 403.
	if refusal := s.origins.check(c.Request); refusal != nil {
		s.hub.metrics.refused.WithLabelValues("forbidden_origin").Inc()
		s.log.Info("websocket refused", "remote", c.ClientIP(), "peer", c.Request.RemoteAddr,
			"origin", c.GetHeader("Origin"), "host", c.Request.Host, "err", refusal.message)
		writeError(c, http.StatusForbidden, "forbidden_origin", refusal.message)
		return
	}
	single := true
	switch v := c.Query("frames"); v {
	case "", framesSingle:
	case framesLines:
		single = false
	default:
		writeError(c, http.StatusBadRequest, "bad_request",
			fmt.Sprintf("frames=%q: use single (one message per frame, the default) or lines (one or more per frame, one per line)",
				truncate(v, 32)))
		return
	}
	_, since := c.GetQuery("since")
	_, maxRate := c.GetQuery("maxRate")
	if (since || maxRate) && len(c.QueryArray("topic")) == 0 {
		writeError(c, http.StatusBadRequest, "bad_request",
			"since and maxRate apply to the topics in the URL: give topic too, or send them in a subscribe message")
		return
	}
	if status, msg := checkHandshake(c); status != 0 { // after the query's checks, which say more
		writeError(c, status, "bad_request", msg)
		return
	}
	hijack := &leanHijack{ResponseWriter: c.Writer}
	var pings *rate.Limiter // made at the first ping: browsers never send one
	conn, err := websocket.Accept(hijack, c.Request, &websocket.AcceptOptions{InsecureSkipVerify: true,
		OnPingReceived: func(context.Context, []byte) bool { // on the connection's one reading goroutine
			if pings == nil {
				r := s.cfg.Limits.ControlRate
				pings = rate.NewLimiter(rate.Limit(r), int(2*r))
			}
			return pings.Allow() // past the control rate a ping gets no pong: each costs the edge a write
		}})
	if err != nil {
		// Accept has answered already, in plain text, for what checkHandshake does not check.
		s.log.Info("websocket refused", "remote", c.ClientIP(), "origin", c.GetHeader("Origin"), "err", err)
		return
	}
	g := &grant{}
	if s.cfg.Auth != nil {
		// Checked after the upgrade so that a browser can read why: it cannot see a refused handshake's status.
		if g, err = s.cfg.Auth.authenticate(c.Request); err != nil {
			s.hub.metrics.refused.WithLabelValues("unauthorized").Inc()
			conn.Close(websocket.StatusCode(reasonTokenExpired.code), truncate(strings.TrimPrefix(err.Error(), "push: "), 120))
			return
		}
	}
	release, _, refusal := s.admission.admit(c.ClientIP())
	if release == nil {
		s.refuseWS(conn, refusal)
		return
	}
	conn.SetReadLimit(maxControlMessage)
	wc := newWSConn(conn, hijack.frames, single, s.hub.opts.WriteTimeout)
	wc.grant = g
	wc.expiry, release = closeAtExpiry(s.cfg.Auth != nil, release) // a token may come later, with an expiry
	sub, ok := s.hub.newSubscriber(wc, "ws", c.ClientIP(), release)
	if !ok {
		release()
		conn.Close(websocket.StatusServiceRestart, reasonRestart.text)
		return
	}
	wc.expiry.start(sub, g.expires)
	s.log.Info("connection opened", "conn", sub.id, "transport", "ws", "remote", sub.remote)

	// Topics in the URL subscribe at once, as if the first message had been a subscribe without an id (and the
	// query's since and maxRate its fields).
	if q := c.QueryArray("topic"); len(q) > 0 {
		req := wire.Request{Type: wire.TypeSubscribe, Topics: q}
		if v := c.Query("since"); v != "" {
			req.Since = json.RawMessage(strconv.Quote(v))
		}
		if v := c.Query("maxRate"); v != "" {
			rate, err := strconv.ParseFloat(v, 64)
			if err != nil {
				rate = -1 // refused with a clear error by wsSubscribe
			}
			req.MaxRate = &rate
		}
		s.wsSubscribe(sub, wc, req)
	}
	// The request's context ends when this handler returns; the connection outlives it.
	go s.wsReadLoop(sub, wc)
}

// wsReadLoop reads the client's control messages until the connection ends. sub is the connection's subscriber and
// wc its sink, given to each handler rather than found again from sub.
func (s *Server) wsReadLoop(sub *Subscriber, wc *wsConn) {
	ctx := context.Background()
	var limiter *rate.Limiter // made at the first message: most connections send one subscribe and nothing more
	for {
		typ, data, err := wc.conn.Read(ctx)
		if err != nil {
			reason := reasonClientGone
			if websocket.CloseStatus(err) == websocket.StatusMessageTooBig {
				reason = closeReason{code: int(websocket.StatusMessageTooBig), err: "too_big",
					text: fmt.Sprintf("control messages are limited to %d bytes", maxControlMessage)}
			}
			sub.Close(reason)
			s.log.Info("connection closed", "conn", sub.id, "transport", "ws", "status", websocket.CloseStatus(err))
			return
		}
		if limiter == nil {
			r := s.cfg.Limits.ControlRate
			limiter = rate.NewLimiter(rate.Limit(r), int(2*r))
		}
		if !limiter.AllowN(time.Now(), messagesIn(data)) {
			sub.Close(closeReason{code: int(websocket.StatusPolicyViolation), err: "flood",
				text: fmt.Sprintf("too many control messages: at most %g per second", s.cfg.Limits.ControlRate)})
			continue
		}
		if typ != websocket.MessageText {
			sub.Send(wsError(nil, "bad_request", "control messages are JSON text frames"))
			continue
		}
		if !utf8.Valid(data) { // JSON decoding would replace the bad bytes, and an id echoed back would carry them
			sub.Send(wsError(nil, "bad_request", "control messages are UTF-8 text"))
			continue
		}
		// Handled on a goroutine of its own, waited for so messages stay in order: decoding and subscribing need a
		// deeper stack than reading, and a stack grown here would stay with the connection for its whole life.
		before := sub.catchUps.Load()
		done := make(chan struct{})
		go func() {
			defer close(done)
			s.wsHandle(sub, wc, data)
		}()
		<-done
		// A subscribe costs in proportion to the snapshot it queued: a client that subscribes and unsubscribes a
		// wildcard over thousands of topics, within the message rate, would otherwise have the edge send it the whole
		// catalog many times a second. Its next message waits for the rate to pay for it.
		if cost := int(sub.catchUps.Load()-before) / catchUpsPerMessage; cost > 0 {
			limiter.WaitN(ctx, min(cost, limiter.Burst()))
		}
	}
}

// catchUpsPerMessage is how many updates of snapshot or replay a subscribe may queue for the price of one control
// message.
const catchUpsPerMessage = 500

// wsHandle handles one frame from a client: one control message, or several separated by newlines.
func (s *Server) wsHandle(sub *Subscriber, wc *wsConn, data []byte) {
	for line := range bytes.SplitSeq(data, []byte("\n")) {
		if len(bytes.TrimSpace(line)) > 0 {
			s.wsHandleMessage(sub, wc, line)
		}
	}
}

func (s *Server) wsHandleMessage(sub *Subscriber, wc *wsConn, data []byte) {
	var req wire.Request
	if err := json.Unmarshal(data, &req); err != nil {
		sub.Send(wsError(nil, "bad_request", "not a valid control message: %s", jsonProblem(err)))
		return
	}
	if len(req.ID) > 0 && !validID(req.ID) {
		sub.Send(wsError(nil, "bad_request", "id must be a string or a number of at most 64 bytes"))
		return
	}
	switch req.Type {
	case wire.TypeSubscribe:
		s.wsSubscribe(sub, wc, req)
	case wire.TypeUnsubscribe:
		patterns, ok := s.wsTopics(sub, req)
		if !ok {
			return
		}
		s.hub.Unsubscribe(sub, patterns, wsReply(wire.Message{Type: wire.TypeUnsubscribed, ID: req.ID, Topics: patterns}))
	case wire.TypePing:
		sub.Send(wsReply(wire.Message{Type: wire.TypePong, ID: req.ID}))
	case wire.TypeAuth:
		s.wsAuth(sub, wc, req)
	case "":
		sub.Send(wsError(req.ID, "bad_request", `missing "type": one of subscribe, unsubscribe, ping, auth`))
	default:
		sub.Send(wsError(req.ID, "bad_request", "unknown type %q: one of subscribe, unsubscribe, ping, auth",
			truncate(req.Type, 32)))
	}
}

// wsAuth takes a fresh token for a live connection, so that it need not end when its first token expires. The new
// token must allow every topic the connection has; it then replaces the old one, expiry included. A token that
// does not verify or allows less gets an error, and the old token stays in force.
func (s *Server) wsAuth(sub *Subscriber, wc *wsConn, req wire.Request) {
	a := s.cfg.Auth
	if a == nil {
		sub.Send(wsError(req.ID, "bad_request", "this edge does not check tokens"))
		return
	}
	if req.Token == "" {
		sub.Send(wsError(req.ID, "bad_request", `"token" is missing`))
		return
	}
	g, err := a.verify(req.Token)
	if err == nil {
		err = a.permit(g, sub.Patterns())
	}
	if err != nil {
		code := "forbidden_topic"
		if errors.Is(err, ErrUnauthorized) {
			code = "unauthorized"
		}
		sub.Send(wsError(req.ID, code, "%s", strings.TrimPrefix(err.Error(), "push: ")))
		return
	}
	wc.grant = g
	wc.expiry.set(g.expires)
	sub.Send(wsReply(wire.Message{Type: wire.TypeAuthenticated, ID: req.ID}))
}

// wsSubscribe handles a subscribe: a new subscription, a resume (with "since"), or a new rate for topics the
// connection has. A resume runs here, in the read loop: later control messages wait until its catch-up is queued.
func (s *Server) wsSubscribe(sub *Subscriber, wc *wsConn, req wire.Request) {
	patterns, ok := s.wsTopics(sub, req)
	if !ok {
		return
	}
	if held := sub.Patterns(); len(held)+countNew(held, patterns) > s.cfg.MaxTopics {
		sub.Send(wsError(req.ID, "too_many_topics", "at most %d topics per connection", s.cfg.MaxTopics))
		return
	}
	if a := s.cfg.Auth; a != nil {
		if err := a.permit(wc.grant, patterns); err != nil {
			code := "forbidden_topic"
			if errors.Is(err, ErrUnauthorized) {
				code = "unauthorized"
			}
			sub.Send(wsError(req.ID, code, "%s", strings.TrimPrefix(err.Error(), "push: ")))
			return
		}
	}
	subscription := Subscription{Patterns: patterns}
	if req.MaxRate != nil {
		rate, err := parseMaxRate(strconv.FormatFloat(*req.MaxRate, 'g', -1, 64))
		if err != nil {
			sub.Send(wsError(req.ID, "bad_request", "%s", err))
			return
		}
		subscription.MaxRate = rate
	}
	reply := wsReply(wire.Message{Type: wire.TypeSubscribed, ID: req.ID, Topics: patterns, Unknown: s.unknownTopics(patterns)})
	if len(req.Since) == 0 {
		s.hub.Subscribe(sub, subscription, reply)
		return
	}
	since, err := parseSince(req.Since)
	if err != nil {
		sub.Send(wsError(req.ID, "bad_cursor", "%s", err))
		return
	}
	_, err = s.hub.Resume(context.Background(), sub, subscription, since, reply)
	switch {
	case err == nil, errors.Is(err, ErrClosed):
	case errors.Is(err, ErrCursorAhead):
		sub.Send(wsError(req.ID, "bad_cursor", "cursor %d is ahead of the stream", since))
	case errors.Is(err, ErrBusy):
		sub.Send(wsError(req.ID, "busy", "too many clients are catching up from the stream on this edge: retry in %d s",
			int(retryAfter.Seconds())))
	default:
		s.log.Info("resume failed", "conn", sub.id, "err", err)
		sub.Send(wsError(req.ID, "unavailable", "the stream is unreachable right now: retry shortly"))
	}
}

// parseSince reads "since" as a string of digits (the form the edge sends cursors in) or a JSON number.
func parseSince(raw json.RawMessage) (uint64, error) {
	var str string
	if json.Unmarshal(raw, &str) == nil {
		return ParseCursor(str)
	}
	return ParseCursor(string(raw))
}

// checkHandshake checks what websocket.Accept checks of a handshake, so that a request that is none gets the
// edge's JSON error rather than the library's plain text. It returns 0 for a handshake, or the status and why.
func checkHandshake(c *gin.Context) (int, string) {
	h := c.Request.Header
	if !headerHasToken(h, "Connection", "upgrade") || !headerHasToken(h, "Upgrade", "websocket") {
		c.Header("Connection", "Upgrade")
		c.Header("Upgrade", "websocket")
		return http.StatusUpgradeRequired, "/ws speaks WebSocket: open it with a WebSocket client (a browser's WebSocket, wscat), " +
			"or read /sse with curl -N"
	}
	if h.Get("Sec-WebSocket-Version") != "13" {
		c.Header("Sec-WebSocket-Version", "13")
		return http.StatusBadRequest, "only WebSocket version 13 is spoken here (Sec-WebSocket-Version: 13)"
	}
	if keys := h.Values("Sec-WebSocket-Key"); len(keys) != 1 {
		return http.StatusBadRequest, "a WebSocket handshake has one Sec-WebSocket-Key"
	} else if k, err := base64.StdEncoding.DecodeString(strings.TrimSpace(keys[0])); err != nil || len(k) != 16 {
		return http.StatusBadRequest, "Sec-WebSocket-Key must be 16 bytes in base64"
	}
	return 0, ""
}

// headerHasToken tells whether one of header name's comma-separated values is token, in any case.
func headerHasToken(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for t := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// messagesIn counts the control messages of a frame, one per line, for the rate limit.
func messagesIn(data []byte) int {
	return max(1, bytes.Count(bytes.TrimRight(data, "\n"), []byte("\n"))+1)
}

// countNew counts the distinct patterns of patterns that held does not have: subscribing again to held topics (to
// change their rate, say) takes no more of the connection's allowance.
func countNew(held, patterns []string) int {
	n := 0
	for i, p := range patterns {
		if !slices.Contains(held, p) && !slices.Contains(patterns[:i], p) {
			n++
		}
	}
	return n
}

// wsTopics validates the topics of a subscribe or unsubscribe, replying with an error if one is invalid.
func (s *Server) wsTopics(sub *Subscriber, req wire.Request) ([]string, bool) {
	if len(req.Topics) == 0 {
		sub.Send(wsError(req.ID, "bad_request", `"topics" must list at least one topic`))
		return nil, false
	}
	if len(req.Topics) > s.cfg.MaxTopics {
		sub.Send(wsError(req.ID, "too_many_topics", "at most %d topics per connection", s.cfg.MaxTopics))
		return nil, false
	}
	for _, p := range req.Topics {
		if err := topic.ValidatePattern(p); err != nil {
			sub.Send(wsError(req.ID, "invalid_topic", "%s", err))
			return nil, false
		}
	}
	return req.Topics, true
}

func validID(id json.RawMessage) bool {
	if len(id) > 64 {
		return false
	}
	var v any
	if json.Unmarshal(id, &v) != nil {
		return false
	}
	switch v.(type) {
	case string, float64:
		return true
	}
	return false
}

// jsonProblem describes a decoding error without echoing the client's input back at length.
func jsonProblem(err error) string {
	var syntax *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syntax):
		return "malformed JSON at byte " + strconv.FormatInt(syntax.Offset, 10)
	case errors.As(err, &typ):
		return fmt.Sprintf("field %q has the wrong type", typ.Field)
	default:
		return truncate(err.Error(), 80)
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// newWSConn returns the sink of a WebSocket accepted over frames, whose writes time out after timeout.
func newWSConn(conn *websocket.Conn, frames *frameWriter, single bool, timeout time.Duration) *wsConn {
	frames.mu.Lock()
	frames.deadline.timeout = timeout // from here on: the handshake's response went out without one
	frames.mu.Unlock()
	return &wsConn{conn: conn, frames: frames, single: single, timeout: timeout}
}

func (wc *wsConn) write(batch []*Update) error {
	size := 0
	for _, u := range batch {
		size += wire.MaxFrameHeader + len(u.json)
	}
	bp := getBuf()
	defer putBuf(bp)
	b := slices.Grow(*bp, size)
	if wc.single {
		for _, u := range batch {
			b = wire.AppendTextFrame(b, u.json[:len(u.json)-1]) // an update's shared line without its newline
		}
	} else {
		b = appendLinesFrame(b, batch)
	}
	*bp = b
	return wc.frames.writeFrames(b)
}

func (wc *wsConn) heartbeat() error {
	ctx, cancel := context.WithTimeout(context.Background(), wc.timeout)
	defer cancel()
	return wc.conn.Ping(ctx)
}

func (wc *wsConn) close(reason closeReason) {
	if reason == reasonClientGone || reason == reasonWriteFailed { // nobody is listening for a goodbye
		wc.conn.CloseNow()
		return
	}
	wc.conn.Close(websocket.StatusCode(reason.code), reason.text)
}

func (wc *wsConn) abort() { wc.conn.CloseNow() }
