package wire_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/livepush/livepush/subscriber/wire"
)

const payload = `{"topic":"market.AAPL","kind":"quote","price":189.12,"x":{"y":"}"}}`

func TestUpdateLine(t *testing.T) {
	line := wire.AppendUpdateLine(nil, "market.AAPL", 1234, []byte(payload))
	want := `{"type":"update","topic":"market.AAPL","cursor":"1234","data":` + payload + `}`
	if string(line) != want || wire.UpdateLineSize("market.AAPL", 1234, []byte(payload)) != len(want) {
		t.Fatalf("line %s (size %d), want %s", line, wire.UpdateLineSize("market.AAPL", 1234, []byte(payload)), want)
	}
	topic, cursor, data, ok := wire.ParseUpdateLine(line)
	if !ok || string(topic) != "market.AAPL" || cursor != 1234 || string(data) != payload {
		t.Fatalf("parsed %q %d %q %v", topic, cursor, data, ok)
	}
	for _, line := range []string{
		`{"type":"subscribed","id":"1","topics":["market.AAPL"]}`,
		`{"type":"update","cursor":"1","topic":"market.A","data":{}}`, // another member order: a JSON decoder's job
		`{"type":"update","topic":"market.A","cursor":"x1","data":{}}`,
		`{"type":"update","topic":"market.A","cursor":"123456789012345678901","data":{}}`,
		`{"type":"update","topic":"market.A","cursor":"1","data":[1]}`,
		`{"type":"update","topic":"mar\"ket","cursor":"1","data":{}}`,
		`{"type":"update","topic":"market.A","cursor":"1","data":{}`,
	} {
		if topic, cursor, data, ok := wire.ParseUpdateLine([]byte(line)); ok {
			t.Errorf("%s: parsed as %q %d %q, want a fallback", line, topic, cursor, data)
		}
	}
	buf := make([]byte, 0, 512)
	if a := testing.AllocsPerRun(100, func() {
		wire.ParseUpdateLine(wire.AppendUpdateLine(buf[:0], "market.AAPL", 1234, []byte(payload)))
	}); a != 0 {
		t.Errorf("an update line costs %v allocations", a)
	}
}

func TestParseCursor(t *testing.T) {
	for in, want := range map[string]uint64{"0": 0, "1234": 1234, "18446744073709551615": 1<<64 - 1} {
		if got, ok := wire.ParseCursor([]byte(in)); !ok || got != want {
			t.Errorf("ParseCursor(%s) = %d, %v", in, got, ok)
		}
	}
	for _, in := range []string{"", "-1", "1.5", "18446744073709551616", " 1", "0x10"} {
		if got, ok := wire.ParseCursor([]byte(in)); ok {
			t.Errorf("ParseCursor(%q) = %d, want refused", in, got)
		}
	}
}

func TestMarshalLineWritesCharactersAsTheyAre(t *testing.T) {
	b, err := wire.MarshalLine(wire.Message{Type: wire.TypeSubscribed, ID: []byte(`"1"`), Topics: []string{"sports.>", "a&b<c"}})
	if err != nil || string(b) != `{"type":"subscribed","id":"1","topics":["sports.>","a&b<c"]}`+"\n" {
		t.Fatalf("%s, %v", b, err)
	}
	b, _ = wire.MarshalLine(wire.Message{Type: wire.TypeReset, Cursor: "12", Reason: "expired"})
	if string(b) != `{"type":"reset","cursor":"12","reason":"expired"}`+"\n" {
		t.Fatalf("reset %s", b)
	}
}

