package push

import (
	"bytes"
	"encoding/json"
	"errors"
	"strconv"
	"time"

	sse "github.com/tmaxmax/go-sse"
)

// ErrBadPayload is returned by NewUpdate for a payload that is not a JSON object.
var ErrBadPayload = errors.New("push: payload is not a JSON object")

// Update is one outgoing message: a stream update (topic, cursor, payload as the producer wrote it) or, with an
// empty Topic, a control message of one transport (a WebSocket reply, a final SSE event).
//
// Each transport's encoding is made once, when the update enters the edge, and shared by every subscriber: the hot
// path only copies bytes.
type Update struct {
	Topic     string
	Cursor    uint64
	Kind      string
	Data      []byte    // the payload, a JSON object
	Recv      time.Time // when the edge received it
	Published time.Time // the payload's "ts", if it has one: for latency metrics

	sse  []byte // an SSE event: "id: 42\nevent: quote\ndata: {...}\n\n"
	json []byte // one line of JSON: {"type":"update","topic":"…","cursor":"42","data":{…}}\n
}

// NewUpdate prepares an update for delivery. The payload must be a JSON object; one spread over several lines is
// compacted, because a WebSocket frame carries one message per line.
func NewUpdate(topic string, cursor uint64, data []byte, recv time.Time) (*Update, error) {
	data = bytes.TrimSpace(data)
	if len(data) == 0 || data[0] != '{' || !json.Valid(data) {
		return nil, ErrBadPayload
	}
	if bytes.ContainsAny(data, "\r\n") {
		var buf bytes.Buffer
		if err := json.Compact(&buf, data); err != nil {
			return nil, ErrBadPayload
		}
		data = buf.Bytes()
	}
	kind, ts := topLevelStrings(data, `"kind"`, `"ts"`)
	u := &Update{Topic: topic, Cursor: cursor, Kind: kindName(kind), Data: data, Recv: recv}
	if ts != nil {
		u.Published, _ = time.Parse(time.RFC3339Nano, string(ts))
	}
	id := strconv.FormatUint(cursor, 10)

	msg := sse.Message{ID: sse.ID(id), Type: sse.Type(u.Kind)}
	msg.AppendData(string(data))
	u.sse, _ = msg.MarshalText() // writing to a bytes.Buffer cannot fail

	j := make([]byte, 0, len(data)+len(topic)+len(id)+48)
	j = append(j, `{"type":"update","topic":"`...)
	j = append(j, topic...) // topics are validated ASCII with nothing to escape
	j = append(j, `","cursor":"`...)
	j = append(j, id...)
	j = append(j, `","data":`...)
	j = append(j, data...)
	u.json = append(j, "}\n"...)
	return u, nil
}

// newControl makes a control message from its JSON line and its SSE event; either may be nil when the message only
// exists on one transport.
func newControl(jsonLine, sseEvent []byte) *Update {
	return &Update{json: jsonLine, sse: sseEvent}
}

// JSON returns the update's line in the WebSocket and polling format, newline included. The caller must not modify it.
func (u *Update) JSON() []byte { return u.json }

// SSE returns the update as an SSE event. The caller must not modify it.
func (u *Update) SSE() []byte { return u.sse }

// payloadKind finds the top-level "kind" of a payload without decoding it: the edge forwards payloads, it does not
// parse them. It falls back to "update" when there is none or it is not a plain word, since it becomes an SSE event
// name.
func payloadKind(data []byte) string { return kindName(topLevelString(data, `"kind"`)) }

// kindName is the SSE event name for a payload's raw "kind" value.
func kindName(k []byte) string {
	if len(k) == 0 || len(k) > 32 {
		return "update"
	}
	for _, c := range k {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '.') {
			return "update"
		}
	}
	switch string(k) { // the common kinds without an allocation
	case "quote":
		return "quote"
	case "score":
		return "score"
	default:
		return string(k)
	}
}

// topLevelString returns the string value, not unescaped, of key (quoted, as in `"kind"`) at the top level of a
// JSON object, or nil.
func topLevelString(data []byte, key string) []byte {
	v, _ := topLevelStrings(data, key, "")
	return v
}

// topLevelStrings returns the string values, not unescaped, of keys a and b (quoted) at the top level of a JSON
// object, or nil for one that is absent or not a string. One pass that steps over strings and nested values, so
// neither a nested key of the same name nor the key's text inside a string is taken for it. Of duplicate keys the
// last counts, as for JSON decoders.
func topLevelStrings(data []byte, a, b string) (va, vb []byte) {
	depth, wantKey := 0, false
	for i := 0; i < len(data); i++ {
		switch data[i] {
		case '{':
			depth++
			wantKey = depth == 1
		case '[':
			depth++
		case '}', ']':
			depth--
		case ',':
			wantKey = depth == 1
		case '"':
			end := stringEnd(data, i)
			if end < 0 {
				return nil, nil
			}
			var found *[]byte
			if depth == 1 && wantKey {
				wantKey = false
				switch string(data[i : end+1]) {
				case a:
					found = &va
				case b:
					found = &vb
				}
			}
			if j := skipSpace(data, end+1); found != nil && j < len(data) && data[j] == ':' {
				*found = nil
				if j = skipSpace(data, j+1); j < len(data) && data[j] == '"' {
					e := stringEnd(data, j)
					if e < 0 {
						return nil, nil
					}
					*found, end = data[j+1:e], e
				}
			}
			i = end
		}
	}
	return va, vb
}

// stringEnd returns the index of the quote that ends the JSON string starting at data[start], or -1.
func stringEnd(data []byte, start int) int {
	for i := start + 1; i < len(data); i++ {
		switch data[i] {
		case '\\':
			i++
		case '"':
			return i
		}
	}
	return -1
}

func skipSpace(data []byte, i int) int {
	for i < len(data) && (data[i] == ' ' || data[i] == '\t' || data[i] == '\n' || data[i] == '\r') {
		i++
	}
	return i
}
