package subscriber

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha1"
	"crypto/tls"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"mime"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/livepush/livepush/subscriber/wire"
)

// A Stream is one SSE or WebSocket connection read the lean way, for programs that hold tens of thousands of them
// (a load generator): it speaks HTTP/1.1 and the WebSocket framing itself over a plain TCP connection, has no
// goroutine of its own, keeps one small read buffer that grows only for a burst, and hands out updates as slices of
// that buffer, without allocating. An idle Stream costs about 8 KiB with the goroutine that reads it, half of it that
// goroutine's stack (docs/benchmarks.md); a Client costs 20 to 40 KiB.
//
// A Stream does not reconnect and does not drop duplicates: it shows exactly what the edge sent, which is what a
// benchmark wants to check. Use Client for everything else.
//
// One goroutine calls Next; Close may be called from any goroutine.
type Stream struct {
	conn net.Conn
	ws   bool
	idle time.Duration

	small  []byte // the buffer kept while the stream is quiet
	buf    []byte // small, or a larger one during a burst
	p, d   int    // buf[p:d] holds decoded bytes (SSE body, WebSocket payloads) not yet parsed
	r, w   int    // buf[r:w] holds bytes read but not decoded yet; d <= r
	scan   int    // bytes after p already searched for the end of the next message
	lineAt int    // SSE: where the line being read starts, after p
	full   bool   // the last read filled all the room it had: the stream is busy
	lastN  int    // bytes the last read returned

	// Framing: HTTP chunks (SSE) or WebSocket frames.
	chunked bool
	state   uint8 // chunk decoder: chunkSize, chunkData, chunkEnd
	inFrame bool  // inside a WebSocket data frame's payload
	fin     bool  // that frame ends its message
	left    int   // bytes left in the current chunk or frame

	handshaking bool
	err         error  // how the stream ended, returned once everything before it is parsed
	scratch     []byte // an SSE event's data joined from several lines
	cursor      uint64
	retry       time.Duration
	skipped     uint64 // what the edge's conflated notices said it skipped
}

// StreamOptions configure DialStream. URL and Topics are required; each zero field takes the default it documents.
type StreamOptions struct {
	// URL is the edge's base URL: "http://127.0.0.1:8080", or https:// for an edge or a proxy that ends TLS (ws://
	// and wss:// are taken as http:// and https://).
	URL string
	// Transport is TransportSSE or TransportWebSocket. Zero: SSE.
	Transport string
	// Topics are the topic patterns to follow.
	Topics []string
	// Cursor resumes after this cursor (SSE: Last-Event-ID; WebSocket: since). Zero: the snapshot, then live.
	Cursor uint64
	// Dial opens the TCP connection: wrap the net.Conn it returns to count bytes, or dial from a chosen source
	// address. Zero: a net.Dialer's. Over https:// TLS runs on the connection it returns.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// TLSConfig is for https:// URLs: RootCAs to trust a private CA, say. Zero: the system's roots. Its ServerName
	// defaults to the URL's host and its NextProtos are set to HTTP/1.1, which a Stream speaks.
	TLSConfig *tls.Config
	// BufferSize is the read buffer a quiet stream keeps. A stream whose reads fill its buffer gets one twice as
	// large, up to 64 KiB (shared through a pool), or up to 16 MiB for one message that large; it returns to
	// BufferSize when it goes quiet. Zero: 1024.
	BufferSize int
	// IdleTimeout makes Next fail when nothing at all arrives for this long (the edge sends a heartbeat every 15s
	// by default). Zero: 45s. Negative: no limit.
	IdleTimeout time.Duration
}

// Message is an update (or a reset) read by Stream.Next. Its slices point into the stream's buffer: they are valid
// until the next call of Next. Copy what you keep.
type Message struct {
	Topic  []byte // the concrete topic ("market.AAPL")
	Cursor uint64 // the update's cursor; for a reset, the cursor the edge sent with it (0 if none)
	Kind   []byte // the payload's kind ("quote", "score", …; "update" if it has none)
	Data   []byte // the payload, byte for byte as the edge sent it
	// Reset is true when the edge could not resume from the cursor (older than the stream keeps): a fresh snapshot
	// follows. Topic, Kind and Data are empty.
	Reset bool
}

