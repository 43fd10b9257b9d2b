// Package clustertest runs the deployment of deploy/compose.yaml as local
// processes on 127.0.0.1: PostgreSQL (the system's packages), Temporal's
// schema set up on it with the server's SQL tool, the Temporal server of
// go.mod's go.temporal.io/server with its frontend, history, matching and
// worker services as separate processes, MinIO and three `worker`
// processes, all configured only through the environment and flags a real
// deployment uses. A `submit` of a 100,000-item batch over s3:// runs while
// one worker is killed with SIGKILL and the history service is restarted,
// and the manifest is checked item by item. It also checks that
// deploy/compose.yaml describes that same topology with flags the binaries
// have. The launchers live in internal/testinfra (StartPostgres,
// BuildTemporal, StartTemporal).
//
// BenchmarkCluster (`make bench-cluster`) times whole submit processes of
// 100,000 and 1,000,000 items on the same deployment with 1 and 3 workers
// and reports where the CPU went (bench/RESULTS.md).
//
// Run it with `make cluster-test` (which builds MinIO first and refuses to
// skip: CI=true); `go test ./...` runs it too, unless -short. Without
// CI=true it skips when PostgreSQL is not installed or the server cannot
// be built.
package clustertest
