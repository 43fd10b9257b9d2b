package pipeline

import (
	enumspb "go.temporal.io/api/enums/v1"
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
	// SearchAttrRole is "batch" or "shard".
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
