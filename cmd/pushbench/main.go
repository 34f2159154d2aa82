// Command pushbench is the load generator of Livepush edges: it holds many subscriber connections over SSE,
// WebSocket, long polling or polling, spread over worker processes and source addresses, optionally publishes its
// own updates into NATS, and measures latency, deliveries, gaps, duplicates, connects, and wire cost per update.
// Run it with -help for every flag; docs/benchmarks.md has the figures it measured.
package main

import (
	"context"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/livepush/livepush/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if len(os.Args) > 1 && os.Args[1] == "-worker" {
		// A worker process started by the coordinator: it speaks JSON lines on stdin and stdout. Interrupts go to
		// the whole process group; the worker ends when the coordinator says stop or its stdin closes.
		signal.Ignore(os.Interrupt, syscall.SIGTERM)
		os.Exit(cli.Exit("pushbench worker", runWorker(context.Background(), os.Stdin, os.Stdout)))
	}
	os.Exit(cli.Exit("pushbench", run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)))
}

// run is the whole command, callable from tests.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cfg, err := parseConfig(args, getenv, stderr)
	if err != nil {
		return err
	}
	if cfg.Catchup > 0 {
		return runCatchup(ctx, cfg, args, stdout, stderr)
	}
	b := &bench{cfg: cfg, args: args, stdout: stdout, stderr: stderr}
	return b.run(ctx)
}
