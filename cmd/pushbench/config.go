package main

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/livepush/livepush/internal/cli"
	"github.com/livepush/livepush/internal/natsconn"
	"github.com/livepush/livepush/subscriber/topic"
)

// Transports pushbench drives.
const (
	trSSE      = "sse"      // GET /sse, a lean raw-TCP reader (subscriber.Stream)
	trWS       = "ws"       // GET /ws, a lean raw-TCP WebSocket (subscriber.Stream)
	trLongPoll = "longpoll" // GET /api/poll, one request per answer
	trPoll     = "poll"     // GET /api/snapshot every -poll-interval
	trMix      = "mix"      // half SSE, half WebSocket
)

// Config is a run's configuration, from the flags. Workers get it whole, as JSON.
type Config struct {
	URLs            []string      `json:"urls"`
	CA              string        `json:"ca,omitempty"`
	Conns           int           `json:"conns"`
	Transport       string        `json:"transport"`
	TopicsPerConn   int           `json:"topics_per_conn"`
	Symbols         int           `json:"symbols"`
	Patterns        []string      `json:"patterns,omitempty"`
	Seed            int64         `json:"seed"`
	PublishRate     float64       `json:"publish_rate"`
	NATS            string        `json:"nats,omitempty"`
	Stream          string        `json:"stream"`
	PayloadBytes    int           `json:"payload_bytes"`
	PublishWindow   int           `json:"publish_window"`
	PublishPattern  string        `json:"publish_pattern"`
	Workers         int           `json:"workers"`
	ConnsPerWorker  int           `json:"conns_per_worker"`
	InProcess       bool          `json:"in_process"`
	SourceIPs       []string      `json:"source_ips,omitempty"` // as given: auto, none, IPs or ranges
	ConnsPerIP      int           `json:"conns_per_ip"`
	ConnectRate     float64       `json:"connect_rate"`
	ConnectTimeout  time.Duration `json:"connect_timeout"`
	RampTimeout     time.Duration `json:"ramp_timeout"`
	Warmup          time.Duration `json:"warmup"`
	Duration        time.Duration `json:"duration"`
	PollInterval    time.Duration `json:"poll_interval"`
	LongPollTimeout time.Duration `json:"longpoll_timeout"`
	IdleTimeout     time.Duration `json:"idle_timeout"`
	ReconnectDelay  time.Duration `json:"reconnect_delay"`
	ReadBuffer      int           `json:"read_buffer"`
	Catchup         int           `json:"catchup"`
	Progress        time.Duration `json:"progress"`
	Report          string        `json:"report,omitempty"`
	EdgePIDs        []int         `json:"edge_pids,omitempty"`
	NATSPIDs        []int         `json:"nats_pids,omitempty"`
	MetricsURLs     []string      `json:"metrics_urls,omitempty"`
	Strict          bool          `json:"strict"`
	MaxP99          time.Duration `json:"max_p99,omitempty"`
	MinRate         float64       `json:"min_deliveries_per_s,omitempty"`
	CPUProfile      string        `json:"cpuprofile,omitempty"`
	MemProfile      string        `json:"memprofile,omitempty"`

	sources  []net.IP        // resolved SourceIPs: connection i dials from sources[i/ConnsPerIP % len]
	tls      *tls.Config     // for https:// URLs: the system's roots and CA's certificates; nil without CA
	client   *http.Client    // for requests that are not load, trusting tls; nil without CA
	natsConn natsconn.Config // NATS with its credentials; NATS, in the report, is its URL without them
}

