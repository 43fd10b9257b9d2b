package execproc_test

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/batchpipe/batchpipe/execproc"
	"github.com/batchpipe/batchpipe/internal/testinfra"
	"github.com/batchpipe/batchpipe/pipeline"
)

// Exec processes get BaseEnv's variables and those Options.Env
// names, not the worker's credentials: a processor printing its whole
// environment to stderr (which goes to the log) shows none of them.
func TestExecEnvironmentFiltered(t *testing.T) {
	secrets := map[string]string{
		"AWS_SECRET_ACCESS_KEY": "planted-aws-secret", "MINIO_ROOT_PASSWORD": "planted-minio-password",
		"TEMPORAL_API_KEY": "planted-api-key", "AWS_SESSION_TOKEN": "planted-session-token",
	}
	for k, v := range secrets {
		t.Setenv(k, v)
	}
	t.Setenv("LC_TRUSTTEST", "locale-ok")
	t.Setenv("BATCHPIPE_TEST_VISIBLE", "visible-ok")
	t.Setenv("MYAPP_ONE", "prefix-ok")
	t.Setenv("BATCHPIPE_TEST_HIDDEN", "hidden-value")
	run := func(env []string) string {
		var logs testinfra.Buffer
		e, err := execproc.New(`sh -c 'env >&2; while read -r l; do echo "{\"output\":1}"; done'`,
			execproc.Options{PoolSize: 1, Env: env, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.Process(context.Background(), []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
		e.Close() // waits for the process, and so for its stderr
		return logs.String()
	}
	got := run([]string{"BATCHPIPE_TEST_VISIBLE", "MYAPP_*"})
	for _, want := range []string{`line="PATH=`, `line="HOME=`, `line="LC_TRUSTTEST=locale-ok"`, `line="BATCHPIPE_TEST_VISIBLE=visible-ok"`, `line="MYAPP_ONE=prefix-ok"`} {
		if !strings.Contains(got, want) {
			t.Errorf("the processor's environment lacks %s:\n%s", want, got)
		}
	}
	for _, hidden := range append([]string{"hidden-value"}, values(secrets)...) {
		if strings.Contains(got, hidden) {
			t.Errorf("LEAK: the processor saw %q:\n%s", hidden, got)
		}
	}
	// Allow-listed by name, a credential does pass.
	if got := run([]string{"AWS_SECRET_ACCESS_KEY"}); !strings.Contains(got, "planted-aws-secret") || strings.Contains(got, "planted-api-key") {
		t.Errorf("with AWS_SECRET_ACCESS_KEY allowed:\n%s", got)
	}
	for _, bad := range []string{"", "A=B", "A*B", "**"} {
		if execproc.ValidateEnvName(bad) == nil {
			t.Errorf("ValidateEnvName(%q) accepted it", bad)
		}
	}
}

func values(m map[string]string) []string {
	var v []string
	for _, s := range m {
		v = append(v, s)
	}
	return v
}

// Check validates an exec: name without starting a process; Lookup makes
// the pool, whose processes log through the family's logger.
func TestCheckStartsNothing(t *testing.T) {
	var logs testinfra.Buffer
	r := execproc.NewRegistry(execproc.Options{PoolSize: 1, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	name := `exec:sh -c 'echo from-stderr >&2; while read -r l; do echo "{\"output\":1}"; done'`
	for _, ok := range []string{"echo", name} {
		if err := r.Check(ok); err != nil {
			t.Fatalf("Check(%q): %v", ok, err)
		}
	}
	for _, bad := range []string{"nope", "exec:", "exec:sh 'x"} {
		if err := r.Check(bad); err == nil {
			t.Fatalf("Check(%q): no error", bad)
		}
	}
	time.Sleep(100 * time.Millisecond)
	if logs.String() != "" {
		t.Fatalf("Check started a process: %q", logs.String())
	}
	p, err := r.Lookup(name, pipeline.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Process(context.Background(), []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	r.Close()
	if !strings.Contains(logs.String(), "line=from-stderr") {
		t.Fatalf("the pool's stderr did not reach the family's logger: %q", logs.String())
	}
}
