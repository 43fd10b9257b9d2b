package devserver

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"

	"go.temporal.io/server/common/log"
	"go.temporal.io/server/common/log/tag"
)

// serverLogger passes the Temporal server's log records at or above min to
// a slog.Logger. Panic and fatal records are logged as errors: the server
// must not end the process that embeds it.
//
// Once muted (Server.Stop sets it) it drops everything: a server shutting
// down logs a burst of failed polls and canceled calls, and some of its
// system workers are never stopped (upstream TODO in service/worker/scanner)
// and would keep logging after Stop returns.
type serverLogger struct {
	log   *slog.Logger
	min   slog.Leveler
	muted *atomic.Bool
	// fatal is the first fatal record, "message (key=value ...)": while
	// the server is built one means it cannot run (say, a port it could
	// not listen on), and Start returns it as an error instead of going on
	// to a server that would crash.
	fatal *atomic.Pointer[string]
}

var (
	_ log.Logger     = serverLogger{}
	_ log.WithLogger = serverLogger{}
)

// ignoredMessages are server warnings that say nothing to a user of the
// embedded server.
var ignoredMessages = []string{
	// The HTTP API (and Nexus over HTTP) is deliberately not served.
	"HTTP API port has not been set",
}

func newServerLogger(l *slog.Logger, min slog.Leveler) serverLogger {
	return serverLogger{log: l.With("component", "temporal-server"), min: min, muted: new(atomic.Bool), fatal: new(atomic.Pointer[string])}
}

func (s serverLogger) Debug(msg string, tags ...tag.Tag)  { s.emit(slog.LevelDebug, msg, tags) }
func (s serverLogger) Info(msg string, tags ...tag.Tag)   { s.emit(slog.LevelInfo, msg, tags) }
func (s serverLogger) Warn(msg string, tags ...tag.Tag)   { s.emit(slog.LevelWarn, msg, tags) }
func (s serverLogger) Error(msg string, tags ...tag.Tag)  { s.emit(slog.LevelError, msg, tags) }
func (s serverLogger) DPanic(msg string, tags ...tag.Tag) { s.emit(slog.LevelError, msg, tags) }
func (s serverLogger) Panic(msg string, tags ...tag.Tag)  { s.emit(slog.LevelError, msg, tags) }
func (s serverLogger) Fatal(msg string, tags ...tag.Tag) {
	s.emit(slog.LevelError, msg, tags)
	parts := make([]string, len(tags))
	for i, t := range tags {
		parts[i] = fmt.Sprintf("%s=%v", t.Key(), t.Value())
	}
	text := msg
	if len(parts) > 0 {
		text += " (" + strings.Join(parts, ", ") + ")"
	}
	s.fatal.CompareAndSwap(nil, &text)
}

// fatalRecord is the first fatal record logged, or "".
func (s serverLogger) fatalRecord() string {
	if p := s.fatal.Load(); p != nil {
		return *p
	}
	return ""
}

// With returns a logger that adds tags to every record.
func (s serverLogger) With(tags ...tag.Tag) log.Logger {
	args := make([]any, len(tags))
	for i, t := range tags {
		args[i] = slog.Any(t.Key(), t.Value())
	}
	return serverLogger{log: s.log.With(args...), min: s.min, muted: s.muted, fatal: s.fatal}
}

// mute drops every later record of this logger and those derived from it.
func (s serverLogger) mute() { s.muted.Store(true) }

func (s serverLogger) emit(level slog.Level, msg string, tags []tag.Tag) {
	ctx := context.Background()
	if s.muted.Load() || level < s.min.Level() || !s.log.Enabled(ctx, level) {
		return
	}
	for _, ignored := range ignoredMessages {
		if strings.HasPrefix(msg, ignored) {
			return
		}
	}
	attrs := make([]slog.Attr, len(tags))
	for i, t := range tags {
		attrs[i] = slog.Any(t.Key(), t.Value())
	}
	s.log.LogAttrs(ctx, level, msg, attrs...)
}
