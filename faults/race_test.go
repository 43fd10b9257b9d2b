package faults_test

import (
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/batchpipe/batchpipe/blobstore"
	"github.com/batchpipe/batchpipe/layout"
	"github.com/batchpipe/batchpipe/manifests"
)

// Cases 4c and 4d: two submits race for one --batch-id with different
// inputs. Before the fix both exited 0 with a manifest mixing the two
// inputs (one server), or the loser exited 1 and the winner's results came
// from the loser's input (embedded default). Now each submit stages into a
// staging directory of its own and the workflow start claims the id: the
// loser deletes its staging and is refused (exit 2), and the batch is the
// winner's, whole.
func init() {
	i := slices.IndexFunc(allCases, func(ci caseInfo) bool { return ci.id == "4b" })
	allCases = slices.Insert(allCases, i+1,
		caseInfo{"4c", "two submits at once with one --batch-id and different inputs, 20 rounds (two `submit` processes, one `worker --dev`)"},
		caseInfo{"4d", "two submits at once with one --batch-id and different inputs (embedded default, same directory)"},
	)
}

const (
	raceItems     = 300 // per input; both inputs have as many, so only the content tells them apart
	raceShardSize = 50
	raceRounds    = 20 // each case; the embedded case's take ~5-10 s each (a server start per submit)
)

// raceSide is one of the two racing submits of a round.
type raceSide struct {
	name string // "A" or "B"
	file string // input file, relative to the working directory
	in   [][]byte
	p    *proc
	r    run
}

// raceOutcome is what one round saw.
type raceOutcome struct {
	winner, loser *raceSide
	firstWon      bool   // the submit started first won
	loserHow      string // "different input" or "directory in use"
	staged        string // the staging directory left
}

// raceRound runs two submits of id at once in dir, one with input A and
// one with input B (the order of their start alternating by round), and
// checks the round: one winner (exit 0, or 3 where allow3), one loser
// (exit 2 with one of loserMsgs), the manifest exactly the winner's (full
// check), its source the winner's file, one staging directory left, the
// winner's.
func raceRound(c *C, b blobstore.Bucket, storeDir string, round int, dir, store, id string, environ []string, loserMsgs map[string]string, allow3 bool, extra ...string) raceOutcome {
	c.Helper()
	sides := []*raceSide{
		{name: "A", file: id + "-A.jsonl", in: items(raceItems, id+"-A", nil)},
		{name: "B", file: id + "-B.jsonl", in: items(raceItems, id+"-B", nil)},
	}
	for _, s := range sides {
		writeItems(c, filepath.Join(dir, s.file), s.in)
	}
	order := sides
	if round%2 == 0 {
		order = []*raceSide{sides[1], sides[0]}
	}
	for _, s := range order {
		args := append(slices.Clone(extra), "--batch-id", id, "--processor", "echo", "--shard-size", strconv.Itoa(raceShardSize), s.file)
		s.p = start(c, "submit "+s.name, dir, environ, submitBin, args...)
	}
	for _, s := range order {
		s.r = s.p.result(3 * time.Minute)
	}
	var o raceOutcome
	for i, s := range order {
		other := order[1-i]
		if s.r.code == 0 || allow3 && s.r.code == 3 {
			if o.winner != nil {
				c.Fatalf("round %d: both submits of %s exited 0 with different inputs:\n--- A: %s\n--- B: %s", round, id, sides[0].r, sides[1].r)
			}
			o.winner, o.loser, o.firstWon = s, other, i == 0
		}
	}
	if o.winner == nil {
		c.Fatalf("round %d: no submit of %s won:\n--- A: %s\n--- B: %s", round, id, sides[0].r, sides[1].r)
	}
	l := o.loser.r
	if l.code != 2 {
		c.Fatalf("round %d: the loser (submit %s) exited %d, want 2:\n%s", round, o.loser.name, l.code, l)
	}
	for msg, how := range loserMsgs {
		if strings.Contains(l.stderr, msg) {
			o.loserHow = how
		}
	}
	if o.loserHow == "" {
		c.Fatalf("round %d: the loser (submit %s) exited 2 without saying why (want one of %q):\n%s", round, o.loser.name, slices.Sorted(maps.Keys(loserMsgs)), l)
	}
	if o.loserHow == "different input" && !strings.Contains(l.stderr, o.winner.file) {
		c.Errorf("round %d: the loser's refusal does not name the batch's input %s:\n%s", round, o.winner.file, l.stderr)
	}
	if !strings.Contains(o.winner.r.stdout, fmt.Sprintf("batch %s succeeded: %d items", id, raceItems)) {
		c.Errorf("round %d: the winner (submit %s) did not report the batch as succeeded:\n%s", round, o.winner.name, o.winner.r)
	}

	ck := checkBatch(c, store, id, o.winner.in, want{output: echoOutput})
	if ck.m.Input.Source != o.winner.file {
		c.Fatalf("round %d: manifest input source %q, want the winner's %q", round, ck.m.Input.Source, o.winner.file)
	}
	dirs := stagingDirs(c, b, id)
	if len(dirs) != 1 {
		c.Fatalf("round %d: %d input staging directories under %s (%v), want 1: the winner's", round, len(dirs), manifests.InputPrefix(id, ""), dirs)
	}
	o.staged = dirs[0]
	if ents, err := os.ReadDir(filepath.Join(storeDir, filepath.FromSlash(manifests.InputPrefix(id, "")))); err != nil || len(ents) != 1 || ents[0].Name() != o.staged {
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		c.Fatalf("round %d: on disk, %s holds %v (%v), want only the winner's staging directory %s", round, manifests.InputPrefix(id, ""), names, err, o.staged)
	}
	st, err := layout.ReadStaged(context.Background(), b, id, o.staged)
	if err != nil {
		c.Fatalf("round %d: the staging directory left, %s: %v", round, o.staged, err)
	}
	if st.Source != o.winner.file || st.Items != raceItems {
		c.Fatalf("round %d: the staging directory left, %s, holds %s (%d items), want the winner's %s", round, o.staged, st.Source, st.Items, o.winner.file)
	}
	return o
}

