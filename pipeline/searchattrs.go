package pipeline

import (
	"errors"
	"strings"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"
)

// Custom search attributes of batchpipe's workflows, for the Web UI and
// `temporal workflow list --query`. The embedded server and `worker --dev`
// register them; on a cluster its operator does (see the README). A batch
// started where they are missing runs without them.
var (
	// SearchAttrBatchID is the batch id, on the batch and its shards.
	SearchAttrBatchID = temporal.NewSearchAttributeKeyKeyword("BatchpipeBatchId")
	// SearchAttrStatus is the batch's status: running, then its manifest's.
	SearchAttrStatus = temporal.NewSearchAttributeKeyKeyword("BatchpipeStatus")
	// SearchAttrRole is "batch", "shard", or "schedule" (the workflow a
	// schedule starts each night, which starts that night's batch).
	SearchAttrRole = temporal.NewSearchAttributeKeyKeyword("BatchpipeRole")
)

// SearchAttributes lists batchpipe's search attributes and their types, to
// register them (devserver.Options.SearchAttributes, AddSearchAttributes).
func SearchAttributes() map[string]enumspb.IndexedValueType {
	return map[string]enumspb.IndexedValueType{
		SearchAttrBatchID.GetName(): enumspb.INDEXED_VALUE_TYPE_KEYWORD,
		SearchAttrStatus.GetName():  enumspb.INDEXED_VALUE_TYPE_KEYWORD,
		SearchAttrRole.GetName():    enumspb.INDEXED_VALUE_TYPE_KEYWORD,
	}
}

// startWithSearchAttributes starts a batch workflow with its search
// attributes (batch id, status running, role batch), and again without
// them when the server has them not registered: the batch runs there all
// the same, and its workflow, seeing none, never upserts one (which would
// fail its workflow task).
func startWithSearchAttributes(batchID string, o client.StartWorkflowOptions, start func(client.StartWorkflowOptions) (client.WorkflowRun, error)) (client.WorkflowRun, error) {
	with := o
	with.TypedSearchAttributes = temporal.NewSearchAttributes(SearchAttrBatchID.ValueSet(batchID),
		SearchAttrStatus.ValueSet("running"), SearchAttrRole.ValueSet("batch"))
	run, err := start(with)
	var invalid *serviceerror.InvalidArgument
	if errors.As(err, &invalid) && strings.Contains(strings.ToLower(invalid.Message), "search attribute") {
		return start(o)
	}
	return run, err
}
