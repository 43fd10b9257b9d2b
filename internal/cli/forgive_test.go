package cli_test

import (
	"context"
	"encoding/json"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/batchpipe/batchpipe/internal/cli"
	"github.com/batchpipe/batchpipe/internal/testinfra"
)

// Tests of "a CLI that forgives": typos of commands, missing arguments,
// --version, help text, JSON lists, schedule specs, and batches found
// through Temporal from another directory.

// A first argument that is no file but close to a command's name is a
// mistyped command (exit 2, naming the command); bare submit and bare
// submit schedule print their usage and exit 2. None of it starts the
// embedded server or writes to the store.
func TestUnknownCommand(t *testing.T) {
	cases := []struct {
		args     []string
		files    []string // created in the directory first
		want     []string // in stderr
		wantNot  []string
		wantCode int
	}{
		{args: []string{"statuss", "foo"}, want: []string{`error: unknown command "statuss" — did you mean "status"?`}},
		{args: []string{"lst"}, want: []string{`unknown command "lst" — did you mean "list"?`}, wantNot: []string{"no such file"}},
		{args: []string{"resluts", "b1"}, want: []string{`did you mean "results"?`}},
		{args: []string{"cancle", "b1"}, want: []string{`did you mean "cancel"?`}},
		{args: []string{"re", "b1"}, want: []string{`did you mean "redrive", "results" or "resume"?`}},
		{args: []string{"--verbose", "stauts", "b1"}, want: []string{`did you mean "status"?`}},
		// Not close to a command: an input file that is missing.
		{args: []string{"x"}, want: []string{"x: no such file"}, wantNot: []string{"unknown command"}},
		{args: []string{"nothere.jsonl"}, want: []string{"no such file"}, wantNot: []string{"unknown command"}},
		{args: []string{"foo", "bar"}, want: []string{"takes one FILE or URL, got 2 arguments", "status"}},
		// A file of that name is an input, whatever it is called.
		{args: []string{"lst"}, files: []string{"lst"}, want: []string{"lst:1: invalid JSON"}, wantNot: []string{"unknown command"}},
		{args: nil, want: []string{"Usage:", "submit [flags] FILE|URL", "Available Commands:", "give a FILE or URL"}},
		{args: []string{"schedule"}, want: []string{"Usage:", "submit schedule [command]", "needs a command: create, delete"},
			wantNot: []string{"submit schedule [flags]"}},
		{args: []string{"schedule", "foo"}, want: []string{`unknown command "foo" for "submit schedule"; its commands are create, delete, describe, list`}},
		{args: []string{"schedule", "lsit"}, want: []string{`unknown command "lsit" for "submit schedule" — did you mean "list"?`}},
		{args: []string{"schedule", "--nope"}, want: []string{"unknown flag: --nope"}},
	}
	for _, tc := range cases {
		t.Run(strings.Join(tc.args, " ")+"_"+strings.Join(tc.files, ""), func(t *testing.T) {
			dir := t.TempDir()
			for _, f := range tc.files {
				writeLines(t, filepath.Join(dir, f), [][]byte{[]byte("not json")})
			}
			r := submit(t, dir, nil, tc.args...)
			if r.code != cli.ExitUsage {
				t.Errorf("exit code %d, want %d\n%s", r.code, cli.ExitUsage, r)
			}
			for _, w := range tc.want {
				if !strings.Contains(r.stderr, w) {
					t.Errorf("stderr does not contain %q\n%s", w, r)
				}
			}
			for _, w := range tc.wantNot {
				if strings.Contains(r.stderr, w) {
					t.Errorf("stderr contains %q\n%s", w, r)
				}
			}
			if r.stdout != "" {
				t.Errorf("stdout is not empty\n%s", r)
			}
			if files := storeFiles(t, dir); len(files) > 0 {
				t.Errorf("left objects in the store: %v", files)
			}
			assertNoEmbeddedServer(t, dir)
		})
	}
}

