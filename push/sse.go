package push

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/gin-gonic/gin"
	sse "github.com/tmaxmax/go-sse"
)

// The SSE transport takes the connection over from net/http once the request is accepted: headers go out at once,
// the handler returns, and the connection lives on with one goroutine blocked in Read to notice the client leave.
// Writes come from the subscriber's writer as chunks of pre-encoded events, so a stream costs a few KiB while idle
// and one write per batch of updates.

var heartbeatEvent = func() []byte {
	var m sse.Message
	m.AppendComment("heartbeat")
	b, _ := m.MarshalText()
	return b
}()

// bufPool holds write buffers: one per write in flight rather than one per connection.
var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

func getBuf() *[]byte { return bufPool.Get().(*[]byte) }

func putBuf(b *[]byte) {
	if cap(*b) > 64<<10 {
		return // do not keep a buffer grown by one large snapshot
	}
	*b = (*b)[:0]
	bufPool.Put(b)
}

type sseConn struct {
	conn    net.Conn
	header  []byte // the response header, sent with the first write
	chunked bool   // HTTP/1.1: each write is one chunk; HTTP/1.0: the body ends when the connection does
	timeout time.Duration
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
	conn, _, err := http.NewResponseController(c.Writer).Hijack()
	if err != nil {
		release()
		s.log.Error("sse: hijack failed", "err", err)
		writeError(c, http.StatusInternalServerError, "internal", "streaming is not supported on this connection")
		return
	}
	chunked := c.Request.ProtoAtLeast(1, 1)
	sc := &sseConn{conn: conn, chunked: chunked, timeout: s.hub.opts.WriteTimeout}

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

	expiry, onClose := closeAtExpiry(!g.expires.IsZero(), release)
	subscriber, ok := s.hub.newSubscriber(sc, "sse", c.ClientIP(), onClose)
	if !ok {
		release()
		sc.close(reasonRestart)
		return
	}
	expiry.start(subscriber, g.expires)
	s.log.Info("connection opened", "conn", subscriber.id, "transport", "sse", "remote", subscriber.remote,
		"topics", sub.Patterns, "since", since, "resume", resume)
	// The response starts with the first write of the subscriber's writer, which comes after the subscription is
	// registered: a client that has the headers is subscribed.
	if !resume {
		s.hub.Subscribe(subscriber, sub, sseHelloFor(unknownOf(c)))
		go s.sseReadLoop(subscriber, conn)
		return
	}
	hello := sseHelloFor(unknownOf(c))
	go func() {
		// The replay may read the stream for a while. The connection's watcher starts after it, on a goroutine of
		// its own, so that it keeps a small stack for the connection's life.
		if _, err := s.hub.resume(context.Background(), subscriber, sub, since, hello, checked); err != nil {
			s.log.Info("resume failed", "conn", subscriber.id, "err", err)
			switch {
			case errors.Is(err, ErrCursorAhead):
				subscriber.Close(reasonStreamRecreated) // only a recreation gets here: the check came first
			case errors.Is(err, ErrBusy):
				subscriber.Close(reasonBusy)
			default:
				subscriber.Close(reasonUnavailable)
			}
		}
		go s.sseReadLoop(subscriber, conn)
	}()
}

// sseHello opens every stream: how soon to reconnect, and a comment so EventSource fires onopen at once.
var sseHello = newControl(nil, []byte("retry: 2000\n: livepush\n\n"))

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
	sc.conn.SetWriteDeadline(time.Now().Add(sc.timeout))
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
	b := *bp
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
	sc.timeout = time.Second
	sc.send(b)
}

func (sc *sseConn) abort() { sc.conn.Close() }

func closeEvent(reason closeReason) []byte {
	// The retry: field is repeated in the data as milliseconds: EventSource applies retry: but never shows it to
	// scripts, and a client that reconnects by itself (livepush.js) must know how long to wait.
	data, _ := json.Marshal(struct {
		Reason  string `json:"reason"`
		Message string `json:"message"`
		Retry   int64  `json:"retry,omitempty"`
	}{reason.err, reason.text, reason.retry.Milliseconds()})
	m := sse.Message{Type: sse.Type("close"), Retry: reason.retry}
	m.AppendData(string(data))
	b, _ := m.MarshalText()
	return b
}
