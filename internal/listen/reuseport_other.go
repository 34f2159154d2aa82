//go:build !linux

package listen

import "errors"

func setReusePort(uintptr) error {
	return errors.New("listen: SO_REUSEPORT is only supported on Linux here")
}
