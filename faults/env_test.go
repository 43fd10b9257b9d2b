package faults_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/batchpipe/batchpipe/internal/testinfra"
)

// Case 7: a bad environment is a clear error within seconds and a non-zero
// exit, not a hang. "Seconds" is held to quickLimit: the commands' own
// bounds are 10 s to dial Temporal and 15 s to probe a store.
const quickLimit = 20 * time.Second

// expectQuick checks a command failed with code and messages within quickLimit,
// without printing any of secrets; it returns a short description.
func expectQuick(c *C, what string, r run, code int, msgs []string, secrets ...string) string {
	c.Helper()
	if r.timedOut || r.code != code || r.dur > quickLimit {
		c.Errorf("%s: want exit %d within %v: %s", what, code, quickLimit, r)
	}
	for _, m := range msgs {
		if !strings.Contains(r.stderr, m) {
			c.Errorf("%s: stderr lacks %q: %s", what, m, r)
		}
	}
	for _, s := range secrets {
		if strings.Contains(r.stdout+r.stderr, s) {
			c.Errorf("%s: the output shows the secret %q", what, s)
		}
	}
	return fmt.Sprintf("%s: exit %d in %.1f s", what, r.code, r.dur.Seconds())
}

// firstLine is the first line of a command's error, for the table.
func firstLine(s string) string {
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(l, "error: ") {
			if len(l) > 160 {
				l = l[:160] + "…"
			}
			return strings.TrimSpace(l)
		}
	}
	return ""
}

// storeObjects counts the files a file store holds.
func storeObjects(dir string) int {
	n := 0
	filepath.Walk(dir, func(_ string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() {
			n++
		}
		return nil
	})
	return n
}

