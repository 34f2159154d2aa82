// Package wire is the Livepush wire protocol, in one place for the edge that writes it and the clients that read
// it: the SSE events, the JSON lines of the WebSocket and of polling answers, the control messages, the WebSocket
// frame headers, and the few members of a payload the protocol itself reads (topic, kind, ts). docs/protocol.md
// describes the protocol; this package is how the Go code speaks it.
//
// The functions on the path of every update append to a caller's buffer or return slices of their input, and
// allocate nothing: the edge encodes each update once for all its subscribers, and a load generator reads millions
// of them. Control messages, which are rare, go through encoding/json.
package wire

import (
	"bytes"
	"encoding/json"
	"math"
	"strconv"
)

// The types of the JSON messages of the WebSocket protocol.
const (
	// From a client.
	TypeSubscribe   = "subscribe"
	TypeUnsubscribe = "unsubscribe"
	TypePing        = "ping"
	TypeAuth        = "auth"
	// From the edge.
	TypeSubscribed    = "subscribed"
	TypeUnsubscribed  = "unsubscribed"
	TypePong          = "pong"
	TypeAuthenticated = "authenticated"
	TypeUpdate        = "update"
	TypeReset         = "reset"
	TypeError         = "error"
	TypeConflated     = "conflated" // updates superseded by newer ones on the same topics were skipped: Skipped says how many
)

// Request is a control message from a client: subscribe, unsubscribe, ping or auth.
type Request struct {
	Type    string          `json:"type"`
	ID      json.RawMessage `json:"id,omitempty"` // a string or a number, echoed in the reply as sent
	Topics  []string        `json:"topics,omitempty"`
	Since   json.RawMessage `json:"since,omitempty"` // a cursor: a string or a number
	MaxRate *float64        `json:"maxRate,omitempty"`
	Token   string          `json:"token,omitempty"`
}

// Message is any message from the edge on a WebSocket, and each update of a polling answer: a reply to a request
// (subscribed, unsubscribed, pong, authenticated, error), a reset, or an update. Updates are written by
// AppendUpdateLine and read by ParseUpdateLine; Message decodes everything else, updates in another form included.
type Message struct {
	Type    string          `json:"type"`
	ID      json.RawMessage `json:"id,omitempty"`
	Topics  []string        `json:"topics,omitempty"`
	Topic   string          `json:"topic,omitempty"`
	Cursor  string          `json:"cursor,omitempty"`
	Data    json.RawMessage `json:"data,omitempty"`
	Code    string          `json:"code,omitempty"`
	Message string          `json:"message,omitempty"`
	Reason  string          `json:"reason,omitempty"`
	Unknown []string        `json:"unknown,omitempty"` // in subscribed: topics named in full that have no update yet
	Skipped uint64          `json:"skipped,omitempty"` // in conflated: updates not sent since the previous notice
}

// IDString returns the message's id if it is a JSON string, else "".
func (m *Message) IDString() string {
	var id string
	if json.Unmarshal(m.ID, &id) != nil {
		return ""
	}
	return id
}

// Close is the data of the SSE event "close", with which the edge ends a stream on purpose.
type Close struct {
	Reason  string `json:"reason"`          // server_restart, slow_consumer, …
	Message string `json:"message"`         // the edge's words
	Retry   int64  `json:"retry,omitempty"` // the retry: field again, in milliseconds: EventSource hides that field
}

// ErrorBody is the body of every HTTP error answer of the edge, and the data of an SSE "error" event.
type ErrorBody struct {
	Error string `json:"error"` // what is wrong, in words a client can act on
	Code  string `json:"code"`  // invalid_topic, bad_cursor, unavailable, …
}

// PollAnswer is the body of GET /api/poll and /api/snapshot.
type PollAnswer struct {
	Cursor  string    `json:"cursor"` // the edge's position: where the next long poll resumes
	Updates []Message `json:"updates"`
	Reset   bool      `json:"reset,omitempty"` // the cursor asked for had expired: the updates are a fresh snapshot
	Reason  string    `json:"reason,omitempty"`
	Unknown []string  `json:"unknown,omitempty"`
}

// MarshalLine encodes v as one line of JSON, newline included, writing characters as they are: "sports.>", never
// "sports.\u003e" (the HTML escaping of encoding/json protects JSON pasted into a page, which no message is).
func MarshalLine(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// ParseCursor reads a cursor as the protocol writes it: 1 to 20 decimal digits that fit in a uint64.
func ParseCursor(b []byte) (uint64, bool) {
	if len(b) == 0 || len(b) > 20 {
		return 0, false
	}
	var n uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		d := uint64(c - '0')
		if n > (math.MaxUint64-d)/10 {
			return 0, false
		}
		n = n*10 + d
	}
	return n, true
}

// The constant parts of an update line.
const (
	linePrefix   = `{"type":"update","topic":"`
	lineCursor   = `","cursor":"`
	lineData     = `","data":`
	lineOverhead = len(linePrefix) + len(lineCursor) + len(lineData) + 1
)

// UpdateLineSize is the length of the line AppendUpdateLine writes.
func UpdateLineSize(topic string, cursor uint64, data []byte) int {
	return lineOverhead + len(topic) + digits(cursor) + len(data)
}

// AppendUpdateLine appends an update as the WebSocket and polling answers carry it, without a newline:
// {"type":"update","topic":"<topic>","cursor":"<cursor>","data":<payload>}. The topic is written as it is: a valid
// topic holds nothing JSON escapes.
func AppendUpdateLine(dst []byte, topic string, cursor uint64, data []byte) []byte {
	dst = append(dst, linePrefix...)
	dst = append(dst, topic...)
	dst = append(dst, lineCursor...)
	dst = strconv.AppendUint(dst, cursor, 10)
	dst = append(dst, lineData...)
	dst = append(dst, data...)
	return append(dst, '}')
}

// ParseUpdateLine reads an update line in exactly the form AppendUpdateLine writes, without a JSON decoder: it is
// the line a client reads most. topic and data point into line. ok is false for anything else, which a JSON
// decoder must read (into a Message).
func ParseUpdateLine(line []byte) (topic []byte, cursor uint64, data []byte, ok bool) {
	rest, found := bytes.CutPrefix(line, []byte(linePrefix))
	if !found {
		return nil, 0, nil, false
	}
	i := bytes.IndexByte(rest, '"')
	if i <= 0 || bytes.IndexByte(rest[:i], '\\') >= 0 {
		return nil, 0, nil, false
	}
	topic = rest[:i:i]
	rest, found = bytes.CutPrefix(rest[i:], []byte(lineCursor))
	if !found {
		return nil, 0, nil, false
	}
	i = bytes.IndexByte(rest, '"')
	if i <= 0 {
		return nil, 0, nil, false
	}
	if cursor, ok = ParseCursor(rest[:i]); !ok {
		return nil, 0, nil, false
	}
	rest, found = bytes.CutPrefix(rest[i:], []byte(lineData))
	if !found || len(rest) < 3 || rest[0] != '{' || rest[len(rest)-1] != '}' || rest[len(rest)-2] != '}' {
		return nil, 0, nil, false
	}
	return topic, cursor, rest[: len(rest)-1 : len(rest)-1], true
}

// digits is the number of decimal digits of n.
func digits(n uint64) int {
	d := 1
	for n >= 10 {
		n /= 10
		d++
	}
	return d
}
