package pipeline_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/worker"

	"github.com/batchpipe/batchpipe"
	"github.com/batchpipe/batchpipe/blobstore"
	"github.com/batchpipe/batchpipe/internal/devserver"
	"github.com/batchpipe/batchpipe/internal/testinfra"
	"github.com/batchpipe/batchpipe/internal/testinfra/temporaltest"
	"github.com/batchpipe/batchpipe/manifests"
	"github.com/batchpipe/batchpipe/pipeline"
	"github.com/batchpipe/batchpipe/zjsonl"
)

var (
	temporalClient client.Client
	quietLog       = slog.New(slog.NewTextHandler(io.Discard, nil))
)

// TestMain starts one real in-process Temporal server (in-memory SQLite)
// for the package's tests.
func TestMain(m *testing.M) {
	flag.Parse()
	code := func() int {
		if testing.Short() {
			return m.Run()
		}
		srv, err := temporaltest.Start(context.Background(), devserver.Options{SearchAttributes: pipeline.SearchAttributes()})
		if err != nil {
			fmt.Fprintln(os.Stderr, "starting Temporal:", err)
			return 1
		}
		defer srv.Stop()
		temporalClient = srv.Client
		code := m.Run()
		testinfra.StopMinIO()
		return code
	}()
	os.Exit(code)
}

