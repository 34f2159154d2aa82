package subscriber

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/livepush/livepush/subscriber/wire"
)

// Update is one update as the edge delivered it.
type Update struct {
	Topic  string          // the concrete topic, as "market.AAPL" (over SSE, the payload's "topic" field)
	Cursor uint64          // its position in the stream: resuming after it delivers what came next
	Kind   string          // the payload's kind: "quote", "score", …
	Data   json.RawMessage // the payload, byte for byte as the edge sent it; the handler may keep it
}

var topicAndKind = []string{"topic", "kind"}

// peek returns a payload's topic and kind ("update" if it has none), reading no further than it must: the payloads
// put them first.
func peek(data []byte) (topic, kind []byte) {
	var f [2]wire.Field
	wire.Scan(data, topicAndKind, f[:])
	if kind = f[1].Unquote(); len(kind) == 0 {
		kind = []byte(wire.EventUpdate)
	}
	return f[0].Unquote(), kind
}

// parseUpdateLine reads an update line in the form the edge writes without a JSON decoder (wire.ParseUpdateLine):
// it is the line a subscriber sees most. ok is false for anything else, which then goes through encoding/json.
func parseUpdateLine(line []byte) (u Update, ok bool) {
	topic, cursor, data, ok := wire.ParseUpdateLine(line)
	if !ok {
		return u, false
	}
	_, kind := peek(data)
	return Update{Topic: string(topic), Cursor: cursor, Kind: string(kind), Data: data}, true
}

// updateOf checks an update message decoded by encoding/json.
func updateOf(m wire.Message) (Update, error) {
	cursor, ok := wire.ParseCursor([]byte(m.Cursor))
	if !ok {
		return Update{}, fmt.Errorf("cursor %q is not a cursor", m.Cursor)
	}
	if len(m.Data) == 0 || m.Data[0] != '{' {
		return Update{}, errors.New("data is not a JSON object")
	}
	_, kind := peek(m.Data)
	return Update{Topic: m.Topic, Cursor: cursor, Kind: string(kind), Data: m.Data}, nil
}
