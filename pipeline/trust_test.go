package pipeline_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"go.temporal.io/sdk/temporal"

	"github.com/batchpipe/batchpipe"
	"github.com/batchpipe/batchpipe/execproc"
	"github.com/batchpipe/batchpipe/manifests"
	"github.com/batchpipe/batchpipe/pipeline"
)

// echoScript answers each item with itself, after touching the marker file
// its first argument names (so a test sees whether the process ever ran).
const echoScript = `touch "$0"; while read -r l; do printf '{"output":%s}\n' "$l"; done`

// shardRefused is how a batch's manifest says its shards were refused
// (whichever of the first ones in flight reported it first).
var shardRefused = regexp.MustCompile(`^shard [0-9] failed: processor "exec:`)

// startTrustWorker runs a worker with trust on a task queue of its own.
func startTrustWorker(t *testing.T, trust pipeline.Trust) string {
	t.Helper()
	if temporalClient == nil {
		t.Skip("needs the Temporal server (not in -short mode)")
	}
	reg := execproc.NewRegistry(execproc.Options{PoolSize: 2, Logger: quietLog})
	tq := fmt.Sprintf("test-trust-%d", queueSeq.Add(1))
	w := pipeline.NewWorker(temporalClient, tq, pipeline.WorkerOptions{Processors: reg, Logger: quietLog, Trust: trust})
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Stop(); reg.Close() })
	return tq
}

// A worker runs an exec: command only when its Trust lists that command
// line, compared word by word: other quoting of the same words runs; the
// same command with an extra argument, a prefix of it, or another command
// fails the batch at its first shards, without starting a process, naming
// --allow-exec with the command to give it.
func TestTrustExecExactCommandOnly(t *testing.T) {
	dir := t.TempDir()
	marker := func(name string) string { return filepath.Join(dir, name) }
	allowed := "sh -c '" + strings.ReplaceAll(echoScript, "'", `'\''`) + "' " + marker("allowed")
	tq := startTrustWorker(t, pipeline.Trust{Exec: []string{allowed}, Schemes: []string{"file"}})
	input := makeItems(30, nil)

	// The same words, quoted otherwise.
	requoted := `sh -c "` + strings.NewReplacer(`"`, `\"`, `$`, `\$`).Replace(echoScript) + `" ` + marker("allowed")
	bt := runBatchOn(t, tq, fileStore(t), fmt.Sprintf("trust-ok-%d", queueSeq.Add(1)), input, smallOpts("exec:"+requoted, 10, 10))
	if bt.err != nil {
		t.Fatalf("the allowed command (quoted otherwise): %v", bt.err)
	}
	if m := bt.manifest(t); m.Status != manifests.StatusSucceeded || m.Counts.Succeeded != 30 {
		t.Fatalf("the allowed command: status %s, counts %+v", m.Status, m.Counts)
	}
	checkAgainstInput(t, bt, bt.manifest(t), echo)

	for _, tc := range []struct{ name, command string }{
		{"extra argument", allowed + " extra"},
		{"prefix", "sh -c '" + strings.ReplaceAll(echoScript, "'", `'\''`) + "'"},
		{"another marker", strings.Replace(allowed, marker("allowed"), marker("other"), 1)},
		{"another command", "sh " + marker("script.sh")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			os.Remove(marker("allowed"))
			bt := runBatchOn(t, tq, fileStore(t), fmt.Sprintf("trust-refused-%d", queueSeq.Add(1)), input, smallOpts("exec:"+tc.command, 10, 10))
			if bt.err != nil {
				t.Fatalf("a refused batch still ends with a manifest: %v", bt.err)
			}
			m := bt.manifest(t)
			if m.Status != manifests.StatusFailed || len(m.Results) != 0 ||
				!shardRefused.MatchString(m.Error) || !strings.Contains(m.Error, "is not allowed on this worker") ||
				!strings.Contains(m.Error, "--allow-exec ") {
				t.Fatalf("status %s, %d results, error %q; want failed at its first shard naming --allow-exec", m.Status, len(m.Results), m.Error)
			}
			for _, name := range []string{"allowed", "other"} {
				if _, err := os.Stat(marker(name)); err == nil {
					t.Fatalf("the refused command ran (%s exists)", name)
				}
			}
		})
	}
}

