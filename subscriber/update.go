package subscriber

import (
	"bytes"
	"encoding/json"
	"math"
)

// Update is one update as the edge delivered it.
type Update struct {
	Topic  string          // the concrete topic, as "market.AAPL" (over SSE, the payload's "topic" field)
	Cursor uint64          // its position in the stream: resuming after it delivers what came next
	Kind   string          // the payload's kind: "quote", "score", …
	Data   json.RawMessage // the payload, byte for byte as the edge sent it; the handler may keep it
}

// peek returns the top-level "topic" and "kind" strings of a JSON object without decoding the rest: the payloads
// put them first, so this reads a few dozen bytes whatever the payload's size. Missing or non-string fields give "".
func peek(data []byte) (topic, kind string) {
	t, k := peekBytes(data)
	return string(t), string(k)
}

// peekBytes is peek without allocating: the results point into data, unless a value holds escapes (then they are
// decoded into new slices). Missing or non-string fields give nil.
func peekBytes(data []byte) (topic, kind []byte) {
	i := skipSpace(data, 0)
	if i >= len(data) || data[i] != '{' {
		return nil, nil
	}
	i++
	for topic == nil || kind == nil {
		i = skipSpace(data, i)
		if i >= len(data) || data[i] != '"' {
			return topic, kind
		}
		keyEnd, _ := scanString(data, i)
		if keyEnd < 0 {
			return topic, kind
		}
		key := data[i+1 : keyEnd-1] // an escaped key never equals "topic" or "kind": no match, as it should
		i = skipSpace(data, keyEnd)
		if i >= len(data) || data[i] != ':' {
			return topic, kind
		}
		i = skipSpace(data, i+1)
		want := string(key) == "topic" || string(key) == "kind"
		var end int
		if want && i < len(data) && data[i] == '"' {
			var escaped bool
			end, escaped = scanString(data, i)
			if end < 0 {
				return topic, kind
			}
			v := data[i+1 : end-1 : end-1]
			if escaped {
				var str string
				if json.Unmarshal(data[i:end], &str) != nil {
					str = ""
				}
				v = []byte(str)
			}
			if string(key) == "topic" {
				topic = v
			} else {
				kind = v
			}
		} else if end = skipValue(data, i); end < 0 {
			return topic, kind
		}
		i = skipSpace(data, end)
		if i >= len(data) || data[i] != ',' {
			return topic, kind
		}
		i++
	}
	return topic, kind
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// scanString returns the index after the string that starts at b[i] (a quote), and whether it holds escapes;
// -1 if it does not end.
func scanString(b []byte, i int) (end int, escaped bool) {
	for j := i + 1; j < len(b); j++ {
		switch b[j] {
		case '\\':
			escaped = true
			j++
		case '"':
			return j + 1, escaped
		}
	}
	return -1, escaped
}

// skipValue returns the index after the JSON value that starts at b[i], or -1.
func skipValue(b []byte, i int) int {
	if i >= len(b) {
		return -1
	}
	switch b[i] {
	case '"':
		end, _ := scanString(b, i)
		return end
	case '{', '[':
		depth := 0
		for j := i; j < len(b); j++ {
			switch b[j] {
			case '"':
				end, _ := scanString(b, j)
				if end < 0 {
					return -1
				}
				j = end - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return j + 1
				}
			}
		}
		return -1
	default: // number, true, false, null
		j := i
		for j < len(b) && b[j] != ',' && b[j] != '}' && b[j] != ']' && b[j] != ' ' && b[j] != '\t' &&
			b[j] != '\n' && b[j] != '\r' {
			j++
		}
		if j == i {
			return -1
		}
		return j
	}
}

// wsMessage is any message an edge sends on a WebSocket, and an element of a poll answer's updates.
type wsMessage struct {
	Type    string          `json:"type"`
	ID      json.RawMessage `json:"id"`
	Topics  []string        `json:"topics"`
	Topic   string          `json:"topic"`
	Cursor  string          `json:"cursor"`
	Data    json.RawMessage `json:"data"`
	Code    string          `json:"code"`
	Message string          `json:"message"`
	Reason  string          `json:"reason"`
}

var (
	updatePrefix = []byte(`{"type":"update","topic":"`)
	cursorField  = []byte(`","cursor":"`)
	dataField    = []byte(`","data":`)
)

// parseUpdateLine reads an update line in the exact form the edge writes,
// {"type":"update","topic":"T","cursor":"N","data":{…}}, without a JSON decoder: it is the line a subscriber sees
// most, and the load generator reads millions of them. ok is false for anything else, which then goes through
// encoding/json.
func parseUpdateLine(line []byte) (u Update, ok bool) {
	topic, cursor, data, ok := parseUpdateBytes(line)
	if !ok {
		return u, false
	}
	_, kind := peekBytes(data)
	return Update{Topic: string(topic), Cursor: cursor, Kind: kindOr(string(kind)), Data: data}, true
}

// parseUpdateBytes is parseUpdateLine without allocating: topic and data point into line.
func parseUpdateBytes(line []byte) (topic []byte, cursor uint64, data []byte, ok bool) {
	rest, found := bytes.CutPrefix(line, updatePrefix)
	if !found {
		return nil, 0, nil, false
	}
	i := bytes.IndexByte(rest, '"')
	if i <= 0 || bytes.IndexByte(rest[:i], '\\') >= 0 {
		return nil, 0, nil, false
	}
	topic = rest[:i:i]
	rest, found = bytes.CutPrefix(rest[i:], cursorField)
	if !found {
		return nil, 0, nil, false
	}
	i = bytes.IndexByte(rest, '"')
	if i <= 0 {
		return nil, 0, nil, false
	}
	cursor, ok = parseDecimal(rest[:i])
	if !ok {
		return nil, 0, nil, false
	}
	rest, found = bytes.CutPrefix(rest[i:], dataField)
	if !found || len(rest) < 3 || rest[0] != '{' || rest[len(rest)-1] != '}' || rest[len(rest)-2] != '}' {
		return nil, 0, nil, false
	}
	return topic, cursor, rest[: len(rest)-1 : len(rest)-1], true
}

// parseDecimal reads a cursor: 1 to 20 decimal digits that fit in a uint64.
func parseDecimal(b []byte) (uint64, bool) {
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

func kindOr(kind string) string {
	if kind == "" {
		return "update"
	}
	return kind
}
