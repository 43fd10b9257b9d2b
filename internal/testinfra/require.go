package testinfra

import (
	"os"
	"os/exec"
	"strconv"
	"testing"
)

// CI reports whether CI=true (or another true value) is set: then a test
// whose infrastructure is missing fails instead of skipping.
func CI() bool {
	ci, _ := strconv.ParseBool(os.Getenv("CI"))
	return ci
}

// Missing ends tb because a part it needs is not there (what names it, err
// says why, hint how to get it): it skips the test, except under CI=true,
// where it fails it.
func Missing(tb testing.TB, what string, err error, hint string) {
	tb.Helper()
	if CI() {
		tb.Fatalf("%s is required when CI=true but is unavailable: %v\n%s", what, err, hint)
	}
	tb.Skipf("%s unavailable (%v); %s", what, err, hint)
}

// LookPath finds the program a test needs on PATH, or ends tb as Missing
// does (hint says how to get it).
func LookPath(tb testing.TB, name, hint string) string {
	tb.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		Missing(tb, name, err, hint)
	}
	return p
}
