package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/livepush/livepush/internal/cli"
	"github.com/livepush/livepush/internal/proxytest"
	"github.com/livepush/livepush/internal/stream"
	"github.com/livepush/livepush/push"
	"github.com/livepush/livepush/push/pushtest"
)

// The test binary is also the workers' binary: the coordinator re-executes itself with -worker.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "-worker" {
		os.Exit(cli.Exit("pushbench worker", runWorker(context.Background(), os.Stdin, os.Stdout)))
	}
	os.Exit(m.Run())
}

type testEdge struct {
	url, nats string
	n         *pushtest.NATS
	edge      *pushtest.Edge
}

// startEdge runs an embedded nats-server reachable over TCP (the publisher's way in) and an edge on it.
func startEdge(t *testing.T) testEdge {
	t.Helper()
	n := pushtest.StartNATS(t, stream.Config{})
	e := n.StartEdge(t, "127.0.0.1:0", push.Config{}, push.HubOptions{})
	return testEdge{url: e.URL, nats: n.URL, n: n, edge: e}
}

func noEnv(string) string { return "" }

// The lean SSE and WebSocket connections count what the edge delivers: a payload published with a skipped "n" is a
// gap, one published twice a duplicate, one of another run stale; the rest arrive intact, in order.
func TestConnectionsCountGapsAndDuplicates(t *testing.T) {
	te := startEdge(t)
	cfg := &Config{URLs: []string{te.url}, Transport: trMix, Patterns: []string{"market.GAP"}, Conns: 2,
		ConnsPerIP: 20000, ConnectTimeout: 5 * time.Second, IdleTimeout: 10 * time.Second, ReadBuffer: 256}
	if err := cfg.resolveSources(); err != nil {
		t.Fatal(err)
	}
	cs := &conns{cfg: cfg, run: "r1", st: newLiveStats(2), pace: newPacer(1000)}
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	for i := range 2 {
		wg.Go(func() { cs.runStream(ctx, i, cfg.transportFor(i)) })
	}
	defer func() {
		cancel()
		wg.Wait()
	}()
	waitFor(t, "2 connections up", func() bool { return cs.st.connsUp.Load() == 2 })

	payload := func(run string, n int) string {
		return fmt.Sprintf(`{"topic":"market.GAP","kind":"quote","price":1,"run":"%s","n":%d,"ts":"%s"}`, run, n,
			time.Now().UTC().Format(time.RFC3339Nano))
	}
	for _, p := range []string{
		payload("r1", 1), payload("r1", 2), payload("r1", 4), // 3 is missing
		payload("r1", 4),                   // published twice: a duplicate with a new cursor
		payload("other", 99),               // another run's: stale, not checked
		payload("r1", 5), payload("r1", 6), // back in order
	} {
		te.n.Publish(t, "market.GAP", p)
	}
	waitFor(t, "14 deliveries", func() bool { return cs.st.deliveries.Load() == 14 })
	s := cs.st.snapshotStats()
	if s.Gaps != 2 || s.Missed != 2 || s.Duplicates != 2 || s.Stale != 2 || s.Snapshot != 2 || s.OutOfOrder != 0 ||
		s.Connects != 2 || sum(s.ConnectErrors) != 0 || s.Requests != 2 {
		t.Fatalf("stats %+v", s)
	}
	// Latency is measured for the updates after the baseline, stale ones excepted: 2 × (2, 4, 4, 5, 6).
	if s.Latency.Count() != 10 || s.Latency.Max() > uint64(5*time.Second) {
		t.Errorf("latency count %d max %v", s.Latency.Count(), time.Duration(s.Latency.Max()))
	}
	if s.BytesRead < 14*100 || s.BytesWritten == 0 {
		t.Errorf("bytes read %d written %d", s.BytesRead, s.BytesWritten)
	}
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s within 10s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A tiny run of the whole command, as CI runs it: every transport, in process and in worker processes.
func TestRunTiny(t *testing.T) {
	te := startEdge(t)
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"mix-in-process", []string{"-transport", "mix", "-conns", "20", "-in-process"}},
		{"ws-2-workers", []string{"-transport", "ws", "-conns", "10", "-workers", "2"}},
		{"longpoll", []string{"-transport", "longpoll", "-conns", "6", "-in-process"}},
		{"poll", []string{"-transport", "poll", "-conns", "6", "-in-process", "-poll-interval", "200ms"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			report := filepath.Join(t.TempDir(), "report.json")
			args := append([]string{"-url", te.url, "-nats", te.nats, "-publish-rate", "200", "-symbols", "20",
				"-topics-per-conn", "5", "-warmup", "500ms", "-duration", "1500ms", "-strict", "-report", report,
				"-edge-pid", strconv.Itoa(os.Getpid()), "-progress", "500ms"}, tc.args...)
			var stdout, stderr bytes.Buffer
			if err := run(t.Context(), args, noEnv, &stdout, &stderr); err != nil {
				t.Fatalf("run: %v\n%s\n%s", err, stdout.String(), stderr.String())
			}
			b, err := os.ReadFile(report)
			if err != nil {
				t.Fatal(err)
			}
			var r Report
			if err := json.Unmarshal(b, &r); err != nil {
				t.Fatalf("report: %v\n%s", err, b)
			}
			var raw map[string]any
			json.Unmarshal(b, &raw)
			for _, k := range []string{"command", "config", "connections", "deliveries", "latency", "integrity",
				"wire", "publisher", "cpu", "memory", "staleness", "edge_latency", "pass"} {
				if _, ok := raw[k]; !ok {
					t.Errorf("report has no %q", k)
				}
			}
			conns, _ := strconv.Atoi(tc.args[3])
			if !r.Pass || r.Deliveries.Total == 0 || r.Latency.Count == 0 || r.Integrity.Gaps != 0 ||
				r.Connections.UpAtEnd != int64(conns) || r.Wire.BytesPerUpdate <= 0 || r.Wire.RequestsRun < int64(conns) ||
				r.Publisher == nil || r.Publisher.Acked == 0 || r.CPU.EdgeSeconds == nil || r.Command[0] != "pushbench" ||
				r.Staleness == nil || r.Staleness.Count == 0 || r.EdgeLatency == nil ||
				tc.name != "poll" && (r.EdgeLatency.Count == 0 || r.EdgeLatency.P99 <= 0) { // polls' /api/snapshot is not timed
				t.Errorf("report %s", b)
			}
			if !strings.Contains(stdout.String(), "PASS") || !strings.Contains(stderr.String(), "upd/s") {
				t.Errorf("stdout:\n%s\nstderr:\n%s", stdout.String(), stderr.String())
			}
			if e := r.EdgeLatency; e != nil && tc.name != "poll" &&
				!strings.Contains(stdout.String(), fmt.Sprintf("n=%d writes)", e.Count)) {
				t.Errorf("no edge latency row:\n%s", stdout.String())
			}
			if tc.name == "ws-2-workers" && r.Connections.Workers != 2 {
				t.Errorf("%d workers", r.Connections.Workers)
			}
		})
	}
}

