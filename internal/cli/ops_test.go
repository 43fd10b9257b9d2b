package cli_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/batchpipe/batchpipe/blobstore"
	"github.com/batchpipe/batchpipe/internal/cli"
	"github.com/batchpipe/batchpipe/manifests"
	"github.com/batchpipe/batchpipe/pipeline"
)

// Tests of the operating commands (status, results, redrive, list, cancel,
// submit --from-failures), run in-process in embedded mode like the submit
// tests: each test has its own directory, and the helpers come from
// submit_test.go.

// runBatch writes n example items (those at missing lack "arg2" and fail
// permanently) to <id>.jsonl in dir and submits them as batch id in shards
// of shardSize, checking the exit code the outcome should give.
func runBatch(t *testing.T, dir, id string, n, shardSize int, missing ...int) ([][]byte, manifests.Manifest) {
	t.Helper()
	items := exampleItems(n, id, missing...)
	writeLines(t, filepath.Join(dir, id+".jsonl"), items)
	want := cli.ExitOK
	if len(missing) > 0 {
		want = cli.ExitWithFailures
	}
	r := submit(t, dir, nil, "--batch-id", id, "--shard-size", strconv.Itoa(shardSize), id+".jsonl")
	if r.code != want {
		t.Fatalf("submit %s: exit code %d, want %d\n%s", id, r.code, want, r)
	}
	return items, readManifest(t, dir, id)
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// wantExit fails the test unless r exited with code and its stderr holds
// every one of want.
func wantExit(t *testing.T, what string, r submitResult, code int, want ...string) {
	t.Helper()
	if r.code != code {
		t.Errorf("%s: exit code %d, want %d\n%s", what, r.code, code, r)
		return
	}
	for _, w := range want {
		if !strings.Contains(r.stderr, w) {
			t.Errorf("%s: stderr does not contain %q\n%s", what, w, r)
		}
	}
}

// jsonLines splits output into its non-empty lines.
func jsonLines(s string) []string {
	var lines []string
	for l := range strings.Lines(s) {
		if l = strings.TrimRight(l, "\n"); l != "" {
			lines = append(lines, l)
		}
	}
	return lines
}

// sameJSON reports whether a and b are the same JSON value.
func sameJSON(t *testing.T, a, b []byte) bool {
	t.Helper()
	var x, y any
	if err := json.Unmarshal(a, &x); err != nil {
		t.Fatalf("not JSON: %v: %s", err, a)
	}
	if err := json.Unmarshal(b, &y); err != nil {
		t.Fatalf("not JSON: %v: %s", err, b)
	}
	return reflect.DeepEqual(x, y)
}

// openResults reads a batch's result lines with the manifests package, the
// reference the CLI's output is compared with.
func openResults(t *testing.T, dir, id string) []manifests.ResultLine {
	t.Helper()
	ctx := context.Background()
	b, err := blobstore.Open(ctx, "file://"+blobsDir(dir))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	batch, err := manifests.Open(ctx, b, id)
	if err != nil {
		t.Fatal(err)
	}
	defer batch.Close()
	var lines []manifests.ResultLine
	for l, err := range batch.Results(ctx) {
		if err != nil {
			t.Fatal(err)
		}
		lines = append(lines, l)
	}
	return lines
}

// checkResultOutput checks that out holds exactly the JSON lines of want, in
// order.
func checkResultOutput(t *testing.T, what, out string, want []manifests.ResultLine) {
	t.Helper()
	got := jsonLines(out)
	if len(got) != len(want) {
		t.Fatalf("%s: %d lines, want %d\n%s", what, len(got), len(want), out)
	}
	for i, l := range got {
		var rl manifests.ResultLine
		dec := json.NewDecoder(strings.NewReader(l))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&rl); err != nil {
			t.Fatalf("%s: line %d is not a result line: %v: %s", what, i+1, err, l)
		}
		if !sameJSON(t, []byte(l), must(json.Marshal(want[i]))) {
			t.Errorf("%s: line %d is %s, want %s", what, i+1, l, must(json.Marshal(want[i])))
		}
	}
}

// checkFailureOutput checks that out holds exactly one failure line per
// index of failed, in order, each with the item's input and an error.
func checkFailureOutput(t *testing.T, what, out string, items [][]byte, failed []int) {
	t.Helper()
	got := jsonLines(out)
	if len(got) != len(failed) {
		t.Fatalf("%s: %d lines, want %d\n%s", what, len(got), len(failed), out)
	}
	for i, l := range got {
		var fields map[string]json.RawMessage
		if err := json.Unmarshal([]byte(l), &fields); err != nil {
			t.Fatalf("%s: line %d: %v: %s", what, i+1, err, l)
		}
		if keys := slices.Sorted(func(yield func(string) bool) {
			for k := range fields {
				if !yield(k) {
					return
				}
			}
		}); !slices.Equal(keys, []string{"error", "index", "input"}) {
			t.Errorf("%s: line %d has fields %v, want error, index, input: %s", what, i+1, keys, l)
		}
		var fl manifests.FailureLine
		if err := json.Unmarshal([]byte(l), &fl); err != nil {
			t.Fatalf("%s: line %d: %v: %s", what, i+1, err, l)
		}
		if fl.Index != int64(failed[i]) {
			t.Errorf("%s: line %d: index %d, want %d", what, i+1, fl.Index, failed[i])
		}
		if !sameJSON(t, fl.Input, items[failed[i]]) {
			t.Errorf("%s: line %d: input %s, want %s", what, i+1, fl.Input, items[failed[i]])
		}
		if fl.Error == nil || !strings.Contains(fl.Error.Message, "arg2") {
			t.Errorf("%s: line %d: error %+v should name the missing arg2", what, i+1, fl.Error)
		}
	}
}

