package push

import (
	"context"
	"errors"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/livepush/livepush/subscriber/wire"
)

// The SSE transport takes an HTTP/1.x connection over from net/http once the request is accepted: the handler
// returns, and the connection lives on with one goroutine blocked in Read to notice the client leave. Writes come
// from the subscriber's writer as chunks of pre-encoded events, so a stream costs a few KiB while idle and one write
// per batch of updates.
//
// Over HTTP/2 a connection carries many streams and cannot be taken over: the stream is written through the
// ResponseWriter (sseStream), with the same events, heartbeats, close event and write deadlines, and its handler
// waits until the stream ends.

var heartbeatEvent = append(wire.AppendComment(nil, "heartbeat"), '\n')

// bufPool holds write buffers: one per write in flight rather than one per connection.
var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

func getBuf() *[]byte { return bufPool.Get().(*[]byte) }

func putBuf(b *[]byte) {
	if cap(*b) > 2*maxWriteBytes+64<<10 {
		return // do not keep a buffer grown by one large update: a write is bounded by maxWriteBytes otherwise
	}
	*b = (*b)[:0]
	bufPool.Put(b)
}

type sseConn struct {
	conn     net.Conn
	header   []byte // the response header, sent with the first write
	chunked  bool   // HTTP/1.1: each write is one chunk; HTTP/1.0: the body ends when the connection does
	deadline writeDeadline
}

// sseStart is what a stream opens with, once its request has been checked and admitted.
type sseStart struct {
	sub     Subscription
	grant   *grant
	since   uint64
	resume  bool
	checked checkedCursor
	hello   *Update // opens the stream: sseHello, with a comment for topics nobody has published yet
	release func()  // gives the admission slot back
}

func (s *Server) handleSSE(c *gin.Context) {
	sub, ok := s.subscriptionFromQuery(c)
	if !ok {
		return
	}
	g, ok := s.authorize(c, sub.Patterns)
	if !ok {
		return
	}
	// EventSource resends the id of the last event it saw as Last-Event-ID when it reconnects; a first connect
	// can resume with the lastEventId parameter.
	since, resume, ok := cursorFromRequest(c, "Last-Event-ID", "lastEventId")
	if !ok {
		return
	}
	var checked checkedCursor
	if resume {
		if checked, ok = s.checkCursor(c, since); !ok {
			return
		}
	}
	release := s.admitHTTP(c)
	if release == nil {
		return
	}
	st := &sseStart{sub: sub, grant: g, since: since, resume: resume, checked: checked, release: release,
		hello: sseHelloFor(unknownOf(c))}
	// HTTP/2 carries many streams on one connection, which cannot be taken over: such a stream is written through
	// net/http, and so is one whose ResponseWriter cannot hijack.
	if c.Request.ProtoMajor != 1 || !canHijack(c.Writer) {
		s.streamSSE(c, st)
		return
	}
	s.hijackSSE(c, st)
}

// hijackSSE serves an HTTP/1.x stream on the connection taken over from net/http, and returns.
func (s *Server) hijackSSE(c *gin.Context, st *sseStart) {
	conn, _, err := http.NewResponseController(c.Writer).Hijack()
	if err != nil {
		st.release()
		s.log.Error("sse: hijack failed", "err", err)
		writeError(c, http.StatusInternalServerError, "internal", "streaming is not supported on this connection")
		return
	}
	chunked := c.Request.ProtoAtLeast(1, 1)
	sc := &sseConn{conn: conn, chunked: chunked, deadline: writeDeadline{timeout: s.hub.opts.WriteTimeout}}

	header := make([]byte, 0, 256)
	header = append(header, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"+
		"X-Accel-Buffering: no\r\n"...)
	if chunked {
		header = append(header, "Transfer-Encoding: chunked\r\n"...)
	} else {
		header = append(header, "Connection: close\r\n"...)
	}
	if origin := s.corsOrigin(c.Request); origin != "" {
		header = append(header, "Access-Control-Allow-Origin: "...)
		header = append(header, origin...)
		header = append(header, "\r\nVary: Origin\r\n"...)
	}
	sc.header = append(header, "\r\n"...)

	subscriber, ok := s.openSSE(c, sc, st)
	if !ok {
		return
	}
	// The response starts with the first write of the subscriber's writer, which comes after the subscription is
	// registered: a client that has the headers is subscribed.
	if !st.resume {
		s.subscribeSSE(context.Background(), subscriber, st)
		go s.sseReadLoop(subscriber, conn)
		return
	}
	go func() {
		// The replay may read the stream for a while. The connection's watcher starts after it, on a goroutine of
		// its own, so that it keeps a small stack for the connection's life.
		s.subscribeSSE(context.Background(), subscriber, st)
		go s.sseReadLoop(subscriber, conn)
	}()
}

