// Package execproc runs processors as long-lived external processes that
// speak JSON lines (see Pool): the exec family, "exec:COMMAND" in a batch's
// options. A worker serves it once it is registered with Register; whether
// a batch may name a given command is the worker's pipeline.Trust.
package execproc

import (
	"errors"
	"fmt"
	"sync"

	"github.com/batchpipe/batchpipe/pipeline"
)

// Register has r serve "exec:COMMAND" names with processes of COMMAND,
// started with o.
func Register(r *pipeline.Registry, o Options) {
	r.RegisterFamily(pipeline.ExecPrefix, NewFamily(o))
}

// NewRegistry returns pipeline.NewRegistry's built-in processors with the
// exec family (Register) added.
func NewRegistry(o Options) *pipeline.Registry {
	r := pipeline.NewRegistry()
	Register(r, o)
	return r
}

// NewFamily returns the exec family: one Pool per command, made on first
// use and shared by every batch that names the command until Close.
func NewFamily(o Options) pipeline.Family {
	return &family{opts: o, pools: map[string]*Pool{}}
}

type family struct {
	opts  Options
	mu    sync.Mutex
	pools map[string]*Pool
}

// Check reports what is wrong with command without starting it.
func (f *family) Check(command string) error {
	argv, err := pipeline.SplitCommand(command)
	switch {
	case err != nil:
		return fmt.Errorf("exec processor %q: %v", command, err)
	case len(argv) == 0:
		return errors.New("exec processor: empty command (use exec:PROGRAM ARGS...)")
	}
	return nil
}

// Processor returns command's pool as it serves a batch with options o.
func (f *family) Processor(command string, o pipeline.Options) (pipeline.Processor, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	p, ok := f.pools[command]
	if !ok {
		var err error
		if p, err = New(command, f.opts); err != nil {
			return nil, err
		}
		f.pools[command] = p
	}
	return p.ForBatch(o), nil
}

// Close stops every pool's processes (see Pool.Close); a later Processor
// starts new pools.
func (f *family) Close() error {
	f.mu.Lock()
	pools := f.pools
	f.pools = map[string]*Pool{}
	f.mu.Unlock()
	var errs []error
	for _, p := range pools {
		errs = append(errs, p.Close())
	}
	return errors.Join(errs...)
}
