package wire_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/livepush/livepush/subscriber/wire"
)

// The members the protocol reads come from the payload's top level, whatever a producer nests or quotes before
// them.
func TestScanPayload(t *testing.T) {
	for _, tc := range []struct {
		payload, topic, kind, ts string
		ok                       bool
	}{
		{`{"topic":"market.AAPL","kind":"quote","price":1,"ts":"2026-11-25T10:00:00Z"}`, "market.AAPL", "quote", "2026-11-25T10:00:00Z", true},
		{` { "kind" : "score" , "topic" : "sports.nba.g-1" } `, "sports.nba.g-1", "score", "", true},
		{`{"meta":{"kind":"meta","ts":"2001-01-01T00:00:00Z"},"kind":"score","ts":"2026-11-25T10:00:00Z"}`, "", "score", "2026-11-25T10:00:00Z", true},
		{`{"nested":{"topic":"no","kind":"no"},"list":[1,"]",{"a":"}"}],"n":-1.5e3,"t":true,"kind":"quote","topic":"market.X"}`, "market.X", "quote", "", true},
		{`{"note":"\"kind\":\"fake\"","list":[{"kind":"x"}],"kind":"halt"}`, "", "halt", "", true},
		{"{\n  \"kind\" : \"quote\" ,\n  \"ts\": \"2026-11-25T10:00:00Z\"\n}", "", "quote", "2026-11-25T10:00:00Z", true},
		{`{"x":"\\","kind":"quote"}`, "", "quote", "", true},
		{`{"x":"a\\\"b\\\\","kind":"quote"}`, "", "quote", "", true},
		{`{"long":"` + strings.Repeat(`ab\"c\\`, 20) + `","kind":"quote"}`, "", "quote", "", true},
		{`{"kinds":"quote"}`, "", "", "", true},
		{`{"kind":"has space"}`, "", "has space", "", true},
		{`{"kind":"quote","kind":"halt"}`, "", "quote", "", true},                   // the first of duplicates: CheckPayload refuses them
		{`{"\u006bind":"spelt","topic":"market.A"}`, "market.A", "spelt", "", true}, // a name spelt with escapes
		{`{"kind":7,"topic":null}`, "", "", "", true},
		{`{}`, "", "", "", true},
		{`{"kind":"quote`, "", "", "", false},
		{`{"topic":"market.A","kind":"unterminated}`, "market.A", "", "", false},
		{`{"topic":"market.A"`, "market.A", "", "", false},
		{`{"topic":"market.A"}{"kind":"x"}`, "market.A", "", "", false},
		{`{"topic":}`, "", "", "", false},
		{`["topic","kind"]`, "", "", "", false},
		{``, "", "", "", false},
	} {
		p, ok := wire.ScanPayload([]byte(tc.payload))
		topic, _ := p.Topic.Str()
		kind := p.Kind.Unquote()
		ts, _ := p.TS.Str()
		if string(topic) != tc.topic || string(kind) != tc.kind || string(ts) != tc.ts || ok != tc.ok {
			t.Errorf("ScanPayload(%s) = %q %q %q %v, want %q %q %q %v", tc.payload, topic, kind, ts, ok,
				tc.topic, tc.kind, tc.ts, tc.ok)
		}
	}
	p, _ := wire.ScanPayload([]byte(`{"kind":"k\u0041","topic":7}`))
	if s, _ := p.Kind.Str(); string(s) != `k\u0041` || string(p.Kind.Unquote()) != "kA" {
		t.Errorf("escaped kind: as written %q, value %q", s, p.Kind.Unquote())
	}
	if _, isString := p.Topic.Str(); isString || !p.Topic.Present() || string(p.Topic.Raw) != "7" {
		t.Errorf("topic 7: %+v", p.Topic)
	}
}

// Duplicates of the members the protocol reads are found wherever they are, however they are spelt.
func TestCheckPayloadFindsDuplicates(t *testing.T) {
	for payload, want := range map[string]string{
		`{"topic":"market.A","kind":"quote","ts":"x","pad":"` + strings.Repeat("y", 300) + `"}`: "",
		`{"topic":"market.A","kind":"quote","ts":"x","meta":{"topic":"market.B"}}`:              "",
		`{"topic":"market.A","kind":"quote","ts":"x","p":1,"topic":"market.B"}`:                 "topic",
		`{"kind":"quote","kind":"halt"}`:                                                        "kind",
		`{"topic":"market.A","\u0074opic":"market.B"}`:                                          "topic",
		`{"ts":1,"kind":"a","ts":2,"kind":"b"}`:                                                 "ts",
	} {
		_, dup, ok := wire.CheckPayload([]byte(payload))
		if !ok || dup != want {
			t.Errorf("CheckPayload(%s): duplicate %q, %v; want %q", payload, dup, ok, want)
		}
	}
}

