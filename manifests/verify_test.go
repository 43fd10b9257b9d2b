package manifests_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/batchpipe/batchpipe/blobstore"
	"github.com/batchpipe/batchpipe/manifests"
)

// The batch every corruption starts from: 100 items in 5 objects of 20
// (first indexes 0, 20, 40, 60, 80); items 3, 13, …, 93 failed.
var corruptBase = spec{items: 100, objects: 5, failEvery: 10}

func TestVerifyCatchesCorruption(t *testing.T) {
	ctx := context.Background()
	type env struct {
		t *testing.T
		b blobstore.Bucket
		m *manifests.Manifest
	}
	// Helpers for the table.
	getObj := func(e env, key string) []byte {
		data, err := blobstore.ReadAll(ctx, e.b, rel(e.t, e.b, key))
		if err != nil {
			e.t.Fatal(err)
		}
		return data
	}
	putObj := func(e env, key string, data []byte) {
		if err := e.b.Put(ctx, rel(e.t, e.b, key), bytes.NewReader(data)); err != nil {
			e.t.Fatal(err)
		}
	}
	save := func(e env) { putManifest(e.t, e.b, *e.m) }
	resultKey := func(j int) func(m manifests.Manifest) string {
		return func(m manifests.Manifest) string { return m.Results[j].Key }
	}
	failuresKey := func(m manifests.Manifest) string { return m.Failures.Key }
	manifestKey := func(m manifests.Manifest) string { return "pre/fix/" + manifests.ManifestKey(m.BatchID) }
	failLine := func(i int) manifests.FailureLine {
		return manifests.FailureLine{Index: int64(i), Input: inputFor(i), Error: &manifests.ItemError{Type: "error", Message: "made up"}}
	}

	for _, tc := range []struct {
		name     string
		mutate   func(e env)
		after    func(b *manifests.Batch) // edits the opened manifest in memory
		key      func(m manifests.Manifest) string
		problem  string // substring of the problem; may use %[1]s for the original sha256 of object 3
		notFound bool   // the error matches blobstore.ErrNotFound
	}{
		{name: "flipped byte", key: resultKey(3), problem: "sha256 mismatch (manifest %[1]s, stored ",
			mutate: func(e env) {
				data := getObj(e, e.m.Results[3].Key)
				data[len(data)/2] ^= 0x40
				putObj(e, e.m.Results[3].Key, data)
			}},
		{name: "truncated", key: resultKey(3), problem: "size mismatch (manifest ",
			mutate: func(e env) {
				data := getObj(e, e.m.Results[3].Key)
				putObj(e, e.m.Results[3].Key, data[:len(data)-3])
			}},
		{name: "missing object", key: resultKey(2), problem: "missing: the manifest lists it but mem://", notFound: true,
			mutate: func(e env) {
				if err := e.b.Delete(ctx, rel(e.t, e.b, e.m.Results[2].Key)); err != nil {
					e.t.Fatal(err)
				}
			}},
		{name: "duplicate index", key: resultKey(2), problem: "line 6: duplicate index 44 (want 45)",
			mutate: func(e env) {
				rewriteResult(e.t, e.b, e.m, 2, func(ls []manifests.ResultLine) []manifests.ResultLine { ls[5].Index = 44; return ls })
			}},
		{name: "index from an earlier object", key: resultKey(2), problem: "line 1: index 7 is before this object's first_index 40",
			mutate: func(e env) {
				rewriteResult(e.t, e.b, e.m, 2, func(ls []manifests.ResultLine) []manifests.ResultLine { ls[0].Index = 7; return ls })
			}},
		{name: "gap", key: resultKey(2), problem: "line 6: index 46, want 45: index 45 is missing",
			mutate: func(e env) {
				rewriteResult(e.t, e.b, e.m, 2, func(ls []manifests.ResultLine) []manifests.ResultLine { return slices.Delete(ls, 5, 6) })
			}},
		{name: "object short of lines", key: resultKey(1), problem: "19 lines but the manifest lists 20 items: index 39 is missing",
			mutate: func(e env) {
				rewriteResult(e.t, e.b, e.m, 1, func(ls []manifests.ResultLine) []manifests.ResultLine { return ls[:19] })
			}},
		{name: "object with an extra line", key: resultKey(1), problem: "line 21 (index 40): more lines than the 20 items the manifest lists",
			mutate: func(e env) {
				rewriteResult(e.t, e.b, e.m, 1, func(ls []manifests.ResultLine) []manifests.ResultLine {
					return append(ls, corruptBase.lineFor(40))
				})
			}},
		{name: "status counts of an object", key: resultKey(0), problem: "17 succeeded and 3 failed lines, but the manifest lists 18 succeeded and 2 failed",
			mutate: func(e env) {
				rewriteResult(e.t, e.b, e.m, 0, func(ls []manifests.ResultLine) []manifests.ResultLine {
					ls[0].Status, ls[0].Error, ls[0].Output = manifests.ItemFailed, &manifests.ItemError{Type: "error", Message: "x"}, nil
					return ls
				})
			}},
		{name: "unknown line status", key: resultKey(0), problem: `line 1 (index 0): unknown status "ok"`,
			mutate: func(e env) {
				rewriteResult(e.t, e.b, e.m, 0, func(ls []manifests.ResultLine) []manifests.ResultLine { ls[0].Status = "ok"; return ls })
			}},
		{name: "failed line without error", key: resultKey(0), problem: "line 4 (index 3): status failed without an error",
			mutate: func(e env) {
				rewriteResult(e.t, e.b, e.m, 0, func(ls []manifests.ResultLine) []manifests.ResultLine { ls[3].Error = nil; return ls })
			}},
		{name: "not zstd", key: resultKey(4), problem: "does not decode as zstd",
			mutate: func(e env) {
				data := []byte(`{"index":80}` + "\n")
				putObj(e, e.m.Results[4].Key, data)
				e.m.Results[4].Size, e.m.Results[4].SHA256 = sizeSum(data)
				save(e)
			}},
		{name: "not JSON lines", key: resultKey(4), problem: "does not decode as zstd JSON lines: zjsonl: line 1: invalid character",
			mutate: func(e env) {
				data := compress(e.t, "not json")
				putObj(e, e.m.Results[4].Key, data)
				e.m.Results[4].Size, e.m.Results[4].SHA256 = sizeSum(data)
				save(e)
			}},
		{name: "counts do not add up", key: manifestKey, problem: "counts do not add up: succeeded 91 + failed 10 = 101, but items is 100",
			mutate: func(e env) { e.m.Counts.Succeeded++; save(e) }},
		{name: "counts differ from objects", key: manifestKey, problem: "result objects hold 100 items (90 succeeded, 10 failed) but counts say 100 (89, 11)",
			mutate: func(e env) { e.m.Counts.Succeeded--; e.m.Counts.Failed++; e.m.Failures.Items++; save(e) }},
		{name: "entry counts", key: resultKey(1), problem: "manifest entry 1: succeeded 18 + failed 2 = 20, but items is 21",
			mutate: func(e env) { e.m.Results[1].Items++; save(e) }},
		{name: "entry first_index gap", key: resultKey(3), problem: "manifest entry 3: first_index 61, want 60: index 60 is in no result object",
			mutate: func(e env) { e.m.Results[3].FirstIndex++; save(e) }},
		{name: "entry first_index overlap", key: resultKey(3), problem: "manifest entry 3: first_index 55 overlaps the previous object, which ends at index 59: indexes 55..59 are listed twice",
			mutate: func(e env) { e.m.Results[3].FirstIndex = 55; save(e) }},
		{name: "entry sha256 malformed", key: resultKey(0), problem: `manifest entry 0: sha256 "abc" is not 64 hex digits`,
			mutate: func(e env) { e.m.Results[0].SHA256 = "abc"; save(e) }},
		{name: "object missing from the manifest", key: manifestKey, problem: "status completed_with_failures but counts.items is 80 and input.items 100",
			mutate: func(e env) {
				r := e.m.Results[4]
				e.m.Results = e.m.Results[:4]
				e.m.Counts.Items -= r.Items
				e.m.Counts.Succeeded -= r.Succeeded
				e.m.Counts.Failed -= r.Failed
				e.m.Failures.Items -= r.Failed
				save(e)
			}},
		{name: "status succeeded with failures", key: manifestKey, problem: "status succeeded but 10 items failed",
			mutate: func(e env) { e.m.Status = manifests.StatusSucceeded; save(e) }},
		{name: "unknown status", key: manifestKey, problem: `unknown status "done"`,
			mutate: func(e env) { e.m.Status = "done"; save(e) }},
		{name: "failures null", key: manifestKey, problem: "10 items failed but failures is null",
			mutate: func(e env) { e.m.Failures = nil; save(e) }},
		{name: "failures.items", key: manifestKey, problem: "failures.items is 9 but counts.failed 10",
			mutate: func(e env) { e.m.Failures.Items = 9; save(e) }},
		{name: "key outside the store", key: resultKey(0), problem: `key is outside the store mem://`,
			mutate: func(e env) { e.m.Results[0].Key = "elsewhere/batches/batch-1/results/000000.jsonl.zst"; save(e) }},
		{name: "wrong batch id", key: manifestKey, problem: `batch_id is "other" but the manifest is stored as batch "batch-1"'s`,
			after: func(b *manifests.Batch) { b.Manifest.BatchID = "other" }},
		{name: "wrong format", key: manifestKey, problem: `format "batchpipe.manifest/v0", want "batchpipe.manifest/v1"`,
			after: func(b *manifests.Batch) { b.Manifest.Format = "batchpipe.manifest/v0" }},
		{name: "failures object missing", key: failuresKey, problem: "missing: the manifest lists it", notFound: true,
			mutate: func(e env) {
				if err := e.b.Delete(ctx, rel(e.t, e.b, e.m.Failures.Key)); err != nil {
					e.t.Fatal(err)
				}
			}},
		{name: "failures lack an item", key: failuresKey, problem: "failed item 23 (in pre/fix/batches/batch-1/results/000001.jsonl.zst) is missing",
			mutate: func(e env) {
				rewriteFailures(e.t, e.b, e.m, func(ls []manifests.FailureLine) []manifests.FailureLine { return slices.Delete(ls, 2, 3) })
			}},
		{name: "failures lack the last item", key: failuresKey, problem: "failed item 93 (in pre/fix/batches/batch-1/results/000004.jsonl.zst) is missing",
			mutate: func(e env) {
				rewriteFailures(e.t, e.b, e.m, func(ls []manifests.FailureLine) []manifests.FailureLine { return ls[:9] })
			}},
		{name: "failures list an item that succeeded", key: failuresKey, problem: "line 4: index 24 did not fail (pre/fix/batches/batch-1/results/000001.jsonl.zst says so)",
			mutate: func(e env) {
				rewriteFailures(e.t, e.b, e.m, func(ls []manifests.FailureLine) []manifests.FailureLine { return slices.Insert(ls, 3, failLine(24)) })
			}},
		{name: "failures replace an item", key: failuresKey, problem: "line 3: index 22 did not fail",
			mutate: func(e env) {
				rewriteFailures(e.t, e.b, e.m, func(ls []manifests.FailureLine) []manifests.FailureLine { ls[2] = failLine(22); return ls })
			}},
		{name: "failures list an item twice", key: failuresKey, problem: "line 4: index 23 comes after index 23: failed items must be listed once each, in input order",
			mutate: func(e env) {
				rewriteFailures(e.t, e.b, e.m, func(ls []manifests.FailureLine) []manifests.FailureLine { return slices.Insert(ls, 3, ls[2]) })
			}},
		{name: "failures out of order", key: failuresKey, problem: "line 2: index 3 comes after index 13",
			mutate: func(e env) {
				rewriteFailures(e.t, e.b, e.m, func(ls []manifests.FailureLine) []manifests.FailureLine { ls[0], ls[1] = ls[1], ls[0]; return ls })
			}},
		{name: "failures beyond the input", key: failuresKey, problem: "line 11: index 150 is in no result object",
			mutate: func(e env) {
				rewriteFailures(e.t, e.b, e.m, func(ls []manifests.FailureLine) []manifests.FailureLine { return append(ls, failLine(150)) })
			}},
		{name: "failures with another error", key: failuresKey, problem: `line 4 (index 33): error (error: "changed") differs from the result line's (error: "item 33 broke")`,
			mutate: func(e env) {
				rewriteFailures(e.t, e.b, e.m, func(ls []manifests.FailureLine) []manifests.FailureLine {
					ls[3].Error = &manifests.ItemError{Type: "error", Message: "changed"}
					return ls
				})
			}},
		{name: "failures without input", key: failuresKey, problem: "line 1 (index 3): no input",
			mutate: func(e env) {
				rewriteFailures(e.t, e.b, e.m, func(ls []manifests.FailureLine) []manifests.FailureLine { ls[0].Input = nil; return ls })
			}},
		{name: "failures not decodable", key: failuresKey, problem: "does not decode as zstd JSON lines of failed items: zjsonl: line 1: json: cannot unmarshal array",
			mutate: func(e env) {
				data := compress(e.t, "[1,2]")
				putObj(e, e.m.Failures.Key, data)
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, _ := memBucket(t, "pre/fix")
			m := writeBatch(t, b, corruptBase)
			orig := m.Results[3].SHA256
			if tc.mutate != nil {
				tc.mutate(env{t, b, &m})
			}
			batch, err := manifests.Open(ctx, b, "batch-1")
			if err != nil {
				t.Fatal(err)
			}
			if tc.after != nil {
				tc.after(batch)
			}
			err = batch.Verify(ctx)
			var ve *manifests.VerifyError
			if !errors.As(err, &ve) {
				t.Fatalf("Verify = %v, want a *VerifyError", err)
			}
			problem := tc.problem
			if strings.Contains(problem, "%[1]s") {
				problem = fmt.Sprintf(problem, orig)
			}
			if want := tc.key(m); ve.Key != want || !strings.Contains(ve.Problem, problem) {
				t.Fatalf("Verify = %v\nwant key %s and a problem containing %q", err, want, problem)
			}
			if !strings.HasPrefix(err.Error(), ve.Key+": ") {
				t.Fatalf("message %q does not start with the key", err)
			}
			if errors.Is(err, blobstore.ErrNotFound) != tc.notFound {
				t.Fatalf("errors.Is(%v, ErrNotFound) = %v", err, !tc.notFound)
			}
			t.Log(err)
		})
	}
}

