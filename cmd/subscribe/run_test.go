package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/livepush/livepush/internal/testlog"

	"github.com/livepush/livepush/internal/cli"
	"github.com/livepush/livepush/internal/stream"
	"github.com/livepush/livepush/push"
	"github.com/livepush/livepush/push/pushtest"
)

func noEnv(string) string { return "" }

// runFor runs the command with args and returns its error and output, failing if it takes longer than 10s.
func runFor(t *testing.T, ctx context.Context, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errs testlog.Buffer
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	err = run(ctx, args, noEnv, &out, &errs)
	if ctx.Err() == context.DeadlineExceeded {
		t.Fatalf("subscribe %v still running after 10s; stderr:\n%s", args, errs.String())
	}
	return out.String(), errs.String(), err
}

func TestJSONCount(t *testing.T) {
	n := pushtest.StartNATS(t, stream.Config{})
	payloads := map[uint64]string{}
	for i := range 3 {
		p := pushtest.Quote("AAPL", 180+float64(i))
		payloads[n.Publish(t, "market.AAPL", p)] = p
	}
	game := pushtest.Score("nba", "g-1", 88, 85)
	payloads[n.Publish(t, "sports.nba.g-1", game)] = game
	e := n.StartEdge(t, "127.0.0.1:0", push.Config{}, push.HubOptions{})
	e.WaitHead(t, 4)

	for _, tr := range []string{"sse", "ws", "poll"} {
		t.Run(tr, func(t *testing.T) {
			// Resume after the first quote: the two later quotes and the score, exactly, then exit.
			out, errs, err := runFor(t, t.Context(), "-url", e.URL, "-transport", tr, "-topic", "market.AAPL,sports.>",
				"-json", "-cursor", "1", "-count", "3")
			if err != nil {
				t.Fatalf("run: %v\nstderr: %s", err, errs)
			}
			lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
			if len(lines) != 3 {
				t.Fatalf("%d lines, want 3:\n%s", len(lines), out)
			}
			for i, line := range lines {
				var got struct {
					Topic, Cursor, Kind string
					Data                json.RawMessage
				}
				if err := json.Unmarshal([]byte(line), &got); err != nil {
					t.Fatalf("line %q: %v", line, err)
				}
				cursor, _ := strconv.ParseUint(got.Cursor, 10, 64)
				if cursor != uint64(i+2) || string(got.Data) != payloads[cursor] ||
					!strings.Contains(payloads[cursor], `"topic":"`+got.Topic+`"`) ||
					!strings.Contains(payloads[cursor], `"kind":"`+got.Kind+`"`) {
					t.Errorf("line %d: %s\nwant cursor %d with data %s", i, line, i+2, payloads[uint64(i+2)])
				}
			}
		})
	}
}

func TestReadableLines(t *testing.T) {
	n := pushtest.StartNATS(t, stream.Config{})
	n.Publish(t, "market.AAPL", pushtest.Quote("AAPL", 189.12))
	n.Publish(t, "sports.nba.g-0142", pushtest.Score("nba", "g-0142", 88, 85))
	n.Publish(t, "market.ODD", `{"topic":"market.ODD","kind":"halt","reason":"news"}`)
	e := n.StartEdge(t, "127.0.0.1:0", push.Config{}, push.HubOptions{})
	e.WaitHead(t, 3)
	out, errs, err := runFor(t, t.Context(), "-url", e.URL, "-topic", "market.*", "-topic", "sports.>", "-count", "3")
	if err != nil {
		t.Fatalf("run: %v\nstderr: %s", err, errs)
	}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != 3 {
		t.Fatalf("%d lines, want 3:\n%s", len(lines), out)
	}
	for i, want := range [][]string{
		{"#1", "market.AAPL", "AAPL", "189.12", "+89.12", "bid 189.11", "ask 189.13", "vol 1,234,567"},
		{"#2", "sports.nba.g-0142", "NBA", "Lakers 88 – 85 Celtics", "Q3 07:42", "live", "3PT Curry"},
		{"#3", "market.ODD", `{"topic":"market.ODD","kind":"halt","reason":"news"}`},
	} {
		for _, w := range want {
			if !strings.Contains(lines[i], w) {
				t.Errorf("line %q lacks %q", lines[i], w)
			}
		}
	}
	// Aligned: the topic column starts and ends at the same place on every line.
	at := strings.Index(lines[0], "market.AAPL")
	if strings.Index(lines[1], "sports.nba") != at || strings.Index(lines[2], "market.ODD") != at ||
		strings.Index(lines[0], "  AAPL  ") != strings.Index(lines[1], "  NBA  ") {
		t.Errorf("columns not aligned:\n%s", out)
	}
	t.Logf("\n%s", out)
}

func TestUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-transport", "bogus", "-topic", "market.AAPL"}, `-transport "bogus": use sse, ws or poll`},
		{[]string{}, "no topic"},
		{[]string{"-topic", "market.AAPL", "-url", "localhost:8080"}, "bad edge URL"},
		{[]string{"-topic", "market.AAPL", "-cursor", "abc"}, "not a cursor"},
		{[]string{"-topic", "market.AAPL", "-count", "-1"}, "-count: not negative"},
	} {
		_, errs, err := runFor(t, t.Context(), tc.args...)
		var usage cli.UsageError
		if !errors.As(err, &usage) || !strings.Contains(err.Error()+errs, tc.want) {
			t.Errorf("subscribe %v: %v (stderr %q), want a usage error saying %q", tc.args, err, errs, tc.want)
		}
	}
	// The environment works as the flags do.
	env := map[string]string{"SUBSCRIBE_TRANSPORT": "carrier-pigeon", "SUBSCRIBE_TOPICS": "market.AAPL"}
	err := run(t.Context(), nil, func(k string) string { return env[k] }, &bytes.Buffer{}, &bytes.Buffer{})
	if !errors.As(err, new(cli.UsageError)) || !strings.Contains(err.Error(), "carrier-pigeon") {
		t.Errorf("SUBSCRIBE_TRANSPORT=carrier-pigeon: %v, want a usage error", err)
	}
}

func TestInvalidTopicShowsEdgeMessage(t *testing.T) {
	n := pushtest.StartNATS(t, stream.Config{})
	e := n.StartEdge(t, "127.0.0.1:0", push.Config{}, push.HubOptions{})
	for _, tr := range []string{"sse", "ws", "poll"} {
		_, _, err := runFor(t, t.Context(), "-url", e.URL, "-transport", tr, "-topic", "market.aapl")
		if !errors.As(err, new(cli.UsageError)) || !strings.Contains(err.Error(), `invalid topic "market.aapl"`) ||
			strings.Contains(err.Error(), "subscriber:") {
			t.Errorf("%s: %v, want a usage error with the edge's message", tr, err)
		}
	}
}

// An edge unreachable at start is not fatal: the command says so and keeps trying until one comes up.
func TestUnreachableAtStartKeepsTrying(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	n := pushtest.StartNATS(t, stream.Config{})
	seq := n.Publish(t, "market.AAPL", pushtest.Quote("AAPL", 1))

	var out, errs testlog.Buffer
	done := make(chan error, 1)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	go func() {
		done <- run(ctx, []string{"-url", "http://" + addr, "-topic", "market.AAPL", "-count", "1", "-json"}, noEnv, &out, &errs)
	}()
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(errs.String(), "retrying in") {
		if time.Now().After(deadline) {
			t.Fatalf("no retry notice on stderr: %q", errs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	n.StartEdge(t, addr, push.Config{}, push.HubOptions{})
	if err := <-done; err != nil {
		t.Fatalf("run: %v\nstderr: %s", err, errs.String())
	}
	if !strings.Contains(out.String(), `"cursor":"`+strconv.FormatUint(seq, 10)+`"`) {
		t.Errorf("stdout %q, want the update at %d", out.String(), seq)
	}
	if !strings.Contains(errs.String(), "connection refused") || !strings.Contains(errs.String(), "connected to http://"+addr) {
		t.Errorf("stderr %q, want the failure and the recovery", errs.String())
	}
}

// Ctrl-C (the context ending) exits cleanly.
func TestInterruptExitsZero(t *testing.T) {
	n := pushtest.StartNATS(t, stream.Config{})
	e := n.StartEdge(t, "127.0.0.1:0", push.Config{}, push.HubOptions{})
	ctx, cancel := context.WithCancel(t.Context())
	time.AfterFunc(300*time.Millisecond, cancel)
	_, errs, err := runFor(t, ctx, "-url", e.URL, "-transport", "ws", "-topic", "market.*")
	if err != nil || cli.Exit("subscribe", err) != 0 {
		t.Fatalf("interrupted run: %v (stderr %q), want nil", err, errs)
	}
}

// Against an edge that checks tokens: -token-file is read at connect and the stream flows; a bad token is a clear
// error and a non-zero exit.
func TestToken(t *testing.T) {
	n := pushtest.StartNATS(t, stream.Config{})
	n.Publish(t, "market.AAPL", pushtest.Quote("AAPL", 189.12))
	e := n.StartEdge(t, "127.0.0.1:0", push.Config{Auth: pushtest.Authenticator(t)}, push.HubOptions{})
	e.WaitHead(t, 1)
	tok, err := pushtest.Token([]string{"market.>"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(file, []byte(tok+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, errs, err := runFor(t, t.Context(), "-url", e.URL, "-topic", "market.*", "-token-file", file, "-count", "1")
	if err != nil || !strings.Contains(out, "market.AAPL") {
		t.Fatalf("with a token: %v, output %q\nstderr: %s", err, out, errs)
	}
	_, errs, err = runFor(t, t.Context(), "-url", e.URL, "-topic", "market.*", "-token", "not-a-jwt")
	if err == nil || cli.Exit("subscribe", err) == 0 || !strings.Contains(err.Error(), "malformed token") {
		t.Errorf("with a bad token: %v, want a non-zero exit saying the token is malformed\nstderr: %s", err, errs)
	}
}
