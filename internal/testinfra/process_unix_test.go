//go:build unix

package testinfra_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/batchpipe/batchpipe/internal/testinfra"
)

func TestProcessKillReachesTheGroup(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh")
	}
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "child.pid")
	// sh starts a child that would outlive it, then waits.
	cmd := exec.Command(sh, "-c", "sleep 300 & echo $! > "+pidFile+"; echo started; wait")
	p, err := testinfra.StartProcess("sh", filepath.Join(dir, "sh.log"), cmd)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.WaitFor("started", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	child, _ := strconv.Atoi(strings.TrimSpace(string(data)))
	p.Kill()
	deadline := time.Now().Add(5 * time.Second)
	for syscall.Kill(child, 0) == nil {
		if time.Now().After(deadline) {
			syscall.Kill(child, syscall.SIGKILL)
			t.Fatalf("the child %d of the killed process is still running", child)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
