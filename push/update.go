package push

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	sse "github.com/tmaxmax/go-sse"
)

// ErrRejected is wrapped by every error of Contract.Update: the message breaks the producer contract and reaches
// nobody. Its Reason says why.
var ErrRejected = errors.New("push: stream message rejected")

// Rejection reasons: the reason label of livepush_stream_dropped_total and of the edge's log line.
const (
	RejectNotObject     = "not_json_object" // not one valid JSON object
	RejectInvalidUTF8   = "invalid_utf8"    // browsers must fail a WebSocket that carries it
	RejectTooLarge      = "too_large"       // over Contract.MaxPayload
	RejectTopicMismatch = "topic_mismatch"  // the payload's "topic" is not the subject it was published on
	RejectBadSubject    = "bad_subject"     // a subject outside the topic grammar
	RejectTooManyTopics = "too_many_topics" // a new topic when the edge's cache holds HubOptions.MaxTopics
)

// RejectedError says why a stream message was rejected.
type RejectedError struct {
	Reason string // one of the Reject… constants
	Detail string
}

func (e *RejectedError) Error() string {
	return "push: stream message rejected: " + e.Reason + ": " + e.Detail
}

// Unwrap makes errors.Is(err, ErrRejected) true.
func (e *RejectedError) Unwrap() error { return ErrRejected }

func reject(reason, format string, args ...any) error {
	return &RejectedError{Reason: reason, Detail: fmt.Sprintf(format, args...)}
}

// Contract is what the edge requires of a stream message before it reaches anyone: the producer contract of
// docs/protocol.md. Anyone who can publish to the stream's subjects is a producer, and none is trusted. The zero
// value is usable: each zero field takes the default it documents.
type Contract struct {
	// MaxPayload is the largest payload accepted, in bytes. Zero: 64 KiB.
	MaxPayload int
	// Kinds are the payload kinds that become SSE event names; any other kind is sent as "update". The edge's own
	// event names (ReservedEvents) cannot be among them. Zero: quote and score.
	Kinds []string
}

// ReservedEvents are the SSE event names only the edge sends: a producer's kind can never imitate them.
var ReservedEvents = []string{"close", "reset", "error", "message", "open", "update"}

// DefaultMaxPayload is Contract.MaxPayload's default.
const DefaultMaxPayload = 64 << 10

func (c Contract) withDefaults() Contract {
	if c.MaxPayload <= 0 {
		c.MaxPayload = DefaultMaxPayload
	}
	if len(c.Kinds) == 0 {
		c.Kinds = []string{"quote", "score"}
	}
	return c
}

// Validate reports a kind that cannot name an event: a reserved name, or one that is not a plain word.
func (c Contract) Validate() error {
	for _, k := range c.withDefaults().Kinds {
		if slices.Contains(ReservedEvents, k) {
			return fmt.Errorf("push: kind %q is an event name of the edge's own (%s)", k, strings.Join(ReservedEvents, ", "))
		}
		if !plainWord(k) {
			return fmt.Errorf("push: kind %q: use 1 to 32 letters, digits, '_' or '-'", k)
		}
	}
	return nil
}

