// Package topic defines the public topic grammar of Livepush: which topics exist, which subscription patterns a
// client may ask for, and how a pattern matches a topic.
//
// Topics are dot-separated tokens under a public root:
//
//	market.<SYMBOL>            SYMBOL: A-Z 0-9 _ -
//	sports.<league>.<match>    league and match: a-z A-Z 0-9 _ -
//
// A pattern is a topic in which a whole token may be "*" (exactly one token) or, as the last token, ">" (one or more
// tokens), as in NATS. The root must always be spelled out: that is what keeps a client away from internal NATS
// subjects such as $SYS.>, $JS.> or _INBOX.>. Validation works on bytes and admits only printable ASCII, so no
// percent-encoding, Unicode look-alike or whitespace trick can produce a different subject than the one checked.
package topic

import (
	"errors"
	"fmt"
	"strings"
)

// MaxLen is the longest topic or pattern accepted, in bytes.
const MaxLen = 128

// ErrInvalid is matched (errors.Is) by every validation error, so callers can tell bad input from other failures.
var ErrInvalid = errors.New("topic: invalid")

// Error is a validation error: which input and what is wrong with it, in words a client can act on.
type Error struct {
	Input  string
	Reason string
}

func (e *Error) Error() string { return "invalid topic " + quote(e.Input) + ": " + e.Reason }

// Is makes errors.Is(err, ErrInvalid) true.
func (e *Error) Is(target error) bool { return target == ErrInvalid }

// root describes the shape of the topics under one public root.
type root struct {
	name        string
	tokens      int  // tokens after the root
	upperTokens bool // tokens after the root are upper case (ticker symbols)
	example     string
}

var roots = []root{
	{name: "market", tokens: 1, upperTokens: true, example: "market.AAPL"},
	{name: "sports", tokens: 2, example: "sports.nba.g-0142"},
}

// Roots returns the public roots, in the order they are documented.
func Roots() []string {
	names := make([]string, len(roots))
	for i, r := range roots {
		names[i] = r.name
	}
	return names
}

func findRoot(name string) *root {
	for i := range roots {
		if roots[i].name == name {
			return &roots[i]
		}
	}
	return nil
}

func invalid(s, format string, args ...any) error {
	return &Error{Input: s, Reason: fmt.Sprintf(format, args...)}
}

// quote shows a rejected input safely: control characters escaped and long inputs cut, so an error message never
// echoes a kilobyte of attacker text into a log line or a response.
func quote(s string) string {
	const show = 40
	if len(s) > show {
		return fmt.Sprintf("%q… (%d bytes)", s[:show], len(s))
	}
	return fmt.Sprintf("%q", s)
}

// ValidatePattern reports whether p is a pattern a client may subscribe to. The error, wrapping ErrInvalid, says
// what is wrong in words a client can act on.
func ValidatePattern(p string) error { return validate(p, true) }

// ValidateTopic reports whether t is a concrete topic (no wildcards) that the edge will deliver.
func ValidateTopic(t string) error { return validate(t, false) }

func validate(s string, wildcards bool) error {
	if s == "" {
		return invalid(s, "empty")
	}
	if len(s) > MaxLen {
		return invalid(s, "longer than %d bytes", MaxLen)
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c >= 0x7f {
			return invalid(s, "contains a space, control or non-ASCII character at byte %d", i)
		}
	}
	rootName, rest, _ := strings.Cut(s, ".")
	r := findRoot(rootName)
	if r == nil {
		return invalid(s, "must start with one of the public roots %s", strings.Join(Roots(), ", "))
	}
	if rest == "" {
		return invalid(s, "needs more after %q: for example %s or %s.>", rootName+".", r.example, rootName)
	}
	tokens := strings.Split(rest, ".")
	for i, tok := range tokens {
		switch {
		case tok == "":
			return invalid(s, "has an empty token")
		case tok == ">" && wildcards:
			if i != len(tokens)-1 {
				return invalid(s, "'>' may only be the last token")
			}
			if i >= r.tokens {
				return invalid(s, "has more tokens than %s topics, as in %s", rootName, r.example)
			}
			return nil
		case tok == "*" && wildcards:
			// a whole-token wildcard: fine
		default:
			if err := checkToken(s, tok, r); err != nil {
				return err
			}
		}
	}
	if len(tokens) != r.tokens {
		return invalid(s, "%s topics have %d token(s) after the root, as in %s", rootName, r.tokens, r.example)
	}
	return nil
}

func checkToken(s, tok string, r *root) error {
	for i := 0; i < len(tok); i++ {
		c := tok[i]
		switch {
		case c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '_', c == '-':
		case c >= 'a' && c <= 'z' && !r.upperTokens:
		case c >= 'a' && c <= 'z':
			return invalid(s, "%s symbols are upper case, as in %s", r.name, r.example)
		case c == '*' || c == '>':
			return invalid(s, "wildcards must be a whole token ('*' or a final '>')")
		default:
			return invalid(s, "token %q may only contain letters, digits, '_' and '-'", tok)
		}
	}
	return nil
}

// Match reports whether topic t matches pattern p. Both are assumed valid; Match does not allocate.
func Match(p, t string) bool {
	for {
		pTok, pRest, pMore := strings.Cut(p, ".")
		tTok, tRest, tMore := strings.Cut(t, ".")
		switch {
		case pTok == ">":
			return true
		case pTok != "*" && pTok != tTok:
			return false
		case !pMore || !tMore:
			return pMore == tMore
		}
		p, t = pRest, tRest
	}
}

// IsLiteral reports whether p contains no wildcard, so it names exactly one topic.
func IsLiteral(p string) bool {
	return !strings.ContainsAny(p, "*>")
}

// Overlap reports whether some topic matches both patterns a and b.
func Overlap(a, b string) bool {
	for {
		aTok, aRest, aMore := strings.Cut(a, ".")
		bTok, bRest, bMore := strings.Cut(b, ".")
		switch {
		case aTok == ">" || bTok == ">":
			return true
		case aTok != "*" && bTok != "*" && aTok != bTok:
			return false
		case !aMore || !bMore:
			return aMore == bMore
		}
		a, b = aRest, bRest
	}
}

// Covers reports whether every topic matching pattern b also matches pattern a.
func Covers(a, b string) bool {
	for {
		aTok, aRest, aMore := strings.Cut(a, ".")
		bTok, bRest, bMore := strings.Cut(b, ".")
		switch {
		case aTok == ">":
			return true
		case bTok == ">" || aTok != "*" && aTok != bTok:
			return false
		case !aMore || !bMore:
			return aMore == bMore
		}
		a, b = aRest, bRest
	}
}
