package push

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/livepush/livepush/subscriber/topic"
	"github.com/livepush/livepush/subscriber/wire"
)

func writeError(c *gin.Context, status int, code, message string) {
	writeJSON(c, status, wire.ErrorBody{Error: message, Code: code})
	c.Abort()
}

// writeJSON answers v as JSON. Unlike gin's c.JSON it writes <, > and & as they are: `sports.>` rather than
// `sports.\u003e`. The HTML escaping protects JSON pasted into a page, which no answer of the edge is; nosniff keeps
// browsers from reading it as anything but JSON.
func writeJSON(c *gin.Context, status int, v any) {
	c.Header("X-Content-Type-Options", "nosniff")
	c.Data(status, "application/json; charset=utf-8", marshalJSON(v))
}

// marshalJSON encodes v as wire.MarshalLine does: without HTML escaping, newline-terminated. v is made of plain
// types and valid raw JSON.
func marshalJSON(v any) []byte {
	b, err := wire.MarshalLine(v)
	if err != nil {
		panic("push: marshalJSON: " + err.Error()) // a programming error: the types are the edge's own
	}
	return b
}

// queryParams are the query parameters each route takes; token wherever a token may be sent.
var queryParams = map[string][]string{
	"/sse":          {"topic", "maxRate", "lastEventId", "token"},
	"/ws":           {"topic", "since", "maxRate", "frames", "token"},
	"/api/snapshot": {"topic", "token"},
	"/api/poll":     {"topic", "cursor", "timeout", "limit", "maxRate", "token"},
	"/api/topics":   {"token"},
	"/api/history":  {"topic", "last", "since", "interval", "token"},
}

// checkQuery answers 400 for a query parameter the route does not take: a misspelt one (maxrate=1, topics=, cursor
// on /sse) would otherwise be ignored without a word, and the client would wonder why it has no effect.
func (s *Server) checkQuery(c *gin.Context) {
	if c.Request.Method == http.MethodOptions {
		return // a CORS preflight carries the query of the request it asks about; that request is checked
	}
	// URL.Query drops what it cannot parse (a bad escape, a ';', more parameters than Go's limit): a cursor or a
	// topic would be ignored without a word.
	query, err := url.ParseQuery(c.Request.URL.RawQuery)
	if err != nil {
		writeError(c, http.StatusBadRequest, "bad_request", "malformed query string: "+truncate(err.Error(), 80))
		return
	}
	allowed := queryParams[c.FullPath()]
	for name := range query {
		if slices.Contains(allowed, name) {
			continue
		}
		msg := fmt.Sprintf("unknown query parameter %q: %s takes %s", truncate(name, 40), c.FullPath(),
			strings.Join(allowed, ", "))
		if i := slices.IndexFunc(allowed, func(a string) bool { return strings.EqualFold(a, name) }); i >= 0 {
			msg += fmt.Sprintf(" (did you mean %s?)", allowed[i])
		}
		writeError(c, http.StatusBadRequest, "bad_request", msg)
		return
	}
}

// topicsFromQuery returns the validated topic patterns of the request, or answers 400 and returns false.
func (s *Server) topicsFromQuery(c *gin.Context) ([]string, bool) {
	patterns := c.QueryArray("topic")
	if len(patterns) == 0 {
		writeError(c, http.StatusBadRequest, "bad_request", "give at least one topic, as in ?topic=market.*&topic=sports.>")
		return nil, false
	}
	if len(patterns) > s.cfg.MaxTopics {
		writeError(c, http.StatusBadRequest, "too_many_topics", fmt.Sprintf("at most %d topics per request", s.cfg.MaxTopics))
		return nil, false
	}
	for _, p := range patterns {
		if err := topic.ValidatePattern(p); err != nil {
			writeError(c, http.StatusBadRequest, "invalid_topic", err.Error())
			return nil, false
		}
	}
	s.noteUnknown(c, patterns) // for the answer to say which topics have no update yet
	return patterns, true
}

// subscriptionFromQuery reads topics and maxRate from the query, or answers 400 and returns false.
func (s *Server) subscriptionFromQuery(c *gin.Context) (Subscription, bool) {
	patterns, ok := s.topicsFromQuery(c)
	if !ok {
		return Subscription{}, false
	}
	sub := Subscription{Patterns: patterns}
	if v := c.Query("maxRate"); v != "" {
		rate, err := parseMaxRate(v)
		if err != nil {
			writeError(c, http.StatusBadRequest, "bad_request", err.Error())
			return Subscription{}, false
		}
		sub.MaxRate = rate
	}
	return sub, true
}

// The accepted maxRate: 0 (no limit), or from minRate to maxRateLimit updates per second. Above the highest, ask
// for no limit; the lowest keeps a throttle's interval (and the timer that holds a subscriber while it runs) short.
const (
	minRate      = 0.01
	maxRateLimit = 1000
)

func parseMaxRate(v string) (float64, error) {
	rate, err := strconv.ParseFloat(v, 64)
	if err != nil || math.IsNaN(rate) || rate < 0 || rate > maxRateLimit || rate > 0 && rate < minRate {
		return 0, fmt.Errorf("maxRate must be 0 (no limit) or a number of updates per second from %g to %d", minRate, maxRateLimit)
	}
	return rate, nil
}

