package devserver

import (
	"testing"

	"github.com/batchpipe/batchpipe/internal/testinfra"
)

func TestTestinfraKnowsPortSpan(t *testing.T) {
	if testinfra.DevServerSpan != PortSpan {
		t.Fatalf("testinfra.DevServerSpan = %d, want devserver.PortSpan %d", testinfra.DevServerSpan, PortSpan)
	}
}
