package batchpipe

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"maps"
	"slices"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/workflowservice/v1"

	"github.com/batchpipe/batchpipe/blobstore"
	"github.com/batchpipe/batchpipe/layout"
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
	for bo, err := range layout.Batches(ctx, b) {
		if err != nil {
			return nil, err
		}
		if st, ok := storeState(ctx, b, bo); ok {
			states[bo.ID] = st
		}
	}
	return states, nil
}

// storeState is what a batch's objects say of it: finished (its manifest),
// collected by gc, or started and not finished (its spec, or the staged
// index of a batch from before specs). A batch whose manifest cannot be
// read is flagged, not skipped.
func storeState(ctx context.Context, b blobstore.Bucket, bo layout.BatchObjects) (Status, bool) {
	has := map[string]bool{}
	for _, o := range bo.Objects {
		has[bo.Rel(o)] = true
	}
	id := bo.ID
	switch {
	case has["manifest.json"]:
		mb, err := manifests.Open(ctx, b, id)
		if errors.Is(err, blobstore.ErrNotFound) {
			return Status{}, false // deleted since listed (gc deletes the manifest last)
		}
		if err != nil {
			reason := err
			if u := errors.Unwrap(err); u != nil {
				reason = u // without the key and store, which the row gives
			}
			return Status{BatchID: id, Status: "unreadable manifest", Error: reason.Error(), Manifest: blobstore.Prefix(b) + manifests.ManifestKey(id)}, true
		}
		return StatusFromManifest(mb.Manifest, blobstore.Prefix(b)+manifests.ManifestKey(id)), true
	case has["collected.json"]:
		return Status{BatchID: id, Status: "collected"}, true
	case has["batch.json"]:
		if spec, err := pipeline.ReadSpec(ctx, b, id); err == nil {
			return Status{BatchID: id, Status: "staged", Items: spec.Items, Shards: spec.Shards}, true
		}
	case has["input/index.json"]:
		if st, err := layout.ReadStaged(ctx, b, id, ""); err == nil {
			return Status{BatchID: id, Status: "staged", Items: st.Items, Shards: st.Shards}, true
		}
	}
	return Status{}, false
}

// runningStates adds the running batches that Temporal lists to states.
// A batch that visibility lists as running but whose latest run has
// finished is left as the store has it.
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
			// Visibility is written asynchronously: a batch that has just
			// finished can still be listed as running. Its latest run's
			// description is authoritative; a finished one keeps the
			// store's state (its manifest).
			if desc, err := tc.DescribeWorkflowExecution(ctx, id, ""); err == nil &&
				desc.GetWorkflowExecutionInfo().GetStatus() != enumspb.WORKFLOW_EXECUTION_STATUS_RUNNING {
				continue
			}
			qctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			p, err := pipeline.QueryProgress(qctx, tc, id)
			if err != nil {
				cancel()
				// No worker answers: keep the size the store knows.
				prev := states[id]
				st := Status{BatchID: id, Status: "running", Items: prev.Items, Shards: prev.Shards}
				if status, since, reason := pipeline.MemoState(e.GetMemo()); status == "paused" {
					st.Status, st.Paused, st.PausedSince, st.PauseReason = status, true, since, reason
				}
				states[id] = st
				continue
			}
			states[id] = StatusFromProgress(withInFlight(qctx, tc, p, Progress{}))
			cancel()
		}
		if len(resp.NextPageToken) == 0 {
			return nil
		}
		req.NextPageToken = resp.NextPageToken
	}
}
