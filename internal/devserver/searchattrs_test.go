package devserver

import (
	"context"
	"strings"
	"testing"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/operatorservice/v1"
	"go.temporal.io/sdk/client"
)

func TestStartRegistersSearchAttributes(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	want := map[string]enumspb.IndexedValueType{"TestRole": enumspb.INDEXED_VALUE_TYPE_KEYWORD}
	for round := range 2 { // the second start finds them registered
		s, err := Start(ctx, Options{Dir: dir, SearchAttributes: want})
		if err != nil {
			t.Fatalf("start %d: %v", round+1, err)
		}
		c, err := client.DialContext(ctx, client.Options{HostPort: s.FrontendAddr(), Namespace: s.Namespace()})
		if err != nil {
			t.Fatal(err)
		}
		have, err := c.OperatorService().ListSearchAttributes(ctx, &operatorservice.ListSearchAttributesRequest{Namespace: s.Namespace()})
		c.Close()
		if err != nil {
			t.Fatal(err)
		}
		if got := have.GetCustomAttributes()["TestRole"]; got != enumspb.INDEXED_VALUE_TYPE_KEYWORD {
			t.Errorf("start %d: TestRole is %v, want Keyword", round+1, got)
		}
		s.Stop()
	}
	// The same name with another type is refused, naming both.
	_, err := Start(ctx, Options{Dir: dir, SearchAttributes: map[string]enumspb.IndexedValueType{"TestRole": enumspb.INDEXED_VALUE_TYPE_INT}})
	if err == nil || !strings.Contains(err.Error(), "TestRole is a") || !strings.Contains(err.Error(), "Int") {
		t.Fatalf("conflicting type: err = %v", err)
	}
}
