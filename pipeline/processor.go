package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
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

// A Registry maps processor names to processors, and name prefixes to
// families that build processors from the rest of the name (the exec
// family, package execproc, serves "exec:COMMAND"). The zero value is
// empty; NewRegistry holds the built-in processors. A worker is given its
// registry (WorkerOptions.Processors); nothing is registered globally.
type Registry struct {
	mu       sync.RWMutex
	m        map[string]Processor
	families map[string]Family
}

// A Family builds processors from names with a prefix it was registered
// under: "exec:python3 score.py" is the exec family's processor for
// "python3 score.py".
type Family interface {
	// Check reports what is wrong with rest, without starting anything.
	Check(rest string) error
	// Processor returns the processor for rest serving a batch with
	// options o (called once per shard; a family may share what it builds
	// between calls, say a pool of processes, until Close).
	Processor(rest string, o Options) (Processor, error)
	// Close releases everything Processor built. The family stays usable.
	Close() error
}

// NewRegistry returns a registry holding the built-in processors: example
// (the classic Temporal demo's shapes) and echo (the input as output).
func NewRegistry() *Registry {
	r := &Registry{}
	r.Register("example", ProcessorFunc(exampleProcessor))
	r.Register("echo", ProcessorFunc(func(_ context.Context, in json.RawMessage) (json.RawMessage, error) { return in, nil }))
	return r
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

// RegisterFamily has f serve every name that starts with prefix and is not
// registered as a whole (see Family).
func (r *Registry) RegisterFamily(prefix string, f Family) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.families == nil {
		r.families = map[string]Family{}
	}
	r.families[prefix] = f
}

// family returns the family serving name, the prefix it was registered
// under and the rest of the name; the longest prefix wins.
func (r *Registry) family(name string) (Family, string, string) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	var best string
	var f Family
	for prefix, fam := range r.families {
		if strings.HasPrefix(name, prefix) && (f == nil || len(prefix) > len(best)) {
			best, f = prefix, fam
		}
	}
	return f, best, strings.TrimPrefix(name, best)
}

// Lookup returns the processor for name serving a batch with options o:
// the one registered under name, or the one its family builds. An unknown
// name is an error listing the known ones.
func (r *Registry) Lookup(name string, o Options) (Processor, error) {
	r.mu.RLock()
	p, ok := r.m[name]
	r.mu.RUnlock()
	if ok {
		return p, nil
	}
	if f, _, rest := r.family(name); f != nil {
		return f.Processor(rest, o)
	}
	return nil, r.unknown(name)
}

// Check reports the error Lookup would give for name, without building
// anything.
func (r *Registry) Check(name string) error {
	if r.registered(name) {
		return nil
	}
	if f, _, rest := r.family(name); f != nil {
		return f.Check(rest)
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
	r.mu.RLock()
	var prefixes []string
	for p := range r.families {
		prefixes = append(prefixes, p+"…")
	}
	r.mu.RUnlock()
	slices.Sort(prefixes)
	return fmt.Errorf("unknown processor %q (known: %v%s)", name, r.Names(), strings.Join(append([]string{""}, prefixes...), ", "))
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

// Close closes every family (stopping, say, the exec family's processes)
// and every registered processor that is an io.Closer. Call it when the
// worker has stopped; the registry stays usable.
func (r *Registry) Close() error {
	r.mu.RLock()
	defer r.mu.RUnlock()
	var errs []error
	for _, f := range r.families {
		errs = append(errs, f.Close())
	}
	for _, p := range r.m {
		if c, ok := p.(io.Closer); ok {
			errs = append(errs, c.Close())
		}
	}
	return errors.Join(errs...)
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
