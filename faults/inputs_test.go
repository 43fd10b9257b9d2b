package faults_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/batchpipe/batchpipe/manifests"
)

// Case 8: bad inputs beyond those of the pipeline issue, through the submit
// binary. inputs/inputs_test.go covers the parsing of each (BOM, NUL,
// nesting, overlong lines) and internal/cli's TestSubmitBadInput and
// TestSubmitBadUsage cover the exit code 2 path in process for invalid JSON,
// oversized items, shard size 0, concurrency -1 and the batch id "../x";
// here each runs in a real process against a real server, is checked for
// time, memory and for leaving nothing behind, and accepted inputs go
// through a whole batch.

// rejected checks a submit refused its input or flags: exit 2 within
// quickLimit with every message, nothing staged, no workflow.
func rejected(c *C, what string, r run, storeDir, id string, msgs ...string) string {
	c.Helper()
	return rejectedWithin(c, quickLimit, what, r, storeDir, id, msgs...)
}

func rejectedWithin(c *C, limit time.Duration, what string, r run, storeDir, id string, msgs ...string) string {
	c.Helper()
	if r.timedOut || r.code != 2 || r.dur > limit {
		c.Errorf("%s: want exit 2 within %v: %s", what, limit, r)
	}
	for _, m := range msgs {
		if !strings.Contains(r.stderr, m) {
			c.Errorf("%s: stderr lacks %q: %s", what, m, r)
		}
	}
	if n := storeObjects(storeDir); n > 0 {
		c.Errorf("%s: %d objects left in the store", what, n)
	}
	if id != "" {
		if _, tc := sharedServer(c); executions(c, tc, fmt.Sprintf("WorkflowId = '%s'", id)) != 0 {
			c.Errorf("%s: a workflow %s was started", what, id)
		}
	}
	return fmt.Sprintf("%s: exit 2 in %.1f s", what, r.dur.Seconds())
}

