// Package listen opens the edge's listening socket, optionally shared with other processes (SO_REUSEPORT), so
// several edge processes on one host serve one port, each under the per-process file limit, with the kernel
// spreading new connections across them.
package listen

import (
	"context"
	"net"
	"syscall"
)

// TCP listens on addr. With reusePort, other processes that set it too may listen on the same address.
func TCP(ctx context.Context, addr string, reusePort bool) (net.Listener, error) {
	var lc net.ListenConfig
	if reusePort {
		lc.Control = func(network, address string, c syscall.RawConn) error {
			var opErr error
			err := c.Control(func(fd uintptr) { opErr = setReusePort(fd) })
			if err != nil {
				return err
			}
			return opErr
		}
	}
	return lc.Listen(ctx, "tcp", addr)
}