func plainWord(k string) bool {
	if len(k) == 0 || len(k) > 32 {
		return false
	}
	for _, c := range []byte(k) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// defaultContract checks NewUpdate's payloads.
var defaultContract = Contract{}.withDefaults()

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

// NewUpdate checks and prepares a stream message under the default contract (Contract.Update).
func NewUpdate(topic string, cursor uint64, data []byte, recv time.Time) (*Update, error) {
	return defaultContract.Update(topic, cursor, data, recv)
}

// Update checks a stream message against the contract and prepares it for delivery. The payload must be one JSON
// object of valid UTF-8 within MaxPayload. Its top-level "topic", if it has one, must be the subject it came on
// (topic, validated by the caller); one without gets the subject's added in front, so that every transport labels
// it alike. A payload spread over several lines is compacted, because a WebSocket frame carries one message per
// line. Errors wrap ErrRejected (a *RejectedError).
func (c Contract) Update(topic string, cursor uint64, data []byte, recv time.Time) (*Update, error) {
	if c.MaxPayload <= 0 || len(c.Kinds) == 0 {
		c = c.withDefaults()
	}
	if len(data) > c.MaxPayload {
		return nil, reject(RejectTooLarge, "%d bytes, more than %d", len(data), c.MaxPayload)
	}
	data = bytes.TrimSpace(data)
	if len(data) == 0 || data[0] != '{' || !json.Valid(data) {
		return nil, reject(RejectNotObject, "a payload must be one JSON object")
	}
	if !utf8.Valid(data) {
		return nil, reject(RejectInvalidUTF8, "a payload must be valid UTF-8")
	}
	if bytes.ContainsAny(data, "\r\n") {
		var buf bytes.Buffer
		if err := json.Compact(&buf, data); err != nil {
			return nil, reject(RejectNotObject, "a payload must be one JSON object")
		}
		data = buf.Bytes()
	}
	top := scanTopLevel(data)
	switch {
	case !top.topic.present:
		data = withTopic(data, topic)
	case !top.topic.isString || string(top.topic.value) != topic:
		return nil, reject(RejectTopicMismatch, "its topic %s is not the subject %s", truncate(string(top.topic.raw), 140), topic)
	}
	u := &Update{Topic: topic, Cursor: cursor, Kind: c.eventName(top.kind.stringValue()), Data: data, Recv: recv}
	if ts := top.ts.stringValue(); ts != nil {
		u.Published = plausibleTime(ts, recv)
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

// eventName is the SSE event name for a payload's kind: the kind itself if the contract lists it, else "update".
func (c Contract) eventName(kind []byte) string {
	for _, k := range c.Kinds {
		if string(kind) == k {
			return k
		}
	}
	return "update"
}

// withTopic returns the object data with "topic":topic as its first member.
func withTopic(data []byte, topic string) []byte {
	out := make([]byte, 0, len(data)+len(topic)+12)
	out = append(out, `{"topic":"`...)
	out = append(out, topic...)
	out = append(out, '"')
	if rest := bytes.TrimSpace(data[1:]); len(rest) > 0 && rest[0] != '}' {
		out = append(out, ',')
	}
	return append(out, data[1:]...)
}

// plausibleTime parses a payload's ts for latency metrics. A ts that does not parse, lies in the future or is more
// than a day old is a producer's mistake, not a latency: it is ignored (zero) rather than let poison the metrics.
func plausibleTime(ts []byte, recv time.Time) time.Time {
	t, err := time.Parse(time.RFC3339Nano, string(ts))
	if err != nil || t.After(recv.Add(time.Minute)) || t.Before(recv.Add(-24*time.Hour)) {
		return time.Time{}
	}
	return t
}

// newControl makes a control message from its JSON line and its SSE event; either may be nil when the message only
// exists on one transport.
func newControl(jsonLine, sseEvent []byte) *Update {
	return &Update{json: jsonLine, sse: sseEvent}
}

// memSize is the memory an update holds: its payload, its two encodings and the struct.
func (u *Update) memSize() int { return len(u.Data) + len(u.sse) + len(u.json) + 160 }

// JSON returns the update's line in the WebSocket and polling format, newline included. The caller must not modify it.
func (u *Update) JSON() []byte { return u.json }

// SSE returns the update as an SSE event. The caller must not modify it.
func (u *Update) SSE() []byte { return u.sse }

// field is one top-level member of a payload as scanTopLevel found it.
type field struct {
	present  bool
	isString bool
	raw      []byte // the value as written, for messages
	value    []byte // a string's contents, not unescaped
}

// stringValue returns the field's string contents, or nil if it is absent or not a string.
func (f field) stringValue() []byte {
	if !f.isString {
		return nil
	}
	return f.value
}

// topLevel holds the members of a payload the edge looks at.
type topLevel struct{ topic, kind, ts field }

// scanTopLevel finds "topic", "kind" and "ts" at the top level of a valid JSON object without decoding it: the
// edge forwards payloads, it does not parse them. One pass that steps over strings and nested values, so neither a
// nested key of the same name nor the key's text inside a string is taken for it. Of duplicate keys the last
// counts, as for JSON decoders.
func scanTopLevel(data []byte) (top topLevel) {
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
				return topLevel{}
			}
			var found *field
			if depth == 1 && wantKey {
				wantKey = false
				switch string(data[i+1 : end]) {
				case "topic":
					found = &top.topic
				case "kind":
					found = &top.kind
				case "ts":
					found = &top.ts
				}
			}
			if j := skipSpace(data, end+1); found != nil && j < len(data) && data[j] == ':' {
				j = skipSpace(data, j+1)
				*found = field{present: true, raw: data[j:valueEnd(data, j)]}
				if j < len(data) && data[j] == '"' {
					e := stringEnd(data, j)
					if e < 0 {
						return topLevel{}
					}
					found.isString, found.value, found.raw, end = true, data[j+1:e], data[j:e+1], e
				}
			}
			i = end
		}
	}
	return top
}

// valueEnd returns where the scalar or container starting at data[i] ends, roughly: for messages only.
func valueEnd(data []byte, i int) int {
	for j := i; j < len(data); j++ {
		if data[j] == ',' || data[j] == '}' {
			return j
		}
	}
	return len(data)
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
