package devserver

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/operatorservice/v1"
	"go.temporal.io/sdk/client"
	sdklog "go.temporal.io/sdk/log"
)

// registerSearchAttributes adds the custom search attributes of opts that
// the namespace lacks, as `temporal operator search-attribute create`
// would. An attribute of the same name and another type is an error.
func (s *Server) registerSearchAttributes(ctx context.Context, want map[string]enumspb.IndexedValueType) error {
	if len(want) == 0 {
		return nil
	}
	c, err := client.DialContext(ctx, client.Options{HostPort: s.addr, Namespace: s.namespace,
		Logger: sdklog.NewStructuredLogger(slog.New(slog.DiscardHandler))})
	if err != nil {
		return err
	}
	defer c.Close()
	have, err := c.OperatorService().ListSearchAttributes(ctx, &operatorservice.ListSearchAttributesRequest{Namespace: s.namespace})
	if err != nil {
		return fmt.Errorf("devserver: listing search attributes: %w", err)
	}
	add := map[string]enumspb.IndexedValueType{}
	for _, name := range slices.Sorted(maps.Keys(want)) {
		t, ok := have.GetCustomAttributes()[name]
		switch {
		case !ok:
			add[name] = want[name]
		case t != want[name]:
			return fmt.Errorf("devserver: search attribute %s is a %s, want %s", name, t, want[name])
		}
	}
	if len(add) == 0 {
		return nil
	}
	_, err = c.OperatorService().AddSearchAttributes(ctx, &operatorservice.AddSearchAttributesRequest{Namespace: s.namespace, SearchAttributes: add})
	if err != nil {
		return fmt.Errorf("devserver: adding search attributes: %w", err)
	}
	return nil
}
