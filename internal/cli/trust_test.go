package cli_test

import (
	"context"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/batchpipe/batchpipe/internal/cli"
	"github.com/batchpipe/batchpipe/internal/devserver"
	"github.com/batchpipe/batchpipe/internal/testinfra"
	"github.com/batchpipe/batchpipe/internal/testinfra/temporaltest"
)

// envProcessor is an exec processor that prints a marker and its whole
// environment to stderr when it starts, then answers every item with
// {"ok":true}.
const envProcessor = `sh -c 'echo processor-started >&2; env >&2; while read -r l; do echo "{\"output\":{\"ok\":true}}"; done'`

// planted are credentials a worker's environment holds and its processors
// must not see.
var planted = map[string]string{
	"AWS_SECRET_ACCESS_KEY": "planted-aws-secret-cli",
	"MINIO_ROOT_PASSWORD":   "planted-minio-password-cli",
	"TEMPORAL_API_KEY":      "planted-temporal-api-key-cli",
}

func plantSecrets(t *testing.T) {
	for k, v := range planted {
		t.Setenv(k, v)
	}
	t.Setenv("BATCHPIPE_CLI_VISIBLE", "visible-to-processors")
}

// checkNoSecrets fails the test if log holds a planted secret, and checks
// that the processor did print its environment there (with the allowed
// variable when allowed).
func checkNoSecrets(t *testing.T, what, log string, wantVisible bool) {
	t.Helper()
	if !strings.Contains(log, "processor-started") || !strings.Contains(log, "PATH=") {
		t.Fatalf("%s: the processor's stderr (its environment) is not in the log:\n%s", what, log)
	}
	if got := strings.Contains(log, "BATCHPIPE_CLI_VISIBLE=visible-to-processors"); got != wantVisible {
		t.Errorf("%s: the --processor-env variable seen: %v, want %v", what, got, wantVisible)
	}
	for k, v := range planted {
		if strings.Contains(log, v) {
			t.Errorf("LEAK (%s): the processor saw %s", what, k)
		}
	}
}

