package testinfra_test

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/batchpipe/batchpipe/internal/testinfra"
)

func TestPostgresStartsAndStops(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL")
	}
	bin, err := testinfra.PostgresBinDir()
	if err != nil {
		testinfra.Missing(t, "PostgreSQL", err, testinfra.PostgresHint)
	}
	dir := filepath.Join(t.TempDir(), "pg")
	pg, err := testinfra.StartPostgres(testinfra.PostgresOptions{Dir: dir, BinDir: bin})
	if err != nil {
		t.Fatal(err)
	}
	defer pg.Stop()
	if pg.Host != "127.0.0.1" || pg.User != "temporal" || pg.Password != "temporal" {
		t.Errorf("server %+v; want 127.0.0.1 with user and password temporal", pg)
	}
	conn, err := net.DialTimeout("tcp", pg.Addr(), 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", pg.Addr(), err)
	}
	conn.Close()
	if _, err := os.Stat(filepath.Join(dir, "pwfile")); !os.IsNotExist(err) {
		t.Errorf("the password file is left in %s (%v)", dir, err)
	}
	if err := pg.Stop(); err != nil {
		t.Fatalf("stop: %v\n%s", err, pg.Tail())
	}
	if !strings.Contains(pg.Output(), "database system is shut down") {
		t.Errorf("postgres did not report a clean shutdown:\n%s", pg.Tail())
	}
	if _, err := net.DialTimeout("tcp", pg.Addr(), time.Second); err == nil {
		t.Errorf("%s still accepts connections after Stop", pg.Addr())
	}
}
