// Command custom-worker is a batchpipe worker with a processor of its own:
// "reverse" turns {"text":"abc"} into {"text":"cba"}. It reads Temporal's
// settings from the environment (TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE,
// TEMPORAL_API_KEY, TLS variables, profiles) and stops on SIGINT/SIGTERM.
package main

import (
	"context"
	"errors"
	"log"
	"slices"

	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/contrib/envconfig"
	"go.temporal.io/sdk/worker"

	"github.com/batchpipe/batchpipe/pipeline"
)

// Text is reverse's input and output (a struct, so it can grow fields).
type Text struct {
	Text *string `json:"text"`
}

// reverse reverses the text by runes. pipeline.Typed decodes each item into
// Text (a "text" that is not a string fails permanently, naming the field).
func reverse(_ context.Context, in Text) (Text, error) {
	if in.Text == nil {
		return Text{}, pipeline.Permanent(errors.New(`reverse: input needs a string field "text"`))
	}
	r := []rune(*in.Text)
	slices.Reverse(r)
	return Text{Text: new(string(r))}, nil
}

func main() {
	processors := pipeline.NewRegistry() // example and echo, built in
	processors.Register("reverse", pipeline.Typed(reverse))
	c, err := client.Dial(envconfig.MustLoadDefaultClientOptions())
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	// Batches may use file:// stores (submit's default): untrusted otherwise.
	w := pipeline.NewWorker(c, pipeline.DefaultTaskQueue, pipeline.WorkerOptions{Processors: processors, Trust: pipeline.Trust{Schemes: []string{"file"}}})
	if err := w.Run(worker.InterruptCh()); err != nil {
		log.Fatal(err)
	}
}
