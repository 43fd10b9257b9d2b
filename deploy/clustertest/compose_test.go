package clustertest

import (
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/batchpipe/batchpipe/internal/testinfra"
)

// composeFile is the part of a compose file the test reads.
type composeFile struct {
	Name     string                    `yaml:"name"`
	Services map[string]composeService `yaml:"services"`
}

type composeService struct {
	Image       string         `yaml:"image"`
	Build       *composeBuild  `yaml:"build"`
	Entrypoint  stringOrList   `yaml:"entrypoint"`
	Command     stringOrList   `yaml:"command"`
	Environment map[string]any `yaml:"environment"`
	Ports       []string       `yaml:"ports"`
	Volumes     []string       `yaml:"volumes"`
	Restart     string         `yaml:"restart"`
	Profiles    []string       `yaml:"profiles"`
	DependsOn   map[string]struct {
		Condition string `yaml:"condition"`
	} `yaml:"depends_on"`
	Deploy struct {
		Replicas *int `yaml:"replicas"`
	} `yaml:"deploy"`
}

type composeBuild struct {
	Context    string `yaml:"context"`
	Dockerfile string `yaml:"dockerfile"`
}

// stringOrList is a compose command or entrypoint: a list of arguments, or
// a string (split on white space, which is all this file needs).
type stringOrList []string

func (s *stringOrList) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		*s = strings.Fields(n.Value)
		return nil
	}
	var l []string
	if err := n.Decode(&l); err != nil {
		return err
	}
	*s = l
	return nil
}

// interpolate expands compose's ${VAR:-default}, ${VAR-default}, ${VAR} and
// $$ as `docker compose` would with none of the variables set.
func interpolate(s string) string {
	re := regexp.MustCompile(`\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(:?-([^}]*))?\}`)
	return re.ReplaceAllStringFunc(s, func(m string) string {
		if m == "$$" {
			return "$"
		}
		return re.FindStringSubmatch(m)[3]
	})
}

func (s composeService) env(key string) string {
	v, ok := s.Environment[key]
	if !ok || v == nil {
		return ""
	}
	str, ok := v.(string)
	if !ok {
		return ""
	}
	return interpolate(str)
}

// args is what the container runs: entrypoint then command.
func (s composeService) args() []string { return append(slices.Clone(s.Entrypoint), s.Command...) }

// flagValue returns the value of --name in args ("--name v" or "--name=v").
func flagValue(args []string, name string) (string, bool) {
	for i, a := range args {
		if a == name && i+1 < len(args) {
			return args[i+1], true
		}
		if v, ok := strings.CutPrefix(a, name+"="); ok {
			return v, true
		}
	}
	return "", false
}

// flagNames lists the flags in args: "--name" and "-x" (values after a
// flag are skipped by the caller's knowledge that they don't start with -).
func flagNames(args []string) []string {
	var names []string
	for _, a := range args {
		if a == "-" || a == "--" || !strings.HasPrefix(a, "-") {
			continue
		}
		name, _, _ := strings.Cut(a, "=")
		names = append(names, name)
	}
	return names
}

func loadCompose(t *testing.T) (composeFile, string) {
	t.Helper()
	root, err := testinfra.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(root, "deploy", "compose.yaml")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var cf composeFile
	if err := yaml.Unmarshal(data, &cf); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return cf, root
}

