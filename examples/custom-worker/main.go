// Command custom-worker is a batchpipe worker with a processor of its own:
// "reverse" turns {"text":"abc"} into {"text":"cba"}. It reads Temporal's
// settings from the environment (TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE,
// TEMPORAL_API_KEY, TLS variables, profiles) and stops on SIGINT/SIGTERM.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"log"
	"slices"

	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/contrib/envconfig"
	"go.temporal.io/sdk/worker"

	"github.com/batchpipe/batchpipe/pipeline"
)

func reverse(_ context.Context, in json.RawMessage) (json.RawMessage, error) {
	var item struct {
		Text *string `json:"text"`
	}
	if err := json.Unmarshal(in, &item); err != nil || item.Text == nil {
		return nil, pipeline.Permanent(errors.New(`reverse: input needs a string field "text"`))
	}
	r := []rune(*item.Text)
	slices.Reverse(r)
	return json.Marshal(map[string]string{"text": string(r)})
}

func main() {
	pipeline.Register("reverse", pipeline.ProcessorFunc(reverse))
	c, err := client.Dial(envconfig.MustLoadDefaultClientOptions())
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	// Batches may use file:// stores (submit's default, on this machine);
	// without Trust a worker runs no exec: commands and opens no file:// URL.
	w := pipeline.NewWorker(c, pipeline.DefaultTaskQueue, pipeline.WorkerOptions{Trust: pipeline.Trust{Schemes: []string{"file"}}})
	if err := w.Run(worker.InterruptCh()); err != nil {
		log.Fatal(err)
	}
}
