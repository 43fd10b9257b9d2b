// Command worker runs batchpipe's workflows and activities on a Temporal
// task queue; with --dev it also runs an embedded Temporal server.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/batchpipe/batchpipe/internal/cli"
)

func main() {
	cli.SetGCDefaults(os.Getenv)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Worker(ctx, &cli.IO{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr}, os.Args[1:])
	stop()
	os.Exit(code)
}