// A run through the HTTPS nginx a deployment puts in front of its edges: -url https:// and -ca the proxy's
// self-signed certificate, in process and in worker processes (which load the CA themselves).
func TestRunOverTLS(t *testing.T) {
	te := startEdge(t)
	p := proxytest.StartNginxTLS(t, te.edge.Addr)
	ca := filepath.Join(t.TempDir(), "ca.pem")
	p.Cert.Write(t, ca, filepath.Join(t.TempDir(), "key.pem"))
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"mix-2-workers", []string{"-transport", "mix", "-conns", "10", "-workers", "2"}},
		{"longpoll", []string{"-transport", "longpoll", "-conns", "4", "-in-process"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			report := filepath.Join(t.TempDir(), "report.json")
			args := append([]string{"-url", p.URL, "-ca", ca, "-nats", te.nats, "-publish-rate", "100", "-symbols", "10",
				"-topics-per-conn", "5", "-warmup", "500ms", "-duration", "1500ms", "-strict", "-report", report,
				"-edge-pid", strconv.Itoa(os.Getpid()), "-progress", "0"}, tc.args...)
			var stdout, stderr bytes.Buffer
			if err := run(t.Context(), args, noEnv, &stdout, &stderr); err != nil {
				t.Fatalf("run: %v\n%s\n%s\n%s", err, stdout.String(), stderr.String(), p.Logs())
			}
			var r Report
			b, _ := os.ReadFile(report)
			if err := json.Unmarshal(b, &r); err != nil {
				t.Fatalf("report: %v\n%s", err, b)
			}
			conns, _ := strconv.Atoi(tc.args[3])
			if !r.Pass || r.Deliveries.Total == 0 || r.Integrity.Gaps != 0 || r.Connections.UpAtEnd != int64(conns) ||
				len(r.EdgeLag) != 1 || r.EdgeLag[0].Error != "" || r.EdgeLag[0].Edge == 0 {
				t.Errorf("report %s", b)
			}
		})
	}
	t.Run("catchup", func(t *testing.T) {
		report := filepath.Join(t.TempDir(), "report.json")
		var stdout, stderr bytes.Buffer
		err := run(t.Context(), []string{"-url", p.URL, "-ca", ca, "-nats", te.nats, "-catchup", "2000", "-transport", "ws",
			"-topics-per-conn", "3", "-strict", "-report", report}, noEnv, &stdout, &stderr)
		if err != nil {
			t.Fatalf("run: %v\n%s\n%s", err, stdout.String(), stderr.String())
		}
		var r Report
		b, _ := os.ReadFile(report)
		if err := json.Unmarshal(b, &r); err != nil || r.Catchup == nil || !r.Pass || r.Catchup.BacklogGot != 2000 || !r.Catchup.Live {
			t.Errorf("report %v %s", err, b)
		}
	})
	// Without -ca the proxy's certificate is not trusted, and the run says so.
	var stdout, stderr bytes.Buffer
	err := run(t.Context(), []string{"-url", p.URL, "-transport", "ws", "-conns", "1", "-in-process", "-warmup", "0s",
		"-duration", "500ms", "-strict", "-progress", "0", "-edge-pid", strconv.Itoa(os.Getpid()), "-ramp-timeout", "3s"},
		noEnv, &stdout, &stderr)
	if err == nil || !strings.Contains(stdout.String()+stderr.String(), "certificate") {
		t.Errorf("a run against an untrusted certificate: %v, want a failure naming the certificate\n%s\n%s", err,
			stdout.String(), stderr.String())
	}
}

