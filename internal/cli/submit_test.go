package cli_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/batchpipe/batchpipe/internal/cli"
	"github.com/batchpipe/batchpipe/internal/testinfra"
	"github.com/batchpipe/batchpipe/manifests"
	"github.com/batchpipe/batchpipe/zjsonl"
)

// submitResult is what one in-process run of submit produced.
type submitResult struct {
	code           int
	stdout, stderr string
}

func (r submitResult) String() string {
	return fmt.Sprintf("exit %d\n--- stdout:\n%s--- stderr:\n%s", r.code, r.stdout, r.stderr)
}

// noEnv is an environment with nothing set: no Temporal address, so
// submit runs its embedded server.
func noEnv(string) string { return "" }

// submit runs cli.Submit in dir with an empty environment.
func submit(t *testing.T, dir string, stdin io.Reader, args ...string) submitResult {
	t.Helper()
	if stdin == nil {
		stdin = strings.NewReader("")
	}
	var stdout, stderr testinfra.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	start := time.Now()
	code := cli.Submit(ctx, &cli.IO{Stdin: stdin, Stdout: &stdout, Stderr: &stderr, Getenv: noEnv, Dir: dir}, args)
	r := submitResult{code: code, stdout: stdout.String(), stderr: stderr.String()}
	t.Logf("submit %s: exit %d in %.1fs", strings.Join(args, " "), code, time.Since(start).Seconds())
	return r
}

func blobsDir(dir string) string { return filepath.Join(dir, ".batchpipe", "blobs") }

