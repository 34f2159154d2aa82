package livepush_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// The README's Python and Node consumers are run exactly as written (only localhost:8080 replaced by the edge's
// address) against a real edge, while the test publishes updates through the edge's NATS; every line they print is
// checked against what was published. They need python3 with websocket-client (Debian's python3-websocket), and
// Node 18 or later with the npm package ws installed in testdata/clients: a missing one fails the test.

// clientsDir holds the npm packages the Node examples import (package.json, package-lock.json).
const clientsDir = "testdata/clients"

// readmeConsumers returns the README's python and js blocks by the file their first line names ("# ws.py: …").
func readmeConsumers(t *testing.T) map[string]string {
	t.Helper()
	named := regexp.MustCompile(`^(?:#|//) ([a-z]+\.(?:py|mjs)):`)
	consumers := map[string]string{}
	for _, b := range readmeBlocks(t) {
		if m := named.FindStringSubmatch(b.body); m != nil && (b.lang == "python" || b.lang == "js") {
			consumers[m[1]] = b.body
		}
	}
	return consumers
}

// python returns a python3 that can import module: the one on PATH, or else Debian's /usr/bin/python3, which is
// where apt's python3-* packages go.
func python(t *testing.T, module, install string) string {
	t.Helper()
	var tried []string
	if p, err := exec.LookPath("python3"); err == nil {
		tried = append(tried, p)
	}
	if p := "/usr/bin/python3"; !slices.Contains(tried, p) {
		tried = append(tried, p)
	}
	for _, p := range tried {
		if exec.Command(p, "-c", "import "+module).Run() == nil {
			return p
		}
	}
	t.Fatalf("the README's Python examples need a python3 that imports %s (tried %s): %s (.ci/run installs it)",
		module, strings.Join(tried, ", "), install)
	return ""
}

// node returns the node binary, after checking it has fetch (Node 18 or later) and that the npm packages the
// examples import are installed.
func node(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("the README's Node examples need node 18 or later: apt-get install nodejs (.ci/run installs it): %v", err)
	}
	if out, err := exec.Command(p, "-e", "if (typeof fetch !== 'function') process.exit(1)").CombinedOutput(); err != nil {
		v, _ := exec.Command(p, "--version").Output()
		t.Fatalf("the README's Node SSE example needs fetch, Node 18 or later; %s is %s %s", p, strings.TrimSpace(string(v)), out)
	}
	if _, err := os.Stat(filepath.Join(clientsDir, "node_modules", "ws", "package.json")); err != nil {
		t.Fatalf("the README's Node WebSocket example needs the npm package ws: npm ci --prefix %s (.ci/run does it): %v",
			clientsDir, err)
	}
	return p
}

// consumerEdge is an edge process with its embedded NATS, the simulators off: only the test publishes.
type consumerEdge struct {
	addr string
	js   jetstream.JetStream
	done chan struct{} // closed when the edge process exits
	logs string
}

