package testinfra_test

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/batchpipe/batchpipe/internal/testinfra"
)

func TestBufferConcurrentWrites(t *testing.T) {
	var b testinfra.Buffer
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for range 100 {
				fmt.Fprintf(&b, "%d\n", i)
				_ = b.String()
			}
		})
	}
	wg.Wait()
	if n := strings.Count(b.String(), "\n"); n != 800 {
		t.Fatalf("%d lines, want 800", n)
	}
}

func TestBufferLimit(t *testing.T) {
	b := &testinfra.Buffer{Limit: 4}
	for _, s := range []string{"ab", "cde", "fg"} {
		if n, err := b.Write([]byte(s)); n != len(s) || err != nil {
			t.Fatalf("Write(%q) = %d, %v", s, n, err)
		}
	}
	// The write that crosses the limit is kept whole; later ones are dropped.
	if got := b.String(); got != "abcde" {
		t.Fatalf("String() = %q, want %q", got, "abcde")
	}
}

func TestTail(t *testing.T) {
	if got := testinfra.Tail("abcdef", 3); got != "…def" {
		t.Errorf("Tail = %q", got)
	}
	if got := testinfra.Tail("abc", 3); got != "abc" {
		t.Errorf("Tail = %q", got)
	}
}

func TestFreeTCPPort(t *testing.T) {
	port := testinfra.FreeTCPPort(t)
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		t.Fatalf("port %d is not free: %v", port, err)
	}
	ln.Close()
}

func TestFreePortSpan(t *testing.T) {
	base, err := testinfra.FreePortSpan(8)
	if err != nil {
		t.Fatal(err)
	}
	if base < 20000 || base+7 >= 32000 || base%8 != 0 {
		t.Fatalf("span %d..%d outside [20000, 32000) or not at a multiple of 8", base, base+7)
	}
	for i := range 8 {
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(base+i)))
		if err != nil {
			t.Fatalf("port %d of the span is not free: %v", base+i, err)
		}
		ln.Close()
	}
	if _, err := testinfra.FreePortSpan(0); err == nil {
		t.Error("FreePortSpan(0) succeeded")
	}
}

func TestRepoRoot(t *testing.T) {
	root, err := testinfra.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "internal", "testinfra")); err != nil {
		t.Fatalf("RepoRoot %s: %v", root, err)
	}
}
