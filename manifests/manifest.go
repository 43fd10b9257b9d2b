// Package manifests defines batchpipe's manifest format v1 — the public
// contract between a finished batch and whoever reads its results — and the
// store layout of a batch's objects.
//
// A manifest is the JSON object at batches/<id>/manifest.json. It is written
// last, so its presence means the batch finished. It lists every result
// object (zstd JSON lines, one line per item, in input order) and the object
// holding the failed items.
package manifests

import (
	"encoding/json"
	"fmt"
	"time"
)

// Format is the value of Manifest.Format for this version.
const Format = "batchpipe.manifest/v1"

// Batch statuses.
const (
	StatusSucceeded             = "succeeded"
	StatusCompletedWithFailures = "completed_with_failures"
	StatusFailed                = "failed"
	StatusCanceled              = "canceled"
)

// Item statuses in result lines.
const (
	ItemSucceeded = "succeeded"
	ItemFailed    = "failed"
)

// Why a batch stopped before its end (Manifest.StopReason).
const (
	StopBadInput    = "bad_input"    // its input was refused while staging: nothing ran
	StopCanceled    = "canceled"     // cancelled
	StopMaxFailures = "max_failures" // more items failed than its failure limit allows
	StopShardFailed = "shard_failed" // a shard failed beyond retries (say, a worker without its processor)
)

// Manifest is format v1. Keys are object keys within the bucket, exactly as
// an S3 client would use them (the store's prefix included).
type Manifest struct {
	Format  string `json:"format"`
	BatchID string `json:"batch_id"`
	Status  string `json:"status"`
	Error   string `json:"error,omitempty"` // why a failed or canceled batch stopped
	// StopReason classifies Error for programs: one of the Stop* values
	// (absent in manifests written before it, and when the batch ran to
	// its end).
	StopReason string    `json:"stop_reason,omitempty"`
	Processor  string    `json:"processor"`
	Store      string    `json:"store"`
	Input      Input     `json:"input"`
	Counts     Counts    `json:"counts"`
	StartedAt  time.Time `json:"started_at"`
	FinishedAt time.Time `json:"finished_at"`
	Results    []Result  `json:"results"`
	Failures   *Failures `json:"failures"`
	// Redrives counts the redrives that re-ran failed items; this manifest
	// supersedes the earlier ones.
	Redrives int `json:"redrives,omitempty"`
}

// Input describes what the batch read.
type Input struct {
	Source    string `json:"source"`
	Items     int64  `json:"items"`
	Shards    int    `json:"shards"`
	ShardSize int    `json:"shard_size"`
}

// Counts add up: Items = Succeeded + Failed for a finished batch; for a
// failed or canceled one, Items counts only what was processed.
type Counts struct {
	Items     int64 `json:"items"`
	Succeeded int64 `json:"succeeded"`
	Failed    int64 `json:"failed"`
}

// Result is one result object.
type Result struct {
	Key        string `json:"key"`
	FirstIndex int64  `json:"first_index"`
	Items      int64  `json:"items"`
	Succeeded  int64  `json:"succeeded"`
	Failed     int64  `json:"failed"`
	Size       int64  `json:"size"`
	SHA256     string `json:"sha256"`
}

// Failures names the object listing every failed item with its input.
type Failures struct {
	Key   string `json:"key"`
	Items int64  `json:"items"`
}

// ItemError is the error of a failed item.
type ItemError struct {
	Type    string `json:"type"`
	Message string `json:"message"`
}

// ResultLine is one line of a result object. Every line has the keys
// output and error, whatever its status: a succeeded item's error is
// null, a failed item's output is null (lines written before this have
// only the one that applies; they read the same). Input, the item as it
// was submitted, is there only in batches run with
// Options.ResultsIncludeInput.
type ResultLine struct {
	Index      int64           `json:"index"`
	Status     string          `json:"status"`
	Input      json.RawMessage `json:"input,omitempty"`
	Output     json.RawMessage `json:"output"`
	Error      *ItemError      `json:"error"`
	Attempts   int             `json:"attempts"`
	DurationMS int64           `json:"duration_ms"`
}

// FailureLine is one line of the failures object; Input is the item as it
// was submitted, so the file can be resubmitted as it is.
type FailureLine struct {
	Index int64           `json:"index"`
	Input json.RawMessage `json:"input"`
	Error *ItemError      `json:"error"`
}

// Store layout, relative to the store's prefix.

// BatchPrefix is the prefix of every object of a batch.
func BatchPrefix(batchID string) string { return "batches/" + batchID + "/" }

