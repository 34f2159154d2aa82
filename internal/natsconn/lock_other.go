//go:build !unix

package natsconn

import (
	"fmt"
	"os"
)

// lockStore only creates dir where advisory file locks are not available: there, do not start two processes on
// one store directory.
func lockStore(dir string) (unlock func(), err error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("natsconn: store directory: %w", err)
	}
	return func() {}, nil
}
