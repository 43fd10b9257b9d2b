package bench

import "syscall"

// deathSignal makes a child process get SIGKILL when this process dies.
func deathSignal() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