// ClosedError is returned by Stream.Next when the edge ended the stream on purpose: an SSE close event or a
// WebSocket close frame. It wraps ErrClosedByEdge.
type ClosedError struct {
	Reason  string        // server_restart, slow_consumer, unavailable, …, or the close code in words (try_again_later)
	Message string        // the edge's words
	Code    int           // the WebSocket close code; 0 for SSE
	Retry   time.Duration // how long the edge asked the client to wait before reconnecting (SSE retry:)
}

func (e *ClosedError) Error() string { return closeError(e.Reason, e.Message).Error() }

func (e *ClosedError) Unwrap() error { return ErrClosedByEdge }

const (
	defaultStreamBuffer = 1024
	bigBuffer           = 64 << 10
	maxStreamBuffer     = maxMessage + bigBuffer
	wsGUID              = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
)

// Chunk decoder states.
const (
	chunkSize uint8 = iota
	chunkData
	chunkEnd
)

var bigPool = sync.Pool{New: func() any { b := make([]byte, bigBuffer); return &b }}

// errStreamProtocol is wrapped by the errors of a stream whose bytes break HTTP chunking or WebSocket framing.
var errStreamProtocol = errors.New("subscriber: protocol error")

// DialStream connects to the edge, subscribes and returns once the edge has registered the subscription (SSE: the
// response headers have arrived; WebSocket: the edge has answered the subscribe). ctx bounds the connect and the
// handshake only.
//
// It returns ErrBadURL, ErrNoTopic or ErrUnknownTransport for options it cannot work with, an *Error when the edge
// refuses the request (an invalid topic: HTTP 400, or an error reply on a WebSocket; a bad cursor; 503 while the
// stream is away, with Retry-After), and the network's error otherwise.
//
// The handshake runs on a goroutine of its own: the HTTP and JSON code it needs would otherwise grow the stack of
// the caller's goroutine, which then reads the stream, to 8 KiB for good.
func DialStream(ctx context.Context, o StreamOptions) (*Stream, error) {
	type result struct {
		s   *Stream
		err error
	}
	done := make(chan result, 1)
	go func() {
		s, err := dialStream(ctx, o)
		done <- result{s, err}
	}()
	r := <-done
	return r.s, r.err
}