// stagingDirs lists the staging directories holding objects under the
// batch's input/ (an object right under input/, as staged before staging
// directories, counts as "" ).
func stagingDirs(t testing.TB, b blobstore.Bucket, id string) []string {
	t.Helper()
	prefix := manifests.InputPrefix(id, "")
	seen := map[string]bool{}
	for a, err := range b.List(context.Background(), prefix) {
		if err != nil {
			t.Fatalf("listing %s: %v", prefix, err)
		}
		d, _, ok := strings.Cut(strings.TrimPrefix(a.Key, prefix), "/")
		if !ok {
			d = ""
		}
		seen[d] = true
	}
	return slices.Sorted(maps.Keys(seen))
}

// raceTally summarises the rounds for the table.
type raceTally struct {
	rounds, aWon, firstWon int
	how                    map[string]int
	loserSecs, winnerSecs  []float64
}

func (t *raceTally) add(o raceOutcome) {
	t.rounds++
	if o.winner.name == "A" {
		t.aWon++
	}
	if o.firstWon {
		t.firstWon++
	}
	if t.how == nil {
		t.how = map[string]int{}
	}
	t.how[o.loserHow]++
	t.loserSecs = append(t.loserSecs, o.loser.r.dur.Seconds())
	t.winnerSecs = append(t.winnerSecs, o.winner.r.dur.Seconds())
}

func (t *raceTally) String() string {
	var how []string
	for _, k := range slices.Sorted(maps.Keys(t.how)) {
		how = append(how, fmt.Sprintf("%d %s", t.how[k], k))
	}
	return fmt.Sprintf("%d rounds: A won %d, B %d (the submit started first won %d); losers: %s, exit 2 after %.1f–%.1f s; winners exited after %.1f–%.1f s",
		t.rounds, t.aWon, t.rounds-t.aWon, t.firstWon, strings.Join(how, ", "),
		slices.Min(t.loserSecs), slices.Max(t.loserSecs), slices.Min(t.winnerSecs), slices.Max(t.winnerSecs))
}

func TestRaceDifferentInputs(t *testing.T) {
	parent(t)
	t.Run("server", func(t *testing.T) {
		c := track(t, "4c")
		dir := c.TempDir()
		port, err := freeBase()
		if err != nil {
			c.Fatal(err)
		}
		storeDir := filepath.Join(dir, "store")
		store := fileStore(c, storeDir)
		startDev(c, "worker --dev", dir, port, filepath.Join(dir, "state"), false, env(), "--store", store)
		addr := "127.0.0.1:" + strconv.Itoa(port)
		tc, err := dial(addr)
		if err != nil {
			c.Fatal(err)
		}
		defer tc.Close()
		b := openStore(c, store)
		environ := env(temporalEnv(addr)...)
		msgs := map[string]string{"already exists with a different input": "different input"}
		var tally raceTally
		t0 := time.Now()
		for round := 1; round <= raceRounds; round++ {
			id := fmt.Sprintf("race-4c-%02d", round)
			o := raceRound(c, b, storeDir, round, dir, store, id, environ, msgs, false, "--store", store)
			if k := executionsSettle(c, tc, fmt.Sprintf("WorkflowId = '%s'", id), 1); k != 1 {
				c.Fatalf("round %d: %d workflow executions with id %s, want 1", round, k, id)
			}
			tally.add(o)
		}
		c.Note("one `worker --dev`, two submits of one id with different %d-item inputs (echo, shards of %d) started together, TEMPORAL_ADDRESS set; %s; every round: exactly one exit 0 and one exit 2 naming the winner's input, 1 workflow execution, the manifest exactly the winner's items (checked in full, every index once), its input source the winner's file, 1 staging directory left (the winner's); %.0f s for the rounds",
			raceItems, raceShardSize, tally.String(), time.Since(t0).Seconds())
	})
	t.Run("embedded", func(t *testing.T) {
		c := track(t, "4d")
		dir := c.TempDir()
		storeDir := filepath.Join(dir, ".batchpipe", "blobs") // the default store
		store := fileStore(c, storeDir)                       // (submit creates it too)
		msgs := map[string]string{
			"another submit is running in this directory": "directory in use",
			"already exists with a different input":       "different input",
		}
		var tally raceTally
		t0 := time.Now()
		b := openStore(c, store)
		for round := 1; round <= raceRounds; round++ {
			id := fmt.Sprintf("race-4d-%02d", round)
			o := raceRound(c, b, storeDir, round, dir, store, id, env(), msgs, true)
			tally.add(o)
		}
		c.Note("two submits of one id with different %d-item inputs (echo, shards of %d) started together in one directory, no Temporal configured; %s; every round: exactly one winner (exit 0) and one exit 2, the manifest exactly the winner's items (checked in full), its input source the winner's file, 1 staging directory left (the winner's); %.0f s for the rounds",
			raceItems, raceShardSize, tally.String(), time.Since(t0).Seconds())
	})
}