func TestCatchup(t *testing.T) {
	te := startEdge(t)
	for _, tr := range []string{trWS, trLongPoll} {
		t.Run(tr, func(t *testing.T) {
			report := filepath.Join(t.TempDir(), "report.json")
			var stdout, stderr bytes.Buffer
			err := run(t.Context(), []string{"-url", te.url, "-nats", te.nats, "-catchup", "3000", "-transport", tr,
				"-topics-per-conn", "3", "-strict", "-report", report}, noEnv, &stdout, &stderr)
			if err != nil {
				t.Fatalf("run: %v\n%s\n%s", err, stdout.String(), stderr.String())
			}
			var r Report
			b, _ := os.ReadFile(report)
			if err := json.Unmarshal(b, &r); err != nil || r.Catchup == nil {
				t.Fatalf("report: %v\n%s", err, b)
			}
			c := r.Catchup
			if !r.Pass || c.BacklogGot != 3000 || !c.Live || c.Gaps != 0 || c.Duplicates != 0 || c.BacklogMs <= 0 ||
				c.LiveMs < c.FirstMs {
				t.Errorf("report %s", b)
			}
		})
	}
}

func TestBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"-transport", "carrier-pigeon"},
		{"-conns", "0"},
		{"-url", "ftp://x"},
		{"-publish-rate", "100"}, // no -nats
		{"-topic", "$SYS.>"},
		{"-topics-per-conn", "65"},
		{"-source-ips", "127.0.0.300"},
		{"-edge-pid", "x"},
		{"-catchup", "10", "-nats", "nats://x", "-transport", "poll"},
		{"-in-process", "-conns", "20000"},
		{"-workers", "2", "-conns", "40000"},
		{"-publish-pattern", "zigzag"},
		{"-url", "https://127.0.0.1:1", "-ca", "/nonexistent/ca.pem"},
		{"-url", "https://127.0.0.1:1", "-ca", "main_test.go"}, // no PEM certificate in it
		{"stray"},
	} {
		var stderr bytes.Buffer
		err := run(t.Context(), args, noEnv, &stderr, &stderr)
		var usage cli.UsageError
		if !errors.As(err, &usage) {
			t.Errorf("%v: %v, want a usage error", args, err)
		}
	}
	var out bytes.Buffer
	if err := run(t.Context(), []string{"-help"}, noEnv, &out, &out); !errors.Is(err, flag.ErrHelp) ||
		!strings.Contains(out.String(), "-publish-rate") || !strings.Contains(out.String(), "PUSHBENCH_CONNS") {
		t.Errorf("-help: %v\n%s", err, out.String())
	}
	// The environment is the flags' fallback.
	cfg, err := parseConfig(nil, func(k string) string {
		return map[string]string{"PUSHBENCH_CONNS": "7", "NATS_URL": "nats://n:1"}[k]
	}, &out)
	if err != nil || cfg.Conns != 7 || cfg.NATS != "nats://n:1" {
		t.Errorf("env: %+v %v", cfg, err)
	}
}

// A strict run whose -edge-pid is gone fails: whatever answered on -url is not the edge being measured.
func TestStrictFailsWhenTheEdgeProcessIsGone(t *testing.T) {
	te := startEdge(t)
	gone := exec.Command("sleep", "60")
	if err := gone.Start(); err != nil {
		t.Fatal(err)
	}
	gone.Process.Kill() // and not reaped until the run is over: a zombie, as a dead child of a script is
	defer gone.Wait()
	args := []string{"-url", te.url, "-nats", te.nats, "-publish-rate", "100", "-symbols", "5", "-conns", "4",
		"-transport", "sse", "-in-process", "-warmup", "300ms", "-duration", "700ms", "-strict", "-progress", "0",
		"-edge-pid", strconv.Itoa(gone.Process.Pid)}
	var stdout, stderr bytes.Buffer
	err := run(t.Context(), args, noEnv, &stdout, &stderr)
	if err == nil || !strings.Contains(stdout.String()+stderr.String(), "edge process") {
		t.Fatalf("strict run against a dead -edge-pid: %v\n%s\n%s", err, stdout.String(), stderr.String())
	}
}
