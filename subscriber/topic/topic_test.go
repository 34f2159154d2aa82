package topic

import (
	"errors"
	"strings"
	"testing"
)

func TestValidatePattern(t *testing.T) {
	good := []string{
		"market.AAPL", "market.BRK-B", "market.*", "market.>",
		"sports.>", "sports.nba.*", "sports.nba.g-0142", "sports.*.g-1", "sports.*.*", "sports.epl.>",
	}
	for _, p := range good {
		if err := ValidatePattern(p); err != nil {
			t.Errorf("ValidatePattern(%q) = %v, want nil", p, err)
		}
	}
	bad := map[string]string{
		"":                        "empty",
		">":                       "public roots",
		"*":                       "public roots",
		"$SYS.>":                  "public roots",
		"$JS.API.>":               "public roots",
		"_INBOX.x":                "public roots",
		"*.AAPL":                  "public roots",
		"weather.>":               "public roots",
		"market":                  "needs more",
		"market.":                 "needs more",
		"market..X":               "empty token",
		"market.X.":               "empty token",
		"market.AAPL.X":           "token(s) after the root",
		"market.AAPL.>":           "more tokens",
		"market.aapl":             "upper case",
		"market.>.X":              "last token",
		"market.AA*":              "whole token",
		"market.A>":               "whole token",
		"sports.nba":              "token(s) after the root",
		"market.AAPL\n":           "control",
		"market.AA PL":            "space",
		"market.AAPL\x00":         "control",
		"market.\u0391APL":        "non-ASCII", // Greek capital alpha, looks like A
		"market.%41APL":           "letters, digits",
		"sports.nba/../$SYS":      "letters, digits",
		strings.Repeat("x", 1024): "longer than",
	}
	for p, want := range bad {
		err := ValidatePattern(p)
		if err == nil {
			t.Errorf("ValidatePattern(%q) = nil, want error containing %q", p, want)
			continue
		}
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("ValidatePattern(%q) = %v, does not wrap ErrInvalid", p, err)
		}
		if !strings.Contains(err.Error(), want) {
			t.Errorf("ValidatePattern(%q) = %q, want it to say %q", p, err, want)
		}
		if len(err.Error()) > 300 {
			t.Errorf("ValidatePattern(%q): error is %d bytes long; it should not echo the whole input", p[:10], len(err.Error()))
		}
	}
}

func TestValidateTopicRefusesWildcards(t *testing.T) {
	for _, s := range []string{"market.*", "sports.>", "sports.nba.*"} {
		if err := ValidateTopic(s); err == nil {
			t.Errorf("ValidateTopic(%q) = nil, want an error", s)
		}
	}
	if err := ValidateTopic("sports.nhl.g-0001"); err != nil {
		t.Errorf("ValidateTopic: %v", err)
	}
}

func TestMatch(t *testing.T) {
	cases := []struct {
		p, t string
		want bool
	}{
		{"market.AAPL", "market.AAPL", true},
		{"market.AAPL", "market.AAP", false},
		{"market.AAP", "market.AAPL", false},
		{"market.*", "market.AAPL", true},
		{"market.*", "sports.nba.g-1", false},
		{"market.>", "market.AAPL", true},
		{"sports.>", "sports.nba.g-1", true},
		{"sports.nba.*", "sports.nba.g-1", true},
		{"sports.nba.*", "sports.nhl.g-1", false},
		{"sports.*.g-1", "sports.nhl.g-1", true},
		{"sports.*", "sports.nba.g-1", false},
		{"sports.nba.g-1", "sports.nba", false},
	}
	for _, c := range cases {
		if got := Match(c.p, c.t); got != c.want {
			t.Errorf("Match(%q, %q) = %v, want %v", c.p, c.t, got, c.want)
		}
	}
}

func BenchmarkMatch(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		Match("sports.*.g-0142", "sports.nba.g-0142")
		Match("market.*", "market.AAPL")
	}
}
