package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/batchpipe/batchpipe/internal/testinfra"
)

// An internal test: it runs the diff command whether or not submit lists
// it yet (through submit when it does), after real batches run by submit
// on the embedded server and the file store.

// diffProcessor answers each item with the item itself, or fails it
// permanently when it holds "fail":true.
const diffProcessor = `while IFS= read -r line; do
  case $line in
    *'"fail":true'*) printf '{"error":{"message":"asked to fail","permanent":true}}\n' ;;
    *) printf '{"output":%s}\n' "$line" ;;
  esac
done
`

type diffRun struct {
	code           int
	stdout, stderr string
}

func (r diffRun) String() string {
	return fmt.Sprintf("exit %d\n--- stdout:\n%s--- stderr:\n%s", r.code, r.stdout, r.stderr)
}

// runIn runs submit's root command (args[0] "diff" runs the diff command)
// in dir with an empty environment.
func runIn(t *testing.T, dir string, args ...string) diffRun {
	t.Helper()
	var stdout, stderr testinfra.Buffer
	o := &IO{Stdin: strings.NewReader(""), Stdout: &stdout, Stderr: &stderr, Getenv: func(string) string { return "" }, Dir: dir}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var code int
	if root := newSubmitCommand(ctx, o); args[0] == "diff" && !hasSubcommand(root, "diff") {
		cmd := newDiffCommand(o)
		cmd.SetArgs(args[1:])
		cmd.SetOut(o.Stdout)
		cmd.SetErr(o.Stderr)
		code = exitCode(o, cmd.ExecuteContext(ctx))
	} else {
		code = Submit(ctx, o, args)
	}
	r := diffRun{code: code, stdout: stdout.String(), stderr: stderr.String()}
	t.Logf("submit %s: exit %d", strings.Join(args, " "), code)
	return r
}

func hasSubcommand(root *cobra.Command, name string) bool {
	return slices.ContainsFunc(root.Commands(), func(c *cobra.Command) bool { return c.Name() == name })
}

