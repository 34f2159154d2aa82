// Command push is the Livepush edge. Without NATS_URL it runs everything in one process: an embedded nats-server
// with JetStream, the feed simulators and the edge, so `go run ./cmd/push` shows live prices at
// http://localhost:8080. With NATS_URL it joins that NATS deployment and serves what the feeds publish there.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/livepush/livepush/feeds"
	"github.com/livepush/livepush/internal/cli"
	"github.com/livepush/livepush/internal/listen"
	"github.com/livepush/livepush/internal/natsconn"
	"github.com/livepush/livepush/internal/stream"
	"github.com/livepush/livepush/internal/tlscert"
	"github.com/livepush/livepush/push"
	"github.com/livepush/livepush/web"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(cli.Exit("push", run(ctx, os.Args[1:], os.Getenv, os.Stderr, nil)))
}

// run is the whole command, callable from tests; listening, if not nil, learns the address once the edge serves.
func run(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer, listening func(net.Addr)) error {
	f := cli.New("push", "push: the Livepush edge (SSE, WebSocket, polling) and the ticker page", getenv, stderr)
	addr := f.String("addr", "PUSH_ADDR", ":8080", "address to serve HTTP on")
	var natsCfg natsconn.Config
	applyNATS := natsCfg.RegisterFlags(f, "", "NATS server URL(s), comma-separated; empty: run an embedded nats-server and the feeds in this process")
	dataDir := f.String("data", "PUSH_DATA_DIR", defaultDataDir(), "directory for the embedded nats-server's JetStream files")
	natsListen := f.String("nats-listen", "PUSH_NATS_LISTEN", "", "let TCP clients reach the embedded nats-server here too, e.g. 127.0.0.1:4222")
	withFeeds := f.Bool("feeds", "PUSH_FEEDS", false, "run the feed simulators in this process even with NATS_URL set")
	allowed := f.List("allowed-origins", "PUSH_ALLOWED_ORIGINS", "other `origins` whose pages may open WebSockets, as host patterns (example.com, *.example.com), comma-separated")
	corsOrigins := f.List("cors-origins", "PUSH_CORS_ORIGINS", "`origins` that may read SSE, the JSON API and /readyz and import /livepush.js cross-site (https://example.com, or *), comma-separated")
	maxTopics := f.Int("max-topics", "PUSH_MAX_TOPICS", 64, "most topic patterns per connection or request")
	maxConns := f.Int("max-conns", "PUSH_MAX_CONNS", 0, "most connections this process holds; more get 503 / close 1013 (0: the open-file limit less a tenth, kept for NATS and requests; -1: no limit)")
	maxConnsPerIP := f.Int("max-conns-per-ip", "PUSH_MAX_CONNS_PER_IP", 0, "most connections per client address; more get 429 / close 1013 (0: no limit)")
	controlRate := f.Float64("control-rate", "PUSH_CONTROL_RATE", 20, "WebSocket control messages per second per connection (bursts of twice that); a flood closes with 1008")
	trustedProxies := f.List("trusted-proxies", "PUSH_TRUSTED_PROXIES", "`addresses` or CIDRs of load balancers whose X-Forwarded-For names the client and whose forwarded host counts for the WebSocket origin check, comma-separated")
	readHeaderTimeout := f.Duration("read-header-timeout", "PUSH_READ_HEADER_TIMEOUT", 10*time.Second, "longest a client may take to send its request headers (slowloris, WebSocket handshakes)")
	queueLimit := f.Int("queue-limit", "PUSH_QUEUE_LIMIT", 256, "updates waiting for one subscriber before they are conflated to the latest per topic")
	queueBytes := f.Int("queue-bytes", "PUSH_QUEUE_BYTES", 4<<20, "bytes of updates waiting for one subscriber before they are conflated the same way")
	latencyBudget := f.Duration("latency-budget", "PUSH_LATENCY_BUDGET", 100*time.Millisecond, "when fan-out falls this far behind with a long backlog (a busy machine), skip to the newest value of each topic")
	writers := f.Int("writers", "PUSH_WRITERS", 0, "goroutines writing to connections at once, a writer stuck on a client aside (0: 2 per core)")
	writeDelay := f.Duration("write-delay", "PUSH_WRITE_DELAY", 0, "how long a connection with something to send waits so that what follows joins the same write: fewer, larger writes for that much latency")
	replayBuffer := f.Int("replay-buffer", "PUSH_REPLAY_BUFFER", 16384, "recent updates kept in memory to serve resumes without reading the stream")
	replayBytes := f.Int("replay-bytes", "PUSH_REPLAY_BYTES", 64<<20, "bytes those recent updates may hold; the oldest go first")
	maxCachedTopics := f.Int("max-cached-topics", "PUSH_MAX_CACHED_TOPICS", 10_000, "most topics in the last-value cache; messages on more are rejected (too_many_topics)")
	cacheBytes := f.Int("cache-bytes", "PUSH_CACHE_BYTES", 256<<20, "bytes the last-value cache may hold; updates past it are rejected (too_many_topics)")
	pollBytes := f.Int("poll-bytes", "PUSH_POLL_BYTES", 1<<20, "bytes of updates in one long-poll answer (past its first update)")
	historyMax := f.Int("history-max", "PUSH_HISTORY_MAX", 10_000, "most updates (or bars) in one /api/history answer, and updates of one topic kept for it")
	historyBytes := f.Int("history-bytes", "PUSH_HISTORY_BYTES", 4<<20, "bytes of updates in one /api/history answer, and of one topic kept for it")
	historyCacheBytes := f.Int("history-cache-bytes", "PUSH_HISTORY_CACHE_BYTES", 64<<20, "bytes the /api/history cache holds across topics; the least recently asked go first")
	maxStreamReads := f.Int("max-stream-reads", "PUSH_MAX_STREAM_READS", 16, "reads of the stream's history (old-cursor resumes and polls) run at once; more wait their turn")
	maxStreamReadsPerIP := f.Int("max-stream-reads-per-ip", "PUSH_MAX_STREAM_READS_PER_IP", 4, "such reads one client address runs at once")
	maxPayload := f.Int("max-payload", "PUSH_MAX_PAYLOAD", push.DefaultMaxPayload, "largest stream payload delivered, in bytes; larger ones are rejected (too_large)")
	kinds := f.List("event-kinds", "PUSH_EVENT_KINDS", "payload `kinds` that name SSE events, comma-separated (default quote,score); any other kind is sent as event \"update\"")
	slowTimeout := f.Duration("slow-timeout", "PUSH_SLOW_TIMEOUT", 30*time.Second, "disconnect a subscriber that stays behind this long")
	writeTimeout := f.Duration("write-timeout", "PUSH_WRITE_TIMEOUT", 10*time.Second, "longest one write to a client may take")
	heartbeat := f.Duration("heartbeat", "PUSH_HEARTBEAT", 15*time.Second, "send a heartbeat on connections silent this long")
	drainTimeout := f.Duration("drain-timeout", "PUSH_DRAIN_TIMEOUT", 10*time.Second, "on SIGTERM, how long clients get to move to another edge")
	logLevel := f.String("log-level", "PUSH_LOG_LEVEL", "info", "log level: debug, info, warn or error")
	logFormat := f.String("log-format", "PUSH_LOG_FORMAT", "text", "log format: text or json")
	jwtSecret := f.Secret("jwt-secret", "PUSH_JWT_SECRET", "require tokens: verify HS256 tokens with this secret (or one in -jwt-secret-file)")
	jwtSecretFile := f.String("jwt-secret-file", "PUSH_JWT_SECRET_FILE", "", "require tokens: verify HS256 tokens with the secret in this `file`")
	jwtRequireExp := f.Bool("jwt-require-exp", "PUSH_JWT_REQUIRE_EXP", false, "with tokens: refuse tokens without an expiry (exp)")
	jwtKeyFile := f.String("jwt-public-key", "PUSH_JWT_PUBLIC_KEY", "", "require tokens: verify RS256/ES256 tokens with the PEM public key in this `file`")
	jwksURL := f.String("jwks-url", "PUSH_JWKS_URL", "", "require tokens: verify RS256/ES256 tokens with the keys published at this URL")
	jwtIssuer := f.String("jwt-issuer", "PUSH_JWT_ISSUER", "", "with tokens: the issuer (iss) they must have")
	jwtAudience := f.String("jwt-audience", "PUSH_JWT_AUDIENCE", "", "with tokens: the audience (aud) they must have")
	anonymous := f.List("anonymous", "PUSH_ANONYMOUS", "with tokens: `patterns` anyone may subscribe to without one, e.g. market.>")
	tlsCert := f.String("tls-cert", "PUSH_TLS_CERT", "", "serve HTTPS and HTTP/2 with the PEM certificate (chain) in this `file`; a changed file is picked up without a restart")
	tlsKey := f.String("tls-key", "PUSH_TLS_KEY", "", "the PEM private key of -tls-cert, in this `file`")
	h2c := f.Bool("h2c", "PUSH_H2C", false, "also accept HTTP/2 in clear text (prior knowledge), for a proxy in front that speaks it to the edge")
	reusePort := f.Bool("reuseport", "PUSH_REUSEPORT", false, "share -addr with other edge processes on this host (SO_REUSEPORT)")
	pprofAddr := f.String("pprof", "PUSH_PPROF", "", "serve /debug/pprof on this separate address, e.g. 127.0.0.1:6060")
	healthcheck := f.String("healthcheck", "", "", "get this URL, exit 0 if it answers 200 (container health checks)")
	readyFile := f.String("ready-file", "PUSH_READY_FILE", "", "once serving, write addr=HOST:PORT (and nats=URL for -nats-listen) to this `file`: for scripts that start the edge on port 0")
	var streamCfg stream.Config
	applyStream := streamCfg.RegisterFlags(f)
	var feedCfg feeds.Config
	applyFeeds := feedCfg.RegisterFlags(f)
	if err := f.Parse(args); err != nil {
		return err
	}
	applyNATS()
	applyStream()
	applyFeeds()
	if *healthcheck != "" {
		return cli.HealthCheck(*healthcheck)
	}
	log, err := cli.Logger(stderr, *logLevel, *logFormat)
	if err != nil {
		return cli.UsageError{Err: err}
	}

	tlsConfig, err := serverTLS(*tlsCert, *tlsKey, *h2c, log)
	if err != nil {
		return err
	}

	if *jwtSecretFile != "" {
		if *jwtSecret != "" {
			return cli.UsageError{Err: errors.New("give -jwt-secret or -jwt-secret-file, not both")}
		}
		b, err := os.ReadFile(*jwtSecretFile)
		if err != nil {
			return cli.UsageError{Err: fmt.Errorf("-jwt-secret-file: %w", err)}
		}
		*jwtSecret = strings.TrimSpace(string(b))
	} else if *jwtSecret != "" && flagGiven(f, "jwt-secret") {
		log.Warn("the JWT secret was given as a flag, which any user of this host can read in the process list: " +
			"prefer PUSH_JWT_SECRET or -jwt-secret-file")
	}
	auth, err := authenticator(*jwtSecret, *jwtKeyFile, *jwksURL, *jwtIssuer, *jwtAudience, *anonymous, *jwtRequireExp)
	if err != nil {
		return cli.UsageError{Err: err}
	}
	contract := push.Contract{MaxPayload: *maxPayload, Kinds: *kinds}
	if err := contract.Validate(); err != nil {
		return cli.UsageError{Err: fmt.Errorf("-event-kinds: %w", err)}
	}

	// The port first: a busy one fails at once, before the embedded server opens its store.
	ln, err := listen.TCP(ctx, *addr, *reusePort)
	if err != nil {
		return err
	}
	defer ln.Close()

	var nc *nats.Conn
	if natsCfg.URL == "" && natsCfg.HasAuthOrTLS() {
		return cli.UsageError{Err: errors.New("NATS credentials and TLS settings need -nats or NATS_URL: the embedded nats-server takes none")}
	}
	if natsCfg.URL != "" {
		if err := natsCfg.Check(); err != nil {
			return cli.UsageError{Err: err}
		}
	}
	natsClientURL := "" // where TCP clients reach the embedded server, if they can
	if natsCfg.URL == "" {
		if err := os.MkdirAll(*dataDir, 0o755); err != nil {
			return fmt.Errorf("data directory: %w", err)
		}
		ns, err := natsconn.StartEmbedded(natsconn.EmbeddedOptions{StoreDir: *dataDir, Listen: *natsListen, Log: log})
		if err != nil {
			return err
		}
		defer ns.Stop()
		if *natsListen != "" {
			natsClientURL = ns.ClientURL()
		}
		log.Info("embedded nats-server running", "store", *dataDir, "tcp", natsClientURL)
		if nc, err = ns.Connect(natsconn.Options("push", log)...); err != nil {
			return err
		}
		*withFeeds = true
	} else if nc, err = natsCfg.Connect("push", log); err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	if *pprofAddr != "" {
		stopProfiling, err := serveProfiles(*pprofAddr, log)
		if err != nil {
			return err
		}
		defer stopProfiling()
	}
	src := push.NewSource(js, streamCfg, log, push.WithContract(contract))
	hub := push.NewHub(push.HubOptions{History: src, QueueLimit: *queueLimit, QueueBytes: *queueBytes, SlowTimeout: *slowTimeout,
		WriteTimeout: *writeTimeout, Heartbeat: *heartbeat, Retention: streamCfg.MaxAge,
		ReplayBuffer: *replayBuffer, ReplayBytes: *replayBytes, MaxTopics: *maxCachedTopics, CacheBytes: *cacheBytes,
		MaxStreamReads: *maxStreamReads, MaxStreamReadsPerIP: *maxStreamReadsPerIP, LatencyBudget: *latencyBudget,
		Writers: *writers, WriteDelay: *writeDelay})
	connLimit := connectionLimit(*maxConns)
	log.Info("connection limit", "max_conns", connLimit, "max_conns_per_ip", *maxConnsPerIP)
	srv := push.NewServer(push.Config{
		AllowedOrigins: *allowed,
		CORSOrigins:    *corsOrigins,
		MaxTopics:      *maxTopics,
		PollBytes:      *pollBytes,
		History:        push.HistoryOptions{MaxUpdates: *historyMax, MaxBytes: *historyBytes, CacheBytes: *historyCacheBytes},
		Limits: push.Limits{MaxConnections: connLimit, MaxConnectionsPerIP: *maxConnsPerIP,
			ControlRate: *controlRate},
		TrustedProxies:    *trustedProxies,
		Auth:              auth,
		ReadHeaderTimeout: *readHeaderTimeout,
		DrainTimeout:      *drainTimeout,
		H2C:               *h2c,
		Page:              web.FS,
		Log:               log,
		TLS:               tlsConfig,
	}, hub, src)

	feedsCtx, stopFeeds := context.WithCancel(ctx)
	defer stopFeeds()
	var wg sync.WaitGroup
	if *withFeeds {
		pub := feeds.NewPublisher(js, 0, log.With("component", "feeds"))
		wg.Go(func() {
			if _, err := stream.Ensure(feedsCtx, js, streamCfg, log); err != nil {
				return // only when stopping
			}
			if err := feeds.Run(feedsCtx, feedCfg, pub.Publish, log.With("component", "feeds")); err != nil {
				log.Error("feeds stopped", "err", err)
			}
		})
	}
	go announce(feedsCtx, src.Ready, log, pageURL(ln.Addr(), tlsConfig != nil))
	if listening != nil {
		listening(ln.Addr())
	}
	if *readyFile != "" {
		if err := writeReadyFile(*readyFile, ln.Addr(), natsClientURL); err != nil {
			return err
		}
	}
	err = srv.Run(ctx, ln)
	stopFeeds()
	wg.Wait()
	return err
}

