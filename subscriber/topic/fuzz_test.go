package topic

import (
	"strings"
	"testing"
)

// The fuzzers check the grammar's promises on any input: what validates is well-formed and public, and matching
// agrees with a plain reference implementation. Seeds are in testdata/fuzz; run longer with
// go test -run '^$' -fuzz FuzzValidatePattern ./subscriber/topic

func FuzzValidatePattern(f *testing.F) {
	for _, s := range []string{"market.AAPL", "market.*", "sports.>", "sports.nba.g-1", "$SYS.>", "_INBOX.x", ">",
		"market..X", "market.AAPL\n", "market.%24", "sports.*.>", "market.\u0391APL", " market.AAPL", "market.A*"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		err := ValidatePattern(p)
		if err == nil {
			checkWellFormed(t, p)
		} else if msg := err.Error(); len(msg) > 400 || strings.ContainsAny(msg, "\n\r") {
			t.Fatalf("error for %q is %d bytes or spans lines: %q", p, len(msg), msg)
		}
		if ValidateTopic(p) == nil && !IsLiteral(p) {
			t.Fatalf("ValidateTopic accepted the pattern %q", p)
		}
	})
}

// checkWellFormed fails unless p is what the grammar promises: a public root, ASCII without spaces or controls,
// whole tokens, wildcards only as whole tokens and '>' only last.
func checkWellFormed(t *testing.T, p string) {
	t.Helper()
	if len(p) > MaxLen {
		t.Fatalf("%q: %d bytes accepted", p, len(p))
	}
	tokens := strings.Split(p, ".")
	if tokens[0] != "market" && tokens[0] != "sports" {
		t.Fatalf("%q accepted with root %q", p, tokens[0])
	}
	for i, tok := range tokens {
		switch {
		case tok == "":
			t.Fatalf("%q: empty token accepted", p)
		case tok == ">" && i != len(tokens)-1:
			t.Fatalf("%q: '>' accepted before the end", p)
		case tok != "*" && tok != ">" && strings.ContainsAny(tok, "*>"):
			t.Fatalf("%q: wildcard inside a token accepted", p)
		}
		for _, c := range []byte(tok) {
			if c <= ' ' || c >= 0x7f || c == '$' || c == '%' {
				t.Fatalf("%q: byte %q accepted", p, c)
			}
		}
	}
}

// referenceMatch is the obvious implementation Match must agree with.
func referenceMatch(p, t string) bool {
	pt, tt := strings.Split(p, "."), strings.Split(t, ".")
	for i, tok := range pt {
		if tok == ">" {
			return len(tt) > i
		}
		if i >= len(tt) || tok != "*" && tok != tt[i] {
			return false
		}
	}
	return len(pt) == len(tt)
}

func FuzzMatch(f *testing.F) {
	f.Add("market.*", "market.AAPL", "market.AAPL")
	f.Add("sports.>", "sports.nba.g-1", "sports.*.g-1")
	f.Add("sports.nba.*", "sports.nhl.g-1", "sports.>")
	f.Fuzz(func(t *testing.T, p, topic, q string) {
		if ValidatePattern(p) != nil || ValidateTopic(topic) != nil {
			return
		}
		got := Match(p, topic)
		if want := referenceMatch(p, topic); got != want {
			t.Fatalf("Match(%q, %q) = %v, reference says %v", p, topic, got, want)
		}
		if ValidatePattern(q) != nil {
			return
		}
		if Covers(p, q) && Match(q, topic) && !got {
			t.Fatalf("Covers(%q, %q) but %q matches only the second", p, q, topic)
		}
		if got && Match(q, topic) && !Overlap(p, q) {
			t.Fatalf("%q matches both %q and %q, yet Overlap says no", topic, p, q)
		}
	})
}