// TestVerifyReportsFirstBadObject corrupts two objects: the first in
// manifest order is named, however many objects are read at once.
func TestVerifyReportsFirstBadObject(t *testing.T) {
	ctx := context.Background()
	b, _ := memBucket(t, "")
	m := writeBatch(t, b, spec{items: 2000, objects: 40, failEvery: 33})
	for _, j := range []int{31, 12} {
		if err := b.Delete(ctx, m.Results[j].Key); err != nil {
			t.Fatal(err)
		}
	}
	for _, conc := range []int{1, 3, 8, 64} {
		batch, err := manifests.Open(ctx, b, "batch-1")
		if err != nil {
			t.Fatal(err)
		}
		batch.VerifyConcurrency = conc
		var ve *manifests.VerifyError
		if err := batch.Verify(ctx); !errors.As(err, &ve) || ve.Key != m.Results[12].Key {
			t.Fatalf("concurrency %d: Verify = %v, want object 12 named", conc, err)
		}
	}
}

func TestVerifyFileStore(t *testing.T) {
	ctx := context.Background()
	b, u := fileBucket(t)
	m := writeBatch(t, b, spec{items: 300, objects: 6, failEvery: 25})
	batch, err := manifests.OpenURL(ctx, u+"/batches/batch-1/manifest.json")
	if err != nil {
		t.Fatal(err)
	}
	defer batch.Close()
	if err := batch.Verify(ctx); err != nil {
		t.Fatal(err)
	}
	data, err := blobstore.ReadAll(ctx, b, m.Results[5].Key)
	if err != nil {
		t.Fatal(err)
	}
	data[7] ^= 1
	if err := b.Put(ctx, m.Results[5].Key, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	want := m.Results[5].Key + ": sha256 mismatch (manifest " + m.Results[5].SHA256 + ", stored "
	if err := batch.Verify(ctx); err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Fatalf("Verify = %v, want %q…", err, want)
	}
}

