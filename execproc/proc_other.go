//go:build !linux

package execproc

import (
	"os"
	"os/exec"
	"syscall"
)

// Process groups are used on Linux only (see exec_linux.go): here a
// process's children are not killed with it.

func ownProcessGroup(*exec.Cmd) {}

func waitExited(*os.Process) bool { return false }

func killProcessGroup(int) {}

// pipeUnread cannot tell how many bytes wait in a pipe here: stray output
// is found only when it comes in the same read as an answer.
func pipeUnread(syscall.RawConn) (int, bool) { return 0, false }

// pipeSize cannot tell a pipe's capacity here.
func pipeSize(syscall.RawConn) (int, bool) { return 0, false }
