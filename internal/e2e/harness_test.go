// Package e2e proves the failure promises with real processes: standalone nats-server binaries (killed with
// SIGKILL, restarted on the same storage, clustered), edge processes built from cmd/push (killed, drained with
// SIGTERM), load published through the feeds publisher, clients from the subscriber package, and headless Chromium,
// in front of the repository's nginx (plain, and HTTPS with HTTP/2) and HAProxy configurations
// (internal/proxytest). It needs the nats-server binary (`go install github.com/nats-io/nats-server/v2@v2.15.2`),
// nginx, haproxy and chromium (Debian packages of those names); .ci/run installs them all. Without them the tests
// fail.
package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/livepush/livepush/feeds"
	"github.com/livepush/livepush/internal/natsconn"
	"github.com/livepush/livepush/internal/natstest"
	"github.com/livepush/livepush/internal/stream"
	"github.com/livepush/livepush/subscriber"
)

var binDir string // the push binary, built once

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "livepush-e2e")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	build := exec.Command("go", "build", "-o", dir+string(filepath.Separator), "github.com/livepush/livepush/cmd/push")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "go build cmd/push: %v\n%s", err, out)
		os.Exit(1)
	}
	binDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func quiet() *slog.Logger { return natstest.Logger() }

// freePort finds a port nothing listens on, for the one case where a port must be known before its server starts:
// a cluster's nodes are each given the others' route addresses. Everything else takes its port itself.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// natsServerBinary finds the standalone nats-server.
func natsServerBinary(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("nats-server"); err == nil {
		return p
	}
	gopath, _ := exec.Command("go", "env", "GOPATH").Output()
	p := filepath.Join(strings.TrimSpace(string(gopath)), "bin", "nats-server")
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("nats-server binary not found on PATH or in GOPATH/bin: install it with "+
			"`go install github.com/nats-io/nats-server/v2@v2.15.2` (.ci/run does): %v", err)
	}
	return p
}

// proc is a child process the test kills, restarts and checks.
type proc struct {
	t    *testing.T
	name string
	args []string
	cmd  *exec.Cmd
	log  string
	done chan error
}

func startProc(t *testing.T, name string, args ...string) *proc {
	t.Helper()
	p := &proc{t: t, name: filepath.Base(name), args: args, log: filepath.Join(t.TempDir(), filepath.Base(name)+".log")}
	p.start(name)
	t.Cleanup(func() { p.signal(syscall.SIGKILL) })
	return p
}

func (p *proc) start(name string) {
	p.t.Helper()
	out, err := os.OpenFile(p.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		p.t.Fatal(err)
	}
	p.cmd = exec.Command(name, p.args...)
	p.cmd.Stdout, p.cmd.Stderr = out, out
	if err := p.cmd.Start(); err != nil {
		p.t.Fatalf("start %s: %v", name, err)
	}
	p.done = make(chan error, 1)
	go func() { p.done <- p.cmd.Wait(); out.Close() }()
}

// signal sends sig and returns how long the process took to exit, and how it exited.
func (p *proc) signal(sig syscall.Signal) (time.Duration, error) {
	if p.cmd.ProcessState != nil {
		return 0, nil
	}
	start := time.Now()
	p.cmd.Process.Signal(sig)
	select {
	case err := <-p.done:
		return time.Since(start), err
	case <-time.After(30 * time.Second):
		p.cmd.Process.Kill()
		return time.Since(start), fmt.Errorf("%s did not exit within 30s of %v", p.name, sig)
	}
}

// failIfExited fails the test if the process has exited by itself.
func (p *proc) failIfExited() {
	p.t.Helper()
	select {
	case err := <-p.done:
		p.done <- err
		p.t.Fatalf("%s exited (%v):\n%s", p.name, err, p.logs())
	default:
	}
}

