package cli_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/batchpipe/batchpipe/internal/cli"
	"github.com/batchpipe/batchpipe/manifests"
)

// Tests of `submit gc` and of submitting an input by URL (staged by a
// worker activity), in embedded mode like the other CLI tests; the helpers
// come from submit_test.go and ops_test.go.

// ageManifest rewrites batch id's manifest in dir so that it finished age
// ago (its start moved along, keeping its duration), and returns it.
func ageManifest(t *testing.T, dir, id string, age time.Duration) manifests.Manifest {
	t.Helper()
	path := filepath.Join(blobsDir(dir), filepath.FromSlash(manifests.ManifestKey(id)))
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var m manifests.Manifest
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatalf("manifest of %s: %v", id, err)
	}
	took := m.FinishedAt.Sub(m.StartedAt)
	m.FinishedAt = time.Now().Add(-age).UTC()
	m.StartedAt = m.FinishedAt.Add(-took)
	if data, err = json.MarshalIndent(m, "", "  "); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return m
}

// writeLatest writes schedules/<schedule>/latest.json naming m's batch.
func writeLatest(t *testing.T, dir, schedule string, m manifests.Manifest) string {
	t.Helper()
	l := manifests.Latest{Schedule: schedule, BatchID: m.BatchID, Manifest: manifests.ManifestKey(m.BatchID), Status: m.Status, FinishedAt: m.FinishedAt}
	path := filepath.Join(blobsDir(dir), filepath.FromSlash(manifests.LatestKey(schedule)))
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, must(json.MarshalIndent(l, "", "  ")), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// splitOffBatch divides a snapshot into the objects of batch id and the others,
// returning id's object count and bytes.
func splitOffBatch(snap map[string][]byte, id string) (others map[string][]byte, objects, size int64) {
	others = map[string][]byte{}
	for k, v := range snap {
		if strings.HasPrefix(k, manifests.BatchPrefix(id)) {
			objects++
			size += int64(len(v))
		} else {
			others[k] = v
		}
	}
	return others, objects, size
}

// lineWith reports whether some line of s matches every pattern.
func lineWith(s string, patterns ...string) bool {
	for l := range strings.Lines(s) {
		ok := true
		for _, p := range patterns {
			if !regexp.MustCompile(p).MatchString(l) {
				ok = false
				break
			}
		}
		if ok {
			return true
		}
	}
	return false
}

func batchDirExists(t *testing.T, dir, id string) bool {
	t.Helper()
	_, err := os.Stat(filepath.Join(blobsDir(dir), "batches", id))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
	return err == nil
}

func TestGC(t *testing.T) {
	t.Parallel()
	const old = 40 * 24 * time.Hour
	dir := t.TempDir()

	// A: finished 40 days ago. C: finished 40 days ago, but the latest
	// batch of schedule nightly. D: finished now. B (below): started and
	// never finished, standing for a running batch.
	runBatch(t, dir, "A", 7, 3)
	runBatch(t, dir, "C", 4, 2)
	runBatch(t, dir, "D", 4, 2)
	ageManifest(t, dir, "A", old)
	mc := ageManifest(t, dir, "C", old)
	latest := writeLatest(t, dir, "nightly", mc)
	latestData, err := os.ReadFile(latest)
	if err != nil {
		t.Fatal(err)
	}
	// B last: a later submit's in-process worker would run B to the end.
	// Shards of one item, one at a time: B cannot finish before submit
	// exits (see TestOpsCancelRunning).
	writeLines(t, filepath.Join(dir, "B.jsonl"), exampleItems(12, "B"))
	r := submit(t, dir, nil, "--wait=false", "--batch-id", "B", "--shard-size", "1", "--concurrency", "1", "B.jsonl")
	wantExit(t, "submit --wait=false B", r, cli.ExitOK)
	before := snapshot(t, dir)
	for _, k := range []string{manifests.BatchSpecKey("B"), manifests.ManifestKey("A"), manifests.ManifestKey("C"), manifests.ManifestKey("D")} {
		if _, ok := before[k]; !ok {
			t.Fatalf("setup: %s missing from the store", k)
		}
	}
	if _, ok := before[manifests.ManifestKey("B")]; ok {
		t.Fatalf("setup: batch B finished; it should stand for a running batch")
	}
	others, aObjects, aBytes := splitOffBatch(before, "A")
	if aObjects == 0 {
		t.Fatal("setup: batch A has no objects")
	}

	// Stdin is not a terminal and --yes is not given: a dry run.
	r = submit(t, dir, strings.NewReader(""), "gc", "--older-than", "30d")
	wantExit(t, "gc --older-than 30d (dry run)", r, cli.ExitOK, "dry run")
	if !lineWith(r.stdout, `would delete`, `\bA\b`) {
		t.Errorf("dry run: stdout does not list A as would-delete\n%s", r)
	}
	if !lineWith(r.stdout, `would delete`, `\bA\b`, fmt.Sprintf(`\b%d objects`, aObjects), fmt.Sprintf(`\b%d bytes`, aBytes)) {
		t.Errorf("dry run: stdout does not give A's %d objects and %d bytes\n%s", aObjects, aBytes, r)
	}
	for _, id := range []string{"B", "C", "D"} {
		if lineWith(r.stdout, `delete`, `\b`+id+`\b`) {
			t.Errorf("dry run: stdout lists %s for deletion\n%s", id, r)
		}
	}
	if after := snapshot(t, dir); !mapsEqual(before, after) {
		t.Errorf("a dry run changed the store: %d files before, %d after", len(before), len(after))
	}

	// --yes deletes A, and A only.
	r = submit(t, dir, strings.NewReader(""), "gc", "--older-than", "30d", "--yes")
	wantExit(t, "gc --older-than 30d --yes", r, cli.ExitOK, "schedules/nightly/latest.json")
	if strings.Contains(r.stderr, "dry run") {
		t.Errorf("gc --yes says it is a dry run\n%s", r)
	}
	if !lineWith(r.stderr, `\bC\b`, `latest\.json`) {
		t.Errorf("gc --yes: stderr does not say C is kept because of latest.json\n%s", r)
	}
	if !lineWith(r.stdout, `delete`, `\bA\b`, fmt.Sprintf(`\b%d objects`, aObjects), fmt.Sprintf(`\b%d bytes`, aBytes)) {
		t.Errorf("gc --yes: stdout does not name A with its %d objects and %d bytes\n%s", aObjects, aBytes, r)
	}
	for _, id := range []string{"B", "C", "D"} {
		if lineWith(r.stdout, `delete`, `\b`+id+`\b`) {
			t.Errorf("gc --yes: stdout lists %s as deleted\n%s", id, r)
		}
	}
	after := snapshot(t, dir)
	for k := range after {
		if strings.HasPrefix(k, manifests.BatchPrefix("A")) {
			t.Errorf("gc --yes left %s", k)
		}
	}
	if batchDirExists(t, dir, "A") {
		t.Errorf("gc --yes left the directory of batch A")
	}
	if !mapsEqual(others, after) {
		t.Errorf("gc --yes changed batches other than A: %d files of B, C, D before, %d after", len(others), len(after))
		for k := range others {
			if _, ok := after[k]; !ok {
				t.Errorf("  gone: %s", k)
			}
		}
	}
	if data, err := os.ReadFile(latest); err != nil || !bytes.Equal(data, latestData) {
		t.Errorf("gc --yes changed %s (%v)", manifests.LatestKey("nightly"), err)
	}

	// Nothing left to collect.
	r = submit(t, dir, strings.NewReader(""), "gc", "--older-than", "30d", "--yes")
	wantExit(t, "gc --yes again", r, cli.ExitOK)
	if lineWith(r.stdout, `delete`, `\b[ABCD]\b`) {
		t.Errorf("gc --yes again deletes something\n%s", r)
	}
	if !mapsEqual(after, snapshot(t, dir)) {
		t.Errorf("gc --yes again changed the store")
	}

	// Bad usage.
	r = submit(t, dir, nil, "gc")
	wantExit(t, "gc without --older-than", r, cli.ExitUsage, "--older-than")
	r = submit(t, dir, nil, "gc", "--older-than", "abc")
	wantExit(t, "gc --older-than abc", r, cli.ExitUsage, "abc")
	if !mapsEqual(after, snapshot(t, dir)) {
		t.Errorf("bad usage of gc changed the store")
	}
}

func TestGCKeepInputs(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	runBatch(t, dir, "A2", 5, 2)
	ageManifest(t, dir, "A2", 40*24*time.Hour)
	before := snapshot(t, dir)
	inputs := map[string][]byte{}
	var deleted, deletedBytes int64
	for k, v := range before {
		if strings.HasPrefix(k, manifests.BatchPrefix("A2")+"input/") {
			inputs[k] = v
		} else {
			deleted++
			deletedBytes += int64(len(v))
		}
	}
	if len(inputs) != 4 { // 3 shards and the index
		t.Fatalf("setup: %d input objects, want 4: %v", len(inputs), storeFiles(t, dir))
	}

	// Ages with days: 1d12h selects a batch 40 days old, 41d does not.
	r := submit(t, dir, strings.NewReader(""), "gc", "--older-than", "1d12h")
	wantExit(t, "gc --older-than 1d12h", r, cli.ExitOK, "dry run")
	if !lineWith(r.stdout, `would delete`, `\bA2\b`) {
		t.Errorf("gc --older-than 1d12h: stdout does not list A2\n%s", r)
	}
	r = submit(t, dir, strings.NewReader(""), "gc", "--older-than", "41d")
	wantExit(t, "gc --older-than 41d", r, cli.ExitOK)
	if lineWith(r.stdout, `delete`, `\bA2\b`) {
		t.Errorf("gc --older-than 41d lists A2, which finished 40 days ago\n%s", r)
	}
	if !mapsEqual(before, snapshot(t, dir)) {
		t.Fatalf("dry runs changed the store")
	}

	r = submit(t, dir, strings.NewReader(""), "gc", "--older-than", "30d", "--yes", "--keep-inputs")
	wantExit(t, "gc --older-than 30d --yes --keep-inputs", r, cli.ExitOK)
	if !lineWith(r.stdout, `delete`, `\bA2\b`, fmt.Sprintf(`\b%d objects`, deleted), fmt.Sprintf(`\b%d bytes`, deletedBytes)) {
		t.Errorf("gc --keep-inputs: stdout does not name A2 with the %d objects (%d bytes) outside input/\n%s", deleted, deletedBytes, r)
	}
	after := snapshot(t, dir)
	marker := "batches/A2/collected.json"
	if _, ok := after[marker]; !ok {
		t.Errorf("gc --keep-inputs left no %s marker: %v", marker, storeFiles(t, dir))
	}
	delete(after, marker)
	if !mapsEqual(inputs, after) {
		t.Errorf("gc --keep-inputs: the store holds %v, want exactly A2's input objects and the marker", storeFiles(t, dir))
	}
	// The batch lists as collected, and its id is not reused by accident.
	r = submit(t, dir, strings.NewReader(""), "list")
	if !lineWith(r.stdout, `\bA2\b`, `collected`) {
		t.Errorf("list does not show A2 as collected:\n%s", r)
	}
	r = submit(t, dir, strings.NewReader(""), "gc", "--older-than", "-1d", "--yes")
	wantExit(t, "gc --older-than -1d", r, cli.ExitUsage)
}

func TestGCAgeParse(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for _, age := range []string{"1d12h", "30d", "36h", "90m", "0d1h", "36525d", "36524d24h"} {
		r := submit(t, dir, strings.NewReader(""), "gc", "--older-than", age)
		wantExit(t, "gc --older-than "+age+" on an empty store", r, cli.ExitOK)
	}
	for _, age := range []string{"abc", "1.5d", "d", "30x", "1h2d"} {
		r := submit(t, dir, strings.NewReader(""), "gc", "--older-than", age)
		wantExit(t, "gc --older-than "+age, r, cli.ExitUsage)
	}
	if files := storeFiles(t, dir); len(files) > 0 {
		t.Errorf("gc on an empty store created %v", files)
	}
}

// TestGCAgeLimits: ages whose days × 24h would overflow a time.Duration
// (12169727d wraps to about ten minutes), zero, negative and absurd ages
// are usage errors quoting the value as given, and nothing is deleted.
func TestGCAgeLimits(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	// A batch that finished eleven minutes ago: a wrapped age would reach it.
	m := manifests.Manifest{Format: manifests.Format, BatchID: "recent", Status: manifests.StatusSucceeded, Processor: "example",
		Store: "file://" + blobsDir(dir), Results: []manifests.Result{},
		StartedAt: time.Now().Add(-12 * time.Minute).UTC(), FinishedAt: time.Now().Add(-11 * time.Minute).UTC()}
	path := filepath.Join(blobsDir(dir), filepath.FromSlash(manifests.ManifestKey(m.BatchID)))
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, must(json.MarshalIndent(m, "", "  ")), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ age, why string }{
		{"12169727d", "more than 100 years"},
		{"106751d", "more than 100 years"}, // the largest day count a Duration holds
		{"36526d", "more than 100 years"},
		{"36525d1ns", "more than 100 years"},
		{"876601h", "more than 100 years"},
		{"9999999999h", "invalid duration"},
		{"99999999999999999999d", "more than 100 years"},
		{"-1d", "must be positive"},
		{"-36h", "must be positive"},
		{"1d-12h", "must be positive"},
		{"-99999999999999999999d", "must be positive"},
		{"0d", "must be positive"},
		{"0h", "must be positive"},
		{"0d0h", "must be positive"},
		{"abc", "abc"},
		{"1.5d", "not a whole number of days"},
		{"1h2d", "not a whole number of days"},
		{"d", "not a whole number of days"},
		{"30x", "unknown unit"},
	} {
		r := submit(t, dir, strings.NewReader(""), "gc", "--older-than", tc.age, "--yes")
		wantExit(t, "gc --older-than "+tc.age, r, cli.ExitUsage, fmt.Sprintf("bad age %q", tc.age), tc.why)
	}
	if _, err := os.Stat(path); err != nil {
		t.Errorf("the recent batch's manifest is gone: %v", err)
	}
}

