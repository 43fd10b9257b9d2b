package pipeline

import (
	"os"
	"time"
)

// BATCHPIPE_TEST_CHECKPOINT (a duration) sets how often shards checkpoint
// in this package's tests, e.g. 1ms to run every test's shards through
// parts.
func init() {
	if d, err := time.ParseDuration(os.Getenv("BATCHPIPE_TEST_CHECKPOINT")); err == nil {
		checkpointInterval = d
	}
}

// SetCheckpointInterval sets how often shards checkpoint, for a test; the
// returned function restores it.
func SetCheckpointInterval(d time.Duration) (restore func()) {
	old := checkpointInterval
	checkpointInterval = d
	return func() { checkpointInterval = old }
}
