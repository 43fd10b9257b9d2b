// Package devserver runs an embedded Temporal server inside the current
// process, in the manner of the Temporal CLI's `temporal server start-dev`.
//
// It backs `worker --dev`, the `submit` CLI's embedded default and tests.
// State lives in a SQLite file under a state directory (or in memory when no
// directory is given). A server restarted on the same directory comes back on
// exactly the same ports, remembered in the directory, and with static service
// membership, so it resumes work at once instead of waiting for the previous
// process's cluster members to expire.
package devserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	sdklog "go.temporal.io/sdk/log"
	"go.temporal.io/server/common/authorization"
	"go.temporal.io/server/common/cluster"
	"go.temporal.io/server/common/config"
	"go.temporal.io/server/common/dynamicconfig"
	"go.temporal.io/server/common/membership/static"
	sqliteplugin "go.temporal.io/server/common/persistence/sql/sqlplugin/sqlite"
	"go.temporal.io/server/common/primitives"
	sqliteschema "go.temporal.io/server/schema/sqlite"
	"go.temporal.io/server/temporal"
	"google.golang.org/protobuf/types/known/durationpb"
)

const (
	// DefaultHost is the address the frontend listens on when Options.Host is empty.
	DefaultHost = "127.0.0.1"
	// DefaultNamespace is the namespace used when Options.Namespace is empty.
	DefaultNamespace = "default"
	// DefaultRetention is how long closed workflows of a namespace registered
	// by Start are kept.
	DefaultRetention = 72 * time.Hour

	// DatabaseFile is the name of the SQLite file inside the state directory.
	DatabaseFile = "temporal.db"
	// PortsFile is the name of the file inside the state directory that
	// remembers the ports of the server.
	PortsFile = "ports.json"
	// LockFile is the name of the file inside the state directory that is
	// locked while a server runs on that directory.
	LockFile = "lock"

	// schemaMarkerFile exists while the schema of a new database is being
	// created; finding it at start means an earlier setup was interrupted.
	schemaMarkerFile = "temporal.db.init"

	clusterName = "active"
	// loopback is where the history, matching and worker services listen and
	// how they find each other; only the frontend listens on Options.Host.
	loopback = "127.0.0.1"
)

// ErrStateDirInUse is returned (wrapped) by Start when another process, or
// another Server in this process, runs a server on the same state directory.
var ErrStateDirInUse = errors.New("state directory in use")

// Options configures Start.
type Options struct {
	// Dir is the state directory. The SQLite database is Dir/temporal.db,
	// the chosen ports are remembered in Dir/ports.json and Dir/lock keeps
	// two processes from using the directory at once. The directory is
	// created if missing. An empty Dir keeps all state in memory (tests).
	Dir string
	// Host is the IP address the frontend listens on; default "127.0.0.1"
	// ("localhost" means the same). The other services always listen on
	// 127.0.0.1.
	Host string
	// Port is the frontend gRPC port. The other services use the ports that
	// follow it (see PortSpan). Zero chooses free ports; with Dir set, the
	// choice is remembered in Dir so that restarts use the same ports.
	Port int
	// Namespace is the namespace to register if it does not exist yet;
	// default "default".
	Namespace string
	// Logger receives the server's log records. Nil logs to stderr.
	Logger *slog.Logger
	// LogLevel is the lowest level of server log records that are passed to
	// Logger. Nil means slog.LevelWarn: the server is chatty at info level.
	LogLevel slog.Leveler
	// UIPort is the port of the Temporal Web UI (DefaultUIPort, 8233, is
	// that of `temporal server start-dev`); zero serves no UI.
	UIPort int
	// UIHost is the IP address the Web UI listens on; default Host.
	UIHost string
	// SearchAttributes are custom search attributes (name → type) that
	// Start registers in the namespace if it lacks them.
	SearchAttributes map[string]enumspb.IndexedValueType
	// NoSystemWorker leaves out Temporal's worker service (the system
	// workflows: schedules, batch operations, namespace deletion), which
	// saves ~70 ms of start and stop; for servers that live for one
	// command, like submit's embedded one.
	NoSystemWorker bool
}

