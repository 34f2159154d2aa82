package natsconn

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

var (
	// ErrNotReady is returned when the server does not accept connections in time.
	ErrNotReady = errors.New("natsconn: server not ready for connections")
	// ErrStoreInUse is returned when another process holds the store directory.
	ErrStoreInUse = errors.New("natsconn: JetStream store directory in use")
)

// EmbeddedOptions configure an embedded server.
type EmbeddedOptions struct {
	// StoreDir holds JetStream's files. It must be set: without it every embedded server in the machine would share
	// $TMPDIR/nats/jetstream.
	StoreDir string
	// Listen is a host:port for TCP clients, such as "127.0.0.1:4222" (port 0: any free one). Empty: in-process
	// connections only.
	Listen string
	// Name of the server. Zero: "livepush-embedded".
	Name string
	// Log receives the server's notices and warnings. Nil: the server logs nothing.
	Log *slog.Logger
}

// Embedded is a running embedded nats-server.
type Embedded struct {
	*server.Server
	unlock func() // releases the store directory
}

// StartEmbedded starts a server and waits until it accepts connections. It holds the store directory until Stop:
// a second server on the same directory gets ErrStoreInUse.
func StartEmbedded(o EmbeddedOptions) (e *Embedded, err error) {
	if o.StoreDir == "" {
		return nil, errors.New("natsconn: StoreDir is required")
	}
	unlock, err := lockStore(o.StoreDir)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			unlock()
		}
	}()
	if o.Name == "" {
		o.Name = "livepush-embedded"
	}
	opts := &server.Options{
		ServerName: o.Name,
		JetStream:  true,
		StoreDir:   o.StoreDir,
		NoSigs:     true,
		NoLog:      o.Log == nil,
		DontListen: o.Listen == "",
	}
	if o.Listen != "" {
		host, port, err := net.SplitHostPort(o.Listen)
		if err != nil {
			return nil, fmt.Errorf("natsconn: listen address %q: %w", o.Listen, err)
		}
		if opts.Port, err = strconv.Atoi(port); err != nil {
			return nil, fmt.Errorf("natsconn: listen port %q: %w", port, err)
		}
		if opts.Port == 0 {
			opts.Port = server.RANDOM_PORT // nats-server takes 0 for its default, 4222; 0 means any free port here
		}
		opts.Host = host
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("natsconn: %w", err)
	}
	if o.Log != nil {
		ns.SetLoggerV2(slogAdapter{o.Log.With("component", "nats-server")}, false, false, false)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		ns.Shutdown()
		return nil, ErrNotReady
	}
	return &Embedded{Server: ns, unlock: unlock}, nil
}

// Connect opens a client connection to the server in process, with the given options added.
func (s *Embedded) Connect(opts ...nats.Option) (*nats.Conn, error) {
	return nats.Connect("", append([]nats.Option{nats.InProcessServer(s.Server)}, opts...)...)
}

// Stop shuts the server down and waits until it has.
func (s *Embedded) Stop() {
	s.Shutdown()
	s.WaitForShutdown()
	s.unlock()
}

type slogAdapter struct{ log *slog.Logger }

func (a slogAdapter) Noticef(format string, v ...any) { a.log.Debug(fmt.Sprintf(format, v...)) }
func (a slogAdapter) Warnf(format string, v ...any)   { a.log.Warn(fmt.Sprintf(format, v...)) }
func (a slogAdapter) Fatalf(format string, v ...any)  { a.log.Error(fmt.Sprintf(format, v...)) }
func (a slogAdapter) Errorf(format string, v ...any)  { a.log.Error(fmt.Sprintf(format, v...)) }
func (a slogAdapter) Debugf(format string, v ...any)  { a.log.Debug(fmt.Sprintf(format, v...)) }
func (a slogAdapter) Tracef(format string, v ...any)  { a.log.Debug(fmt.Sprintf(format, v...)) }
