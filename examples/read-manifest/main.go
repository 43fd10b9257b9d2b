// Command read-manifest prints every result line of a batch, in input order.
package main

import (
	"context"
	"encoding/json"
	"log"
	"os"

	"github.com/batchpipe/batchpipe/manifests"
)

func main() {
	if len(os.Args) != 2 {
		log.Fatal("usage: read-manifest s3://bucket/prefix/batches/<id>/manifest.json")
	}
	ctx := context.Background()
	batch, err := manifests.OpenURL(ctx, os.Args[1])
	if err != nil {
		log.Fatal(err)
	}
	defer batch.Close()
	for line, err := range batch.Results(ctx) {
		if err != nil {
			log.Fatal(err)
		}
		json.NewEncoder(os.Stdout).Encode(line)
	}
}