// Server is a running embedded Temporal server. Create one with Start and
// release it with Stop.
type Server struct {
	srv       temporal.Server
	logger    serverLogger
	addr      string
	namespace string
	lock      *dirLock
	ui        *webUI

	stopOnce sync.Once
	stopErr  error
}

// Start starts an embedded Temporal server and returns once its frontend
// answers and the namespace is usable. ctx bounds the whole start-up; the
// server itself keeps running after ctx ends, until Stop.
//
// Start fails with an *InUseError (errors.Is(err, ErrStateDirInUse)) when
// the state directory is held by another server, and with an error naming
// the port and the directory when a port the directory remembers is taken.
func Start(ctx context.Context, opts Options) (*Server, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	SetBuildID()

	var (
		lock   *dirLock
		layout portLayout
		held   heldPorts // until the server binds them (see heldPorts)
		sqlCfg *config.SQL
	)
	defer held.release() // &held's method: releases what is held when Start returns
	if opts.Dir != "" {
		if err := os.MkdirAll(opts.Dir, 0o755); err != nil {
			return nil, fmt.Errorf("devserver: create state directory: %w", err)
		}
		lock, err = acquireDirLock(opts.Dir)
		if err != nil {
			return nil, err
		}
		defer func() {
			if lock != nil { // not handed over to a Server
				lock.release()
			}
		}()
		layout, held, err = persistentPorts(opts.Dir, opts.Host, opts.Port)
		if err != nil {
			return nil, err
		}
		sqlCfg, err = prepareFileDatabase(opts.Dir)
		if err != nil {
			return nil, err
		}
	} else {
		layout, held, err = choosePorts(opts.Host, opts.Port)
		if err != nil {
			return nil, err
		}
		sqlCfg = memoryDatabase()
	}
	if err := checkUIPort(opts, layout); err != nil {
		return nil, err
	}

	if err := registerNamespace(sqlCfg, opts.Namespace); err != nil {
		return nil, err
	}

	logger := newServerLogger(opts.Logger, opts.LogLevel)
	held.release() // the server binds them from here on
	srv, err := newTemporalServer(opts, layout, sqlCfg, logger)
	if err != nil {
		return nil, err
	}
	if fatal := logger.fatalRecord(); fatal != "" {
		// Say a port taken since it was found free: started, the server
		// would crash on the listener it does not have.
		logger.mute()
		return nil, fmt.Errorf("devserver: build temporal server (frontend port %d): %s", layout.Frontend, fatal)
	}
	if err := srv.Start(); err != nil {
		logger.mute()
		return nil, fmt.Errorf("devserver: start temporal server: %w", err)
	}
	s := &Server{
		srv:       srv,
		logger:    logger,
		addr:      net.JoinHostPort(dialHost(opts.Host), strconv.Itoa(layout.Frontend)),
		namespace: opts.Namespace,
		lock:      lock,
	}
	lock = nil // s.Stop releases it from now on
	if err := s.waitReady(ctx); err != nil {
		_ = s.Stop()
		return nil, err
	}
	if err := s.registerSearchAttributes(ctx, opts.SearchAttributes); err != nil {
		_ = s.Stop()
		return nil, err
	}
	if opts.UIPort != 0 {
		if s.ui, err = startUI(ctx, opts, s.addr); err != nil {
			_ = s.Stop()
			return nil, err
		}
	}
	return s, nil
}

// FrontendAddr returns the host:port of the frontend gRPC service, e.g.
// "127.0.0.1:7233", for client.Options.HostPort.
func (s *Server) FrontendAddr() string { return s.addr }

// Namespace returns the namespace that Start registered.
func (s *Server) Namespace() string { return s.namespace }

// Stop shuts the server down and releases the state directory. Calling it
// again returns the first call's result.
//
// The process keeps a few things of a stopped server: the SQLite
// connection (the plugin pools connections for the life of the process) and
// some idle system-worker goroutines that the Temporal server never stops.
// Starting again on the same directory in the same process works.
func (s *Server) Stop() error {
	s.stopOnce.Do(func() {
		if s.ui != nil {
			s.ui.stop()
		}
		s.logger.mute()
		s.stopErr = s.srv.Stop()
		if s.lock != nil {
			s.lock.release()
		}
	})
	return s.stopErr
}

