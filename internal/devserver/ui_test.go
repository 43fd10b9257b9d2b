package devserver

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/batchpipe/batchpipe/internal/testinfra"
)

// httpGet returns the status, content type and body of GET url.
func httpGet(t *testing.T, url string) (int, string, []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return resp.StatusCode, resp.Header.Get("Content-Type"), body
}

// TestWebUI serves the Web UI next to an in-memory server and checks, at the
// HTTP level, that the app and its assets load and that the UI's API lists
// a workflow that ran on the server.
func TestWebUI(t *testing.T) {
	port := testinfra.FreeTCPPort(t)
	s := startServer(t, Options{UIPort: port})
	base := "http://" + s.UIAddr()
	if want := net.JoinHostPort(DefaultHost, strconv.Itoa(port)); s.UIAddr() != want {
		t.Fatalf("UIAddr() = %q, want %q", s.UIAddr(), want)
	}

	// The single-page app, on / and on any of its routes, and one of its scripts.
	for _, path := range []string{"/", "/namespaces/default/workflows"} {
		code, ctype, body := httpGet(t, base+path)
		if code != http.StatusOK || !strings.HasPrefix(ctype, "text/html") || !strings.Contains(string(body), "<html") {
			t.Fatalf("GET %s: %d %q, body starts %.200q; want 200 with the UI's HTML", path, code, ctype, body)
		}
		if path != "/" {
			continue
		}
		script := regexp.MustCompile(`"(/_app/immutable/[^"]+\.js)"`).FindSubmatch(body)
		if script == nil {
			t.Fatalf("GET /: no /_app/ script in the page: %.500q", body)
		}
		if code, ctype, _ := httpGet(t, base+string(script[1])); code != http.StatusOK || !strings.Contains(ctype, "javascript") {
			t.Fatalf("GET %s: %d %q, want 200 with a script", script[1], code, ctype)
		}
	}

	// The UI's settings point it at the server's namespace.
	code, _, body := httpGet(t, base+"/api/v1/settings")
	var settings struct{ DefaultNamespace string }
	if err := json.Unmarshal(body, &settings); code != http.StatusOK || err != nil {
		t.Fatalf("GET /api/v1/settings: %d %v: %.300s", code, err, body)
	}
	if settings.DefaultNamespace != s.Namespace() {
		t.Fatalf("UI's default namespace is %q, want %q", settings.DefaultNamespace, s.Namespace())
	}

	// A finished workflow shows in the list the UI's workflows page loads.
	const id = "ui-listed-workflow"
	r := newRunner(t, s)
	r.greet(t, id, "ui")
	listURL := base + "/api/v1/namespaces/" + s.Namespace() + "/workflows"
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, _, body = httpGet(t, listURL)
		var list struct {
			Executions []struct {
				Execution struct{ WorkflowID string }
				Status    string
			}
		}
		if err := json.Unmarshal(body, &list); code != http.StatusOK || err != nil {
			t.Fatalf("GET %s: %d %v: %.300s", listURL, code, err, body)
		}
		if len(list.Executions) == 1 && list.Executions[0].Execution.WorkflowID == id &&
			list.Executions[0].Status == "WORKFLOW_EXECUTION_STATUS_COMPLETED" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s: want %s listed as completed, got %s", listURL, id, body)
		}
		time.Sleep(50 * time.Millisecond)
	}
	r.close()

	// Stop takes the UI down with the server and frees its port.
	stopServer(t, s)
	if _, err := http.Get(base + "/healthz"); err == nil {
		t.Fatalf("the UI still answers after Stop")
	}
	ln, err := net.Listen("tcp", s.UIAddr())
	if err != nil {
		t.Fatalf("UI port not free after Stop: %v", err)
	}
	ln.Close()
}

// TestWebUIPortBusy checks that Start fails at once, before starting the
// Temporal server, when the UI's port is taken.
func TestWebUIPortBusy(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port

	begin := time.Now()
	s, err := Start(context.Background(), Options{UIPort: port, Logger: testLogger(t)})
	if err == nil {
		s.Stop()
		t.Fatalf("Start with the UI on busy port %d succeeded", port)
	}
	if !strings.Contains(err.Error(), "UI port "+strconv.Itoa(port)) {
		t.Fatalf("Start: error %q does not name the UI port %d", err, port)
	}
	if d := time.Since(begin); d > 2*time.Second {
		t.Fatalf("Start took %v to report the busy UI port", d)
	}
}

func TestUIOptions(t *testing.T) {
	if got := (&Server{}).UIAddr(); got != "" {
		t.Fatalf("UIAddr() of a server without a UI = %q, want empty", got)
	}

	o, err := Options{UIPort: DefaultUIPort}.withDefaults()
	if err != nil || o.UIHost != DefaultHost {
		t.Fatalf("withDefaults: UIHost %q, %v; want %q", o.UIHost, err, DefaultHost)
	}
	o, err = Options{Host: "0.0.0.0", UIPort: DefaultUIPort}.withDefaults()
	if err != nil || o.UIHost != "0.0.0.0" {
		t.Fatalf("withDefaults: UIHost %q, %v; want the frontend's 0.0.0.0", o.UIHost, err)
	}
	for _, bad := range []Options{{UIPort: -1}, {UIPort: 70000}, {UIPort: 8233, UIHost: "ui.example"}} {
		if _, err := bad.withDefaults(); err == nil {
			t.Errorf("withDefaults(%+v) accepted it", bad)
		}
	}

	// The UI may not take one of the server's own ports.
	o, _ = Options{Port: 7233, UIPort: 7236}.withDefaults()
	err = checkUIPort(o, layoutFrom(7233))
	if err == nil || !strings.Contains(err.Error(), "UI port 7236") {
		t.Fatalf("checkUIPort with the UI on the worker service's port: %v", err)
	}

	cfg := uiConfig(Options{UIHost: "::1", UIPort: 8233, Namespace: "ns"}, "[::1]:7233")
	if cfg.Host != "[::1]" || cfg.Port != 8233 || cfg.TemporalGRPCAddress != "[::1]:7233" ||
		cfg.DefaultNamespace != "ns" || !cfg.EnableUI || !cfg.CORS.CookieInsecure {
		t.Fatalf("uiConfig: %+v", cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("uiConfig: %v", err)
	}
}