const summary = `pushbench: load generator for Livepush edges

Opens -conns subscriber connections (SSE, WebSocket, long polling, polling, or a mix) with -topics-per-conn topics
each, spread over worker processes (each under ~15,000 sockets) and over loopback source addresses; optionally
publishes its own quotes into NATS at -publish-rate. It measures publish→receive latency from each payload's "ts";
staleness, how long the value each subscriber holds for a topic has been superseded by a newer one (sampled every
100ms; needs -publish-rate); deliveries per second; gaps and duplicates (by the "n" its publisher writes, and by
cursor); connect rate and errors; bytes and HTTP requests per delivered update. Phases: connect (ramp), -warmup
(not measured), -duration (measured). A progress line goes to stderr every second; a summary table to stdout and a
JSON report to -report.

Examples:
  pushbench -url http://127.0.0.1:8080 -nats nats://127.0.0.1:4222 -conns 10000 -transport ws \
    -topics-per-conn 10 -symbols 500 -publish-rate 2000 -duration 30s
  pushbench -url http://127.0.0.1:8080 -nats nats://127.0.0.1:4222 -conns 100 -topic 'market.*' -publish-rate 20000
  pushbench -url http://127.0.0.1:8080 -nats nats://127.0.0.1:4222 -catchup 100000 -transport ws
  pushbench -url http://127.0.0.1:8080 -conns 1000 -transport poll -poll-interval 1s -nats … -publish-rate 2000`

