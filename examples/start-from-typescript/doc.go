// Package startfromtypescript holds no Go code of its own: the example is
// start.mjs, a Node program that starts a batch through BatchWorkflow's
// public JSON contract (docs/contract.md) with @temporalio/client. Its test
// runs that program against a real `worker --dev`.
package startfromtypescript
