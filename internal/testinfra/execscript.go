package testinfra

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// execScript is a test exec processor in Python. Arguments: a file to
// which each process appends its pid when it starts, and optionally a
// number of items after which the process exits (after lingering for the
// last item's "linger" seconds, its stdin and stdout closed). Items choose
// what happens by "mode"; with item context (an envelope with "input") it
// answers the envelope's input and echoes its index.
const execScript = `
import json, os, sys, time
pidfile = sys.argv[1]
exit_after = int(sys.argv[2]) if len(sys.argv) > 2 else 0
with open(pidfile, "a") as f:
    f.write("%d\n" % os.getpid())
n = 0
for line in sys.stdin:
    item = json.loads(line)
    n += 1
    mode = item.get("mode", "ok")
    if item.get("sleep"):
        time.sleep(item["sleep"])
    if mode == "hang":
        time.sleep(3600)
    if mode == "exit":
        sys.exit(3)
    if mode == "garbage":
        print("Loading model... done", flush=True)
        continue
    if mode == "noshape":
        print(json.dumps({"result": 1}), flush=True)
        continue
    if mode == "crash":
        raise RuntimeError("boom on item %d" % item["n"])
    if mode == "big":
        print(json.dumps({"output": "x" * item["size"]}), flush=True)
        continue
    if mode == "perm":
        answer = {"error": {"message": "item %d is bad" % item["n"], "permanent": True}}
    elif mode == "retry":
        answer = {"error": {"message": "item %d: try again" % item["n"]}}
    elif mode == "bare":
        answer = {"error": "plain message"}
    elif mode == "stderr":
        print("note about item %d" % item["n"], file=sys.stderr, flush=True)
        answer = {"output": None}
    elif mode == "pid":
        answer = {"output": {"n": item["n"], "pid": os.getpid()}}
    else:
        answer = {"output": {"n": item["n"], "twice": 2 * item["n"], "echo": item.get("text")}}
    print(json.dumps(answer), flush=True)
    if exit_after and n >= exit_after:
        if item.get("linger"):
            os.close(0)
            os.close(1)
            time.sleep(item["linger"])
            os._exit(0)
        sys.exit(0)
`

// ExecScript is a test exec processor in Python (see execScript), with
// the file its processes append their pids to.
type ExecScript struct {
	Python  string // the interpreter, as Python resolves it
	Script  string // the script's path
	Pidfile string // where its processes append their pids
}

// NewExecScript writes the script into a temporary directory of t (it
// skips t without python3).
func NewExecScript(t testing.TB) ExecScript {
	t.Helper()
	python := Python()
	if python == "" {
		t.Skip("needs python3")
	}
	dir := t.TempDir()
	f := ExecScript{Python: python, Script: filepath.Join(dir, "proc.py"), Pidfile: filepath.Join(dir, "pids")}
	if err := os.WriteFile(f.Script, []byte(execScript), 0o644); err != nil {
		t.Fatal(err)
	}
	return f
}

// Command is the exec command line running the script, quoted so that
// temp paths with blanks survive.
func (f ExecScript) Command(extra ...string) string {
	args := append([]string{f.Python, f.Script, f.Pidfile}, extra...)
	for i, a := range args {
		args[i] = "'" + a + "'"
	}
	return strings.Join(args, " ")
}

// Pids lists the processes started so far.
func (f ExecScript) Pids(t testing.TB) []int {
	t.Helper()
	data, err := os.ReadFile(f.Pidfile)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, l := range strings.Fields(string(data)) {
		n, err := strconv.Atoi(l)
		if err != nil {
			t.Fatal(err)
		}
		pids = append(pids, n)
	}
	return pids
}

// Python returns the path of the python3 interpreter itself ("" without
// one). A python3 on PATH may be a wrapper (pyenv's shims run a few hundred
// processes per start), which would add its start-up to every process a
// test's exec pool starts, and to the first item's time.
var Python = sync.OnceValue(func() string {
	out, err := exec.Command("python3", "-c", "import sys; print(sys.executable)").Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
})