func TestOpsStatus(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	_, m := runBatch(t, dir, "st1", 12, 5, 3, 7)
	key := manifests.ManifestKey("st1")

	r := submit(t, dir, nil, "status", "st1")
	wantExit(t, "status", r, cli.ExitOK)
	for _, w := range []string{"st1", manifests.StatusCompletedWithFailures, "12/12", "10 succeeded", "2 failed", "manifest: " + key} {
		if !strings.Contains(r.stdout, w) {
			t.Errorf("status: stdout does not contain %q\n%s", w, r)
		}
	}
	if strings.Contains(r.stdout, "running") || strings.Contains(r.stdout, "ETA") {
		t.Errorf("status of a finished batch reports it running\n%s", r)
	}

	r = submit(t, dir, nil, "status", "--json", "st1")
	wantExit(t, "status --json", r, cli.ExitOK)
	var st struct {
		BatchID   string `json:"batch_id"`
		Status    string `json:"status"`
		Items     int64  `json:"items"`
		Done      int64  `json:"done"`
		Succeeded int64  `json:"succeeded"`
		Failed    int64  `json:"failed"`
		Manifest  string `json:"manifest"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
		t.Fatalf("status --json: stdout is not a JSON object: %v\n%s", err, r)
	}
	if st.BatchID != "st1" || st.Status != m.Status || st.Items != m.Input.Items || st.Done != m.Counts.Items ||
		st.Succeeded != m.Counts.Succeeded || st.Failed != m.Counts.Failed || st.Manifest != key {
		t.Errorf("status --json: %+v does not match the manifest (status %s, input %+v, counts %+v, key %s)", st, m.Status, m.Input, m.Counts, key)
	}

	r = submit(t, dir, nil, "status", "nope")
	wantExit(t, "status nope", r, cli.ExitUsage, "unknown batch", "nope")
	if r.stdout != "" {
		t.Errorf("status nope: stdout %q", r.stdout)
	}
	r = submit(t, dir, nil, "status", "../x")
	wantExit(t, "status ../x", r, cli.ExitUsage, "../x")
	r = submit(t, dir, nil, "status")
	wantExit(t, "status without an id", r, cli.ExitUsage)

	// cancel: an unknown batch, and one that is no longer running.
	r = submit(t, dir, nil, "cancel", "nope")
	wantExit(t, "cancel nope", r, cli.ExitUsage, "unknown batch", "nope")
	r = submit(t, dir, nil, "cancel", "st1")
	wantExit(t, "cancel of a finished batch", r, cli.ExitUsage, "st1", "not running")
	r = submit(t, dir, nil, "cancel", "../x")
	wantExit(t, "cancel ../x", r, cli.ExitUsage, "../x")
	if after := readManifest(t, dir, "st1"); !reflect.DeepEqual(after, m) {
		t.Errorf("status or cancel changed the manifest:\n%+v\nwas\n%+v", after, m)
	}
}

func TestOpsResults(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	missing := []int{3, 7}
	items, m := runBatch(t, dir, "res1", 12, 5, missing...)
	want := openResults(t, dir, "res1")
	if len(want) != 12 {
		t.Fatalf("manifests.Open(...).Results yields %d lines, want 12", len(want))
	}

	r := submit(t, dir, nil, "results", "res1")
	wantExit(t, "results", r, cli.ExitOK)
	checkResultOutput(t, "results", r.stdout, want)
	all := r.stdout

	r = submit(t, dir, nil, "results", "--failed", "res1")
	wantExit(t, "results --failed", r, cli.ExitOK)
	checkFailureOutput(t, "results --failed", r.stdout, items, missing)

	// -o: a path relative to the command's directory.
	r = submit(t, dir, nil, "results", "-o", "out.jsonl", "res1")
	wantExit(t, "results -o", r, cli.ExitOK, "12 lines", "out.jsonl")
	if r.stdout != "" {
		t.Errorf("results -o: stdout %q, want nothing", r.stdout)
	}
	data, err := os.ReadFile(filepath.Join(dir, "out.jsonl"))
	if err != nil {
		t.Fatalf("results -o out.jsonl: %v", err)
	}
	if string(data) != all {
		t.Errorf("results -o: the file differs from what results prints\n%s\n---\n%s", data, all)
	}
	abs := filepath.Join(t.TempDir(), "abs.jsonl")
	r = submit(t, dir, nil, "results", "--failed", "--output", abs, "res1")
	wantExit(t, "results --failed --output ABS", r, cli.ExitOK)
	data, err = os.ReadFile(abs)
	if err != nil {
		t.Fatalf("results --output %s: %v", abs, err)
	}
	checkFailureOutput(t, "results --failed --output ABS", string(data), items, missing)

	// By manifest URL.
	manifestURL := "file://" + filepath.Join(blobsDir(dir), filepath.FromSlash(manifests.ManifestKey("res1")))
	r = submit(t, dir, nil, "results", manifestURL)
	wantExit(t, "results MANIFEST_URL", r, cli.ExitOK)
	if r.stdout != all {
		t.Errorf("results %s prints other lines than results res1\n%s", manifestURL, r)
	}
	r = submit(t, dir, nil, "results", "file://"+filepath.Join(blobsDir(dir), "batches", "nope", "manifest.json"))
	wantExit(t, "results with the URL of a missing manifest", r, cli.ExitUsage, "nope")

	r = submit(t, dir, nil, "results", "nope")
	wantExit(t, "results nope", r, cli.ExitUsage, "nope")
	if r.stdout != "" {
		t.Errorf("results nope: stdout %q", r.stdout)
	}
	r = submit(t, dir, nil, "results", "../x")
	wantExit(t, "results ../x", r, cli.ExitUsage, "../x")

	// --verify on a good batch.
	r = submit(t, dir, nil, "results", "--verify", "res1")
	wantExit(t, "results --verify", r, cli.ExitOK, "verified")
	if r.stdout != "" {
		t.Errorf("results --verify: stdout %q, want nothing", r.stdout)
	}

	// --verify after one result object was corrupted on disk.
	objKey := manifests.ResultKey("res1", 0)
	if m.Results[0].Key != objKey {
		t.Fatalf("first result key %q, want %q", m.Results[0].Key, objKey)
	}
	path := filepath.Join(blobsDir(dir), filepath.FromSlash(objKey))
	data, err = os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)/2] ^= 0x01
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	r = submit(t, dir, nil, "results", "--verify", "res1")
	wantExit(t, "results --verify of a corrupted batch", r, cli.ExitFailed, objKey, "sha256")
	for _, other := range []string{manifests.ResultKey("res1", 1), manifests.ResultKey("res1", 2)} {
		if strings.Contains(r.stderr, other) {
			t.Errorf("results --verify names the intact object %s\n%s", other, r)
		}
	}
	if r.stdout != "" {
		t.Errorf("results --verify of a corrupted batch: stdout %q, want nothing", r.stdout)
	}

	// -o when reading fails: the out.jsonl written above is left as it
	// was, and no temporary file is left beside it.
	r = submit(t, dir, nil, "results", "-o", "out.jsonl", "res1")
	wantExit(t, "results -o of a corrupted batch", r, cli.ExitFailed, objKey)
	if data, err := os.ReadFile(filepath.Join(dir, "out.jsonl")); err != nil || string(data) != all {
		t.Errorf("results -o of a corrupted batch changed out.jsonl (%v):\n%s", err, data)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".out.jsonl*")); len(left) > 0 {
		t.Errorf("results -o of a corrupted batch left %v", left)
	}
}

func TestOpsFromFailures(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	missing := []int{2, 5, 6, 11}
	items, m := runBatch(t, dir, "ff1", 12, 5, missing...)
	if m.Counts.Failed != int64(len(missing)) {
		t.Fatalf("counts %+v, want %d failed", m.Counts, len(missing))
	}

	r := submit(t, dir, nil, "results", "--failed", "ff1", "-o", "failed.jsonl")
	wantExit(t, "results --failed -o failed.jsonl", r, cli.ExitOK)
	data, err := os.ReadFile(filepath.Join(dir, "failed.jsonl"))
	if err != nil {
		t.Fatalf("results --failed -o failed.jsonl did not write the file in the command's directory: %v", err)
	}
	checkFailureOutput(t, "failed.jsonl", string(data), items, missing)

	// The failed items lack arg2, so they fail again: the new batch must
	// hold exactly those inputs, in order.
	r = submit(t, dir, nil, "--from-failures", "--batch-id", "again", "failed.jsonl")
	wantExit(t, "submit --from-failures", r, cli.ExitWithFailures)
	m2 := readManifest(t, dir, "again")
	if m2.Input.Items != int64(len(missing)) || m2.Counts != (manifests.Counts{Items: int64(len(missing)), Failed: int64(len(missing))}) {
		t.Errorf("resubmitted batch: input %+v, counts %+v; want the %d failed items, failing again", m2.Input, m2.Counts, len(missing))
	}
	if m2.Input.Source != "failed.jsonl" {
		t.Errorf("resubmitted batch: source %q, want failed.jsonl", m2.Input.Source)
	}
	r = submit(t, dir, nil, "results", "--failed", "again")
	wantExit(t, "results --failed again", r, cli.ExitOK)
	var resubmitted [][]byte
	for _, i := range missing {
		resubmitted = append(resubmitted, items[i])
	}
	checkFailureOutput(t, "failures of the resubmitted batch", r.stdout, resubmitted, []int{0, 1, 2, 3})

	// Resubmitting the same failures under the same id is the same input.
	r = submit(t, dir, nil, "--from-failures", "--batch-id", "again", "failed.jsonl")
	wantExit(t, "submit --from-failures again", r, cli.ExitWithFailures, "already finished")

	// A file of ordinary items is not a failures file.
	r = submit(t, dir, nil, "--from-failures", "--batch-id", "notfail", "ff1.jsonl")
	wantExit(t, "submit --from-failures on an input file", r, cli.ExitUsage, "ff1.jsonl:1", "not a failure line")
	for _, f := range storeFiles(t, dir) {
		if strings.HasPrefix(f, manifests.BatchPrefix("notfail")) {
			t.Errorf("a refused --from-failures left %s in the store", f)
		}
	}
}

func TestOpsRedrive(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	// Shards 0 and 1 have failed items, shard 2 has none.
	missing := []int{3, 7}
	items, m0 := runBatch(t, dir, "rd1", 12, 5, missing...)
	if len(m0.Results) != 3 {
		t.Fatalf("%d result objects, want 3", len(m0.Results))
	}
	before := openResults(t, dir, "rd1")

	r := submit(t, dir, nil, "redrive", "rd1")
	wantExit(t, "redrive", r, cli.ExitWithFailures, "redrive 1")
	if !strings.Contains(r.stdout, manifests.StatusCompletedWithFailures) || !strings.Contains(r.stdout, manifests.ManifestKey("rd1")) {
		t.Errorf("redrive: stdout does not report the status and manifest\n%s", r)
	}
	m1 := readManifest(t, dir, "rd1")
	if m1.Redrives != 1 || m1.BatchID != "rd1" || m1.Status != manifests.StatusCompletedWithFailures {
		t.Errorf("after redrive: redrives %d, batch id %q, status %q; want 1, rd1, %s", m1.Redrives, m1.BatchID, m1.Status, manifests.StatusCompletedWithFailures)
	}
	if m1.Counts != m0.Counts || m1.Input != m0.Input {
		t.Errorf("after redrive: input %+v counts %+v; before: %+v %+v", m1.Input, m1.Counts, m0.Input, m0.Counts)
	}
	if m1.Failures == nil || m1.Failures.Items != int64(len(missing)) {
		t.Errorf("after redrive: failures %+v, want %d items", m1.Failures, len(missing))
	}
	if len(m1.Results) != 3 {
		t.Fatalf("after redrive: %d result objects, want 3", len(m1.Results))
	}
	for i, res := range m1.Results {
		old := m0.Results[i]
		if res.Failed > 0 != (old.Failed > 0) || res.FirstIndex != old.FirstIndex || res.Items != old.Items {
			t.Errorf("result %d: %+v, before the redrive %+v", i, res, old)
		}
		if old.Failed == 0 {
			if res.Key != old.Key || res.SHA256 != old.SHA256 || res.Size != old.Size {
				t.Errorf("result %d had no failures but changed: %+v, was %+v", i, res, old)
			}
		} else if want := manifests.RedriveResultKey("rd1", i, 1); res.Key != want || !strings.Contains(res.Key, ".r1.") {
			t.Errorf("result %d was redriven: key %q, want %q", i, res.Key, want)
		}
	}
	// The objects the redrive replaced are gone (--keep-superseded keeps them).
	for i, old := range m0.Results {
		_, err := os.Stat(filepath.Join(blobsDir(dir), filepath.FromSlash(old.Key)))
		if gone := os.IsNotExist(err); gone != (old.Failed > 0) {
			t.Errorf("after redrive: %s gone %v, want %v (shard %d had %d failed)", old.Key, gone, old.Failed > 0, i, old.Failed)
		}
	}
	after := checkResults(t, dir, m1, items)
	for i, l := range after {
		if slices.Contains(missing, i) {
			if l.Status != manifests.ItemFailed {
				t.Errorf("item %d: status %q, want failed again", i, l.Status)
			}
			continue
		}
		// Outputs carry a random number: an equal line was not re-run.
		if !sameJSON(t, must(json.Marshal(l)), must(json.Marshal(before[i]))) {
			t.Errorf("item %d succeeded before the redrive and was re-run: %+v, was %+v", i, l, before[i])
		}
	}
	r = submit(t, dir, nil, "results", "--verify", "rd1")
	wantExit(t, "results --verify after redrive", r, cli.ExitOK, "verified")
	r = submit(t, dir, nil, "results", "--failed", "rd1")
	wantExit(t, "results --failed after redrive", r, cli.ExitOK)
	checkFailureOutput(t, "results --failed after redrive", r.stdout, items, missing)

	// A second redrive numbers its objects .r2.
	r = submit(t, dir, nil, "redrive", "rd1")
	wantExit(t, "second redrive", r, cli.ExitWithFailures, "redrive 2")
	m2 := readManifest(t, dir, "rd1")
	if m2.Redrives != 2 {
		t.Errorf("after a second redrive: redrives %d, want 2", m2.Redrives)
	}
	if len(m2.Results) == 3 && (m2.Results[0].Key != manifests.RedriveResultKey("rd1", 0, 2) || m2.Results[2].Key != m0.Results[2].Key) {
		t.Errorf("after a second redrive: keys %s, %s, %s", m2.Results[0].Key, m2.Results[1].Key, m2.Results[2].Key)
	}
	r = submit(t, dir, nil, "results", "--verify", "rd1")
	wantExit(t, "results --verify after a second redrive", r, cli.ExitOK)

	// Nothing to redrive in a batch that succeeded.
	runBatch(t, dir, "rdok", 4, 2)
	okBefore := snapshot(t, dir)
	r = submit(t, dir, nil, "redrive", "rdok")
	wantExit(t, "redrive of a succeeded batch", r, cli.ExitOK, "nothing to redrive")
	if !strings.Contains(r.stdout, manifests.StatusSucceeded) {
		t.Errorf("redrive of a succeeded batch: stdout does not report it\n%s", r)
	}
	if !mapsEqual(okBefore, snapshot(t, dir)) {
		t.Errorf("redrive of a succeeded batch changed the store")
	}

	r = submit(t, dir, nil, "redrive", "nope")
	wantExit(t, "redrive nope", r, cli.ExitUsage, "nope")
	r = submit(t, dir, nil, "redrive", "../x")
	wantExit(t, "redrive ../x", r, cli.ExitUsage, "../x")
}

func TestOpsList(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()

	// An empty store lists nothing but the header.
	r := submit(t, dir, nil, "list", "--json")
	wantExit(t, "list --json of an empty store", r, cli.ExitOK)
	var empty []json.RawMessage
	if err := json.Unmarshal([]byte(r.stdout), &empty); err != nil || len(empty) != 0 {
		t.Errorf("list --json of an empty store: %v, %d entries\n%s", err, len(empty), r)
	}

	runBatch(t, dir, "lb-ok", 6, 3)
	runBatch(t, dir, "la-fail", 6, 3, 1)

	r = submit(t, dir, nil, "list")
	wantExit(t, "list", r, cli.ExitOK)
	lines := jsonLines(r.stdout)
	if len(lines) != 3 {
		t.Fatalf("list: %d lines, want a header and 2 batches\n%s", len(lines), r)
	}
	if h := strings.Fields(lines[0]); len(h) < 2 || h[0] != "BATCH" || h[1] != "STATUS" {
		t.Errorf("list: header %q", lines[0])
	}
	// Sorted by id.
	for i, want := range [][2]string{{"la-fail", manifests.StatusCompletedWithFailures}, {"lb-ok", manifests.StatusSucceeded}} {
		f := strings.Fields(lines[i+1])
		if len(f) < 2 || f[0] != want[0] || f[1] != want[1] {
			t.Errorf("list: line %d is %q, want batch %s with status %s", i+2, lines[i+1], want[0], want[1])
		}
	}

	r = submit(t, dir, nil, "list", "--json")
	wantExit(t, "list --json", r, cli.ExitOK)
	var list []struct {
		BatchID string `json:"batch_id"`
		Status  string `json:"status"`
		Items   int64  `json:"items"`
		Failed  int64  `json:"failed"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &list); err != nil {
		t.Fatalf("list --json: %v\n%s", err, r)
	}
	if len(list) != 2 {
		t.Fatalf("list --json: %d entries, want 2\n%s", len(list), r)
	}
	if list[0].BatchID != "la-fail" || list[0].Status != manifests.StatusCompletedWithFailures || list[0].Items != 6 || list[0].Failed != 1 ||
		list[1].BatchID != "lb-ok" || list[1].Status != manifests.StatusSucceeded || list[1].Items != 6 || list[1].Failed != 0 {
		t.Errorf("list --json: %+v", list)
	}

	r = submit(t, dir, nil, "list", "extra")
	wantExit(t, "list with an argument", r, cli.ExitUsage)
}

