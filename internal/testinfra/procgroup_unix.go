//go:build unix

package testinfra

import (
	"os/exec"
	"syscall"
)

// setGroup puts cmd in a process group of its own (with the parent-death
// signal of setDeathSignal where there is one).
func setGroup(cmd *exec.Cmd) {
	attr := cmd.SysProcAttr
	setDeathSignal(cmd)
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	if attr != nil && attr.Credential != nil {
		cmd.SysProcAttr.Credential = attr.Credential
	}
	cmd.SysProcAttr.Setpgid = true
}

// killGroup sends sig to the process group pid leads.
func killGroup(pid int, sig syscall.Signal) error { return syscall.Kill(-pid, sig) }

// runAs makes cmd run as the user uid, gid (the caller must be root).
func runAs(cmd *exec.Cmd, uid, gid uint32) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Credential = &syscall.Credential{Uid: uid, Gid: gid}
}
