package wire

import (
	"bytes"
	"encoding/json"
	"time"
)

// Field is a top-level member of a JSON object as Scan found it: its value as written, not decoded.
type Field struct {
	// Raw is the value as written: a string with its quotes, a number, an object…; nil if the member is absent.
	Raw []byte
}

// Present reports whether the object has the member.
func (f Field) Present() bool { return f.Raw != nil }

// Str returns the contents of a string value between its quotes, as written (escapes are not decoded), and whether
// the value is a string.
func (f Field) Str() ([]byte, bool) {
	if len(f.Raw) < 2 || f.Raw[0] != '"' {
		return nil, false
	}
	return f.Raw[1 : len(f.Raw)-1 : len(f.Raw)-1], true
}

// Unquote returns a string value: its contents, decoded into a new slice only if they hold escapes; nil if the
// value is not a string.
func (f Field) Unquote() []byte {
	s, ok := f.Str()
	if !ok || bytes.IndexByte(s, '\\') < 0 {
		return s
	}
	var v string
	if json.Unmarshal(f.Raw, &v) != nil {
		return nil
	}
	return []byte(v)
}

// Uint returns a value that is an unsigned integer, as written (no fraction, no exponent).
func (f Field) Uint() (uint64, bool) { return ParseCursor(f.Raw) }

// Payload holds the members of a payload that the protocol itself reads: every payload carries them
// (docs/protocol.md, Payloads).
type Payload struct {
	Topic Field // the topic it was published on
	Kind  Field // quote, score, …: the SSE event's name
	TS    Field // when it was published, RFC 3339
}

var payloadKeys = []string{"topic", "kind", "ts"}

// ScanPayload finds a payload's topic, kind and ts, stopping as soon as it has all three (Scan).
func ScanPayload(data []byte) (p Payload, ok bool) {
	var f [3]Field
	ok = Scan(data, payloadKeys, f[:])
	return Payload{Topic: f[0], Kind: f[1], TS: f[2]}, ok
}

// CheckPayload finds a payload's topic, kind and ts as ScanPayload does, but walks the whole payload, and reports
// the first of them found a second time (duplicate, "" if none). The edge refuses such payloads: readers that take
// the first of duplicate members (Scan, to stop early) and readers that take the last (JSON decoders) would disagree
// on them. ok reports whether data is shaped as one object (Scan).
func CheckPayload(data []byte) (p Payload, duplicate string, ok bool) {
	var f [3]Field
	dup, ok := scan(data, payloadKeys, f[:], true)
	if dup >= 0 {
		duplicate = payloadKeys[dup]
	}
	return Payload{Topic: f[0], Kind: f[1], TS: f[2]}, duplicate, ok
}

// Scan finds members of the JSON object data by name without decoding it: fields[i] gets the member named keys[i],
// or stays zero. It looks at the top level only, stepping over strings and nested values, so neither a nested member
// of the same name nor the name inside a string is taken for it; a name spelt with escapes counts as the name it
// spells. Of duplicate members the first counts, and it stops as soon as it has found every key: a payload puts its
// topic and kind first, so reading them costs a few dozen bytes, whatever the payload's size. (The edge refuses
// payloads with duplicates of the members it reads: CheckPayload.) Nothing is allocated unless a name holds escapes.
//
// It reports false when data is not shaped as one object as far as it read, and fields then hold what was found
// before the fault. It does not validate the values it steps over: json.Valid does.
func Scan(data []byte, keys []string, fields []Field) bool {
	_, ok := scan(data, keys, fields, false)
	return ok
}

// scan is Scan; with all it walks the whole object and returns the index of the first key found twice (else -1).
func scan(data []byte, keys []string, fields []Field, all bool) (dup int, ok bool) {
	clear(fields)
	dup = -1
	i := skipSpace(data, 0)
	if i >= len(data) || data[i] != '{' {
		return dup, false
	}
	i = skipSpace(data, i+1)
	if i < len(data) && data[i] == '}' {
		return dup, skipSpace(data, i+1) == len(data)
	}
	missing := len(keys)
	for {
		if i >= len(data) || data[i] != '"' {
			return dup, false
		}
		end, escaped := stringEnd(data, i)
		if end < 0 {
			return dup, false
		}
		key := data[i:end]
		if i = skipSpace(data, end); i >= len(data) || data[i] != ':' {
			return dup, false
		}
		i = skipSpace(data, i+1)
		vend := valueEnd(data, i)
		if vend < 0 {
			return dup, false
		}
		if k := keyIndex(keys, key, escaped); k < 0 {
		} else if fields[k].Raw == nil {
			fields[k] = Field{Raw: data[i:vend:vend]}
			if missing--; missing == 0 && !all {
				return dup, true
			}
		} else if dup < 0 {
			dup = k
		}
		if i = skipSpace(data, vend); i >= len(data) {
			return dup, false
		}
		switch data[i] {
		case ',':
			i = skipSpace(data, i+1)
		case '}':
			return dup, skipSpace(data, i+1) == len(data)
		default:
			return dup, false
		}
	}
}

