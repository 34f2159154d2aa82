package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"strconv"
	"strings"

	"github.com/livepush/livepush/internal/cli"
	"github.com/livepush/livepush/subscriber"
)

const defaultURL = "http://localhost:8080"

// errEnough ends Run once -count updates have been printed.
var errEnough = errors.New("enough updates")

// run is the whole command, callable from tests: it returns when ctx ends (nil), after -count updates (nil), or on
// an error the edge or the flags make permanent.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	f := cli.New("subscribe", "subscribe: follow Livepush topics on an edge and print each update", getenv, stderr)
	urls := f.List("url", "SUBSCRIBE_URL", "edge base URL; a comma-separated list fails over from one to the next (default "+defaultURL+")")
	transport := f.String("transport", "SUBSCRIBE_TRANSPORT", subscriber.TransportSSE, "sse, ws (WebSocket) or poll (long polling)")
	topics := f.List("topic", "SUBSCRIBE_TOPICS", "topic pattern to follow, repeatable or comma-separated: market.AAPL, market.*, sports.>")
	asJSON := f.Bool("json", "SUBSCRIBE_JSON", false, `print one JSON object per line: {"topic","cursor","kind","data"}`)
	var cursor uint64
	f.Var((*uint64Value)(&cursor), "cursor", "SUBSCRIBE_CURSOR", "0", "resume after this `cursor` (0: start from the snapshot)")
	maxRate := f.Float64("max-rate", "SUBSCRIBE_MAX_RATE", 0, "at most this many updates per second per topic, latest value winning (0: no limit)")
	count := f.Int("count", "SUBSCRIBE_COUNT", 0, "exit after `N` updates (0: run until interrupted)")
	logLevel := f.String("log-level", "SUBSCRIBE_LOG_LEVEL", "info", "log level: debug, info, warn or error")
	token := f.String("token", "SUBSCRIBE_TOKEN", "", "bearer token (a JWT) for an edge that checks tokens")
	tokenFile := f.String("token-file", "SUBSCRIBE_TOKEN_FILE", "", "read the bearer token from this `file` before every connection, so that whoever renews it can replace it")
	if err := f.Parse(args); err != nil {
		return err
	}
	if *token != "" && *tokenFile != "" {
		return cli.UsageError{Err: errors.New("-token and -token-file: give one of them")}
	}
	log, err := cli.Logger(stderr, *logLevel, "text")
	if err != nil {
		return cli.UsageError{Err: err}
	}
	if len(*urls) == 0 {
		*urls = []string{defaultURL}
	}

	n := &notices{w: stderr}
	c, err := subscriber.New(subscriber.Options{
		URLs:      *urls,
		Transport: *transport,
		Topics:    *topics,
		Cursor:    cursor,
		MaxRate:   *maxRate,
		OnEvent:   n.event,
		Log:       log,
		Token:     tokenSource(*token, *tokenFile),
	})
	switch {
	case errors.Is(err, subscriber.ErrNoTopic):
		return cli.UsageError{Err: errors.New("no topic: give -topic PATTERN (repeatable), as in -topic market.AAPL -topic 'sports.>'")}
	case errors.Is(err, subscriber.ErrUnknownTransport):
		return cli.UsageError{Err: fmt.Errorf("-transport %q: use sse, ws or poll", *transport)}
	case err != nil:
		return cli.UsageError{Err: errors.New(strings.TrimPrefix(err.Error(), "subscriber: "))}
	}

	p := &printer{w: stdout, json: *asJSON}
	printed := 0
	err = c.Run(ctx, func(u subscriber.Update) error {
		if err := p.print(u); err != nil {
			return err
		}
		if printed++; *count > 0 && printed >= *count {
			return errEnough
		}
		return nil
	})
	var refused *subscriber.Error
	switch {
	case err == nil, errors.Is(err, errEnough):
		return nil
	case errors.As(err, &refused) && (refused.Code == "invalid_topic" || refused.Code == "too_many_topics" ||
		refused.Code == "bad_request"):
		return cli.UsageError{Err: errors.New(refused.Message)}
	case errors.As(err, &refused):
		return fmt.Errorf("the edge refused: %s", strings.TrimPrefix(refused.Error(), "subscriber: "))
	}
	return err
}

// notices tells the user on stderr what the connection goes through: failures, reconnects, resets.
type notices struct {
	w       io.Writer
	trouble bool // a failure was reported and the client has not been live since
}

func (n *notices) event(e subscriber.Event) {
	switch e.Kind {
	case subscriber.Reconnecting:
		n.trouble = true
		fmt.Fprintf(n.w, "subscribe: %s: %s; retrying in %v (attempt %d)\n", e.URL, describe(e.Err),
			e.Delay.Round(1e6), e.Attempt)
	case subscriber.Live:
		if n.trouble {
			n.trouble = false
			resume := "from the snapshot"
			if e.Cursor > 0 {
				resume = "resuming after #" + strconv.FormatUint(e.Cursor, 10)
			}
			fmt.Fprintf(n.w, "subscribe: connected to %s, %s\n", e.URL, resume)
		}
	case subscriber.Reset:
		fmt.Fprintf(n.w, "subscribe: %s could not resume: %s; starting again from a fresh snapshot\n", e.URL,
			cmpOr(e.Reason, "cursor older than the stream keeps"))
	case subscriber.Conflated:
		fmt.Fprintf(n.w, "subscribe: %s skipped %d updates superseded by newer ones (the connection could not keep up)\n",
			e.URL, e.Skipped)
	}
}

// describe shortens a connection error to what a person needs: "connect: connection refused" rather than the
// request's whole URL.
func describe(err error) string {
	if err == nil {
		return "connection ended"
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	return strings.TrimPrefix(err.Error(), "subscriber: ")
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

type uint64Value uint64

func (v *uint64Value) String() string { return strconv.FormatUint(uint64(*v), 10) }

func (v *uint64Value) Set(s string) error {
	n, err := strconv.ParseUint(strings.TrimSpace(s), 10, 64)
	if err != nil {
		return fmt.Errorf("not a cursor (a stream sequence number): %q", s)
	}
	*v = uint64Value(n)
	return nil
}

// tokenSource gives the client its token: a fixed one, one read from a file at each connection, or none.
func tokenSource(token, file string) func(context.Context) (string, error) {
	switch {
	case token != "":
		return func(context.Context) (string, error) { return token, nil }
	case file != "":
		return func(context.Context) (string, error) {
			b, err := os.ReadFile(file)
			return strings.TrimSpace(string(b)), err
		}
	}
	return nil
}
