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

// anonRSS returns the anonymous part of a process's resident set (heap,
// stacks) in bytes: unlike the whole, it leaves out the pages of the
// executable itself, ~100 MB for a binary that links the Temporal server.
func anonRSS(pid string) int64 {
	return procKB("/proc/"+pid+"/status", "RssAnon") * 1024
}

// rssWatcher samples a process's VmHWM and RssAnon until stopped. VmHWM
// only grows, so its last sample is the peak up to that moment; the peak
// of RssAnon is the largest sample.
type rssWatcher struct {
	mu         sync.Mutex
	peak, anon int64
	stop       chan struct{}
	done       chan struct{}
}

func watchRSS(pid string, every time.Duration) *rssWatcher {
	w := &rssWatcher{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			peak, anon := peakRSS(pid), anonRSS(pid)
			w.mu.Lock()
			w.peak, w.anon = max(w.peak, peak), max(w.anon, anon)
			w.mu.Unlock()
			select {
			case <-w.stop:
				return
			case <-t.C:
			}
		}
	}()
	return w
}

func watchCmd(cmd *exec.Cmd, every time.Duration) *rssWatcher {
	return watchRSS(strconv.Itoa(cmd.Process.Pid), every)
}

// Peak stops the watcher and returns the largest VmHWM and RssAnon seen.
func (w *rssWatcher) Peak() (peak, anon int64) {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.peak, w.anon
}
