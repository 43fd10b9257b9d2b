package devserver

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"time"

	uiserver "github.com/temporalio/ui-server/v2/server"
	uiconfig "github.com/temporalio/ui-server/v2/server/config"
	uioptions "github.com/temporalio/ui-server/v2/server/server_options"
)

// DefaultUIPort is the port of the Temporal Web UI of `temporal server
// start-dev`; `worker --dev` serves its UI there too.
const DefaultUIPort = 8233

// webUI is a running Temporal Web UI (github.com/temporalio/ui-server): the
// UI's single-page app plus its HTTP API, which it forwards to the
// frontend's gRPC service.
type webUI struct {
	srv  *uiserver.Server
	addr string        // host:port to dial
	done chan struct{} // closed when the UI's HTTP server has returned
	err  error         // what it returned with, set before done is closed
}

// UIAddr returns the host:port of the Web UI, e.g. "127.0.0.1:8233", or ""
// when the server runs without one (Options.UIPort 0). Open it as
// "http://" + UIAddr().
func (s *Server) UIAddr() string {
	if s.ui == nil {
		return ""
	}
	return s.ui.addr
}

// uiDefaults completes and checks the UI fields of o; o.Host must be set.
func (o *Options) uiDefaults() error {
	if o.UIPort < 0 || o.UIPort > 65535 {
		return fmt.Errorf("devserver: UI port %d out of range", o.UIPort)
	}
	if o.UIHost == "" || o.UIHost == "localhost" {
		o.UIHost = o.Host
	}
	if net.ParseIP(o.UIHost) == nil {
		return fmt.Errorf("devserver: UI host %q is not an IP address", o.UIHost)
	}
	return nil
}

// checkUIPort fails early, before the Temporal server is started, when the
// UI's port is one of the server's own ports or is taken.
func checkUIPort(opts Options, ports portLayout) error {
	if opts.UIPort == 0 {
		return nil
	}
	if opts.UIPort >= ports.Frontend && opts.UIPort < ports.Frontend+PortSpan {
		return fmt.Errorf("devserver: UI port %d is one of the %d ports the server uses from frontend port %d",
			opts.UIPort, PortSpan, ports.Frontend)
	}
	return uiPortFree(opts)
}

func uiPortFree(opts Options) error {
	ln, err := net.Listen("tcp", net.JoinHostPort(opts.UIHost, strconv.Itoa(opts.UIPort)))
	if err != nil {
		return fmt.Errorf("devserver: Web UI port %d is not free (another Temporal dev server?): %w", opts.UIPort, err)
	}
	return ln.Close()
}

// uiConfig is the configuration of a local, unauthenticated UI in front of
// the frontend at frontendAddr, much as `temporal server start-dev` has it.
func uiConfig(opts Options, frontendAddr string) *uiconfig.Config {
	host := opts.UIHost
	if ip := net.ParseIP(host); ip != nil && ip.To4() == nil {
		host = "[" + host + "]" // the UI server joins host and port with a bare ':'
	}
	return &uiconfig.Config{
		Host:                host,
		Port:                opts.UIPort,
		TemporalGRPCAddress: frontendAddr,
		EnableUI:            true, // the embedded assets
		DefaultNamespace:    opts.Namespace,
		// Served over plain HTTP: the CSRF cookie must not require HTTPS.
		CORS: uiconfig.CORS{CookieInsecure: true},
		// No request log on the worker's output, and no calls from the
		// browser to temporal.io for news.
		HideLogs:         true,
		DisableNewsFetch: true,
	}
}

// startUI starts the Web UI and returns once it answers HTTP requests.
//
// The UI server's Start blocks and ends the process (echo's Logger.Fatal)
// if it cannot listen, so the port is checked just before; the gap in
// between is too short to matter for a local dev server.
func startUI(ctx context.Context, opts Options, frontendAddr string) (ui *webUI, err error) {
	if err := uiPortFree(opts); err != nil {
		return nil, err
	}
	defer func() {
		// NewServer panics on configuration and asset errors.
		if r := recover(); r != nil {
			ui, err = nil, fmt.Errorf("devserver: Web UI: %v", r)
		}
	}()
	ui = &webUI{
		srv:  uiserver.NewServer(uioptions.WithConfigProvider(uiConfig(opts, frontendAddr))),
		addr: net.JoinHostPort(dialHost(opts.UIHost), strconv.Itoa(opts.UIPort)),
		done: make(chan struct{}),
	}
	go func() {
		defer close(ui.done)
		ui.err = ui.srv.Start() // nil once stopped; a bind error if the port was taken
	}()
	if err := ui.waitReady(ctx); err != nil {
		ui.stop()
		return nil, err
	}
	return ui, nil
}

// waitReady polls the UI's health endpoint until it answers 200.
func (u *webUI) waitReady(ctx context.Context) error {
	client := &http.Client{Timeout: 2 * time.Second}
	url := "http://" + u.addr + "/healthz"
	var lastErr error
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return fmt.Errorf("devserver: Web UI: %w", err)
		}
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("GET /healthz: %s", resp.Status)
		}
		lastErr = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("devserver: Web UI on %s not ready: %w (last error: %v)", u.addr, ctx.Err(), lastErr)
		case <-u.done:
			if u.err != nil {
				return fmt.Errorf("devserver: Web UI on %s: %w", u.addr, u.err)
			}
			return fmt.Errorf("devserver: Web UI on %s stopped while starting (last error: %v)", u.addr, lastErr)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// stop closes the UI's listener and open connections and waits for its HTTP
// server to return. (The UI server's own gRPC connection to the frontend is
// not exposed by ui-server and stays idle until the process exits.)
func (u *webUI) stop() {
	u.srv.Stop()
	select {
	case <-u.done:
	case <-time.After(5 * time.Second):
	}
}
