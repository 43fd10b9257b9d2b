package pipeline_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/batchpipe/batchpipe/blobstore"
	"github.com/batchpipe/batchpipe/manifests"
	"github.com/batchpipe/batchpipe/pipeline"
)

// resultObjects lists the objects under a batch's results/, as a glob
// over results/*.jsonl.zst sees them.
func resultObjects(t *testing.T, bt *batch) []blobstore.Attributes {
	t.Helper()
	var out []blobstore.Attributes
	for a, err := range bt.bucket.List(context.Background(), manifests.BatchPrefix(bt.id)+"results/") {
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasSuffix(a.Key, ".jsonl.zst") {
			out = append(out, a)
		}
	}
	return out
}

// TestResultLinesKeys: every result line has the same keys whatever its
// status (output and error, one of them null), and its item's input as
// "input" with ResultsIncludeInput, none without.
func TestResultLinesKeys(t *testing.T) {
	input := makeItems(100, func(i int) string {
		if i%10 == 3 {
			return `,"fail":true`
		}
		return ""
	})
	items := bytes.Split(bytes.TrimSpace(input), []byte("\n"))
	for _, withInput := range []bool{true, false} {
		t.Run(fmt.Sprintf("input=%v", withInput), func(t *testing.T) {
			o := smallOpts("flaky", 20, 10)
			o.ResultsIncludeInput = withInput
			bt := runBatch(t, fileStore(t), fmt.Sprintf("keys-%v", withInput), input, o)
			if bt.err != nil {
				t.Fatal(bt.err)
			}
			m := bt.manifest(t)
			if m.Counts.Failed != 10 {
				t.Fatalf("counts %+v, want 10 failed", m.Counts)
			}
			want := []string{"attempts", "duration_ms", "error", "index", "output", "status"}
			if withInput {
				want = append(want, "input")
				slices.Sort(want)
			}
			n := 0
			for _, r := range m.Results {
				for _, l := range decodeLines[map[string]json.RawMessage](t, readObject(t, bt.bucket, r.Key, r.Size, r.SHA256)) {
					keys := slices.Sorted(func(yield func(string) bool) {
						for k := range l {
							if !yield(k) {
								return
							}
						}
					})
					if !slices.Equal(keys, want) {
						t.Fatalf("line %s has keys %v, want %v", l["index"], keys, want)
					}
					var idx int
					json.Unmarshal(l["index"], &idx)
					failed := string(l["status"]) == `"failed"`
					if failed != (idx%10 == 3) || failed && string(l["output"]) != "null" || !failed && string(l["error"]) != "null" {
						t.Fatalf("line %d: status %s, output %s, error %s", idx, l["status"], l["output"], l["error"])
					}
					if withInput && !bytes.Equal(l["input"], items[idx]) {
						t.Fatalf("line %d: input %s, want %s", idx, l["input"], items[idx])
					}
					n++
				}
			}
			if n != len(items) {
				t.Fatalf("%d lines, want %d", n, len(items))
			}
		})
	}
}

// TestRedriveDeletesSuperseded: once a redrive's manifest is written, the
// result objects it replaced are deleted, so results/*.jsonl.zst holds
// each item once; with KeepSuperseded they stay.
func TestRedriveDeletesSuperseded(t *testing.T) {
	input := makeItems(300, func(i int) string {
		if i%37 == 5 {
			return `,"fail":true`
		}
		return ""
	})
	for _, keep := range []bool{false, true} {
		t.Run(fmt.Sprintf("keep=%v", keep), func(t *testing.T) {
			bt := runBatch(t, fileStore(t), fmt.Sprintf("superseded-%v", keep), input, smallOpts("flaky", 20, 4))
			if bt.err != nil {
				t.Fatal(bt.err)
			}
			m1 := bt.manifest(t)
			var replaced []string // shards with failed items: redriven
			for i, r := range m1.Results {
				if r.Failed > 0 {
					replaced = append(replaced, manifests.ResultKey(bt.id, i))
				}
			}
			if len(replaced) == 0 || len(resultObjects(t, bt)) != len(m1.Results) {
				t.Fatalf("setup: %d shards with failures, %d objects for %d results", len(replaced), len(resultObjects(t, bt)), len(m1.Results))
			}
			redrive(t, bt, func(spec *pipeline.BatchInput) { spec.Options.KeepSuperseded = keep })
			m2 := bt.manifest(t)
			if m2.Redrives != 1 || m2.Counts != m1.Counts {
				t.Fatalf("after redrive: redrives %d, counts %+v (before %+v)", m2.Redrives, m2.Counts, m1.Counts)
			}
			checkAgainstInput(t, bt, m2, func(in json.RawMessage) json.RawMessage {
				var v struct {
					N    int  `json:"n"`
					Fail bool `json:"fail"`
				}
				json.Unmarshal(in, &v)
				if v.Fail {
					return nil
				}
				return json.RawMessage(fmt.Sprintf(`{"double":%d}`, 2*v.N))
			})
			objects := resultObjects(t, bt)
			if keep {
				if len(objects) != len(m2.Results)+len(replaced) {
					t.Fatalf("kept: %d objects under results/, want %d live and %d superseded", len(objects), len(m2.Results), len(replaced))
				}
				for _, k := range replaced {
					if ok, err := blobstore.Exists(context.Background(), bt.bucket, k); !ok || err != nil {
						t.Fatalf("kept: %s is gone (%v)", k, err)
					}
				}
				return
			}
			// What DuckDB's glob over results/*.jsonl.zst reads: every
			// item exactly once.
			seen := make([]int, len(bytes.Split(bytes.TrimSpace(input), []byte("\n"))))
			for _, o := range objects {
				for _, l := range decodeLines[manifests.ResultLine](t, readObject(t, bt.bucket, blobstore.Prefix(bt.bucket)+o.Key, -1, "")) {
					seen[l.Index]++
				}
			}
			for i, n := range seen {
				if n != 1 {
					t.Fatalf("item %d is in %d of the %d objects under results/, want 1", i, n, len(objects))
				}
			}
			if len(objects) != len(m2.Results) {
				t.Fatalf("%d objects under results/, manifest lists %d", len(objects), len(m2.Results))
			}
		})
	}
}
