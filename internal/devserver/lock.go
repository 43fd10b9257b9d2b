package devserver

import (
	"fmt"
)

// InUseError is the error Start returns when another process, or another
// Server in this process, runs a server on the same state directory.
// errors.Is(err, ErrStateDirInUse) reports it.
type InUseError struct {
	// Dir is the state directory.
	Dir string
	// PID is the process that holds the directory, 0 if unknown.
	PID int
}

// Error implements error.
func (e *InUseError) Error() string {
	pid := "unknown"
	if e.PID > 0 {
		pid = fmt.Sprint(e.PID)
	}
	return fmt.Sprintf("state directory %s is in use by another batchpipe process (pid %s)", e.Dir, pid)
}

// Is reports whether target is ErrStateDirInUse.
func (e *InUseError) Is(target error) bool { return target == ErrStateDirInUse }
