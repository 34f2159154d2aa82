package push

import (
	"slices"

	"github.com/gin-gonic/gin"

	"github.com/livepush/livepush/subscriber/topic"
	"github.com/livepush/livepush/subscriber/wire"
)

// A subscription to a topic nobody publishes is not an error (its feed may start later), but an empty stream with no
// word is also what a typo looks like (market.AAPLX). So the edge names the topics a subscription spells out in full
// (no wildcard) that it has no update for: an SSE comment after the hello, "unknown" in the WebSocket's subscribed
// reply and in snapshot and poll answers. Nothing else changes: the subscription stands, and the first update to
// come is delivered.

// unknownTopics returns the topics among patterns, named in full, that have no update in the last-value cache.
func (h *Hub) unknownTopics(patterns []string) []string {
	var unknown []string
	h.cacheMu.RLock()
	defer h.cacheMu.RUnlock()
	for _, p := range patterns {
		if topic.IsLiteral(p) && h.latest[p].load() == nil && !slices.Contains(unknown, p) {
			unknown = append(unknown, p)
		}
	}
	return unknown
}

// unknownTopics is the hub's, once the edge has caught up with the stream: before that its catalog is incomplete.
func (s *Server) unknownTopics(patterns []string) []string {
	if s.src == nil || !s.src.caughtUp.Load() {
		return nil
	}
	return s.hub.unknownTopics(patterns)
}

// unknownKey holds a request's unknown topics in its gin context, from topicsFromQuery to the answer.
const unknownKey = "livepush.unknownTopics"

func (s *Server) noteUnknown(c *gin.Context, patterns []string) {
	if unknown := s.unknownTopics(patterns); len(unknown) > 0 {
		c.Set(unknownKey, unknown)
	}
}

func unknownOf(c *gin.Context) []string {
	v, _ := c.Get(unknownKey)
	unknown, _ := v.([]string)
	return unknown
}

// unknownField is `,"unknown":[…]` for a JSON answer, or nothing.
func unknownField(unknown []string) string {
	if len(unknown) == 0 {
		return ""
	}
	b := marshalJSON(unknown)
	return `,"unknown":` + string(b[:len(b)-1])
}

// sseHelloFor opens a stream: the hello, and a comment line for each unknown topic.
func sseHelloFor(unknown []string) *Update {
	if len(unknown) == 0 {
		return sseHello
	}
	b := append([]byte(nil), sseHelloLines...)
	for _, t := range unknown {
		b = wire.AppendComment(b, "no updates yet for "+t)
	}
	return newControl(nil, append(b, '\n'))
}
