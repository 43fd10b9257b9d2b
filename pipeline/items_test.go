package pipeline

import (
	"context"
	"encoding/json"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/batchpipe/batchpipe/manifests"
)

// runGroups runs n one-item groups (inputs "0" … "n-1") through r's
// callers, par at a time, and returns their lines once every group is
// done; stop ends the callers' context and waits for them.
func runGroups(t *testing.T, r *itemRunner, n, par int) (lines []manifests.ResultLine, stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	work := make(chan *group)
	var wg sync.WaitGroup
	r.startCallers(ctx, &wg, par, work, func(manifests.ResultLine) {})
	groups := make([]*group, n)
	for i := range groups {
		groups[i] = &group{first: int64(i), items: []json.RawMessage{json.RawMessage(strconv.Itoa(i))},
			lines: make([]manifests.ResultLine, 1), todo: []int{0}, done: make(chan struct{})}
		work <- groups[i]
	}
	close(work)
	for _, g := range groups {
		<-g.done
		lines = append(lines, g.lines[0])
	}
	return lines, func() { cancel(); wg.Wait() }
}

func TestCallPastTimeoutIsGivenUp(t *testing.T) {
	release := make(chan struct{})
	var returned atomic.Int32
	proc := ProcessorFunc(func(ctx context.Context, in json.RawMessage) (json.RawMessage, error) {
		if it, ok := ItemFrom(ctx); !ok || string(it.Input) != string(in) {
			t.Errorf("ItemFrom = %+v, %v for input %s", it, ok, in)
		}
		if string(in) == "3" {
			<-release // ignores ctx, past the timeout
			returned.Add(1)
		}
		return in, nil
	})
	o := DefaultOptions()
	o.ItemTimeout, o.ItemAttempts, o.ItemBackoff = 100*time.Millisecond, 2, time.Millisecond
	r := newItemRunner(proc, ShardInput{BatchID: "b", Options: o})
	t0 := time.Now()
	lines, stop := runGroups(t, r, 20, 2)
	took := time.Since(t0)
	close(release)
	stop()
	for i, l := range lines {
		if i == 3 {
			if l.Status != manifests.ItemFailed || l.Error.Type != ItemErrorTimeout || l.Error.Message != "no result within 100ms" || l.Attempts != 2 {
				t.Errorf("item 3: %+v %+v, want failed as timed out after 2 attempts", l, l.Error)
			}
			continue
		}
		if l.Status != manifests.ItemSucceeded || string(l.Output) != strconv.Itoa(i) {
			t.Errorf("item %d: %+v", i, l)
		}
	}
	if took < 200*time.Millisecond || took > 2*time.Second {
		t.Errorf("took %v, want two timeouts of 100ms and not much more", took)
	}
	deadline := time.Now().Add(5 * time.Second)
	for returned.Load() < 2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := returned.Load(); n != 2 {
		t.Errorf("%d of 2 given-up calls returned", n)
	}
	if lines[3].Status != manifests.ItemFailed {
		t.Errorf("a given-up call's late outcome changed its item's line: %+v", lines[3])
	}
}

func TestShardEndGivesUpCallsAtOnce(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	started := make(chan struct{}, 2)
	proc := ProcessorFunc(func(ctx context.Context, in json.RawMessage) (json.RawMessage, error) {
		started <- struct{}{}
		<-release // ignores ctx
		return in, nil
	})
	o := DefaultOptions() // a timeout of a minute
	r := newItemRunner(proc, ShardInput{BatchID: "b", Options: o})
	ctx, cancel := context.WithCancel(context.Background())
	work := make(chan *group, 2)
	var wg sync.WaitGroup
	r.startCallers(ctx, &wg, 2, work, func(manifests.ResultLine) {})
	for i := range 2 {
		work <- &group{first: int64(i), items: []json.RawMessage{json.RawMessage(`1`)}, lines: make([]manifests.ResultLine, 1), todo: []int{0}, done: make(chan struct{})}
	}
	close(work)
	<-started
	<-started
	t0 := time.Now()
	cancel()
	wg.Wait()
	if took := time.Since(t0); took > time.Second {
		t.Errorf("the callers ended %v after the shard's end, with their calls still running", took)
	}
}

