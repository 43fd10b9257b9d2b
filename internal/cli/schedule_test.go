package cli_test

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/batchpipe/batchpipe/internal/cli"
	"github.com/batchpipe/batchpipe/manifests"
	"github.com/batchpipe/batchpipe/pipeline"
)

// TestScheduleNameLimit: schedule create accepts a name only if the batch
// ids it derives (NAME-<UTC nominal time>) are valid batch ids. The limit is
// found from manifests.ValidateBatchID here, so the two cannot drift apart.
// Names that pass get as far as connecting to Temporal, which the test
// environment does not configure.
func TestScheduleNameLimit(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "in.jsonl"), []byte(`{"arg1":"a","arg2":"b"}`+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	maxID := 0
	for n := 1; n < 10000; n++ {
		if manifests.ValidateBatchID(strings.Repeat("a", n)) != nil {
			break
		}
		maxID = n
	}
	nominal := time.Date(2026, 11, 25, 2, 0, 0, 0, time.UTC)
	suffix := len(pipeline.ScheduledBatchID("", nominal))
	if suffix != len("-20261125T020000Z") {
		t.Fatalf("scheduled batch id suffix is %d characters: %s", suffix, pipeline.ScheduledBatchID("x", nominal))
	}
	limit := maxID - suffix
	create := func(name string) (string, submitResult) {
		what := "schedule create " + name
		if len(name) > 20 {
			what = "schedule create <" + strconv.Itoa(len(name)) + " characters>"
		}
		return what, submit(t, dir, nil, "schedule", "create", "--cron", "0 2 * * *", "--", name, "in.jsonl")
	}

	for _, name := range []string{"nightly", "team_a.nightly-2", "N", strings.Repeat("x", limit)} {
		if err := manifests.ValidateBatchID(pipeline.ScheduledBatchID(name, nominal)); err != nil {
			t.Fatalf("the test's valid name %q makes an invalid batch id: %v", name, err)
		}
		what, r := create(name)
		wantExit(t, what, r, cli.ExitUsage, "schedules need a Temporal server")
		if strings.Contains(r.stderr, "schedule name") {
			t.Errorf("%s: the name is refused:\n%s", what, r)
		}
	}

	long := strings.Repeat("x", limit+1)
	if manifests.ValidateBatchID(pipeline.ScheduledBatchID(long, nominal)) == nil {
		t.Fatalf("a name of %d characters still makes valid batch ids: the limit is not %d", limit+1, limit)
	}
	for _, name := range []string{long, strings.Repeat("y", maxID), strings.Repeat("z", 1000)} {
		what, r := create(name)
		wantExit(t, what, r, cli.ExitUsage, "schedule name", "limit of "+strconv.Itoa(limit))
	}

	for _, name := range []string{"", ".hidden", "-dash", "a b", "a/b", "../x", "nächtlich", "a:b"} {
		what, r := create(name)
		wantExit(t, what, r, cli.ExitUsage, "schedule name")
	}
}