func startConsumerEdge(t *testing.T) *consumerEdge {
	t.Helper()
	dir := t.TempDir()
	if out, err := exec.Command("go", "build", "-o", dir, "./cmd/push").CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/push: %v\n%s", err, out)
	}
	e := &consumerEdge{done: make(chan struct{}), logs: filepath.Join(dir, "push.log")}
	ready := filepath.Join(dir, "ready")
	// Port 0 for both: the edge takes its ports from the listeners it serves on and names them in the ready file.
	cmd := exec.Command(filepath.Join(dir, "push"), "-addr", "127.0.0.1:0", "-nats-listen", "127.0.0.1:0",
		"-ready-file", ready, "-data", filepath.Join(dir, "nats"), "-no-market", "-no-sports", "-log-level", "warn")
	logs, err := os.Create(e.logs)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		cmd.Wait()
		close(e.done)
	}()
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		select {
		case <-e.done:
		case <-time.After(15 * time.Second):
			cmd.Process.Kill()
			t.Error("push did not stop within 15s of Ctrl-C")
		}
	})

	var natsURL string
	e.waitFor(t, "the ready file", 30*time.Second, func() bool {
		b, _ := os.ReadFile(ready)
		for line := range strings.SplitSeq(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "addr="); ok {
				e.addr = v
			} else if v, ok := strings.CutPrefix(line, "nats="); ok {
				natsURL = v
			}
		}
		return e.addr != "" && natsURL != ""
	})
	e.waitFor(t, "/readyz", 30*time.Second, func() bool {
		resp, err := http.Get("http://" + e.addr + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	nc, err := nats.Connect(natsURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	if e.js, err = jetstream.New(nc); err != nil {
		t.Fatal(err)
	}
	return e
}

// waitFor polls cond until it holds, failing the test if the edge dies or d passes first.
func (e *consumerEdge) waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(d); !cond(); time.Sleep(50 * time.Millisecond) {
		e.checkAlive(t)
		if time.Now().After(deadline) {
			t.Fatalf("no %s within %v", what, d)
		}
	}
}

func (e *consumerEdge) checkAlive(t *testing.T) {
	t.Helper()
	select {
	case <-e.done:
		b, _ := os.ReadFile(e.logs)
		t.Fatalf("the edge exited:\n%s", b)
	default:
	}
}

// sent is an update the test published.
type sent struct {
	cursor  uint64
	topic   string
	payload string
}

func (e *consumerEdge) publish(t *testing.T, topic, payload string) sent {
	t.Helper()
	ack, err := e.js.Publish(t.Context(), topic, []byte(payload))
	if err != nil {
		t.Fatalf("publish %s: %v", topic, err)
	}
	return sent{ack.Sequence, topic, payload}
}

// burst publishes the payloads without waiting for each acknowledgement, so that they reach the edge together and
// leave to a subscriber in one batch.
func (e *consumerEdge) burst(t *testing.T, topics, payloads []string) []sent {
	t.Helper()
	acks := make([]jetstream.PubAckFuture, len(topics))
	for i := range topics {
		var err error
		if acks[i], err = e.js.PublishAsync(topics[i], []byte(payloads[i])); err != nil {
			t.Fatalf("publish %s: %v", topics[i], err)
		}
	}
	out := make([]sent, len(topics))
	for i, a := range acks {
		select {
		case ack := <-a.Ok():
			out[i] = sent{ack.Sequence, topics[i], payloads[i]}
		case err := <-a.Err():
			t.Fatalf("publish %s: %v", topics[i], err)
		case <-time.After(10 * time.Second):
			t.Fatalf("publish %s: no acknowledgement within 10s", topics[i])
		}
	}
	return out
}

var priceSeq float64

func quotePayload() string {
	priceSeq++
	return fmt.Sprintf(`{"topic":"market.AAPL","kind":"quote","symbol":"AAPL","price":%.2f,"ts":"%s"}`,
		4000+priceSeq+0.25, time.Now().UTC().Format(time.RFC3339Nano))
}

func scorePayload(home int) string {
	return fmt.Sprintf(`{"topic":"sports.nba.g-1","kind":"score","league":"nba","match":"g-1","home":{"name":"Denver","score":%d},`+
		`"away":{"name":"Utah","score":0},"status":"live","ts":"%s"}`, home, time.Now().UTC().Format(time.RFC3339Nano))
}

// consumer is one README example running, its standard output read line by line.
type consumer struct {
	lines  chan string
	stderr *strings.Builder
	exited chan struct{}
}

var updateLine = regexp.MustCompile(`^([0-9]+) (\S+) (\{.*\})$`)

// next returns the consumer's next update line as cursor, topic and payload; other lines go to other.
func (c *consumer) next(t *testing.T, e *consumerEdge, other *[]string) (uint64, string, string) {
	t.Helper()
	timeout := time.After(20 * time.Second)
	for {
		select {
		case line, ok := <-c.lines:
			if !ok {
				<-c.exited
				t.Fatalf("the example ended; its standard error:\n%s", c.stderr)
			}
			m := updateLine.FindStringSubmatch(line)
			if m == nil {
				*other = append(*other, line)
				continue
			}
			cursor, _ := strconv.ParseUint(m[1], 10, 64)
			return cursor, m[2], m[3]
		case <-timeout:
			e.checkAlive(t)
			t.Fatalf("the example printed no update within 20s; its standard error:\n%s", c.stderr)
		}
	}
}

// expect reads the next update lines and checks them against want, in order: cursor, topic and payload (as JSON,
// since an example may print it spaced differently).
func (c *consumer) expect(t *testing.T, e *consumerEdge, want []sent, other *[]string) {
	t.Helper()
	for _, w := range want {
		cursor, topic, payload := c.next(t, e, other)
		var got, sentPayload any
		if err := json.Unmarshal([]byte(payload), &got); err != nil {
			t.Fatalf("printed %d %s %s: the payload is not JSON: %v", cursor, topic, payload, err)
		}
		json.Unmarshal([]byte(w.payload), &sentPayload)
		if cursor != w.cursor || topic != w.topic || !reflect.DeepEqual(got, sentPayload) {
			t.Fatalf("printed  %d %s %s\nwant     %d %s %s", cursor, topic, payload, w.cursor, w.topic, w.payload)
		}
	}
}

func runConsumer(t *testing.T, dir, file, body, addr string, argv ...string) *consumer {
	t.Helper()
	path := filepath.Join(dir, file)
	if err := os.WriteFile(path, []byte(strings.ReplaceAll(body, "localhost:8080", addr)), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(argv[0], append(argv[1:], path)...)
	cmd.Dir = dir
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	c := &consumer{lines: make(chan string, 1024), stderr: &strings.Builder{}, exited: make(chan struct{})}
	cmd.Stderr = c.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			c.lines <- sc.Text()
		}
		close(c.lines)
	}()
	go func() {
		cmd.Wait()
		close(c.exited)
	}()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-c.exited:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-c.exited
		}
	})
	return c
}

