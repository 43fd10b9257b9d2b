// Command submit-from-go submits a file of items as a batchpipe batch from
// a program of its own (another Go module, using only the public package
// batchpipe), waits for it while printing progress, then reads every result
// back through the batch's manifest and prints a summary line.
//
//	TEMPORAL_ADDRESS=127.0.0.1:7233 go run . -store file:///tmp/store items.jsonl
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"

	"github.com/batchpipe/batchpipe"
	"github.com/batchpipe/batchpipe/manifests"
)

func main() {
	store := flag.String("store", os.Getenv("BATCHPIPE_STORE"), "blob store URL (default $BATCHPIPE_STORE)")
	processor := flag.String("processor", "example", "processor to run on each item")
	flag.Parse()
	if flag.NArg() != 1 {
		log.Fatal("usage: submit-from-go [-store URL] [-processor NAME] ITEMS.jsonl")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()

	c, err := batchpipe.Dial(ctx, batchpipe.Config{Store: *store}) // Temporal from TEMPORAL_ADDRESS etc.
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	b, err := c.Submit(ctx, batchpipe.Request{Input: flag.Arg(0), Processor: *processor})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Fprintf(os.Stderr, "batch %s: %d items\n", b.ID(), b.Items())
	last := int64(-1)
	show := func(done, items, failed int64) { // only when it moved
		if done != last {
			last = done
			fmt.Fprintf(os.Stderr, "progress: %d/%d done, %d failed\n", done, items, failed)
		}
	}
	res, err := b.Wait(ctx, func(p batchpipe.Progress) { show(p.Done, p.Items, p.Failed) })
	if err != nil {
		log.Fatal(err)
	}
	show(res.Manifest.Counts.Items, res.Manifest.Input.Items, res.Manifest.Counts.Failed) // the end, however fast

	var succeeded, failed int64
	for line, err := range res.Results(ctx) {
		if err != nil {
			log.Fatal(err)
		}
		if line.Status == manifests.ItemSucceeded {
			succeeded++
		} else {
			failed++
		}
	}
	fmt.Printf("batch %s %s: %d succeeded, %d failed; manifest %s\n", b.ID(), res.Manifest.Status, succeeded, failed, res.ManifestKey)
	if res.Manifest.Status != manifests.StatusSucceeded {
		os.Exit(1) // some items failed, or the batch failed or was canceled
	}
}