// night writes items (JSON objects) to <id>.jsonl and submits them as
// batch id through the diff processor.
func night(t *testing.T, dir, script, id string, items []string) {
	t.Helper()
	path := filepath.Join(dir, id+".jsonl")
	if err := os.WriteFile(path, []byte(strings.Join(items, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	want := ExitOK
	if slices.ContainsFunc(items, func(s string) bool { return strings.Contains(s, `"fail":true`) }) {
		want = ExitWithFailures
	}
	r := runIn(t, dir, "--batch-id", id, "--shard-size", "4", "--processor", "exec:sh "+script, id+".jsonl")
	if r.code != want {
		t.Fatalf("submit %s: %s", id, r)
	}
}

type diffDoc struct {
	A, B struct {
		BatchID  string `json:"batch_id"`
		Manifest string `json:"manifest"`
		Status   string `json:"status"`
		Counts   struct{ Items, Succeeded, Failed int64 }
	}
	Key           string
	Same          bool
	Changes       map[string]int64
	StatusChanged []diffDocItem `json:"status_changed"`
	OutputChanged []diffDocItem `json:"output_changed"`
	Added         []diffDocItem
	Removed       []diffDocItem
}

type diffDocItem struct {
	Index int64
	Key   json.RawMessage
	A, B  *struct {
		Index  int64
		Status string
		Output json.RawMessage
		Error  *struct{ Type, Message string }
	}
}

// parseDiff decodes diff --json output, checking that every list is a
// list (never null).
func parseDiff(t *testing.T, out string) diffDoc {
	t.Helper()
	var raw map[string]json.RawMessage
	if err := json.Unmarshal([]byte(out), &raw); err != nil {
		t.Fatalf("diff --json output is not a JSON object: %v\n%s", err, out)
	}
	for _, k := range []string{"status_changed", "output_changed", "added", "removed"} {
		if v := string(raw[k]); !strings.HasPrefix(v, "[") {
			t.Errorf("%s is %s, want a list", k, v)
		}
	}
	var d diffDoc
	if err := json.Unmarshal([]byte(out), &d); err != nil {
		t.Fatal(err)
	}
	return d
}

func indexes(items []diffDocItem) []int64 {
	out := []int64{}
	for _, it := range items {
		out = append(out, it.Index)
	}
	return out
}

func TestDiffCommand(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a Temporal server")
	}
	dir := t.TempDir()
	script := filepath.Join(dir, "proc.sh")
	if err := os.WriteFile(script, []byte(diffProcessor), 0o755); err != nil {
		t.Fatal(err)
	}
	item := func(i int, extra string) string { return fmt.Sprintf(`{"id":"k%d","v":%d%s}`, i, i, extra) }
	var n1, n2 []string
	for i := range 12 {
		a, b := item(i, ""), item(i, "")
		switch i {
		case 1:
			b = `{"id":"k1","v":100}` // output changed
		case 3:
			a = item(i, `,"fail":true`) // failed -> succeeded
		case 5:
			b = item(i, `,"fail":true`) // succeeded -> failed
		case 7:
			b = `{"v":7.0,  "id":"k7"}` // the same JSON value
		case 9:
			a, b = item(i, `,"fail":true`), item(i, `,"fail":true`) // failed both nights
		}
		n1, n2 = append(n1, a), append(n2, b)
	}
	// Night 3: night 2's items in another order, and one more.
	n3 := slices.Clone(n2)
	slices.Reverse(n3)
	n3 = append(n3[:6:6], append([]string{item(12, "")}, n3[6:]...)...)
	night(t, dir, script, "night-1", n1)
	night(t, dir, script, "night-2", n2)
	night(t, dir, script, "night-3", n3)

	// The same batch: exit 0.
	r := runIn(t, dir, "diff", "night-1", "night-1")
	if r.code != ExitOK || !strings.Contains(r.stdout, "the batches are the same") || !strings.Contains(r.stdout, "unchanged: 12 (2 of them failed in both)") {
		t.Errorf("diff of a batch with itself: %s", r)
	}
	r = runIn(t, dir, "diff", "--json", "night-1", "night-1")
	if d := parseDiff(t, r.stdout); r.code != ExitOK || !d.Same || d.Changes["unchanged"] != 12 || len(d.StatusChanged)+len(d.OutputChanged)+len(d.Added)+len(d.Removed) != 0 {
		t.Errorf("diff --json of a batch with itself: %s", r)
	}

	// Two nights by index, B by its manifest URL.
	url := "file://" + filepath.Join(dir, ".batchpipe", "blobs", "batches", "night-2", "manifest.json")
	r = runIn(t, dir, "diff", "--json", "night-1", url)
	d := parseDiff(t, r.stdout)
	if r.code != ExitFailed || d.Same {
		t.Fatalf("diff night-1 night-2: %s", r)
	}
	if got := indexes(d.StatusChanged); !slices.Equal(got, []int64{3, 5}) {
		t.Errorf("status_changed %v, want [3 5]", got)
	}
	if got := indexes(d.OutputChanged); !slices.Equal(got, []int64{1}) {
		t.Errorf("output_changed %v, want [1]", got)
	}
	if len(d.Added)+len(d.Removed) != 0 || d.Changes["unchanged"] != 9 || d.Changes["failed_both"] != 1 {
		t.Errorf("added %v, removed %v, changes %v", d.Added, d.Removed, d.Changes)
	}
	if d.A.BatchID != "night-1" || d.B.BatchID != "night-2" || d.B.Manifest != url || d.A.Status != "completed_with_failures" ||
		d.A.Counts.Items != 12 || d.A.Counts.Failed != 2 || d.B.Counts.Succeeded != 10 {
		t.Errorf("sides %+v %+v", d.A, d.B)
	}
	if len(d.StatusChanged) == 2 {
		f, s := d.StatusChanged[0], d.StatusChanged[1]
		if f.A.Status != "failed" || f.A.Error == nil || f.A.Error.Message != "asked to fail" || string(f.A.Output) != "null" ||
			f.B.Status != "succeeded" || string(f.B.Output) != `{"id":"k3","v":3}` || f.B.Error != nil {
			t.Errorf("item 3: %+v %+v", f.A, f.B)
		}
		if s.A.Status != "succeeded" || s.B.Status != "failed" || s.B.Error.Message != "asked to fail" {
			t.Errorf("item 5: %+v %+v", s.A, s.B)
		}
	}
	if len(d.OutputChanged) == 1 {
		if o := d.OutputChanged[0]; string(o.A.Output) != `{"id":"k1","v":1}` || string(o.B.Output) != `{"id":"k1","v":100}` || o.Key != nil {
			t.Errorf("item 1: %+v %+v", o.A, o.B)
		}
	}

	r = runIn(t, dir, "diff", "night-1", "night-2")
	for _, want := range []string{"status      completed_with_failures   completed_with_failures", "failed      2                         2",
		"status changed: 2\n  index 3: failed: asked to fail -> succeeded {\"id\":\"k3\",\"v\":3}\n  index 5: succeeded",
		"output changed: 1\n  index 1: {\"id\":\"k1\",\"v\":1} -> {\"id\":\"k1\",\"v\":100}\n",
		"added (only in B): 0\nremoved (only in A): 0\nunchanged: 9 (1 of them failed in both)\n"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("diff night-1 night-2 lacks %q: %s", want, r)
		}
	}
	if r.code != ExitFailed {
		t.Errorf("diff night-1 night-2: exit %d, want 1", r.code)
	}

	// Reordered inputs: by key only the new item differs.
	r = runIn(t, dir, "diff", "--json", "--key", "id", "night-2", "night-3")
	d = parseDiff(t, r.stdout)
	if r.code != ExitFailed || d.Key != "id" || len(d.StatusChanged)+len(d.OutputChanged)+len(d.Removed) != 0 || len(d.Added) != 1 ||
		string(d.Added[0].Key) != `"k12"` || d.Added[0].Index != 6 || d.Changes["unchanged"] != 12 {
		t.Errorf("diff --key id night-2 night-3: %s", r)
	}
	r = runIn(t, dir, "diff", "--json", "--key", "id", "night-1", "night-3")
	d = parseDiff(t, r.stdout)
	if len(d.StatusChanged) != 2 || string(d.StatusChanged[0].Key) != `"k3"` || d.StatusChanged[0].A.Index != 3 || d.StatusChanged[0].B.Index != 9 ||
		len(d.OutputChanged) != 1 || string(d.OutputChanged[0].Key) != `"k1"` {
		t.Errorf("diff --key id night-1 night-3: %s", r)
	}
	// By index nearly everything moved.
	r = runIn(t, dir, "diff", "--json", "night-2", "night-3")
	if d := parseDiff(t, r.stdout); r.code != ExitFailed || len(d.Added) != 1 || d.Added[0].Index != 12 || len(d.OutputChanged) < 8 {
		t.Errorf("diff night-2 night-3 by index: %s", r)
	}

	// Trouble: exit 2, nothing on stdout.
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"diff", "night-1", "night-9"}, "B: no manifest for batch night-9"},
		{[]string{"diff", "--json", "night-1", "file://" + dir + "/batches/x/manifest.json"}, "B: no manifest for batch x"},
		{[]string{"diff", "night-1", "file://" + dir + "/nowhere/batches/x/manifest.json"}, "does not exist"},
		{[]string{"diff", "night-1", "s3://bucket/not-a-manifest"}, "bad manifest URL"},
		{[]string{"diff", "--key", "nope", "night-1", "night-2"}, `A (night-1): item 0: its input has no field "nope" to match by`},
		{[]string{"diff", "--key", "", "night-1", "night-2"}, "--key is empty"},
		{[]string{"diff", "night-1"}, "accepts 2 arg(s)"},
		{[]string{"diff", "night-1", "bad/id"}, "bad/id"},
	} {
		r := runIn(t, dir, tc.args...)
		if r.code != ExitUsage || r.stdout != "" || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("%v: want exit 2, no stdout and %q on stderr: %s", tc.args, tc.want, r)
		}
	}
}
