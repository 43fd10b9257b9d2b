package bench

import (
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Peak RSS is read from /proc/<pid>/status (VmHWM, the high-water mark of
// the process's resident set since its exec), not from the rusage wait4
// returns: Go starts children with vfork semantics, so a child's ru_maxrss
// includes this process's own resident set at the time of the fork.

// peakRSS returns the VmHWM of a process ("self" for this one) in bytes,
// or 0 where /proc has no such figure.
func peakRSS(pid string) int64 {
	return procKB("/proc/"+pid+"/status", "VmHWM") * 1024
}

func procKB(path, key string) int64 {
	v := procField(path, key)
	kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(v, "kB")), 10, 64)
	return kb
}

// rssWatcher samples a running child's VmHWM until stopped; the last
// sample is the peak up to that moment (VmHWM only grows).
type rssWatcher struct {
	mu   sync.Mutex
	peak int64
	stop chan struct{}
	done chan struct{}
}

func watchRSS(cmd *exec.Cmd, every time.Duration) *rssWatcher {
	w := &rssWatcher{stop: make(chan struct{}), done: make(chan struct{})}
	pid := strconv.Itoa(cmd.Process.Pid)
	go func() {
		defer close(w.done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			if v := peakRSS(pid); v > 0 {
				w.mu.Lock()
				w.peak = max(w.peak, v)
				w.mu.Unlock()
			}
			select {
			case <-w.stop:
				return
			case <-t.C:
			}
		}
	}()
	return w
}

// Peak stops the watcher and returns the largest VmHWM seen.
func (w *rssWatcher) Peak() int64 {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.peak
}
