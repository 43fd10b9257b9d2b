package testinfra

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"time"
)

// A PostgreSQL server for tests, from the system's packages (Debian's
// `apt-get install postgresql`): initdb into a directory of the test's,
// then the postgres server itself on a free loopback port, TCP only. As
// root (where initdb refuses to run) both run as the `postgres` user the
// package creates.

// EnvPostgresBinDir overrides where StartPostgres finds initdb and postgres.
const EnvPostgresBinDir = "BATCHPIPE_POSTGRES_BIN"

// PostgresHint says how to get PostgreSQL, for Missing.
const PostgresHint = "install it with `apt-get install postgresql` (binaries under /usr/lib/postgresql/<major>/bin), or set " + EnvPostgresBinDir

// PostgresBinDir returns the directory holding initdb and postgres:
// BATCHPIPE_POSTGRES_BIN if set, else the newest /usr/lib/postgresql/*/bin,
// else the directory of initdb on PATH.
func PostgresBinDir() (string, error) {
	if d := os.Getenv(EnvPostgresBinDir); d != "" {
		return d, nil
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	slices.SortFunc(dirs, func(a, b string) int { return majorOf(b) - majorOf(a) })
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d, nil
		}
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		return filepath.Dir(p), nil
	}
	return "", errors.New("no PostgreSQL binaries (initdb) under /usr/lib/postgresql/*/bin or on PATH")
}

// majorOf is the major version in /usr/lib/postgresql/<major>/bin.
func majorOf(dir string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(dir)))
	return n
}

// PostgresOptions configures StartPostgres.
type PostgresOptions struct {
	// Dir holds the server's files (Dir/data, its log); required. It is
	// created if missing; as root it is given to the postgres user and its
	// parents are made traversable (o+x) for it.
	Dir string
	// BinDir is where initdb and postgres are; default PostgresBinDir().
	BinDir string
	// User and Password are the superuser's; default temporal/temporal.
	User, Password string
	// StartTimeout bounds initdb and the start until the server accepts
	// connections; default 30 s.
	StartTimeout time.Duration
}

// PostgresProcess is a running PostgreSQL server.
type PostgresProcess struct {
	Host     string // 127.0.0.1
	Port     int
	User     string
	Password string
	*Process
}

// Addr is the server's host:port.
func (p *PostgresProcess) Addr() string { return net.JoinHostPort(p.Host, strconv.Itoa(p.Port)) }

// StartPostgres runs initdb in opts.Dir and starts the server on a free
// port of 127.0.0.1, waiting until it accepts connections. The server is
// made for tests: fsync is off. Stop it with Stop.
func StartPostgres(opts PostgresOptions) (*PostgresProcess, error) {
	if opts.Dir == "" {
		return nil, errors.New("testinfra: StartPostgres: no Dir")
	}
	if opts.BinDir == "" {
		d, err := PostgresBinDir()
		if err != nil {
			return nil, err
		}
		opts.BinDir = d
	}
	if opts.User == "" || opts.Password == "" {
		opts.User, opts.Password = "temporal", "temporal"
	}
	if opts.StartTimeout <= 0 {
		opts.StartTimeout = 30 * time.Second
	}
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, err
	}
	owner, err := postgresOwner(dir)
	if err != nil {
		return nil, err
	}
	pwfile := filepath.Join(dir, "pwfile")
	if err := os.WriteFile(pwfile, []byte(opts.Password+"\n"), 0o600); err != nil {
		return nil, err
	}
	data := filepath.Join(dir, "data")
	if err := os.Mkdir(data, 0o700); err != nil {
		return nil, err
	}
	if err := owner.chown(pwfile, data); err != nil {
		return nil, err
	}

	initdb := exec.Command(filepath.Join(opts.BinDir, "initdb"), "-D", data, "-U", opts.User, "--pwfile", pwfile,
		"--auth", "scram-sha-256", "-E", "UTF8", "--no-locale", "--no-sync")
	initdb.Dir = dir
	owner.apply(initdb)
	init, err := StartProcess("postgres initdb", filepath.Join(dir, "initdb.log"), initdb)
	if err != nil {
		return nil, err
	}
	select {
	case <-init.Done():
	case <-time.After(opts.StartTimeout):
		init.Kill()
	}
	if _, err := init.Exited(); err != nil {
		return nil, fmt.Errorf("postgres: initdb %s: %v\n%s", data, err, init.Tail())
	}
	os.Remove(pwfile)

	var lastErr error
	for range 3 { // a port picked free may be taken before postgres binds it
		port, err := FreePort()
		if err != nil {
			return nil, err
		}
		cmd := exec.Command(filepath.Join(opts.BinDir, "postgres"), "-D", data, "-p", strconv.Itoa(port),
			"-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=",
			"-c", "max_connections=300", "-c", "fsync=off", "-c", "synchronous_commit=off")
		cmd.Dir = dir
		owner.apply(cmd)
		proc, err := StartProcess("postgres", filepath.Join(dir, "postgres.log"), cmd)
		if err != nil {
			return nil, err
		}
		_, lastErr = proc.WaitFor("database system is ready to accept connections", opts.StartTimeout)
		if lastErr == nil {
			return &PostgresProcess{Host: "127.0.0.1", Port: port, User: opts.User, Password: opts.Password, Process: proc}, nil
		}
		proc.Kill()
	}
	return nil, fmt.Errorf("postgres: %w", lastErr)
}

// Stop shuts the server down (fast shutdown: SIGINT), killing it after 10 s.
func (p *PostgresProcess) Stop() error { return p.Process.Stop(syscall.SIGINT, 10*time.Second) }

// pgOwner is who runs initdb and postgres: the postgres user when this
// process is root, else this process's own user (uid < 0).
type pgOwner struct{ uid, gid int }

// postgresOwner creates dir and, as root, readies it for the postgres user.
func postgresOwner(dir string) (pgOwner, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return pgOwner{}, err
	}
	if os.Geteuid() != 0 {
		return pgOwner{-1, -1}, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return pgOwner{}, fmt.Errorf("postgres: running as root, and initdb refuses to: %v (the postgresql package creates that user)", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	o := pgOwner{uid, gid}
	// The postgres user must reach dir: let it through every parent.
	for d := dir; ; d = filepath.Dir(d) {
		if fi, err := os.Stat(d); err == nil && fi.Mode().Perm()&0o001 == 0 {
			if err := os.Chmod(d, fi.Mode().Perm()|0o011); err != nil {
				return pgOwner{}, fmt.Errorf("postgres: making %s traversable for the postgres user: %w", d, err)
			}
		}
		if d == filepath.Dir(d) {
			break
		}
	}
	return o, o.chown(dir)
}

// chown gives paths to the owner (nothing to do when not root).
func (o pgOwner) chown(paths ...string) error {
	if o.uid < 0 {
		return nil
	}
	for _, p := range paths {
		if err := os.Chown(p, o.uid, o.gid); err != nil {
			return err
		}
	}
	return nil
}

// apply makes cmd run as the owner.
func (o pgOwner) apply(cmd *exec.Cmd) {
	if o.uid >= 0 {
		runAs(cmd, uint32(o.uid), uint32(o.gid))
	}
}
