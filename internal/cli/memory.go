package cli

import "runtime/debug"

// The garbage collector's settings for the worker and submit processes,
// unless the environment gives its own (see SetGCDefaults).
const (
	defaultGCPercent   = 400       // GOGC
	defaultMemoryLimit = 768 << 20 // GOMEMLIMIT, bytes
)

// SetGCDefaults trades memory for CPU in the garbage collector, since a
// batch process is CPU-bound and its live heap small: GOGC=400 lets the
// heap grow to five times what is live before a collection (Go's default
// is twice), which saves about 5% of the CPU of a 10,000,000-item echo
// submit, and a soft limit of 768 MiB (GOMEMLIMIT) makes it collect
// sooner rather than pass that. A GOGC in the environment leaves both to
// the runtime; a GOMEMLIMIT alone keeps the user's limit.
func SetGCDefaults(getenv func(string) string) {
	if getenv("GOGC") != "" {
		return
	}
	debug.SetGCPercent(defaultGCPercent)
	if getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(defaultMemoryLimit)
	}
}