// streamSSE serves a stream through the request's ResponseWriter: the handler stays until the stream ends, which
// is what net/http needs of a response it still owns. The client leaving ends the request's context.
func (s *Server) streamSSE(c *gin.Context, st *sseStart) {
	h := c.Writer.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	if origin := s.corsOrigin(c.Request); origin != "" {
		h.Set("Access-Control-Allow-Origin", origin)
		h.Set("Vary", "Origin")
	}
	// The status is recorded, not sent: the headers leave with the writer's first flush, after the subscription is
	// registered. gin now counts the response as written and adds nothing when the handler returns.
	c.Writer.WriteHeader(http.StatusOK)
	c.Writer.WriteHeaderNow()
	w := innermost(c.Writer)
	ss := &sseStream{w: w, rc: http.NewResponseController(w), timeout: s.hub.opts.WriteTimeout,
		done: make(chan struct{})}

	ctx := c.Request.Context()
	// Registering and subscribing (a snapshot, a replay, logging) need a deep stack; done on the handler's goroutine,
	// they would leave it 8 KiB for the stream's life instead of 4. A short-lived goroutine does them.
	opened := make(chan *Subscriber, 1)
	go func() {
		subscriber, ok := s.openSSE(c, ss, st)
		if ok {
			s.subscribeSSE(ctx, subscriber, st)
		}
		opened <- subscriber
	}()
	subscriber := <-opened
	if subscriber == nil {
		return
	}
	select {
	case <-ss.done:
	case <-ctx.Done():
		subscriber.Close(reasonClientGone)
		<-ss.done
	}
	s.log.Info("connection closed", "conn", subscriber.id, "transport", "sse")
}

// openSSE registers the stream's subscriber with the hub; when the hub is shutting down it tells the client to
// come back later and reports false.
func (s *Server) openSSE(c *gin.Context, sink sink, st *sseStart) (*Subscriber, bool) {
	expiry, onClose := closeAtExpiry(!st.grant.expires.IsZero(), st.release)
	subscriber, ok := s.hub.newSubscriber(sink, "sse", c.ClientIP(), onClose)
	if !ok {
		st.release()
		sink.close(reasonRestart)
		return nil, false
	}
	expiry.start(subscriber, st.grant.expires)
	s.log.Info("connection opened", "conn", subscriber.id, "transport", "sse", "proto", c.Request.Proto,
		"remote", subscriber.remote, "topics", st.sub.Patterns, "since", st.since, "resume", st.resume)
	return subscriber, true
}

// subscribeSSE queues the start of the stream: the snapshot then live, or the replay of what the client missed.
func (s *Server) subscribeSSE(ctx context.Context, subscriber *Subscriber, st *sseStart) {
	if !st.resume {
		s.hub.Subscribe(subscriber, st.sub, st.hello)
		return
	}
	if _, err := s.hub.resume(ctx, subscriber, st.sub, st.since, st.hello, st.checked); err != nil {
		s.log.Info("resume failed", "conn", subscriber.id, "err", err)
		switch {
		case ctx.Err() != nil:
			subscriber.Close(reasonClientGone)
		case errors.Is(err, ErrCursorAhead):
			subscriber.Close(reasonStreamRecreated) // only a recreation gets here: the check came first
		case errors.Is(err, ErrBusy):
			subscriber.Close(reasonBusy)
		default:
			subscriber.Close(reasonUnavailable)
		}
	}
}

// sseHello opens every stream: how soon to reconnect, and a comment so EventSource fires onopen at once.
var sseHello = newControl(nil, append(sseHelloLines, '\n'))

// sseHelloLines are the hello's lines, to which comments may be added before the blank line that ends it.
var sseHelloLines = wire.AppendComment(wire.AppendRetry(nil, 2*time.Second), "livepush")

// sseReadLoop waits for the client to hang up. SSE clients send nothing after the request.
func (s *Server) sseReadLoop(sub *Subscriber, conn net.Conn) {
	var buf [64]byte
	for {
		if _, err := conn.Read(buf[:]); err != nil {
			sub.Close(reasonClientGone)
			s.log.Info("connection closed", "conn", sub.id, "transport", "sse")
			return
		}
	}
}

func (sc *sseConn) appendChunk(dst, body []byte) []byte {
	if !sc.chunked {
		return append(dst, body...)
	}
	dst = strconv.AppendUint(dst, uint64(len(body)), 16)
	dst = append(dst, "\r\n"...)
	dst = append(dst, body...)
	return append(dst, "\r\n"...)
}

