package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.temporal.io/sdk/client"
	sdklog "go.temporal.io/sdk/log"

	"github.com/batchpipe/batchpipe"
	"github.com/batchpipe/batchpipe/internal/devserver"
	"github.com/batchpipe/batchpipe/internal/testinfra"
	"github.com/batchpipe/batchpipe/internal/testinfra/temporaltest"
	"github.com/batchpipe/batchpipe/manifests"
	"github.com/batchpipe/batchpipe/pipeline"
)

// TestMainIsShort keeps the example what issue 8 asks for: a program under
// 50 lines.
func TestMainIsShort(t *testing.T) {
	data, err := os.ReadFile("main.go")
	if err != nil {
		t.Fatal(err)
	}
	lines := bytes.Count(data, []byte("\n"))
	if len(data) > 0 && data[len(data)-1] != '\n' {
		lines++
	}
	if lines >= 50 {
		t.Errorf("main.go has %d lines; the example must stay under 50", lines)
	}
}

func TestReverse(t *testing.T) {
	for in, want := range map[string]string{
		`{"text":"abc"}`:              `{"text":"cba"}`,
		`{"text":"héllo, 世界"}`:        `{"text":"界世 ,olléh"}`,
		`{"text":"","other":1}`:       `{"text":""}`,
		`{"id":7,"text":"racecar!!"}`: `{"text":"!!racecar"}`,
	} {
		out, err := pipeline.Typed(reverse).Process(context.Background(), json.RawMessage(in))
		if err != nil || string(out) != want {
			t.Errorf("reverse(%s) = %s, %v; want %s", in, out, err, want)
		}
	}
	for _, in := range []string{`{}`, `{"text":3}`, `{"text":null}`, `[1]`} {
		if _, err := pipeline.Typed(reverse).Process(context.Background(), json.RawMessage(in)); !pipeline.IsPermanent(err) {
			t.Errorf("reverse(%s): error %v, want a permanent error", in, err)
		}
	}
}

// TestCustomWorker builds the example, runs it as its own process against an
// embedded Temporal server (found through TEMPORAL_ADDRESS, as in
// production), runs a batch with processor "reverse" on a file store and
// checks every output.
func TestCustomWorker(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the example and runs a Temporal server")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	tmp := t.TempDir()

	bin := filepath.Join(tmp, "custom-worker")
	if out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}

	srv := temporaltest.New(ctx, t, devserver.Options{})

	// The worker process sees only the environment a deployment would give
	// it: no TEMPORAL_* of the test's own, no Temporal config file.
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "TEMPORAL_") {
			env = append(env, kv)
		}
	}
	env = append(env, "HOME="+tmp, "XDG_CONFIG_HOME="+filepath.Join(tmp, "config"),
		"TEMPORAL_ADDRESS="+srv.FrontendAddr(), "TEMPORAL_NAMESPACE="+srv.Namespace())
	var logs testinfra.Buffer
	w := exec.Command(bin)
	w.Env, w.Stdout, w.Stderr = env, &logs, &logs
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- w.Wait() }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		w.Process.Signal(syscall.SIGINT)
		select {
		case err := <-exited:
			if err != nil {
				t.Errorf("custom-worker did not stop cleanly on SIGINT: %v\n%s", err, logs.String())
			}
		case <-time.After(30 * time.Second):
			w.Process.Kill()
			<-exited
			t.Errorf("custom-worker did not stop within 30 s of SIGINT\n%s", logs.String())
		}
	}
	defer stop()

	c, err := client.Dial(client.Options{HostPort: srv.FrontendAddr(), Namespace: srv.Namespace(),
		Logger: sdklog.NewStructuredLogger(slog.New(slog.DiscardHandler))})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	// 1,000 items, one without "text" (a permanent failure).
	const n, bad = 1000, 617
	var input bytes.Buffer
	texts := make([]string, n)
	for i := range n {
		if i == bad {
			fmt.Fprintf(&input, `{"id":%d,"name":"no text"}`+"\n", i)
			continue
		}
		texts[i] = fmt.Sprintf("item %d: ünïcødé ✓ %d", i, i*i)
		line, _ := json.Marshal(map[string]any{"id": i, "text": texts[i]})
		input.Write(append(line, '\n'))
	}
	store := "file://" + filepath.Join(tmp, "store")
	if err := os.MkdirAll(filepath.Join(tmp, "store"), 0o755); err != nil {
		t.Fatal(err)
	}
	bc, err := batchpipe.NewClient(ctx, batchpipe.Config{Store: store, Temporal: c})
	if err != nil {
		t.Fatal(err)
	}
	defer bc.Close()
	const id = "custom-reverse"
	sb, err := bc.Submit(ctx, batchpipe.Request{BatchID: id, Reader: bytes.NewReader(input.Bytes()), Name: "inputs.jsonl",
		Processor: "reverse", ShardSize: 100})
	if err != nil {
		t.Fatal(err)
	}
	res, err := sb.Wait(ctx, nil)
	if err != nil {
		t.Fatalf("batch: %v\nworker log:\n%s", err, logs.String())
	}
	batch := res.Batch
	if err := batch.Verify(ctx); err != nil {
		t.Fatalf("verify: %v", err)
	}
	m := batch.Manifest
	if m.Processor != "reverse" || m.Status != manifests.StatusCompletedWithFailures ||
		m.Counts != (manifests.Counts{Items: n, Succeeded: n - 1, Failed: 1}) {
		t.Fatalf("manifest: processor %q, status %q, counts %+v; want reverse, %s, %d items, 1 failed",
			m.Processor, m.Status, m.Counts, manifests.StatusCompletedWithFailures, n)
	}
	next := int64(0)
	for l, err := range batch.Results(ctx) {
		if err != nil {
			t.Fatal(err)
		}
		if l.Index != next {
			t.Fatalf("result line for index %d, want %d", l.Index, next)
		}
		next++
		if l.Index == bad {
			if l.Status != manifests.ItemFailed || l.Error == nil || l.Error.Type != pipeline.ItemErrorPermanent || l.Attempts != 1 {
				t.Errorf("item %d: %+v; want failed once, permanently", bad, l)
			}
			continue
		}
		r := []rune(texts[l.Index])
		slices.Reverse(r)
		want, _ := json.Marshal(map[string]string{"text": string(r)})
		if l.Status != manifests.ItemSucceeded || !bytes.Equal(l.Output, want) {
			t.Errorf("item %d: status %s, output %s; want %s", l.Index, l.Status, l.Output, want)
		}
	}
	if next != n {
		t.Errorf("%d result lines, want %d", next, n)
	}
	var failed []int64
	for f, err := range batch.Failures(ctx) {
		if err != nil {
			t.Fatal(err)
		}
		failed = append(failed, f.Index)
		if want := fmt.Sprintf(`{"id":%d,"name":"no text"}`, bad); string(f.Input) != want {
			t.Errorf("failure input %s, want %s", f.Input, want)
		}
	}
	if !slices.Equal(failed, []int64{bad}) {
		t.Errorf("failures %v, want [%d]", failed, bad)
	}
	stop()
}