// A worker with the zero Trust (pipeline.NewWorker's default) opens no
// file:// URL a batch names: a file:// store fails the batch at its first
// shard (there is no store to write a manifest to: the workflow fails,
// saying so), a file:// input URL fails it at staging with a manifest in
// its store; both name --allow-scheme file. Nothing of the file reaches the
// store. It runs no exec: command either.
func TestTrustDefaultRefusesFileAndExec(t *testing.T) {
	tq := startTrustWorker(t, pipeline.Trust{})
	ctx := context.Background()
	input := makeItems(20, nil)

	// A file:// store.
	storeDir := t.TempDir()
	bt := runBatchOn(t, tq, "file://"+storeDir, fmt.Sprintf("trust-store-%d", queueSeq.Add(1)), input, smallOpts("echo", 10, 10))
	var appErr *temporal.ApplicationError
	if !errors.As(bt.err, &appErr) || appErr.Type() != pipeline.ErrTypeNotAllowed || appErr.NonRetryable() == false ||
		!strings.Contains(appErr.Message(), "file://"+storeDir) || !strings.Contains(appErr.Message(), "--allow-scheme file") {
		t.Fatalf("a batch on a file:// store: %v; want a non-retryable %s naming the store and --allow-scheme file", bt.err, pipeline.ErrTypeNotAllowed)
	}
	if _, err := os.Stat(filepath.Join(storeDir, manifests.ResultKey(bt.id, 0))); err == nil {
		t.Fatal("the refused store got results")
	}
	// What a client waiting for it reads (the workflow failed without a manifest).
	c, err := batchpipe.NewClient(ctx, batchpipe.Config{Store: "file://" + storeDir, TaskQueue: tq, Temporal: temporalClient})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	b, err := c.Batch(ctx, bt.id)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Wait(ctx, nil); err == nil || !strings.Contains(err.Error(), "failed without a manifest") || !strings.Contains(err.Error(), "--allow-scheme file") {
		t.Fatalf("Wait: %v; want the refusal", err)
	}

	// A file:// input URL (a file of the worker's own) into a mem:// store.
	secret := fmt.Sprintf("worker-local-secret-%d", queueSeq.Add(1))
	local := filepath.Join(t.TempDir(), "local.csv")
	if err := os.WriteFile(local, []byte("line\n"+secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	store := fmt.Sprintf("mem://trust-%d", queueSeq.Add(1))
	mc, err := batchpipe.NewClient(ctx, batchpipe.Config{Store: store, TaskQueue: tq, Temporal: temporalClient})
	if err != nil {
		t.Fatal(err)
	}
	defer mc.Close()
	id := fmt.Sprintf("trust-input-%d", queueSeq.Add(1))
	sb, err := mc.Submit(ctx, batchpipe.Request{BatchID: id, Input: "file://" + local, Processor: "echo"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sb.Wait(ctx, nil); !errors.Is(err, batchpipe.ErrInvalid) || !strings.Contains(err.Error(), "input_url file://"+local) || !strings.Contains(err.Error(), "--allow-scheme file") {
		t.Fatalf("a file:// input URL: %v; want a refused input naming it and --allow-scheme file", err)
	}
	for a, err := range mc.Store().List(ctx, "") {
		if err != nil {
			t.Fatal(err)
		}
		data, _ := mc.Store().NewReader(ctx, a.Key)
		var buf bytes.Buffer
		buf.ReadFrom(data)
		data.Close()
		if bytes.Contains(buf.Bytes(), []byte(secret)) {
			t.Fatalf("the worker's file reached %s", a.Key)
		}
	}

	// An exec: processor.
	mark := filepath.Join(t.TempDir(), "ran")
	bt = runBatchOn(t, tq, store, fmt.Sprintf("trust-exec-%d", queueSeq.Add(1)), input, smallOpts("exec:touch "+mark, 10, 10))
	if bt.err != nil {
		t.Fatal(bt.err)
	}
	if m := bt.manifest(t); m.Status != manifests.StatusFailed || !strings.Contains(m.Error, "--allow-exec") {
		t.Fatalf("an exec: batch on the default worker: status %s, error %q", m.Status, m.Error)
	}
	if _, err := os.Stat(mark); err == nil {
		t.Fatal("the refused command ran")
	}
}

// Stores.Open is where a batch's URLs are checked.
func TestStoresOpenGatedSchemes(t *testing.T) {
	ctx := context.Background()
	url := "file://" + t.TempDir()
	_, err := (&pipeline.Stores{}).Open(ctx, url)
	var appErr *temporal.ApplicationError
	if !errors.As(err, &appErr) || appErr.Type() != pipeline.ErrTypeNotAllowed || !appErr.NonRetryable() {
		t.Fatalf("zero Stores, %s: %v; want a non-retryable %s", url, err, pipeline.ErrTypeNotAllowed)
	}
	s := &pipeline.Stores{Trust: pipeline.Trust{Schemes: []string{"file"}}}
	defer s.Close()
	if _, err := s.Open(ctx, url); err != nil {
		t.Fatalf("allowed file: %v", err)
	}
	if _, err := (&pipeline.Stores{}).Open(ctx, "mem://open-to-all"); err != nil {
		t.Fatalf("mem:// needs no allowing: %v", err)
	}
	for _, bad := range []pipeline.Trust{{Schemes: []string{"s3"}}, {Exec: []string{""}}, {Exec: []string{"sh -c 'x"}}} {
		if err := bad.Validate(); err == nil {
			t.Errorf("Trust %+v: Validate accepted it", bad)
		}
	}
	if err := pipeline.TrustAll().Validate(); err != nil {
		t.Fatal(err)
	}
}
