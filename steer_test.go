package batchpipe

import (
	"context"
	"errors"
	"math"
	"testing"

	"github.com/batchpipe/batchpipe/pipeline"
)

// A bad update is refused before Temporal is asked (the workflow's
// validator refuses the same values for any client): ErrInvalid, naming
// the value.
func TestUpdateRefusesBadValues(t *testing.T) {
	b := &Batch{id: "x"}
	neg, nan := -1.0, math.NaN()
	bad := pipeline.MaxFailedPercent(101)
	for name, u := range map[string]Update{
		"nothing": {}, "concurrency -1": {Concurrency: -1}, "rate -1": {Rate: &neg}, "rate NaN": {Rate: &nan},
		"max failures 101%": {MaxFailures: &bad},
	} {
		_, err := b.Update(context.Background(), u)
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: error %v, want ErrInvalid", name, err)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
}
