package faults_test

import (
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestPausedAcrossDevKill pauses a batch, kills `worker --dev` (server and
// worker) with SIGKILL and starts it again on the same state directory: the
// batch is still paused, nothing is handed out, and after resume every
// item is processed exactly once.
func TestPausedAcrossDevKill(t *testing.T) {
	c := track(t, "1d")
	dir := c.TempDir()
	port, err := freeBase()
	if err != nil {
		c.Fatal(err)
	}
	state := filepath.Join(dir, "state")
	store := fileStore(c, filepath.Join(dir, "store"))
	in := items(killItems, "k1d", nil)
	writeItems(c, filepath.Join(dir, "in.jsonl"), in)
	logPath := filepath.Join(dir, "proc.log")
	temporal := env(temporalEnv("127.0.0.1:" + strconv.Itoa(port))...)
	n := 0
	newDev := func() *proc {
		n++
		return startDev(c, "worker --dev #"+strconv.Itoa(n), dir, port, state, false, env(), "--store", store)
	}
	w := newDev()
	sub := start(c, "submit", dir, temporal, submitBin,
		"--store", store, "--batch-id", "pause-1d", "--processor", slowProcessor(killSleep, logPath),
		"--shard-size", strconv.Itoa(killShardSize), "--concurrency", "4", "in.jsonl")
	waitProcessed(c, logPath, 300, 2*time.Minute, w, sub)
	if r := submit(c, dir, temporal, time.Minute, "pause", "pause-1d", "--reason", "fault 1d"); r.code != 0 {
		c.Fatalf("pause: %s", r)
	}
	// Within 15 s of the pause no item is handed out any more.
	time.Sleep(15 * time.Second)
	atKill := processed(logPath)
	if atKill >= killItems {
		c.Fatalf("the batch processed all %d items before the pause took effect", atKill)
	}
	w.kill()
	w = newDev()
	defer w.stop(10 * time.Second)
	r := submit(c, dir, temporal, time.Minute, "status", "pause-1d")
	if r.code != 0 || !strings.Contains(r.stdout, "paused") || !strings.Contains(r.stdout, "fault 1d") {
		c.Fatalf("status after the restart does not say paused for fault 1d: %s\n%s", r, r.stdout)
	}
	time.Sleep(15 * time.Second)
	if got := processed(logPath); got != atKill {
		c.Fatalf("%d items handed out while paused across the restart", got-atKill)
	}
	if r := submit(c, dir, temporal, time.Minute, "resume", "pause-1d"); r.code != 0 {
		c.Fatalf("resume: %s", r)
	}
	if r := sub.result(8 * time.Minute); r.code != 0 {
		c.Fatalf("submit (waiting through the pause and the restart): %s", r)
	}
	ck := checkBatch(c, store, "pause-1d", in, want{})
	pl := readProcLog(c, logPath)
	if pl.repeated != 0 || len(pl.perItem) != killItems {
		c.Errorf("%d processings of %d distinct items (%d repeated), want each of %d once", pl.total, len(pl.perItem), pl.repeated, killItems)
	}
	c.Note("paused at %d of %d items processed, worker --dev killed and restarted: status said paused with its reason, nothing handed out for 15 s; after resume the batch succeeded, %d processings for %d items (%d repeated); manifest: every index once, %d objects verify",
		atKill, killItems, pl.total, len(pl.perItem), pl.repeated, ck.objects)
}
