//go:build !unix

package testinfra

import (
	"errors"
	"os/exec"
	"syscall"
)

// setGroup only sets the parent-death signal where there are no process
// groups.
func setGroup(cmd *exec.Cmd) { setDeathSignal(cmd) }

// killGroup cannot reach a group here: the caller kills the process itself.
func killGroup(int, syscall.Signal) error { return errors.ErrUnsupported }

// runAs is not supported here.
func runAs(*exec.Cmd, uint32, uint32) {}