func (p *proc) logs() string {
	b, _ := os.ReadFile(p.log)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// natsNode is one standalone nats-server with JetStream.
type natsNode struct {
	*proc
	url string
}

// startNATS runs a nats-server with its storage in dir and waits until it accepts clients; extra adds cluster
// flags. With port 0 the server takes a free port itself and says which in a ports file: a restart takes that port
// again, as a real server's address stays the same.
func startNATS(t *testing.T, port int, dir string, extra ...string) *natsNode {
	t.Helper()
	portArg := strconv.Itoa(port)
	if port == 0 {
		portArg = "-1"
	}
	args := append([]string{"-js", "-sd", dir, "-a", "127.0.0.1", "-p", portArg, "--ports_file_dir", dir}, extra...)
	n := &natsNode{proc: startProc(t, natsServerBinary(t), args...)}
	if port == 0 {
		port = n.listeningPort(dir)
		n.args[slices.Index(n.args, "-p")+1] = strconv.Itoa(port)
	}
	n.url = fmt.Sprintf("nats://127.0.0.1:%d", port)
	waitTCP(t, fmt.Sprintf("127.0.0.1:%d", port))
	return n
}

// listeningPort reads the client port from the ports file the server writes in dir.
func (n *natsNode) listeningPort(dir string) int {
	n.t.Helper()
	path := filepath.Join(dir, fmt.Sprintf("nats-server_%d.ports", n.cmd.Process.Pid))
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		var ports struct{ Nats []string }
		if b, err := os.ReadFile(path); err == nil && json.Unmarshal(b, &ports) == nil && len(ports.Nats) > 0 {
			u, err := url.Parse(ports.Nats[0])
			if err != nil {
				n.t.Fatalf("ports file %s: %v", path, err)
			}
			port, _ := strconv.Atoi(u.Port())
			return port
		}
		n.failIfExited()
		if time.Now().After(deadline) {
			n.t.Fatalf("nats-server wrote no ports file in 20s:\n%s", n.logs())
		}
	}
}

func (n *natsNode) restart() {
	n.t.Helper()
	n.start(n.cmd.Path)
	waitTCP(n.t, strings.TrimPrefix(n.url, "nats://"))
}

func waitTCP(t *testing.T, addr string) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("nothing listens on %s: %v", addr, err)
		}
	}
}

// edge is one push process.
type edge struct {
	*proc
	url string
}

// startEdge runs the push binary against natsURL (no simulators) and waits until it is ready. It takes a free port
// itself and says which in its ready file; a restart (edge.restart) takes that port again.
func startEdge(t *testing.T, natsURL string, args ...string) *edge {
	t.Helper()
	ready := filepath.Join(t.TempDir(), "ready")
	all := append([]string{"-addr", "127.0.0.1:0", "-ready-file", ready, "-nats", natsURL, "-log-format", "json",
		"-heartbeat", "2s"}, args...)
	e := &edge{proc: startProc(t, filepath.Join(binDir, "push"), all...)}
	for deadline := time.Now().Add(30 * time.Second); e.url == ""; time.Sleep(20 * time.Millisecond) {
		if b, err := os.ReadFile(ready); err == nil {
			for line := range strings.SplitSeq(string(b), "\n") {
				if addr, ok := strings.CutPrefix(line, "addr="); ok {
					e.url = "http://" + addr
					e.args[1] = addr // -addr: a restart listens where this one did
				}
			}
		}
		e.failIfExited()
		if time.Now().After(deadline) {
			t.Fatalf("edge wrote no ready file in 30s:\n%s", e.logs())
		}
	}
	e.waitReady(t)
	return e
}

func (e *edge) ready() (bool, string) {
	resp, err := http.Get(e.url + "/readyz")
	if err != nil {
		return false, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode == http.StatusOK, string(b)
}

func (e *edge) waitReady(t *testing.T) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if ok, _ := e.ready(); ok {
			return
		}
		e.failIfExited() // whatever answers on its address now is not this edge
		if time.Now().After(deadline) {
			_, why := e.ready()
			t.Fatalf("edge %s not ready: %s\n%s", e.url, why, e.logs())
		}
	}
}

// load publishes quotes round-robin over topics at rate through the feeds publisher (acknowledged, retried with
// the same message id across outages) and records the cursor of every acknowledged update per topic.
type load struct {
	mu     sync.Mutex
	acked  map[string][]uint64
	failed int
	stop   context.CancelFunc
	done   chan struct{}
}

func startLoad(t *testing.T, natsURL string, topics []string, rate float64, replicas int) *load {
	t.Helper()
	return startLoadOf(t, natsURL, topics, rate, replicas, func(topic string, i int) string {
		return fmt.Sprintf(`{"topic":%q,"kind":"quote","n":%d,"ts":%q}`, topic, i, time.Now().UTC().Format(time.RFC3339Nano))
	})
}

// startLoadOf is startLoad with the payloads payload makes: the i-th update, on topic.
func startLoadOf(t *testing.T, natsURL string, topics []string, rate float64, replicas int,
	payload func(topic string, i int) string) *load {
	t.Helper()
	nc, err := natsconn.Connect(natsURL, "e2e-load", quiet())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := stream.Ensure(ctx, js, stream.Config{Replicas: replicas}, quiet()); err != nil {
		t.Fatal(err)
	}
	pub := feeds.NewPublisher(js, time.Minute, quiet())
	runCtx, stop := context.WithCancel(context.Background())
	l := &load{acked: map[string][]uint64{}, stop: stop, done: make(chan struct{})}
	go func() {
		defer close(l.done)
		tick := time.NewTicker(time.Duration(float64(time.Second) / rate))
		defer tick.Stop()
		for i := 0; runCtx.Err() == nil; i++ {
			<-tick.C
			topic := topics[i%len(topics)]
			seq, err := pub.Publish(runCtx, topic, []byte(payload(topic, i)))
			l.mu.Lock()
			if err == nil {
				l.acked[topic] = append(l.acked[topic], seq)
			} else if runCtx.Err() == nil {
				l.failed++
			}
			l.mu.Unlock()
		}
	}()
	t.Cleanup(func() { l.finish() })
	return l
}

