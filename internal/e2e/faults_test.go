package e2e

import (
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/livepush/livepush/internal/natsconn"
	"github.com/livepush/livepush/subscriber"
)

var (
	topics   = []string{"market.E2EA", "market.E2EB", "sports.e2e.m-1"}
	patterns = []string{"market.*", "sports.>"}
)

// clientsOn starts one subscriber-package client per transport on urls.
func clientsOn(t *testing.T, urls ...string) []*client {
	var cls []*client
	for _, tr := range []string{subscriber.TransportSSE, subscriber.TransportWebSocket, subscriber.TransportPoll} {
		cls = append(cls, startClient(t, tr, subscriber.Options{URLs: urls, Transport: tr, Topics: patterns}))
	}
	return cls
}

// waitLive waits until every client has received an update.
func waitLive(t *testing.T, cls []*client) {
	t.Helper()
	for _, cl := range cls {
		for deadline := time.Now().Add(20 * time.Second); cl.c.Cursor() == 0; time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s client received nothing", cl.name)
			}
		}
	}
}

// NATS is killed under load and restarted on the same storage: the edge stays up, says it is not ready meanwhile,
// its clients stay connected, and every update published meanwhile arrives once.
func TestNATSRestartUnderLoad(t *testing.T) {
	n := startNATS(t, 0, t.TempDir())
	e := startEdge(t, n.url)
	ld := startLoad(t, n.url, topics, 100, 1)
	cls := clientsOn(t, e.url)
	waitLive(t, cls)
	ld.waitPublished(t, 50)

	n.signal(syscall.SIGKILL)
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if ok, _ := e.ready(); !ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("/readyz still says ready with NATS gone")
		}
	}
	time.Sleep(2 * time.Second) // publishes pile up in the publisher's retries
	n.restart()
	e.waitReady(t)
	ld.waitPublished(t, 100)
	acked := ld.finish()

	for _, cl := range cls {
		cl.expectExactly(t, acked, 0)
		if cl.name != subscriber.TransportPoll { // a long poll ends and starts again by design
			if r := cl.eventsOf(subscriber.Reconnecting); r != 0 {
				t.Errorf("%s client reconnected %d times while NATS restarted; heartbeats should keep it connected", cl.name, r)
			}
		}
	}
	if e.cmd.ProcessState != nil {
		t.Errorf("the edge exited while NATS was away:\n%s", e.logs())
	}
}

// A three-node NATS cluster keeps the stream in three replicas; the node leading the stream is killed under load:
// subscribers see no gap.
func TestNATSClusterNodeLoss(t *testing.T) {
	nodes, all := startCluster(t)
	start := time.Now()
	ld := startLoad(t, all, topics, 100, 3) // creates the stream with three replicas, waiting for the cluster
	t.Logf("stream created on the cluster after %v", time.Since(start))
	e := startEdge(t, all, "-stream-replicas", "3")
	cls := clientsOn(t, e.url)
	waitLive(t, cls)
	ld.waitPublished(t, 20)
	from := ld.last() // the load began before the clients: what came before this may be folded into snapshots
	ld.waitPublished(t, 50)

	leader := streamLeader(t, all)
	var victim *natsNode
	for i, n := range nodes {
		if fmt.Sprintf("n%d", i) == leader {
			victim = n
		}
	}
	if victim == nil {
		t.Fatalf("stream leader %q is not one of the nodes", leader)
	}
	victim.signal(syscall.SIGKILL)
	killed := time.Now()
	ld.waitPublished(t, 200)
	t.Logf("killed the stream leader %s; 200 more updates acknowledged %v later", leader, time.Since(killed))
	acked := ld.finish()
	for _, cl := range cls {
		cl.expectExactly(t, acked, from)
	}
	if t.Failed() {
		t.Logf("edge log:\n%s", e.logs())
	}
}

// startCluster runs three clustered nats-servers (n0, n1, n2) and returns them and their client URLs, comma-separated.
func startCluster(t *testing.T) ([]*natsNode, string) {
	ports, routes := make([]int, 3), make([]int, 3)
	for i := range 3 {
		ports[i], routes[i] = freePort(t), freePort(t)
	}
	nodes := make([]*natsNode, 3)
	var urls []string
	for i := range 3 {
		var peers []string
		for j := range 3 {
			if j != i {
				peers = append(peers, fmt.Sprintf("nats://127.0.0.1:%d", routes[j]))
			}
		}
		nodes[i] = startNATS(t, ports[i], t.TempDir(), "-n", fmt.Sprintf("n%d", i), "--cluster_name", "livepush",
			"--cluster", fmt.Sprintf("nats://127.0.0.1:%d", routes[i]), "--routes", strings.Join(peers, ","))
		urls = append(urls, nodes[i].url)
	}
	return nodes, strings.Join(urls, ",")
}

