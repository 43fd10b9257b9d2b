package execproc

import (
	"errors"
	"fmt"
	"strings"
)

// BaseEnv lists the variables of the worker's environment that every
// exec process gets: what any program needs to find its tools, its home
// and temporary directory, and speak the locale. A name ending in "*"
// stands for every name with that prefix. Everything else of the worker's
// environment (its store credentials, TEMPORAL_API_KEY, AWS_*, MINIO_*,
// proxies, PYTHONPATH, ...) is passed only when Options.Env names it.
var BaseEnv = []string{"PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "LC_*", "TZ", "TMPDIR"}

// ValidateEnvName checks a name for Options.Env: a variable name, or a
// prefix followed by "*" ("*" alone passes the whole environment).
func ValidateEnvName(name string) error {
	base, _ := strings.CutSuffix(name, "*")
	switch {
	case name == "":
		return errors.New("empty variable name")
	case strings.ContainsAny(base, "=*\x00"):
		return fmt.Errorf("%q: want a variable NAME (or a PREFIX followed by *), without = or a value", name)
	}
	return nil
}

// environ returns the entries of environ whose names BaseEnv or
// extra allows; never nil (a nil Cmd.Env would inherit everything).
func environ(environ, extra []string) []string {
	env := []string{}
	for _, kv := range environ {
		name, _, ok := strings.Cut(kv, "=")
		if !ok || name == "" {
			continue
		}
		if envMatch(BaseEnv, name) || envMatch(extra, name) {
			env = append(env, kv)
		}
	}
	return env
}

func envMatch(patterns []string, name string) bool {
	for _, p := range patterns {
		if prefix, ok := strings.CutSuffix(p, "*"); ok {
			if strings.HasPrefix(name, prefix) {
				return true
			}
		} else if p == name {
			return true
		}
	}
	return false
}
