// Package temporaltest starts a real, in-process Temporal server for tests
// (internal/devserver with its state in memory) and a client of it.
//
// A test binary that shares one server among its tests starts it from
// TestMain with Start; a test that needs a server of its own calls New.
// It is apart from internal/testinfra because it imports internal/devserver,
// whose own tests use testinfra.
package temporaltest

import (
	"context"
	"log/slog"
	"testing"

	"go.temporal.io/sdk/client"
	sdklog "go.temporal.io/sdk/log"

	"github.com/batchpipe/batchpipe/internal/devserver"
)

// Quiet is the server log level used when Options.LogLevel is nil: above
// every record, so that a test's output is the test's.
const Quiet = slog.LevelError + 8

// Server is a running in-process Temporal server and a client of it (on
// its namespace). FrontendAddr and Namespace are the server's.
type Server struct {
	*devserver.Server
	Client client.Client
}

// Start starts a server with opts (a nil LogLevel is Quiet) and dials it;
// ctx bounds the start only. Stop it when done.
func Start(ctx context.Context, opts devserver.Options) (*Server, error) {
	if opts.LogLevel == nil {
		opts.LogLevel = Quiet
	}
	srv, err := devserver.Start(ctx, opts)
	if err != nil {
		return nil, err
	}
	c, err := client.DialContext(ctx, client.Options{
		HostPort:  srv.FrontendAddr(),
		Namespace: srv.Namespace(),
		Logger:    sdklog.NewStructuredLogger(slog.New(slog.DiscardHandler)),
	})
	if err != nil {
		srv.Stop()
		return nil, err
	}
	return &Server{Server: srv, Client: c}, nil
}

// New is Start for one test: it fails tb if the server does not start and
// stops it when the test ends.
func New(ctx context.Context, tb testing.TB, opts devserver.Options) *Server {
	tb.Helper()
	s, err := Start(ctx, opts)
	if err != nil {
		tb.Fatalf("starting Temporal: %v", err)
	}
	tb.Cleanup(s.Stop)
	return s
}

// Stop closes the client and stops the server.
func (s *Server) Stop() {
	s.Client.Close()
	s.Server.Stop()
}
