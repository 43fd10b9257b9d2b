// Package testinfra holds what the repository's tests (and the bench
// program) need around them: a bytes buffer safe for concurrent writers,
// free loopback ports, the repository's root, and a real MinIO server
// (see MinIOEndpoint for tests that just need a store, StartMinIO for a
// server of one's own that can be killed and restarted in place).
//
// The in-process Temporal test server lives in the subpackage temporaltest:
// it imports internal/devserver, whose own tests use this package.
package testinfra

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
)

// Buffer is a bytes buffer safe for concurrent use: a child process's
// stdout and stderr, a logger and an SDK may write to it while the test
// reads it. The zero value is an empty, unbounded buffer.
type Buffer struct {
	// Limit, when positive, is how many bytes the buffer keeps: once it
	// holds that many, further writes are dropped (and still reported as
	// written), so a chatty process cannot fill the test's memory.
	Limit int

	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.Limit > 0 && b.buf.Len() >= b.Limit {
		return len(p), nil
	}
	return b.buf.Write(p)
}

// String returns what was written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Tail returns the last n bytes of s, marked with a leading "…" when
// something was cut.
func Tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

// FreeTCPPort returns a TCP port on 127.0.0.1 that was free a moment ago,
// failing tb if there is none.
func FreeTCPPort(tb testing.TB) int {
	tb.Helper()
	port, err := FreePort()
	if err != nil {
		tb.Fatal(err)
	}
	return port
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort() (int, error) {
	ports, err := freePorts(1)
	if err != nil {
		return 0, err
	}
	return ports[0], nil
}

// freePorts returns n distinct ports on 127.0.0.1 that were free a moment
// ago (all are held open together while they are picked).
func freePorts(n int) ([]int, error) {
	var ports []int
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		defer ln.Close()
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// Where FreePortSpan looks: below the ephemeral port range, so that ports
// the kernel hands out for other connections do not land in a span (as
// internal/devserver picks its own spans).
const (
	spanLow  = 20000
	spanHigh = 32000
)

// FreePortSpan returns a port P such that P, P+1, …, P+n-1 could all be
// bound on 127.0.0.1 a moment ago, chosen at random at a multiple of n in
// [20000, 32000): room for a Temporal dev server, which uses
// devserver.PortSpan consecutive ports from its frontend port.
func FreePortSpan(n int) (int, error) {
	if n <= 0 || n > spanHigh-spanLow {
		return 0, fmt.Errorf("testinfra: FreePortSpan(%d): span out of range", n)
	}
	for range 200 {
		base := spanLow + n*rand.IntN((spanHigh-spanLow)/n)
		ok := true
		var lns []net.Listener
		for i := range n {
			ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(base+i)))
			if err != nil {
				ok = false
				break
			}
			lns = append(lns, ln)
		}
		for _, ln := range lns {
			ln.Close()
		}
		if ok {
			return base, nil
		}
	}
	return 0, fmt.Errorf("testinfra: no %d free consecutive ports on 127.0.0.1 in [%d, %d)", n, spanLow, spanHigh)
}

// RepoRoot returns the directory of the batchpipe module's go.mod, found by
// walking up from the working directory.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if data, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil &&
			bytes.Contains(data, []byte("module github.com/batchpipe/batchpipe\n")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod of github.com/batchpipe/batchpipe above the working directory")
		}
		dir = parent
	}
}

// Main runs the tests of a package and then stops what this package may
// have started for them (the MinIO of MinIOEndpoint). Call it from
// TestMain:
//
//	func TestMain(m *testing.M) { testinfra.Main(m) }
func Main(m *testing.M) {
	code := m.Run()
	StopMinIO()
	os.Exit(code)
}

// DevServerSpan is how many consecutive ports a Temporal dev server takes
// from its frontend port (devserver.PortSpan, which this package cannot
// import: devserver's own tests use it).
const DevServerSpan = 8

// FreeDevServerPort returns a frontend port for a dev server whose whole
// span of ports was free a moment ago, outside the ephemeral range (a single
// free port there leaves the ports after it to outgoing connections).
func FreeDevServerPort(tb testing.TB) int {
	tb.Helper()
	p, err := FreePortSpan(DevServerSpan)
	if err != nil {
		tb.Fatal(err)
	}
	return p
}
