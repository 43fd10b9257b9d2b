package bench

import (
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// A program that starts processes of its own (a Python pool, submit's exec
// processors) uses the memory of all of them: treeWatcher samples a process
// and its descendants (found through /proc/<pid>/stat's parent pid) and
// keeps the peaks of their summed resident sets. VmRSS counts the pages
// forked processes share once in each of them; PSS (proportional set size,
// /proc/<pid>/smaps_rollup) divides shared pages among their sharers, so
// the sum of PSS is the memory the tree really holds.
type treeWatcher struct {
	root     int
	mu       sync.Mutex
	peakRSS  int64 // bytes: largest sum of VmRSS over the tree
	peakPSS  int64 // bytes: largest sum of Pss
	rootHWM  int64 // bytes: the root's VmHWM, last read
	maxProcs int   // most processes in the tree at one sample
	seen     map[int]bool
	stop     chan struct{}
	done     chan struct{}
}

func watchTree(pid int, every time.Duration) *treeWatcher {
	w := &treeWatcher{root: pid, seen: map[int]bool{}, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			w.sample()
			select {
			case <-w.stop:
				return
			case <-t.C:
			}
		}
	}()
	return w
}

func (w *treeWatcher) sample() {
	pids := descendants(w.root, readParents())
	var rss, pss int64
	for _, p := range pids {
		s := strconv.Itoa(p)
		rss += procKB("/proc/"+s+"/status", "VmRSS") * 1024
		pss += procKB("/proc/"+s+"/smaps_rollup", "Pss") * 1024
	}
	hwm := peakRSS(strconv.Itoa(w.root))
	w.mu.Lock()
	defer w.mu.Unlock()
	w.peakRSS, w.peakPSS = max(w.peakRSS, rss), max(w.peakPSS, pss)
	if hwm > 0 {
		w.rootHWM = hwm
	}
	w.maxProcs = max(w.maxProcs, len(pids))
	for _, p := range pids {
		w.seen[p] = true
	}
}

// treePeak is what a treeWatcher saw.
type treePeak struct {
	RSS, PSS, RootHWM int64
	MaxProcs, Procs   int // most at once; all seen
}

// Peak stops the watcher and returns its peaks.
func (w *treeWatcher) Peak() treePeak {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return treePeak{RSS: w.peakRSS, PSS: w.peakPSS, RootHWM: w.rootHWM, MaxProcs: w.maxProcs, Procs: len(w.seen)}
}

// readParents maps every process in /proc to its parent.
func readParents() map[int]int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	parents := make(map[int]int, len(ents))
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		if ppid, ok := parseStatPPID(string(b)); ok {
			parents[pid] = ppid
		}
	}
	return parents
}

// parseStatPPID reads the parent pid from a /proc/<pid>/stat line:
// "pid (comm) state ppid ...", where comm may hold spaces and parentheses.
func parseStatPPID(stat string) (int, bool) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(stat[i+1:])
	if len(f) < 2 {
		return 0, false
	}
	ppid, err := strconv.Atoi(f[1])
	return ppid, err == nil
}

// descendants returns root and every process below it in parents (pid →
// parent pid), root first; nil when root is not in parents (it exited).
func descendants(root int, parents map[int]int) []int {
	if _, ok := parents[root]; !ok {
		return nil
	}
	children := map[int][]int{}
	for pid, ppid := range parents {
		children[ppid] = append(children[ppid], pid)
	}
	out := []int{root}
	for i := 0; i < len(out); i++ {
		out = append(out, children[out[i]]...)
	}
	return out
}