// TestComposeFile checks that deploy/compose.yaml describes the topology
// TestCluster runs: PostgreSQL and a Temporal cluster on it, MinIO with a
// bucket, three workers configured through the environment, and commands
// whose flags the binaries have.
func TestComposeFile(t *testing.T) {
	cf, root := loadCompose(t)
	for _, name := range []string{"postgres", "temporal", "minio", "worker"} {
		if _, ok := cf.Services[name]; !ok {
			t.Fatalf("compose.yaml has no service %q (services: %v)", name, keys(cf.Services))
		}
	}

	// Temporal: a cluster on PostgreSQL, as TestCluster runs it; the
	// frontend ("temporal") listens on the port workers dial.
	temporal := cf.Services["temporal"]
	nsService := checkTemporal(t, cf, root)

	// MinIO, and a service that creates the bucket once it is healthy.
	minio := cf.Services["minio"]
	if !strings.HasPrefix(minio.Image, "minio/minio:") || !slices.Contains(minio.args(), "server") {
		t.Errorf("minio: image %q, command %q; want minio/minio running server", minio.Image, minio.args())
	}
	minioAddr, _ := flagValue(minio.args(), "--address")
	minioUser, minioPass := minio.env("MINIO_ROOT_USER"), minio.env("MINIO_ROOT_PASSWORD")
	var bucket, bucketService string
	mb := regexp.MustCompile(`mc mb (?:--ignore-existing )?\w+/([a-z0-9][a-z0-9.-]+)`)
	for name, s := range cf.Services {
		if m := mb.FindStringSubmatch(strings.Join(s.args(), " ")); m != nil {
			bucket, bucketService = m[1], name
			if s.DependsOn["minio"].Condition != "service_healthy" {
				t.Errorf("%s creates the bucket without waiting for minio to be healthy", name)
			}
		}
	}
	if bucket == "" {
		t.Errorf("no service creates a bucket (mc mb)")
	}

	// The workers.
	w := cf.Services["worker"]
	if w.Build == nil || w.Build.Dockerfile == "" {
		t.Errorf("worker has no build with a dockerfile")
	} else {
		df := filepath.Join(root, "deploy", filepath.FromSlash(w.Build.Context), filepath.FromSlash(w.Build.Dockerfile))
		checkDockerfile(t, root, df)
	}
	if r := w.Deploy.Replicas; r == nil || *r != clusterWorkers {
		got := "none"
		if r != nil {
			got = strconv.Itoa(*r)
		}
		t.Errorf("worker's deploy.replicas: %s, want %d", got, clusterWorkers)
	}
	wargs := w.args()
	if len(wargs) == 0 || wargs[0] != "worker" {
		t.Fatalf("worker runs %q; want the worker binary", wargs)
	}
	for _, k := range []string{"TEMPORAL_ADDRESS", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"} {
		if w.env(k) == "" {
			t.Errorf("worker's environment does not set %s", k)
		}
	}
	if host, port, _ := strings.Cut(w.env("TEMPORAL_ADDRESS"), ":"); host != "temporal" || !slices.ContainsFunc(temporal.Ports, func(p string) bool { return strings.HasSuffix(p, ":"+port) }) {
		t.Errorf("worker's TEMPORAL_ADDRESS %q is not the temporal service's published port (%v)", w.env("TEMPORAL_ADDRESS"), temporal.Ports)
	}
	if w.env("AWS_ACCESS_KEY_ID") != minioUser || w.env("AWS_SECRET_ACCESS_KEY") != minioPass {
		t.Errorf("worker's AWS credentials (%s) are not MinIO's root credentials (%s)", w.env("AWS_ACCESS_KEY_ID"), minioUser)
	}
	if (nsService != "" && w.DependsOn[nsService].Condition != "service_completed_successfully") || (bucketService != "" && w.DependsOn[bucketService].Condition != "service_completed_successfully") {
		t.Errorf("worker depends on %v; want %s (the namespace) and %s (the bucket) completed", w.DependsOn, nsService, bucketService)
	}
	if ns := nsCreated.FindStringSubmatch(strings.Join(cf.Services[nsService].args(), " ")); ns != nil && ns[1] != w.env("TEMPORAL_NAMESPACE") {
		t.Errorf("%s registers namespace %q, the workers use %q", nsService, ns[1], w.env("TEMPORAL_NAMESPACE"))
	}
	// What the compose workers run is what TestCluster's workers run.
	tested := append([]string{"--store"}, flagNames(workerFlags)...)
	for _, f := range flagNames(wargs[1:]) {
		if !slices.Contains(tested, f) {
			t.Errorf("worker uses %s, which TestCluster's workers do not (%v): test it there too", f, tested)
		}
	}
	store, ok := flagValue(wargs, "--store")
	if !ok {
		t.Errorf("worker has no --store: it would probe (and create) a local directory store")
	}
	checkStore(t, "worker", store, bucket, minioAddr)

	// submit, if the file has it, uses the same store.
	for name, s := range cf.Services {
		if args := s.args(); len(args) > 0 && args[0] == "submit" {
			sstore, _ := flagValue(args, "--store")
			if sstore != store {
				t.Errorf("%s submits to store %q, the workers check %q", name, sstore, store)
			}
			if s.env("TEMPORAL_ADDRESS") != w.env("TEMPORAL_ADDRESS") || s.env("AWS_ACCESS_KEY_ID") == "" {
				t.Errorf("%s's environment differs from the workers'", name)
			}
		}
	}

	// Every flag the file passes to our binaries exists.
	t.Run("flags", func(t *testing.T) {
		if testing.Short() {
			t.Skip("builds cmd/worker and cmd/submit")
		}
		bin := binaries(t)
		help := map[string]string{}
		for name, s := range cf.Services {
			args := s.args()
			if len(args) == 0 || (args[0] != "worker" && args[0] != "submit") {
				continue
			}
			if help[args[0]] == "" {
				out, err := exec.Command(filepath.Join(bin, args[0]), "--help").CombinedOutput()
				if err != nil {
					t.Fatalf("%s --help: %v\n%s", args[0], err, out)
				}
				help[args[0]] = string(out)
			}
			for _, f := range flagNames(args[1:]) {
				var re *regexp.Regexp
				if strings.HasPrefix(f, "--") {
					re = regexp.MustCompile(`(?m)^\s+(-\w, )?` + regexp.QuoteMeta(f) + `\b`)
				} else {
					re = regexp.MustCompile(`(?m)^\s+` + regexp.QuoteMeta(f) + `, --`)
				}
				if !re.MatchString(help[args[0]]) {
					t.Errorf("service %s passes %s, which `%s --help` does not list", name, f, args[0])
				}
			}
		}
		if help["worker"] == "" {
			t.Errorf("no service runs the worker binary")
		}
	})

	// Where a Docker CLI is installed (no engine needed), compose itself
	// must accept the file.
	t.Run("docker compose config", func(t *testing.T) {
		if _, err := exec.LookPath("docker"); err != nil {
			t.Skip("no docker CLI")
		}
		if err := exec.Command("docker", "compose", "version").Run(); err != nil {
			t.Skip("no docker compose plugin")
		}
		out, err := exec.Command("docker", "compose", "-f", filepath.Join(root, "deploy", "compose.yaml"), "config", "--quiet").CombinedOutput()
		if err != nil {
			t.Errorf("docker compose config: %v\n%s", err, out)
		}
	})
}

