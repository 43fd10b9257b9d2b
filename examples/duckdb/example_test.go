package duckdb_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/batchpipe/batchpipe/internal/cli"
	"github.com/batchpipe/batchpipe/internal/testinfra"
	"github.com/batchpipe/batchpipe/manifests"
	"github.com/batchpipe/batchpipe/zjsonl"
)

// cleanEnv is the test's environment without batchpipe's and Temporal's
// variables.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(k, "TEMPORAL_") && !strings.HasPrefix(k, "BATCHPIPE_") {
			env = append(env, kv)
		}
	}
	return env
}

// submit runs the submit command in-process in dir, with the embedded
// default (no Temporal address).
func submit(t *testing.T, dir string, args ...string) (int, string) {
	t.Helper()
	var out testinfra.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	code := cli.Submit(ctx, &cli.IO{Stdin: strings.NewReader(""), Stdout: &out, Stderr: &out, Getenv: func(string) string { return "" }, Dir: dir}, args)
	return code, out.String()
}

// recipeResult is what results.mjs prints.
type recipeResult struct {
	Rows            int            `json:"rows"`
	DistinctIndexes int            `json:"distinct_indexes"`
	ByStatus        map[string]int `json:"by_status"`
	FailedItems     int            `json:"failed_items"`
}

// TestDuckDBRecipe installs @duckdb/node-api (npm ci), runs a real batch of
// 250 items, 7 of which fail, in shards of 50 with the embedded default,
// and redrives it: the redrive deletes the objects it replaced, so
// results/*.jsonl.zst holds every item once. A second redrive with
// --keep-superseded leaves the replaced objects beside the live ones (as
// gc finds them), and the recipe still reads every item once, by status
// as the manifest counts them, and the failures object's lines — where a
// glob over results/ would read each item twice.
func TestDuckDBRecipe(t *testing.T) {
	if testing.Short() {
		t.Skip("installs npm packages and runs a batch")
	}
	node := testinfra.LookPath(t, "node", "install Node.js (apt-get install nodejs npm)")
	npm := testinfra.LookPath(t, "npm", "install npm (apt-get install npm)")
	dir := t.TempDir()
	const items, shardSize = 250, 50
	var in bytes.Buffer
	failing := map[int]bool{}
	for i := range items {
		if i%37 == 5 {
			failing[i] = true
			fmt.Fprintf(&in, "{\"arg1\":\"a%d\"}\n", i) // no arg2: the example processor refuses it
			continue
		}
		fmt.Fprintf(&in, "{\"arg1\":\"a%d\",\"arg2\":\"b%d\"}\n", i, i)
	}
	if err := os.WriteFile(filepath.Join(dir, "in.jsonl"), in.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}

	// npm ci and the batch run side by side.
	var wg sync.WaitGroup
	var npmErr error
	var npmOut []byte
	wg.Add(1)
	go func() {
		defer wg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, npm, "ci", "--no-audit", "--no-fund", "--loglevel=error")
		cmd.Env = cleanEnv()
		npmOut, npmErr = cmd.CombinedOutput()
	}()
	code, out := submit(t, dir, "--batch-id", "duck", "--shard-size", fmt.Sprint(shardSize), "in.jsonl")
	if code != cli.ExitWithFailures {
		t.Errorf("submit: exit %d, want %d\n%s", code, cli.ExitWithFailures, out)
	}
	if code, out = submit(t, dir, "redrive", "duck"); code != cli.ExitWithFailures {
		t.Errorf("redrive: exit %d, want %d\n%s", code, cli.ExitWithFailures, out)
	}
	root := filepath.Join(dir, ".batchpipe", "blobs")
	glob := filepath.Join(root, "batches", "duck", "results", "*.jsonl.zst")
	if seen, objects := globIndexes(t, glob); len(objects) != items/shardSize || len(seen) != items {
		t.Errorf("after redrive 1: results/ holds %d objects (%v) with %d distinct items, want %d objects, %d items", len(objects), objects, len(seen), items/shardSize, items)
	} else {
		for i, n := range seen {
			if n != 1 {
				t.Errorf("after redrive 1: item %d is %d times in results/*.jsonl.zst", i, n)
			}
		}
	}
	if code, out = submit(t, dir, "redrive", "--keep-superseded", "duck"); code != cli.ExitWithFailures {
		t.Errorf("redrive --keep-superseded: exit %d, want %d\n%s", code, cli.ExitWithFailures, out)
	}
	wg.Wait()
	if npmErr != nil {
		t.Fatalf("npm ci: %v\n%s", npmErr, npmOut)
	}
	if t.Failed() {
		t.FailNow()
	}
	manifestPath := filepath.Join(root, filepath.FromSlash(manifests.ManifestKey("duck")))
	var m manifests.Manifest
	if data, err := os.ReadFile(manifestPath); err != nil || json.Unmarshal(data, &m) != nil {
		t.Fatalf("manifest: %v", err)
	}
	if m.Redrives != 2 || m.Counts != (manifests.Counts{Items: items, Succeeded: items - int64(len(failing)), Failed: int64(len(failing))}) ||
		m.Failures == nil || len(m.Results) != items/shardSize {
		t.Fatalf("setup: manifest redrives %d, counts %+v, failures %+v, %d results", m.Redrives, m.Counts, m.Failures, len(m.Results))
	}
	objects, err := filepath.Glob(glob)
	if err != nil || len(objects) != 2*len(m.Results) {
		t.Fatalf("setup: results/ holds %d objects (%v), want the %d live ones and as many superseded", len(objects), err, len(m.Results))
	}

	run := func(args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, node, append([]string{"results.mjs"}, args...)...)
		cmd.Env = cleanEnv()
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		if err != nil {
			return stdout.String() + stderr.String(), err
		}
		return stdout.String(), nil
	}
	got, err := run(root, manifestPath)
	if err != nil {
		t.Fatalf("node results.mjs: %v\n%s", err, got)
	}
	t.Logf("results.mjs: %s", got)
	var res recipeResult
	if err := json.Unmarshal([]byte(got), &res); err != nil {
		t.Fatalf("results.mjs printed %q: %v", got, err)
	}
	want := recipeResult{Rows: items, DistinctIndexes: items,
		ByStatus:    map[string]int{"succeeded": items - len(failing), "failed": len(failing)},
		FailedItems: len(failing)}
	if res.Rows != want.Rows || res.DistinctIndexes != want.DistinctIndexes || res.FailedItems != want.FailedItems ||
		len(res.ByStatus) != 2 || res.ByStatus["succeeded"] != want.ByStatus["succeeded"] || res.ByStatus["failed"] != want.ByStatus["failed"] {
		t.Errorf("the recipe read %+v, want %+v", res, want)
	}

	// A missing manifest is an error, not an empty result.
	if out, err := run(root, filepath.Join(root, "batches", "nope", "manifest.json")); err == nil {
		t.Errorf("results.mjs over a missing manifest succeeded: %s", out)
	} else if ee := (*exec.ExitError)(nil); !errors.As(err, &ee) {
		t.Errorf("results.mjs over a missing manifest: %v", err)
	}
}

// globIndexes reads every result object matching glob and counts the
// lines of each index.
func globIndexes(t *testing.T, glob string) (map[int64]int, []string) {
	t.Helper()
	objects, err := filepath.Glob(glob)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int64]int{}
	for _, o := range objects {
		f, err := os.Open(o)
		if err != nil {
			t.Fatal(err)
		}
		zr, err := zjsonl.NewReader(f)
		if err != nil {
			t.Fatal(err)
		}
		for {
			var l manifests.ResultLine
			if err := zr.Decode(&l); err == io.EOF {
				break
			} else if err != nil {
				t.Fatalf("%s: %v", o, err)
			}
			seen[l.Index]++
		}
		zr.Close()
		f.Close()
	}
	return seen, objects
}