func TestReadmeClientsInOtherLanguages(t *testing.T) {
	consumers := readmeConsumers(t)
	for _, name := range []string{"sse.py", "ws.py", "sse.mjs", "ws.mjs"} {
		if consumers[name] == "" {
			t.Fatalf("README.md has no block starting with %q naming %s", "# "+name+": …", name)
		}
	}
	runners := map[string][]string{
		"sse.py":  {python(t, "json", "apt-get install python3")},
		"ws.py":   {python(t, "websocket", "apt-get install python3-websocket (Debian's websocket-client; pip install websocket-client for another python3)")},
		"sse.mjs": {node(t)},
		"ws.mjs":  {node(t)},
	}
	modules, err := filepath.Abs(filepath.Join(clientsDir, "node_modules"))
	if err != nil {
		t.Fatal(err)
	}

	e := startConsumerEdge(t)
	var nba *sent // the latest sports.nba.* update: part of every later snapshot
	for _, name := range []string{"sse.py", "ws.py", "sse.mjs", "ws.mjs"} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			// Node resolves `import … from 'ws'` in node_modules beside the script, as after `npm install ws` there.
			if err := os.Symlink(modules, filepath.Join(dir, "node_modules")); err != nil {
				t.Fatal(err)
			}
			// The snapshot: the latest update of each matching topic, in cursor order.
			aapl := e.publish(t, "market.AAPL", quotePayload())
			snapshot := []sent{aapl}
			if nba != nil {
				snapshot = []sent{*nba, aapl}
			}
			c := runConsumer(t, dir, name, consumers[name], e.addr, runners[name]...)
			var other []string
			c.expect(t, e, snapshot, &other)

			// Live: a burst of quotes, which the edge sends to the example together (each in a frame of its own on
			// the WebSocket), a quote for a topic it does not follow, and a score.
			var topics, payloads []string
			for range 20 {
				topics, payloads = append(topics, "market.AAPL"), append(payloads, quotePayload())
			}
			topics, payloads = append(topics, "market.MSFT"), append(payloads, strings.ReplaceAll(quotePayload(), "AAPL", "MSFT"))
			topics, payloads = append(topics, "sports.nba.g-1"), append(payloads, scorePayload(int(priceSeq)))
			published := e.burst(t, topics, payloads)
			live := slices.DeleteFunc(slices.Clone(published), func(s sent) bool { return s.topic == "market.MSFT" })
			nba = &published[len(published)-1]
			c.expect(t, e, live, &other)

			// Nothing else: on the WebSocket only the reply to the subscribe, printed as JSON.
			for range 3 { // anything already on its way
				select {
				case l := <-c.lines:
					other = append(other, l)
				case <-time.After(300 * time.Millisecond):
				}
			}
			wantOther := 0
			if strings.HasPrefix(name, "ws.") {
				wantOther = 1
				var reply struct{ Type, ID string }
				if len(other) == 0 || json.Unmarshal([]byte(other[0]), &reply) != nil || reply.Type != "subscribed" || reply.ID != "1" {
					t.Errorf("first line not an update: %q, want the subscribed reply as JSON", other)
				}
			}
			if len(other) != wantOther {
				t.Errorf("printed %d lines besides the updates, want %d: %q", len(other), wantOther, other)
			}
			t.Logf("%s printed the snapshot and %d live updates, as published", name, len(live))
		})
	}
	e.checkAlive(t)
}
