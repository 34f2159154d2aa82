package wire

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"
)

// The names of the SSE events the edge sends of its own; a payload's kind can never be one of them.
const (
	EventClose  = "close"  // the edge ends the stream on purpose: Close in the data
	EventReset  = "reset"  // the cursor could not be resumed: a Message of type reset in the data
	EventError  = "error"  // an ErrorBody in the data
	EventUpdate = "update" // a payload whose kind is not one the edge names events after
	// EventConflated: the edge skipped updates superseded by newer ones on the same topics (the client or the edge
	// could not keep up); a Message of type conflated in the data says how many.
	EventConflated = "conflated"
)

// Event is one Server-Sent Event.
type Event struct {
	ID    []byte        // the id field: an update's cursor; nil without one
	Type  []byte        // the event field: the payload's kind, or one of the edge's own events; nil: "message"
	Data  []byte        // the data lines, joined by "\n"; empty: the event carries nothing and is not dispatched
	Retry time.Duration // the retry field: how long a client waits before it reconnects; 0 without one
}

// AppendEvent appends e as the edge writes events: the id, event and retry fields, a data line per line of Data,
// and the blank line that ends the event.
func AppendEvent(dst []byte, e Event) []byte {
	if e.ID != nil {
		dst = append(append(append(dst, "id: "...), e.ID...), '\n')
	}
	if len(e.Type) > 0 {
		dst = append(append(append(dst, "event: "...), e.Type...), '\n')
	}
	if e.Retry > 0 {
		dst = AppendRetry(dst, e.Retry)
	}
	for data := e.Data; len(data) > 0; {
		line, rest, _ := bytes.Cut(data, []byte("\n"))
		dst = append(append(append(dst, "data: "...), bytes.TrimSuffix(line, []byte("\r"))...), '\n')
		data = rest
	}
	return append(dst, '\n')
}

// AppendUpdateEvent appends an update as an SSE event, "id: <cursor>\nevent: <kind>\ndata: <payload>\n\n". The
// payload must be one line (the edge compacts payloads) and the kind a plain word.
func AppendUpdateEvent(dst []byte, cursor uint64, kind string, data []byte) []byte {
	dst = append(dst, "id: "...)
	dst = strconv.AppendUint(dst, cursor, 10)
	dst = append(dst, "\nevent: "...)
	dst = append(dst, kind...)
	dst = append(dst, "\ndata: "...)
	dst = append(dst, data...)
	return append(dst, "\n\n"...)
}

// UpdateEventSize is the length of the event AppendUpdateEvent writes.
func UpdateEventSize(cursor uint64, kind string, data []byte) int {
	return len("id: \nevent: \ndata: \n\n") + digits(cursor) + len(kind) + len(data)
}

// AppendRetry appends a retry field, in milliseconds.
func AppendRetry(dst []byte, retry time.Duration) []byte {
	dst = append(dst, "retry: "...)
	dst = strconv.AppendInt(dst, retry.Milliseconds(), 10)
	return append(dst, '\n')
}

// AppendComment appends text as comment lines (": text"), which clients skip: a heartbeat, a note. The caller ends
// the event with a blank line.
func AppendComment(dst []byte, text string) []byte {
	for {
		line, rest, more := cutLine(text)
		dst = append(append(append(dst, ": "...), line...), '\n')
		if !more {
			return dst
		}
		text = rest
	}
}

func cutLine(s string) (line, rest string, more bool) {
	for i := 0; i < len(s); i++ {
		if s[i] == '\n' || s[i] == '\r' {
			return s[:i], s[i+1:], true
		}
	}
	return s, "", false
}

// AppendCloseEvent appends the event with which the edge ends a stream on purpose: why, and when to come back
// (retry, repeated in the data).
func AppendCloseEvent(dst []byte, reason, message string, retry time.Duration) []byte {
	data, _ := MarshalLine(Close{Reason: reason, Message: message, Retry: retry.Milliseconds()}) // strings: cannot fail
	return AppendEvent(dst, Event{Type: []byte(EventClose), Retry: retry, Data: data[:len(data)-1]})
}

// ParseEvent reads the fields of one event: block is its lines, without the blank line that ends it. Comments and
// unknown fields are skipped, and so is a retry that is not a number. Data of several lines is joined into *scratch,
// which is reused; otherwise the slices returned point into block.
func ParseEvent(block []byte, scratch *[]byte) Event {
	var e Event
	joined := false
	for len(block) > 0 {
		line, rest, _ := bytes.Cut(block, []byte("\n"))
		block = rest
		line = bytes.TrimSuffix(line, []byte("\r"))
		if len(line) == 0 || line[0] == ':' {
			continue
		}
		name, value, _ := bytes.Cut(line, []byte(":"))
		value = bytes.TrimPrefix(value, []byte(" "))
		switch string(name) {
		case "id":
			if bytes.IndexByte(value, 0) < 0 {
				e.ID = value[:len(value):len(value)]
			}
		case "event":
			e.Type = value[:len(value):len(value)]
		case "data":
			switch {
			case e.Data == nil:
				e.Data = value[:len(value):len(value)]
			case !joined:
				*scratch = append(append(append((*scratch)[:0], e.Data...), '\n'), value...)
				e.Data, joined = *scratch, true
			default:
				*scratch = append(append(*scratch, '\n'), value...)
				e.Data = *scratch
			}
		case "retry":
			if ms, ok := ParseCursor(value); ok && ms <= 1<<31 {
				e.Retry = time.Duration(ms) * time.Millisecond
			}
		}
	}
	return e
}

// ErrEventTooLarge is returned by EventReader.Next for an event larger than its limit.
var ErrEventTooLarge = errors.New("wire: SSE event too large")

// EventReader reads the events of an SSE stream from an io.Reader.
type EventReader struct {
	r       *bufio.Reader
	max     int
	block   []byte
	scratch []byte
}

// NewEventReader returns a reader of the events in r, each at most maxEvent bytes.
func NewEventReader(r io.Reader, maxEvent int) *EventReader {
	return &EventReader{r: bufio.NewReaderSize(r, 4096), max: maxEvent}
}

// Next returns the next event. Events without data are returned too, since their retry field counts: skip them
// when Data is empty. The slices are valid until the next call. At the end of the stream it returns io.EOF, or
// io.ErrUnexpectedEOF if the stream ends inside an event (which is then dropped, as the SSE specification says).
func (er *EventReader) Next() (Event, error) {
	er.block = er.block[:0]
	lineAt := 0
	for {
		chunk, err := er.r.ReadSlice('\n')
		if len(er.block)+len(chunk) > er.max {
			return Event{}, fmt.Errorf("%w: over %d bytes", ErrEventTooLarge, er.max)
		}
		er.block = append(er.block, chunk...)
		switch {
		case err == bufio.ErrBufferFull:
			continue
		case err == io.EOF && len(er.block) == 0:
			return Event{}, io.EOF
		case err == io.EOF:
			return Event{}, io.ErrUnexpectedEOF
		case err != nil:
			return Event{}, err
		}
		if line := er.block[lineAt:]; len(line) == 1 || len(line) == 2 && line[0] == '\r' {
			if lineAt == 0 { // a blank line with nothing before it ends no event
				er.block = er.block[:0]
				continue
			}
			return ParseEvent(er.block[:lineAt], &er.scratch), nil
		}
		lineAt = len(er.block)
	}
}
