package testinfra

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"text/template"
	"time"

	"go.temporal.io/api/serviceerror"
	workflowservice "go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	sdklog "go.temporal.io/sdk/log"
	"go.temporal.io/server/api/adminservice/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/durationpb"
)

// A self-hosted Temporal cluster for tests: the server binary of the
// pinned go.temporal.io/server (cmd/server), one process per service, on
// PostgreSQL (the postgres12_pgx plugin) whose schema the server's own SQL
// tool (cmd/tools/sql) sets up from the module's schema files.

// TemporalSQLPlugin is the server's SQL plugin the cluster uses: PostgreSQL
// through pgx.
const TemporalSQLPlugin = "postgres12_pgx"

// TemporalServices are the services StartTemporal runs, one process each.
var TemporalServices = []string{"history", "matching", "frontend", "worker"}

// TemporalBinaries are the server's binaries and schema files.
type TemporalBinaries struct {
	Server    string // cmd/server
	SQLTool   string // cmd/tools/sql
	SchemaDir string // schema/postgresql/v12 in the module cache
}

// BuildTemporal builds the server and its SQL tool from the go.temporal.io/
// server of the repository's go.mod into dir. The main go.mod is left
// alone: the build uses a copy (-modfile), to which the go.sum lines of
// the server's own commands (not needed by the library) are added.
func BuildTemporal(dir string) (TemporalBinaries, error) {
	root, err := RepoRoot()
	if err != nil {
		return TemporalBinaries{}, err
	}
	for _, f := range []string{"go.mod", "go.sum"} {
		data, err := os.ReadFile(filepath.Join(root, f))
		if err != nil {
			return TemporalBinaries{}, err
		}
		if err := os.WriteFile(filepath.Join(dir, "build"+filepath.Ext(f)), data, 0o644); err != nil {
			return TemporalBinaries{}, err
		}
	}
	run := func(args ...string) (string, error) {
		cmd := exec.Command("go", args...)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "GOWORK=off")
		out, err := cmd.CombinedOutput()
		if err != nil {
			return "", fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, Tail(string(out), 4000))
		}
		return strings.TrimSpace(string(out)), nil
	}
	modDir, err := run("list", "-m", "-f", "{{.Dir}}", "go.temporal.io/server")
	if err != nil {
		return TemporalBinaries{}, err
	}
	modfile := "-modfile=" + filepath.Join(dir, "build.mod")
	if _, err := run("build", "-mod=mod", modfile, "-o", dir+string(filepath.Separator),
		"go.temporal.io/server/cmd/server", "go.temporal.io/server/cmd/tools/sql"); err != nil {
		return TemporalBinaries{}, err
	}
	b := TemporalBinaries{
		Server:    filepath.Join(dir, "server"),
		SQLTool:   filepath.Join(dir, "sql"),
		SchemaDir: filepath.Join(modDir, "schema", "postgresql", "v12"),
	}
	if _, err := os.Stat(filepath.Join(b.SchemaDir, "temporal", "versioned")); err != nil {
		return TemporalBinaries{}, fmt.Errorf("schema files of go.temporal.io/server: %w", err)
	}
	return b, nil
}

// SQLToolArgs are the SQL tool's connection flags for database db on pg.
func SQLToolArgs(pg *PostgresProcess, db string) []string {
	return []string{"--plugin", TemporalSQLPlugin, "--ep", pg.Host, "--port", strconv.Itoa(pg.Port),
		"--user", pg.User, "--password", pg.Password, "--db", db}
}