// parseConfig reads the flags. It returns a cli.UsageError for bad input, flag.ErrHelp after -help.
func parseConfig(args []string, getenv func(string) string, stderr io.Writer) (*Config, error) {
	f := cli.New("pushbench", summary, getenv, stderr)
	urls := f.List("url", "PUSHBENCH_URL", "edge base URL(s), comma-separated or repeated: connections go round robin (default http://127.0.0.1:8080)")
	ca := f.String("ca", "PUSHBENCH_CA", "", "PEM `file` of CA certificates to trust for https:// URLs besides the system's (a proxy's self-signed certificate, say)")
	conns := f.Int("conns", "PUSHBENCH_CONNS", 100, "subscriber connections to open and hold")
	transport := f.String("transport", "PUSHBENCH_TRANSPORT", trWS, "sse, ws, longpoll, poll (GET /api/snapshot every -poll-interval) or mix (half sse, half ws)")
	perConn := f.Int("topics-per-conn", "PUSHBENCH_TOPICS_PER_CONN", 10, "topics each connection follows, drawn (seeded) from the -symbols universe market.B0000…")
	symbols := f.Int("symbols", "PUSHBENCH_SYMBOLS", 500, "size of the symbol universe market.B0000 … market.B{symbols-1}; the publisher publishes to all of them")
	patterns := f.List("topic", "PUSHBENCH_TOPICS", "topic pattern(s) every connection follows instead of drawn symbols, e.g. 'market.*'")
	seed := f.Int64("seed", "PUSHBENCH_SEED", 1, "seed of the topic draw: the same seed gives every connection the same topics")
	pubRate := f.Float64("publish-rate", "PUSHBENCH_PUBLISH_RATE", 0, "updates per second to publish into NATS, round robin over the symbols (0: publish nothing; measure what others publish)")
	var natsCfg natsconn.Config
	applyNATS := natsCfg.RegisterFlags(f, "", "NATS URL for -publish-rate and -catchup, e.g. nats://127.0.0.1:4222")
	streamName := f.String("stream", "LIVEPUSH_STREAM", "LIVEPUSH", "JetStream stream the edge serves (it must exist: start the edge first)")
	payload := f.Int("payload-bytes", "PUSHBENCH_PAYLOAD_BYTES", 0, "pad each published payload to at least this many bytes (0: a plain quote, ~200 bytes)")
	pattern := f.String("publish-pattern", "PUSHBENCH_PUBLISH_PATTERN", "roundrobin", "which symbol each update goes to: roundrobin (each gets exactly rate/symbols per second, evenly spaced) or random (seeded; irregular, as real feeds are)")
	window := f.Int("publish-window", "PUSHBENCH_PUBLISH_WINDOW", 4096, "most asynchronous publishes awaiting their acknowledgement")
	workers := f.Int("workers", "PUSHBENCH_WORKERS", 0, "worker processes (0: one per -conns-per-worker connections)")
	perWorker := f.Int("conns-per-worker", "PUSHBENCH_CONNS_PER_WORKER", 15000, "connections per worker process when -workers is 0 (each process may hold ~19,990 sockets)")
	inProcess := f.Bool("in-process", "PUSHBENCH_IN_PROCESS", false, "hold every connection in this process, without worker processes (small runs, tests)")
	sources := f.List("source-ips", "PUSHBENCH_SOURCE_IPS", "source addresses to dial from: auto (default: 127.0.1.1, 127.0.1.2, … one per -conns-per-ip, when the edges are on loopback), none, or addresses and ranges (127.0.1.1-127.0.1.20)")
	perIP := f.Int("conns-per-ip", "PUSHBENCH_CONNS_PER_IP", 20000, "connections per source address (each has ~28,000 ephemeral ports)")
	connectRate := f.Float64("connect-rate", "PUSHBENCH_CONNECT_RATE", 2000, "new connections per second, all workers together (reconnects included)")
	connectTimeout := f.Duration("connect-timeout", "PUSHBENCH_CONNECT_TIMEOUT", 10*time.Second, "longest a connect and its handshake may take")
	rampTimeout := f.Duration("ramp-timeout", "PUSHBENCH_RAMP_TIMEOUT", 0, "longest the connect phase may take before measuring anyway (0: twice -conns/-connect-rate, plus 30s)")
	warmup := f.Duration("warmup", "PUSHBENCH_WARMUP", 2*time.Second, "time after the connect phase that is not measured")
	duration := f.Duration("duration", "PUSHBENCH_DURATION", 10*time.Second, "measured time")
	pollInterval := f.Duration("poll-interval", "PUSHBENCH_POLL_INTERVAL", time.Second, "with -transport poll: time between two GET /api/snapshot of one connection")
	longPollTimeout := f.Duration("longpoll-timeout", "PUSHBENCH_LONGPOLL_TIMEOUT", 25*time.Second, "with -transport longpoll: the timeout each poll asks for")
	idle := f.Duration("idle-timeout", "PUSHBENCH_IDLE_TIMEOUT", 45*time.Second, "drop and count a stream silent this long (the edge's heartbeat is 15s)")
	reconnect := f.Duration("reconnect-delay", "PUSHBENCH_RECONNECT_DELAY", time.Second, "wait before reconnecting (resuming from the cursor) a connection that failed or ended; jittered")
	readBuffer := f.Int("read-buffer", "PUSHBENCH_READ_BUFFER", 1024, "read buffer an idle SSE or WebSocket connection keeps (busy ones borrow 64 KiB)")
	catchup := f.Int("catchup", "PUSHBENCH_CATCHUP", 0, "catch-up mode: publish N updates with nobody subscribed, then resume one client (-transport ws, sse or longpoll) from the cursor before them; measures the time until it has all N and is live")
	progress := f.Duration("progress", "PUSHBENCH_PROGRESS", time.Second, "interval of the progress line on stderr (0: none)")
	report := f.String("report", "PUSHBENCH_REPORT", "", "write the JSON report to this file (\"-\": stdout, instead of the table)")
	edgePIDs := f.List("edge-pid", "PUSHBENCH_EDGE_PIDS", "edge process IDs whose CPU to measure from /proc (default: scrape process_cpu_seconds_total from each -metrics-url)")
	natsPIDs := f.List("nats-pid", "PUSHBENCH_NATS_PIDS", "nats-server process IDs whose CPU to report")
	metrics := f.List("metrics-url", "PUSHBENCH_METRICS_URL", "Prometheus endpoints of the edges (default: each -url + /metrics, when no -edge-pid is given; edges sharing one port with SO_REUSEPORT answer one at a time: give -edge-pid instead)")
	strict := f.Bool("strict", "PUSHBENCH_STRICT", false, "exit 1 unless every connection stayed up, updates arrived, and no gap, duplicate or error was seen")
	maxP99 := f.Duration("max-p99", "PUSHBENCH_MAX_P99", 0, "exit 1 if the p99 latency is above this (0: no check)")
	minRate := f.Float64("min-rate", "PUSHBENCH_MIN_RATE", 0, "exit 1 if deliveries per second are below this (0: no check)")
	cpuProfile := f.String("cpuprofile", "", "", "write a CPU profile of each worker to FILE.wN (the whole run)")
	memProfile := f.String("memprofile", "", "", "write a heap profile of each worker to FILE.wN when the run stops, connections still open")
	if err := f.Parse(args); err != nil {
		return nil, err
	}
	applyNATS()
	c := &Config{natsConn: natsCfg, CPUProfile: *cpuProfile, MemProfile: *memProfile,
		URLs: *urls, CA: *ca, Conns: *conns, Transport: *transport, TopicsPerConn: *perConn, Symbols: *symbols,
		Patterns: *patterns, Seed: *seed, PublishRate: *pubRate, NATS: natsCfg.Redacted(), Stream: *streamName,
		PayloadBytes: *payload, PublishWindow: *window, PublishPattern: *pattern, Workers: *workers, ConnsPerWorker: *perWorker,
		InProcess: *inProcess, SourceIPs: *sources, ConnsPerIP: *perIP, ConnectRate: *connectRate,
		ConnectTimeout: *connectTimeout, RampTimeout: *rampTimeout, Warmup: *warmup, Duration: *duration,
		PollInterval: *pollInterval, LongPollTimeout: *longPollTimeout, IdleTimeout: *idle,
		ReconnectDelay: *reconnect, ReadBuffer: *readBuffer, Catchup: *catchup, Progress: *progress,
		Report: *report, MetricsURLs: *metrics, Strict: *strict, MaxP99: *maxP99, MinRate: *minRate,
	}
	if err := c.check(*edgePIDs, *natsPIDs); err != nil {
		return nil, cli.UsageError{Err: err}
	}
	return c, nil
}

