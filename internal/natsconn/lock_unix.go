//go:build unix

package natsconn

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// lockStore takes an exclusive lock on the JetStream store directory dir, so that a second process started on the
// same directory (a second `go run ./cmd/push`, say) refuses before it touches the store: two servers writing one
// store corrupt it. The lock goes with the process, however it ends.
func lockStore(dir string) (unlock func(), err error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("natsconn: store directory: %w", err)
	}
	path := filepath.Join(dir, "livepush.lock")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("natsconn: store lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w: %s is in use by another process (another push running on it?): stop it, "+
				"or give this one its own directory with -data", ErrStoreInUse, dir)
		}
		return nil, fmt.Errorf("natsconn: store lock %s: %w", path, err)
	}
	return func() { f.Close() }, nil
}