// storeFiles lists the files under <dir>/.batchpipe/blobs/batches/, as
// slash-separated paths relative to blobs/; none when it does not exist.
func storeFiles(t *testing.T, dir string) []string {
	t.Helper()
	root := blobsDir(dir)
	var files []string
	err := filepath.WalkDir(filepath.Join(root, "batches"), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if !d.IsDir() {
			rel, _ := filepath.Rel(root, p)
			files = append(files, filepath.ToSlash(rel))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// snapshot reads every stored file of the store in dir.
func snapshot(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	m := map[string][]byte{}
	for _, f := range storeFiles(t, dir) {
		data, err := os.ReadFile(filepath.Join(blobsDir(dir), filepath.FromSlash(f)))
		if err != nil {
			t.Fatal(err)
		}
		m[f] = data
	}
	return m
}

func assertNoEmbeddedServer(t *testing.T, dir string) {
	t.Helper()
	if _, err := os.Stat(filepath.Join(dir, ".batchpipe", "embedded")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the embedded Temporal server was started (.batchpipe/embedded exists, stat: %v); bad input or usage should be rejected first", err)
	}
}

// readManifest reads and checks the basics of a batch's manifest.
func readManifest(t *testing.T, dir, batchID string) manifests.Manifest {
	t.Helper()
	return readManifestFile(t, filepath.Join(blobsDir(dir), filepath.FromSlash(manifests.ManifestKey(batchID))), batchID)
}

func readManifestFile(t *testing.T, path, batchID string) manifests.Manifest {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("manifest: %v", err)
	}
	var m manifests.Manifest
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		t.Fatalf("manifest %s does not parse as manifests.Manifest: %v\n%s", path, err, data)
	}
	if m.Format != manifests.Format {
		t.Errorf("manifest format = %q, want %q", m.Format, manifests.Format)
	}
	if batchID != "" && m.BatchID != batchID {
		t.Errorf("manifest batch_id = %q, want %q", m.BatchID, batchID)
	}
	if m.Counts.Items != m.Counts.Succeeded+m.Counts.Failed {
		t.Errorf("manifest counts do not add up: %+v", m.Counts)
	}
	if m.StartedAt.IsZero() || m.FinishedAt.Before(m.StartedAt) {
		t.Errorf("manifest times: started %v, finished %v", m.StartedAt, m.FinishedAt)
	}
	return m
}

// readObjectLines reads the lines of a zstd JSON-lines object of the store.
func readObjectLines(t *testing.T, dir, key string) [][]byte {
	t.Helper()
	f, err := os.Open(filepath.Join(blobsDir(dir), filepath.FromSlash(key)))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := zjsonl.NewReader(f)
	if err != nil {
		t.Fatalf("%s: %v", key, err)
	}
	defer zr.Close()
	var lines [][]byte
	for {
		l, err := zr.Next()
		if err == io.EOF {
			return lines
		}
		if err != nil {
			t.Fatalf("%s: %v", key, err)
		}
		lines = append(lines, bytes.Clone(l))
	}
}

type exampleItem struct {
	Arg1 string  `json:"arg1"`
	Arg2 *string `json:"arg2,omitempty"`
}

// exampleItems makes n items for the example processor; the indexes in
// missingArg2 lack "arg2", which the example processor rejects permanently.
func exampleItems(n int, tag string, missingArg2 ...int) [][]byte {
	var lines [][]byte
	for i := range n {
		it := exampleItem{Arg1: fmt.Sprintf("%s-a%d", tag, i)}
		if !slices.Contains(missingArg2, i) {
			v := fmt.Sprintf("%s-b%d", tag, i)
			it.Arg2 = &v
		}
		data, _ := json.Marshal(it)
		lines = append(lines, data)
	}
	return lines
}

func writeLines(t *testing.T, path string, lines [][]byte) {
	t.Helper()
	var b bytes.Buffer
	for _, l := range lines {
		b.Write(l)
		b.WriteByte('\n')
	}
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestSubmitBadInput(t *testing.T) {
	good := `{"arg1":"a","arg2":"b"}` + "\n"
	cases := []struct {
		name  string
		file  string // created in the temp dir unless missing
		data  string
		mkdir bool // file is a directory
		args  []string
		want  []string // in stderr, after the file name
	}{
		{name: "invalid JSON", file: "inputs.jsonl", data: good + good + `{"arg1": "a", "arg2": }` + "\n" + good,
			want: []string{"inputs.jsonl:3: ", "invalid JSON"}},
		{name: "array", file: "inputs.jsonl", data: good + good + "[1, 2]\n",
			want: []string{"inputs.jsonl:3: ", "expected a JSON object, got an array"}},
		{name: "empty", file: "empty.jsonl", data: "",
			want: []string{"empty.jsonl: ", "no items"}},
		{name: "ragged CSV", file: "inputs.csv", data: "arg1,arg2\na,b\nc,d\ne\nf,g\n",
			want: []string{"inputs.csv:4: ", "1 field, header has 2"}},
		{name: "invalid UTF-8", file: "inputs.jsonl", data: good + good + "{\"arg1\":\"\xff\xfe\",\"arg2\":\"b\"}\n",
			want: []string{"inputs.jsonl:3: ", "invalid UTF-8"}},
		{name: "item too big", file: "inputs.jsonl", args: []string{"--max-item-size", "100"},
			data: good + good + `{"arg1":"` + strings.Repeat("x", 200) + `","arg2":"b"}` + "\n",
			want: []string{"inputs.jsonl:3: ", "over the 100-byte limit", "--max-item-size"}},
		{name: "missing file", file: "missing.jsonl",
			want: []string{"missing.jsonl: ", "no such file"}},
		{name: "directory", file: "dir.jsonl", mkdir: true,
			want: []string{"dir.jsonl: ", "is a directory"}},
		{name: "corrupt zstd", file: "inputs.jsonl.zst", data: "\x28\xb5\x2f\xfd" + strings.Repeat("\x00garbage\xff", 20),
			want: []string{"inputs.jsonl.zst", "zstd"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			path := filepath.Join(dir, tc.file)
			switch {
			case tc.mkdir:
				if err := os.Mkdir(path, 0o755); err != nil {
					t.Fatal(err)
				}
			case tc.name != "missing file":
				if err := os.WriteFile(path, []byte(tc.data), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			// Shards of one item, so that the good items before the bad one
			// are staged (and must be cleaned up) before the error.
			args := append([]string{"--batch-id", "bad1", "--shard-size", "1"}, tc.args...)
			r := submit(t, dir, nil, append(args, tc.file)...)
			if r.code != cli.ExitUsage {
				t.Errorf("exit code %d, want %d\n%s", r.code, cli.ExitUsage, r)
			}
			for _, w := range tc.want {
				if !strings.Contains(r.stderr, w) {
					t.Errorf("stderr does not contain %q\n%s", w, r)
				}
			}
			if r.stdout != "" {
				t.Errorf("stdout is not empty: %q", r.stdout)
			}
			if files := storeFiles(t, dir); len(files) > 0 {
				t.Errorf("bad input left objects in the store: %v", files)
			}
			assertNoEmbeddedServer(t, dir)
		})
	}
}

func TestSubmitBadUsage(t *testing.T) {
	cases := []struct {
		name   string
		args   []string
		want   []string // in stderr
		secret []string // must appear nowhere
	}{
		{name: "unknown processor", args: []string{"--processor", "nope"},
			want: []string{`unknown processor "nope"`, "echo", "example", "TEMPORAL_ADDRESS"}},
		{name: "shard size 0", args: []string{"--shard-size", "0"}, want: []string{"--shard-size"}},
		{name: "concurrency -1", args: []string{"--concurrency", "-1"}, want: []string{"--concurrency"}},
		{name: "batch id escapes", args: []string{"--batch-id", "../x"}, want: []string{"--batch-id", "../x"}},
		{name: "max failures abc", args: []string{"--max-failures", "abc"}, want: []string{"--max-failures", "abc"}},
		{name: "max failures NaN", args: []string{"--max-failures", "NaN%"}, want: []string{"--max-failures", "NaN%"}},
		{name: "shard size not a number", args: []string{"--shard-size", "ten"}, want: []string{"shard-size"}},
		{name: "unknown flag", args: []string{"--no-such-flag"}, want: []string{"no-such-flag"}},
		{name: "items per call 0", args: []string{"--items-per-call", "0"}, want: []string{"--items-per-call", "0"}},
		{name: "items per call not a number", args: []string{"--items-per-call", "many"}, want: []string{"items-per-call", "many"}},
		{name: "rate below 1", args: []string{"--rate", "0.5"}, want: []string{"--rate", "0.5"}},
		{name: "rate 0", args: []string{"--rate", "0"}, want: []string{"--rate"}},
		{name: "rate NaN", args: []string{"--rate", "NaN"}, want: []string{"--rate"}},
		{name: "rate not a number", args: []string{"--rate", "fast"}, want: []string{"rate", "fast"}},
		{name: "priority 0", args: []string{"--priority", "0"}, want: []string{"--priority must be 1 (highest) to 5", "got 0"}},
		{name: "priority 6", args: []string{"--priority", "6"}, want: []string{"--priority must be 1 (highest) to 5", "got 6"}},
		{name: "priority not a number", args: []string{"--priority", "high"}, want: []string{"priority", "high"}},
		{name: "fairness key empty", args: []string{"--fairness-key", ""}, want: []string{"--fairness-key is empty"}},
		{name: "fairness key too long", args: []string{"--fairness-key", strings.Repeat("k", 65)}, want: []string{"--fairness-key must be at most 64 bytes"}},
		{name: "fairness weight 0", args: []string{"--fairness-weight", "0"}, want: []string{"--fairness-weight must be 0.001 to 1000"}},
		{name: "canary max failures without canary", args: []string{"--canary-max-failures", "2"}, want: []string{"--canary-max-failures needs --canary"}},
		{name: "canary max failures abc", args: []string{"--canary", "--canary-max-failures", "abc"}, want: []string{"--canary-max-failures", "abc"}},
		{name: "canary max failures 101%", args: []string{"--canary", "--canary-max-failures", "101%"}, want: []string{"--canary-max-failures", "101%"}},
		{name: "unknown format", args: []string{"--format", "xml"}, want: []string{"--format", "xml"}},
		{name: "store with credentials", args: []string{"--store", "s3://AKIAEXAMPLEKEYID:topsecretvalue@bucket/p"},
			want: []string{"credentials"}, secret: []string{"topsecretvalue", "AKIAEXAMPLEKEYID"}},
		{name: "store with secret query", args: []string{"--store", "s3://bucket/p?secret_key=topsecretvalue"},
			want: []string{"credentials"}, secret: []string{"topsecretvalue"}},
		{name: "unknown store scheme", args: []string{"--store", "gs://b"}, want: []string{"gs"}},
		{name: "no file", args: nil, want: []string{"Usage:", "give a FILE or URL"}},
		{name: "two files", args: []string{"other.jsonl"}, want: []string{"takes one FILE or URL, got 2 arguments"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			writeLines(t, filepath.Join(dir, "inputs.jsonl"), exampleItems(3, "u"))
			args := tc.args
			if tc.name != "no file" {
				args = append(slices.Clone(args), "inputs.jsonl")
			}
			r := submit(t, dir, nil, args...)
			if r.code != cli.ExitUsage {
				t.Errorf("exit code %d, want %d\n%s", r.code, cli.ExitUsage, r)
			}
			for _, w := range tc.want {
				if !strings.Contains(r.stderr, w) {
					t.Errorf("stderr does not contain %q\n%s", w, r)
				}
			}
			for _, s := range tc.secret {
				if strings.Contains(r.stdout+r.stderr, s) {
					t.Errorf("output shows the credential %q\n%s", s, r)
				}
			}
			if files := storeFiles(t, dir); len(files) > 0 {
				t.Errorf("bad usage left objects in the store: %v", files)
			}
			assertNoEmbeddedServer(t, dir)
		})
	}
}

// checkResults reads every result object of m and checks that together they
// hold one line per item, in input order, matching items.
func checkResults(t *testing.T, dir string, m manifests.Manifest, items [][]byte) []manifests.ResultLine {
	t.Helper()
	var all []manifests.ResultLine
	var next int64
	for _, res := range m.Results {
		if res.FirstIndex != next {
			t.Errorf("result %s: first_index %d, want %d", res.Key, res.FirstIndex, next)
		}
		data, err := os.ReadFile(filepath.Join(blobsDir(dir), filepath.FromSlash(res.Key)))
		if err != nil {
			t.Fatalf("result object named in the manifest: %v", err)
		}
		if int64(len(data)) != res.Size {
			t.Errorf("result %s: %d bytes, manifest says %d", res.Key, len(data), res.Size)
		}
		if sum := sha256.Sum256(data); hex.EncodeToString(sum[:]) != res.SHA256 {
			t.Errorf("result %s: sha256 does not match the manifest", res.Key)
		}
		lines := readObjectLines(t, dir, res.Key)
		if int64(len(lines)) != res.Items {
			t.Errorf("result %s: %d lines, manifest says %d items", res.Key, len(lines), res.Items)
		}
		var ok, failed int64
		for _, l := range lines {
			var rl manifests.ResultLine
			if err := json.Unmarshal(l, &rl); err != nil {
				t.Fatalf("result %s: %v: %s", res.Key, err, l)
			}
			if rl.Status == manifests.ItemSucceeded {
				ok++
			} else {
				failed++
			}
			all = append(all, rl)
		}
		if ok != res.Succeeded || failed != res.Failed {
			t.Errorf("result %s: %d succeeded, %d failed; manifest says %d, %d", res.Key, ok, failed, res.Succeeded, res.Failed)
		}
		next += res.Items
	}
	if len(all) != len(items) {
		t.Fatalf("results hold %d lines, want %d", len(all), len(items))
	}
	for i, rl := range all {
		if rl.Index != int64(i) {
			t.Fatalf("result line %d has index %d: results are not in input order", i, rl.Index)
		}
		if rl.Status != manifests.ItemSucceeded {
			continue
		}
		var in exampleItem
		var out struct {
			Arg1      string   `json:"arg1"`
			Arg2      string   `json:"arg2"`
			RandomVal *float64 `json:"random_val"`
		}
		json.Unmarshal(items[i], &in)
		if err := json.Unmarshal(rl.Output, &out); err != nil {
			t.Fatalf("item %d: output %s: %v", i, rl.Output, err)
		}
		if out.Arg1 != "activity arg1: "+in.Arg1 || in.Arg2 == nil || out.Arg2 != "activity arg2: "+*in.Arg2 || out.RandomVal == nil {
			t.Errorf("item %d: input %s, output %s", i, items[i], rl.Output)
		}
	}
	return all
}

func TestSubmitSucceeds(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	items := exampleItems(250, "ok")
	writeLines(t, filepath.Join(dir, "inputs.jsonl"), items)
	r := submit(t, dir, nil, "--shard-size", "50", "--batch-id", "ok1", "inputs.jsonl")
	if r.code != cli.ExitOK {
		t.Fatalf("exit code %d, want 0\n%s", r.code, r)
	}
	key := manifests.ManifestKey("ok1")
	for _, w := range []string{"succeeded", key, filepath.Join(blobsDir(dir), filepath.FromSlash(key))} {
		if !strings.Contains(r.stdout, w) {
			t.Errorf("stdout does not contain %q\n%s", w, r)
		}
	}
	m := readManifest(t, dir, "ok1")
	if m.Status != manifests.StatusSucceeded {
		t.Errorf("status %q, want succeeded", m.Status)
	}
	if m.Counts != (manifests.Counts{Items: 250, Succeeded: 250}) {
		t.Errorf("counts %+v", m.Counts)
	}
	if want := (manifests.Input{Source: "inputs.jsonl", Items: 250, Shards: 5, ShardSize: 50}); m.Input != want {
		t.Errorf("input %+v, want %+v", m.Input, want)
	}
	if m.Processor != "example" {
		t.Errorf("processor %q", m.Processor)
	}
	if len(m.Results) != 5 {
		t.Fatalf("%d results, want 5", len(m.Results))
	}
	if m.Failures != nil {
		t.Errorf("failures %+v, want null", m.Failures)
	}
	checkResults(t, dir, m, items)
	if _, err := os.Stat(filepath.Join(blobsDir(dir), filepath.FromSlash(manifests.FailuresKey("ok1")))); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("failed.jsonl.zst exists for a batch without failures (%v)", err)
	}
}

func TestSubmitItemFailures(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	missing := []int{4, 11, 17}
	items := exampleItems(20, "f", missing...)
	writeLines(t, filepath.Join(dir, "inputs.jsonl"), items)

	r := submit(t, dir, nil, "--shard-size", "8", "--batch-id", "f1", "inputs.jsonl")
	if r.code != cli.ExitWithFailures {
		t.Fatalf("exit code %d, want %d\n%s", r.code, cli.ExitWithFailures, r)
	}
	if !strings.Contains(r.stdout, manifests.StatusCompletedWithFailures) || !strings.Contains(r.stdout, manifests.FailuresKey("f1")) {
		t.Errorf("stdout does not name the status and the failures object\n%s", r)
	}
	m := readManifest(t, dir, "f1")
	if m.Status != manifests.StatusCompletedWithFailures {
		t.Errorf("status %q, want %q", m.Status, manifests.StatusCompletedWithFailures)
	}
	if m.Counts != (manifests.Counts{Items: 20, Succeeded: 17, Failed: 3}) {
		t.Errorf("counts %+v", m.Counts)
	}
	if m.Failures == nil || m.Failures.Key != manifests.FailuresKey("f1") || m.Failures.Items != 3 {
		t.Fatalf("failures %+v, want key %s with 3 items", m.Failures, manifests.FailuresKey("f1"))
	}
	all := checkResults(t, dir, m, items)
	for i, rl := range all {
		wantFailed := slices.Contains(missing, i)
		if (rl.Status == manifests.ItemFailed) != wantFailed || rl.Status != manifests.ItemFailed && rl.Status != manifests.ItemSucceeded {
			t.Errorf("item %d: status %q", i, rl.Status)
		}
		if wantFailed && (rl.Error == nil || !strings.Contains(rl.Error.Message, "arg2") || rl.Attempts != 1) {
			t.Errorf("item %d: a permanent failure should have an error naming arg2 after 1 attempt: %+v attempts %d", i, rl.Error, rl.Attempts)
		}
	}
	lines := readObjectLines(t, dir, m.Failures.Key)
	if len(lines) != 3 {
		t.Fatalf("failed.jsonl.zst has %d lines, want 3", len(lines))
	}
	for i, l := range lines {
		var fl manifests.FailureLine
		if err := json.Unmarshal(l, &fl); err != nil {
			t.Fatalf("failed line %d: %v: %s", i, err, l)
		}
		if fl.Index != int64(missing[i]) {
			t.Errorf("failed line %d: index %d, want %d", i, fl.Index, missing[i])
		}
		if !bytes.Equal(fl.Input, items[missing[i]]) {
			t.Errorf("failed line %d: input %s, want the submitted item %s", i, fl.Input, items[missing[i]])
		}
		if fl.Error == nil || fl.Error.Message == "" {
			t.Errorf("failed line %d: no error: %s", i, l)
		}
	}

	// Over the failure limit the batch fails.
	r = submit(t, dir, nil, "--shard-size", "8", "--max-failures", "1", "--batch-id", "f2", "inputs.jsonl")
	if r.code != cli.ExitFailed {
		t.Fatalf("with --max-failures 1: exit code %d, want %d\n%s", r.code, cli.ExitFailed, r)
	}
	m2 := readManifest(t, dir, "f2")
	if m2.Status != manifests.StatusFailed {
		t.Errorf("with --max-failures 1: status %q, want failed", m2.Status)
	}
	if !strings.Contains(m2.Error, "max-failures") {
		t.Errorf("with --max-failures 1: manifest error %q does not say why", m2.Error)
	}
	if !strings.Contains(r.stdout, "failed") || !strings.Contains(r.stdout, "max-failures") {
		t.Errorf("with --max-failures 1: stdout does not report the failed batch and why\n%s", r)
	}
}

func TestSubmitSameBatchID(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	writeLines(t, filepath.Join(dir, "a.jsonl"), exampleItems(30, "a"))
	writeLines(t, filepath.Join(dir, "b.jsonl"), exampleItems(30, "b"))

	r := submit(t, dir, nil, "--batch-id", "same", "a.jsonl")
	if r.code != cli.ExitOK {
		t.Fatalf("first run: exit code %d\n%s", r.code, r)
	}
	before := snapshot(t, dir)
	if _, ok := before[manifests.ManifestKey("same")]; !ok {
		t.Fatalf("no manifest after the first run: %v", slices.Sorted(func(yield func(string) bool) {
			for k := range before {
				if !yield(k) {
					return
				}
			}
		}))
	}
	countManifests := func() int {
		n := 0
		for _, f := range storeFiles(t, dir) {
			if strings.HasSuffix(f, "/manifest.json") {
				n++
			}
		}
		return n
	}

	// The same input again: it reports the finished batch.
	r = submit(t, dir, nil, "--batch-id", "same", "a.jsonl")
	if r.code != cli.ExitOK {
		t.Errorf("same input again: exit code %d, want 0\n%s", r.code, r)
	}
	if !strings.Contains(r.stderr, "already finished") || !strings.Contains(r.stdout, "succeeded") || !strings.Contains(r.stdout, manifests.ManifestKey("same")) {
		t.Errorf("same input again: does not report the finished batch\n%s", r)
	}
	if strings.Contains(r.stdout, "elapsed") {
		t.Errorf("same input again: reports a run time although nothing ran\n%s", r)
	}
	if n := countManifests(); n != 1 {
		t.Errorf("%d manifests, want 1", n)
	}
	if after := snapshot(t, dir); !mapsEqual(before, after) {
		t.Errorf("resubmitting the same input changed the store")
	}

	// A different input under the same id is refused.
	r = submit(t, dir, nil, "--batch-id", "same", "b.jsonl")
	if r.code != cli.ExitUsage {
		t.Errorf("different input: exit code %d, want %d\n%s", r.code, cli.ExitUsage, r)
	}
	if !strings.Contains(r.stderr, "already exists with a different input") {
		t.Errorf("different input: stderr does not say why\n%s", r)
	}
	if after := snapshot(t, dir); !mapsEqual(before, after) {
		t.Errorf("a refused resubmission changed the store")
	}
	if n := countManifests(); n != 1 {
		t.Errorf("%d manifests, want 1", n)
	}
}

func mapsEqual(a, b map[string][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || !bytes.Equal(v, w) {
			return false
		}
	}
	return true
}

func TestSubmitNoWait(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	items := exampleItems(10, "w")
	writeLines(t, filepath.Join(dir, "inputs.jsonl"), items)
	r := submit(t, dir, nil, "--wait=false", "--batch-id", "nw1", "inputs.jsonl")
	if r.code != cli.ExitOK {
		t.Fatalf("exit code %d, want 0\n%s", r.code, r)
	}
	if r.stdout != "nw1\n" {
		t.Errorf("stdout %q, want the batch id alone", r.stdout)
	}
	if _, err := os.Stat(filepath.Join(blobsDir(dir), filepath.FromSlash(manifests.BatchSpecKey("nw1")))); err != nil {
		t.Errorf("the started batch's spec: %v", err)
	}

	// In embedded mode nothing ran the batch after submit exited; the same
	// command with the same id resumes it and waits for it.
	r = submit(t, dir, nil, "--batch-id", "nw1", "inputs.jsonl")
	if r.code != cli.ExitOK {
		t.Fatalf("resuming: exit code %d, want 0\n%s", r.code, r)
	}
	m := readManifest(t, dir, "nw1")
	if m.Status != manifests.StatusSucceeded || m.Counts.Succeeded != 10 {
		t.Errorf("resumed batch: status %q, counts %+v", m.Status, m.Counts)
	}
	checkResults(t, dir, m, items)
}

func TestSubmitStdin(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	items := exampleItems(12, "in")
	var b strings.Builder
	for i, it := range items {
		if i == 5 {
			b.WriteString("\n") // a blank line is skipped
		}
		b.Write(it)
		b.WriteString("\r\n")
	}
	r := submit(t, dir, strings.NewReader(b.String()), "--batch-id", "stdin1", "-")
	if r.code != cli.ExitOK {
		t.Fatalf("exit code %d, want 0\n%s", r.code, r)
	}
	m := readManifest(t, dir, "stdin1")
	if m.Input.Source != "stdin" || m.Counts.Succeeded != 12 || m.Status != manifests.StatusSucceeded {
		t.Errorf("manifest input %+v, counts %+v, status %q", m.Input, m.Counts, m.Status)
	}
	checkResults(t, dir, m, items)
}

// repoRoot is the module root.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := testinfra.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// TestQuickStart runs the README's quick-start command, as a built binary in
// a fresh directory without any Temporal configuration.
func TestQuickStart(t *testing.T) {
	if testing.Short() {
		t.Skip("builds cmd/submit")
	}
	t.Parallel()
	root := repoRoot(t)
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(readme), "go run ./cmd/submit examples/inputs.jsonl") {
		t.Errorf("the README's quick start is no longer `go run ./cmd/submit examples/inputs.jsonl`; update this test")
	}
	tmp := t.TempDir()
	bin := buildSubmit(t)

	work := filepath.Join(tmp, "work")
	if err := os.MkdirAll(filepath.Join(work, "examples"), 0o755); err != nil {
		t.Fatal(err)
	}
	example, err := os.ReadFile(filepath.Join(root, "examples", "inputs.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(work, "examples", "inputs.jsonl"), example, 0o644); err != nil {
		t.Fatal(err)
	}
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "TEMPORAL_") {
			env = append(env, kv)
		}
	}
	// No Temporal config file either: point the user config dir at tmp.
	env = append(env, "HOME="+tmp, "XDG_CONFIG_HOME="+filepath.Join(tmp, "config"))

	var stdout, stderr bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "examples/inputs.jsonl")
	cmd.Dir, cmd.Env, cmd.Stdout, cmd.Stderr = work, env, &stdout, &stderr
	err = cmd.Run()
	out := fmt.Sprintf("--- stdout:\n%s--- stderr:\n%s", stdout.String(), stderr.String())
	if err != nil {
		t.Fatalf("submit examples/inputs.jsonl: %v\n%s", err, out)
	}

	// "manifest: <key>" and, on the next line, the file's path.
	var key, path string
	sc := bufio.NewScanner(&stdout)
	for sc.Scan() {
		if k, ok := strings.CutPrefix(sc.Text(), "manifest: "); ok {
			key = strings.TrimSpace(k)
			if sc.Scan() {
				path = strings.TrimSpace(sc.Text())
			}
		}
	}
	if key == "" || path == "" {
		t.Fatalf("stdout does not name the manifest\n%s", out)
	}
	if want := filepath.Join(work, ".batchpipe", "blobs", filepath.FromSlash(key)); path != want {
		t.Errorf("manifest path %q, want %q", path, want)
	}
	m := readManifestFile(t, path, "")
	if key != manifests.ManifestKey(m.BatchID) {
		t.Errorf("manifest key %q does not match batch id %q", key, m.BatchID)
	}
	if m.Status != manifests.StatusSucceeded || m.Counts != (manifests.Counts{Items: 300, Succeeded: 300}) || m.Input.Items != 300 {
		t.Errorf("manifest status %q, counts %+v, input %+v; want 300 items all succeeded", m.Status, m.Counts, m.Input)
	}
	var items [][]byte
	for l := range bytes.Lines(example) {
		if l = bytes.TrimSpace(l); len(l) > 0 {
			items = append(items, l)
		}
	}
	checkResults(t, work, m, items)
}