// check validates c and fills in what depends on other flags.
func (c *Config) check(edgePIDs, natsPIDs []string) error {
	if len(c.URLs) == 0 {
		c.URLs = []string{"http://127.0.0.1:8080"}
	}
	for i, raw := range c.URLs {
		u, err := url.Parse(raw)
		if err != nil || u.Scheme != "http" && u.Scheme != "https" || u.Host == "" || u.RawQuery != "" {
			return fmt.Errorf("-url %q: give an edge base URL as http://host:port, or https:// for TLS", raw)
		}
		c.URLs[i] = strings.TrimRight(raw, "/")
	}
	switch c.Transport {
	case trSSE, trWS, trLongPoll, trPoll, trMix:
	default:
		return fmt.Errorf("-transport %q: use sse, ws, longpoll, poll or mix", c.Transport)
	}
	switch {
	case c.Conns < 1 && c.Catchup == 0:
		return fmt.Errorf("-conns %d: open at least one connection", c.Conns)
	case c.Symbols < 1:
		return fmt.Errorf("-symbols %d: at least one", c.Symbols)
	case c.TopicsPerConn < 1 || c.TopicsPerConn > 64:
		return fmt.Errorf("-topics-per-conn %d: from 1 to 64 (the edge's -max-topics)", c.TopicsPerConn)
	case c.PublishRate < 0:
		return fmt.Errorf("-publish-rate %g: a rate of updates per second, or 0", c.PublishRate)
	case c.PublishRate > 0 && c.NATS == "" || c.Catchup > 0 && c.NATS == "":
		return errors.New("-publish-rate and -catchup publish: give -nats (or NATS_URL)")
	case c.PayloadBytes < 0 || c.PayloadBytes > 1<<20:
		return fmt.Errorf("-payload-bytes %d: from 0 to 1 MiB", c.PayloadBytes)
	case c.PublishPattern != "roundrobin" && c.PublishPattern != "random":
		return fmt.Errorf("-publish-pattern %q: roundrobin or random", c.PublishPattern)
	case c.PublishWindow < 1:
		return fmt.Errorf("-publish-window %d: at least 1", c.PublishWindow)
	case c.Workers < 0 || c.ConnsPerWorker < 1 || c.ConnsPerWorker > 19000:
		return fmt.Errorf("-workers %d / -conns-per-worker %d: a process holds at most ~19,000 sockets", c.Workers, c.ConnsPerWorker)
	case c.ConnsPerIP < 1:
		return fmt.Errorf("-conns-per-ip %d: at least 1", c.ConnsPerIP)
	case c.ConnectRate <= 0:
		return fmt.Errorf("-connect-rate %g: connections per second, above 0", c.ConnectRate)
	case c.ConnectTimeout <= 0 || c.Duration <= 0 || c.Warmup < 0 || c.RampTimeout < 0 || c.Progress < 0:
		return errors.New("-connect-timeout and -duration must be positive; -warmup, -ramp-timeout and -progress not negative")
	case c.Transport == trPoll && c.PollInterval <= 0:
		return fmt.Errorf("-poll-interval %v: above 0", c.PollInterval)
	case c.LongPollTimeout < 0 || c.LongPollTimeout > 2*time.Minute:
		return fmt.Errorf("-longpoll-timeout %v: from 0 to 2m", c.LongPollTimeout)
	case c.ReadBuffer < 64 || c.ReadBuffer > 1<<20:
		return fmt.Errorf("-read-buffer %d: from 64 bytes to 1 MiB", c.ReadBuffer)
	case c.Catchup < 0:
		return fmt.Errorf("-catchup %d: a number of updates", c.Catchup)
	case c.Catchup > 0 && (c.Transport == trPoll || c.Transport == trMix):
		return errors.New("-catchup resumes one client: use -transport ws, sse or longpoll")
	case c.IdleTimeout < 0 || c.ReconnectDelay < 0:
		return errors.New("-idle-timeout and -reconnect-delay must not be negative")
	}
	if len(c.Patterns) > 64 {
		return errors.New("-topic: at most 64 patterns (the edge's -max-topics)")
	}
	if err := validatePatterns(c.Patterns); err != nil {
		return fmt.Errorf("-topic: %w", err)
	}
	if c.RampTimeout == 0 {
		c.RampTimeout = 30*time.Second + time.Duration(2*float64(c.Conns)/c.ConnectRate*float64(time.Second))
	}
	var err error
	if c.EdgePIDs, err = pids("-edge-pid", edgePIDs); err != nil {
		return err
	}
	if c.NATSPIDs, err = pids("-nats-pid", natsPIDs); err != nil {
		return err
	}
	if len(c.MetricsURLs) == 0 && len(c.EdgePIDs) == 0 {
		for _, u := range c.URLs {
			c.MetricsURLs = append(c.MetricsURLs, u+"/metrics")
		}
	}
	if c.Workers > 0 && !c.InProcess {
		if per := (c.Conns + c.Workers - 1) / c.Workers; per > 19000 {
			return fmt.Errorf("-workers %d: %d connections each, over the ~19,000 sockets a process may hold", c.Workers, per)
		}
	}
	if c.InProcess && c.Conns > 19000 {
		return fmt.Errorf("-in-process with %d connections: a process holds at most ~19,000 sockets", c.Conns)
	}
	if err := c.loadCA(); err != nil {
		return err
	}
	return c.resolveSources()
}