// startPlainWorker runs `worker` (not --dev) in-process on the Temporal
// frontend addr; it stops when stop is called or the test ends.
func startPlainWorker(t *testing.T, dir, addr string, args ...string) (stderr *testinfra.Buffer, stop func()) {
	t.Helper()
	stderr = &testinfra.Buffer{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	env := func(k string) string {
		if k == "TEMPORAL_ADDRESS" {
			return addr
		}
		return ""
	}
	go func() {
		done <- cli.Worker(ctx, &cli.IO{Stdin: strings.NewReader(""), Stdout: io.Discard, Stderr: stderr, Getenv: env, Dir: dir}, args)
	}()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case code := <-done:
			if code != 0 {
				t.Errorf("worker %v exited %d: %s", args, code, stderr)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("worker %v did not stop within 30 s", args)
		}
	}
	t.Cleanup(stop)
	deadline := time.Now().Add(time.Minute)
	for !strings.Contains(stderr.String(), "worker polling") {
		if time.Now().After(deadline) {
			t.Fatalf("worker %v did not start: %s", args, stderr)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return stderr, stop
}

// A worker that is not --dev runs an exec: processor only when given its
// command line exactly (--allow-exec; other quoting of the same words is
// the same command, an extra argument or a prefix is not): a batch asking
// for another fails at its first shard naming --allow-exec. Its processors
// see none of its credentials, only --processor-env's variables besides
// the base set. Without --allow-scheme file it refuses a batch on a file://
// store (submit's default), naming the flag.
func TestWorkerTrust(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a Temporal server")
	}
	plantSecrets(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	srv := temporaltest.New(ctx, t, devserver.Options{Port: testinfra.FreeDevServerPort(t)})
	addr := srv.FrontendAddr()
	dir := t.TempDir()
	writeLines(t, filepath.Join(dir, "in.jsonl"), exampleItems(30, "tr"))

	log, stop := startPlainWorker(t, dir, addr, "--task-queue", "trusting", "--allow-exec", envProcessor,
		"--allow-exec", "sh examples/processors/echo.sh", "--allow-scheme", "file", "--processor-env", "BATCHPIPE_CLI_VISIBLE")
	if !strings.Contains(log.String(), "batches may use: 2 exec: command line(s) given with --allow-exec; file:// stores and inputs") {
		t.Errorf("the worker does not say what batches may use: %s", log)
	}
	// The allowed command, quoted otherwise (the same words).
	requoted := `sh -c "echo processor-started >&2; env >&2; while read -r l; do echo \"{\\\"output\\\":{\\\"ok\\\":true}}\"; done"`
	r := submitTo(t, dir, addr, "--task-queue", "trusting", "--batch-id", "allowed", "--shard-size", "10", "--processor", "exec:"+requoted, "in.jsonl")
	if r.code != cli.ExitOK {
		t.Fatalf("the allowed command: %s\nworker log:\n%s", r, log)
	}
	checkNoSecrets(t, "worker --processor-env BATCHPIPE_CLI_VISIBLE", log.String(), true)

	for _, tc := range []struct{ name, command string }{
		{"extra argument", envProcessor + " extra"},
		{"prefix", "sh"},
		{"another script", "sh examples/processors/upper.sh"},
		{"allowed as a prefix of it", "sh examples/processors/echo.sh --more"},
	} {
		r := submitTo(t, dir, addr, "--task-queue", "trusting", "--batch-id", "refused-"+strings.ReplaceAll(tc.name, " ", "-"),
			"--shard-size", "10", "--processor", "exec:"+tc.command, "in.jsonl")
		if r.code != cli.ExitFailed || !strings.Contains(r.stdout, "reason: shard ") ||
			!strings.Contains(r.stdout, "is not allowed on this worker") || !strings.Contains(r.stdout, "--allow-exec ") {
			t.Errorf("%s (exec:%s): want exit %d, the first shard refused naming --allow-exec: %s", tc.name, tc.command, cli.ExitFailed, r)
		}
	}
	stop()

	// No --allow-scheme file: the default store is refused; the user reads why.
	log, _ = startPlainWorker(t, dir, addr, "--task-queue", "strict")
	if !strings.Contains(log.String(), "no exec: commands (--allow-exec CMD); no file:// stores or inputs (--allow-scheme file)") {
		t.Errorf("the worker does not say what batches may use: %s", log)
	}
	r = submitTo(t, dir, addr, "--task-queue", "strict", "--batch-id", "file-store", "in.jsonl")
	if r.code != cli.ExitFailed || !strings.Contains(r.stderr, "failed without a manifest") ||
		!strings.Contains(r.stderr, "does not open file:// URLs") || !strings.Contains(r.stderr, "--allow-scheme file") {
		t.Fatalf("a file:// store on a worker without --allow-scheme file: want exit %d naming the flag: %s", cli.ExitFailed, r)
	}
}

// `worker --dev` serves its own user, as the embedded default does: any
// exec: command and file:// store without a flag. Its processors' stderr
// is in its log, and their environment is filtered all the same.
func TestWorkerDevTrustsItsUser(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a Temporal server")
	}
	plantSecrets(t)
	dir := t.TempDir()
	addr, log := startDevWorker(t, dir)
	if !strings.Contains(log.String(), "worker --dev serves its own user") {
		t.Errorf("worker --dev does not say what batches may use: %s", log)
	}
	writeLines(t, filepath.Join(dir, "in.jsonl"), exampleItems(20, "dv"))
	r := submitTo(t, dir, addr, "--batch-id", "dev-exec", "--processor", "exec:"+envProcessor, "in.jsonl")
	if r.code != cli.ExitOK {
		t.Fatalf("exec: on worker --dev: %s\nworker log:\n%s", r, log)
	}
	checkNoSecrets(t, "worker --dev", log.String(), false)
}

// In the embedded default, exec processors' stderr goes through submit's
// logger (to its stderr, as warnings), not around it, and processors see
// only the base variables and --processor-env's.
func TestSubmitEmbeddedProcessorStderrAndEnv(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a Temporal server")
	}
	plantSecrets(t)
	dir := t.TempDir()
	writeLines(t, filepath.Join(dir, "in.jsonl"), exampleItems(20, "em"))
	r := submit(t, dir, nil, "--batch-id", "emb-exec", "--processor", "exec:"+envProcessor,
		"--processor-env", "BATCHPIPE_CLI_VISIBLE", "in.jsonl")
	if r.code != cli.ExitOK {
		t.Fatalf("submit: %s", r)
	}
	if !strings.Contains(r.stderr, `level=WARN msg="processor stderr"`) || !strings.Contains(r.stderr, "line=processor-started") {
		t.Fatalf("the processor's stderr is not in submit's log (stderr):\n%s", r.stderr)
	}
	checkNoSecrets(t, "submit --processor-env BATCHPIPE_CLI_VISIBLE", r.stderr, true)
}

func TestTrustBadFlags(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--allow-exec", ""}, "--allow-exec"},
		{[]string{"--allow-exec", "sh -c 'unterminated"}, "unterminated single quote"},
		{[]string{"--allow-scheme", "s3"}, "--allow-scheme"},
		{[]string{"--processor-env", "A=B"}, "--processor-env"},
		{[]string{"--store", "file://" + dir}, "--allow-scheme file"},
		{[]string{"--dev", "--dev-ip", "0.0.0.0", "--store", "file://" + dir}, "--allow-scheme file"},
	} {
		var stderr testinfra.Buffer
		code := cli.Worker(context.Background(), &cli.IO{Stdin: strings.NewReader(""), Stdout: io.Discard, Stderr: &stderr, Getenv: noEnv, Dir: dir}, tc.args)
		if code != cli.ExitUsage || !strings.Contains(stderr.String(), tc.want) {
			t.Errorf("worker %v: exit %d, want %d naming %q: %s", tc.args, code, cli.ExitUsage, tc.want, stderr.String())
		}
	}
	// submit's --processor-env is for its own worker: with a Temporal
	// service configured, the workers need it instead.
	var stderr testinfra.Buffer
	env := func(k string) string {
		if k == "TEMPORAL_ADDRESS" {
			return "127.0.0.1:1"
		}
		return ""
	}
	writeLines(t, filepath.Join(dir, "in.jsonl"), exampleItems(2, "pe"))
	code := cli.Submit(context.Background(), &cli.IO{Stdin: strings.NewReader(""), Stdout: io.Discard, Stderr: &stderr, Getenv: env, Dir: dir},
		[]string{"--processor-env", "X", "in.jsonl"})
	if code != cli.ExitUsage || !strings.Contains(stderr.String(), "worker --processor-env") {
		t.Errorf("submit --processor-env with Temporal configured: exit %d: %s", code, stderr.String())
	}
}
