package subscriber_test

import (
	"context"
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/livepush/livepush/subscriber"
)

func dialStream(t *testing.T, o subscriber.StreamOptions) *subscriber.Stream {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	s, err := subscriber.DialStream(ctx, o)
	if err != nil {
		t.Fatalf("DialStream: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

type result struct {
	m   subscriber.Message
	err error
}

// nextAsync reads the next message in the background.
func nextAsync(s *subscriber.Stream) <-chan result {
	got := make(chan result, 1)
	go func() {
		m, err := s.Next()
		// Copy: the slices are only valid until the next call.
		m.Topic, m.Kind, m.Data = []byte(string(m.Topic)), []byte(string(m.Kind)), []byte(string(m.Data))
		got <- result{m, err}
	}()
	return got
}

// next returns the next message within 10s.
func next(t *testing.T, s *subscriber.Stream) subscriber.Message {
	t.Helper()
	return wait(t, nextAsync(s))
}

func wait(t *testing.T, got <-chan result) subscriber.Message {
	t.Helper()
	select {
	case r := <-got:
		if r.err != nil {
			t.Fatalf("Next: %v", r.err)
		}
		return r.m
	case <-time.After(10 * time.Second):
		t.Fatal("no message within 10s")
	}
	panic("unreachable")
}

// fakeEdge serves one connection with a canned answer, read by the test through read.
func fakeEdge(t *testing.T, answer func(c net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		buf := make([]byte, 4096)
		n, _ := c.Read(buf) // the request
		if !strings.Contains(string(buf[:n]), "\r\n\r\n") {
			return
		}
		answer(c)
	}()
	return "http://" + ln.Addr().String()
}

func TestStreamSSEFraming(t *testing.T) {
	body := "retry: 2000\r\n: comment\r\n\r\n" +
		"id: 7\r\nevent: quote\r\ndata: {\"topic\":\"market.A\",\"kind\":\"quote\"}\r\n\r\n" +
		"id: 8\ndata: {\"topic\":\"market.B\",\ndata: \"kind\":\"score\"}\n\n" + // two data lines join with \n
		"event: reset\ndata: {\"type\":\"reset\",\"cursor\":\"5\"}\n\n" +
		"id: 9\ndata: {\"topic\":\"market.C\"}\n\n" +
		"event: close\nretry: 1000\ndata: {\"reason\":\"slow_consumer\",\"message\":\"too slow\"}\n\n"
	// Chunks cut anywhere, extensions included.
	var chunked strings.Builder
	for i, cut := 0, 1; i < len(body); cut = cut*3%17 + 1 {
		j := min(i+cut, len(body))
		fmt.Fprintf(&chunked, "%x;ext=1\r\n%s\r\n", j-i, body[i:j])
		i = j
	}
	chunked.WriteString("0\r\n\r\n")
	url := fakeEdge(t, func(c net.Conn) {
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
		for s := chunked.String(); len(s) > 0; s = s[min(len(s), 5):] {
			io.WriteString(c, s[:min(len(s), 5)])
		}
	})
	s := dialStream(t, subscriber.StreamOptions{URL: url, Topics: []string{"market.*"}, BufferSize: 64})
	for _, want := range []struct {
		topic, kind, data string
		cursor            uint64
		reset             bool
	}{
		{"market.A", "quote", `{"topic":"market.A","kind":"quote"}`, 7, false},
		{"market.B", "score", "{\"topic\":\"market.B\",\n\"kind\":\"score\"}", 8, false},
		{"", "", "", 5, true},
		{"market.C", "update", `{"topic":"market.C"}`, 9, false},
	} {
		m := next(t, s)
		if string(m.Topic) != want.topic || string(m.Kind) != want.kind || string(m.Data) != want.data ||
			m.Cursor != want.cursor || m.Reset != want.reset {
			t.Fatalf("got %q %q %q %d reset=%v, want %+v", m.Topic, m.Kind, m.Data, m.Cursor, m.Reset, want)
		}
	}
	_, err := s.Next()
	var closed *subscriber.ClosedError
	if !errors.As(err, &closed) || closed.Reason != "slow_consumer" || closed.Message != "too slow" ||
		closed.Retry != time.Second {
		t.Fatalf("Next: %v, want the close event", err)
	}
}

// wsFrame makes an unmasked frame as an edge sends it.
func wsFrame(fin bool, op byte, payload string) string {
	b := []byte{op}
	if fin {
		b[0] |= 0x80
	}
	switch n := len(payload); {
	case n < 126:
		b = append(b, byte(n))
	case n <= 0xffff:
		b = append(b, 126, byte(n>>8), byte(n))
	default:
		b = append(b, 127, 0, 0, 0, 0, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
	return string(b) + payload
}

func TestStreamWebSocketFraming(t *testing.T) {
	up := func(topic string, cursor int, pad int) string {
		return fmt.Sprintf(`{"type":"update","topic":"%s","cursor":"%d","data":{"topic":"%s","kind":"quote","p":"%s"}}`,
			topic, cursor, topic, strings.Repeat("y", pad))
	}
	frames := wsFrame(true, 1, `{"type":"subscribed","id":"0","topics":["market.*"]}`) +
		wsFrame(true, 1, up("market.A", 1, 0)+"\n"+up("market.B", 2, 200)) + // two messages, 16-bit length
		wsFrame(false, 1, up("market.C", 3, 10)[:30]) + // a message in three fragments, a ping between them
		wsFrame(true, 9, "hb") +
		wsFrame(false, 0, up("market.C", 3, 10)[30:50]) +
		wsFrame(true, 0, up("market.C", 3, 10)[50:]) +
		wsFrame(true, 1, up("market.D", 4, 70000)) + // 64-bit length
		wsFrame(true, 1, `{"type":"pong","id":"1"}`+"\n"+ // and an update in another field order
			`{"cursor":"5","data":{"topic":"market.E"},"topic":"market.E","type":"update"}`) +
		wsFrame(true, 1, `{"type":"reset","cursor":"3","reason":"old"}`) +
		wsFrame(true, 8, "\x03\xf5too slow to keep up")
	pong := make(chan []byte, 1)
	// The fake edge computes the accept key from the request.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		req := readRequest(c)
		io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
			"Sec-WebSocket-Accept: "+acceptKey(header(req, "Sec-WebSocket-Key"))+"\r\n\r\n")
		readFrame(c) // the subscribe
		for s := frames; len(s) > 0; s = s[min(len(s), 3):] {
			io.WriteString(c, s[:min(len(s), 3)])
		}
		pong <- readFrame(c)
		time.Sleep(time.Second) // let the client read the close
	}()
	s := dialStream(t, subscriber.StreamOptions{URL: "http://" + ln.Addr().String(), Transport: "ws",
		Topics: []string{"market.*"}, BufferSize: 64})
	for i, topic := range []string{"market.A", "market.B", "market.C", "market.D", "market.E"} {
		m := next(t, s)
		if string(m.Topic) != topic || m.Cursor != uint64(i+1) || !strings.HasPrefix(string(m.Data), `{"topic":"`+topic) {
			t.Fatalf("got %s at %d: %.60s, want %s at %d", m.Topic, m.Cursor, m.Data, topic, i+1)
		}
	}
	if m := next(t, s); !m.Reset || m.Cursor != 3 {
		t.Fatalf("got %+v, want a reset at 3", m)
	}
	_, err = s.Next()
	var closed *subscriber.ClosedError
	if !errors.As(err, &closed) || closed.Code != 1013 || closed.Reason != "try_again_later" ||
		closed.Message != "too slow to keep up" {
		t.Fatalf("Next: %v, want close 1013", err)
	}
	select {
	case p := <-pong:
		if string(p) != "hb" {
			t.Errorf("pong %q, want hb", p)
		}
	case <-time.After(5 * time.Second):
		t.Error("no pong")
	}
}

func acceptKey(key string) string {
	sum := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	return base64.StdEncoding.EncodeToString(sum[:])
}

func readRequest(c net.Conn) string {
	var req []byte
	buf := make([]byte, 1)
	for !strings.HasSuffix(string(req), "\r\n\r\n") {
		if _, err := c.Read(buf); err != nil {
			return string(req)
		}
		req = append(req, buf[0])
	}
	return string(req)
}

func header(req, name string) string {
	for _, line := range strings.Split(req, "\r\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.EqualFold(k, name) {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// readFrame reads one masked client frame and returns its payload unmasked.
func readFrame(c net.Conn) []byte {
	hdr := make([]byte, 2)
	if _, err := io.ReadFull(c, hdr); err != nil {
		return nil
	}
	n := int(hdr[1] & 0x7f)
	if n == 126 {
		ext := make([]byte, 2)
		io.ReadFull(c, ext)
		n = int(ext[0])<<8 | int(ext[1])
	}
	if hdr[1]&0x80 == 0 {
		return []byte("unmasked")
	}
	key := make([]byte, 4)
	io.ReadFull(c, key)
	p := make([]byte, n)
	io.ReadFull(c, p)
	for i := range p {
		p[i] ^= key[i%4]
	}
	return p
}
