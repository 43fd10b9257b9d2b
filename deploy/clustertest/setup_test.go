package clustertest

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/batchpipe/batchpipe/internal/testinfra"
)

// deployment is what TestCluster and BenchmarkCluster run batches on:
// PostgreSQL, a Temporal cluster on it (one process per service), MinIO
// with a bucket of the test's, and the environment a worker or submit
// process of the deployment gets.
type deployment struct {
	dir      string // the test's directory: logs, configuration, inputs
	bin      string // holds worker and submit
	pg       *testinfra.PostgresProcess
	temporal *testinfra.TemporalCluster
	minio    testinfra.MinIOServer
	bucket   string
	store    string   // s3:// URL of the bucket's prefix "cluster"
	env      []string // Temporal and AWS settings, nothing from the caller's home
}

// startDeployment builds the binaries, starts PostgreSQL with Temporal's
// schema, the Temporal services and MinIO (or uses the MinIO of
// BATCHPIPE_MINIO_ENDPOINT), and creates a bucket; everything is stopped
// when tb ends. step logs progress.
func startDeployment(tb testing.TB, step func(format string, args ...any)) *deployment {
	tb.Helper()
	pgBin, err := testinfra.PostgresBinDir()
	if err != nil {
		testinfra.Missing(tb, "PostgreSQL", err, testinfra.PostgresHint)
	}
	d := &deployment{minio: testinfra.MinIOEndpoint(tb)}
	d.bucket = testinfra.NewBucket(tb, d.minio)
	d.bin = binaries(tb)
	tbins := temporalBinaries(tb)
	root, err := testinfra.RepoRoot()
	if err != nil {
		tb.Fatal(err)
	}
	d.dir = tb.TempDir()
	env := baseEnv(d.dir)
	step("built the binaries")

	d.pg, err = testinfra.StartPostgres(testinfra.PostgresOptions{Dir: filepath.Join(d.dir, "postgres"), BinDir: pgBin})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { d.pg.Stop() })
	if err := tbins.SetupSchema(d.pg, d.dir); err != nil {
		tb.Fatal(err)
	}
	step("PostgreSQL on %s with Temporal's schema", d.pg.Addr())
	d.temporal, err = testinfra.StartTemporal(testinfra.TemporalOptions{
		Binaries: tbins, Postgres: d.pg, Dir: d.dir,
		DynamicConfig: filepath.Join(root, "deploy", "temporal", "dynamicconfig.yaml"),
		StartTimeout:  time.Minute, // room for a loaded machine (`go test ./...`)
	})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { d.temporal.Stop() })
	step("Temporal on %s (%v), MinIO on %s", d.temporal.Address, testinfra.TemporalServices, d.minio.Endpoint)

	d.store = fmt.Sprintf("s3://%s/cluster?endpoint=http://%s&path_style=true&region=us-east-1", d.bucket, d.minio.Endpoint)
	d.env = append(env,
		"TEMPORAL_ADDRESS="+d.temporal.Address,
		"TEMPORAL_NAMESPACE="+d.temporal.Namespace,
		"AWS_ACCESS_KEY_ID="+d.minio.AccessKey,
		"AWS_SECRET_ACCESS_KEY="+d.minio.SecretKey,
		"AWS_REGION=us-east-1",
		"AWS_EC2_METADATA_DISABLED=true",
	)
	return d
}
