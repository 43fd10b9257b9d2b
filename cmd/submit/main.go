// Command submit runs a batch: it stages an input file, starts the batch on
// Temporal (or an embedded server) and waits for its manifest.
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
	code := cli.Submit(ctx, &cli.IO{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr}, os.Args[1:])
	stop()
	os.Exit(code)
}
