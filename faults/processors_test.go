package faults_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/batchpipe/batchpipe"
	"github.com/batchpipe/batchpipe/internal/testinfra"
	"github.com/batchpipe/batchpipe/manifests"
	"github.com/batchpipe/batchpipe/pipeline"
)

// Case 5. pipeline/pipeline_test.go's TestItemFailuresRetriesAndPanics
// covers panics and permanent errors in one batch of the pipeline's own
// tests; these cases add the processor that hangs past the item timeout
// ignoring its context, put all three in one batch, check it in full, and
// run a second batch on the same worker — in process with a Go processor
// (5a) and in the real worker binary with an exec processor (5b).

// failureModes marks items of a batch of n: every period items, one
// panics (or crashes), one hangs and one fails permanently.
func failureModes(n, period int, crash string) map[int]string {
	m := map[int]string{}
	for i := range n {
		switch i % period {
		case 3:
			m[i] = crash
		case 17:
			m[i] = "hang"
		case 29:
			m[i] = "perm"
		}
	}
	return m
}

// attemptsOf reads the attempts of every result line.
func attemptsOf(t testing.TB, storeURL, id string) map[int64]int {
	t.Helper()
	ctx := context.Background()
	batch, err := manifests.Open(ctx, openStore(t, storeURL), id)
	if err != nil {
		t.Fatal(err)
	}
	a := map[int64]int{}
	for l, err := range batch.Results(ctx) {
		if err != nil {
			t.Fatal(err)
		}
		a[l.Index] = l.Attempts
	}
	return a
}

func TestProcessorFaultsInProcess(t *testing.T) {
	c := track(t, "5a")
	_, tc := sharedServer(c)
	reg := &pipeline.Registry{}
	var hangsReturned = make(chan struct{}, 100)
	reg.Register("faulty", pipeline.ProcessorFunc(func(ctx context.Context, in json.RawMessage) (json.RawMessage, error) {
		var v struct{ Arg1, Arg2, Mode string }
		if err := json.Unmarshal(in, &v); err != nil {
			return nil, pipeline.Permanent(err)
		}
		switch v.Mode {
		case "panic":
			panic("boom on purpose: " + v.Arg1)
		case "hang":
			time.Sleep(3 * time.Second) // ignores ctx, well past the 1 s item timeout
			hangsReturned <- struct{}{}
			return nil, nil
		case "perm":
			return nil, pipeline.Permanent(fmt.Errorf("item %s refused on purpose", v.Arg1))
		}
		return json.Marshal(map[string]string{"arg1": "activity arg1: " + v.Arg1, "arg2": "activity arg2: " + v.Arg2})
	}))
	const queue = "faults-5a"
	w := pipeline.NewWorker(tc, queue, pipeline.WorkerOptions{Processors: reg, Logger: quietLog,
		Trust: pipeline.Trust{Schemes: []string{"file"}}}) // the case's store is file://
	if err := w.Start(); err != nil {
		c.Fatal(err)
	}
	defer w.Stop()
	store := fileStore(c, filepath.Join(c.TempDir(), "store"))
	opts := pipeline.DefaultOptions()
	opts.Processor, opts.ShardSize, opts.Concurrency = "faulty", 25, 8
	opts.ItemTimeout, opts.ItemAttempts, opts.ItemBackoff = time.Second, 2, 10*time.Millisecond

	runInProcess := func(id string, in [][]byte) {
		c.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		bc, err := batchpipe.NewClient(ctx, batchpipe.Config{Store: store, TaskQueue: queue, Temporal: tc})
		if err != nil {
			c.Fatal(err)
		}
		defer bc.Close()
		b, err := bc.Submit(ctx, batchpipe.Request{BatchID: id, Reader: bytes.NewReader(append(bytes.Join(in, []byte("\n")), '\n')),
			Name: "in.jsonl", Processor: opts.Processor, ShardSize: opts.ShardSize, Concurrency: opts.Concurrency,
			ItemTimeout: opts.ItemTimeout, ItemAttempts: opts.ItemAttempts, ItemBackoff: opts.ItemBackoff})
		if err != nil {
			c.Fatal(err)
		}
		if _, err := b.Wait(ctx, nil); err != nil {
			c.Fatalf("batch %s: %v", id, err)
		}
	}

	const n = 200
	modes := failureModes(n, 40, "panic")
	if len(modes) != 15 {
		c.Fatalf("%d marked items, want 15", len(modes))
	}
	in := items(n, "p5a", modes)
	failed := map[int64]itemWant{}
	for i, m := range modes {
		arg1 := fmt.Sprintf("p5a-a%d", i)
		switch m {
		case "panic":
			failed[int64(i)] = itemWant{pipeline.ItemErrorPanic, "boom on purpose: " + arg1}
		case "hang":
			failed[int64(i)] = itemWant{pipeline.ItemErrorTimeout, "no result within 1s"}
		case "perm":
			failed[int64(i)] = itemWant{pipeline.ItemErrorPermanent, "item " + arg1 + " refused on purpose"}
		}
	}
	t0 := time.Now()
	runInProcess("faulty-5a", in)
	took := time.Since(t0)
	ck := checkBatch(c, store, "faulty-5a", in, want{failed: failed})
	att := attemptsOf(c, store, "faulty-5a")
	for i, m := range modes {
		wantAttempts := 1
		if m == "hang" {
			wantAttempts = 2 // a timeout is retried; a panic or a permanent error is not
		}
		if att[int64(i)] != wantAttempts {
			c.Errorf("item %d (%s): %d attempts, want %d", i, m, att[int64(i)], wantAttempts)
		}
	}

	// The worker survived: the same worker runs another batch.
	in2 := items(100, "p5a2", nil)
	runInProcess("after-5a", in2)
	checkBatch(c, store, "after-5a", in2, want{})
	// The abandoned calls of the hanging processor returned on their own.
	for i := range 10 {
		select {
		case <-hangsReturned:
		case <-time.After(15 * time.Second):
			c.Fatalf("%d of 10 abandoned hanging calls returned", i)
		}
	}
	c.Note("%d items: 5 panics (type panic, 1 attempt), 5 hangs (type timeout after 2 attempts of 1 s; the 10 abandoned calls returned later on their own), 5 permanent errors (type permanent, 1 attempt), %d succeeded, batch completed_with_failures in %.1f s; manifest checked in full, %d objects; the same worker then ran a 100-item batch: succeeded",
		n, ck.m.Counts.Succeeded, took.Seconds(), ck.objects)
}