// finish stops publishing and returns what was acknowledged.
func (l *load) finish() map[string][]uint64 {
	l.stop()
	<-l.done
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.acked
}

// last is the newest cursor acknowledged so far.
func (l *load) last() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	var last uint64
	for _, c := range l.acked {
		if len(c) > 0 {
			last = max(last, c[len(c)-1])
		}
	}
	return last
}

func (l *load) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, c := range l.acked {
		n += len(c)
	}
	return n
}

// waitPublished waits until n more updates have been acknowledged.
func (l *load) waitPublished(t *testing.T, n int) {
	t.Helper()
	target := l.count() + n
	for deadline := time.Now().Add(60 * time.Second); l.count() < target; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d updates acknowledged", l.count(), target)
		}
	}
}

// client is a subscriber-package client recording every update it is handed and every lifecycle event.
type client struct {
	name   string
	c      *subscriber.Client
	mu     sync.Mutex
	got    map[string][]uint64
	events []subscriber.Event
	stop   context.CancelFunc
	done   chan error
}

func startClient(t *testing.T, name string, o subscriber.Options) *client {
	t.Helper()
	cl := &client{name: name, got: map[string][]uint64{}, done: make(chan error, 1)}
	o.MinBackoff, o.MaxBackoff = 50*time.Millisecond, 500*time.Millisecond
	o.OnEvent = func(e subscriber.Event) {
		cl.mu.Lock()
		cl.events = append(cl.events, e)
		cl.mu.Unlock()
	}
	c, err := subscriber.New(o)
	if err != nil {
		t.Fatal(err)
	}
	cl.c = c
	ctx, cancel := context.WithCancel(context.Background())
	cl.stop = cancel
	go func() {
		cl.done <- c.Run(ctx, func(u subscriber.Update) error {
			cl.mu.Lock()
			cl.got[u.Topic] = append(cl.got[u.Topic], u.Cursor)
			cl.mu.Unlock()
			return nil
		})
	}()
	t.Cleanup(func() { cancel(); <-cl.done })
	return cl
}

func (cl *client) eventsOf(kind subscriber.EventKind) int {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	n := 0
	for _, e := range cl.events {
		if e.Kind == kind {
			n++
		}
	}
	return n
}

// expectExactly waits until the client has every acknowledged update after from, then checks it has exactly
// those, in order: no gap and no duplicate.
func (cl *client) expectExactly(t *testing.T, acked map[string][]uint64, from uint64) {
	t.Helper()
	want := map[string][]uint64{}
	for topic, cursors := range acked {
		for _, c := range cursors {
			if c > from {
				want[topic] = append(want[topic], c)
			}
		}
	}
	have := func() map[string][]uint64 {
		cl.mu.Lock()
		defer cl.mu.Unlock()
		got := map[string][]uint64{}
		for topic, cursors := range cl.got {
			for _, c := range cursors {
				if c > from {
					got[topic] = append(got[topic], c)
				}
			}
		}
		return got
	}
	complete := func(got map[string][]uint64) bool {
		for topic, w := range want {
			if len(got[topic]) < len(w) {
				return false
			}
		}
		return true
	}
	deadline := time.Now().Add(30 * time.Second)
	got := have()
	for !complete(got) && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
		got = have()
	}
	for topic, w := range want {
		if !slices.Equal(got[topic], w) {
			missing, extra := diff(w, got[topic])
			t.Errorf("%s, %s: %d updates, want %d: missing %v, unexpected %v", cl.name, topic, len(got[topic]), len(w),
				head(missing), head(extra))
		}
	}
}

func diff(want, got []uint64) (missing, extra []uint64) {
	for _, w := range want {
		if !slices.Contains(got, w) {
			missing = append(missing, w)
		}
	}
	seen := map[uint64]int{}
	for _, g := range got {
		seen[g]++
		if !slices.Contains(want, g) || seen[g] > 1 {
			extra = append(extra, g)
		}
	}
	return missing, extra
}

func head(s []uint64) []uint64 { return s[:min(len(s), 10)] }
