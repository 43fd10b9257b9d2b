package faults_test

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/batchpipe/batchpipe/internal/testinfra"
)

// Built once by TestMain and run as processes by every case.
var (
	repoRoot     string
	suiteDir     string // scratch space of the whole run
	workerBin    string
	submitBin    string
	faultprocBin string

	// Every MinIO of the suite runs with these credentials, which the test
	// process also has in its environment (the minio:// driver reads them
	// from there). The password is a fresh random value: case 9 plants it
	// and looks for it everywhere it must not be.
	minioUser   = "faults-user"
	minioSecret string
)

// Environment variables.
const (
	// envWrite makes TestMain rewrite RELIABILITY.md's table (make test-faults).
	envWrite = "BATCHPIPE_WRITE_RELIABILITY"
	// envKeep keeps the scratch directory (logs, stores, server state).
	envKeep = "BATCHPIPE_FAULTS_KEEP"
)

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		os.Exit(m.Run()) // every case skips
	}
	// The cases spend most of their time waiting (for a heartbeat timeout,
	// an outage, a process): run them side by side, whatever -parallel
	// `go test ./...` picked from the CPU count, unless told otherwise.
	explicit := false
	flag.Visit(func(f *flag.Flag) { explicit = explicit || f.Name == "test.parallel" })
	if !explicit {
		flag.Set("test.parallel", "16")
	}
	os.Exit(runSuite(m))
}

func runSuite(m *testing.M) int {
	start := time.Now()
	var err error
	if repoRoot, err = testinfra.RepoRoot(); err != nil {
		fmt.Fprintln(os.Stderr, "faults:", err)
		return 1
	}
	if suiteDir, err = os.MkdirTemp("", "batchpipe-faults-"); err != nil {
		fmt.Fprintln(os.Stderr, "faults:", err)
		return 1
	}
	var r [12]byte
	rand.Read(r[:])
	minioSecret = "planted-secret-" + hex.EncodeToString(r[:])
	os.Setenv("MINIO_ROOT_USER", minioUser)
	os.Setenv("MINIO_ROOT_PASSWORD", minioSecret)

	bin := filepath.Join(suiteDir, "bin")
	t0 := time.Now()
	build := exec.Command("go", "build", "-o", bin+string(filepath.Separator), "./cmd/worker", "./cmd/submit", "./faults/internal/faultproc")
	build.Dir = repoRoot
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "faults: building the binaries: %v\n%s", err, out)
		os.RemoveAll(suiteDir)
		return 1
	}
	workerBin, submitBin, faultprocBin = filepath.Join(bin, "worker"), filepath.Join(bin, "submit"), filepath.Join(bin, "faultproc")
	fmt.Fprintf(os.Stderr, "faults: built worker, submit and faultproc in %.0fs\n", time.Since(t0).Seconds())

	code := m.Run()
	stopShared()
	report(time.Since(start), code)
	if truthy(os.Getenv(envKeep)) {
		fmt.Fprintf(os.Stderr, "faults: scratch directory kept: %s\n", suiteDir)
	} else {
		os.RemoveAll(suiteDir)
	}
	return code
}

func truthy(s string) bool { b, _ := strconv.ParseBool(s); return b }

// ---- The results table ----

// caseInfo is a row of RELIABILITY.md's table: one case of issue 7 (or one
// part of it).
type caseInfo struct{ id, title string }