// A failed or canceled batch lists the shards that finished: gaps are
// allowed, overlaps are not.
func TestVerifyIncompleteBatch(t *testing.T) {
	ctx := context.Background()
	for _, status := range []string{manifests.StatusFailed, manifests.StatusCanceled} {
		b, _ := memBucket(t, "p")
		m := writeBatch(t, b, spec{items: 100, objects: 5, failEvery: 10, status: status, skip: []int{2, 4}})
		if m.Counts.Items != 60 || m.Input.Items != 100 {
			t.Fatalf("counts %+v", m.Counts)
		}
		batch, err := manifests.Open(ctx, b, "batch-1")
		if err != nil {
			t.Fatal(err)
		}
		var got []int64
		for l, err := range batch.Results(ctx) {
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, l.Index)
		}
		if len(got) != 60 || got[39] != 39 || got[40] != 60 {
			t.Fatalf("indexes %v", got)
		}
		if err := batch.Verify(ctx); err != nil {
			t.Fatalf("%s: Verify = %v", status, err)
		}
	}

	// The same gap in a batch that claims to have finished is an error.
	b, _ := memBucket(t, "p")
	m := writeBatch(t, b, spec{items: 100, objects: 5, failEvery: 10, status: manifests.StatusCompletedWithFailures, skip: []int{2}})
	m.Counts.Items = 100 // claim every item
	m.Counts.Succeeded += 20
	putManifest(t, b, m)
	batch, err := manifests.Open(ctx, b, "batch-1")
	if err != nil {
		t.Fatal(err)
	}
	want := m.Results[2].Key + ": manifest entry 2: first_index 60, want 40: indexes 40..59 are in no result object"
	if err := batch.Verify(ctx); err == nil || err.Error() != want {
		t.Fatalf("Verify = %v, want %s", err, want)
	}
}

