package push

import (
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/coder/websocket"
	"github.com/gin-gonic/gin"
)

// Limits refuse abuse clearly: every refusal says what limit was hit and when to come back.
type Limits struct {
	// MaxConnections is the most subscribers (streams and waiting long polls) this process holds. Zero: no limit.
	MaxConnections int
	// MaxConnectionsPerIP is the most subscribers one client address holds. Zero: no limit.
	MaxConnectionsPerIP int
	// ControlRate is the most WebSocket control messages per second a connection may send, with bursts of twice
	// that; a flood closes the connection with 1008. Zero: 20.
	ControlRate float64
}

func (l Limits) withDefaults() Limits {
	if l.ControlRate <= 0 {
		l.ControlRate = 20
	}
	return l
}

// retryAfter is what a refused client is told to wait.
const retryAfter = 5 * time.Second

// admission counts connections per process and per client address.
type admission struct {
	limits Limits

	mu    sync.Mutex
	total int
	perIP map[string]int
}

// admit takes a connection slot for ip. It returns a release func, or the reason and HTTP status of a refusal.
func (a *admission) admit(ip string) (release func(), status int, reason string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.limits.MaxConnections > 0 && a.total >= a.limits.MaxConnections {
		return nil, http.StatusServiceUnavailable, fmt.Sprintf("this edge is full (%d connections): retry shortly or elsewhere", a.limits.MaxConnections)
	}
	if a.limits.MaxConnectionsPerIP > 0 && a.perIP[ip] >= a.limits.MaxConnectionsPerIP {
		return nil, http.StatusTooManyRequests, fmt.Sprintf("too many connections from your address (%d)", a.limits.MaxConnectionsPerIP)
	}
	a.total++
	if a.perIP == nil {
		a.perIP = make(map[string]int)
	}
	a.perIP[ip]++
	var once sync.Once
	return func() {
		once.Do(func() {
			a.mu.Lock()
			defer a.mu.Unlock()
			a.total--
			if a.perIP[ip]--; a.perIP[ip] <= 0 {
				delete(a.perIP, ip)
			}
		})
	}, 0, ""
}

// admitHTTP takes a connection slot for the request's client, or answers the refusal (503 or 429 with Retry-After
// and a JSON body) and returns nil.
func (s *Server) admitHTTP(c *gin.Context) (release func()) {
	release, status, reason := s.admission.admit(c.ClientIP())
	if release == nil {
		s.refuse(c, status, reason)
	}
	return release
}

func (s *Server) refuse(c *gin.Context, status int, reason string) {
	code := "over_capacity"
	if status == http.StatusTooManyRequests {
		code = "too_many_connections"
	}
	s.hub.metrics.refused.WithLabelValues(code).Inc()
	c.Header("Retry-After", strconv.Itoa(int(retryAfter.Seconds())))
	writeError(c, status, code, reason)
}

// refuseWS tells a WebSocket client it was refused: browsers cannot read a handshake's status, so the connection
// is accepted and closed at once with 1013 (try again later) and the reason.
func (s *Server) refuseWS(conn *websocket.Conn, reason string) {
	s.hub.metrics.refused.WithLabelValues("websocket_" + strconv.Itoa(int(websocket.StatusTryAgainLater))).Inc()
	conn.Close(websocket.StatusTryAgainLater, truncate(reason, 120))
}