// batchObjects lists the stored objects of batch id under dir.
func batchObjects(t *testing.T, dir, id string) []string {
	t.Helper()
	var keys []string
	for _, f := range storeFiles(t, dir) {
		if strings.HasPrefix(f, manifests.BatchPrefix(id)) {
			keys = append(keys, f)
		}
	}
	return keys
}

func TestSubmitInputURL(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	src := t.TempDir() // the input objects' store, apart from the batches'
	items := exampleItems(300, "url")
	writeLines(t, filepath.Join(src, "in.jsonl"), items)

	// A JSON Lines object.
	u1 := "file://" + filepath.Join(src, "in.jsonl")
	r := submit(t, dir, nil, "--batch-id", "u1", u1)
	wantExit(t, "submit "+u1, r, cli.ExitOK)
	m := readManifest(t, dir, "u1")
	if m.Input.Source != u1 {
		t.Errorf("input source %q, want %q", m.Input.Source, u1)
	}
	if m.Status != manifests.StatusSucceeded || m.Counts != (manifests.Counts{Items: 300, Succeeded: 300}) || m.Input.Items != 300 {
		t.Errorf("status %q, counts %+v, input %+v; want 300 items, all succeeded", m.Status, m.Counts, m.Input)
	}
	checkResults(t, dir, m, items)
	r = submit(t, dir, nil, "results", "--verify", "u1")
	wantExit(t, "results --verify u1", r, cli.ExitOK, "verified")

	// A zstd-compressed object, in shards of 128.
	var zb bytes.Buffer
	zw := must(zstd.NewWriter(&zb))
	for _, it := range items {
		zw.Write(it)
		zw.Write([]byte{'\n'})
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "in.jsonl.zst"), zb.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	u2 := "file://" + filepath.Join(src, "in.jsonl.zst")
	r = submit(t, dir, nil, "--batch-id", "u2", "--shard-size", "128", u2)
	wantExit(t, "submit "+u2, r, cli.ExitOK)
	m = readManifest(t, dir, "u2")
	if m.Input.Source != u2 || m.Status != manifests.StatusSucceeded || m.Counts.Succeeded != 300 {
		t.Errorf("zstd input: source %q, status %q, counts %+v", m.Input.Source, m.Status, m.Counts)
	}
	if want := (manifests.Input{Source: u2, Items: 300, Shards: 3, ShardSize: 128}); m.Input != want {
		t.Errorf("zstd input: input %+v, want %+v", m.Input, want)
	}
	checkResults(t, dir, m, items)
	r = submit(t, dir, nil, "results", "--verify", "u2")
	wantExit(t, "results --verify u2", r, cli.ExitOK)

	// Line 2 is not JSON. Shards of one item, so line 1 is staged (and
	// must be cleaned up) before the error.
	good := `{"arg1":"a","arg2":"b"}` + "\n"
	if err := os.WriteFile(filepath.Join(src, "in-bad.jsonl"), []byte(good+`{"arg1": "a", "arg2": }`+"\n"+good), 0o644); err != nil {
		t.Fatal(err)
	}
	r = submit(t, dir, nil, "--batch-id", "bad", "--shard-size", "1", "file://"+filepath.Join(src, "in-bad.jsonl"))
	wantExit(t, "submit of a bad input object", r, cli.ExitUsage, "in-bad.jsonl:2:")
	for _, k := range batchObjects(t, dir, "bad") {
		if strings.Contains(k, "/input/") || strings.Contains(k, "/results/") || strings.Contains(k, "/shards/") {
			t.Errorf("a bad input object left %s", k)
		}
	}
	mb := readManifest(t, dir, "bad")
	if mb.Status != manifests.StatusFailed || !strings.Contains(mb.Error, "in-bad.jsonl:2") || len(mb.Results) != 0 || mb.Counts.Items != 0 {
		t.Errorf("bad input object: manifest status %q, error %q, %d results, counts %+v; want failed, naming in-bad.jsonl:2, nothing processed",
			mb.Status, mb.Error, len(mb.Results), mb.Counts)
	}

	// A missing object.
	r = submit(t, dir, nil, "--batch-id", "missing", "file://"+filepath.Join(src, "in-missing.jsonl"))
	wantExit(t, "submit of a missing object", r, cli.ExitUsage, "in-missing.jsonl", "no such object")
	for _, k := range batchObjects(t, dir, "missing") {
		if strings.Contains(k, "/input/") || strings.Contains(k, "/results/") {
			t.Errorf("a missing input object left %s", k)
		}
	}

	// Rejected before anything starts: a fresh directory stays empty.
	fresh := t.TempDir()
	for _, tc := range []struct {
		name, url string
		want      []string
		secret    []string
	}{
		{name: "unknown scheme", url: "gs://b/k", want: []string{`"gs"`}},
		{name: "credentials", url: "s3://AKIAEXAMPLEKEYID:topsecretvalue@bucket/in.jsonl", want: []string{"credentials"},
			secret: []string{"topsecretvalue", "AKIAEXAMPLEKEYID"}},
		{name: "secret query", url: "s3://bucket/in.jsonl?secret_key=topsecretvalue", want: []string{"credentials"},
			secret: []string{"topsecretvalue"}},
	} {
		r := submit(t, fresh, nil, "--batch-id", "rej", tc.url)
		wantExit(t, tc.name, r, cli.ExitUsage, tc.want...)
		for _, s := range tc.secret {
			if strings.Contains(r.stdout+r.stderr, s) {
				t.Errorf("%s: output shows the credential %q\n%s", tc.name, s, r)
			}
		}
	}
	if files := storeFiles(t, fresh); len(files) > 0 {
		t.Errorf("rejected input URLs left objects in the store: %v", files)
	}
	assertNoEmbeddedServer(t, fresh)
}

