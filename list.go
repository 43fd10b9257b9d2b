package batchpipe

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"maps"
	"slices"
	"strings"
	"time"

	"go.temporal.io/api/workflowservice/v1"

	"github.com/batchpipe/batchpipe/blobstore"
	"github.com/batchpipe/batchpipe/manifests"
	"github.com/batchpipe/batchpipe/pipeline"
)

// ErrRunningNotListed is the error List yields, after the batches it could
// list, when Temporal could not be asked for the running ones.
var ErrRunningNotListed = errors.New("running batches not listed")

// List yields every batch the store and Temporal know, ordered by id:
// finished ones from their manifests (an unreadable manifest is a Status
// with Error set, not the end of the listing), batches started but not
// finished from their specs, and running ones with their progress, read
// page by page from Temporal's visibility. A store that cannot be listed
// ends the listing with its error; a Temporal that cannot be asked yields
// the store's batches, then an error matching ErrRunningNotListed.
func (c *Client) List(ctx context.Context) iter.Seq2[Status, error] {
	return func(yield func(Status, error) bool) {
		states, err := c.storeStates(ctx)
		if err != nil {
			yield(Status{}, err)
			return
		}
		terr := c.runningStates(ctx, states)
		for _, id := range slices.Sorted(maps.Keys(states)) {
			if !yield(states[id], nil) {
				return
			}
		}
		if terr != nil {
			yield(Status{}, fmt.Errorf("%w: %v", ErrRunningNotListed, terr))
		}
	}
}

func (c *Client) storeStates(ctx context.Context) (map[string]Status, error) {
	b := c.store
	states := map[string]Status{}
	for a, err := range b.List(ctx, "batches/") {
		if err != nil {
			return nil, err
		}
		id, rest, _ := strings.Cut(strings.TrimPrefix(a.Key, "batches/"), "/")
		switch rest {
		case "manifest.json":
			mb, err := manifests.Open(ctx, b, id)
			if err != nil {
				if ctx.Err() != nil {
					return nil, err
				}
				if errors.Is(err, blobstore.ErrNotFound) {
					continue // deleted since listed (gc deletes the manifest last)
				}
				// One bad manifest must not hide the other batches: flag it.
				reason := err
				if u := errors.Unwrap(err); u != nil {
					reason = u // without the key and store, which the row gives
				}
				states[id] = Status{BatchID: id, Status: "unreadable manifest", Error: reason.Error(), Manifest: blobstore.Prefix(b) + a.Key}
				continue
			}
			states[id] = StatusFromManifest(mb.Manifest, blobstore.Prefix(b)+a.Key)
		case "collected.json":
			states[id] = Status{BatchID: id, Status: "collected"}
		case "batch.json", "input/index.json": // started (spec), or staged before specs
			if _, ok := states[id]; ok {
				continue
			}
			var st Status
			if rest == "batch.json" {
				spec, err := pipeline.ReadSpec(ctx, b, id)
				if err != nil {
					continue
				}
				st = Status{BatchID: id, Status: "staged", Items: spec.Items, Shards: spec.Shards}
			} else if staged, err := pipeline.ReadStaged(ctx, b, id, ""); err == nil {
				st = Status{BatchID: id, Status: "staged", Items: staged.Items, Shards: staged.Shards}
			} else {
				continue
			}
			states[id] = st
		}
	}
	return states, nil
}

// runningStates adds the running batches that Temporal lists to states.
func (c *Client) runningStates(ctx context.Context, states map[string]Status) error {
	tc, err := c.Temporal(ctx)
	if err != nil {
		return err
	}
	req := &workflowservice.ListWorkflowExecutionsRequest{
		Query: fmt.Sprintf("WorkflowType = '%s' AND ExecutionStatus = 'Running'", pipeline.BatchWorkflowName),
	}
	for {
		resp, err := tc.ListWorkflow(ctx, req)
		if err != nil {
			return err
		}
		for _, e := range resp.Executions {
			id := e.GetExecution().GetWorkflowId()
			qctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			p, err := pipeline.QueryProgress(qctx, tc, id)
			cancel()
			if err != nil {
				// No worker answers: keep the size the store knows.
				prev := states[id]
				states[id] = Status{BatchID: id, Status: "running", Items: prev.Items, Shards: prev.Shards}
				continue
			}
			states[id] = StatusFromProgress(p)
		}
		if len(resp.NextPageToken) == 0 {
			return nil
		}
		req.NextPageToken = resp.NextPageToken
	}
}