// httpClient is for the requests that are not load (readiness, metrics): over https:// it trusts CA.
func (c *Config) httpClient() *http.Client {
	if c.client == nil {
		return http.DefaultClient
	}
	return c.client
}

// loadCA reads CA's certificates into the TLS configuration of https:// connections.
func (c *Config) loadCA() error {
	c.tls, c.client = nil, nil
	if c.CA == "" {
		return nil
	}
	pem, err := os.ReadFile(c.CA)
	if err != nil {
		return fmt.Errorf("-ca: %w", err)
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pem) {
		return fmt.Errorf("-ca %s: no PEM certificate in it", c.CA)
	}
	c.tls = &tls.Config{RootCAs: pool}
	c.client = &http.Client{Transport: &http.Transport{TLSClientConfig: c.tls}}
	return nil
}

func pids(flag string, list []string) ([]int, error) {
	var out []int
	for _, s := range list {
		pid, err := strconv.Atoi(s)
		if err != nil || pid <= 0 {
			return nil, fmt.Errorf("%s %q: a process ID", flag, s)
		}
		out = append(out, pid)
	}
	return out, nil
}

// randomSource is the topic draw of connection i: reproducible from the seed.
func randomSource(seed int64, i int) *rand.Rand {
	return rand.New(rand.NewPCG(uint64(seed), uint64(i)))
}

// symbolName returns the i-th symbol of a universe of n: B0000, B0001, …
func symbolName(i, n int) string {
	width := max(4, len(strconv.Itoa(n-1)))
	return fmt.Sprintf("B%0*d", width, i)
}

