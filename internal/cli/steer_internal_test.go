package cli

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// runSteer runs submit's root with the steering commands added (as
// submit.go registers them) in dir, in embedded mode.
func runSteer(t *testing.T, dir string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	o := &IO{Stdin: strings.NewReader(""), Stdout: &out, Stderr: &errOut, Getenv: func(string) string { return "" }, Dir: dir}
	root := newSubmitCommand(ctx, o)
	if c, _, err := root.Find([]string{"pause"}); err != nil || c == root {
		root.AddCommand(newSteerCommands(o)...)
	}
	root.SetArgs(args)
	root.SetIn(o.Stdin)
	root.SetOut(o.Stdout)
	root.SetErr(o.Stderr)
	code = exitCode(o, root.ExecuteContext(ctx))
	t.Logf("submit %s: exit %d\n%s%s", strings.Join(args, " "), code, out.String(), errOut.String())
	return code, out.String(), errOut.String()
}

func wantCode(t *testing.T, what string, code int, stderr string, want int, says ...string) {
	t.Helper()
	if code != want {
		t.Errorf("%s: exit %d, want %d (stderr %q)", what, code, want, stderr)
	}
	for _, s := range says {
		if !strings.Contains(stderr, s) {
			t.Errorf("%s: stderr %q does not say %q", what, stderr, s)
		}
	}
}

// The steering commands' errors, all exit 2 with the reason, nothing
// changed: bad flags (before anything is asked), an unknown id, a
// finished batch; and on a batch started without waiting (embedded: it
// runs only while a command runs a worker): pause, a second pause
// refused, resume, a second resume refused.
func TestSteerCommandsExitCodes(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the embedded server")
	}
	dir := t.TempDir()
	var in strings.Builder
	for i := range 200 {
		fmt.Fprintf(&in, `{"arg1":"a%d","arg2":"b"}`+"\n", i)
	}
	if err := os.WriteFile(filepath.Join(dir, "in.jsonl"), []byte(in.String()), 0o644); err != nil {
		t.Fatal(err)
	}

	code, _, stderr := runSteer(t, dir, "update", "any", "--concurrency", "0")
	wantCode(t, "update --concurrency 0", code, stderr, ExitUsage, "--concurrency must be at least 1")
	code, _, stderr = runSteer(t, dir, "update", "any", "--max-failures", "lots")
	wantCode(t, "update --max-failures lots", code, stderr, ExitUsage, `"lots"`)
	code, _, stderr = runSteer(t, dir, "update", "any", "--rate", "-1")
	wantCode(t, "update --rate -1", code, stderr, ExitUsage, "--rate")
	code, _, stderr = runSteer(t, dir, "update", "any")
	wantCode(t, "update with nothing", code, stderr, ExitUsage, "nothing to change")
	code, _, stderr = runSteer(t, dir, "pause")
	wantCode(t, "pause without an id", code, stderr, ExitUsage)

	for _, args := range [][]string{{"pause", "nope"}, {"resume", "nope"}, {"update", "nope", "--concurrency", "2"}} {
		code, _, stderr = runSteer(t, dir, args...)
		wantCode(t, strings.Join(args, " "), code, stderr, ExitUsage, `unknown batch "nope"`)
	}

	code, _, stderr = runSteer(t, dir, "--batch-id", "done", "--shard-size", "50", "in.jsonl")
	wantCode(t, "submit", code, stderr, ExitOK)
	for _, args := range [][]string{{"pause", "done"}, {"resume", "done"}, {"update", "done", "--concurrency", "2"}} {
		code, _, stderr = runSteer(t, dir, args...)
		wantCode(t, strings.Join(args, " ")+" of a finished batch", code, stderr, ExitUsage, "batch done is not running")
	}

	code, _, stderr = runSteer(t, dir, "--batch-id", "later", "--shard-size", "10", "--wait=false", "in.jsonl")
	wantCode(t, "submit --wait=false", code, stderr, ExitOK)
	code, stdout, stderr := runSteer(t, dir, "pause", "later", "--reason", "for the test")
	wantCode(t, "pause", code, stderr, ExitOK)
	if !strings.Contains(stdout, "batch later: paused since ") || !strings.Contains(stdout, "(for the test)") {
		t.Errorf("pause said %q", stdout)
	}
	code, _, stderr = runSteer(t, dir, "pause", "later")
	wantCode(t, "a second pause", code, stderr, ExitUsage, "is paused already", "for the test")
	code, _, stderr = runSteer(t, dir, "update", "later", "--concurrency", "3", "--max-failures", "5%", "--rate", "100")
	wantCode(t, "update of a paused batch", code, stderr, ExitOK)
	code, stdout, stderr = runSteer(t, dir, "resume", "later")
	wantCode(t, "resume", code, stderr, ExitOK)
	if !strings.Contains(stdout, "batch later: resumed") {
		t.Errorf("resume said %q", stdout)
	}
	code, _, stderr = runSteer(t, dir, "resume", "later")
	wantCode(t, "a second resume", code, stderr, ExitUsage, "is not paused")
}