func TestItemContextDeadlineAndDone(t *testing.T) {
	proc := ProcessorFunc(func(ctx context.Context, in json.RawMessage) (json.RawMessage, error) {
		if _, ok := ctx.Deadline(); !ok {
			t.Error("no deadline on the item's context")
		}
		if ctx.Err() != nil {
			t.Errorf("Err at the start: %v", ctx.Err())
		}
		if string(in) == "1" {
			<-ctx.Done() // honours ctx
			return nil, ctx.Err()
		}
		// A context made from the item's ends with it.
		sub, cancel := context.WithCancel(ctx)
		defer cancel()
		if sub.Err() != nil {
			t.Errorf("sub-context ended at once: %v", sub.Err())
		}
		return in, nil
	})
	o := DefaultOptions()
	o.ItemTimeout, o.ItemAttempts = 50*time.Millisecond, 1
	r := newItemRunner(proc, ShardInput{BatchID: "b", Options: o})
	lines, stop := runGroups(t, r, 3, 3)
	stop()
	if l := lines[1]; l.Status != manifests.ItemFailed || l.Error.Type != ItemErrorTimeout {
		t.Errorf("item 1, which waited for Done: %+v %+v, want timed out", l, l.Error)
	}
	for _, i := range []int{0, 2} {
		if lines[i].Status != manifests.ItemSucceeded {
			t.Errorf("item %d: %+v", i, lines[i])
		}
	}
}

// TestShardEndWhileCallsStart ends the shard's context again and again
// while calls are being made: a call the watchdog gives up at the end is
// gone on with once, by one goroutine (a group finished twice panics on
// closing its done channel twice).
func TestShardEndWhileCallsStart(t *testing.T) {
	echo := ProcessorFunc(func(_ context.Context, in json.RawMessage) (json.RawMessage, error) { return in, nil })
	for range 200 {
		r := newItemRunner(echo, ShardInput{BatchID: "b", Options: DefaultOptions()})
		ctx, cancel := context.WithCancel(context.Background())
		work := make(chan *group)
		var wg sync.WaitGroup
		r.startCallers(ctx, &wg, 8, work, func(manifests.ResultLine) {})
		for i := range 200 {
			work <- &group{first: int64(i), items: []json.RawMessage{json.RawMessage(`1`)}, lines: make([]manifests.ResultLine, 1), todo: []int{0}, done: make(chan struct{})}
			if i == 100 {
				cancel()
			}
		}
		close(work)
		wg.Wait()
		cancel()
	}
}

// classify keeps a processor's JSON output compacted, and fails an item
// whose output is not JSON, or not UTF-8, as an output error.
func TestClassifyOutput(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		out, want, err string
	}{
		{out: `{"a": [1, "é"]}`, want: `{"a":[1,"é"]}`},
		{out: ``, want: `null`},
		{out: `{"a":`, err: "processor returned invalid JSON"},
		{out: "{\"a\":\"\xff\xfe\"}", err: `processor returned JSON that is not valid UTF-8: "{\"a\":\"\xff\xfe\"}"`},
	} {
		o := classify(ctx, json.RawMessage(tc.out), nil, time.Second)
		switch {
		case tc.err == "" && (o.err != nil || string(o.out) != tc.want):
			t.Errorf("classify(%q) = %s, %+v; want %s", tc.out, o.out, o.err, tc.want)
		case tc.err != "" && (o.err == nil || o.err.Type != ItemErrorOutput || o.err.Message != tc.err):
			t.Errorf("classify(%q) = %s, %+v; want an output error %q", tc.out, o.out, o.err, tc.err)
		}
	}
}