func TestProcessorFaultsWorkerBinary(t *testing.T) {
	c := track(t, "5b")
	addr, _ := sharedServer(c)
	dir := c.TempDir()
	store := fileStore(c, filepath.Join(dir, "store"))
	logPath := filepath.Join(dir, "proc.log")
	const queue = "faults-5b"
	proc := slowProcessor(time.Millisecond, logPath)
	w := startWorker(c, "worker", dir, addr, queue, nil, append(allowExec(proc), allowFile...)...)
	const n = 300
	modes := failureModes(n, 50, "crash")
	in := items(n, "p5b", modes)
	writeItems(c, filepath.Join(dir, "in.jsonl"), in)
	failed := map[int64]itemWant{}
	for i, m := range modes {
		switch m {
		case "crash":
			failed[int64(i)] = itemWant{pipeline.ItemErrorRetryable, "exited before answering (exit status 3)"}
		case "hang":
			failed[int64(i)] = itemWant{pipeline.ItemErrorTimeout, "no result within 2s"}
		case "perm":
			failed[int64(i)] = itemWant{pipeline.ItemErrorPermanent, fmt.Sprintf("item p5b-a%d refused on purpose", i)}
		}
	}
	environ := env(temporalEnv(addr)...)
	r := submit(c, dir, environ, 5*time.Minute, "--store", store, "--task-queue", queue, "--batch-id", "faulty-5b", "--processor", proc,
		"--item-timeout", "2s", "--item-attempts", "2", "--shard-size", "50", "in.jsonl")
	if r.code != 3 {
		c.Fatalf("submit: want exit 3 (completed with failures): %s", r)
	}
	ck := checkBatch(c, store, "faulty-5b", in, want{failed: failed})
	att := attemptsOf(c, store, "faulty-5b")
	for i, m := range modes {
		wantAttempts := 2
		if m == "perm" {
			wantAttempts = 1
		}
		if att[int64(i)] != wantAttempts {
			c.Errorf("item %d (%s): %d attempts, want %d", i, m, att[int64(i)], wantAttempts)
		}
	}
	if !w.running() {
		c.Fatalf("the worker died: %s\n%s", w.exitString(), testinfra.Tail(w.stderr.String(), 3000))
	}
	// The same worker process runs the next batch.
	in2 := items(100, "p5b2", nil)
	writeItems(c, filepath.Join(dir, "in2.jsonl"), in2)
	r2 := submit(c, dir, environ, 5*time.Minute, "--store", store, "--task-queue", queue, "--batch-id", "after-5b", "--processor", proc, "in2.jsonl")
	if r2.code != 0 {
		c.Fatalf("second batch on the same worker: %s", r2)
	}
	checkBatch(c, store, "after-5b", in2, want{})
	w.stop(30 * time.Second)
	if code := w.cmd.ProcessState.ExitCode(); code != 0 || !strings.Contains(w.stderr.String(), "stopping worker") {
		c.Errorf("worker after SIGTERM: exit %d, want 0 and a clean stop\n%s", code, testinfra.Tail(w.stderr.String(), 2000))
	}
	c.Note("%d items: 6 crashing (type error after 2 attempts, message names the exit status and stderr), 6 hanging (type timeout after 2 attempts of 2 s; the process was killed), 6 permanent errors (type permanent, 1 attempt), %d succeeded, exit 3 in %.1f s; manifest checked in full, %d objects; the same worker process then ran a 100-item batch (exit 0) and stopped cleanly on SIGTERM",
		n, ck.m.Counts.Succeeded, r.dur.Seconds(), ck.objects)
}