func (o Options) withDefaults() (Options, error) {
	if o.Host == "" || o.Host == "localhost" {
		o.Host = DefaultHost
	}
	if net.ParseIP(o.Host) == nil {
		return o, fmt.Errorf("devserver: host %q is not an IP address", o.Host)
	}
	if o.Port < 0 || o.Port+PortSpan-1 > 65535 {
		return o, fmt.Errorf("devserver: port %d out of range (the server uses %d ports from it)", o.Port, PortSpan)
	}
	if o.Namespace == "" {
		o.Namespace = DefaultNamespace
	}
	if err := o.uiDefaults(); err != nil {
		return o, err
	}
	if o.LogLevel == nil {
		o.LogLevel = slog.LevelWarn
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: o.LogLevel}))
	}
	if o.Dir != "" {
		if strings.ContainsAny(o.Dir, "?#%") {
			// The path becomes part of a SQLite URI.
			return o, fmt.Errorf("devserver: state directory %q: the characters ? # %% are not supported", o.Dir)
		}
		abs, err := filepath.Abs(o.Dir)
		if err != nil {
			return o, fmt.Errorf("devserver: state directory: %w", err)
		}
		o.Dir = abs
	}
	return o, nil
}

// dialHost is the address clients in this process use to reach a frontend
// listening on host.
func dialHost(host string) string {
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		return loopback
	}
	return host
}

// sqlitePragmas apply to the on-disk database. They barely change throughput
// but keep readers from blocking the writer.
var sqlitePragmas = map[string]string{
	"journal_mode": "wal",
	"synchronous":  "normal",
}

// prepareFileDatabase returns the SQL configuration of Dir/temporal.db,
// creating the schema if the file is new (or its creation was interrupted).
func prepareFileDatabase(dir string) (*config.SQL, error) {
	dbPath := filepath.Join(dir, DatabaseFile)
	cfg := &config.SQL{
		PluginName:        sqliteplugin.PluginName,
		DatabaseName:      dbPath,
		ConnectAttributes: map[string]string{"mode": "rwc"},
	}
	for k, v := range sqlitePragmas {
		cfg.ConnectAttributes[k] = v
	}

	marker := filepath.Join(dir, schemaMarkerFile)
	_, statErr := os.Stat(dbPath)
	_, markerErr := os.Stat(marker)
	switch {
	case statErr == nil && markerErr != nil:
		return cfg, nil // an existing, complete database
	case statErr != nil && !errors.Is(statErr, os.ErrNotExist):
		return nil, fmt.Errorf("devserver: database: %w", statErr)
	}

	// A new database, or one whose schema setup never finished: start over.
	removeDatabaseFiles(dbPath)
	if err := os.WriteFile(marker, nil, 0o644); err != nil {
		return nil, fmt.Errorf("devserver: database: %w", err)
	}
	if err := setupSchema(cfg); err != nil {
		removeDatabaseFiles(dbPath)
		_ = os.Remove(marker)
		return nil, fmt.Errorf("devserver: create schema in %s: %w", dbPath, err)
	}
	if err := os.Remove(marker); err != nil {
		return nil, fmt.Errorf("devserver: database: %w", err)
	}
	return cfg, nil
}

func removeDatabaseFiles(dbPath string) {
	for _, suffix := range []string{"", "-wal", "-shm", "-journal"} {
		_ = os.Remove(dbPath + suffix)
	}
}

// memoryDatabase returns the SQL configuration of a fresh in-memory
// database. The SQLite plugin keeps in-memory databases open for the life of
// the process, and creates their schema on first use.
func memoryDatabase() *config.SQL {
	return &config.SQL{
		PluginName:   sqliteplugin.PluginName,
		DatabaseName: "batchpipe-" + strconv.FormatUint(rand.Uint64(), 36),
		ConnectAttributes: map[string]string{
			"mode":  "memory",
			"cache": "shared",
		},
	}
}

