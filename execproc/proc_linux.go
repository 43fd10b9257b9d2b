package execproc

import (
	"os"
	"os/exec"
	"syscall"
	"unsafe"
)

// ownProcessGroup makes cmd start in a process group of its own, whose id
// is its pid, so that killProcessGroup reaches the children it starts too.
func ownProcessGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
}

// waitExited blocks until the started process p has exited, without
// reaping it, and reports whether it could tell. Until p is reaped (by
// Wait) its zombie keeps its pid, and so its group's id, from being used
// again: a killProcessGroup in between reaches only its own group.
func waitExited(p *os.Process) bool {
	var info [128]byte // a siginfo_t
	for {
		_, _, errno := syscall.Syscall6(syscall.SYS_WAITID, 1 /* P_PID */, uintptr(p.Pid),
			uintptr(unsafe.Pointer(&info)), syscall.WEXITED|syscall.WNOWAIT, 0, 0)
		if errno != syscall.EINTR {
			return errno == 0
		}
	}
}

// killProcessGroup sends SIGKILL to every process of the group pgid.
func killProcessGroup(pgid int) {
	syscall.Kill(-pgid, syscall.SIGKILL)
}

// pipeUnread returns how many bytes are waiting in the pipe that rc is an
// end of (written and not yet read); ok is false if that cannot be told.
func pipeUnread(rc syscall.RawConn) (n int, ok bool) {
	var v int32
	var errno syscall.Errno
	if err := rc.Control(func(fd uintptr) {
		_, _, errno = syscall.Syscall(syscall.SYS_IOCTL, fd, syscall.TIOCINQ, uintptr(unsafe.Pointer(&v)))
	}); err != nil || errno != 0 {
		return 0, false
	}
	return int(v), true
}

// pipeSize returns the capacity of the pipe that rc is an end of
// (F_GETPIPE_SZ: 64 KiB by default, less for a user past its pipe quota).
func pipeSize(rc syscall.RawConn) (n int, ok bool) {
	var v uintptr
	var errno syscall.Errno
	if err := rc.Control(func(fd uintptr) {
		v, _, errno = syscall.Syscall(syscall.SYS_FCNTL, fd, 1032 /* F_GETPIPE_SZ */, 0)
	}); err != nil || errno != 0 {
		return 0, false
	}
	return int(v), true
}
