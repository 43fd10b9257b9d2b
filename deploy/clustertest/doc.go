// Package clustertest runs the deployment of deploy/compose.yaml as local
// processes: one Temporal server (`worker --dev --dev-server-only`), MinIO
// and three `worker` processes, all configured only through the environment
// and flags a real deployment uses, and a `submit` of a 20,000-item batch
// over s3://. It also checks that deploy/compose.yaml describes that same
// topology with flags the binaries have.
//
// Run it with `make cluster-test` (which builds MinIO first and refuses to
// skip); `go test ./...` runs it too, unless -short.
package clustertest
