// Package natsconn gets a Livepush process its NATS connection: to a deployment by URL, or to a nats-server embedded
// in the process for the one-command demo and for tests. Either way the connection rides through outages: it
// retries the first connect, reconnects forever, and logs each change of state.
package natsconn

import (
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
)

// Options returns the connection options every Livepush process uses, named name in the server's monitoring.
func Options(name string, log *slog.Logger) []nats.Option {
	return []nats.Option{
		nats.Name(name),
		nats.RetryOnFailedConnect(true),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(500 * time.Millisecond),
		nats.ReconnectJitter(250*time.Millisecond, time.Second),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			log.Warn("NATS disconnected", "err", err)
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("NATS reconnected", "url", nc.ConnectedUrlRedacted())
		}),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			log.Warn("NATS error", "err", err)
		}),
	}
}

// Connect connects to the NATS deployment at url (a comma-separated list of servers is fine). It returns at once
// even if no server answers yet: the connection keeps trying in the background.
func Connect(url, name string, log *slog.Logger) (*nats.Conn, error) {
	return nats.Connect(url, Options(name, log)...)
}
