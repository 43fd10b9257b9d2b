// Command bench measures batchpipe against the naive one-child-per-item
// Temporal pattern and a direct run without Temporal (see package bench).
// `make bench` and `make bench-large` run it.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/batchpipe/batchpipe/bench"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := bench.Main(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
