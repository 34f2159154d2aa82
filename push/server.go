// Package push is the edge: it follows the stream (Source), routes updates to subscribers (Hub) and serves them over
// SSE, WebSocket, long polling and plain polling (Server), with the ticker page at /.
package push

import (
	"context"
	"crypto/tls"
	"errors"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Config configures an edge. The zero value is usable: each zero field takes the default it documents.
type Config struct {
	// AllowedOrigins are the origins, besides the page's own, whose pages may open WebSockets, as host patterns
	// ("example.com", "*.example.com"). Zero: same origin only, which refuses cross-site WebSocket hijacking.
	AllowedOrigins []string
	// CORSOrigins may read SSE streams, the JSON API and /readyz, and import the page's files (/livepush.js), from
	// other sites: full origins ("https://example.com") or "*". Zero: none.
	CORSOrigins []string
	// MaxTopics is the most topic patterns one connection or request may hold. Zero: 64.
	MaxTopics int
	// PollBytes bounds one long-poll answer: past the first update, no more than this many bytes of updates; the
	// client asks again from the cursor it got. Zero: 1 MiB.
	PollBytes int
	// History bounds /api/history and the cache behind it.
	History HistoryOptions
	// Limits on connections and control messages.
	Limits Limits
	// Auth, when set, requires tokens for the topics it does not leave anonymous. Nil: everything is public.
	Auth *Authenticator
	// TrustedProxies are the addresses (IPs or CIDRs) of load balancers whose X-Forwarded-For names the client,
	// and whose Forwarded or X-Forwarded-Host and -Proto name the site a browser's page came from (see origin.go).
	// Zero: the peer address is the client, as it is when clients connect directly.
	TrustedProxies []string
	// Hub tunes queues, timeouts and heartbeats.
	Hub HubOptions
	// DrainTimeout bounds a graceful shutdown: clients are told to reconnect elsewhere, and whoever is still
	// connected after this is cut off. Zero: 10s.
	DrainTimeout time.Duration
	// ReadHeaderTimeout bounds how long a client may take to send its request headers. Zero: 10s.
	ReadHeaderTimeout time.Duration
	// TLS, when set, makes the edge serve HTTPS with it: HTTP/2 to clients that offer it (ALPN h2), HTTP/1.1 to
	// the others. Its certificate comes from Certificates or GetCertificate (a tlscert.Reloader's, say). Nil: plain
	// HTTP.
	TLS *tls.Config
	// H2C accepts HTTP/2 without TLS (prior knowledge, no Upgrade), for a proxy in front that speaks it to the
	// edge; HTTP/1.1 is still served on the same port. Ignored with TLS, which offers HTTP/2 anyway.
	H2C bool
	// Page holds the ticker page's files, served at /. Nil: no page.
	Page fs.FS
	// Log receives the edge's logs. Nil: slog.Default().
	Log *slog.Logger
}

func (c Config) withDefaults() Config {
	if c.MaxTopics <= 0 {
		c.MaxTopics = 64
	}
	if c.PollBytes <= 0 {
		c.PollBytes = 1 << 20
	}
	if c.DrainTimeout <= 0 {
		c.DrainTimeout = 10 * time.Second
	}
	if c.ReadHeaderTimeout <= 0 {
		c.ReadHeaderTimeout = 10 * time.Second
	}
	if c.Log == nil {
		c.Log = slog.Default()
	}
	c.Limits = c.Limits.withDefaults()
	return c
}

// Server is one edge process: HTTP routes over a hub fed by a source.
type Server struct {
	cfg       Config
	hub       *Hub
	src       *Source
	log       *slog.Logger
	handler   http.Handler
	admission admission
	origins   originPolicy
	history   *historyCache
	draining  atomic.Bool
}

// NewServer returns an edge serving hub, which src feeds (src is also hub's History), with readiness taken from src.
func NewServer(cfg Config, hub *Hub, src *Source) *Server {
	cfg = cfg.withDefaults()
	s := &Server{cfg: cfg, hub: hub, src: src, log: cfg.Log, admission: admission{limits: cfg.Limits},
		origins: newOriginPolicy(cfg.AllowedOrigins, cfg.TrustedProxies), history: newHistoryCache(cfg.History)}
	if src != nil {
		hub.metrics.registry.MustRegister(src.metrics...)
	}
	hub.metrics.gauge("livepush_history_cache_bytes", "Memory held by the history cache of /api/history.",
		func() float64 { return float64(s.history.size()) })
	s.handler = s.routes()
	return s
}

func (s *Server) routes() http.Handler {
	gin.SetMode(gin.ReleaseMode)
	r := gin.New()
	if err := r.SetTrustedProxies(s.cfg.TrustedProxies); err != nil {
		s.log.Error("trusted proxies ignored", "err", err)
		r.SetTrustedProxies(nil)
	}
	r.Use(s.recover, refuseBody)

	// Streams manage their own connection: no middleware that buffers or times out the response. CORS headers on
	// /sse reach only its refusals (a stream writes its own), so that a page on another origin can read why.
	r.GET("/sse", s.cors, s.checkQuery, s.handleSSE)
	r.OPTIONS("/sse", s.preflight)
	r.GET("/ws", s.requireHTTP1, s.checkQuery, s.handleWS)
	// A stream has nothing to say to HEAD: refused as such, rather than taken for a page that is not there.
	for _, path := range []string{"/sse", "/ws"} {
		r.HEAD(path, func(c *gin.Context) {
			c.Header("Allow", "GET")
			writeError(c, http.StatusMethodNotAllowed, "method_not_allowed", path+" is opened with GET")
		})
	}

	// GET and HEAD alike: load balancers check health with HEAD.
	getOrHead := []string{http.MethodGet, http.MethodHead}
	api := r.Group("/api", s.countRequests, s.cors, s.checkQuery)
	api.Match(getOrHead, "/snapshot", s.handleSnapshot)
	api.Match(getOrHead, "/poll", s.handlePoll)
	api.Match(getOrHead, "/topics", s.handleTopics)
	api.Match(getOrHead, "/history", s.handleHistory)
	api.OPTIONS("/*path", s.preflight)

	r.Match(getOrHead, "/healthz", s.cors, s.handleHealth)
	r.Match(getOrHead, "/readyz", s.cors, s.handleReady)
	r.Match(getOrHead, "/metrics", gin.WrapH(promhttp.HandlerFor(s.hub.metrics.registry, promhttp.HandlerOpts{})))

	if s.cfg.Page != nil {
		page := pageHandler(s.cfg.Page, s.log)
		r.NoRoute(func(c *gin.Context) {
			if c.Request.Method != http.MethodGet && c.Request.Method != http.MethodHead {
				writeError(c, http.StatusMethodNotAllowed, "method_not_allowed", "only GET is served here")
				return
			}
			s.cors(c) // a page on another origin imports /livepush.js as a module, which is a CORS request
			page.ServeHTTP(c.Writer, c.Request)
		})
	} else {
		r.NoRoute(func(c *gin.Context) { writeError(c, http.StatusNotFound, "not_found", "no such endpoint") })
	}
	return r
}

// Handler returns the edge's HTTP handler.
func (s *Server) Handler() http.Handler { return s.handler }

// Run serves on ln, follows the stream and keeps the hub's housekeeping going until ctx ends; then it drains:
// stops accepting, tells every client to reconnect elsewhere, and returns when they are gone or DrainTimeout
// passes.
func (s *Server) Run(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: s.cfg.ReadHeaderTimeout,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
		Protocols:         s.protocols(),
		HTTP2: &http.HTTP2Config{
			// A client that stops reading holds its streams' writes, each of which has its own deadline, but also
			// the connection's writer, which has none: close the connection when nothing gets through for as long
			// as one write may take.
			WriteByteTimeout: s.hub.opts.WriteTimeout,
		},
	}
	if s.cfg.TLS != nil {
		srv.TLSConfig = s.cfg.TLS.Clone()
	}
	if (s.cfg.TLS != nil || s.cfg.H2C) && strings.Contains(os.Getenv("GODEBUG"), "http2xconnect=1") {
		s.log.Warn("GODEBUG=http2xconnect=1 tells browsers they may open WebSockets over HTTP/2, which /ws does " +
			"not serve: they will fail instead of opening an HTTP/1.1 connection for them")
	}
	bg, stop := context.WithCancel(context.WithoutCancel(ctx))
	defer stop()
	var wg sync.WaitGroup
	wg.Go(func() { s.hub.Run(bg) })
	wg.Go(func() { s.src.Run(bg, s.hub) })

	served := make(chan error, 1)
	s.log.Info("edge listening", "addr", ln.Addr().String(), "tls", srv.TLSConfig != nil,
		"protocols", srv.Protocols.String())
	go func() {
		if srv.TLSConfig != nil {
			served <- srv.ServeTLS(ln, "", "") // the certificate is in the configuration
			return
		}
		served <- srv.Serve(ln)
	}()

	select {
	case err := <-served:
		stop()
		wg.Wait()
		return err
	case <-ctx.Done():
	}

	s.log.Info("draining", "timeout", s.cfg.DrainTimeout, "connections", s.hub.Stats().Subscribers)
	s.draining.Store(true)
	drainCtx, cancel := context.WithTimeout(context.Background(), s.cfg.DrainTimeout)
	defer cancel()
	var drain sync.WaitGroup
	drain.Go(func() {
		if err := srv.Shutdown(drainCtx); err != nil {
			srv.Close()
		}
	})
	drain.Go(func() {
		if err := s.hub.Shutdown(drainCtx, reasonRestart); err != nil {
			s.log.Warn("drain timed out: cutting remaining connections", "err", err)
		}
	})
	drain.Wait()
	stop()
	wg.Wait()
	s.log.Info("stopped")
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// protocols returns what the edge speaks: HTTP/1.1 always (WebSockets need it), HTTP/2 over TLS, and HTTP/2 in
// clear text with H2C.
func (s *Server) protocols() *http.Protocols {
	var p http.Protocols
	p.SetHTTP1(true)
	p.SetHTTP2(s.cfg.TLS != nil)
	p.SetUnencryptedHTTP2(s.cfg.H2C && s.cfg.TLS == nil)
	return &p
}

// requireHTTP1 refuses a WebSocket handshake over HTTP/2: coder/websocket upgrades HTTP/1.1 connections only, and
// the edge does not offer WebSockets over HTTP/2 (RFC 8441), so browsers open an HTTP/1.1 connection for them.
func (s *Server) requireHTTP1(c *gin.Context) {
	if c.Request.ProtoMajor != 1 {
		writeError(c, http.StatusHTTPVersionNotSupported, "http_version_not_supported",
			"WebSockets are served over HTTP/1.1 only: connect to /ws with HTTP/1.1 (browsers do), or use /sse over HTTP/2")
	}
}

// corsOrigin returns the value for Access-Control-Allow-Origin, or "" when the request's origin is not allowed.
func (s *Server) corsOrigin(r *http.Request) string {
	origin := r.Header.Get("Origin")
	switch {
	case origin == "" || len(s.cfg.CORSOrigins) == 0:
		return ""
	case slices.Contains(s.cfg.CORSOrigins, "*"):
		return "*"
	case slices.Contains(s.cfg.CORSOrigins, origin):
		return origin
	}
	return ""
}

// preflight answers a CORS preflight (OPTIONS): an allowed origin may send the headers the edge reads (a token in
// Authorization, Last-Event-ID); any other gets no CORS headers, which its browser takes as a refusal.
func (s *Server) preflight(c *gin.Context) {
	c.Header("Allow", "GET, HEAD, OPTIONS")
	if origin := s.corsOrigin(c.Request); origin != "" {
		c.Header("Access-Control-Allow-Origin", origin)
		c.Header("Access-Control-Allow-Methods", "GET, HEAD, OPTIONS")
		c.Header("Access-Control-Allow-Headers", "Authorization, Last-Event-ID, Cache-Control")
		c.Header("Access-Control-Max-Age", "600")
		c.Header("Vary", "Origin")
	}
	c.AbortWithStatus(http.StatusNoContent)
}

func (s *Server) cors(c *gin.Context) {
	if origin := s.corsOrigin(c.Request); origin != "" {
		c.Header("Access-Control-Allow-Origin", origin)
		// Retry-After is not a header scripts may read cross-site unless exposed: a refused client needs it.
		c.Header("Access-Control-Expose-Headers", "Retry-After")
		c.Header("Vary", "Origin")
	}
}

// countRequests counts API requests by route and status.
func (s *Server) countRequests(c *gin.Context) {
	c.Next()
	s.hub.metrics.requests.WithLabelValues(c.FullPath(), strconv.Itoa(c.Writer.Status())).Inc()
}

// refuseBody answers a request that carries a body, which no endpoint here takes, and closes its connection. Left
// to itself, Go's server reads up to 256 KiB of a body the handler did not read before it answers, with no deadline:
// a body announced and never sent held a goroutine and a socket for good, outside every connection limit.
func refuseBody(c *gin.Context) {
	if c.Request.ContentLength == 0 {
		return
	}
	if c.Request.ProtoMajor == 1 {
		c.Header("Connection", "close")
		http.NewResponseController(c.Writer).SetReadDeadline(time.Now()) // nothing more is read from it
	}
	writeError(c, http.StatusBadRequest, "bad_request", "requests here take no body")
}

func (s *Server) recover(c *gin.Context) {
	defer func() {
		if v := recover(); v != nil {
			if v == http.ErrAbortHandler {
				panic(v)
			}
			s.log.Error("handler panic", "path", c.Request.URL.Path, "panic", v)
			if !c.Writer.Written() {
				writeError(c, http.StatusInternalServerError, "internal", "internal error")
			}
		}
	}()
	c.Next()
}