func TestBadEnvironment(t *testing.T) {
	parent(t)
	closedPort := func(c *C) string { return strconv.Itoa(testinfra.FreeTCPPort(c)) }

	t.Run("temporal_unreachable_submit", func(t *testing.T) {
		c := track(t, "7a")
		dir := c.TempDir()
		storeDir := filepath.Join(dir, "store")
		store := fileStore(c, storeDir)
		writeItems(c, filepath.Join(dir, "in.jsonl"), items(10, "e7a", nil))
		var notes []string
		msg := ""
		for i, addr := range []string{"127.0.0.1:" + closedPort(c), "temporal.invalid:7233"} {
			r := submit(c, dir, env(temporalEnv(addr)...), time.Minute, "--store", store, "--batch-id", fmt.Sprintf("e7a-%d", i), "in.jsonl")
			notes = append(notes, expectQuick(c, "submit, TEMPORAL_ADDRESS="+addr, r, 1, []string{"cannot reach Temporal at " + addr}))
			if msg == "" {
				msg = firstLine(r.stderr)
			}
		}
		c.Note("%s; message: %q; the input was staged before the dial failed and stays in the store (%d objects for the 2 batches; resubmitting with the same --batch-id resumes it, but gc never deletes a batch without a manifest)",
			strings.Join(notes, "; "), msg, storeObjects(storeDir))
	})

	t.Run("temporal_unreachable_worker", func(t *testing.T) {
		c := track(t, "7b")
		dir := c.TempDir()
		var notes []string
		for _, addr := range []string{"127.0.0.1:" + closedPort(c), "temporal.invalid:7233"} {
			r := start(c, "worker", dir, env(temporalEnv(addr)...), workerBin).result(time.Minute)
			notes = append(notes, expectQuick(c, "worker, TEMPORAL_ADDRESS="+addr, r, 1, []string{"cannot reach Temporal at " + addr}))
			if len(notes) == 1 {
				notes = append(notes, fmt.Sprintf("message: %q", firstLine(r.stderr)))
			}
		}
		c.Note("%s", strings.Join(notes, "; "))
	})

	t.Run("temporal_unreachable_ops", func(t *testing.T) {
		c := track(t, "7c")
		dir := c.TempDir()
		store := fileStore(c, filepath.Join(dir, "store"))
		addr := "127.0.0.1:" + closedPort(c)
		environ := env(temporalEnv(addr)...)
		var notes []string
		r := submit(c, dir, environ, time.Minute, "cancel", "some-batch", "--store", store)
		notes = append(notes, expectQuick(c, "submit cancel", r, 1, []string{"cannot reach Temporal at " + addr}))
		r = submit(c, dir, environ, time.Minute, "status", "some-batch", "--store", store)
		notes = append(notes, expectQuick(c, "submit status", r, 1, []string{"Temporal cannot be asked", "cannot reach Temporal"}))
		r = submit(c, dir, environ, time.Minute, "list", "--store", store)
		notes = append(notes, expectQuick(c, "submit list (lists the store, notes Temporal)", r, 0, []string{"running batches not listed"}))
		c.Note("%s", strings.Join(notes, "; "))
	})

	// storeCases runs submit and worker against a store URL with an
	// environment, expecting a quick "not usable" error naming want.
	storeCases := func(c *C, cases []struct{ name, url string }, environ []string, want []string, secrets ...string) []string {
		c.Helper()
		dir := c.TempDir()
		writeItems(c, filepath.Join(dir, "in.jsonl"), items(10, "e7", nil))
		var notes []string
		for _, sc := range cases {
			r := submit(c, dir, environ, time.Minute, "--store", sc.url, "in.jsonl")
			notes = append(notes, expectQuick(c, "submit "+sc.name, r, 1, want, secrets...))
			if len(notes) == 1 {
				notes = append(notes, fmt.Sprintf("message: %q", firstLine(r.stderr)))
			}
			rw := start(c, "worker "+sc.name, dir, environ, workerBin, "--store", sc.url).result(time.Minute)
			notes = append(notes, expectQuick(c, "worker "+sc.name, rw, 1, want, secrets...))
			if storeObjects(filepath.Join(dir, ".batchpipe", "blobs", "batches")) > 0 {
				c.Errorf("%s: something was staged", sc.name)
			}
		}
		return notes
	}

	t.Run("store_unreachable", func(t *testing.T) {
		c := track(t, "7d")
		p := closedPort(c)
		notes := storeCases(c, []struct{ name, url string }{
			{"minio://", "minio://127.0.0.1:" + p + "/bucket/prefix?secure=false"},
			{"s3://", "s3://bucket/prefix?endpoint=http://127.0.0.1:" + p + "&region=us-east-1&path_style=true"},
		}, env(append(minioEnv(), "AWS_ACCESS_KEY_ID=faults", "AWS_SECRET_ACCESS_KEY=faults-secret", "AWS_EC2_METADATA_DISABLED=true")...),
			[]string{"is not usable"})
		c.Note("%s", strings.Join(notes, "; "))
	})

	t.Run("wrong_credentials", func(t *testing.T) {
		c := track(t, "7e")
		mio := theMinIO(c)
		bucket := mio.CreateBucket(c, "faults-7e")
		const wrong = "wrong-password-7e-d41d8cd9"
		notes := storeCases(c, []struct{ name, url string }{
			{"minio://", mio.StoreURL(bucket, "p")},
			{"s3://", "s3://" + bucket + "/p?endpoint=http://" + mio.Endpoint + "&region=us-east-1&path_style=true"},
		}, env("MINIO_ROOT_USER="+minioUser, "MINIO_ROOT_PASSWORD="+wrong, "AWS_ACCESS_KEY_ID="+minioUser, "AWS_SECRET_ACCESS_KEY="+wrong, "AWS_EC2_METADATA_DISABLED=true"),
			[]string{"is not usable"}, wrong)
		c.Note("%s; the wrong password is never printed", strings.Join(notes, "; "))
	})

	t.Run("bucket_missing", func(t *testing.T) {
		c := track(t, "7f")
		mio := theMinIO(c)
		notes := storeCases(c, []struct{ name, url string }{
			{"minio://", mio.StoreURL("no-such-bucket-7f", "p")},
			{"s3://", "s3://no-such-bucket-7f/p?endpoint=http://" + mio.Endpoint + "&region=us-east-1&path_style=true"},
		}, env(append(minioEnv(), "AWS_ACCESS_KEY_ID="+minioUser, "AWS_SECRET_ACCESS_KEY="+minioSecret, "AWS_EC2_METADATA_DISABLED=true")...),
			[]string{"is not usable", "bucket"}, minioSecret)
		c.Note("%s", strings.Join(notes, "; "))
	})

	t.Run("unknown_scheme", func(t *testing.T) {
		c := track(t, "7g")
		// internal/cli's TestSubmitBadUsage has "unknown store scheme" for
		// submit in process; here both binaries, and a URL with no scheme.
		dir := c.TempDir()
		writeItems(c, filepath.Join(dir, "in.jsonl"), items(10, "e7g", nil))
		var notes []string
		for _, url := range []string{"gs://bucket/prefix", "relative/dir"} {
			r := submit(c, dir, env(), time.Minute, "--store", url, "in.jsonl")
			notes = append(notes, expectQuick(c, "submit --store "+url, r, 2, []string{"unknown scheme"}))
			rw := start(c, "worker", dir, env(), workerBin, "--store", url).result(time.Minute)
			notes = append(notes, expectQuick(c, "worker --store "+url, rw, 2, []string{"unknown scheme"}))
			if len(notes) == 2 {
				notes = append(notes, fmt.Sprintf("message: %q", firstLine(r.stderr)))
			}
		}
		c.Note("%s", strings.Join(notes, "; "))
	})
}