// The deployment a trading desk runs: a three-node NATS cluster with the stream in three replicas and three edges.
// One edge is killed under load; every client, whichever edge it was on and whatever its transport, carries on
// elsewhere with every update exactly once.
func TestThreeEdgesOnAClusterLoseOne(t *testing.T) {
	_, all := startCluster(t)
	ld := startLoad(t, all, topics, 200, 3)
	var edges []*edge
	for range 3 {
		edges = append(edges, startEdge(t, all, "-stream-replicas", "3"))
	}
	var cls []*client
	for i := range edges { // each group of clients starts on another edge and fails over to the next
		var urls []string
		for j := range edges {
			urls = append(urls, edges[(i+j)%len(edges)].url)
		}
		cls = append(cls, clientsOn(t, urls...)...)
	}
	waitLive(t, cls)
	ld.waitPublished(t, 50)
	from := ld.last() // the load began before the clients: what came before this may be folded into snapshots
	ld.waitPublished(t, 100)

	edges[0].signal(syscall.SIGKILL)
	ld.waitPublished(t, 400)
	acked := ld.finish()
	for i, cl := range cls {
		cl.expectExactly(t, acked, from)
		if moved := cl.eventsOf(subscriber.Reconnecting) > 0; moved != (i < 3) {
			t.Errorf("%s client (group %d) reconnected: %v; only the killed edge's clients should have", cl.name, i/3, moved)
		}
	}
}

func streamLeader(t *testing.T, url string) string {
	t.Helper()
	nc, err := natsconn.Connect(url, "e2e-probe", quiet())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		s, err := js.Stream(t.Context(), "LIVEPUSH")
		if err == nil && s.CachedInfo().Cluster != nil && s.CachedInfo().Cluster.Leader != "" {
			return s.CachedInfo().Cluster.Leader
		}
		if time.Now().After(deadline) {
			t.Fatalf("no stream leader: %v", err)
		}
	}
}

// Two edges; one is killed (SIGKILL) under load: its clients move to the other and resume from their cursor with
// no gap and no duplicate.
func TestEdgeLossUnderLoad(t *testing.T) {
	n := startNATS(t, 0, t.TempDir())
	a := startEdge(t, n.url)
	b := startEdge(t, n.url)
	ld := startLoad(t, n.url, topics, 200, 1)
	cls := clientsOn(t, a.url, b.url)
	waitLive(t, cls)
	ld.waitPublished(t, 100)

	a.signal(syscall.SIGKILL)
	ld.waitPublished(t, 300)
	acked := ld.finish()
	for _, cl := range cls {
		cl.expectExactly(t, acked, 0)
		if cl.eventsOf(subscriber.Reconnecting) == 0 {
			t.Errorf("%s client never noticed its edge die", cl.name)
		}
	}
}

// SIGTERM drains an edge: it stops accepting, tells SSE clients to come back later and closes WebSockets with
// 1012, exits within its drain timeout, and its clients resume on the other edge with nothing lost.
func TestGracefulDrain(t *testing.T) {
	n := startNATS(t, 0, t.TempDir())
	a := startEdge(t, n.url, "-drain-timeout", "3s")
	b := startEdge(t, n.url)
	ld := startLoad(t, n.url, topics, 200, 1)
	cls := clientsOn(t, a.url, b.url)
	waitLive(t, cls)
	ld.waitPublished(t, 100)

	took, err := a.signal(syscall.SIGTERM)
	if err != nil {
		t.Errorf("drained edge exited with %v after %v:\n%s", err, took, a.logs())
	}
	if took > 5*time.Second {
		t.Errorf("drain took %v with -drain-timeout 3s", took)
	}
	ld.waitPublished(t, 300)
	acked := ld.finish()
	for _, cl := range cls {
		cl.expectExactly(t, acked, 0)
	}
	for _, cl := range cls[:2] { // SSE and WebSocket are told why
		cl.mu.Lock()
		told := false
		for _, e := range cl.events {
			told = told || e.Kind == subscriber.Closed && strings.Contains(e.Reason+e.Message, "restart")
		}
		cl.mu.Unlock()
		if !told {
			t.Errorf("%s client was not told the edge was restarting", cl.name)
		}
	}
}