// nsCreated finds the namespace a service registers with the Temporal CLI.
var nsCreated = regexp.MustCompile(`temporal operator namespace create .*--namespace (\w[\w.-]*)`)

// checkTemporal checks the Temporal part of the compose file against what
// TestCluster runs: PostgreSQL; a service that sets up Temporal's schema on
// it with the SQL tool once it is healthy; one container per service of
// testinfra.TemporalServices, from the server image of go.mod's
// go.temporal.io/server, on that database through the same SQL plugin and
// with the same dynamic config file; and a service that registers the
// namespace, whose name it returns.
func checkTemporal(t *testing.T, cf composeFile, root string) string {
	gomod, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^\s*go\.temporal\.io/server v(\S+)`).FindSubmatch(gomod)
	if m == nil {
		t.Fatal("go.mod does not require go.temporal.io/server")
	}
	version := string(m[1])

	pg := cf.Services["postgres"]
	if !strings.HasPrefix(pg.Image, "postgres:") {
		t.Errorf("postgres: image %q, want postgres:<version>", pg.Image)
	}
	pgUser, pgPass := pg.env("POSTGRES_USER"), pg.env("POSTGRES_PASSWORD")
	if pgUser == "" || pgPass == "" {
		t.Errorf("postgres sets no POSTGRES_USER/POSTGRES_PASSWORD")
	}
	if !slices.ContainsFunc(pg.Volumes, func(v string) bool { return strings.HasSuffix(v, ":/var/lib/postgresql/data") }) {
		t.Errorf("postgres keeps its data in no volume (%v): Temporal's state would not survive the container", pg.Volumes)
	}

	// The schema: create-database, setup-schema and update-schema of both
	// databases, with the plugin the services use.
	var schemaService, nsService string
	for name, s := range cf.Services {
		args := strings.Join(s.args(), " ")
		if strings.Contains(args, "temporal-sql-tool") {
			schemaService = name
			if s.Image != "temporalio/admin-tools:"+version {
				t.Errorf("%s: image %q, want temporalio/admin-tools:%s (go.mod's server)", name, s.Image, version)
			}
			for _, want := range []string{"--plugin " + testinfra.TemporalSQLPlugin, "--ep postgres", "--user " + pgUser,
				"create-database", "setup-schema -v 0.0", "update-schema -d /etc/temporal/schema/postgresql/v12/",
				"temporal:temporal", "temporal_visibility:visibility"} {
				if !strings.Contains(args, want) {
					t.Errorf("%s's script has no %q: %s", name, want, args)
				}
			}
			if s.DependsOn["postgres"].Condition != "service_healthy" {
				t.Errorf("%s sets up the schema without waiting for postgres to be healthy", name)
			}
		}
		if nsCreated.MatchString(args) {
			nsService = name
		}
	}
	if schemaService == "" {
		t.Errorf("no service sets up Temporal's schema (temporal-sql-tool)")
	}
	if nsService == "" {
		t.Errorf("no service registers a namespace (temporal operator namespace create --namespace …)")
	}

	// One container per Temporal service.
	var services []string
	for name, s := range cf.Services {
		svc := s.env("TEMPORAL_SERVICES")
		if svc == "" {
			continue
		}
		services = append(services, svc)
		if s.Image != "temporalio/server:"+version {
			t.Errorf("%s: image %q, want temporalio/server:%s (go.mod's server)", name, s.Image, version)
		}
		if s.env("DB") != testinfra.TemporalSQLPlugin || s.env("POSTGRES_SEEDS") != "postgres" ||
			s.env("POSTGRES_USER") != pgUser || s.env("POSTGRES_PWD") != pgPass {
			t.Errorf("%s: DB %q on %q as %q; want %s on the postgres service with its credentials",
				name, s.env("DB"), s.env("POSTGRES_SEEDS"), s.env("POSTGRES_USER"), testinfra.TemporalSQLPlugin)
		}
		if schemaService != "" && s.DependsOn[schemaService].Condition != "service_completed_successfully" {
			t.Errorf("%s starts without waiting for %s to set up the schema", name, schemaService)
		}
		dc := s.env("DYNAMIC_CONFIG_FILE_PATH")
		if dc == "" || !slices.Contains(s.Volumes, "./temporal/dynamicconfig.yaml:"+dc+":ro") {
			t.Errorf("%s: dynamic config %q is not deploy/temporal/dynamicconfig.yaml (volumes %v), the file TestCluster's services read", name, dc, s.Volumes)
		}
		if s.Restart == "" || s.Restart == "no" {
			// Services starting together on a fresh database race to
			// write the cluster's metadata: a loser exits.
			t.Errorf("%s has no restart policy", name)
		}
		if svc == "frontend" && name != "temporal" {
			t.Errorf("the frontend is service %s; workers dial temporal:7233", name)
		}
	}
	slices.Sort(services)
	want := slices.Sorted(slices.Values(testinfra.TemporalServices))
	if !slices.Equal(services, want) {
		t.Errorf("Temporal services (TEMPORAL_SERVICES) %v; want one container each for %v", services, want)
	}
	return nsService
}

// checkStore checks a store URL of the compose file: s3:// on the bucket
// the file creates, through the minio service, with no credentials in it.
func checkStore(t *testing.T, who, store, bucket, minioAddr string) {
	t.Helper()
	u, err := url.Parse(store)
	if err != nil {
		t.Errorf("%s: store %q: %v", who, store, err)
		return
	}
	q := u.Query()
	_, port, _ := strings.Cut(minioAddr, ":")
	if u.Scheme != "s3" || u.Host != bucket || u.User != nil ||
		q.Get("endpoint") != "http://minio:"+port || q.Get("path_style") != "true" || q.Get("region") == "" {
		t.Errorf("%s: store %q; want s3://%s/… with endpoint=http://minio:%s, path_style=true, a region and no credentials", who, store, bucket, port)
	}
}

// checkDockerfile checks that the image builds both binaries with the Go of
// go.mod.
func checkDockerfile(t *testing.T, root, path string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Errorf("worker's Dockerfile: %v", err)
		return
	}
	df := string(data)
	gomod, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindSubmatch(gomod)
	if m == nil {
		t.Fatal("go.mod has no go directive")
	}
	if !strings.Contains(df, "FROM golang:"+string(m[1])) {
		t.Errorf("%s does not build FROM golang:%s (go.mod's Go)", path, m[1])
	}
	for _, pkg := range []string{"./cmd/worker", "./cmd/submit"} {
		if !strings.Contains(df, pkg) {
			t.Errorf("%s does not build %s", path, pkg)
		}
	}
}

func keys[V any](m map[string]V) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}
