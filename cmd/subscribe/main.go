// Command subscribe follows Livepush topics on an edge and prints each update: one readable line per update, or
// one JSON object per line with -json. It reconnects and resumes on its own; Ctrl-C ends it.
//
//	subscribe -topic market.AAPL -topic 'sports.>'
//	subscribe -url http://edge1:8080,http://edge2:8080 -transport ws -topic 'market.*' -json -count 10
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/livepush/livepush/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(cli.Exit("subscribe", run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)))
}