// allCases is every row, in table order. A case records itself with track;
// a row nobody recorded shows as "not run" and keeps the table from being
// written.
var allCases = []caseInfo{
	{"1a", "kill -9 of a worker process mid-batch, twice, restarted each time; separate server (`worker --dev-server-only`), MinIO store"},
	{"1b", "kill -9 of `worker --dev` (server and worker together) mid-batch, twice, restarted on the same state directory"},
	{"1c", "kill -9 of a worker process 20 s into shards of 30 s (not restarted; a second worker takes over): the retried shards resume from their checkpoints"},
	{"1d", "a paused batch across a kill -9 of `worker --dev` and its restart: still paused, nothing handed out, and after resume every item once"},
	{"2", "MinIO stopped (kill -9) for 20 s mid-batch, then started again on the same data directory and port"},
	{"3", "two workers on one task queue, one killed mid-batch (not restarted)"},
	{"4a", "the same batch submitted twice at once with the same id (two `submit` processes, one server)"},
	{"4b", "the same batch submitted twice at once with the same id (embedded default, same directory)"},
	{"5a", "Go processor that panics, hangs past --item-timeout ignoring its context, or fails permanently; then a second batch on the same worker"},
	{"5b", "exec processor in the `worker` binary that crashes, hangs past --item-timeout, or answers a permanent error; then a second batch on the same worker process"},
	{"6", "`submit cancel` mid-batch, then `submit redrive`"},
	{"7a", "Temporal unreachable: `submit`"},
	{"7b", "Temporal unreachable: `worker`"},
	{"7c", "Temporal unreachable: `submit cancel`, `submit status`"},
	{"7d", "store unreachable (minio:// and s3:// on a closed port): `submit` and `worker`"},
	{"7e", "wrong store credentials (minio:// and s3://): `submit` and `worker`"},
	{"7f", "bucket missing (minio:// and s3://): `submit` and `worker`"},
	{"7g", "store URL with an unknown scheme: `submit` and `worker`"},
	{"8a", "a 2 GiB line with no newline"},
	{"8b", "a file starting with a UTF-8 BOM"},
	{"8c", "NUL bytes"},
	{"8d", "deeply nested JSON (over the limit, and at the limit through a whole batch)"},
	{"8e", "--batch-id that would escape a key (`../x`, `a/b`, `..`, empty) or that is reused for another input"},
	{"8f", "100,000 tiny items"},
	{"8g", "--shard-size 0, --shard-size larger than the input"},
	{"8h", "negative --concurrency (and other negative knobs)"},
	{"9", "planted secrets (store password, AWS secret key, Temporal API key) absent from workflow history, memo, logs, manifests and objects"},
}

// caseRow is what one case recorded.
type caseRow struct {
	caseInfo
	mu      sync.Mutex
	result  string // pass, FAIL, skip
	seconds float64
	details []string
	errors  []string
	command string
}

var (
	rowsMu sync.Mutex
	rows   = map[string]*caseRow{}
)

// C is a case's *testing.T that records its failures in its table row.
type C struct {
	*testing.T
	row *caseRow
}

func (c *C) Errorf(format string, args ...any) {
	c.T.Helper()
	c.row.addError(fmt.Sprintf(format, args...))
	c.T.Errorf(format, args...)
}

func (c *C) Fatalf(format string, args ...any) {
	c.T.Helper()
	c.row.addError(fmt.Sprintf(format, args...))
	c.T.Fatalf(format, args...)
}

func (c *C) Error(args ...any) {
	c.T.Helper()
	c.row.addError(fmt.Sprint(args...))
	c.T.Error(args...)
}

func (c *C) Fatal(args ...any) {
	c.T.Helper()
	c.row.addError(fmt.Sprint(args...))
	c.T.Fatal(args...)
}

// Note adds a detail to the case's row (and the test log).
func (c *C) Note(format string, args ...any) {
	c.T.Helper()
	s := fmt.Sprintf(format, args...)
	c.row.mu.Lock()
	c.row.details = append(c.row.details, s)
	c.row.mu.Unlock()
	c.T.Log(s)
}

// Bug skips the rest of the case for a product bug that cannot be worked
// around; the row says so.
func (c *C) Bug(format string, args ...any) {
	c.T.Helper()
	s := "BUG: " + fmt.Sprintf(format, args...)
	c.row.mu.Lock()
	c.row.details = append(c.row.details, s)
	c.row.mu.Unlock()
	c.T.Skip(s)
}

func (r *caseRow) addError(s string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(s) > 300 {
		s = s[:300] + "…"
	}
	r.errors = append(r.errors, s)
}

// track makes t the case id of the table; it runs in parallel with the
// other cases.
func track(t *testing.T, id string) *C {
	t.Helper()
	if testing.Short() {
		t.Skip("fault suite: runs processes and servers; skipped in -short mode")
	}
	t.Parallel()
	idx := slices.IndexFunc(allCases, func(ci caseInfo) bool { return ci.id == id })
	if idx < 0 {
		t.Fatalf("unknown case id %q", id)
	}
	r := &caseRow{caseInfo: allCases[idx], command: runCommand(t.Name())}
	rowsMu.Lock()
	if _, dup := rows[id]; dup {
		rowsMu.Unlock()
		t.Fatalf("case %s recorded twice", id)
	}
	rows[id] = r
	rowsMu.Unlock()
	start := time.Now()
	t.Cleanup(func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.seconds = time.Since(start).Seconds()
		switch {
		case t.Failed():
			r.result = "FAIL"
		case t.Skipped():
			r.result = "skip"
		default:
			r.result = "pass"
		}
	})
	return &C{T: t, row: r}
}

