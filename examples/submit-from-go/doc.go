// Package submitfromgo holds only the end-to-end test of the submit-from-go
// example. The example's program is app/, a Go module of its own that
// requires github.com/batchpipe/batchpipe as another project would; the
// root module's `go test ./...` does not descend into nested modules, so
// this package of the root module builds and runs it.
package submitfromgo
