package faults_test

import (
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/batchpipe/batchpipe/internal/testinfra"
)

// Kill cases: items take 20 ms in faultproc (8 processes per worker), so a
// 3,000-item batch in shards of 50 runs for several seconds of real work,
// and a worker is killed while it has shards in flight. A killed worker's
// shard activities are noticed by their heartbeat timeout (1 minute), then
// retried whole on a live worker; the suite measures that stall.

const (
	killItems     = 3000
	killShardSize = 50
	killSleep     = 20 * time.Millisecond
)

// waitProcessedBy waits until the worker process pid's faultproc children
// processed at least n items; it returns when the first was seen.
func waitProcessedBy(t testing.TB, logPath string, pid, n int, timeout time.Duration, alive ...*proc) (first time.Time) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		got := readProcLog(t, logPath).perProc[pid]
		if got > 0 && first.IsZero() {
			first = time.Now()
		}
		if got >= n {
			return first
		}
		for _, p := range alive {
			if !p.running() {
				t.Fatalf("%s exited (%s) while waiting for pid %d to process %d items\n%s", p.name, p.exitString(), pid, n, testinfra.Tail(p.stderr.String(), 3000))
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("pid %d processed %d items within %v, want %d", pid, got, timeout, n)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitMidShard waits until worker pid has processed at least n items and
// is in the middle of a shard: some but not all of a shard's items seen,
// so a kill now leaves work that must be redone.
func waitMidShard(t testing.TB, logPath string, pid, n, shardSize int, timeout time.Duration, alive ...*proc) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		waitProcessedBy(t, logPath, pid, n, time.Until(deadline), alive...)
		perShard := map[int]int{}
		for _, e := range readProcLog(t, logPath).events {
			if e.pid != pid {
				continue
			}
			_, idx, _ := strings.Cut(e.item, "-a")
			i, err := strconv.Atoi(idx)
			if err != nil {
				t.Fatalf("faultproc log: item %q", e.item)
			}
			perShard[i/shardSize]++
		}
		for _, k := range perShard {
			if k >= 3 && k <= shardSize-5 {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("worker pid %d was never in the middle of a shard within %v", pid, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// kill is one kill of a worker process.
type kill struct {
	pid    int
	at     time.Time
	before int // items processed in all when it was killed
}

// killTwice kills the worker twice mid-batch, each time once it has
// processed at[k] items and is in the middle of a shard, and restarts it
// at once. It returns the worker running at the end.
func killTwice(c *C, logPath string, w *proc, restart func() *proc, sub *proc, at [2]int) (*proc, []kill) {
	c.Helper()
	var kills []kill
	for round := 1; round <= 2; round++ {
		waitMidShard(c, logPath, w.pid(), at[round-1], killShardSize, 3*time.Minute, w, sub)
		k := kill{pid: w.pid(), at: time.Now(), before: processed(logPath)}
		w.kill()
		kills = append(kills, k)
		w = restart()
		waitProcessedBy(c, logPath, w.pid(), 1, 3*time.Minute, w, sub)
	}
	return w, kills
}

// noteKills describes, from faultproc's log, what became of each killed
// worker's work.
func noteKills(c *C, pl procLog, kills []kill) {
	c.Helper()
	for i, k := range kills {
		n, after := pl.redone(k.pid, k.at)
		if n == 0 {
			c.Errorf("kill %d (after %d items) hit no shard in flight: nothing it had processed was processed again", i+1, k.before)
			continue
		}
		c.Note("kill %d (at %d items processed in all): the %d items its in-flight shards had done were processed again, from %.0f s after the kill (heartbeat timeout)", i+1, k.before, n, after.Seconds())
	}
}

func TestKillWorkerSeparateServer(t *testing.T) {
	c := track(t, "1a")
	addr, _ := sharedServer(c)
	mio := theMinIO(c)
	store := mio.StoreURL(mio.CreateBucket(c, "faults-1a"), "kill")
	dir := c.TempDir()
	in := items(killItems, "k1a", nil)
	writeItems(c, filepath.Join(dir, "in.jsonl"), in)
	logPath := filepath.Join(dir, "proc.log")
	const queue = "faults-1a"

	n := 0
	newWorker := func() *proc {
		n++
		return startWorker(c, "worker #"+strconv.Itoa(n), dir, addr, queue, nil, allowExec(slowProcessor(killSleep, logPath))...)
	}
	w := newWorker()
	t0 := time.Now()
	sub := start(c, "submit", dir, env(append(temporalEnv(addr), minioEnv()...)...), submitBin,
		"--store", store, "--task-queue", queue, "--batch-id", "kill-1a", "--processor", slowProcessor(killSleep, logPath),
		"--shard-size", strconv.Itoa(killShardSize), "--concurrency", "4", "in.jsonl")
	w, kills := killTwice(c, logPath, w, newWorker, sub, [2]int{300, 100})
	r := sub.result(8 * time.Minute)
	if r.code != 0 {
		c.Fatalf("submit: %s", r)
	}
	ck := checkBatch(c, store, "kill-1a", in, want{})
	pl := readProcLog(c, logPath)
	noteKills(c, pl, kills)
	c.Note("batch succeeded in %.0f s; %d processings for %d items (%d repeated: shards retried whole); manifest: every index once, outputs right, %d objects verify and decode",
		time.Since(t0).Seconds(), pl.total, len(pl.perItem), pl.repeated, ck.objects)
	if len(pl.perItem) != killItems {
		c.Errorf("faultproc saw %d distinct items, want %d", len(pl.perItem), killItems)
	}
}

func TestKillDevWorker(t *testing.T) {
	c := track(t, "1b")
	dir := c.TempDir()
	port, err := freeBase()
	if err != nil {
		c.Fatal(err)
	}
	state := filepath.Join(dir, "state")
	storeDir := filepath.Join(dir, "store")
	store := fileStore(c, storeDir)
	in := items(killItems, "k1b", nil)
	writeItems(c, filepath.Join(dir, "in.jsonl"), in)
	logPath := filepath.Join(dir, "proc.log")
	addr := "127.0.0.1:" + strconv.Itoa(port)

	n := 0
	newDev := func() *proc {
		n++
		return startDev(c, "worker --dev #"+strconv.Itoa(n), dir, port, state, false, env(), "--store", store)
	}
	w := newDev()
	t0 := time.Now()
	sub := start(c, "submit", dir, env(temporalEnv(addr)...), submitBin,
		"--store", store, "--batch-id", "kill-1b", "--processor", slowProcessor(killSleep, logPath),
		"--shard-size", strconv.Itoa(killShardSize), "--concurrency", "4", "in.jsonl")
	w, kills := killTwice(c, logPath, w, newDev, sub, [2]int{300, 100})
	r := sub.result(8 * time.Minute)
	if r.code != 0 {
		c.Fatalf("submit (waiting through two server restarts): %s", r)
	}
	ck := checkBatch(c, store, "kill-1b", in, want{})
	pl := readProcLog(c, logPath)
	noteKills(c, pl, kills)
	c.Note("batch succeeded in %.0f s, submit waited through both restarts; %d processings for %d items (%d repeated); manifest: every index once, outputs right, %d objects verify and decode; %d temp files left by the kills (invisible to readers)",
		time.Since(t0).Seconds(), pl.total, len(pl.perItem), pl.repeated, ck.objects, tempFiles(storeDir))
	if len(pl.perItem) != killItems {
		c.Errorf("faultproc saw %d distinct items, want %d", len(pl.perItem), killItems)
	}
}

func TestTwoWorkersOneKilled(t *testing.T) {
	c := track(t, "3")
	addr, _ := sharedServer(c)
	dir := c.TempDir()
	storeDir := filepath.Join(dir, "store")
	store := fileStore(c, storeDir)
	in := items(killItems, "k3", nil)
	writeItems(c, filepath.Join(dir, "in.jsonl"), in)
	logPath := filepath.Join(dir, "proc.log")
	const queue = "faults-3"
	trust := append(allowExec(slowProcessor(killSleep, logPath)), allowFile...)
	w1 := startWorker(c, "worker 1", dir, addr, queue, nil, trust...)
	w2 := startWorker(c, "worker 2", dir, addr, queue, nil, trust...)
	t0 := time.Now()
	sub := start(c, "submit", dir, env(temporalEnv(addr)...), submitBin,
		"--store", store, "--task-queue", queue, "--batch-id", "two-3", "--processor", slowProcessor(killSleep, logPath),
		"--shard-size", strconv.Itoa(killShardSize), "--concurrency", "8", "in.jsonl")
	waitProcessedBy(c, logPath, w2.pid(), 1, 3*time.Minute, w1, w2, sub)
	waitMidShard(c, logPath, w1.pid(), 100, killShardSize, 3*time.Minute, w1, w2, sub)
	k := kill{pid: w1.pid(), at: time.Now(), before: processed(logPath)}
	w1.kill()
	byW1 := readProcLog(c, logPath).perProc[w1.pid()]
	r := sub.result(8 * time.Minute)
	if r.code != 0 {
		c.Fatalf("submit: %s", r)
	}
	if !w2.running() {
		c.Fatalf("worker 2 exited: %s", w2.exitString())
	}
	ck := checkBatch(c, store, "two-3", in, want{})
	pl := readProcLog(c, logPath)
	noteKills(c, pl, []kill{k})
	c.Note("worker 1 killed after processing %d items; worker 2 finished the batch (%d items processed by it) in %.0f s; %d repeated processings; manifest: every index once, outputs right, %d objects verify and decode",
		byW1, pl.perProc[w2.pid()], time.Since(t0).Seconds(), pl.repeated, ck.objects)
}
