package embedded

import (
	"context"
	"log/slog"
	"strings"
)

// withoutCancelNoise wraps the handler of the Temporal SDK's logs: it drops
// the SDK's reports of activities (and their heartbeats) that ended because
// they were cancelled: what a stopping worker (Ctrl-C) or a cancelled batch
// does, and nothing a user needs to read. Every other record passes.
type withoutCancelNoise struct{ slog.Handler }

func (h withoutCancelNoise) Handle(ctx context.Context, r slog.Record) error {
	if r.Level >= slog.LevelWarn && (strings.HasPrefix(r.Message, "Activity error") || r.Message == "RecordActivityHeartbeat with error") {
		canceled := false
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "Error" {
				s := a.Value.String()
				canceled = s == "canceled" || s == "context canceled"
				return false
			}
			return true
		})
		if canceled {
			return nil
		}
	}
	return h.Handler.Handle(ctx, r)
}

func (h withoutCancelNoise) WithAttrs(attrs []slog.Attr) slog.Handler {
	return withoutCancelNoise{h.Handler.WithAttrs(attrs)}
}

func (h withoutCancelNoise) WithGroup(name string) slog.Handler {
	return withoutCancelNoise{h.Handler.WithGroup(name)}
}