// submit --version and worker --version print the module, its version and
// the VCS revision (or say that the build has none), and exit 0.
func TestVersion(t *testing.T) {
	var out, errOut testinfra.Buffer
	code := cli.Worker(context.Background(), &cli.IO{Stdin: strings.NewReader(""), Stdout: &out, Stderr: &errOut, Getenv: noEnv, Dir: t.TempDir()}, []string{"--version"})
	worker := submitResult{code: code, stdout: out.String(), stderr: errOut.String()}
	for name, r := range map[string]submitResult{"submit": submit(t, t.TempDir(), nil, "--version"), "worker": worker} {
		if r.code != cli.ExitOK || !strings.HasPrefix(r.stdout, name+" github.com/batchpipe/batchpipe ") ||
			!strings.Contains(r.stdout, "revision ") || !strings.Contains(r.stdout, "go1.") || strings.Count(r.stdout, "\n") != 1 {
			t.Errorf("%s --version: want one line naming the module, revision and Go version, exit 0\n%s", name, r)
		}
	}
}

// Every command's --help renders each flag as --name VALUE where VALUE is
// a type (string, int, …) or a placeholder in capitals: a backquoted word
// in a usage string is taken by pflag for the value's name, which once
// rendered `results --failed submit --from-failures`.
func TestHelpRendersRight(t *testing.T) {
	flagLine := regexp.MustCompile(`^\s+(?:-\w, )?--([a-z0-9-]+)(?: (\S+))?(?:\s{2,}|$)`)
	placeholder := regexp.MustCompile(`^[A-Z][A-Z0-9_:|%]*$`)
	types := []string{"string", "int", "int64", "uint", "float", "float64", "duration", "stringArray", "strings", "ints"}
	run := func(worker bool, args []string) string {
		var out, errOut testinfra.Buffer
		o := &cli.IO{Stdin: strings.NewReader(""), Stdout: &out, Stderr: &errOut, Getenv: noEnv, Dir: t.TempDir()}
		var code int
		if worker {
			code = cli.Worker(context.Background(), o, append(args, "--help"))
		} else {
			code = cli.Submit(context.Background(), o, append(args, "--help"))
		}
		if code != cli.ExitOK || errOut.String() != "" {
			t.Errorf("%v --help: exit %d, stderr %q", args, code, errOut.String())
		}
		return out.String()
	}
	seen := 0
	var check func(worker bool, path []string)
	check = func(worker bool, path []string) {
		help := run(worker, slices.Clone(path))
		seen++
		what := strings.Join(append([]string{map[bool]string{true: "worker", false: "submit"}[worker]}, path...), " ")
		if strings.Contains(help, "`") {
			t.Errorf("%s --help shows a backquote:\n%s", what, help)
		}
		section := ""
		for l := range strings.Lines(help) {
			l = strings.TrimRight(l, "\n")
			if l != "" && !strings.HasPrefix(l, " ") {
				section = l
				continue
			}
			switch section {
			case "Available Commands:":
				if f := strings.Fields(l); len(f) > 0 && f[0] != "help" && f[0] != "completion" {
					check(worker, append(slices.Clone(path), f[0]))
				}
			case "Flags:", "Global Flags:":
				m := flagLine.FindStringSubmatch(l)
				if m == nil {
					if strings.TrimSpace(l) != "" {
						t.Errorf("%s --help: cannot read flag line %q", what, l)
					}
					continue
				}
				if v := m[2]; v != "" && !slices.Contains(types, v) && !placeholder.MatchString(v) {
					t.Errorf("%s --help: flag --%s renders with value name %q: %q", what, m[1], v, l)
				}
			}
		}
	}
	check(false, nil)
	check(true, nil)
	if seen < 15 {
		t.Errorf("checked the help of %d commands only", seen)
	}
}