func TestVerifyCancelled(t *testing.T) {
	b, _ := memBucket(t, "")
	writeBatch(t, b, spec{items: 500, objects: 50})
	batch, err := manifests.Open(context.Background(), b, "batch-1")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err = batch.Verify(ctx)
	var ve *manifests.VerifyError
	if err == nil || errors.As(err, &ve) {
		t.Fatalf("Verify on a cancelled context = %v, want a plain error", err)
	}
}

// TestVerifyOtherBatchesObjects: a manifest that lists another batch's
// objects fails, naming the key, even when those objects are intact and
// match the manifest's sizes, checksums and counts byte for byte.
func TestVerifyOtherBatchesObjects(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name, prefix, other string
		edit                func(m, o *manifests.Manifest) string // returns the key Verify must name
		problem             string
	}{
		{name: "result object", prefix: "pre/fix", other: "batch-2",
			edit:    func(m, o *manifests.Manifest) string { m.Results[2].Key = o.Results[2].Key; return m.Results[2].Key },
			problem: `key is not one of batch batch-1's objects (their keys start with "pre/fix/batches/batch-1/")`},
		{name: "result object of a batch whose id extends this one's", prefix: "", other: "batch-10",
			edit:    func(m, o *manifests.Manifest) string { m.Results[0].Key = o.Results[0].Key; return m.Results[0].Key },
			problem: `key is not one of batch batch-1's objects (their keys start with "batches/batch-1/")`},
		{name: "failures object", prefix: "pre/fix", other: "batch-2",
			edit:    func(m, o *manifests.Manifest) string { m.Failures.Key = o.Failures.Key; return m.Failures.Key },
			problem: `key is not one of batch batch-1's objects`},
		{name: "result key climbing out with ..", prefix: "pre/fix", other: "batch-2",
			edit: func(m, o *manifests.Manifest) string {
				m.Results[4].Key = "pre/fix/batches/batch-1/../batch-2/results/000004.jsonl.zst"
				return m.Results[4].Key
			},
			problem: `not a valid object key`},
		{name: "result key outside batches/", prefix: "pre/fix", other: "batch-2",
			edit: func(m, o *manifests.Manifest) string {
				m.Results[1].Key = "pre/fix/elsewhere.jsonl.zst"
				return m.Results[1].Key
			},
			problem: `key is not one of batch batch-1's objects`},
		{name: "the batch prefix itself", prefix: "pre/fix", other: "batch-2",
			edit: func(m, o *manifests.Manifest) string {
				m.Failures.Key = "pre/fix/batches/batch-1/"
				return m.Failures.Key
			},
			problem: `key is not one of batch batch-1's objects`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, _ := memBucket(t, tc.prefix)
			m := writeBatch(t, b, corruptBase)
			s := corruptBase
			s.id = tc.other
			o := writeBatch(t, b, s)
			for _, id := range []string{"batch-1", tc.other} {
				batch, err := manifests.Open(ctx, b, id)
				if err != nil {
					t.Fatal(err)
				}
				if err := batch.Verify(ctx); err != nil {
					t.Fatalf("%s before the edit: Verify = %v", id, err)
				}
			}
			key := tc.edit(&m, &o)
			putManifest(t, b, m)
			batch, err := manifests.Open(ctx, b, "batch-1")
			if err != nil {
				t.Fatal(err)
			}
			err = batch.Verify(ctx)
			var ve *manifests.VerifyError
			if !errors.As(err, &ve) || ve.Key != key || !strings.Contains(ve.Problem, tc.problem) {
				t.Fatalf("Verify = %v\nwant key %s and a problem containing %q", err, key, tc.problem)
			}
			t.Log(err)
		})
	}
}