func (sc *sseConn) send(b []byte) error {
	sc.deadline.extend(sc.conn)
	if sc.header != nil {
		bufs := net.Buffers{sc.header, b}
		sc.header = nil
		_, err := bufs.WriteTo(sc.conn)
		return err
	}
	_, err := sc.conn.Write(b)
	return err
}

func (sc *sseConn) write(batch []*Update) error {
	size := 0
	for _, u := range batch {
		size += len(u.sse)
	}
	bp := getBuf()
	defer putBuf(bp)
	b := slices.Grow(*bp, size+20) // with the chunk's size line and end
	if sc.chunked {
		b = strconv.AppendUint(b, uint64(size), 16)
		b = append(b, "\r\n"...)
	}
	for _, u := range batch {
		b = append(b, u.sse...)
	}
	if sc.chunked {
		b = append(b, "\r\n"...)
	}
	*bp = b
	return sc.send(b)
}

func (sc *sseConn) heartbeat() error {
	bp := getBuf()
	defer putBuf(bp)
	*bp = sc.appendChunk(*bp, heartbeatEvent)
	return sc.send(*bp)
}

// close ends the stream with a final "close" event saying why and when to come back, then the last chunk, so
// EventSource reconnects after the given retry and resumes from its Last-Event-ID.
func (sc *sseConn) close(reason closeReason) {
	defer sc.conn.Close()
	if reason == reasonClientGone {
		return
	}
	b := sc.appendChunk(nil, closeEvent(reason))
	if sc.chunked {
		b = append(b, "0\r\n\r\n"...)
	}
	sc.deadline = writeDeadline{timeout: time.Second}
	sc.send(b)
}

func (sc *sseConn) abort() { sc.conn.Close() }

func closeEvent(reason closeReason) []byte {
	return wire.AppendCloseEvent(nil, reason.err, reason.text, reason.retry)
}

// sseStream is a stream written through net/http: HTTP/2, or a ResponseWriter that cannot hijack. net/http frames
// the body (HTTP/2 DATA frames, or chunks); each write is flushed at once.
type sseStream struct {
	w       http.ResponseWriter // net/http's own, under gin's: its Flush reports errors
	rc      *http.ResponseController
	timeout time.Duration

	mu       sync.Mutex // orders abort with the end of the handler, after which w must not be touched
	finished bool
	done     chan struct{} // closed by close: the handler may return
}

func (ss *sseStream) send(b []byte) error {
	ss.rc.SetWriteDeadline(time.Now().Add(ss.timeout))
	_, err := ss.w.Write(b)
	if err == nil {
		err = ss.rc.Flush()
	}
	// Over HTTP/2 a deadline resets the stream when it passes, written to or not: clear it while idle.
	ss.rc.SetWriteDeadline(time.Time{})
	return err
}

func (ss *sseStream) write(batch []*Update) error {
	bp := getBuf()
	defer putBuf(bp)
	b := *bp
	for _, u := range batch {
		b = append(b, u.sse...)
	}
	*bp = b
	return ss.send(b) // one write: net/http hands it on as one piece rather than one per update
}

func (ss *sseStream) heartbeat() error { return ss.send(heartbeatEvent) }

// close sends the close event, as the hijacked stream does, and lets the handler return, which ends the response.
func (ss *sseStream) close(reason closeReason) {
	if reason != reasonClientGone {
		ss.timeout = time.Second
		ss.send(closeEvent(reason))
	}
	ss.mu.Lock()
	ss.finished = true
	ss.mu.Unlock()
	close(ss.done)
}

// abort fails the write in progress: a deadline in the past resets an HTTP/2 stream at once and fails an HTTP/1
// write. The writer then closes the stream.
func (ss *sseStream) abort() {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if !ss.finished {
		ss.rc.SetWriteDeadline(time.Unix(1, 0))
	}
}

// innermost returns the ResponseWriter under any wrappers (gin's): the one net/http made for the request.
func innermost(w http.ResponseWriter) http.ResponseWriter {
	for {
		u, ok := w.(interface{ Unwrap() http.ResponseWriter })
		if !ok {
			return w
		}
		w = u.Unwrap()
	}
}

// canHijack reports whether the connection under w can be taken over. gin's writer claims it always can, and
// panics when the one under it cannot (HTTP/2).
func canHijack(w http.ResponseWriter) bool {
	_, ok := innermost(w).(http.Hijacker)
	return ok
}