// keyIndex returns the index in keys of the quoted member name key, or -1. escaped says the name may hold escapes.
func keyIndex(keys []string, key []byte, escaped bool) int {
	name := key[1 : len(key)-1]
	for k, want := range keys {
		if string(name) == want {
			return k
		}
	}
	if !escaped || bytes.IndexByte(name, '\\') < 0 {
		return -1
	}
	var s string // spelt with escapes: compare what it spells
	if json.Unmarshal(key, &s) != nil {
		return -1
	}
	for k, want := range keys {
		if s == want {
			return k
		}
	}
	return -1
}

// stringEnd returns the index after the JSON string whose opening quote is data[i], or -1 if it does not end, and
// whether the string may hold escapes (false: it holds none). Short strings (names, most values) are walked; past 16
// bytes it looks for quotes with bytes.IndexByte, fast over long strings: a quote ends the string unless an odd
// number of backslashes precedes it.
func stringEnd(data []byte, i int) (end int, escaped bool) {
	j := i + 1
	for stop := min(len(data), j+16); j < stop; j++ {
		switch data[j] {
		case '"':
			return j + 1, escaped
		case '\\':
			escaped = true
			j++
		}
	}
	if j >= len(data) {
		return -1, true
	}
	start := j // not inside an escape: the walk stepped over any
	for {
		k := bytes.IndexByte(data[j:], '"')
		if k < 0 {
			return -1, true
		}
		q := j + k
		n := 0
		for q-1-n >= start && data[q-1-n] == '\\' {
			n++
		}
		if n%2 == 0 {
			return q + 1, true
		}
		j = q + 1
	}
}

// valueEnd returns the index after the JSON value that starts at data[i], or -1. Containers are stepped over by
// their brackets, skipping strings; scalars end at the next delimiter.
func valueEnd(data []byte, i int) int {
	if i >= len(data) {
		return -1
	}
	switch data[i] {
	case '"':
		end, _ := stringEnd(data, i)
		return end
	case '{', '[':
		depth := 0
		for j := i; j < len(data); j++ {
			switch data[j] {
			case '"':
				e, _ := stringEnd(data, j)
				if e < 0 {
					return -1
				}
				j = e - 1
			case '{', '[':
				depth++
			case '}', ']':
				if depth--; depth == 0 {
					return j + 1
				}
			}
		}
		return -1
	case ',', '}', ']', ':':
		return -1
	}
	j := i
	for j < len(data) {
		switch data[j] {
		case ',', '}', ']', ' ', '\t', '\n', '\r':
			return j
		}
		j++
	}
	return j
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// ParseTime reads a payload's ts, an RFC 3339 time, as Unix nanoseconds. The form the feeds write, in UTC
// ("2026-11-25T19:30:49.545229729Z"), is read without time.Parse and without allocating; any other goes through
// time.Parse. Times outside the years 1678 to 2261, which nanoseconds since 1970 cannot hold, are refused.
func ParseTime(b []byte) (int64, bool) {
	if len(b) < 20 || b[4] != '-' || b[7] != '-' || b[10] != 'T' || b[13] != ':' || b[16] != ':' ||
		b[len(b)-1] != 'Z' {
		return parseTimeSlow(b)
	}
	y, ok1 := decimal(b[0:4])
	mo, ok2 := decimal(b[5:7])
	d, ok3 := decimal(b[8:10])
	h, ok4 := decimal(b[11:13])
	mi, ok5 := decimal(b[14:16])
	s, ok6 := decimal(b[17:19])
	if !(ok1 && ok2 && ok3 && ok4 && ok5 && ok6) || y <= 1678 || y >= 2262 || mo < 1 || mo > 12 || d < 1 ||
		d > daysIn(mo, y) || h > 23 || mi > 59 || s > 59 {
		return parseTimeSlow(b)
	}
	var frac int64
	if rest := b[19 : len(b)-1]; len(rest) > 0 {
		if rest[0] != '.' || len(rest) < 2 || len(rest) > 10 {
			return parseTimeSlow(b)
		}
		f, ok := decimal(rest[1:])
		if !ok {
			return parseTimeSlow(b)
		}
		for range 10 - len(rest) {
			f *= 10
		}
		frac = f
	}
	// Days from the civil date (H. Hinnant's algorithm).
	if mo <= 2 {
		y--
	}
	era := y / 400
	yoe := y - era*400
	m := (mo + 9) % 12
	doy := (153*m+2)/5 + d - 1
	doe := yoe*365 + yoe/4 - yoe/100 + doy
	days := era*146097 + doe - 719468
	return ((days*24+h)*60+mi)*60*1e9 + s*1e9 + frac, true
}

func parseTimeSlow(b []byte) (int64, bool) {
	t, err := time.Parse(time.RFC3339Nano, string(b))
	if err != nil || t.Year() <= 1678 || t.Year() >= 2262 {
		return 0, false
	}
	return t.UnixNano(), true
}

func daysIn(month, year int64) int64 {
	if month == 2 && year%4 == 0 && (year%100 != 0 || year%400 == 0) {
		return 29
	}
	return int64([...]byte{31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31}[month-1])
}

func decimal(s []byte) (int64, bool) {
	var n int64
	for _, c := range s {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}
