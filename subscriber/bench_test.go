package subscriber

import (
	"fmt"
	"net"
	"strconv"
	"testing"
	"time"
)

// Benchmarks of reading updates: a Stream (what pushbench holds by the ten thousand) over SSE and WebSocket, and the
// per-update parsing of a Client. The bytes come from memory, as the edge writes them, so that the benchmarks
// measure parsing alone. Run: go test -run '^$' -bench . -benchmem ./ (in subscriber/)

var benchPayload = `{"topic":"market.AAPL","kind":"quote","symbol":"AAPL","price":231.52,"bid":231.5,"ask":231.54,` +
	`"open":229.8,"change":1.72,"changePct":0.75,"volume":1234567,"ts":"2026-11-25T19:30:49.545229729Z"}`

// replayConn hands out the same bytes over and over, at most 4 KiB per read, as a busy socket would.
type replayConn struct {
	net.Conn
	data []byte
	off  int
}

func (c *replayConn) Read(p []byte) (int, error) {
	n := copy(p[:min(len(p), 4096)], c.data[c.off:])
	if c.off += n; c.off == len(c.data) {
		c.off = 0
	}
	return n, nil
}

func (c *replayConn) SetReadDeadline(time.Time) error { return nil }

// benchBatch is a batch of 16 updates as the edge writes it: an SSE chunk, or a WebSocket frame of lines.
func benchBatch(ws bool) []byte {
	var body []byte
	for i := range 16 {
		cursor := strconv.Itoa(1000 + i)
		if ws {
			if i > 0 {
				body = append(body, '\n')
			}
			body = fmt.Appendf(body, `{"type":"update","topic":"market.AAPL","cursor":"%s","data":%s}`, cursor, benchPayload)
		} else {
			body = fmt.Appendf(body, "id: %s\nevent: quote\ndata: %s\n\n", cursor, benchPayload)
		}
	}
	if ws {
		return append([]byte{0x81, 127, 0, 0, 0, 0, 0, 0, byte(len(body) >> 8), byte(len(body))}, body...)
	}
	return append(fmt.Appendf(nil, "%x\r\n", len(body)), append(body, "\r\n"...)...)
}

func benchStream(b *testing.B, ws bool) {
	batch := benchBatch(ws)
	var data []byte
	for range 64 {
		data = append(data, batch...)
	}
	s := &Stream{conn: &replayConn{data: data}, ws: ws, chunked: !ws, idle: -1, small: make([]byte, defaultStreamBuffer)}
	s.buf = s.small
	b.ReportAllocs()
	b.SetBytes(int64(len(benchPayload)))
	for b.Loop() {
		m, err := s.Next()
		if err != nil || len(m.Data) != len(benchPayload) || string(m.Kind) != "quote" {
			b.Fatalf("%+v, %v", m, err)
		}
	}
}

// BenchmarkStreamSSE is Stream.Next over SSE: per update, with HTTP chunks of 16 events.
func BenchmarkStreamSSE(b *testing.B) { benchStream(b, false) }

// BenchmarkStreamWS is Stream.Next over WebSocket: per update, with frames of 16 lines.
func BenchmarkStreamWS(b *testing.B) { benchStream(b, true) }

// BenchmarkClientUpdateLine is what a Client does with each line of a WebSocket frame.
func BenchmarkClientUpdateLine(b *testing.B) {
	line := []byte(`{"type":"update","topic":"market.AAPL","cursor":"1234","data":` + benchPayload + `}`)
	b.ReportAllocs()
	b.SetBytes(int64(len(benchPayload)))
	for b.Loop() {
		u, ok := parseUpdateLine(line)
		if !ok || u.Kind != "quote" {
			b.Fatal(u, ok)
		}
	}
}