// runCommand is the go test invocation that runs just the test named name.
func runCommand(name string) string {
	parts := strings.Split(name, "/")
	for i, p := range parts {
		parts[i] = "^" + regexp.QuoteMeta(p) + "$"
	}
	return fmt.Sprintf("go test ./faults -run '%s'", strings.Join(parts, "/"))
}

const (
	beginMarker = "<!-- faults:begin -->"
	endMarker   = "<!-- faults:end -->"
)

// report prints the table, and with BATCHPIPE_WRITE_RELIABILITY=1 (not
// under CI=true) writes it into RELIABILITY.md when every case ran.
func report(total time.Duration, code int) {
	rowsMu.Lock()
	defer rowsMu.Unlock()
	if len(rows) == 0 {
		return
	}
	var b bytes.Buffer
	var pass, fail, skip, missing int
	for _, ci := range allCases {
		r := rows[ci.id]
		switch {
		case r == nil:
			missing++
		case r.result == "pass":
			pass++
		case r.result == "FAIL":
			fail++
		default:
			skip++
		}
	}
	fmt.Fprintf(&b, "Produced by `make test-faults` (`%s`) on %s: %s, %s/%s, %d CPUs; the whole run (build included) took %.0f s. "+
		"%d passed, %d failed, %d skipped.\n\n",
		"BATCHPIPE_WRITE_RELIABILITY=1 go test -count=1 -v ./faults", time.Now().UTC().Format("2006-01-02 15:04 UTC"),
		runtime.Version(), runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), total.Seconds(), pass, fail, skip)
	b.WriteString("| # | case | result | time | what the run saw | command |\n|---|---|---|---|---|---|\n")
	for _, ci := range allCases {
		r := rows[ci.id]
		if r == nil {
			fmt.Fprintf(&b, "| %s | %s | not run | | | |\n", ci.id, ci.title)
			continue
		}
		r.mu.Lock()
		res := r.result
		if res == "" {
			res = "unfinished"
		}
		parts := slices.Clone(r.details)
		if len(r.errors) > 0 {
			parts = append(parts, "failures: "+strings.Join(r.errors, "; "))
		}
		fmt.Fprintf(&b, "| %s | %s | **%s** | %.0f s | %s | `%s` |\n", ci.id, ci.title, res, r.seconds, cell(strings.Join(parts, "; ")), r.command)
		r.mu.Unlock()
	}
	table := b.String()
	fmt.Printf("\n%s\n%s%s\n", beginMarker, table, endMarker)

	if !truthy(os.Getenv(envWrite)) {
		return
	}
	if truthy(os.Getenv("CI")) {
		fmt.Fprintln(os.Stderr, "faults: CI=true: RELIABILITY.md left as it is (the table is printed above)")
		return
	}
	if missing > 0 {
		fmt.Fprintf(os.Stderr, "faults: %d cases did not run (a -run filter?): RELIABILITY.md left as it is\n", missing)
		return
	}
	path := filepath.Join(repoRoot, "RELIABILITY.md")
	doc, err := os.ReadFile(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, "faults: cannot update the table:", err)
		return
	}
	i, j := bytes.Index(doc, []byte(beginMarker)), bytes.Index(doc, []byte(endMarker))
	if i < 0 || j < i {
		fmt.Fprintf(os.Stderr, "faults: %s lacks the markers %s … %s: not updated\n", path, beginMarker, endMarker)
		return
	}
	var out bytes.Buffer
	out.Write(doc[:i+len(beginMarker)])
	out.WriteString("\n")
	out.WriteString(table)
	out.Write(doc[j:])
	if err := os.WriteFile(path, out.Bytes(), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, "faults: cannot update the table:", err)
		return
	}
	fmt.Fprintf(os.Stderr, "faults: wrote the table into %s\n", path)
}

// cell makes s safe inside a Markdown table cell.
func cell(s string) string {
	s = strings.ReplaceAll(s, "|", `\|`)
	s = strings.ReplaceAll(s, "\n", " ")
	return s
}
