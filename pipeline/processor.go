package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
)

// A Processor turns one input item (a JSON object) into one output (any JSON
// value) or an error. Errors are retried with backoff unless marked with
// Permanent. Process must honour ctx: it is cancelled at the item timeout.
type Processor interface {
	Process(ctx context.Context, input json.RawMessage) (json.RawMessage, error)
}

// ProcessorFunc adapts a function to Processor.
type ProcessorFunc func(ctx context.Context, input json.RawMessage) (json.RawMessage, error)

// Process calls f.
func (f ProcessorFunc) Process(ctx context.Context, input json.RawMessage) (json.RawMessage, error) {
	return f(ctx, input)
}

// permanentError marks an error that retrying cannot fix.
type permanentError struct{ err error }

func (p permanentError) Error() string { return p.err.Error() }
func (p permanentError) Unwrap() error { return p.err }

// Permanent marks err as not worth retrying: the item fails at once.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return permanentError{err}
}

// IsPermanent reports whether err was marked with Permanent.
func IsPermanent(err error) bool {
	var p permanentError
	return errors.As(err, &p)
}

// Registry maps processor names to processors. The zero value is empty;
// DefaultRegistry holds the built-in ones.
type Registry struct {
	mu   sync.RWMutex
	m    map[string]Processor
	exec execPools // exec:CMD processors, created by Lookup (exec.go)
}

// Register adds (or replaces) a processor under name.
func (r *Registry) Register(name string, p Processor) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.m == nil {
		r.m = map[string]Processor{}
	}
	r.m[name] = p
}

// Lookup returns the processor registered under name, or an error listing
// the known names. A name "exec:CMD" that is not registered runs the
// command line CMD as a pool of processes speaking JSON lines (see Exec);
// the pool is created on first use and shared by later lookups of the same
// name until Close.
func (r *Registry) Lookup(name string) (Processor, error) {
	r.mu.RLock()
	p, ok := r.m[name]
	r.mu.RUnlock()
	if !ok {
		if cmd, isExec := strings.CutPrefix(name, ExecPrefix); isExec {
			e, err := r.exec.exec(cmd)
			if err != nil {
				return nil, err
			}
			return e, nil
		}
		return nil, r.unknown(name)
	}
	return p, nil
}

// Check reports the error Lookup would give for name, without creating
// anything: no exec pool, so one created later gets the options a worker
// sets with SetExecOptions.
func (r *Registry) Check(name string) error {
	if r.registered(name) {
		return nil
	}
	if cmd, isExec := strings.CutPrefix(name, ExecPrefix); isExec {
		argv, err := splitCommand(cmd)
		switch {
		case err != nil:
			return fmt.Errorf("exec processor %q: %v", cmd, err)
		case len(argv) == 0:
			return fmt.Errorf("exec processor: empty command (use exec:PROGRAM ARGS...)")
		}
		return nil
	}
	return r.unknown(name)
}

func (r *Registry) registered(name string) bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	_, ok := r.m[name]
	return ok
}

func (r *Registry) unknown(name string) error {
	return fmt.Errorf("unknown processor %q (known: %v, or exec:CMD to run a command speaking JSON lines)", name, r.Names())
}

// Names lists the registered names, sorted.
func (r *Registry) Names() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	var names []string
	for n := range r.m {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// DefaultRegistry holds the built-in processors (example, echo) and any a
// program adds with Register before starting its worker.
var DefaultRegistry = &Registry{}

// Register adds a processor to DefaultRegistry.
func Register(name string, p Processor) { DefaultRegistry.Register(name, p) }

func init() {
	Register("example", ProcessorFunc(exampleProcessor))
	Register("echo", ProcessorFunc(func(_ context.Context, in json.RawMessage) (json.RawMessage, error) { return in, nil }))
}

// exampleInput and exampleOutput are the shapes of the classic Temporal demo.
type exampleInput struct {
	Arg1 *string `json:"arg1"`
	Arg2 *string `json:"arg2"`
}

type exampleOutput struct {
	Arg1      string  `json:"arg1"`
	Arg2      string  `json:"arg2"`
	RandomVal float64 `json:"random_val"`
}

// exampleProcessor is the seed's demo: {"arg1","arg2"} in, both echoed with a
// prefix and a random number out. Missing fields are a permanent error.
func exampleProcessor(_ context.Context, in json.RawMessage) (json.RawMessage, error) {
	var v exampleInput
	if err := json.Unmarshal(in, &v); err != nil {
		return nil, Permanent(fmt.Errorf("example: %v", err))
	}
	if v.Arg1 == nil || v.Arg2 == nil {
		return nil, Permanent(errors.New(`example: input needs string fields "arg1" and "arg2"`))
	}
	return json.Marshal(exampleOutput{
		Arg1:      "activity arg1: " + *v.Arg1,
		Arg2:      "activity arg2: " + *v.Arg2,
		RandomVal: rand.Float64(),
	})
}
