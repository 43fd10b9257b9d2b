package faults_test

import "strings"

// allowExec is the worker flags (--allow-exec) that let batches run these
// exec: processors on a worker that is not --dev.
func allowExec(processors ...string) []string {
	var args []string
	for _, p := range processors {
		args = append(args, "--allow-exec", strings.TrimPrefix(p, "exec:"))
	}
	return args
}

// allowFile is the worker flag that lets batches use file:// stores.
var allowFile = []string{"--allow-scheme", "file"}