func dialStream(ctx context.Context, o StreamOptions) (*Stream, error) {
	base, err := baseURL(o.URL)
	if err != nil {
		return nil, err
	}
	u, _ := url.Parse(base)
	s := &Stream{idle: o.IdleTimeout}
	switch o.Transport {
	case "", TransportSSE:
	case TransportWebSocket:
		s.ws = true
	default:
		return nil, fmt.Errorf("%w: %q (a Stream speaks sse or ws)", ErrUnknownTransport, o.Transport)
	}
	var topics []string
	for _, t := range o.Topics {
		if t = strings.TrimSpace(t); t != "" && !slices.Contains(topics, t) {
			topics = append(topics, t)
		}
	}
	if len(topics) == 0 {
		return nil, ErrNoTopic
	}
	if s.idle == 0 {
		s.idle = defaultIdleTimeout
	}
	size := o.BufferSize
	if size <= 0 {
		size = defaultStreamBuffer
	}
	s.small = make([]byte, max(size, 64))
	s.buf = s.small

	addr := u.Host
	if u.Port() == "" {
		addr = net.JoinHostPort(u.Hostname(), map[string]string{"http": "80", "https": "443"}[u.Scheme])
	}
	dial := o.Dial
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	conn, err := dial(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	if u.Scheme == "https" {
		cfg := &tls.Config{}
		if o.TLSConfig != nil {
			cfg = o.TLSConfig.Clone()
		}
		if cfg.ServerName == "" {
			cfg.ServerName = u.Hostname()
		}
		cfg.NextProtos = []string{"http/1.1"} // what the handshake below speaks, WebSocket or SSE
		conn = tls.Client(conn, cfg)
	}
	s.conn = conn
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	s.handshaking = true
	err = s.handshake(u, topics, o.Cursor) // the TLS handshake, if any, comes with the request's first write
	s.handshaking = false
	if !stop() && err != nil {
		err = fmt.Errorf("%w (%v)", ctx.Err(), err)
	}
	if err != nil {
		conn.Close()
		return nil, err
	}
	conn.SetDeadline(time.Time{})
	return s, nil
}

// handshake sends the request and reads the answer's headers; for a WebSocket it then sends the subscribe.
func (s *Stream) handshake(u *url.URL, topics []string, since uint64) error {
	q := url.Values{"topic": topics}
	path := "/sse"
	if s.ws {
		path = "/ws"
	} else if since > 0 {
		q.Set("lastEventId", strconv.FormatUint(since, 10))
	}
	target := *u
	target.Path += path
	if s.ws {
		target.RawQuery = "frames=lines" // a batch in one frame: one frame header to take off for all of it
	} else {
		target.RawQuery = q.Encode()
	}
	req, err := http.NewRequest(http.MethodGet, target.String(), nil)
	if err != nil {
		return err
	}
	req.Header.Set("User-Agent", "livepush-subscriber")
	var key string
	if s.ws {
		var nonce [16]byte
		binary.LittleEndian.PutUint64(nonce[:8], rand.Uint64())
		binary.LittleEndian.PutUint64(nonce[8:], rand.Uint64())
		key = base64.StdEncoding.EncodeToString(nonce[:])
		req.Header.Set("Upgrade", "websocket")
		req.Header.Set("Connection", "Upgrade")
		req.Header.Set("Sec-WebSocket-Key", key)
		req.Header.Set("Sec-WebSocket-Version", "13")
	} else {
		req.Header.Set("Accept", "text/event-stream")
		req.Header.Set("Cache-Control", "no-cache")
		if since > 0 {
			req.Header.Set("Last-Event-ID", strconv.FormatUint(since, 10))
		}
	}
	var out bytes.Buffer
	if err := req.Write(&out); err != nil {
		return err
	}
	if _, err := s.conn.Write(out.Bytes()); err != nil {
		return err
	}

	// The answer's headers go through net/http's parser; what it read past them is copied into the stream's
	// buffer, and from then on the stream reads the connection itself.
	br := bufio.NewReaderSize(s.conn, 1024)
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		return err
	}
	want := http.StatusOK
	if s.ws {
		want = http.StatusSwitchingProtocols
	}
	if resp.StatusCode != want {
		defer resp.Body.Close()
		if resp.StatusCode >= 300 {
			return httpFailure(resp).err
		}
		return fmt.Errorf("subscriber: %s%s answered %s", u.Host, path, resp.Status)
	}
	if s.ws {
		sum := sha1.Sum([]byte(key + wsGUID))
		if !strings.EqualFold(resp.Header.Get("Upgrade"), "websocket") ||
			resp.Header.Get("Sec-WebSocket-Accept") != base64.StdEncoding.EncodeToString(sum[:]) {
			return fmt.Errorf("%w: bad WebSocket handshake answer", errStreamProtocol)
		}
	} else {
		if ct, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); ct != "text/event-stream" {
			return errors.New("subscriber: " + u.Host + "/sse answered " + strconv.Quote(ct) + ", not an event stream")
		}
		s.chunked = slices.Contains(resp.TransferEncoding, "chunked")
	}
	if n := br.Buffered(); n > 0 {
		for len(s.buf) < n {
			if err := s.grow(); err != nil {
				return err
			}
		}
		b, _ := br.Peek(n)
		s.w = copy(s.buf, b)
		s.decode()
	}
	if !s.ws {
		return nil
	}
	b, _ := wire.MarshalLine(request(wire.TypeSubscribe, firstID, topics, since, 0))
	if err := s.writeFrame(wire.OpText, b); err != nil {
		return err
	}
	return s.awaitSubscribed()
}

