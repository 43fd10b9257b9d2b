package testinfra

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// Process is a child process started by StartProcess: in a process group of
// its own (so that Stop and Kill reach whatever it forked), killed by the
// kernel if the test process dies (on Linux), with its combined output kept
// in memory and in a log file.
type Process struct {
	Name string

	cmd  *exec.Cmd
	out  Buffer
	done chan struct{}
	err  error // Wait's result, set before done is closed
}

// StartProcess starts cmd, whose output goes to logPath (created or
// truncated) and to the Process. cmd must not have Stdout or Stderr set.
func StartProcess(name, logPath string, cmd *exec.Cmd) (*Process, error) {
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	p := &Process{Name: name, cmd: cmd, done: make(chan struct{})}
	w := io.MultiWriter(&p.out, logFile)
	cmd.Stdout, cmd.Stderr = w, w
	setGroup(cmd)
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	go func() {
		p.err = cmd.Wait()
		killGroup(cmd.Process.Pid, syscall.SIGKILL) // what it left behind
		logFile.Close()
		close(p.done)
	}()
	return p, nil
}

// Pid is the process's id (and its process group's).
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Done is closed when the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Exited reports whether the process has exited, and Wait's error if so.
func (p *Process) Exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.err
	default:
		return false, nil
	}
}

// Output is everything the process printed so far.
func (p *Process) Output() string { return p.out.String() }

// Tail is the last 4,000 bytes of the output, for failure messages.
func (p *Process) Tail() string { return Tail(p.out.String(), 4000) }

// WaitFor waits until the process has printed a line containing s and
// returns that line. It fails if the process exits first or the line does
// not come within timeout; the error names the process and ends with the
// tail of its output.
func (p *Process) WaitFor(s string, timeout time.Duration) (string, error) {
	deadline := time.Now().Add(timeout)
	for {
		for line := range strings.Lines(p.out.String()) {
			if strings.Contains(line, s) {
				return strings.TrimSpace(line), nil
			}
		}
		if exited, err := p.Exited(); exited {
			return "", fmt.Errorf("%s exited (%v) before printing %q:\n%s", p.Name, err, s, p.Tail())
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("%s did not print %q within %v:\n%s", p.Name, s, timeout, p.Tail())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Stop sends sig to the process and waits for it to exit; after grace it
// kills the whole process group and reports that it had to. Otherwise it
// returns Wait's error (nil for a clean exit). Stopping an exited process
// returns how it exited.
func (p *Process) Stop(sig syscall.Signal, grace time.Duration) error {
	if exited, err := p.Exited(); exited {
		return err
	}
	p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
		return p.err
	case <-time.After(grace):
		p.Kill()
		return fmt.Errorf("%s did not stop within %v of %v", p.Name, grace, sig)
	}
}

// Kill kills the process group with SIGKILL, as a crash would, and waits
// until the process is gone.
func (p *Process) Kill() {
	if exited, _ := p.Exited(); !exited {
		if err := killGroup(p.cmd.Process.Pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
			p.cmd.Process.Kill()
		}
	}
	<-p.done
}
