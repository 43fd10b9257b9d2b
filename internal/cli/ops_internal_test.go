package cli

import (
	"testing"

	"github.com/batchpipe/batchpipe"
)

// status's counts add up: a live batch's items done in unfinished shards
// are named as such, not left as a gap between done and succeeded + failed.
func TestItemsLine(t *testing.T) {
	for _, c := range []struct {
		st   batchpipe.Status
		want string
	}{
		{batchpipe.Status{Items: 12, Done: 12, Succeeded: 10, Failed: 2}, "items: 12/12 done, 10 succeeded, 2 failed"},
		{batchpipe.Status{Items: 20000, Done: 5000, Succeeded: 2990, Failed: 10}, "items: 5000/20000 done: 2990 succeeded and 10 failed in finished shards, 2000 more in shards not finished yet"},
	} {
		if got := itemsLine(c.st); got != c.want {
			t.Errorf("itemsLine(%+v) = %q, want %q", c.st, got, c.want)
		}
	}
}
