// Package faults is batchpipe's fault suite: Go tests that run the real
// worker and submit binaries (and MinIO) as processes and break them — kill
// -9 mid-batch, a store that goes away, two workers of which one dies, the
// same batch submitted twice at once, processors that panic, hang or fail,
// cancel and redrive, bad environments, bad inputs, planted secrets — and
// end every case with a full check of the manifest against the inputs.
//
// Run it with `make test-faults`, which also rewrites the results table of
// RELIABILITY.md from the run; `make test` (and so CI) runs it too.
package faults