// topicsFor returns the topics of connection i.
func (c *Config) topicsFor(i int) []string {
	if len(c.Patterns) > 0 {
		return c.Patterns
	}
	k := min(c.TopicsPerConn, c.Symbols)
	r := randomSource(c.Seed, i)
	chosen := make(map[int]bool, k)
	topics := make([]string, 0, k)
	// Floyd's sampling: k distinct symbols out of n, each set equally likely.
	for j := c.Symbols - k; j < c.Symbols; j++ {
		t := r.IntN(j + 1)
		if chosen[t] {
			t = j
		}
		chosen[t] = true
		topics = append(topics, "market."+symbolName(t, c.Symbols))
	}
	return topics
}

// transportFor returns the transport of connection i.
func (c *Config) transportFor(i int) string {
	if c.Transport == trMix {
		if i%2 == 0 {
			return trSSE
		}
		return trWS
	}
	return c.Transport
}

// urlFor returns the edge connection i talks to.
func (c *Config) urlFor(i int) string { return c.URLs[i%len(c.URLs)] }

// sourceFor returns the source address of connection i, or nil to let the kernel choose.
func (c *Config) sourceFor(i int) net.IP {
	if len(c.sources) == 0 {
		return nil
	}
	return c.sources[i/c.ConnsPerIP%len(c.sources)]
}

// resolveSources turns SourceIPs into addresses: "auto" gives one loopback address per ConnsPerIP connections
// (127.0.1.1, 127.0.1.2, …) when every edge is on loopback, "none" none; otherwise a list of addresses and ranges
// (127.0.1.1-127.0.1.20).
func (c *Config) resolveSources() error {
	c.sources = nil
	spec := c.SourceIPs
	if len(spec) == 0 || len(spec) == 1 && spec[0] == "auto" {
		for _, u := range c.URLs {
			if !loopbackURL(u) {
				return nil
			}
		}
		need := (c.Conns + c.ConnsPerIP - 1) / c.ConnsPerIP
		ip := binary.BigEndian.Uint32(net.IPv4(127, 0, 1, 1).To4())
		for len(c.sources) < need {
			if b := byte(ip); b != 0 && b != 255 {
				c.sources = append(c.sources, uint32IP(ip))
			}
			ip++
		}
		return nil
	}
	if len(spec) == 1 && spec[0] == "none" {
		return nil
	}
	for _, s := range spec {
		lo, hi, isRange := strings.Cut(s, "-")
		a := net.ParseIP(strings.TrimSpace(lo)).To4()
		if a == nil {
			return fmt.Errorf("-source-ips: %q is not an IPv4 address or range", s)
		}
		if !isRange {
			c.sources = append(c.sources, a)
			continue
		}
		b := net.ParseIP(strings.TrimSpace(hi)).To4()
		if b == nil || binary.BigEndian.Uint32(b) < binary.BigEndian.Uint32(a) ||
			binary.BigEndian.Uint32(b)-binary.BigEndian.Uint32(a) > 1<<16 {
			return fmt.Errorf("-source-ips: bad range %q", s)
		}
		for ip := binary.BigEndian.Uint32(a); ip <= binary.BigEndian.Uint32(b); ip++ {
			c.sources = append(c.sources, uint32IP(ip))
		}
	}
	return nil
}

func uint32IP(v uint32) net.IP {
	ip := make(net.IP, 4)
	binary.BigEndian.PutUint32(ip, v)
	return ip
}

func loopbackURL(raw string) bool {
	u, err := url.Parse(raw)
	if err != nil {
		return false
	}
	if u.Hostname() == "localhost" {
		return true
	}
	ip := net.ParseIP(u.Hostname())
	return ip != nil && ip.IsLoopback()
}

// workerCount returns the number of worker processes.
func (c *Config) workerCount() int {
	if c.InProcess || c.Catchup > 0 {
		return 1
	}
	if c.Workers > 0 {
		return min(c.Workers, max(c.Conns, 1))
	}
	return max(1, (c.Conns+c.ConnsPerWorker-1)/c.ConnsPerWorker)
}

func validatePatterns(patterns []string) error {
	for _, p := range patterns {
		if err := topic.ValidatePattern(p); err != nil {
			return err
		}
	}
	return nil
}
