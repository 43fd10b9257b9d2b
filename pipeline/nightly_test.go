package pipeline_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"

	"github.com/batchpipe/batchpipe/blobstore"
	"github.com/batchpipe/batchpipe/internal/testinfra"
	"github.com/batchpipe/batchpipe/manifests"
	"github.com/batchpipe/batchpipe/pipeline"
)

// minioStore gives a test a fresh MinIO bucket: its store URL (with a
// prefix) and the URL of the bucket's root.
func minioStore(t *testing.T) (store, root string) {
	srv := testinfra.MinIOEndpoint(t)
	bucket := testinfra.NewBucket(t, srv)
	t.Setenv("MINIO_ROOT_USER", srv.AccessKey)
	t.Setenv("MINIO_ROOT_PASSWORD", srv.SecretKey)
	root = fmt.Sprintf("minio://%s/%s", srv.Endpoint, bucket)
	return root + "/results?secure=false", root
}

func putObject(t *testing.T, rootURL, key string, data []byte) {
	t.Helper()
	b, err := blobstore.Open(context.Background(), rootURL+"?secure=false")
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := b.Put(context.Background(), key, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
}

func zstdBytes(data []byte) []byte {
	var buf bytes.Buffer
	enc, _ := zstd.NewWriter(&buf)
	enc.Write(data)
	enc.Close()
	return buf.Bytes()
}

// runRemote runs a batch whose input is an object URL.
func runRemote(t *testing.T, store, inputURL, id string, opts pipeline.Options) (*batch, error) {
	t.Helper()
	ctx := context.Background()
	tq := startWorker(t)
	b, err := blobstore.Open(ctx, store)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	run, err := pipeline.Start(ctx, temporalClient, tq, pipeline.BatchInput{BatchID: id, Store: store, Source: inputURL, InputURL: inputURL, Options: opts})
	if err != nil {
		t.Fatal(err)
	}
	bt := &batch{id: id, store: store, bucket: b, tq: tq, run: run}
	wctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	bt.wait(t, wctx)
	return bt, bt.err
}

func TestInputObjectOnMinIO(t *testing.T) {
	store, root := minioStore(t)
	input := makeItems(10000, nil)
	putObject(t, root, "drop/nightly.jsonl.zst", zstdBytes(input))
	o := smallOpts("echo", 0, 100) // shard size chosen by the staging activity
	bt, err := runRemote(t, store, root+"/drop/nightly.jsonl.zst?secure=false", "remote-ok", o)
	if err != nil {
		t.Fatal(err)
	}
	bt.input = input
	m := bt.manifest(t)
	if m.Status != manifests.StatusSucceeded || m.Input.Items != 10000 || m.Input.ShardSize != pipeline.DefaultShardSize {
		t.Fatalf("manifest %s, input %+v", m.Status, m.Input)
	}
	checkAgainstInput(t, bt, m, echo)
}

func TestBadInputObjectFailsWithKeyAndLine(t *testing.T) {
	store, root := minioStore(t)
	putObject(t, root, "drop/bad.jsonl", []byte(`{"n":1}`+"\n"+`{"n":2}`+"\n"+`{"n":`+"\n"))
	bt, err := runRemote(t, store, root+"/drop/bad.jsonl?secure=false", "remote-bad", smallOpts("echo", 1, 100))
	if err != nil {
		t.Fatal(err)
	}
	m := bt.manifest(t)
	if !bt.failed {
		t.Error("the workflow of a batch with a bad input did not fail")
	}
	if m.Status != manifests.StatusFailed || !strings.Contains(m.Error, "drop/bad.jsonl:3:") || len(m.Results) != 0 {
		t.Fatalf("status %s error %q results %d", m.Status, m.Error, len(m.Results))
	}
	for a, err := range bt.bucket.List(context.Background(), manifests.BatchPrefix(bt.id)) {
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(a.Key, "/input/") || strings.Contains(a.Key, "/results/") {
			t.Fatalf("left %s after a rejected input", a.Key)
		}
	}
}

func TestScheduleTriggerLatestOverlapDelete(t *testing.T) {
	ctx := context.Background()
	store := fileStore(t)
	dir := strings.TrimPrefix(store, "file://")
	b, _ := blobstore.Open(ctx, store)
	input := makeItems(60, nil)
	if err := b.Put(ctx, "drop/in.jsonl", bytes.NewReader(input)); err != nil {
		t.Fatal(err)
	}
	tq := startWorker(t)
	o := smallOpts("slow", 10, 100)
	o.Concurrency, o.ItemParallelism = 1, 1 // ~1.2 s: long enough to overlap a second trigger
	name := fmt.Sprintf("nightly%d", queueSeq.Add(1))
	h, err := pipeline.CreateSchedule(ctx, temporalClient, pipeline.ScheduleSpec{
		Name: name, Cron: "0 2 * * *", Overlap: enumspb.SCHEDULE_OVERLAP_POLICY_SKIP, TaskQueue: tq,
		Batch: pipeline.BatchInput{Store: store, Source: "drop/in.jsonl", InputURL: "file://" + dir + "/drop/in.jsonl", Options: o},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Delete(ctx)
	if err := h.Trigger(ctx, client.ScheduleTriggerOptions{}); err != nil {
		t.Fatal(err)
	}
	// A second run due while the first batch runs is skipped.
	time.Sleep(300 * time.Millisecond)
	if err := h.Trigger(ctx, client.ScheduleTriggerOptions{}); err != nil {
		t.Fatal(err)
	}
	var latest manifests.Latest
	deadline := time.Now().Add(90 * time.Second)
	for {
		data, err := blobstore.ReadAll(ctx, b, manifests.LatestKey(name))
		if err == nil {
			if err := json.Unmarshal(data, &latest); err != nil {
				t.Fatal(err)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s after 90 s: %v", manifests.LatestKey(name), err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if !strings.HasPrefix(latest.BatchID, name+"-") || latest.Status != manifests.StatusSucceeded || latest.Manifest != manifests.ManifestKey(latest.BatchID) {
		t.Fatalf("latest.json = %+v", latest)
	}
	batch, err := manifests.Open(ctx, b, latest.BatchID)
	if err != nil {
		t.Fatal(err)
	}
	if err := batch.Verify(ctx); err != nil || batch.Manifest.Counts.Succeeded != 60 {
		t.Fatalf("verify: %v, counts %+v", err, batch.Manifest.Counts)
	}
	desc, err := h.Describe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if desc.Info.NumActions != 1 || desc.Info.NumActionsSkippedOverlap != 1 {
		t.Fatalf("schedule took %d actions and skipped %d; want 1 and 1", desc.Info.NumActions, desc.Info.NumActionsSkippedOverlap)
	}
	// The batch runs under its own id, so status/cancel by id find it.
	if _, err := temporalClient.DescribeWorkflowExecution(ctx, latest.BatchID, ""); err != nil {
		t.Fatalf("batch workflow %s: %v", latest.BatchID, err)
	}
	if err := h.Delete(ctx); err != nil {
		t.Fatal(err)
	}
	_, err = temporalClient.ScheduleClient().GetHandle(ctx, pipeline.ScheduleID(name)).Describe(ctx)
	var nf *serviceerror.NotFound
	if !errors.As(err, &nf) {
		t.Fatalf("Describe after delete = %v, want NotFound", err)
	}
}