func TestSSEEvents(t *testing.T) {
	ev := wire.AppendUpdateEvent(nil, 42, "quote", []byte(payload))
	want := "id: 42\nevent: quote\ndata: " + payload + "\n\n"
	if string(ev) != want || wire.UpdateEventSize(42, "quote", []byte(payload)) != len(want) {
		t.Fatalf("update event %q, want %q", ev, want)
	}
	if got := wire.AppendEvent(nil, wire.Event{ID: []byte("42"), Type: []byte("quote"), Data: []byte(payload)}); string(got) != want {
		t.Fatalf("AppendEvent %q, want %q", got, want)
	}
	closing := wire.AppendCloseEvent(nil, "server_restart", "edge restarting: <soon>", time.Second)
	if want := "event: close\nretry: 1000\n" +
		`data: {"reason":"server_restart","message":"edge restarting: <soon>","retry":1000}` + "\n\n"; string(closing) != want {
		t.Fatalf("close event %q, want %q", closing, want)
	}
	if got := wire.AppendComment(nil, "heartbeat"); string(got) != ": heartbeat\n" {
		t.Fatalf("comment %q", got)
	}
	if got := wire.AppendComment(nil, "two\nlines"); string(got) != ": two\n: lines\n" {
		t.Fatalf("comment %q", got)
	}
	if got := wire.AppendEvent(nil, wire.Event{Type: []byte("x"), Data: []byte("a\nb\r\nc")}); string(got) != "event: x\ndata: a\ndata: b\ndata: c\n\n" {
		t.Fatalf("lines %q", got)
	}
	buf := make([]byte, 0, 512)
	if a := testing.AllocsPerRun(100, func() { wire.AppendUpdateEvent(buf[:0], 42, "quote", []byte(payload)) }); a != 0 {
		t.Errorf("an update event costs %v allocations", a)
	}
}

// A stream as an edge or anyone else may write it: CRLF or LF, comments, several data lines, retry fields, events
// without data, and an event the stream ends inside.
const sseStream = "retry: 2000\r\n: livepush\r\n\r\n" +
	"id: 7\r\nevent: quote\r\ndata: {\"topic\":\"market.A\",\"kind\":\"quote\"}\r\n\r\n" +
	"\n\n" +
	"id: 8\ndata: {\"topic\":\"market.B\",\ndata:\"kind\":\"score\"}\n\n" +
	"event: reset\ndata: {\"type\":\"reset\",\"cursor\":\"5\"}\n\n" +
	"id: 9\nretry: soon\nfield-without-colon\ndata\n\n" +
	"event: close\nretry: 1000\ndata: {\"reason\":\"slow_consumer\"}\n\n" +
	"id: 10\ndata: cut"

type event struct {
	id, typ, data string
	hasID         bool
	retry         time.Duration
}

var sseEvents = []event{
	{retry: 2 * time.Second},
	{id: "7", hasID: true, typ: "quote", data: `{"topic":"market.A","kind":"quote"}`},
	{id: "8", hasID: true, data: "{\"topic\":\"market.B\",\n\"kind\":\"score\"}"},
	{typ: "reset", data: `{"type":"reset","cursor":"5"}`},
	{id: "9", hasID: true},
	{typ: "close", data: `{"reason":"slow_consumer"}`, retry: time.Second},
}

func eventOf(e wire.Event) event {
	return event{id: string(e.ID), hasID: e.ID != nil, typ: string(e.Type), data: string(e.Data), retry: e.Retry}
}

func TestEventReader(t *testing.T) {
	for name, r := range map[string]io.Reader{
		"whole":       strings.NewReader(sseStream),
		"byte a time": iotest.OneByteReader(strings.NewReader(sseStream)),
	} {
		er := wire.NewEventReader(r, 1024)
		for i, want := range sseEvents {
			e, err := er.Next()
			if err != nil || eventOf(e) != want {
				t.Fatalf("%s: event %d: %+v, %v; want %+v", name, i, eventOf(e), err, want)
			}
		}
		if e, err := er.Next(); err != io.ErrUnexpectedEOF {
			t.Fatalf("%s: after the last event: %+v, %v; want io.ErrUnexpectedEOF", name, eventOf(e), err)
		}
	}
	er := wire.NewEventReader(strings.NewReader("data: "+strings.Repeat("x", 5000)+"\n\n"), 4096)
	if _, err := er.Next(); !errors.Is(err, wire.ErrEventTooLarge) {
		t.Fatalf("an event of 5000 bytes read with a limit of 4096: %v", err)
	}
	er = wire.NewEventReader(strings.NewReader("data: 1\n\n"), 1024)
	er.Next()
	if _, err := er.Next(); err != io.EOF {
		t.Fatalf("end of stream: %v, want io.EOF", err)
	}
}

