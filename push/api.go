package push

import (
	"fmt"
	"net/http"
	"strconv"

	"github.com/gin-gonic/gin"

	"github.com/livepush/livepush/internal/topic"
)

// apiError is the JSON body of every error response.
type apiError struct {
	Error string `json:"error"`
	Code  string `json:"code"`
}

func writeError(c *gin.Context, status int, code, message string) {
	c.AbortWithStatusJSON(status, apiError{Error: message, Code: code})
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
	return patterns, true
}

// writeUpdates answers {"cursor":"N","updates":[…]} from the updates' shared encodings, without re-encoding them.
func writeUpdates(c *gin.Context, cursor uint64, updates []*Update, extra string) {
	bp := getBuf()
	defer putBuf(bp)
	b := append(*bp, `{"cursor":"`...)
	b = strconv.AppendUint(b, cursor, 10)
	b = append(b, `","updates":[`...)
	for i, u := range updates {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, u.json[:len(u.json)-1]...) // without its newline
	}
	b = append(b, ']')
	b = append(b, extra...)
	b = append(b, "}\n"...)
	*bp = b
	c.Header("Cache-Control", "no-store")
	c.Data(http.StatusOK, "application/json", b)
}

func (s *Server) handleSnapshot(c *gin.Context) {
	patterns, ok := s.topicsFromQuery(c)
	if !ok {
		return
	}
	head, updates := s.hub.Snapshot(patterns)
	writeUpdates(c, head, updates, "")
}

func (s *Server) handleTopics(c *gin.Context) {
	head, topics := s.hub.Topics()
	c.Header("Cache-Control", "no-store")
	c.JSON(http.StatusOK, gin.H{"cursor": strconv.FormatUint(head, 10), "topics": topics})
}

func (s *Server) handleHealth(c *gin.Context) {
	c.JSON(http.StatusOK, gin.H{"status": "ok"})
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
		c.JSON(http.StatusServiceUnavailable, gin.H{"status": "not ready", "reason": err.Error(),
			"cursor": strconv.FormatUint(st.Head, 10)})
		return
	}
	c.JSON(http.StatusOK, gin.H{"status": "ready", "cursor": strconv.FormatUint(st.Head, 10),
		"topics": st.Topics, "connections": st.Subscribers})
}