// registerNamespace creates the namespace in the database unless it exists.
// Doing it before the server starts means the namespace is usable as soon as
// the frontend answers.
func registerNamespace(sqlCfg *config.SQL, namespace string) error {
	nsCfg, err := sqliteschema.NewNamespaceConfig(clusterName, namespace, false, nil)
	if err != nil {
		return fmt.Errorf("devserver: namespace %q: %w", namespace, err)
	}
	nsCfg.Detail.Config.Retention = durationpb.New(DefaultRetention)
	if err := sqliteschema.CreateNamespaces(sqlCfg, nsCfg); err != nil {
		return fmt.Errorf("devserver: register namespace %q: %w", namespace, err)
	}
	return nil
}

// dynamicConfig holds the server settings that differ from Temporal's
// defaults. They follow the Temporal CLI's dev server; history size and
// count limits stay at their defaults so that a batch that would outgrow
// them on a real cluster fails here too.
func dynamicConfig() dynamicconfig.StaticClient {
	return dynamicconfig.StaticClient{
		// New search attributes are visible at once (no cache to wait for);
		// the persistence QPS limits are raised to pay for the extra reads.
		dynamicconfig.ForceSearchAttributesCacheRefreshOnRead.Key(): true,
		dynamicconfig.FrontendPersistenceMaxQPS.Key():               10000,
		dynamicconfig.HistoryPersistenceMaxQPS.Key():                45000,
		// One process serves every request: let the frontend take them.
		dynamicconfig.FrontendRPS.Key():                                  10000,
		dynamicconfig.FrontendMaxNamespaceRPSPerInstance.Key():           10000,
		dynamicconfig.FrontendMaxNamespaceVisibilityRPSPerInstance.Key(): 100,
		// A small machine: keep at most 8k workflows' mutable state cached.
		dynamicconfig.HistoryCacheHostLevelMaxSize.Key(): 8192,
		// The server never stops the SDK workers of its parent-close-policy
		// processor and its scanners: their long polls held the frontend's
		// graceful stop for its full second. Without them, history applies
		// a closing parent's policy to its children inline, and nothing
		// scavenges idle task queues or orphaned history branches, which a
		// dev server's SQLite file can do without.
		dynamicconfig.EnableParentClosePolicyWorker.Key(): false,
		dynamicconfig.TaskQueueScannerEnabled.Key():       false,
		dynamicconfig.HistoryScannerEnabled.Key():         false,
		// Batches share the workers by fairness key (the batch id unless
		// --fairness-key groups them) within each priority level
		// (--priority). Both order the tasks of one partition, and one
		// process gains nothing from spreading a queue over four: one
		// partition, so that they order the whole queue.
		dynamicconfig.MatchingEnableFairness.Key():              true,
		dynamicconfig.MatchingNumTaskqueueReadPartitions.Key():  1,
		dynamicconfig.MatchingNumTaskqueueWritePartitions.Key(): 1,
	}
}