// TestOpsListUnreadableManifest: a truncated manifest (or one of an
// unknown format) is flagged in its row and in --json's error field, and
// the other batches are still listed, with exit code 0.
func TestOpsListUnreadableManifest(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	put := func(id string, data []byte) {
		path := filepath.Join(blobsDir(dir), filepath.FromSlash(manifests.ManifestKey(id)))
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	manifest := func(id string) []byte {
		fin := time.Date(2026, 11, 25, 2, 5, 0, 0, time.UTC)
		return must(json.MarshalIndent(manifests.Manifest{Format: manifests.Format, BatchID: id, Status: manifests.StatusSucceeded,
			Processor: "example", Store: "file://" + blobsDir(dir), Input: manifests.Input{Items: 4, Shards: 1, ShardSize: 4},
			Counts: manifests.Counts{Items: 4, Succeeded: 4}, StartedAt: fin.Add(-time.Minute), FinishedAt: fin, Results: []manifests.Result{}}, "", "  "))
	}
	put("a-good", manifest("a-good"))
	full := manifest("b-truncated")
	put("b-truncated", full[:len(full)/2])
	put("c-good", manifest("c-good"))
	put("d-v9", bytes.Replace(manifest("d-v9"), []byte(manifests.Format), []byte("batchpipe.manifest/v9"), 1))

	r := submit(t, dir, nil, "list")
	wantExit(t, "list", r, cli.ExitOK, "b-truncated", "unreadable manifest", "d-v9")
	lines := jsonLines(r.stdout)
	if len(lines) != 5 {
		t.Fatalf("list: %d lines, want a header and 4 batches\n%s", len(lines), r)
	}
	for i, want := range [][]string{
		{`^a-good\s+succeeded\s+4\s+0\s`},
		{`^b-truncated\s+unreadable manifest: .*unexpected end of JSON input`},
		{`^c-good\s+succeeded\s+4\s+0\s`},
		{`^d-v9\s+unreadable manifest: .*batchpipe.manifest/v9`},
	} {
		if !lineWith(lines[i+1]+"\n", want...) {
			t.Errorf("list: line %d is %q, want it to match %q", i+2, lines[i+1], want)
		}
	}

	r = submit(t, dir, nil, "list", "--json")
	wantExit(t, "list --json", r, cli.ExitOK)
	var list []struct {
		BatchID  string  `json:"batch_id"`
		Status   string  `json:"status"`
		Items    int64   `json:"items"`
		Manifest string  `json:"manifest"`
		Error    *string `json:"error"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &list); err != nil {
		t.Fatalf("list --json: %v\n%s", err, r)
	}
	if len(list) != 4 {
		t.Fatalf("list --json: %d entries, want 4\n%s", len(list), r)
	}
	for i, id := range []string{"a-good", "b-truncated", "c-good", "d-v9"} {
		e := list[i]
		bad := !strings.Contains(id, "-good")
		switch {
		case e.BatchID != id:
			t.Errorf("list --json: entry %d is batch %q, want %q", i, e.BatchID, id)
		case !bad && (e.Error != nil || e.Status != manifests.StatusSucceeded || e.Items != 4):
			t.Errorf("list --json: %s: %+v", id, e)
		case bad && (e.Error == nil || *e.Error == "" || e.Status != "unreadable manifest" || e.Manifest != manifests.ManifestKey(id)):
			t.Errorf("list --json: %s: %+v, want status \"unreadable manifest\", an error and the manifest's key", id, e)
		}
	}
	if list[1].Error != nil && !strings.Contains(*list[1].Error, "unexpected end of JSON input") {
		t.Errorf("list --json: b-truncated's error is %q", *list[1].Error)
	}
}

// TestOpsCancelRunning cancels a batch left running by submit --wait=false:
// in embedded mode nothing runs it after submit exits, so it is still
// running when cancel asks, and cancel's own worker writes the canceled
// manifest.
func TestOpsCancelRunning(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	// Shards of one item, one at a time: at ~0.25 s a shard the batch
	// cannot finish in the moment between its start and submit's exit.
	writeLines(t, filepath.Join(dir, "slow.jsonl"), exampleItems(12, "c"))
	r := submit(t, dir, nil, "--wait=false", "--batch-id", "cx", "--shard-size", "1", "--concurrency", "1", "slow.jsonl")
	wantExit(t, "submit --wait=false", r, cli.ExitOK)

	// Started, but no worker runs it: running, with its staged size and
	// how to resume it.
	r = submit(t, dir, nil, "status", "cx")
	wantExit(t, "status of a started batch", r, cli.ExitOK)
	for _, w := range []string{"batch cx: running", "0/12 done", "--batch-id cx"} {
		if !strings.Contains(r.stdout, w) {
			t.Errorf("status of a started batch without a worker: stdout does not contain %q\n%s", w, r)
		}
	}
	r = submit(t, dir, nil, "list", "--json")
	wantExit(t, "list with a started batch", r, cli.ExitOK)
	var list []struct {
		BatchID string `json:"batch_id"`
		Status  string `json:"status"`
		Items   int64  `json:"items"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &list); err != nil || len(list) != 1 || list[0].BatchID != "cx" || list[0].Status != "running" || list[0].Items != 12 {
		t.Errorf("list --json with a started batch: %+v (%v), want cx running with 12 items\n%s", list, err, r)
	}

	r = submit(t, dir, nil, "cancel", "cx")
	wantExit(t, "cancel", r, cli.ExitOK, "cancel requested")
	if !strings.Contains(r.stdout, manifests.StatusCanceled) {
		t.Errorf("cancel: stdout does not report the canceled batch\n%s", r)
	}
	m := readManifest(t, dir, "cx")
	if m.Status != manifests.StatusCanceled || m.Counts.Items >= 12 || m.Error == "" {
		t.Errorf("canceled batch: status %q, counts %+v, error %q", m.Status, m.Counts, m.Error)
	}
	t.Logf("canceled after %d of 12 items", m.Counts.Items)

	r = submit(t, dir, nil, "status", "cx")
	wantExit(t, "status of a canceled batch", r, cli.ExitOK)
	if !strings.Contains(r.stdout, manifests.StatusCanceled) {
		t.Errorf("status of a canceled batch\n%s", r)
	}
	r = submit(t, dir, nil, "cancel", "cx")
	wantExit(t, "cancel of a canceled batch", r, cli.ExitUsage, "not running")
	if !bytes.Equal(must(json.Marshal(readManifest(t, dir, "cx"))), must(json.Marshal(m))) {
		t.Errorf("a second cancel changed the manifest")
	}

	// Redrive runs the items the canceled batch never finished; the
	// shards it did finish keep their objects.
	r = submit(t, dir, nil, "redrive", "cx")
	wantExit(t, "redrive of a canceled batch", r, cli.ExitOK)
	m2 := readManifest(t, dir, "cx")
	if m2.Status != manifests.StatusSucceeded || m2.Counts != (manifests.Counts{Items: 12, Succeeded: 12}) || m2.Redrives != 1 || len(m2.Results) != 12 {
		t.Fatalf("redriven canceled batch: status %q, counts %+v, redrives %d, %d results", m2.Status, m2.Counts, m2.Redrives, len(m2.Results))
	}
	kept := map[string]manifests.Result{}
	for _, res := range m.Results {
		kept[res.Key] = res
	}
	for i, res := range m2.Results {
		if old, ok := kept[res.Key]; ok {
			if old != res {
				t.Errorf("result %d of a shard finished before the cancel changed: %+v, was %+v", i, res, old)
			}
		} else if res.Key != manifests.RedriveResultKey("cx", i, 1) {
			t.Errorf("result %d: key %q, want %q or one of the canceled manifest", i, res.Key, manifests.RedriveResultKey("cx", i, 1))
		}
	}
	r = submit(t, dir, nil, "results", "--verify", "cx")
	wantExit(t, "results --verify of the redriven canceled batch", r, cli.ExitOK)
}

// TestOpsRedriveMissingObject: a redrive whose shard's earlier result object
// was deleted fails that shard at once, naming the key, instead of retrying
// it forever.
// TestOpsResultsIncludeInput: with --results-include-input every line
// that results prints carries its item's input, beside output and error.
func TestOpsResultsIncludeInput(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	items := exampleItems(6, "in", 4)
	writeLines(t, filepath.Join(dir, "in.jsonl"), items)
	r := submit(t, dir, nil, "--batch-id", "in", "--shard-size", "3", "--results-include-input", "in.jsonl")
	wantExit(t, "submit --results-include-input", r, cli.ExitWithFailures)
	r = submit(t, dir, nil, "results", "in")
	wantExit(t, "results", r, cli.ExitOK)
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != len(items) {
		t.Fatalf("results: %d lines, want %d\n%s", len(lines), len(items), r)
	}
	for i, line := range lines {
		var l map[string]json.RawMessage
		if err := json.Unmarshal([]byte(line), &l); err != nil {
			t.Fatalf("line %d: %v: %s", i, err, line)
		}
		_, hasOutput := l["output"]
		_, hasError := l["error"]
		if !bytes.Equal(l["input"], items[i]) || !hasOutput || !hasError {
			t.Errorf("line %d: %s; want input %s, output and error", i, line, items[i])
		}
	}
}

func TestOpsRedriveMissingObject(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	_, m0 := runBatch(t, dir, "rdm", 10, 5, 2)
	key := m0.Results[0].Key
	if err := os.Remove(filepath.Join(blobsDir(dir), filepath.FromSlash(key))); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	r := submit(t, dir, nil, "redrive", "rdm")
	wantExit(t, "redrive with a deleted result object", r, cli.ExitFailed, key)
	if el := time.Since(start); el > time.Minute {
		t.Errorf("redrive took %v to fail; want it to fail at once", el)
	}
	if m := readManifest(t, dir, "rdm"); m.Status != manifests.StatusFailed || !strings.Contains(m.Error, "missing") {
		t.Errorf("manifest after the failed redrive: %s %q, want failed naming the missing object", m.Status, m.Error)
	}
}

// TestOpsResultsFailMidStreamWholeLines: a result object that cannot be
// read halfway through the batch ends the output after the last whole line
// before it (before, the buffer was cut wherever it stood: half a line).
func TestOpsResultsFailMidStreamWholeLines(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	_, m := runBatch(t, dir, "mid", 2000, 1000)
	bad := filepath.Join(blobsDir(dir), filepath.FromSlash(m.Results[1].Key))
	if err := os.WriteFile(bad, []byte("not zstd at all"), 0o644); err != nil {
		t.Fatal(err)
	}
	r := submit(t, dir, nil, "results", "mid")
	if r.code != cli.ExitFailed {
		t.Fatalf("exit %d, want 1\n%s", r.code, r.stderr)
	}
	if !strings.HasSuffix(r.stdout, "\n") {
		t.Fatalf("output ends in half a line: …%q", r.stdout[max(0, len(r.stdout)-80):])
	}
	lines := strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n")
	if len(lines) != 1000 {
		t.Errorf("%d lines before the bad object, want its predecessor's 1000", len(lines))
	}
	for i, l := range lines {
		var v manifests.ResultLine
		if err := json.Unmarshal([]byte(l), &v); err != nil || v.Index != int64(i) {
			t.Fatalf("line %d: %v (%.60s)", i, err, l)
		}
	}
}

// TestResultsMaxAge: results --schedule NAME --max-age AGE is a downstream
// job's freshness check: exit 1 with a one-line reason naming the latest
// night's nominal time and age when that night is older than AGE or the
// schedule has none; otherwise the results of that night, as results
// --schedule prints them.
func TestResultsMaxAge(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	// An old night: 2026-11-25T02:00:00Z (days before any run of this test).
	oldID := "nightly-20261125T020000Z"
	_, mOld := runBatch(t, dir, oldID, 3, 2)
	writeLatest(t, dir, "nightly", mOld)

	r := submit(t, dir, nil, "results", "--schedule", "nightly", "--max-age", "26h")
	wantExit(t, "results --max-age 26h of an old night", r, cli.ExitFailed, "stale", "2026-11-25T02:00:00Z", oldID, "--max-age 26h")
	if r.stdout != "" {
		t.Errorf("a stale night printed results:\n%s", r)
	}
	var reason string
	for l := range strings.Lines(r.stderr) {
		if strings.Contains(l, "stale") {
			reason = l
		}
	}
	age := time.Since(time.Date(2026, 11, 25, 2, 0, 0, 0, time.UTC))
	days := fmt.Sprintf("%dd", int(age/(24*time.Hour)))
	if !strings.Contains(reason, "2026-11-25T02:00:00Z") || !strings.Contains(reason, " "+days) || !strings.Contains(reason, " ago") {
		t.Errorf("the reason is not one line naming the nominal time and its age (%s…):\n%s", days, r)
	}
	// Within a larger age it is fresh.
	r = submit(t, dir, nil, "results", "--schedule", "nightly", "--max-age", fmt.Sprintf("%dd", int(age/(24*time.Hour))+2))
	wantExit(t, "results --max-age of a night within it", r, cli.ExitOK)
	if n := len(jsonLines(r.stdout)); n != 3 {
		t.Errorf("results --max-age of a fresh night: %d lines, want 3\n%s", n, r)
	}

	// A night two hours ago is fresh within 26h: the same lines as results
	// --schedule and as results ID.
	nominal := time.Now().Add(-2 * time.Hour).UTC().Truncate(time.Hour)
	newID := pipeline.ScheduledBatchID("nightly", nominal)
	_, mNew := runBatch(t, dir, newID, 5, 2)
	writeLatest(t, dir, "nightly", mNew)
	r = submit(t, dir, nil, "results", "--schedule", "nightly", "--max-age", "26h")
	wantExit(t, "results --max-age 26h of a recent night", r, cli.ExitOK, newID)
	plain := submit(t, dir, nil, "results", newID)
	wantExit(t, "results "+newID, plain, cli.ExitOK)
	if r.stdout != plain.stdout || len(jsonLines(r.stdout)) != 5 {
		t.Errorf("results --schedule --max-age printed other lines than results %s:\n%s\n--- results ID:\n%s", newID, r, plain.stdout)
	}
	r = submit(t, dir, nil, "results", "--schedule", "nightly", "--max-age", "90m")
	wantExit(t, "results --max-age 90m of a night two hours ago", r, cli.ExitFailed, "stale", nominal.Format(time.RFC3339), "over --max-age 90m")
	if !strings.Contains(r.stderr, "ago") || r.stdout != "" {
		t.Errorf("results --max-age 90m:\n%s", r)
	}

	// No finished night at all: stale too (exit 1), not bad usage.
	r = submit(t, dir, nil, "results", "--schedule", "weekly", "--max-age", "26h")
	wantExit(t, "results --max-age of a schedule without a night", r, cli.ExitFailed, "weekly", "no finished night", "latest.json")
	r = submit(t, dir, nil, "results", "--schedule", "weekly")
	wantExit(t, "results --schedule without --max-age of a schedule without a night", r, cli.ExitUsage, "no finished batch")

	// Bad usage.
	r = submit(t, dir, nil, "results", newID, "--max-age", "26h")
	wantExit(t, "results ID --max-age", r, cli.ExitUsage, "--max-age needs --schedule")
	r = submit(t, dir, nil, "results", "--schedule", "nightly", "--max-age", "soon")
	wantExit(t, "results --max-age soon", r, cli.ExitUsage, `bad age "soon"`)
}