func TestScanFindsAnyMember(t *testing.T) {
	data := []byte(`{"run":"r1","n":42,"pad":"` + strings.Repeat(`x\"`, 100) + `","ts":"2026-11-25T10:00:00Z","m":-1}`)
	var f [4]wire.Field
	if !wire.Scan(data, []string{"run", "n", "ts", "m"}, f[:]) {
		t.Fatal("not an object")
	}
	run, _ := f[0].Str()
	n, nOK := f[1].Uint()
	ts, _ := f[2].Str()
	_, mOK := f[3].Uint()
	if string(run) != "r1" || n != 42 || !nOK || string(ts) != "2026-11-25T10:00:00Z" || mOK {
		t.Fatalf("run %q, n %d %v, ts %q, m is a uint %v", run, n, nOK, ts, mOK)
	}
	if a := testing.AllocsPerRun(100, func() { wire.Scan(data, []string{"run", "n", "ts", "m"}, f[:]) }); a != 0 {
		t.Errorf("Scan allocates %v times", a)
	}
}

// FuzzScan checks CheckPayload and Scan against encoding/json: on every JSON object, they find what a decoder
// finds at the top level, as written, the first of duplicates, and report the duplicates; on anything else, they do
// not crash.
func FuzzScan(f *testing.F) {
	for _, s := range []string{
		`{"topic":"market.AAPL","kind":"quote","price":1,"ts":"2026-11-25T10:00:00Z"}`,
		`{"meta":{"kind":"meta"},"kind":"score","list":[1,"]",{"a":"}"}]}`,
		`{"note":"\"kind\":\"fake\"","kind":"halt","kind":"again"}`,
		`{"\u006bind":"x","topic":"\\"}`, ` { "ts" : 1e3 } `, `{"kind":"quote`, `[]`, `{"a":[[[[{}]]]],"ts":null}`,
	} {
		f.Add(s)
	}
	keys := []string{"topic", "kind", "ts"}
	f.Fuzz(func(t *testing.T, s string) {
		p, dup, ok := wire.CheckPayload([]byte(s))
		var first [3]wire.Field
		scanOK := wire.Scan([]byte(s), keys, first[:])
		if !json.Valid([]byte(s)) || !utf8.ValidString(s) {
			return
		}
		want, count, isObject := topLevel(s)
		if !isObject {
			return
		}
		if !ok || !scanOK {
			t.Fatalf("%q: not an object for CheckPayload (%v) or Scan (%v)", s, ok, scanOK)
		}
		wantDup := ""
		for i, k := range keys {
			got := []wire.Field{p.Topic, p.Kind, p.TS}[i]
			w, present := want[k]
			if present != got.Present() || string(w) != string(got.Raw) || string(first[i].Raw) != string(got.Raw) {
				t.Fatalf("%q: %s is %q to CheckPayload, %q to Scan; encoding/json's first: %q (present %v)", s, k,
					got.Raw, first[i].Raw, w, present)
			}
			if count[k] > 1 && wantDup == "" {
				wantDup = k
			}
		}
		if (dup == "") != (wantDup == "") || count[dup] < 2 && dup != "" {
			t.Fatalf("%q: duplicate %q, want one of those counted %v", s, dup, count)
		}
	})
}

// topLevel decodes the top-level members of a JSON object with encoding/json: the first value of each, as written,
// and how many times each name appears.
func topLevel(s string) (first map[string]json.RawMessage, count map[string]int, ok bool) {
	dec := json.NewDecoder(strings.NewReader(s))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, nil, false
	}
	first, count = map[string]json.RawMessage{}, map[string]int{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, nil, false
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, nil, false
		}
		name := tok.(string)
		if count[name]++; count[name] == 1 {
			first[name] = v
		}
	}
	return first, count, true
}

func TestParseTime(t *testing.T) {
	for _, s := range []string{
		"2026-11-25T19:30:49.545229729Z", "2026-11-25T19:30:49Z", "2026-11-25T19:30:49.5Z", "1970-01-01T00:00:00Z",
		"2000-02-29T23:59:59.999999999Z", "2100-03-01T00:00:00.000001Z", "2026-11-25T19:30:49.545+01:00",
	} {
		want, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			t.Fatal(err)
		}
		got, ok := wire.ParseTime([]byte(s))
		if !ok || got != want.UnixNano() {
			t.Errorf("ParseTime(%s) = %d, %v; want %d", s, got, ok, want.UnixNano())
		}
	}
	for _, s := range []string{"", "yesterday", "2026-13-25T19:30:49Z", "2026-11-25T19:30:49.Z", "2026-02-29T00:00:00Z",
		"2026-11-25T24:00:00Z", "9999-12-31T23:59:59Z", "1600-01-01T00:00:00Z", "2026-11-25 19:30:49Z"} {
		if ns, ok := wire.ParseTime([]byte(s)); ok {
			t.Errorf("ParseTime(%q) accepted: %v", s, time.Unix(0, ns).UTC())
		}
	}
	ts := []byte("2026-11-25T19:30:49.545229729Z")
	if a := testing.AllocsPerRun(100, func() { wire.ParseTime(ts) }); a != 0 {
		t.Errorf("ParseTime allocates %v times", a)
	}
}

// BenchmarkScanPayload is the scan of a quote for its topic, kind and ts.
func BenchmarkScanPayload(b *testing.B) {
	data := []byte(`{"topic":"market.AAPL","kind":"quote","symbol":"AAPL","price":231.52,"bid":231.5,"ask":231.54,` +
		`"open":229.8,"change":1.72,"changePct":0.75,"volume":1234567,"ts":"2026-11-25T19:30:49.545229729Z"}`)
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if p, ok := wire.ScanPayload(data); !ok || !p.TS.Present() {
			b.Fatal(p, ok)
		}
	}
}
