package faults_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/workflowservice/v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// Case 9: store credentials and API keys never appear in workflow history,
// memo, logs or manifests. A batch runs with three planted secrets in the
// environment of its worker and submit — the MinIO password (the suite's
// MinIO really uses it), an AWS secret key and a Temporal API key — with
// debug logging on, failures, ops commands and error paths; then every
// place they could leak to is read and searched.

// corpus is text searched for secrets, by source.
type corpus struct {
	sources map[string]*bytes.Buffer
}

func (c *corpus) add(source string, data []byte) {
	if c.sources == nil {
		c.sources = map[string]*bytes.Buffer{}
	}
	b := c.sources[source]
	if b == nil {
		b = &bytes.Buffer{}
		c.sources[source] = b
	}
	b.Write(data)
	b.WriteByte('\n')
}

func TestSecretsNeverLeak(t *testing.T) {
	c := track(t, "9")
	addr, tc := sharedServer(c)
	mio := theMinIO(c)
	bucket := mio.CreateBucket(c, "faults-9")
	store := mio.StoreURL(bucket, "sec")
	var r1, r2 [12]byte
	rand.Read(r1[:])
	rand.Read(r2[:])
	awsSecret := "planted-aws-" + hex.EncodeToString(r1[:])
	apiKey := "planted-apikey-" + hex.EncodeToString(r2[:])
	secrets := map[string]string{"MinIO password": minioSecret, "AWS secret key": awsSecret, "Temporal API key": apiKey}
	// An exec processor that prints its whole environment to stderr (which
	// the worker logs) sees none of them, only the base variables and
	// --processor-env's.
	envProc := fmt.Sprintf("exec:'%s' -print-env", faultprocBin)
	visible := "visible-9-" + hex.EncodeToString(r2[:4])

	dir := c.TempDir()
	const queue, id = "faults-9", "secrets-9"
	environ := env(append(append(temporalEnv(addr), minioEnv()...),
		"TEMPORAL_API_KEY="+apiKey, "TEMPORAL_TLS=false",
		"AWS_ACCESS_KEY_ID=AKIAFAULTSPLANTED9", "AWS_SECRET_ACCESS_KEY="+awsSecret, "AWS_REGION=us-east-1", "AWS_EC2_METADATA_DISABLED=true",
		"FAULTS_9_VISIBLE="+visible)...)
	var logs corpus
	w := start(c, "worker", dir, environ, workerBin, append([]string{"--task-queue", queue, "--store", store, "-v", "--log-format", "json",
		"--processor-env", "FAULTS_9_VISIBLE"}, allowExec(envProc)...)...)
	if err := w.waitOutput("worker polling", time.Minute); err != nil {
		c.Fatal(err)
	}
	in := items(200, "s9", nil)
	for _, i := range []int{7, 77, 177} { // failures: the example processor needs arg2
		in[i] = []byte(fmt.Sprintf(`{"arg1":"s9-a%d"}`, i))
	}
	writeItems(c, filepath.Join(dir, "in.jsonl"), in)
	cmds := [][]string{
		{"--store", store, "--task-queue", queue, "--batch-id", id, "--shard-size", "40", "-v", "in.jsonl"},
		{"--store", store, "--task-queue", queue, "--batch-id", id + "-env", "--shard-size", "100", "--processor", envProc, "in.jsonl"},
		{"status", id, "--store", store, "-v"},
		{"status", id, "--store", store, "--json"},
		{"results", id, "--store", store},
		{"results", id, "--store", store, "--failed"},
		{"results", id, "--store", store, "--verify"},
		{"list", "--store", store},
		{"redrive", id, "--store", store, "--task-queue", queue, "-v"},
		{"--store", mio.StoreURL("no-such-bucket-9", "x"), "in.jsonl"},
		{"--store", "minio://" + minioUser + ":" + minioSecret + "@" + mio.Endpoint + "/" + bucket + "/x?secure=false", "in.jsonl"},
		{"--store", "s3://" + bucket + "/x?endpoint=http://" + mio.Endpoint + "&path_style=true", "--task-queue", queue, "--batch-id", id + "-s3", "in.jsonl"},
	}
	wantCodes := []int{3, 3, 0, 0, 0, 0, 0, 0, 3, 1, 2, 1}
	for i, args := range cmds {
		r := submit(c, dir, environ, 3*time.Minute, args...)
		if r.code != wantCodes[i] {
			c.Errorf("submit %s: exit %d, want %d: %s", strings.Join(args[:min(2, len(args))], " "), r.code, wantCodes[i], r)
		}
		logs.add(fmt.Sprintf("submit %d stdout", i), []byte(r.stdout))
		logs.add(fmt.Sprintf("submit %d stderr", i), []byte(r.stderr))
	}
	rw := start(c, "worker with credentials in its store URL", dir, environ, workerBin, "--store",
		"minio://"+minioUser+":"+minioSecret+"@"+mio.Endpoint+"/"+bucket+"?secure=false").result(time.Minute)
	if rw.code != 2 {
		c.Errorf("worker with credentials in --store: %s", rw)
	}
	logs.add("worker refusing a URL with credentials", []byte(rw.stdout+rw.stderr))
	w.stop(30 * time.Second)
	logs.add("worker log", []byte(w.stdout.String()+w.stderr.String()))
	if wl := w.stderr.String(); !strings.Contains(wl, "FAULTS_9_VISIBLE="+visible) || !strings.Contains(wl, `"line":"PATH=`) {
		c.Errorf("the worker's log lacks the environment its exec processor printed (PATH and the --processor-env variable)")
	}
	logs.add("shared server log", []byte(sharedServerLog()))
	ctx := context.Background()

	// Workflow histories (every event, encoded as stored: payloads are raw
	// bytes there) and descriptions (memo, search attributes).
	resp, err := tc.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{
		Query: fmt.Sprintf("WorkflowId = '%s' OR WorkflowId STARTS_WITH '%s'", id, id),
	})
	if err != nil {
		c.Fatal(err)
	}
	var hist corpus
	events := 0
	for _, e := range resp.Executions {
		wid, rid := e.GetExecution().GetWorkflowId(), e.GetExecution().GetRunId()
		it := tc.GetWorkflowHistory(ctx, wid, rid, false, enumspb.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
		for it.HasNext() {
			ev, err := it.Next()
			if err != nil {
				c.Fatalf("history of %s: %v", wid, err)
			}
			raw, _ := proto.Marshal(ev)
			js, _ := protojson.Marshal(ev)
			hist.add("history", raw)
			hist.add("history", js)
			events++
		}
		d, err := tc.DescribeWorkflowExecution(ctx, wid, rid)
		if err != nil {
			c.Fatal(err)
		}
		raw, _ := proto.Marshal(d)
		hist.add("memo and description", raw)
	}

	// Every object in the bucket, zstd objects decompressed.
	var objs corpus
	nobj := 0
	dec, _ := zstd.NewReader(nil)
	defer dec.Close()
	b := openStore(c, "minio://"+mio.Endpoint+"/"+bucket+"?secure=false")
	for a, err := range b.List(ctx, "") {
		if err != nil {
			c.Fatal(err)
		}
		rd, err := b.NewReader(ctx, a.Key)
		if err != nil {
			c.Fatal(err)
		}
		data, _ := io.ReadAll(rd)
		rd.Close()
		if strings.HasSuffix(a.Key, ".zst") {
			if plain, err := dec.DecodeAll(data, nil); err == nil {
				data = plain
			}
		}
		objs.add("objects (manifests, results, failures, receipts, inputs, specs)", data)
		nobj++
	}

	// The server's database files, raw.
	var db corpus
	files, _ := filepath.Glob(filepath.Join(suiteDir, "shared-server", "state", "*"))
	for _, f := range files {
		if data, err := os.ReadFile(f); err == nil {
			db.add("Temporal server database ("+filepath.Base(f)+")", data)
		}
	}

	// Each place was searched, and holds the batch (the search sees data).
	for _, cp := range []*corpus{&logs, &hist, &objs, &db} {
		all := &bytes.Buffer{}
		for _, b := range cp.sources {
			all.Write(b.Bytes())
		}
		if !bytes.Contains(all.Bytes(), []byte(id)) {
			c.Errorf("the batch id %s is nowhere in %v: the search would see nothing", id, keys(cp.sources))
		}
		for name, secret := range secrets {
			for src, b := range cp.sources {
				if bytes.Contains(b.Bytes(), []byte(secret)) {
					c.Errorf("LEAK: the %s appears in %s", name, src)
				}
			}
		}
	}
	c.Note("planted the MinIO password (in use), an AWS secret key and a Temporal API key (TEMPORAL_TLS=false) in worker and submit environments; ran a batch with failures, one through an exec processor printing its whole environment to stderr (logged by the worker: the --processor-env variable is there, no secret), a redrive, status/results/list, a missing bucket, a store URL carrying the password (refused, exit 2, by submit and worker) and an s3:// store with the wrong key; searched %d log sources (worker -v JSON, every submit, the server), %d history events of %d executions (raw and JSON) with their memo, %d objects (decompressed) and the server's database files: none holds any secret",
		len(logs.sources), events, len(resp.Executions), nobj)
}

func keys(m map[string]*bytes.Buffer) []string {
	var k []string
	for s := range m {
		k = append(k, s)
	}
	return k
}
