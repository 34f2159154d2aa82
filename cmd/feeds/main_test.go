package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/livepush/livepush/internal/cli"
	"github.com/livepush/livepush/internal/natsconn"
	"github.com/livepush/livepush/internal/natsconn/natsconntest"
	"github.com/livepush/livepush/internal/testlog"
)

func TestPublishesToNATSAndReportsHealth(t *testing.T) {
	ns, err := natsconn.StartEmbedded(natsconn.EmbeddedOptions{StoreDir: t.TempDir(), Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Stop()
	env := map[string]string{"NATS_URL": ns.ClientURL(), "FEEDS_HEALTH_ADDR": "127.0.0.1:0"}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	logs := &testlog.Buffer{}
	go func() {
		done <- run(ctx, []string{"-rate", "100", "-symbols", "AAA,BBB"}, func(k string) string { return env[k] }, logs)
	}()
	// The health endpoint takes a free port and logs which.
	var health string
	for deadline := time.Now().Add(15 * time.Second); health == ""; time.Sleep(20 * time.Millisecond) {
		if m := regexp.MustCompile(`msg="health endpoint listening" addr=(\S+)`).FindStringSubmatch(logs.String()); m != nil {
			health = m[1]
		}
		select {
		case err := <-done:
			t.Fatalf("feeds exited: %v\n%s", err, logs)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no health endpoint logged:\n%s", logs)
		}
	}

	nc, _ := ns.Connect()
	defer nc.Close()
	js, _ := jetstream.New(nc)
	deadline := time.Now().Add(15 * time.Second)
	for {
		str, err := js.Stream(t.Context(), "LIVEPUSH")
		if err == nil && str.CachedInfo().State.Msgs > 50 {
			subjects, _ := str.Info(t.Context(), jetstream.WithSubjectFilter(">"))
			if _, ok := subjects.State.Subjects["market.AAA"]; !ok {
				t.Errorf("no market.AAA among %v", subjects.State.Subjects)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("feeds did not publish: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	resp, err := http.Get("http://" + health + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"published"`) {
		t.Errorf("/healthz: %d %s", resp.StatusCode, body)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("feeds exited with %v on Ctrl-C", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("feeds did not stop")
	}
}

// Feeds publish to a NATS secured as operators run it: a credentials file and TLS with a client certificate, all
// given by the environment.
func TestPublishesToSecuredNATS(t *testing.T) {
	s := natsconntest.Start(t, natsconntest.Options{Auth: natsconntest.Creds, TLS: true, VerifyClients: true})
	env := map[string]string{"NATS_URL": s.URL, "NATS_CREDS": s.CredsFile, "NATS_CA": s.CAFile,
		"NATS_CERT": s.CertFile, "NATS_KEY": s.KeyFile}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"-rate", "100", "-symbols", "AAA"}, func(k string) string { return env[k] }, io.Discard)
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("feeds exited with %v", err)
		}
	}()

	nc, err := natsconn.Config{URL: s.URL, CredsFile: s.CredsFile, CAFile: s.CAFile,
		CertFile: s.CertFile, KeyFile: s.KeyFile}.Connect("test", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		str, err := js.Stream(t.Context(), "LIVEPUSH")
		if err == nil && str.CachedInfo().State.Msgs > 10 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("feeds did not publish through the secured NATS: %v", err)
		}
	}
}

func TestBadConfigurationExitsWithAMessage(t *testing.T) {
	for _, args := range [][]string{{"-symbols", "aapl"}, {"-rate", "-5"}, {"-rate", "fast"}, {"stray"},
		{"-nats-cert", "/some/cert.pem"}, {"-nats-creds", "/nonexistent.creds"}} {
		err := run(t.Context(), args, func(string) string { return "" }, io.Discard)
		var usage cli.UsageError
		if !errors.As(err, &usage) {
			t.Errorf("%v: %v, want a usage error", args, err)
		}
	}
}
