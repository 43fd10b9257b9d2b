package pipeline

import (
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"

	"go.temporal.io/sdk/temporal"

	"github.com/batchpipe/batchpipe/blobstore"
)

// ErrTypeNotAllowed is the error type of a batch that asks a worker for
// something its Trust does not allow: an exec: command it was not given, or
// a file:// store or input. No retry helps; the message names the worker
// flag that would allow it.
const ErrTypeNotAllowed = "NotAllowed"

// ExecPrefix names the exec processor family ("exec:python3 score.py" runs
// `python3 score.py` as processes speaking JSON lines; package execproc
// serves it). Whoever implements the family, Trust.Exec gates its names.
const ExecPrefix = "exec:"

// GatedSchemes are the URL schemes a batch may name for its store or input
// only on a worker that allows them (Trust.Schemes): a file:// URL is a path
// on the worker's own disk. Every other registered scheme (s3, minio, mem,
// and any a program registers) is open to every batch.
var GatedSchemes = []string{"file"}

// Trust says what a worker does for the batches it is given beyond running
// its registered processors on network stores. Whoever can start a workflow
// on the worker's task queue chooses a batch's processor, store URL and
// input URL, so by default (the zero value) a worker trusts them with
// nothing more: it runs no exec: command line and opens no file:// URL. The
// embedded default (package embedded) and `worker --dev` serve their own
// user only and use TrustAll; a `worker` is told what to allow with
// --allow-exec and --allow-scheme.
type Trust struct {
	// Exec lists the command lines batches may run as "exec:COMMAND"
	// processors. A batch's command is compared with each as a list of
	// words, split as Exec splits it (so quoting may differ, but not a word:
	// neither a prefix nor an extra argument matches).
	Exec []string
	// AnyExec lets batches run any exec: command line.
	AnyExec bool
	// Schemes lists the GatedSchemes ("file") batches may name as their
	// store or input URL.
	Schemes []string
}

// TrustAll is the Trust of a worker that serves only its own user (the
// embedded default, `worker --dev`): any exec: command, file:// stores and
// inputs.
func TrustAll() Trust {
	return Trust{AnyExec: true, Schemes: slices.Clone(GatedSchemes)}
}

// Validate checks every Exec entry (a non-empty command line Exec can
// split) and every Schemes entry (one of GatedSchemes).
func (t Trust) Validate() error {
	for _, c := range t.Exec {
		argv, err := SplitCommand(c)
		if err == nil && len(argv) == 0 {
			err = errors.New("empty command")
		}
		if err != nil {
			return fmt.Errorf("exec command %q: %v", c, err)
		}
	}
	for _, s := range t.Schemes {
		if !slices.Contains(GatedSchemes, s) {
			return fmt.Errorf("scheme %q: only %s needs allowing (%s are open to every batch)", s, strings.Join(GatedSchemes, ", "), strings.Join(openSchemes(), ", "))
		}
	}
	return nil
}

func openSchemes() []string {
	var s []string
	for _, k := range blobstore.Schemes() {
		if !slices.Contains(GatedSchemes, k) {
			s = append(s, k+"://")
		}
	}
	return s
}

// allowsExec reports whether command (what follows "exec:") is allowed.
func (t Trust) allowsExec(command string) bool {
	if t.AnyExec {
		return true
	}
	argv, err := SplitCommand(command)
	if err != nil || len(argv) == 0 {
		return false
	}
	for _, c := range t.Exec {
		if allowed, err := SplitCommand(c); err == nil && slices.Equal(allowed, argv) {
			return true
		}
	}
	return false
}

// checkExec returns a non-retryable ErrTypeNotAllowed error when the
// command of processor "exec:"+command is not allowed.
func (t Trust) checkExec(command string) error {
	if t.allowsExec(command) {
		return nil
	}
	return temporal.NewNonRetryableApplicationError(fmt.Sprintf(
		"processor %q is not allowed on this worker: it runs only the exec: command lines it was given; start it with --allow-exec %s to run this one (a custom worker: pipeline.Trust.Exec)",
		ExecPrefix+command, shellQuote(command)), ErrTypeNotAllowed, nil)
}

// checkURL returns a non-retryable ErrTypeNotAllowed error when rawURL's
// scheme is one of GatedSchemes that t does not allow.
func (t Trust) checkURL(rawURL string) error {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil // blobstore.Open says what is wrong with it
	}
	if !slices.Contains(GatedSchemes, u.Scheme) || slices.Contains(t.Schemes, u.Scheme) {
		return nil
	}
	return temporal.NewNonRetryableApplicationError(fmt.Sprintf(
		"%s: this worker does not open %s:// URLs for batches (a path on the worker's own disk); start it with --allow-scheme %s if its batches may use them (a custom worker: pipeline.Trust.Schemes)",
		blobstore.Redact(rawURL), u.Scheme, u.Scheme), ErrTypeNotAllowed, nil)
}

// shellQuote quotes s as one word for a POSIX shell, when it needs quoting.
func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./=:,+@%", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