// awaitSubscribed reads the edge's answer to the first subscribe: "subscribed" is consumed; an error reply is
// returned; anything else is left for Next.
func (s *Stream) awaitSubscribed() error {
	for {
		p, scan := s.p, s.scan
		line, ok := s.nextLine()
		if !ok {
			if s.err != nil {
				return s.err
			}
			if err := s.more(); err != nil {
				return err
			}
			continue
		}
		if len(line) == 0 {
			continue
		}
		var msg wire.Message
		if !bytes.HasPrefix(line, []byte(`{"type":"update"`)) && json.Unmarshal(line, &msg) == nil {
			id := msg.IDString()
			switch {
			case msg.Type == wire.TypeSubscribed && id == firstID:
				return nil
			case msg.Type == wire.TypeError && id == firstID:
				return &Error{Code: msg.Code, Message: msg.Message}
			}
		}
		s.p, s.scan = p, scan // not the answer: Next reads it
		return nil
	}
}

// Cursor returns the highest cursor Next has returned since the stream opened or was last reset: resuming from it
// (StreamOptions.Cursor, or Options.Cursor of a Client) continues after it.
func (s *Stream) Cursor() uint64 { return s.cursor }

// Skipped returns how many updates the edge has said it skipped on this stream, each superseded by a newer one on
// the same topic, because the reader or the edge could not keep up (its conflated notices).
func (s *Stream) Skipped() uint64 { return s.skipped }

// Buffered returns how many bytes the stream has read from the connection and not yet returned: when it is 0, the
// next Next waits for the network. A reader can flush per-read bookkeeping then.
func (s *Stream) Buffered() int { return s.d - s.p + s.w - s.r }

// Close closes the connection at once; a Next waiting for data returns an error.
func (s *Stream) Close() error { return s.conn.Close() }

// Next returns the next update. It returns an error when the stream ends: a *ClosedError if the edge closed it on
// purpose (a restart, a slow consumer), an *Error if the edge refused the subscription (WebSocket), an error
// wrapping os.ErrDeadlineExceeded after IdleTimeout of silence, io.EOF if the edge ended it without a word, or the
// connection's error. After an error the stream is done: Close it.
func (s *Stream) Next() (Message, error) {
	for {
		var m Message
		var ok bool
		var err error
		if s.ws {
			m, ok, err = s.parseWS()
		} else {
			m, ok, err = s.parseSSE()
		}
		if err != nil {
			s.err = err
			return Message{}, err
		}
		if ok {
			if m.Reset {
				s.cursor = 0
			} else if m.Cursor > s.cursor {
				s.cursor = m.Cursor
			}
			return m, nil
		}
		if err := s.more(); err != nil {
			return Message{}, err
		}
	}
}

// more reads from the connection once, after everything decoded so far has been parsed.
func (s *Stream) more() error {
	if s.err != nil {
		return s.err
	}
	if s.p == s.d && s.r == s.w && len(s.buf) > len(s.small) && s.lastN <= len(s.small)/2 {
		s.shrink() // the burst is read and the stream has gone quiet
	}
	s.compact()
	if s.w == len(s.buf) || s.full && len(s.buf) < bigBuffer {
		if err := s.grow(); err != nil {
			s.err = err
			return err
		}
	}
	if s.idle > 0 && !s.handshaking { // during the handshake, ctx sets the deadline
		s.conn.SetReadDeadline(time.Now().Add(s.idle))
	}
	room := len(s.buf) - s.w
	n, err := s.conn.Read(s.buf[s.w:])
	s.w += n
	s.full, s.lastN = n == room && room >= len(s.buf)/2, n
	if n > 0 {
		s.decode()
	}
	if err != nil && s.err == nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() && s.idle > 0 {
			err = fmt.Errorf("subscriber: nothing from the edge for %v: %w", s.idle, err)
		}
		s.err = err
	}
	return nil
}

