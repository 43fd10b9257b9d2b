// Package schema holds the JSON Schemas (draft 2020-12) of BatchWorkflow's
// public contract: batch-input.json (the workflow input, pipeline.BatchInput),
// progress.json (the "progress" query, pipeline.Progress) and
// batch-result.json (the result, pipeline.BatchResult). Its tests keep the
// schemas in step with the Go types and with BatchInput.Validate; see
// docs/contract.md.
package schema