// TestSubmitFIFO: a FIFO (what `submit <(cat in.jsonl)` passes) is read
// once, as a stream: before, counting its lines for the shard size consumed
// it, and submit then said the input was empty or blocked forever.
func TestSubmitFIFO(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	fifo := filepath.Join(dir, "in.fifo")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Skipf("mkfifo: %v", err)
	}
	items := exampleItems(40, "fifo")
	go func() {
		f, err := os.OpenFile(fifo, os.O_WRONLY, 0)
		if err != nil {
			return
		}
		defer f.Close()
		for _, it := range items {
			f.Write(append([]byte(it), '\n'))
		}
	}()
	r := submit(t, dir, nil, "--batch-id", "fifo1", "--format", "jsonl", fifo)
	if r.code != cli.ExitOK {
		t.Fatalf("exit code %d, want 0\n%s", r.code, r)
	}
	m := readManifest(t, dir, "fifo1")
	if m.Counts.Succeeded != 40 {
		t.Fatalf("counts %+v, want 40 succeeded", m.Counts)
	}
	checkResults(t, dir, m, items)
}

// TestSubmitFIFOInterrupted: a FIFO that no one opens for writing, or whose
// writer goes silent, blocks submit only until it is interrupted (ctx is
// what SIGINT and SIGTERM cancel); nothing is left staged.
func TestSubmitFIFOInterrupted(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name  string
		write int // items written before the writer goes silent; -1: no writer
	}{{"no-writer", -1}, {"silent-writer", 3}} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			fifo := filepath.Join(dir, "in.fifo")
			if err := syscall.Mkfifo(fifo, 0o644); err != nil {
				t.Fatalf("mkfifo: %v", err)
			}
			if c.write >= 0 {
				hold := make(chan struct{})
				defer close(hold)
				go func() {
					f, err := os.OpenFile(fifo, os.O_WRONLY, 0)
					if err != nil {
						return
					}
					defer f.Close()
					for _, it := range exampleItems(c.write, "fifo") {
						f.Write(append([]byte(it), '\n'))
					}
					<-hold // silent, and open
				}()
			}
			ctx, cancel := context.WithCancel(context.Background())
			time.AfterFunc(time.Second, cancel)
			var stdout, stderr testinfra.Buffer
			done := make(chan int, 1)
			go func() {
				done <- cli.Submit(ctx, &cli.IO{Stdin: strings.NewReader(""), Stdout: &stdout, Stderr: &stderr, Getenv: noEnv, Dir: dir},
					[]string{"--batch-id", "fifo-int", "--format", "jsonl", fifo})
			}()
			select {
			case code := <-done:
				if code != cli.ExitInterrupted {
					t.Fatalf("exit %d for an interrupted submit, want %d\n%s", code, cli.ExitInterrupted, stderr.String())
				}
				t.Logf("exit %d: %s", code, strings.TrimSpace(stderr.String()))
			case <-time.After(20 * time.Second):
				t.Fatalf("submit still blocked 19 s after the interrupt\n%s", stderr.String())
			}
			if files := storeFiles(t, dir); len(files) > 0 {
				t.Fatalf("an interrupted submit left %v", files)
			}
		})
	}
}