// SetupSchema creates Temporal's two databases on pg (temporal and
// temporal_visibility) and brings their schemas to the newest version, as
// Temporal's own Makefile does: create-database, setup-schema -v 0.0,
// update-schema -d <versioned dir>. Its output goes to dir/schema.log.
func (b TemporalBinaries) SetupSchema(pg *PostgresProcess, dir string) error {
	log, err := os.Create(filepath.Join(dir, "schema.log"))
	if err != nil {
		return err
	}
	defer log.Close()
	for _, db := range []struct{ name, schema string }{{"temporal", "temporal"}, {"temporal_visibility", "visibility"}} {
		for _, step := range [][]string{
			{"create-database"},
			{"setup-schema", "-v", "0.0"},
			{"update-schema", "-d", filepath.Join(b.SchemaDir, db.schema, "versioned")},
		} {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			out, err := exec.CommandContext(ctx, b.SQLTool, append(SQLToolArgs(pg, db.name), step...)...).CombinedOutput()
			cancel()
			log.Write(out)
			if err != nil {
				return fmt.Errorf("temporal sql tool: %s on %s (%s): %v\n%s", step[0], db.name, pg.Addr(), err, Tail(string(out), 4000))
			}
		}
	}
	return nil
}

// TemporalOptions configures StartTemporal.
type TemporalOptions struct {
	Binaries TemporalBinaries
	// Postgres holds the schema (see SetupSchema).
	Postgres *PostgresProcess
	// Dir gets the configuration and a log per service process.
	Dir string
	// Namespace is registered once the cluster is up; default "default".
	Namespace string
	// DynamicConfig, if set, is the services' dynamic config file.
	DynamicConfig string
	// StartTimeout bounds the start (or a restart) until every service is
	// in the membership ring; default 30 s.
	StartTimeout time.Duration
}

// TemporalCluster is a running cluster: one process per service.
type TemporalCluster struct {
	Address   string // the frontend's host:port
	Namespace string
	Config    string // the configuration file
	opts      TemporalOptions
	base      int // the frontend's port, the others at fixed offsets
	procs     map[string]*Process
	starts    int
}

// temporalPorts is how many ports from the frontend's a cluster uses: gRPC
// and membership per service, and the frontend's HTTP port.
const temporalPorts = 2*4 + 1

// StartTemporal writes a configuration for a free span of ports on
// 127.0.0.1, starts each service, waits until all of them are in the
// membership ring and registers the namespace. A service that exits or
// a cluster not up within StartTimeout is an error that names the service
// and carries the tails of the logs.
func StartTemporal(opts TemporalOptions) (*TemporalCluster, error) {
	if opts.Namespace == "" {
		opts.Namespace = "default"
	}
	if opts.StartTimeout <= 0 {
		opts.StartTimeout = 30 * time.Second
	}
	var lastErr error
	for attempt := range 3 { // a port picked free may be taken before a service binds it
		base, err := FreePortSpan(temporalPorts + 1)
		if err != nil {
			return nil, err
		}
		c := &TemporalCluster{
			Address:   net.JoinHostPort("127.0.0.1", strconv.Itoa(base)),
			Namespace: opts.Namespace,
			Config:    filepath.Join(opts.Dir, fmt.Sprintf("temporal-%d.yaml", attempt+1)),
			opts:      opts,
			base:      base,
			procs:     map[string]*Process{},
		}
		if lastErr = c.writeConfig(base); lastErr != nil {
			return nil, lastErr
		}
		if lastErr = c.start(); lastErr == nil {
			return c, nil
		}
		c.Stop()
		if _, taken := errors.AsType[portTakenError](lastErr); !taken {
			break
		}
	}
	return nil, lastErr
}

// portTakenError is a start that failed on a port in use.
type portTakenError struct{ error }

// start starts history alone until its gRPC port answers (by then it has
// written the cluster's metadata: services starting together on a fresh
// database race to insert it, and the losers exit), then the others.
func (c *TemporalCluster) start() error {
	ctx, cancel := context.WithTimeout(context.Background(), c.opts.StartTimeout)
	defer cancel()
	if err := c.startService("history"); err != nil {
		return err
	}
	if err := c.waitListening(ctx, "history", net.JoinHostPort("127.0.0.1", strconv.Itoa(c.base+2))); err != nil {
		return err
	}
	for _, s := range TemporalServices {
		if s == "history" {
			continue
		}
		if err := c.startService(s); err != nil {
			return err
		}
	}
	if err := c.waitRing(ctx, TemporalServices...); err != nil {
		return err
	}
	return c.registerNamespace(ctx)
}