// ManifestKey is where a batch's manifest lives.
func ManifestKey(batchID string) string { return BatchPrefix(batchID) + "manifest.json" }

// FailuresKey is where a batch's failed items live.
func FailuresKey(batchID string) string { return BatchPrefix(batchID) + "failed.jsonl.zst" }

// InputPrefix holds a batch's staged input: batches/<id>/input/<dir>/ for an
// input staged by the library (each submit stages into a directory of its
// own, and the one whose workflow starts owns the id), batches/<id>/input/
// for dir "" (an input staged by a worker, and batches staged before
// staging directories).
func InputPrefix(batchID, dir string) string {
	if dir == "" {
		return BatchPrefix(batchID) + "input/"
	}
	return BatchPrefix(batchID) + "input/" + dir + "/"
}

// InputShardKey is the staged input of one shard.
func InputShardKey(batchID, dir string, shard int) string {
	return fmt.Sprintf("%s%06d.jsonl.zst", InputPrefix(batchID, dir), shard)
}

// InputIndexKey describes the staged input; written after every shard.
func InputIndexKey(batchID, dir string) string { return InputPrefix(batchID, dir) + "index.json" }

// ResultKey is the result object of one shard.
func ResultKey(batchID string, shard int) string {
	return fmt.Sprintf("%sresults/%06d.jsonl.zst", BatchPrefix(batchID), shard)
}

// RedriveResultKey is the result object of a shard re-run by redrive n; it
// replaces ResultKey (or an earlier redrive's) in the new manifest.
func RedriveResultKey(batchID string, shard, n int) string {
	return fmt.Sprintf("%sresults/%06d.r%d.jsonl.zst", BatchPrefix(batchID), shard, n)
}

// CollectedKey marks a batch whose results gc deleted, keeping its input.
func CollectedKey(batchID string) string { return BatchPrefix(batchID) + "collected.json" }

// BatchSpecKey holds the batch's start parameters, for redrive.
func BatchSpecKey(batchID string) string { return BatchPrefix(batchID) + "batch.json" }

// ShardFailuresKey holds one shard's failed items until the batch's
// failures object is assembled from them.
func ShardFailuresKey(batchID string, shard int) string {
	return fmt.Sprintf("%sshards/%06d.failed.jsonl.zst", BatchPrefix(batchID), shard)
}

// ShardReceiptKey is written after a shard's result object: its presence
// means the shard's results are committed.
func ShardReceiptKey(batchID string, shard int) string {
	return fmt.Sprintf("%sshards/%06d.json", BatchPrefix(batchID), shard)
}

// ShardReceiptsPrefix lists every receipt of a batch (and its failure parts).
func ShardReceiptsPrefix(batchID string) string { return BatchPrefix(batchID) + "shards/" }

// PartsPrefix holds the checkpoint parts of a batch's running shards
// (parts/<shard>[.r<redrive>][.p<continuation>]/<seq>.jsonl.zst and
// <seq>.failed.jsonl.zst). A finished shard assembles its parts into its
// result object and deletes them; what is left there belongs to a shard
// that never finished.
func PartsPrefix(batchID string) string { return BatchPrefix(batchID) + "parts/" }

// ValidateBatchID accepts 1 to 200 characters of letters, digits, '.', '_'
// and '-', not starting with '.' or '-': a batch id becomes part of object
// keys and workflow ids, so nothing in it may escape or split a key.
func ValidateBatchID(id string) error {
	if id == "" {
		return fmt.Errorf("batch id is empty")
	}
	if len(id) > 200 {
		return fmt.Errorf("batch id %q is longer than 200 characters", id)
	}
	if id[0] == '.' || id[0] == '-' {
		return fmt.Errorf("batch id %q must start with a letter, digit or '_'", id)
	}
	for i, c := range id {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-'
		if !ok {
			return fmt.Errorf("batch id %q has %q at position %d; use letters, digits, '.', '_' and '-'", id, c, i+1)
		}
	}
	return nil
}

// Latest is schedules/<name>/latest.json: the newest finished batch of a
// schedule, written after that batch's manifest, so a downstream job reads
// one fixed key.
type Latest struct {
	Schedule   string    `json:"schedule"`
	BatchID    string    `json:"batch_id"`
	Manifest   string    `json:"manifest"` // full key, prefix included
	Status     string    `json:"status"`
	FinishedAt time.Time `json:"finished_at"`
}

// LatestKey is where a schedule's Latest lives.
func LatestKey(schedule string) string { return "schedules/" + schedule + "/latest.json" }