// cursorFromRequest reads the resume cursor: the first of the given headers and query parameters that is set.
// It answers 400 and returns ok false for a malformed one.
func cursorFromRequest(c *gin.Context, header string, params ...string) (since uint64, given, ok bool) {
	v := ""
	if header != "" {
		v = c.GetHeader(header)
	}
	for _, p := range params {
		if v == "" {
			v = c.Query(p)
		}
	}
	if v == "" {
		return 0, false, true
	}
	since, err := ParseCursor(v)
	if err != nil {
		writeError(c, http.StatusBadRequest, "bad_cursor", err.Error())
		return 0, false, false
	}
	return since, true, true
}

// checkCursor checks a resume cursor before the response starts. It returns nil or ErrCursorExpired (the stream
// answers with a reset); for a cursor ahead of the stream it answers 400, and 503 while the stream is away.
func (s *Server) checkCursor(c *gin.Context, since uint64) (checked checkedCursor, ok bool) {
	checked = s.hub.checkCursor(c.Request.Context(), since)
	switch err := checked.err; {
	case err == nil, errors.Is(err, ErrCursorExpired):
		return checked, true
	case errors.Is(err, ErrCursorAhead):
		writeError(c, http.StatusBadRequest, "bad_cursor", fmt.Sprintf("cursor %d is ahead of the stream", since))
	default:
		c.Header("Retry-After", "2")
		writeError(c, http.StatusServiceUnavailable, "unavailable", "the stream is unreachable right now: retry shortly")
	}
	return checked, false
}

// writeUpdates answers {"cursor":"N","updates":[…]} from the updates' shared encodings, without re-encoding them
// or copying them into one buffer: an answer of many updates costs no memory of its own.
func writeUpdates(c *gin.Context, cursor uint64, updates []*Update, extra string) {
	c.Header("Cache-Control", "no-store")
	c.Header("Content-Type", "application/json")
	c.Status(http.StatusOK)
	w := c.Writer
	var head [48]byte
	b := append(head[:0], `{"cursor":"`...)
	b = strconv.AppendUint(b, cursor, 10)
	w.Write(append(b, `","updates":[`...))
	for i, u := range updates {
		if i > 0 {
			w.Write(comma)
		}
		w.Write(u.json[:len(u.json)-1]) // without its newline
	}
	w.Write(closeList)
	w.WriteString(extra)
	w.WriteString(unknownField(unknownOf(c)))
	w.Write(closeObject)
}

var (
	comma       = []byte(",")
	closeList   = []byte("]")
	closeObject = []byte("}\n")
)

func (s *Server) handleSnapshot(c *gin.Context) {
	patterns, ok := s.topicsFromQuery(c)
	if !ok {
		return
	}
	if _, ok := s.authorize(c, patterns); !ok {
		return
	}
	head, updates := s.hub.Snapshot(patterns)
	writeUpdates(c, head, updates, "")
}

func (s *Server) handleTopics(c *gin.Context) {
	head, topics := s.hub.Topics()
	if s.cfg.Auth != nil { // list only what this client may subscribe to
		g, err := s.cfg.Auth.authenticate(c.Request)
		if err != nil {
			g = &grant{}
		}
		visible := topics[:0]
		for _, t := range topics {
			if s.cfg.Auth.visible(g, t.Topic) {
				visible = append(visible, t)
			}
		}
		topics = visible
	}
	c.Header("Cache-Control", "no-store")
	writeJSON(c, http.StatusOK, gin.H{"cursor": strconv.FormatUint(head, 10), "topics": topics})
}

func (s *Server) handleHealth(c *gin.Context) {
	writeJSON(c, http.StatusOK, gin.H{"status": "ok"})
}

// handleReady answers 200 when this edge can serve current data, and 503 while NATS or the stream is away or the
// edge is draining, so a load balancer sends new clients elsewhere.
func (s *Server) handleReady(c *gin.Context) {
	err := s.src.Ready()
	if err == nil && s.draining.Load() {
		err = fmt.Errorf("draining")
	}
	st := s.hub.Stats()
	if err != nil {
		// target tells a client resuming here which updates are catch-up, before the edge is current: the stream's
		// newest when the edge started following it, or, before it has, the stream's newest now.
		target := s.src.CatchingUpTo()
		if target == 0 {
			ctx, cancel := context.WithTimeout(c.Request.Context(), time.Second)
			if _, last, err := s.src.Bounds(ctx, 0); err == nil {
				target = last
			}
			cancel()
		}
		writeJSON(c, http.StatusServiceUnavailable, gin.H{"status": "not ready", "reason": err.Error(),
			"cursor": strconv.FormatUint(st.Head, 10), "target": strconv.FormatUint(target, 10)})
		return
	}
	writeJSON(c, http.StatusOK, gin.H{"status": "ready", "cursor": strconv.FormatUint(st.Head, 10),
		"topics": st.Topics, "connections": st.Subscribers})
}