func TestBadInputs(t *testing.T) {
	parent(t)
	addr, _ := sharedServer(t)
	const queue = "faults-8"
	startWorker(t, "worker", t.TempDir(), addr, queue, nil, allowFile...) // every case's store is file://
	environ := env(temporalEnv(addr)...)
	// setup gives a case a directory and an empty file store.
	setup := func(c *C) (dir, storeDir, store string) {
		dir = c.TempDir()
		storeDir = filepath.Join(dir, "store")
		return dir, storeDir, fileStore(c, storeDir)
	}
	sub := func(c *C, dir, store string, args ...string) run {
		c.Helper()
		return submit(c, dir, environ, 5*time.Minute, append([]string{"--store", store, "--task-queue", queue}, args...)...)
	}

	t.Run("2GiB_line", func(t *testing.T) {
		c := track(t, "8a")
		dir, storeDir, store := setup(c)
		// 200 MiB of real text, then zeros (a sparse file) up to 2 GiB + 1
		// byte, and no newline anywhere.
		path := filepath.Join(dir, "huge.jsonl")
		f, err := os.Create(path)
		if err != nil {
			c.Fatal(err)
		}
		f.WriteString(`{"arg1":"`)
		chunk := bytes.Repeat([]byte("x"), 1<<20)
		for range 200 {
			if _, err := f.Write(chunk); err != nil {
				c.Fatal(err)
			}
		}
		if err := f.Truncate(2<<30 + 1); err != nil {
			c.Fatal(err)
		}
		f.Close()
		r := sub(c, dir, store, "--batch-id", "huge-8a", "huge.jsonl")
		// Reading 2 GiB to estimate the item count, then 65 MiB of the
		// line before giving up: seconds, but allow for a loaded machine.
		note := rejectedWithin(c, time.Minute, "submit huge.jsonl", r, storeDir, "huge-8a", "huge.jsonl:1: item is larger than", "--max-item-size")
		if r.maxRSS > 512<<20 {
			c.Errorf("submit used %d MiB of memory reading the 2 GiB line", r.maxRSS>>20)
		}
		c.Note("%s, peak RSS %d MiB; message: %q; nothing staged, no workflow", note, r.maxRSS>>20, firstLine(r.stderr))
	})

	t.Run("BOM", func(t *testing.T) {
		c := track(t, "8b")
		dir, _, store := setup(c)
		in := items(50, "bom", nil)
		var b bytes.Buffer
		b.WriteString("\xef\xbb\xbf")
		for _, l := range in {
			b.Write(l)
			b.WriteString("\r\n")
		}
		os.WriteFile(filepath.Join(dir, "bom.jsonl"), b.Bytes(), 0o644)
		r := sub(c, dir, store, "--batch-id", "bom-8b", "--shard-size", "20", "bom.jsonl")
		if r.code != 0 {
			c.Fatalf("submit bom.jsonl: %s", r)
		}
		ck := checkBatch(c, store, "bom-8b", in, want{})
		c.Note("a UTF-8 BOM and CRLF line ends: the BOM is dropped, item 0 is read as it should be; exit 0, %d items succeeded; manifest checked in full", ck.m.Counts.Succeeded)
	})

	t.Run("NUL", func(t *testing.T) {
		c := track(t, "8c")
		dir, storeDir, store := setup(c)
		good := items(2, "nul", nil)
		files := []struct{ name, data, want string }{
			{"nul.jsonl", string(good[0]) + "\n" + string(good[1]) + "\n" + "{\"arg1\":\"a\x00b\",\"arg2\":\"c\"}\n", "nul.jsonl:3: NUL byte at column 11"},
			{"zeros.jsonl", string(make([]byte, 4096)), "zeros.jsonl:1: NUL byte at column 1"},
			{"utf16.jsonl", "\xff\xfe{\x00\"\x00a\x00\"\x00:\x001\x00}\x00\n\x00", "utf16.jsonl:1: the file is UTF-16 encoded"},
		}
		var notes []string
		for i, f := range files {
			os.WriteFile(filepath.Join(dir, f.name), []byte(f.data), 0o644)
			id := fmt.Sprintf("nul-8c-%d", i)
			r := sub(c, dir, store, "--batch-id", id, "--shard-size", "1", f.name)
			notes = append(notes, rejected(c, "submit "+f.name, r, storeDir, id, f.want))
		}
		c.Note("%s; nothing staged, no workflow", strings.Join(notes, "; "))
	})

	t.Run("deep_JSON", func(t *testing.T) {
		c := track(t, "8d")
		dir, storeDir, store := setup(c)
		// deep is an item whose nesting depth (objects and arrays) is d.
		deep := func(i, d int) []byte {
			return []byte(fmt.Sprintf(`{"arg1":"d%d","arg2":"x","deep":%s%s}`, i, strings.Repeat("[", d-1), strings.Repeat("]", d-1)))
		}
		over := [][]byte{items(1, "deep", nil)[0], deep(1, 10001)}
		writeItems(c, filepath.Join(dir, "over.jsonl"), over)
		r := sub(c, dir, store, "--batch-id", "deep-8d-over", "--shard-size", "1", "over.jsonl")
		notes := []string{rejected(c, "10,001 levels", r, storeDir, "deep-8d-over", "over.jsonl:2: invalid JSON at column", "nested too deeply")}

		// Within the limit the whole batch runs, echo and example alike.
		for _, tc := range []struct {
			depth     int
			processor string
		}{{9999, "echo"}, {9999, "example"}, {10000, "example"}, {10000, "echo"}} {
			id := fmt.Sprintf("deep-8d-%d-%s", tc.depth, tc.processor)
			in := [][]byte{items(1, "deep", nil)[0], deep(1, tc.depth), items(1, "deep2", nil)[0]}
			writeItems(c, filepath.Join(dir, id+".jsonl"), in)
			r := sub(c, dir, store, "--batch-id", id, "--processor", tc.processor, id+".jsonl")
			what := fmt.Sprintf("an item %d levels deep, processor %s", tc.depth, tc.processor)
			if r.code == 2 && strings.Contains(r.stderr, "nested too deeply") {
				notes = append(notes, what+": refused (exit 2)")
				continue
			}
			if r.code != 0 {
				c.Fatalf("%s: %s", what, r)
			}
			// A result line wraps the output one level deeper than the
			// item: at 10,000 levels it is past encoding/json's limit.
			ctx := context.Background()
			batch, err := manifests.Open(ctx, openStore(c, store), id)
			if err != nil {
				c.Fatal(err)
			}
			if err := batch.Verify(ctx); err != nil && strings.Contains(err.Error(), "exceeded max depth") {
				c.Note("%s", strings.Join(notes, "; "))
				c.Bug("%s: submit accepted it and the batch succeeded (exit 0), but its result line is 10,001 levels deep and cannot be read back: Verify/results fail with %q. inputs accepts 10,000 levels (inputs/jsonl.go); result and failure lines add one. Fix: refuse items deeper than 9,999 levels in inputs (a line's item sits one level down)", what, err)
			}
			w := want{}
			if tc.processor == "echo" {
				w.output = echoOutput
			}
			checkBatch(c, store, id, in, w)
			notes = append(notes, what+": exit 0, manifest checked in full")
		}
		c.Note("%s", strings.Join(notes, "; "))
	})

	t.Run("batch_ids", func(t *testing.T) {
		c := track(t, "8e")
		dir, storeDir, store := setup(c)
		writeItems(c, filepath.Join(dir, "in.jsonl"), items(10, "ids", nil))
		var notes []string
		for _, id := range []string{"../x", "a/b", "..", "x/../../y", ".hidden", "-x", "a b", "é", strings.Repeat("a", 201)} {
			r := sub(c, dir, store, "--batch-id", id, "in.jsonl")
			rejected(c, fmt.Sprintf("--batch-id %q", id), r, storeDir, "", "--batch-id")
			if files, _ := filepath.Glob(filepath.Join(dir, "*")); len(files) != 2 {
				c.Errorf("--batch-id %q: files appeared beside the store: %v", id, files)
			}
		}
		notes = append(notes, "9 ids (../x, a/b, .., x/../../y, .hidden, -x, \"a b\", é, 201 chars) refused by submit: exit 2, nothing written anywhere")
		for _, cmd := range []string{"status", "results", "cancel", "redrive"} {
			r := sub(c, dir, store, cmd, "../x")
			rejected(c, cmd+" ../x", r, storeDir, "", "../x")
		}
		notes = append(notes, "status/results/cancel/redrive ../x: exit 2")

		// An id reused for another input is refused; the batch is untouched.
		in := items(10, "dup", nil)
		writeItems(c, filepath.Join(dir, "dup.jsonl"), in)
		if r := sub(c, dir, store, "--batch-id", "dup-8e", "dup.jsonl"); r.code != 0 {
			c.Fatalf("first submit of dup-8e: %s", r)
		}
		manifest := filepath.Join(storeDir, filepath.FromSlash(manifests.ManifestKey("dup-8e")))
		before, _ := os.ReadFile(manifest)
		r := sub(c, dir, store, "--batch-id", "dup-8e", "in.jsonl")
		if r.code != 2 || !strings.Contains(r.stderr, "already exists with a different input") {
			c.Errorf("reusing dup-8e for another input: %s", r)
		}
		after, _ := os.ReadFile(manifest)
		if !bytes.Equal(before, after) {
			c.Errorf("reusing dup-8e for another input changed its manifest")
		}
		checkBatch(c, store, "dup-8e", in, want{})
		notes = append(notes, "an id reused for another input: exit 2, the batch untouched (checked in full)")
		c.Note("%s", strings.Join(notes, "; "))

		// An empty id must not silently become a generated one.
		r = sub(c, dir, store, "--batch-id", "", "in.jsonl")
		if r.code != 2 {
			c.Bug(`--batch-id "" is taken as no --batch-id: exit %d, a new batch with a generated id ran (%s). A script passing --batch-id "$ID" with $ID unset starts a fresh batch each time instead of resuming. internal/cli/submit.go runSubmit: "if batchID == \"\"" cannot tell an empty flag from an absent one. Fix: use cmd.Flags().Changed("batch-id") and refuse an empty value (exit 2)`,
				r.code, strings.TrimSpace(strings.SplitN(r.stdout, "\n", 2)[0]))
		}
	})

	t.Run("100k_tiny_items", func(t *testing.T) {
		c := track(t, "8f")
		dir, _, store := setup(c)
		const n = 100_000
		in := make([][]byte, n)
		for i := range in {
			in[i] = []byte(fmt.Sprintf(`{"i":%d}`, i))
		}
		writeItems(c, filepath.Join(dir, "tiny.jsonl"), in)
		r := sub(c, dir, store, "--batch-id", "tiny-8f", "--processor", "echo", "tiny.jsonl")
		if r.code != 0 {
			c.Fatalf("submit: %s", r)
		}
		ck := checkBatch(c, store, "tiny-8f", in, want{output: echoOutput})
		c.Note("exit 0 in %.1f s (%d shards of %d, peak RSS %d MiB); manifest checked in full: every one of the 100,000 indexes once, output = input",
			r.dur.Seconds(), ck.m.Input.Shards, ck.m.Input.ShardSize, r.maxRSS>>20)
	})

	t.Run("shard_size", func(t *testing.T) {
		c := track(t, "8g")
		dir, storeDir, store := setup(c)
		in := items(30, "ss", nil)
		writeItems(c, filepath.Join(dir, "in.jsonl"), in)
		var notes []string
		for _, v := range []string{"0", "-3"} {
			r := sub(c, dir, store, "--batch-id", "ss-8g", "--shard-size", v, "in.jsonl")
			notes = append(notes, rejected(c, "--shard-size "+v, r, storeDir, "ss-8g", "--shard-size must be at least 1"))
		}
		r := sub(c, dir, store, "--batch-id", "ss-8g-big", "--shard-size", "1000000", "in.jsonl")
		if r.code != 0 {
			c.Fatalf("--shard-size 1000000 on 30 items: %s", r)
		}
		ck := checkBatch(c, store, "ss-8g-big", in, want{})
		if ck.m.Input.Shards != 1 || len(ck.m.Results) != 1 {
			c.Errorf("--shard-size 1000000 on 30 items: %d shards, %d results", ck.m.Input.Shards, len(ck.m.Results))
		}
		notes = append(notes, "--shard-size 1000000 on 30 items: one shard of 30, exit 0, manifest checked in full")
		c.Note("%s", strings.Join(notes, "; "))
	})

	t.Run("negative_knobs", func(t *testing.T) {
		c := track(t, "8h")
		dir, storeDir, store := setup(c)
		writeItems(c, filepath.Join(dir, "in.jsonl"), items(10, "neg", nil))
		var notes []string
		for _, tc := range []struct{ flag, value, want string }{
			{"--concurrency", "-1", "--concurrency must be at least 1"},
			{"--concurrency", "0", "--concurrency must be at least 1"},
			{"--item-parallelism", "-2", "--item-parallelism must be at least 1"},
			{"--item-attempts", "0", "--item-attempts must be at least 1"},
			{"--item-timeout", "-1s", "--item-timeout must be positive"},
			{"--max-item-size", "-5", "--max-item-size must be at least 1"},
			{"--max-failures", "-1", "--max-failures"},
		} {
			r := sub(c, dir, store, "--batch-id", "neg-8h", tc.flag, tc.value, "in.jsonl")
			rejected(c, tc.flag+" "+tc.value, r, storeDir, "neg-8h", tc.want)
			notes = append(notes, tc.flag+" "+tc.value)
		}
		c.Note("%s: each exit 2 at once naming the flag; nothing staged, no workflow", strings.Join(notes, ", "))
	})
}