// flagGiven reports whether the flag name was set on the command line (not from the environment).
func flagGiven(f *cli.Flags, name string) bool {
	given := false
	f.Visit(func(fl *flag.Flag) { given = given || fl.Name == name })
	return given
}

// announce tells where to open the page once the edge can serve it, and until then, after a short grace, what it
// waits for (NATS named, with the reason it cannot be reached).
func announce(ctx context.Context, ready func() error, log *slog.Logger, url string) {
	const grace = 2 * time.Second
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	began, said := time.Now(), ""
	for {
		err := ready()
		if err == nil {
			log.Info("ready: open the ticker page", "url", url)
			return
		}
		if time.Since(began) >= grace && err.Error() != said {
			log.Warn("not ready yet: the page waits until then", "reason", err.Error(), "url", url)
			said = err.Error()
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// serverTLS returns the edge's TLS configuration from the flags, with the certificate reloaded when its files
// change, or nil for plain HTTP.
func serverTLS(certFile, keyFile string, h2c bool, log *slog.Logger) (*tls.Config, error) {
	switch {
	case certFile == "" && keyFile == "":
		return nil, nil
	case certFile == "" || keyFile == "":
		return nil, cli.UsageError{Err: errors.New("-tls-cert and -tls-key go together: give both files, or neither for plain HTTP")}
	case h2c:
		return nil, cli.UsageError{Err: errors.New("-h2c is HTTP/2 in clear text: with -tls-cert the edge speaks HTTP/2 over TLS already")}
	}
	certs, err := tlscert.New(tlscert.Config{CertFile: certFile, KeyFile: keyFile, Log: log})
	if err != nil {
		return nil, fmt.Errorf("-tls-cert/-tls-key: %w", err)
	}
	return certs.TLSConfig(), nil
}

// authenticator builds token verification from the flags, or returns nil when no way to verify tokens is given.
func authenticator(secret, keyFile, jwksURL, issuer, audience string, anonymous []string, requireExp bool) (*push.Authenticator, error) {
	if secret == "" && keyFile == "" && jwksURL == "" {
		if len(anonymous) > 0 {
			return nil, fmt.Errorf("-anonymous needs -jwt-secret, -jwt-public-key or -jwks-url: without them everything is public")
		}
		return nil, nil
	}
	cfg := push.AuthConfig{HMACSecret: []byte(secret), JWKSURL: jwksURL, Issuer: issuer, Audience: audience,
		Anonymous: anonymous, RequireExpiry: requireExp}
	if keyFile != "" {
		pem, err := os.ReadFile(keyFile)
		if err != nil {
			return nil, fmt.Errorf("-jwt-public-key: %w", err)
		}
		key, err := jwt.ParseRSAPublicKeyFromPEM(pem)
		if err != nil {
			ecKey, ecErr := jwt.ParseECPublicKeyFromPEM(pem)
			if ecErr != nil {
				return nil, fmt.Errorf("-jwt-public-key %s: neither an RSA nor an EC public key in PEM", keyFile)
			}
			cfg.PublicKeys = append(cfg.PublicKeys, ecKey)
		} else {
			cfg.PublicKeys = append(cfg.PublicKeys, key)
		}
	}
	return push.NewAuthenticator(cfg)
}

// connectionLimit is the -max-conns to apply. By default it stays clear of the open-file limit (which Go raises to
// the hard limit at start): past it, accepting fails for everyone and an embedded NATS cannot open its files, so a
// stranger opening connections from many addresses would take the edge down instead of being told it is full.
func connectionLimit(flag int) int {
	switch {
	case flag > 0:
		return flag
	case flag < 0:
		return 0 // no limit
	}
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil || lim.Cur > 1<<30 {
		return 0
	}
	files := int(lim.Cur)
	return max(files-max(files/10, 256), 64)
}

// serveProfiles serves net/http/pprof on its own address, kept apart from the public port. /debug/pprof/cmdline is
// left out: it would show secrets given as flags to whoever reaches the address.
func serveProfiles(addr string, log *slog.Logger) (stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("pprof: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	log.Info("profiling", "url", "http://"+ln.Addr().String()+"/debug/pprof/")
	return func() { srv.Close() }, nil
}

// writeReadyFile tells a script where the edge and the embedded nats-server listen. It appears whole or not at all.
func writeReadyFile(path string, addr net.Addr, natsURL string) error {
	body := "addr=" + addr.String() + "\n"
	if natsURL != "" {
		body += "nats=" + natsURL + "\n"
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(body), 0o644); err != nil {
		return fmt.Errorf("-ready-file: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("-ready-file: %w", err)
	}
	return nil
}

// pageURL is the address a person on this machine opens.
func pageURL(a net.Addr, secure bool) string {
	scheme := "http"
	if secure {
		scheme = "https"
	}
	tcp, ok := a.(*net.TCPAddr)
	if ok && (tcp.IP.IsUnspecified() || tcp.IP.IsLoopback()) {
		return fmt.Sprintf("%s://localhost:%d", scheme, tcp.Port)
	}
	return scheme + "://" + a.String()
}

func defaultDataDir() string {
	if dir, err := os.UserCacheDir(); err == nil {
		return filepath.Join(dir, "livepush", "nats")
	}
	return filepath.Join(os.TempDir(), "livepush", "nats")
}