func TestParseEvent(t *testing.T) {
	blocks := strings.Split(strings.ReplaceAll(sseStream, "\r\n", "\n"), "\n\n")
	var scratch []byte
	k := 0
	for _, b := range blocks[:len(blocks)-1] {
		if b == "" {
			continue
		}
		if got := eventOf(wire.ParseEvent([]byte(b), &scratch)); got != sseEvents[k] {
			t.Errorf("ParseEvent(%q) = %+v, want %+v", b, got, sseEvents[k])
		}
		k++
	}
	// What AppendEvent writes reads back the same.
	for _, e := range []wire.Event{
		{ID: []byte("1"), Type: []byte("quote"), Data: []byte(payload)},
		{Type: []byte("close"), Retry: 1500 * time.Millisecond, Data: []byte("line 1\nline 2\n\nline 4")},
		{ID: []byte(""), Data: []byte("x")},
	} {
		b := wire.AppendEvent(nil, e)
		got := wire.ParseEvent(bytes.TrimSuffix(b, []byte("\n\n")), &scratch)
		if eventOf(got) != eventOf(e) {
			t.Errorf("%q read back as %+v, want %+v", b, eventOf(got), eventOf(e))
		}
	}
}

func TestFrameHeaders(t *testing.T) {
	for _, h := range []wire.FrameHeader{
		{Fin: true, Op: wire.OpText, Length: 0},
		{Fin: true, Op: wire.OpText, Length: 125},
		{Fin: false, Op: wire.OpText, Length: 126},
		{Fin: true, Op: wire.OpContinuation, Length: 0xffff},
		{Fin: true, Op: wire.OpBinary, Length: 0x10000},
		{Fin: true, Op: wire.OpText, Length: 1 << 40, Masked: true, Key: [4]byte{1, 2, 3, 4}},
		{Fin: true, Op: wire.OpPing, Length: 2, Masked: true, Key: [4]byte{9, 8, 7, 6}},
		{Fin: true, Op: wire.OpClose, Length: 125},
	} {
		b := wire.AppendFrameHeader(nil, h)
		for cut := range len(b) { // a header cut short reads as not there yet
			if _, n, err := wire.ParseFrameHeader(b[:cut]); n != 0 || err != nil {
				t.Fatalf("%+v cut at %d of %d: n %d, %v", h, cut, len(b), n, err)
			}
		}
		got, n, err := wire.ParseFrameHeader(append(b, "payload"...))
		if err != nil || n != len(b) || got != h {
			t.Errorf("%+v: written %x, read %+v (%d bytes), %v", h, b, got, n, err)
		}
	}
	for name, b := range map[string][]byte{
		"reserved bit":          {0xc1, 0},
		"opcode 3":              {0x83, 0},
		"opcode 11":             {0x8b, 0},
		"fragmented ping":       {0x09, 0},
		"close of 126 bytes":    {0x88, 126, 0, 126},
		"length with a top bit": {0x81, 127, 0x80, 0, 0, 0, 0, 0, 0, 0},
	} {
		if _, _, err := wire.ParseFrameHeader(b); !errors.Is(err, wire.ErrFrame) {
			t.Errorf("%s (%x): %v, want ErrFrame", name, b, err)
		}
	}
	if got := wire.AppendTextFrame(nil, []byte("hi")); string(got) != "\x81\x02hi" {
		t.Errorf("text frame %x", got)
	}
	p := []byte("hello, world")
	key := [4]byte{0x37, 0xfa, 0x21, 0x3d}
	wire.Mask(key, 0, p)
	wire.Mask(key, 0, p[:5])
	wire.Mask(key, 5, p[5:])
	if string(p) != "hello, world" {
		t.Errorf("masking twice, the second time in two pieces: %q", p)
	}
	if code, reason := wire.ParseClose([]byte("\x03\xf5too slow")); code != wire.CloseTryAgainLater || reason != "too slow" {
		t.Errorf("close payload: %d %q", code, reason)
	}
	if code, _ := wire.ParseClose(nil); code != wire.CloseNoStatus {
		t.Errorf("empty close payload: %d", code)
	}
	for code, name := range map[int]string{1012: "server_restart", 4001: "token_expired", 4999: "close_4999"} {
		if got := wire.CloseName(code); got != name {
			t.Errorf("CloseName(%d) = %s, want %s", code, got, name)
		}
	}
}

func ExampleAppendUpdateEvent() {
	fmt.Printf("%q\n", wire.AppendUpdateEvent(nil, 1234, "quote", []byte(`{"topic":"market.AAPL","kind":"quote"}`)))
	// Output: "id: 1234\nevent: quote\ndata: {\"topic\":\"market.AAPL\",\"kind\":\"quote\"}\n\n"
}
