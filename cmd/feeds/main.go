// Command feeds runs the market and sports simulators alone and publishes their updates to a NATS deployment's
// JetStream, creating the stream if no edge has yet.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/livepush/livepush/feeds"
	"github.com/livepush/livepush/internal/cli"
	"github.com/livepush/livepush/internal/natsconn"
	"github.com/livepush/livepush/internal/stream"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(cli.Exit("feeds", run(ctx, os.Args[1:], os.Getenv, os.Stderr)))
}

func run(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) error {
	f := cli.New("feeds", "feeds: simulated market quotes and sports scores, published to NATS JetStream", getenv, stderr)
	var natsCfg natsconn.Config
	applyNATS := natsCfg.RegisterFlags(f, "nats://127.0.0.1:4222", "NATS server URL(s), comma-separated")
	healthAddr := f.String("health-addr", "FEEDS_HEALTH_ADDR", "", "serve /healthz (publisher counters) on this address, e.g. :8081")
	retryFor := f.Duration("retry-for", "FEEDS_RETRY_FOR", 30*time.Second, "keep retrying one failed publish this long before counting it lost")
	logLevel := f.String("log-level", "FEEDS_LOG_LEVEL", "info", "log level: debug, info, warn or error")
	logFormat := f.String("log-format", "FEEDS_LOG_FORMAT", "text", "log format: text or json")
	healthcheck := f.String("healthcheck", "", "", "get this URL, exit 0 if it answers 200 (container health checks)")
	var streamCfg stream.Config
	applyStream := streamCfg.RegisterFlags(f)
	var cfg feeds.Config
	applyFeeds := cfg.RegisterFlags(f)
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
	// Refuse a bad configuration before connecting anywhere.
	if err := natsCfg.Check(); err != nil {
		return cli.UsageError{Err: err}
	}
	if !cfg.NoMarket {
		if _, err := feeds.NewMarket(cfg.Market); err != nil {
			return cli.UsageError{Err: err}
		}
	}

	nc, err := natsCfg.Connect("feeds", log)
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	pub := feeds.NewPublisher(js, *retryFor, log)

	if *healthAddr != "" {
		ln, err := net.Listen("tcp", *healthAddr)
		if err != nil {
			return err
		}
		srv := &http.Server{Handler: healthHandler(pub), ReadHeaderTimeout: 5 * time.Second}
		go srv.Serve(ln)
		defer srv.Close()
		log.Info("health endpoint listening", "addr", ln.Addr().String()) // the port it got, for -health-addr :0
	}
	if _, err := stream.Ensure(ctx, js, streamCfg, log); err != nil {
		if errors.Is(err, context.Canceled) {
			return nil
		}
		return err
	}
	err = feeds.Run(ctx, cfg, pub.Publish, log)
	st := pub.Stats()
	log.Info("feeds stopped", "published", st.Published, "retried", st.Retried, "failed", st.Failed)
	return err
}

func healthHandler(pub *feeds.Publisher) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(pub.Stats())
	})
	return mux
}