// startService starts one service's process (its log: <service>-<n>.log).
func (c *TemporalCluster) startService(service string) error {
	c.starts++
	cmd := exec.Command(c.opts.Binaries.Server, "--config-file", c.Config, "--allow-no-auth", "start", "--service", service)
	cmd.Dir = c.opts.Dir
	p, err := StartProcess("temporal "+service, filepath.Join(c.opts.Dir, fmt.Sprintf("temporal-%s-%d.log", service, c.starts)), cmd)
	if err != nil {
		return err
	}
	c.procs[service] = p
	return nil
}

// Service is the process running service.
func (c *TemporalCluster) Service(service string) *Process { return c.procs[service] }

// Restart stops service (SIGTERM) and starts it again on the same ports,
// waiting until it is back in the membership ring.
func (c *TemporalCluster) Restart(service string) error {
	p := c.procs[service]
	if p == nil {
		return fmt.Errorf("temporal: no service %q", service)
	}
	if err := p.Stop(syscall.SIGTERM, 30*time.Second); err != nil {
		return fmt.Errorf("temporal %s did not stop cleanly: %v\n%s", service, err, p.Tail())
	}
	if err := c.startService(service); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.opts.StartTimeout)
	defer cancel()
	return c.waitRing(ctx, service)
}

// Stop stops every service (SIGTERM, then SIGKILL after 30 s) and returns
// the first one that did not stop cleanly.
func (c *TemporalCluster) Stop() error {
	var first error
	for _, s := range TemporalServices {
		if p := c.procs[s]; p != nil {
			if err := p.Stop(syscall.SIGTERM, 30*time.Second); err != nil && first == nil {
				first = fmt.Errorf("temporal %s: %w", s, err)
			}
		}
	}
	return first
}

// Logs are the tails of every service's output, for failure messages.
func (c *TemporalCluster) Logs() string {
	var b strings.Builder
	for _, s := range TemporalServices {
		if p := c.procs[s]; p != nil {
			fmt.Fprintf(&b, "--- temporal %s:\n%s\n", s, Tail(p.Output(), 2000))
		}
	}
	return b.String()
}

// exited returns an error naming a service process that has exited.
func (c *TemporalCluster) exited() error {
	for _, s := range TemporalServices {
		if p := c.procs[s]; p != nil {
			if done, err := p.Exited(); done {
				err := fmt.Errorf("temporal %s exited (%v):\n%s", s, err, p.Tail())
				if strings.Contains(p.Output(), "address already in use") {
					return portTakenError{err}
				}
				return err
			}
		}
	}
	return nil
}