// compact moves what is left to the start of the buffer. It keeps a few bytes of the gap between decoded and raw
// bytes, so a WebSocket frame that ends always has room for the newline that marks the end of its message.
func (s *Stream) compact() {
	if s.p == 0 {
		return
	}
	gap := min(s.r-s.d, 16)
	n := copy(s.buf, s.buf[s.p:s.d])
	m := copy(s.buf[n+gap:], s.buf[s.r:s.w])
	s.p, s.d, s.r, s.w = 0, n, n+gap, n+gap+m
}

// grow moves the stream to a buffer twice as large: a stream that fills its buffer on every read gets a bigger one,
// up to 64 KiB (shared through a pool), or beyond for one message that large.
func (s *Stream) grow() error {
	if len(s.buf) >= maxStreamBuffer {
		return fmt.Errorf("subscriber: a message over %d bytes", maxMessage)
	}
	size := min(2*len(s.buf), maxStreamBuffer)
	if size > bigBuffer/2 && size < bigBuffer {
		size = bigBuffer
	}
	var nb []byte
	if size == bigBuffer {
		nb = *bigPool.Get().(*[]byte)
	} else {
		nb = make([]byte, size)
	}
	copy(nb, s.buf[:s.w])
	s.release()
	s.buf = nb
	return nil
}

// shrink returns to the small buffer once a burst has been read; only the gap is carried over.
func (s *Stream) shrink() {
	gap := min(s.r-s.d, 16)
	s.release()
	s.buf = s.small
	s.p, s.d, s.r, s.w, s.scan, s.lineAt = 0, 0, gap, gap, 0, 0
}

func (s *Stream) release() {
	if len(s.buf) == bigBuffer {
		b := s.buf
		bigPool.Put(&b)
	}
}

// decode turns the raw bytes read into body bytes: it takes the HTTP chunking off an SSE stream, and the frame
// headers off a WebSocket's data, ending each message with a newline.
func (s *Stream) decode() {
	switch {
	case s.ws:
		s.decodeWS()
	case s.chunked:
		s.decodeChunked()
	default:
		s.move(s.w - s.r)
	}
}

// move passes n raw bytes on as decoded.
func (s *Stream) move(n int) {
	if s.d != s.r {
		copy(s.buf[s.d:], s.buf[s.r:s.r+n])
	}
	s.d += n
	s.r += n
}

func (s *Stream) protocolError(format string, args ...any) {
	if s.err == nil {
		s.err = fmt.Errorf("%w: "+format, append([]any{errStreamProtocol}, args...)...)
	}
}

func (s *Stream) decodeChunked() {
	for s.err == nil {
		switch s.state {
		case chunkSize:
			raw := s.buf[s.r:s.w]
			i := bytes.IndexByte(raw, '\n')
			if i < 0 {
				if len(raw) > 1024 {
					s.protocolError("chunk header over 1 KiB")
				}
				return
			}
			line := bytes.TrimRight(raw[:i], "\r")
			if j := bytes.IndexByte(line, ';'); j >= 0 {
				line = line[:j]
			}
			size, ok := parseHex(bytes.TrimSpace(line))
			if !ok {
				s.protocolError("bad chunk size %q", line)
				return
			}
			s.r += i + 1
			if size == 0 {
				s.err = io.EOF // the last chunk: the edge ended the stream
				return
			}
			s.left, s.state = size, chunkData
		case chunkData:
			n := min(s.left, s.w-s.r)
			s.move(n)
			if s.left -= n; s.left > 0 {
				return
			}
			s.state = chunkEnd
		case chunkEnd:
			raw := s.buf[s.r:s.w]
			switch {
			case len(raw) >= 1 && raw[0] == '\n':
				s.r++
			case len(raw) >= 2 && raw[0] == '\r' && raw[1] == '\n':
				s.r += 2
			case len(raw) >= 2 || len(raw) == 1 && raw[0] != '\r':
				s.protocolError("chunk not followed by CRLF")
				return
			default:
				return
			}
			s.state = chunkSize
		}
	}
}