// testProcessors: echo, and "flaky" which fails permanently on items with
// "fail":true and fails once (retryably) on items with "retry":true.
func testProcessors() *pipeline.Registry {
	r := &pipeline.Registry{}
	r.Register("echo", pipeline.ProcessorFunc(func(_ context.Context, in json.RawMessage) (json.RawMessage, error) { return in, nil }))
	retried := map[string]bool{}
	var mu = make(chan struct{}, 1)
	r.Register("slow", pipeline.ProcessorFunc(func(ctx context.Context, in json.RawMessage) (json.RawMessage, error) {
		select {
		case <-time.After(20 * time.Millisecond):
			return in, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}))
	r.Register("gate", pipeline.ProcessorFunc(func(_ context.Context, in json.RawMessage) (json.RawMessage, error) {
		var v struct{ Gated bool }
		json.Unmarshal(in, &v)
		if v.Gated && gateClosed.Load() {
			return nil, pipeline.Permanent(errors.New("gate closed"))
		}
		return in, nil
	}))
	r.Register("flaky", pipeline.ProcessorFunc(func(_ context.Context, in json.RawMessage) (json.RawMessage, error) {
		var v struct {
			N     int  `json:"n"`
			Fail  bool `json:"fail"`
			Retry bool `json:"retry"`
			Panic bool `json:"panic"`
		}
		if err := json.Unmarshal(in, &v); err != nil {
			return nil, err
		}
		if v.Panic {
			panic("boom on purpose")
		}
		if v.Fail {
			return nil, pipeline.Permanent(fmt.Errorf("item %d is marked to fail", v.N))
		}
		if v.Retry {
			mu <- struct{}{}
			first := !retried[string(in)]
			retried[string(in)] = true
			<-mu
			if first {
				return nil, errors.New("transient trouble")
			}
		}
		return json.Marshal(map[string]int{"double": v.N * 2})
	}))
	r.Register("always-fail", pipeline.ProcessorFunc(func(_ context.Context, in json.RawMessage) (json.RawMessage, error) {
		alwaysFailCalls.Add(1)
		if alwaysFailFixed.Load() {
			return in, nil
		}
		return nil, pipeline.Permanent(errors.New("fails on purpose"))
	}))
	r.Register("fail-or-slow", pipeline.ProcessorFunc(func(ctx context.Context, in json.RawMessage) (json.RawMessage, error) {
		failOrSlowCalls.Add(1)
		var v struct{ Fail bool }
		json.Unmarshal(in, &v)
		if v.Fail {
			return nil, pipeline.Permanent(errors.New("marked to fail"))
		}
		select {
		case <-time.After(100 * time.Millisecond):
			return in, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}))
	registerContextProcessors(r)
	registerSteerProcessors(r)
	registerCanaryProcessors(r)
	return r
}

// alwaysFailCalls counts the calls of "always-fail", which fails every item
// permanently until alwaysFailFixed; failOrSlowCalls those of
// "fail-or-slow" (items marked "fail" fail at once, the others take 100 ms).
var (
	alwaysFailCalls, failOrSlowCalls atomic.Int64
	alwaysFailFixed                  atomic.Bool
)

var queueSeq atomic.Int64

// gateClosed makes the "gate" processor fail items marked "gated".
var gateClosed atomic.Bool

// startWorker runs a worker on a fresh task queue for one test.
func startWorker(t *testing.T) string {
	t.Helper()
	if temporalClient == nil {
		t.Skip("needs the Temporal server (not in -short mode)")
	}
	tq := fmt.Sprintf("test-%s-%d", strings.ReplaceAll(t.Name(), "/", "-"), queueSeq.Add(1))
	w := pipeline.NewWorker(temporalClient, tq, pipeline.WorkerOptions{
		Processors: testProcessors(), Logger: quietLog,
		Worker: worker.Options{MaxConcurrentActivityExecutionSize: 64},
		Trust:  pipeline.Trust{Schemes: []string{"file"}}, // the tests' stores and inputs are file://
	})
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Stop)
	return tq
}

func makeItems(n int, mark func(i int) string) []byte {
	var buf bytes.Buffer
	for i := range n {
		extra := ""
		if mark != nil {
			extra = mark(i)
		}
		fmt.Fprintf(&buf, `{"n":%d,"name":"item %d"%s}`+"\n", i, i, extra)
	}
	return buf.Bytes()
}

type batch struct {
	id     string
	store  string
	bucket blobstore.Bucket
	input  []byte
	opts   pipeline.Options
	tq     string
	run    client.WorkflowRun
	result pipeline.BatchResult
	err    error
	// failed: the workflow failed as a batch whose manifest says failed
	// does (ErrTypeBatchFailed, its result in the details); err is nil then.
	failed bool
}

// runBatch stages input into store and runs it to the end on a fresh
// worker with the test processors.
func runBatch(t *testing.T, storeURL, id string, input []byte, opts pipeline.Options) *batch {
	t.Helper()
	return runBatchOn(t, startWorker(t), storeURL, id, input, opts)
}

// runBatchOn is runBatch on the task queue of a worker the caller started.
func runBatchOn(t *testing.T, tq, storeURL, id string, input []byte, opts pipeline.Options) *batch {
	t.Helper()
	_, wait := startBatchOn(t, tq, storeURL, id, input, opts)
	return wait()
}

// startBatchOn submits a batch on the worker of tq and returns at once;
// wait() runs it to its end.
func startBatchOn(t *testing.T, tq, storeURL, id string, input []byte, opts pipeline.Options) (*batch, func() *batch) {
	t.Helper()
	ctx := context.Background()
	c, err := batchpipe.NewClient(ctx, batchpipe.Config{Store: storeURL, TaskQueue: tq, Temporal: temporalClient})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := c.Submit(ctx, requestFor(id, input, opts)); err != nil {
		t.Fatal(err)
	}
	bt := &batch{id: id, store: storeURL, bucket: c.Store(), input: input, opts: opts, tq: tq}
	bt.run = temporalClient.GetWorkflow(ctx, id, "")
	return bt, func() *batch {
		wctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
		defer cancel()
		bt.wait(t, wctx)
		return bt
	}
}

// redrive runs redrive 1 of the finished batch to its end, with the spec
// Submit saved (changed by edit, if not nil).
func redrive(t *testing.T, bt *batch, edit func(*pipeline.BatchInput)) client.WorkflowRun {
	t.Helper()
	ctx := context.Background()
	spec, err := pipeline.ReadSpec(ctx, bt.bucket, bt.id)
	if err != nil {
		t.Fatal(err)
	}
	if edit != nil {
		edit(&spec)
	}
	run, err := pipeline.StartRedrive(ctx, temporalClient, bt.tq, spec, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := run.Get(ctx, nil); err != nil {
		t.Fatal(err)
	}
	return run
}

// wait waits for the batch's workflow to end: bt.err is how it ended, nil
// for a batch that failed as a batch (bt.failed, its result read from the
// workflow's failure).
func (bt *batch) wait(t *testing.T, ctx context.Context) {
	t.Helper()
	bt.err = bt.run.Get(ctx, &bt.result)
	var appErr *temporal.ApplicationError
	if errors.As(bt.err, &appErr) && appErr.Type() == pipeline.ErrTypeBatchFailed {
		if err := appErr.Details(&bt.result); err != nil || bt.result.Status != manifests.StatusFailed {
			t.Fatalf("batch %s failed with result %+v (%v), want a failed batch's", bt.id, bt.result, err)
		}
		bt.failed, bt.err = true, nil
	}
}

// requestFor is the library request of a batch of input with opts.
func requestFor(id string, input []byte, opts pipeline.Options) batchpipe.Request {
	return batchpipe.Request{BatchID: id, Reader: bytes.NewReader(input), Name: "inputs.jsonl",
		Processor: opts.Processor, ShardSize: opts.ShardSize, Concurrency: opts.Concurrency, ShardsPerRun: opts.ShardsPerRun,
		MaxFailures: opts.MaxFailures, ItemTimeout: opts.ItemTimeout, ItemAttempts: opts.ItemAttempts,
		ItemParallelism: opts.ItemParallelism, ItemBackoff: opts.ItemBackoff,
		ItemsPerCall: opts.ItemsPerCall, ItemContext: opts.ItemContext, Rate: opts.Rate, ResultsIncludeInput: opts.ResultsIncludeInput,
		Canary: opts.Canary, CanaryMaxFailures: opts.CanaryMaxFailures,
		Priority: opts.Priority, FairnessKey: opts.FairnessKey, FairnessWeight: opts.FairnessWeight}
}

func (bt *batch) manifest(t *testing.T) manifests.Manifest {
	t.Helper()
	data, err := blobstore.ReadAll(context.Background(), bt.bucket, manifests.ManifestKey(bt.id))
	if err != nil {
		t.Fatalf("manifest: %v", err)
	}
	var m manifests.Manifest
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// readObject reads a manifest key (prefix included) through the bucket,
// checking its size and sha256 against the manifest.
func readObject(t *testing.T, b blobstore.Bucket, key string, size int64, sum string) []byte {
	t.Helper()
	rel, ok := strings.CutPrefix(key, blobstore.Prefix(b))
	if !ok {
		t.Fatalf("key %q lacks the store prefix %q", key, blobstore.Prefix(b))
	}
	data, err := blobstore.ReadAll(context.Background(), b, rel)
	if err != nil {
		t.Fatal(err)
	}
	if size >= 0 {
		h := sha256.Sum256(data)
		if int64(len(data)) != size || hex.EncodeToString(h[:]) != sum {
			t.Fatalf("%s: %d bytes sha256 %x; manifest says %d bytes %s", key, len(data), h, size, sum)
		}
	}
	return data
}

func decodeLines[T any](t *testing.T, data []byte) []T {
	t.Helper()
	r, err := zjsonl.NewReader(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var out []T
	for {
		var v T
		err := r.Decode(&v)
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, v)
	}
}

// checkAgainstInput reads every result line of the manifest and checks it
// item by item against the input: each index once, in order, with the
// output want(input) or a failure when want returns nil.
func checkAgainstInput(t *testing.T, bt *batch, m manifests.Manifest, want func(in json.RawMessage) json.RawMessage) {
	t.Helper()
	lines := bytes.Split(bytes.TrimSpace(bt.input), []byte("\n"))
	if m.Format != manifests.Format || m.BatchID != bt.id || m.Input.Items != int64(len(lines)) {
		t.Fatalf("manifest header %+v", m)
	}
	var next int64
	var failed int64
	for _, r := range m.Results {
		if r.FirstIndex != next {
			t.Fatalf("result %s starts at %d, want %d", r.Key, r.FirstIndex, next)
		}
		rl := decodeLines[manifests.ResultLine](t, readObject(t, bt.bucket, r.Key, r.Size, r.SHA256))
		if int64(len(rl)) != r.Items {
			t.Fatalf("%s has %d lines, manifest says %d", r.Key, len(rl), r.Items)
		}
		for _, l := range rl {
			if l.Index != next {
				t.Fatalf("%s: index %d, want %d", r.Key, l.Index, next)
			}
			exp := want(lines[next])
			switch {
			case exp == nil && l.Status != manifests.ItemFailed:
				t.Fatalf("item %d: status %s, want failed", next, l.Status)
			case exp != nil && (l.Status != manifests.ItemSucceeded || !bytes.Equal(l.Output, exp)):
				t.Fatalf("item %d: %s %s %+v, want output %s", next, l.Status, l.Output, l.Error, exp)
			}
			if l.Status == manifests.ItemFailed {
				failed++
			}
			next++
		}
	}
	if next != int64(len(lines)) || m.Counts.Items != next || m.Counts.Failed != failed || m.Counts.Succeeded != next-failed {
		t.Fatalf("covered %d of %d items; counts %+v, failed %d", next, len(lines), m.Counts, failed)
	}
}

func echo(in json.RawMessage) json.RawMessage { return in }

func fileStore(t *testing.T) string { return "file://" + t.TempDir() }

func smallOpts(processor string, shardSize, perRun int) pipeline.Options {
	o := pipeline.DefaultOptions()
	o.Processor, o.ShardSize, o.ShardsPerRun, o.Concurrency = processor, shardSize, perRun, 8
	o.ItemBackoff = 10 * time.Millisecond
	return o
}

// runs follows a batch's continue-as-new chain and returns every run's
// history: events and their encoded size.
type runStats struct {
	runID  string
	events int
	bytes  int
}

func TestBatchAcrossContinueAsNewFileStore(t *testing.T) {
	bt := runBatch(t, fileStore(t), "can-file", makeItems(1000, nil), smallOpts("echo", 10, 30))
	if bt.err != nil {
		t.Fatal(bt.err)
	}
	m := bt.manifest(t)
	if m.Status != manifests.StatusSucceeded || len(m.Results) != 100 || m.Failures != nil {
		t.Fatalf("status %s, %d results, failures %v", m.Status, len(m.Results), m.Failures)
	}
	checkAgainstInput(t, bt, m, echo)
	if bt.result.Runs < 4 {
		t.Fatalf("batch took %d runs; want >= 4 (100 shards, 30 per run)", bt.result.Runs)
	}
	runs := historyRuns(t, bt.id)
	if len(runs) != bt.result.Runs {
		t.Fatalf("history has %d runs, result says %d", len(runs), bt.result.Runs)
	}
	// The memo (what the Web UI shows) carries the final progress.
	desc, err := temporalClient.DescribeWorkflowExecution(context.Background(), bt.id, "")
	if err != nil {
		t.Fatal(err)
	}
	var status string
	var done int64
	fields := desc.WorkflowExecutionInfo.GetMemo().GetFields()
	converter.GetDefaultDataConverter().FromPayload(fields["status"], &status)
	converter.GetDefaultDataConverter().FromPayload(fields["done"], &done)
	if status != manifests.StatusSucceeded || done != 1000 {
		t.Fatalf("memo status %q done %d, want succeeded 1000", status, done)
	}
}

func TestBatchOnMinIO(t *testing.T) {
	srv := testinfra.MinIOEndpoint(t)
	bucket := testinfra.NewBucket(t, srv)
	t.Setenv("MINIO_ROOT_USER", srv.AccessKey)
	t.Setenv("MINIO_ROOT_PASSWORD", srv.SecretKey)
	store := fmt.Sprintf("minio://%s/%s/some/prefix?secure=false", srv.Endpoint, bucket)
	bt := runBatch(t, store, "can-minio", makeItems(600, nil), smallOpts("echo", 20, 10))
	if bt.err != nil {
		t.Fatal(bt.err)
	}
	m := bt.manifest(t)
	if m.Status != manifests.StatusSucceeded || !strings.HasPrefix(m.Results[0].Key, "some/prefix/batches/can-minio/results/") {
		t.Fatalf("status %s, first key %s", m.Status, m.Results[0].Key)
	}
	checkAgainstInput(t, bt, m, echo)
	if bt.result.Runs < 3 {
		t.Fatalf("runs = %d, want >= 3", bt.result.Runs)
	}

	// The manifests library reads and verifies it from MinIO by URL, and
	// names the object when one is corrupted, deleted, or counts are edited.
	ctx := context.Background()
	url := fmt.Sprintf("minio://%s/%s/some/prefix/batches/can-minio/manifest.json?secure=false", srv.Endpoint, bucket)
	verify := func() error {
		batch, err := manifests.OpenURL(ctx, url)
		if err != nil {
			t.Fatal(err)
		}
		defer batch.Close()
		return batch.Verify(ctx)
	}
	if err := verify(); err != nil {
		t.Fatalf("Verify on a good batch: %v", err)
	}
	rel := func(k string) string { return strings.TrimPrefix(k, "some/prefix/") }
	victim := m.Results[3]
	orig := readObject(t, bt.bucket, victim.Key, victim.Size, victim.SHA256)
	bad := bytes.Clone(orig)
	bad[len(bad)/2] ^= 0x40
	put := func(key string, data []byte) {
		if err := bt.bucket.Put(ctx, key, bytes.NewReader(data)); err != nil {
			t.Fatal(err)
		}
	}
	put(rel(victim.Key), bad)
	if err := verify(); err == nil || !strings.Contains(err.Error(), victim.Key) || !strings.Contains(err.Error(), "sha256") {
		t.Fatalf("Verify after a flipped byte = %v", err)
	}
	put(rel(victim.Key), orig)
	orig5 := readObject(t, bt.bucket, m.Results[5].Key, m.Results[5].Size, m.Results[5].SHA256)
	bt.bucket.Delete(ctx, rel(m.Results[5].Key))
	if err := verify(); err == nil || !strings.Contains(err.Error(), m.Results[5].Key) {
		t.Fatalf("Verify after a deleted object = %v", err)
	}
	put(rel(m.Results[5].Key), orig5)
	if err := verify(); err != nil {
		t.Fatalf("Verify after restoring: %v", err)
	}
	edited := m
	edited.Counts.Succeeded--
	edited.Counts.Failed++
	data, _ := json.Marshal(edited)
	put(manifests.ManifestKey(bt.id), data)
	if err := verify(); err == nil || !strings.Contains(err.Error(), "manifest.json") {
		t.Fatalf("Verify after editing the counts = %v", err)
	}
}

func TestItemFailuresRetriesAndPanics(t *testing.T) {
	input := makeItems(200, func(i int) string {
		switch {
		case i%50 == 7:
			return `,"fail":true`
		case i%50 == 8:
			return `,"retry":true`
		case i == 99:
			return `,"panic":true`
		}
		return ""
	})
	bt := runBatch(t, fileStore(t), "failures", input, smallOpts("flaky", 25, 100))
	if bt.err != nil {
		t.Fatal(bt.err)
	}
	m := bt.manifest(t)
	if m.Status != manifests.StatusCompletedWithFailures || m.Counts.Failed != 5 {
		t.Fatalf("status %s counts %+v, want completed_with_failures with 5 failed", m.Status, m.Counts)
	}
	checkAgainstInput(t, bt, m, func(in json.RawMessage) json.RawMessage {
		var v struct {
			N           int
			Fail, Panic bool
		}
		json.Unmarshal(in, &v)
		if v.Fail || v.Panic {
			return nil
		}
		return json.RawMessage(fmt.Sprintf(`{"double":%d}`, v.N*2))
	})
	// The failures object lists the failed items with their input, in order.
	if m.Failures == nil || m.Failures.Items != 5 {
		t.Fatalf("failures = %+v", m.Failures)
	}
	fl := decodeLines[manifests.FailureLine](t, readObject(t, bt.bucket, m.Failures.Key, -1, ""))
	lines := bytes.Split(bytes.TrimSpace(input), []byte("\n"))
	wantIdx := []int64{7, 57, 99, 107, 157}
	if len(fl) != len(wantIdx) {
		t.Fatalf("%d failure lines, want %d", len(fl), len(wantIdx))
	}
	for i, f := range fl {
		if f.Index != wantIdx[i] || !bytes.Equal(f.Input, lines[f.Index]) || f.Error == nil {
			t.Fatalf("failure line %d = %+v", i, f)
		}
	}
	if fl[2].Error.Type != pipeline.ItemErrorPanic || fl[0].Error.Type != pipeline.ItemErrorPermanent {
		t.Fatalf("error types %q, %q", fl[2].Error.Type, fl[0].Error.Type)
	}
	// The retried item succeeded on its second attempt.
	rl := decodeLines[manifests.ResultLine](t, readObject(t, bt.bucket, m.Results[0].Key, -1, ""))
	if rl[8].Attempts != 2 || rl[8].Status != manifests.ItemSucceeded {
		t.Fatalf("retried item: %+v", rl[8])
	}
}

func TestMaxFailuresStopsBatch(t *testing.T) {
	input := makeItems(400, func(i int) string {
		if i%10 == 0 {
			return `,"fail":true`
		}
		return ""
	})
	o := smallOpts("flaky", 10, 100)
	o.Concurrency = 2
	o.MaxFailures = pipeline.MaxFailedItems(5)
	bt := runBatch(t, fileStore(t), "maxfail", input, o)
	if bt.err != nil {
		t.Fatal(bt.err)
	}
	m := bt.manifest(t)
	if !bt.failed {
		t.Error("the workflow of a failed batch did not fail")
	}
	if m.Status != manifests.StatusFailed || !strings.Contains(m.Error, "over the limit") {
		t.Fatalf("status %s error %q", m.Status, m.Error)
	}
	if m.Counts.Items >= 400 || m.Counts.Failed <= 5 {
		t.Fatalf("counts %+v: want the batch stopped early with more than 5 failed", m.Counts)
	}
}

func TestCancelWritesCanceledManifest(t *testing.T) {
	if temporalClient == nil {
		t.Skip("needs the Temporal server (not in -short mode)")
	}
	ctx := context.Background()
	o := smallOpts("slow", 10, 100)
	o.Concurrency, o.ItemParallelism = 2, 1
	store := fileStore(t)
	done := make(chan *batch)
	go func() { done <- runBatch(t, store, "cancel-me", makeItems(400, nil), o) }()
	// Wait until some shards finished, then cancel.
	deadline := time.Now().Add(time.Minute)
	for {
		p, err := pipeline.QueryProgress(ctx, temporalClient, "cancel-me")
		if err == nil && p.ShardsDone >= 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("batch made no progress")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := temporalClient.CancelWorkflow(ctx, "cancel-me", ""); err != nil {
		t.Fatal(err)
	}
	bt := <-done
	if bt.err == nil {
		t.Fatal("a cancelled batch returned no error")
	}
	m := bt.manifest(t)
	if m.Status != manifests.StatusCanceled || len(m.Results) < 3 || m.Counts.Items >= 400 {
		t.Fatalf("status %s, %d results, counts %+v", m.Status, len(m.Results), m.Counts)
	}
	// What was written is intact and in order.
	var next int64
	for _, r := range m.Results {
		for _, l := range decodeLines[manifests.ResultLine](t, readObject(t, bt.bucket, r.Key, r.Size, r.SHA256)) {
			if l.Index != next || l.Status != manifests.ItemSucceeded {
				t.Fatalf("line %+v, want index %d succeeded", l, next)
			}
			next++
		}
	}
	// Every child was cancelled or had finished: none is left running.
	// Visibility is updated after a workflow closes, asynchronously: give
	// it a few seconds to catch up.
	running := func() int {
		resp, err := temporalClient.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{
			Query: "WorkflowId STARTS_WITH 'cancel-me/' AND ExecutionStatus = 'Running'",
		})
		if err != nil {
			t.Fatal(err)
		}
		return len(resp.Executions)
	}
	waitFor(t, 10*time.Second, "shard workflows still running after cancel", func() bool { return running() == 0 })
}

func TestRedriveRerunsOnlyFailedItems(t *testing.T) {
	gateClosed.Store(true)
	defer gateClosed.Store(false)
	input := makeItems(300, func(i int) string {
		if i%37 == 5 {
			return `,"gated":true`
		}
		return ""
	})
	o := smallOpts("gate", 20, 4)
	bt := runBatch(t, fileStore(t), "redrive", input, o)
	if bt.err != nil {
		t.Fatal(bt.err)
	}
	m1 := bt.manifest(t)
	if m1.Status != manifests.StatusCompletedWithFailures || m1.Counts.Failed != 8 {
		t.Fatalf("first run: %s %+v", m1.Status, m1.Counts)
	}
	gateClosed.Store(false)
	redrive(t, bt, nil)
	m2 := bt.manifest(t)
	if m2.Status != manifests.StatusSucceeded || m2.Redrives != 1 || m2.Failures != nil {
		t.Fatalf("after redrive: %s, redrives %d, failures %+v", m2.Status, m2.Redrives, m2.Failures)
	}
	checkAgainstInput(t, bt, m2, echo)
	// Only shards with failures got new objects; the others are unchanged.
	changed := 0
	for i, r := range m2.Results {
		if r.Key != m1.Results[i].Key {
			changed++
			if !strings.Contains(r.Key, ".r1.") {
				t.Fatalf("redriven shard key %s", r.Key)
			}
		} else if r.SHA256 != m1.Results[i].SHA256 {
			t.Fatalf("shard %d was rewritten though it had no failures", i)
		}
	}
	shardsWithFailures := 0
	for _, r := range m1.Results {
		if r.Failed > 0 {
			shardsWithFailures++
		}
	}
	if changed != shardsWithFailures {
		t.Fatalf("%d shards rewritten, %d had failures", changed, shardsWithFailures)
	}
	// Succeeded items were not re-run: their lines are the same bytes.
	for _, r := range m2.Results {
		for _, l := range decodeLines[manifests.ResultLine](t, readObject(t, bt.bucket, r.Key, r.Size, r.SHA256)) {
			if l.Attempts != 1 {
				t.Fatalf("item %d has %d attempts", l.Index, l.Attempts)
			}
		}
	}
}

func TestCancelThenRedriveCoversEveryItem(t *testing.T) {
	if temporalClient == nil {
		t.Skip("needs the Temporal server (not in -short mode)")
	}
	ctx := context.Background()
	o := smallOpts("slow", 10, 7)
	o.Concurrency, o.ItemParallelism = 2, 1
	store := fileStore(t)
	done := make(chan *batch)
	go func() { done <- runBatch(t, store, "cancel-redrive", makeItems(300, nil), o) }()
	for {
		p, err := pipeline.QueryProgress(ctx, temporalClient, "cancel-redrive")
		if err == nil && p.ShardsDone >= 2 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	temporalClient.CancelWorkflow(ctx, "cancel-redrive", "")
	bt := <-done
	m1 := bt.manifest(t)
	if m1.Status != manifests.StatusCanceled || m1.Counts.Items >= 300 {
		t.Fatalf("after cancel: %s %+v", m1.Status, m1.Counts)
	}
	o.Concurrency, o.ItemParallelism = 8, 8
	redrive(t, bt, func(spec *pipeline.BatchInput) { spec.Options = o })
	m2 := bt.manifest(t)
	if m2.Status != manifests.StatusSucceeded {
		t.Fatalf("after redrive: %s %+v", m2.Status, m2.Counts)
	}
	checkAgainstInput(t, bt, m2, echo)
}

// checkStopped checks the manifest of a batch its failure limit stopped:
// failed by max_failures, Verify passes, and every result object holds the
// lines of its shard's first items, in order, none of them an item the
// processor was never called with (calls: how many calls it had).
func checkStopped(t *testing.T, bt *batch, calls int64) manifests.Manifest {
	t.Helper()
	if bt.err != nil {
		t.Fatal(bt.err)
	}
	m := bt.manifest(t)
	if m.Status != manifests.StatusFailed || m.StopReason != manifests.StopMaxFailures || !strings.Contains(m.Error, "over the limit") || !bt.failed {
		t.Fatalf("status %s stop reason %q error %q, workflow failed %v; want failed by max_failures", m.Status, m.StopReason, m.Error, bt.failed)
	}
	ctx := context.Background()
	mb, err := manifests.Open(ctx, bt.bucket, bt.id)
	if err != nil {
		t.Fatal(err)
	}
	defer mb.Close()
	if err := mb.Verify(ctx); err != nil {
		t.Fatalf("Verify: %v", err)
	}
	var failed int64
	for _, r := range m.Results {
		if r.FirstIndex%int64(bt.opts.ShardSize) != 0 {
			t.Fatalf("%s starts at %d, not at a shard's first item", r.Key, r.FirstIndex)
		}
		next := r.FirstIndex
		for _, l := range decodeLines[manifests.ResultLine](t, readObject(t, bt.bucket, r.Key, r.Size, r.SHA256)) {
			if l.Index != next || l.Attempts < 1 {
				t.Fatalf("%s: line %+v, want index %d processed", r.Key, l, next)
			}
			if l.Status == manifests.ItemFailed {
				failed++
			}
			next++
		}
	}
	if m.Counts.Failed != failed || m.Counts.Items > calls {
		t.Fatalf("counts %+v: %d failed lines read, %d calls made", m.Counts, failed, calls)
	}
	return m
}

// A processor failing every item, with --max-failures 100: the batch stops
// having handed out a few thousand of its 50,000 items (each shard of the
// window of 32 stops itself after 101 failures), not 32 shards of 1,000.
// Then a redrive, the processor fixed, runs every item not yet succeeded —
// the shards that stopped midway from where they stopped — and the batch
// succeeds whole.
func TestMaxFailuresStopsPromptly(t *testing.T) {
	const n = 50000
	alwaysFailCalls.Store(0)
	alwaysFailFixed.Store(false)
	defer alwaysFailFixed.Store(false)
	o := smallOpts("always-fail", 1000, pipeline.DefaultShardsPerRun)
	o.Concurrency = 32
	o.MaxFailures = pipeline.MaxFailedItems(100)
	began := time.Now()
	bt := runBatch(t, fileStore(t), "failstop", makeItems(n, nil), o)
	calls := alwaysFailCalls.Load()
	m := checkStopped(t, bt, calls)
	t.Logf("stopped after %v: %d items handed out; manifest: %d results, counts %+v", time.Since(began).Round(time.Millisecond), calls, len(m.Results), m.Counts)
	// At most the window: 32 shards × (101 failures + 8 calls in flight + 1).
	if bound := int64(32 * (101 + 8 + 1)); calls > bound {
		t.Fatalf("%d items handed out; want at most %d", calls, bound)
	}
	if m.Counts.Failed <= 100 || m.Counts.Succeeded != 0 {
		t.Fatalf("counts %+v, want more than 100 failed and none succeeded", m.Counts)
	}

	alwaysFailFixed.Store(true)
	redrive(t, bt, nil)
	m2 := bt.manifest(t)
	if m2.Status != manifests.StatusSucceeded {
		t.Fatalf("after redrive: %s %+v", m2.Status, m2.Counts)
	}
	checkAgainstInput(t, bt, m2, echo)
}

// The same with a percent: 0.5% of 20,000 items is 100.
func TestMaxFailuresPercentStopsPromptly(t *testing.T) {
	alwaysFailCalls.Store(0)
	alwaysFailFixed.Store(false)
	o := smallOpts("always-fail", 500, pipeline.DefaultShardsPerRun)
	o.Concurrency = 8
	o.MaxFailures = pipeline.MaxFailedPercent(0.5)
	bt := runBatch(t, fileStore(t), "failstop-pct", makeItems(20000, nil), o)
	calls := alwaysFailCalls.Load()
	m := checkStopped(t, bt, calls)
	t.Logf("%d items handed out; counts %+v", calls, m.Counts)
	if bound := int64(8 * (101 + 8 + 1)); calls > bound {
		t.Fatalf("%d items handed out; want at most %d", calls, bound)
	}
	if m.Counts.Failed <= 100 {
		t.Fatalf("counts %+v, want more than 100 failed", m.Counts)
	}
}

// Failures in one shard alone take the batch over its limit: that shard
// stops itself, and the batch cancels the shards still running (slow
// items, 10 s a shard) instead of waiting for them; they commit nothing
// and a redrive would run them whole.
func TestMaxFailuresCancelsRunningShards(t *testing.T) {
	failOrSlowCalls.Store(0)
	input := makeItems(800, func(i int) string {
		if i < 100 {
			return `,"fail":true`
		}
		return ""
	})
	o := smallOpts("fail-or-slow", 100, pipeline.DefaultShardsPerRun)
	o.Concurrency, o.ItemParallelism = 8, 1
	o.MaxFailures = pipeline.MaxFailedItems(10)
	began := time.Now()
	bt := runBatch(t, fileStore(t), "failstop-cancel", input, o)
	took := time.Since(began)
	calls := failOrSlowCalls.Load()
	m := checkStopped(t, bt, calls)
	t.Logf("stopped after %v, %d items handed out; %d results, counts %+v", took, calls, len(m.Results), m.Counts)
	if len(m.Results) != 1 || m.Results[0].FirstIndex != 0 || m.Results[0].Items >= 100 || m.Counts.Failed != m.Results[0].Items {
		t.Fatalf("results %+v; want shard 0 alone, stopped before its end, every item failed", m.Results)
	}
	// Each slow shard alone takes 10 s; cancelled, they stop at their next
	// heartbeat (5 s) instead.
	if calls >= 800-100 {
		t.Fatalf("%d items handed out: the running shards ran to their end", calls)
	}
}
