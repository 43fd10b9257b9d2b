//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package devserver

// dirLock does nothing where flock is unavailable: two processes on one
// state directory are not detected there.
type dirLock struct{}

func acquireDirLock(string) (*dirLock, error) { return &dirLock{}, nil }

func (*dirLock) release() {}