func parseHex(b []byte) (int, bool) {
	if len(b) == 0 || len(b) > 8 {
		return 0, false
	}
	n := 0
	for _, c := range b {
		switch {
		case c >= '0' && c <= '9':
			n = n<<4 | int(c-'0')
		case c >= 'a' && c <= 'f':
			n = n<<4 | int(c-'a'+10)
		case c >= 'A' && c <= 'F':
			n = n<<4 | int(c-'A'+10)
		default:
			return 0, false
		}
	}
	return n, true
}

func (s *Stream) decodeWS() {
	for s.err == nil {
		if s.inFrame {
			n := min(s.left, s.w-s.r)
			s.move(n)
			if s.left -= n; s.left > 0 {
				return
			}
			s.inFrame = false
			if s.fin {
				s.buf[s.d] = '\n' // room: at least the frame's 2-byte header lies between d and r
				s.d++
			}
			continue
		}
		h, hdr, err := wire.ParseFrameHeader(s.buf[s.r:s.w])
		switch {
		case err != nil:
			s.protocolError("%v", err)
			return
		case hdr == 0:
			return // the rest of the header has not arrived
		case h.Masked:
			s.protocolError("masked frame from the edge")
			return
		case h.Op.IsControl(): // whole, at most 125 bytes, between the frames of a message
			if s.w-s.r < hdr+int(h.Length) {
				return
			}
			payload := s.buf[s.r+hdr : s.r+hdr+int(h.Length)]
			s.r += hdr + int(h.Length)
			s.control(h.Op, payload)
		case h.Length > maxMessage:
			s.protocolError("a frame of %d bytes", h.Length)
			return
		default:
			s.r += hdr
			s.inFrame, s.fin, s.left = true, h.Fin, int(h.Length)
		}
	}
}

// control answers a ping and takes a close frame as the end of the stream.
func (s *Stream) control(op wire.Opcode, payload []byte) {
	switch op {
	case wire.OpPing: // the edge's heartbeat, answered at once
		s.writeFrame(wire.OpPong, payload)
	case wire.OpClose:
		code, reason := wire.ParseClose(payload)
		if code == wire.CloseNoStatus {
			s.writeFrame(wire.OpClose, nil)
		} else {
			s.writeFrame(wire.OpClose, binary.BigEndian.AppendUint16(nil, uint16(code)))
		}
		s.err = &ClosedError{Reason: wire.CloseName(code), Message: reason, Code: code}
	}
}

// writeFrame sends one masked frame, as a client must.
func (s *Stream) writeFrame(op wire.Opcode, payload []byte) error {
	h := wire.FrameHeader{Fin: true, Op: op, Length: uint64(len(payload)), Masked: true}
	binary.LittleEndian.PutUint32(h.Key[:], rand.Uint32())
	b := append(wire.AppendFrameHeader(make([]byte, 0, wire.MaxFrameHeader+len(payload)), h), payload...)
	wire.Mask(h.Key, 0, b[len(b)-len(payload):])
	s.conn.SetWriteDeadline(time.Now().Add(writeTimeout))
	_, err := s.conn.Write(b)
	s.conn.SetWriteDeadline(time.Time{})
	return err
}

// nextLine returns the next complete line of decoded bytes, without its newline, or false if none is complete.
func (s *Stream) nextLine() ([]byte, bool) {
	i := bytes.IndexByte(s.buf[s.p+s.scan:s.d], '\n')
	if i < 0 {
		s.scan = s.d - s.p
		return nil, false
	}
	line := s.buf[s.p : s.p+s.scan+i]
	s.p += s.scan + i + 1
	s.scan = 0
	return line, true
}