// ageFiles sets the modification time of every file under root (the
// store's directory) whose slash path relative to root matches to age ago.
func ageFiles(t *testing.T, root string, age time.Duration, match func(rel string) bool) {
	t.Helper()
	when := time.Now().Add(-age)
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if match(filepath.ToSlash(rel)) {
			return os.Chtimes(p, when, when)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestGCLeftovers: besides finished batches, gc collects what a batch it
// keeps no longer needs — the result objects two redrives superseded and
// an uncommitted one, a staging directory no workflow claims (beside a
// batch's own, and of a batch that never started), and the file store's
// temp files of interrupted writes — when older than the age, and nothing
// a running batch, a later redrive or a fresh write needs.
func TestGCLeftovers(t *testing.T) {
	t.Parallel()
	const old = 40 * 24 * time.Hour
	dir := t.TempDir()
	root := blobsDir(dir)

	// rd: three shards of one item; item 1 fails, so two redrives rewrite
	// shard 1 as .r1 and then .r2, keeping what they replace. It finished
	// just now: gc keeps it.
	runBatch(t, dir, "rd", 3, 1, 1)
	for n := 1; n <= 2; n++ {
		r := submit(t, dir, nil, "redrive", "--keep-superseded", "rd")
		wantExit(t, fmt.Sprintf("redrive %d", n), r, cli.ExitWithFailures, fmt.Sprintf("redrive %d", n))
	}
	m := readManifest(t, dir, "rd")
	if m.Redrives != 2 || m.Results[1].Key != manifests.RedriveResultKey("rd", 1, 2) {
		t.Fatalf("setup: redrives %d, shard 1 key %s", m.Redrives, m.Results[1].Key)
	}
	superseded := []string{manifests.ResultKey("rd", 1), manifests.RedriveResultKey("rd", 1, 1)}
	// An attempt at shard 2 that never committed (no receipt names it).
	uncommitted := manifests.RedriveResultKey("rd", 2, 1)
	writeFile(t, filepath.Join(root, uncommitted), []byte("partial"))
	// A checkpoint part of a shard attempt that never finished.
	orphanPart := manifests.PartsPrefix("rd") + "000002.r1/000000.jsonl.zst"
	writeFile(t, filepath.Join(root, orphanPart), []byte("checkpoint"))
	// A second staging directory beside rd's own, from a submit that lost
	// the race for the id and died before deleting it.
	var spec struct {
		InputDir string `json:"input_dir"`
	}
	if err := json.Unmarshal(must(os.ReadFile(filepath.Join(root, manifests.BatchSpecKey("rd")))), &spec); err != nil || spec.InputDir == "" {
		t.Fatalf("setup: rd's spec names no staging directory (%v)", err)
	}
	loser := manifests.InputPrefix("rd", "s-00000000deadbeef")
	writeFile(t, filepath.Join(root, loser, "000000.jsonl.zst"), []byte("x"))
	writeFile(t, filepath.Join(root, loser, "index.json"), []byte("{}"))
	// never: staged by a submit killed before it started the workflow: no
	// spec, no manifest, no workflow. fresh: the same, staged just now.
	never := manifests.InputPrefix("never", "s-0123456789abcdef")
	writeFile(t, filepath.Join(root, never, "000000.jsonl.zst"), []byte("never"))
	writeFile(t, filepath.Join(root, never, "index.json"), []byte("{}"))
	fresh := manifests.InputPrefix("fresh", "s-fedcba9876543210")
	writeFile(t, filepath.Join(root, fresh, "index.json"), []byte("{}"))

	// run: started and running (no worker runs it once submit exits); its
	// spec is deleted, as by a submit killed right after the start, so
	// only its workflow's input says which directory is its.
	writeLines(t, filepath.Join(dir, "run.jsonl"), exampleItems(12, "run"))
	r := submit(t, dir, nil, "--wait=false", "--batch-id", "run", "--shard-size", "1", "--concurrency", "1", "run.jsonl")
	wantExit(t, "submit --wait=false run", r, cli.ExitOK)
	if err := os.Remove(filepath.Join(root, manifests.BatchSpecKey("run"))); err != nil {
		t.Fatal(err)
	}
	// Temp files of interrupted writes: an old one in a batch, an old one
	// at the root, and one being written now.
	oldTmp := manifests.BatchPrefix("rd") + "results/.batchpipe-tmp-123456"
	rootTmp := ".batchpipe-tmp-777"
	newTmp := manifests.BatchPrefix("rd") + "shards/.batchpipe-tmp-999"
	for _, k := range []string{oldTmp, rootTmp, newTmp} {
		writeFile(t, filepath.Join(root, k), []byte("half an object"))
	}

	// Everything but fresh and newTmp, the manifests included, is 40 days old.
	ageFiles(t, root, old, func(rel string) bool {
		return !strings.HasPrefix(rel, fresh) && rel != newTmp
	})
	// ...but rd and run finished or started recently as far as gc is concerned.
	ageManifest(t, dir, "rd", time.Hour)
	ageFiles(t, root, old, func(rel string) bool { return rel == manifests.ManifestKey("rd") })

	wantGone := append(append([]string{}, superseded...), uncommitted, orphanPart, loser+"000000.jsonl.zst", loser+"index.json",
		never+"000000.jsonl.zst", never+"index.json", oldTmp, rootTmp)
	before := map[string]bool{}
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			rel, _ := filepath.Rel(root, p)
			before[filepath.ToSlash(rel)] = true
		}
		return nil
	})
	for _, k := range append(wantGone, newTmp, fresh+"index.json", manifests.InputIndexKey("rd", spec.InputDir)) {
		if !before[k] {
			t.Fatalf("setup: %s is not in the store", k)
		}
	}
	snap := snapshot(t, dir)

	// The dry run lists each of them, and deletes nothing.
	r = submit(t, dir, strings.NewReader(""), "gc", "--older-than", "30d", "--dry-run")
	wantExit(t, "gc --dry-run", r, cli.ExitOK)
	for _, k := range superseded {
		if !lineWith(r.stdout, `would delete superseded `+regexp.QuoteMeta(k)+`:`, `redrive 2`) {
			t.Errorf("dry run does not list %s as superseded by redrive 2\n%s", k, r)
		}
	}
	for _, w := range [][]string{
		{`would delete superseded ` + regexp.QuoteMeta(uncommitted) + `:`},
		{`would delete superseded ` + regexp.QuoteMeta(orphanPart) + `:`, `checkpoint part of a shard that never finished`},
		{`would delete staged input never run ` + regexp.QuoteMeta(loser) + `:`, `2 objects`, `spec names ` + spec.InputDir},
		{`would delete staged input never run ` + regexp.QuoteMeta(never) + `:`, `2 objects`, `no workflow`},
		{`would delete temp file ` + regexp.QuoteMeta(oldTmp) + `:`},
		{`would delete temp file ` + regexp.QuoteMeta(rootTmp) + `:`},
		{`would delete 4 superseded objects, 2 staged inputs never run, 2 temp files: 10 objects`},
	} {
		if !lineWith(r.stdout, w...) {
			t.Errorf("dry run: no line matching %q\n%s", w, r)
		}
	}
	for _, k := range []string{"fresh", newTmp, manifests.InputPrefix("run", ""), manifests.InputPrefix("rd", spec.InputDir),
		manifests.ResultKey("rd", 0), manifests.RedriveResultKey("rd", 1, 2), "shards/"} {
		if lineWith(r.stdout, `delete`, regexp.QuoteMeta(k)) {
			t.Errorf("dry run lists %s\n%s", k, r)
		}
	}
	if !mapsEqual(snap, snapshot(t, dir)) {
		t.Fatalf("the dry run changed the store")
	}

	// --yes deletes exactly those.
	r = submit(t, dir, strings.NewReader(""), "gc", "--older-than", "30d", "--yes")
	wantExit(t, "gc --yes", r, cli.ExitOK)
	after := map[string]bool{}
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			rel, _ := filepath.Rel(root, p)
			after[filepath.ToSlash(rel)] = true
		}
		return nil
	})
	for k := range before {
		if gone := !after[k]; gone != slices.Contains(wantGone, k) {
			t.Errorf("after gc --yes: %s gone %v, want %v\n%s", k, gone, !gone, r)
		}
	}
	if len(after) != len(before)-len(wantGone) {
		t.Errorf("after gc --yes: %d files, want %d", len(after), len(before)-len(wantGone))
	}

	// rd reads and verifies as before, and a third redrive still finds
	// everything it needs (its receipts and the objects they name).
	r = submit(t, dir, nil, "results", "--verify", "rd")
	wantExit(t, "results --verify rd after gc", r, cli.ExitOK, "verified")
	r = submit(t, dir, nil, "redrive", "rd")
	wantExit(t, "redrive 3 after gc", r, cli.ExitWithFailures, "redrive 3")
	r = submit(t, dir, nil, "results", "--verify", "rd")
	wantExit(t, "results --verify rd after redrive 3", r, cli.ExitOK, "verified")
}