// list --json prints [] when there are no batches, not null.
func TestListJSONEmpty(t *testing.T) {
	dir := t.TempDir()
	r := submit(t, dir, nil, "list", "--json")
	if r.code != cli.ExitOK || strings.TrimSpace(r.stdout) != "[]" {
		t.Fatalf("list --json with no batches: want [], exit 0\n%s", r)
	}
}

// With a Temporal service configured: a batch submitted from one directory
// is found from another (its workflow input names its store) by status,
// results, cancel and redrive; a cron spec the server refuses is bad usage
// (exit 2), and so is a schedule that exists already.
func TestForgivingWithTemporal(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a Temporal server")
	}
	here, elsewhere := t.TempDir(), t.TempDir()
	addr, _ := startDevWorker(t, here)
	items := exampleItems(5, "far")
	writeLines(t, filepath.Join(here, "in.jsonl"), items)
	if r := submitTo(t, here, addr, "--batch-id", "far", "--shard-size", "2", "in.jsonl"); r.code != cli.ExitOK {
		t.Fatalf("submit: %s", r)
	}
	note := "batch far is in store file://" + blobsDir(here)

	r := submitTo(t, elsewhere, addr, "status", "far")
	wantExit(t, "status from elsewhere", r, cli.ExitOK, note)
	if !strings.Contains(r.stdout, "batch far: succeeded") || !strings.Contains(r.stdout, "5/5 done") {
		t.Errorf("status from elsewhere:\n%s", r)
	}
	r = submitTo(t, elsewhere, addr, "status", "far", "--json")
	var st struct{ Status string }
	if json.Unmarshal([]byte(r.stdout), &st); r.code != cli.ExitOK || st.Status != "succeeded" {
		t.Errorf("status --json from elsewhere:\n%s", r)
	}
	r = submitTo(t, elsewhere, addr, "results", "far")
	wantExit(t, "results from elsewhere", r, cli.ExitOK, note)
	checkResultOutput(t, "results from elsewhere", r.stdout, openResults(t, here, "far"))
	r = submitTo(t, elsewhere, addr, "redrive", "far")
	wantExit(t, "redrive from elsewhere", r, cli.ExitOK, "nothing to redrive")
	r = submitTo(t, elsewhere, addr, "cancel", "far")
	wantExit(t, "cancel from elsewhere", r, cli.ExitUsage, "not running")
	// Nothing was made in the other directory's store by reading.
	if files := storeFiles(t, elsewhere); len(files) > 0 {
		t.Errorf("reading from elsewhere wrote %v there", files)
	}
	// Unknown to both: as before.
	r = submitTo(t, elsewhere, addr, "status", "nowhere")
	wantExit(t, "status of an unknown batch", r, cli.ExitUsage, `unknown batch "nowhere"`)
	r = submitTo(t, elsewhere, addr, "results", "nowhere")
	wantExit(t, "results of an unknown batch", r, cli.ExitUsage, "nowhere")
	// An explicit --store that lacks the batch is followed too, saying so.
	other := t.TempDir()
	r = submitTo(t, elsewhere, addr, "results", "far", "--store", "file://"+other)
	wantExit(t, "results --store without the batch", r, cli.ExitOK, note, "not in file://"+other)

	// Schedules.
	in := "file://" + filepath.Join(here, "in.jsonl")
	r = submitTo(t, here, addr, "schedule", "create", "bad", in, "--cron", "every tuesday")
	wantExit(t, "schedule create with a bad cron spec", r, cli.ExitUsage, "creating schedule bad")
	r = submitTo(t, here, addr, "schedule", "create", "nightly", in, "--cron", "0 2 * * *")
	wantExit(t, "schedule create", r, cli.ExitOK)
	r = submitTo(t, here, addr, "schedule", "create", "nightly", in, "--cron", "0 3 * * *")
	wantExit(t, "schedule create again", r, cli.ExitUsage, "schedule nightly exists already")
	r = submitTo(t, here, addr, "schedule", "delete", "nightly")
	wantExit(t, "schedule delete", r, cli.ExitOK)
}