// waitListening waits until addr accepts connections.
func (c *TemporalCluster) waitListening(ctx context.Context, service, addr string) error {
	for {
		if err := c.exited(); err != nil {
			return err
		}
		if conn, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			conn.Close()
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("temporal %s: nothing listens on %s within %v\n%s", service, addr, c.opts.StartTimeout, c.Logs())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// waitRing waits until the frontend's DescribeCluster lists a member in
// the membership ring of each of roles.
func (c *TemporalCluster) waitRing(ctx context.Context, roles ...string) error {
	conn, err := grpc.NewClient(c.Address, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	admin := adminservice.NewAdminServiceClient(conn)
	var missing []string
	var lastErr error
	for {
		if err := c.exited(); err != nil {
			return err
		}
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		resp, err := admin.DescribeCluster(rctx, &adminservice.DescribeClusterRequest{})
		cancel()
		lastErr, missing = err, roles
		if err == nil {
			missing = nil
			for _, role := range roles {
				n := int32(0)
				for _, r := range resp.GetMembershipInfo().GetRings() {
					if r.GetRole() == role {
						n = r.GetMemberCount()
					}
				}
				if n == 0 {
					missing = append(missing, role)
				}
			}
			if len(missing) == 0 {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("temporal: %v not in the membership ring on %s within %v (last error: %v)\n%s",
				missing, c.Address, c.opts.StartTimeout, lastErr, c.Logs())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// registerNamespace registers the namespace (one day's retention) unless it
// exists, and waits until the frontend describes it.
func (c *TemporalCluster) registerNamespace(ctx context.Context) error {
	nc, err := client.NewNamespaceClient(client.Options{
		HostPort: c.Address,
		Logger:   sdklog.NewStructuredLogger(slog.New(slog.DiscardHandler)),
	})
	if err != nil {
		return err
	}
	defer nc.Close()
	for {
		err := nc.Register(ctx, &workflowservice.RegisterNamespaceRequest{
			Namespace:                        c.Namespace,
			WorkflowExecutionRetentionPeriod: durationpb.New(24 * time.Hour),
		})
		if _, exists := errors.AsType[*serviceerror.NamespaceAlreadyExists](err); err == nil || exists {
			if _, err = nc.Describe(ctx, c.Namespace); err == nil {
				return nil
			}
		}
		if e := c.exited(); e != nil {
			return e
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("temporal: registering namespace %s on %s: %v\n%s", c.Namespace, c.Address, err, c.Logs())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// writeConfig writes the cluster's configuration for ports from base.
func (c *TemporalCluster) writeConfig(base int) error {
	f, err := os.Create(c.Config)
	if err != nil {
		return err
	}
	defer f.Close()
	return temporalConfig.Execute(f, map[string]any{
		"Base": base, "Postgres": c.opts.Postgres.Addr(),
		"User": c.opts.Postgres.User, "Password": c.opts.Postgres.Password,
		"DynamicConfig": c.opts.DynamicConfig, "Plugin": TemporalSQLPlugin,
	})
}

// temporalConfig is the server's configuration: PostgreSQL through pgx,
// every service on 127.0.0.1 at fixed offsets from the frontend's port
// (so that a restarted service comes back where the others expect it).
var temporalConfig = template.Must(template.New("temporal.yaml").Funcs(template.FuncMap{
	"add": func(a, b int) int { return a + b },
}).Parse(`log:
  stdout: true
  level: warn
persistence:
  defaultStore: default
  visibilityStore: visibility
  numHistoryShards: 4
  datastores:
    default:
      sql:
        pluginName: {{.Plugin}}
        databaseName: temporal
        connectAddr: "{{.Postgres}}"
        connectProtocol: tcp
        user: "{{.User}}"
        password: "{{.Password}}"
        maxConns: 20
        maxIdleConns: 20
        maxConnLifetime: 1h
    visibility:
      sql:
        pluginName: {{.Plugin}}
        databaseName: temporal_visibility
        connectAddr: "{{.Postgres}}"
        connectProtocol: tcp
        user: "{{.User}}"
        password: "{{.Password}}"
        maxConns: 10
        maxIdleConns: 10
        maxConnLifetime: 1h
global:
  membership:
    maxJoinDuration: 30s
    broadcastAddress: 127.0.0.1
services:
  frontend:
    rpc: {bindOnIP: 127.0.0.1, grpcPort: {{.Base}}, membershipPort: {{add .Base 1}}, httpPort: {{add .Base 8}}}
  history:
    rpc: {bindOnIP: 127.0.0.1, grpcPort: {{add .Base 2}}, membershipPort: {{add .Base 3}}}
  matching:
    rpc: {bindOnIP: 127.0.0.1, grpcPort: {{add .Base 4}}, membershipPort: {{add .Base 5}}}
  worker:
    rpc: {bindOnIP: 127.0.0.1, grpcPort: {{add .Base 6}}, membershipPort: {{add .Base 7}}}
clusterMetadata:
  enableGlobalNamespace: false
  failoverVersionIncrement: 10
  masterClusterName: active
  currentClusterName: active
  clusterInformation:
    active:
      enabled: true
      initialFailoverVersion: 1
      rpcName: frontend
      rpcAddress: "127.0.0.1:{{.Base}}"
dcRedirectionPolicy:
  policy: noop
publicClient:
  hostPort: "127.0.0.1:{{.Base}}"
{{- if .DynamicConfig}}
dynamicConfigClient:
  filepath: "{{.DynamicConfig}}"
  pollInterval: 10s
{{- end}}
`))
