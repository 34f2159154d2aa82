package push

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/livepush/livepush/subscriber/wire"
	"github.com/tmaxmax/go-sse"
)

// ErrRejected is wrapped by every error of Contract.Update: the message breaks the producer contract and reaches
// nobody. Its Reason says why.
var ErrRejected = errors.New("push: stream message rejected")

// Rejection reasons: the reason label of livepush_stream_dropped_total and of the edge's log line.
const (
	RejectNotObject     = "not_json_object"  // not one valid JSON object
	RejectInvalidUTF8   = "invalid_utf8"     // browsers must fail a WebSocket that carries it
	RejectTooLarge      = "too_large"        // over Contract.MaxPayload
	RejectTopicMismatch = "topic_mismatch"   // the payload's "topic" is not the subject it was published on
	RejectDuplicate     = "duplicate_member" // "topic", "kind" or "ts" more than once: readers would disagree on it
	RejectBadSubject    = "bad_subject"      // a subject outside the topic grammar
	RejectTooManyTopics = "too_many_topics"  // a new topic when the edge's cache holds HubOptions.MaxTopics
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
var ReservedEvents = []string{wire.EventClose, wire.EventReset, wire.EventError, wire.EventConflated, "message", "open",
	wire.EventUpdate}

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
// object of valid UTF-8 within MaxPayload, with at most one top-level "topic", "kind" and "ts" each (clients read
// the first, JSON decoders the last). Its "topic", if it has one, must be the subject it came on (topic, validated by
// the caller); one without gets the subject's added in front, so that every transport labels it alike. A payload spread over several lines is compacted, because a WebSocket frame carries one message per
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
	top, duplicate, _ := wire.CheckPayload(data) // an object: json.Valid said so
	// Values are compared decoded, as clients read them: "market.\u0041APL" is market.AAPL.
	switch {
	case duplicate != "":
		return nil, reject(RejectDuplicate, "%q appears more than once at its top level", duplicate)
	case !top.Topic.Present():
		data = withTopic(data, topic)
	case string(top.Topic.Unquote()) != topic: // a value that is no string unquotes to nothing
		return nil, reject(RejectTopicMismatch, "its topic %s is not the subject %s", truncate(string(top.Topic.Raw), 140), topic)
	}
	u := &Update{Topic: topic, Cursor: cursor, Kind: c.eventName(top.Kind.Unquote()), Data: data, Recv: recv}
	if ts, ok := top.TS.Str(); ok {
		u.Published = plausibleTime(ts, recv)
	}
	// Both encodings share one allocation.
	n := wire.UpdateEventSize(cursor, u.Kind, data)
	b := wire.AppendUpdateEvent(make([]byte, 0, n+wire.UpdateLineSize(topic, cursor, data)+1), cursor, u.Kind, data)
	u.sse = b[:n:n]
	u.json = append(wire.AppendUpdateLine(b[n:], topic, cursor, data), '\n')
	return u, nil
}

// eventName is the SSE event name for a payload's kind: the kind itself if the contract lists it, else "update".
func (c Contract) eventName(kind []byte) string {
	for _, k := range c.Kinds {
		if string(kind) == k {
			return k
		}
	}
	return wire.EventUpdate
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
	ns, ok := wire.ParseTime(ts)
	t := time.Unix(0, ns)
	if !ok || t.After(recv.Add(time.Minute)) || t.Before(recv.Add(-24*time.Hour)) {
		return time.Time{}
	}
	return t
}

// newControl makes a control message from its JSON line and its SSE event; either may be nil when the message only
// exists on one transport.
func newControl(jsonLine, sseEvent []byte) *Update {
	return &Update{json: jsonLine, sse: sseEvent}
}

// controlEvent makes a control message of m for every transport: its JSON line, and the SSE event named name with
// the same JSON as data.
func controlEvent(name string, m wire.Message) *Update {
	line, _ := wire.MarshalLine(m)
	ev := sse.Message{Type: sse.Type(name)}
	ev.AppendData(string(line[:len(line)-1]))
	text, _ := ev.MarshalText()
	return newControl(line, text)
}

// memSize is the memory an update holds: its payload, its two encodings and the struct.
func (u *Update) memSize() int { return len(u.Data) + len(u.sse) + len(u.json) + 160 }

// JSON returns the update's line in the WebSocket and polling format, newline included. The caller must not modify it.
func (u *Update) JSON() []byte { return u.json }

// SSE returns the update as an SSE event. The caller must not modify it.
func (u *Update) SSE() []byte { return u.sse }