// parseWS returns the next update of a WebSocket, skipping replies; ok is false when no message is complete yet.
func (s *Stream) parseWS() (m Message, ok bool, err error) {
	for {
		line, ok := s.nextLine()
		if !ok {
			return m, false, nil
		}
		if len(line) == 0 {
			continue
		}
		if topic, cursor, data, ok := wire.ParseUpdateLine(line); ok {
			_, kind := peek(data)
			return Message{Topic: topic, Cursor: cursor, Kind: kind, Data: data}, true, nil
		}
		var msg wire.Message
		if json.Unmarshal(line, &msg) != nil {
			continue // not JSON: nothing a client can act on
		}
		switch msg.Type {
		case wire.TypeUpdate:
			u, err := updateOf(msg)
			if err != nil {
				continue
			}
			return Message{Topic: []byte(u.Topic), Cursor: u.Cursor, Kind: []byte(u.Kind), Data: u.Data}, true, nil
		case wire.TypeReset:
			cursor, _ := wire.ParseCursor([]byte(msg.Cursor))
			return Message{Cursor: cursor, Reset: true}, true, nil
		case wire.TypeConflated:
			s.skipped += msg.Skipped
		case wire.TypeError:
			if msg.IDString() == firstID || permanentCode(msg.Code) {
				return m, false, &Error{Code: msg.Code, Message: msg.Message}
			}
		}
	}
}

// parseSSE returns the next update of an SSE stream, skipping comments and events without data; ok is false when
// no event is complete yet. An event stays in the buffer, unparsed, until its blank line has arrived.
func (s *Stream) parseSSE() (m Message, ok bool, err error) {
	for {
		i := bytes.IndexByte(s.buf[s.p+s.scan:s.d], '\n')
		if i < 0 {
			s.scan = s.d - s.p
			return m, false, nil
		}
		line := s.buf[s.p+s.lineAt : s.p+s.scan+i]
		s.scan += i + 1
		s.lineAt = s.scan
		if len(line) > 0 && !(len(line) == 1 && line[0] == '\r') {
			continue
		}
		event := s.buf[s.p : s.p+s.scan-1-len(line)]
		s.p += s.scan
		s.scan, s.lineAt = 0, 0
		if m, ok, err := s.event(event); ok || err != nil {
			return m, ok, err
		}
	}
}

// event reads one SSE event.
func (s *Stream) event(block []byte) (m Message, ok bool, err error) {
	ev := wire.ParseEvent(block, &s.scratch)
	if ev.Retry > 0 {
		s.retry = ev.Retry
	}
	if len(ev.Data) == 0 {
		return m, false, nil
	}
	switch string(ev.Type) {
	case wire.EventClose:
		var msg wire.Close
		json.Unmarshal(ev.Data, &msg)
		return m, false, &ClosedError{Reason: msg.Reason, Message: msg.Message, Retry: s.retry}
	case wire.EventReset:
		var msg wire.Message
		json.Unmarshal(ev.Data, &msg)
		cursor, _ := wire.ParseCursor([]byte(msg.Cursor))
		return Message{Cursor: cursor, Reset: true}, true, nil
	case wire.EventError:
		var msg wire.ErrorBody
		json.Unmarshal(ev.Data, &msg)
		return m, false, &Error{Code: msg.Code, Message: msg.Error}
	case wire.EventConflated:
		var msg wire.Message
		json.Unmarshal(ev.Data, &msg)
		s.skipped += msg.Skipped
		return m, false, nil
	}
	cursor, ok := wire.ParseCursor(ev.ID)
	if !ok {
		return m, false, nil // an update must carry its cursor
	}
	topic, kind := peek(ev.Data)
	if len(ev.Type) > 0 && string(ev.Type) != "message" {
		kind = ev.Type
	}
	return Message{Topic: topic, Cursor: cursor, Kind: kind, Data: ev.Data}, true, nil
}
