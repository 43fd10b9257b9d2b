package testinfra

import (
	"os/exec"
	"syscall"
)

// setDeathSignal makes the kernel kill MinIO if the test process dies
// without calling Stop (a panic, a timeout, kill -9).
func setDeathSignal(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