func newTemporalServer(opts Options, ports portLayout, sqlCfg *config.SQL, logger serverLogger) (temporal.Server, error) {
	const store = "sqlite-default"
	frontendHost := dialHost(opts.Host)
	frontendAddr := net.JoinHostPort(frontendHost, strconv.Itoa(ports.Frontend))

	service := func(bindIP string, grpcPort, membershipPort int) config.Service {
		return config.Service{RPC: config.RPC{
			GRPCPort:       grpcPort,
			MembershipPort: membershipPort,
			BindOnIP:       bindIP,
		}}
	}

	cfg := &config.Config{}
	cfg.Global.Membership = config.Membership{
		MaxJoinDuration:  30 * time.Second,
		BroadcastAddress: loopback,
	}
	cfg.Persistence = config.Persistence{
		DefaultStore:     store,
		VisibilityStore:  store,
		NumHistoryShards: 1,
		DataStores:       map[string]config.DataStore{store: {SQL: sqlCfg}},
	}
	cfg.ClusterMetadata = &cluster.Config{
		EnableGlobalNamespace:    false,
		FailoverVersionIncrement: 10,
		MasterClusterName:        clusterName,
		CurrentClusterName:       clusterName,
		ClusterInformation: map[string]cluster.ClusterInformation{
			clusterName: {
				Enabled:                true,
				InitialFailoverVersion: 1,
				RPCAddress:             frontendAddr,
			},
		},
	}
	cfg.DCRedirectionPolicy.Policy = "noop"
	cfg.Services = map[string]config.Service{
		string(primitives.FrontendService): service(opts.Host, ports.Frontend, ports.FrontendMembership),
		string(primitives.HistoryService):  service(loopback, ports.History, ports.HistoryMembership),
		string(primitives.MatchingService): service(loopback, ports.Matching, ports.MatchingMembership),
		string(primitives.WorkerService):   service(loopback, ports.Worker, ports.WorkerMembership),
	}
	cfg.Archival.History.State = "disabled"
	cfg.Archival.Visibility.State = "disabled"
	cfg.NamespaceDefaults.Archival.History.State = "disabled"
	cfg.NamespaceDefaults.Archival.Visibility.State = "disabled"
	cfg.PublicClient.HostPort = frontendAddr

	authorizer, err := authorization.GetAuthorizerFromConfig(&cfg.Global.Authorization)
	if err != nil {
		return nil, fmt.Errorf("devserver: authorizer: %w", err)
	}
	claimMapper, err := authorization.GetClaimMapperFromConfig(&cfg.Global.Authorization, logger)
	if err != nil {
		return nil, fmt.Errorf("devserver: claim mapper: %w", err)
	}

	// Static membership: each service is told where the others are, so no
	// membership ring is stored in the database and a restart never waits
	// for the members of an earlier process to expire.
	hosts := map[primitives.ServiceName]static.Hosts{
		primitives.FrontendService: static.SingleLocalHost(frontendAddr),
		primitives.HistoryService:  static.SingleLocalHost(net.JoinHostPort(loopback, strconv.Itoa(ports.History))),
		primitives.MatchingService: static.SingleLocalHost(net.JoinHostPort(loopback, strconv.Itoa(ports.Matching))),
		primitives.WorkerService:   static.SingleLocalHost(net.JoinHostPort(loopback, strconv.Itoa(ports.Worker))),
	}

	srv, err := temporal.NewServer(
		temporal.WithConfig(cfg),
		temporal.ForServices(services(opts)),
		temporal.WithStaticHosts(hosts),
		temporal.WithLogger(logger),
		temporal.WithAuthorizer(authorizer),
		temporal.WithClaimMapper(func(*config.Config) authorization.ClaimMapper { return claimMapper }),
		temporal.WithDynamicConfigClient(dynamicConfig()),
	)
	if err != nil {
		return nil, fmt.Errorf("devserver: create temporal server: %w", err)
	}
	return srv, nil
}

// waitReady polls the frontend until it is serving and knows the namespace.
func (s *Server) waitReady(ctx context.Context) error {
	quiet := sdklog.NewStructuredLogger(slog.New(slog.DiscardHandler))
	var lastErr error
	for {
		lastErr = s.probe(ctx, quiet)
		if lastErr == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("devserver: frontend %s not ready: %w (last error: %v)", s.addr, ctx.Err(), lastErr)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (s *Server) probe(ctx context.Context, logger sdklog.Logger) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	c, err := client.DialContext(ctx, client.Options{
		HostPort:  s.addr,
		Namespace: s.namespace,
		Logger:    logger,
	})
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err := c.CheckHealth(ctx, &client.CheckHealthRequest{}); err != nil {
		return err
	}
	_, err = c.WorkflowService().DescribeNamespace(ctx, &workflowservice.DescribeNamespaceRequest{Namespace: s.namespace})
	return err
}

// setupSchema creates the schema of a new database file with SQLite's
// journal and syncs off, which takes a third less time: the marker file,
// not the journal, is what makes an interrupted setup start over. The file
// is synced once at the end, before the caller removes the marker.
func setupSchema(cfg *config.SQL) error {
	setup := *cfg
	setup.ConnectAttributes = map[string]string{"mode": "rwc", "journal_mode": "off", "synchronous": "off"}
	if err := sqliteschema.SetupSchema(&setup); err != nil {
		return err
	}
	f, err := os.OpenFile(cfg.DatabaseName, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

// services are the Temporal services the server runs.
func services(opts Options) []string {
	if opts.NoSystemWorker {
		return []string{string(primitives.FrontendService), string(primitives.HistoryService), string(primitives.MatchingService)}
	}
	return temporal.DefaultServices
}
