package cli

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"unicode"

	"github.com/spf13/cobra"
)

// What makes the CLI forgiving of slips: typos of command names, missing
// arguments, and --version.

// submitArgs checks submit's own arguments (one FILE|URL). With none it
// prints the usage and exits 2; a first argument that is no file but
// close to a command name is taken for a mistyped command.
func submitArgs(o *IO) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) == 0 {
			fmt.Fprint(o.Stderr, cmd.UsageString())
			fmt.Fprintf(o.Stderr, "\nerror: give a FILE or URL to submit (\"-\" for stdin), or a command\n")
			return exitError{ExitUsage}
		}
		if !isInputArg(o, args[0]) {
			if near := nearCommands(cmd, args[0]); len(near) > 0 {
				return usagef("unknown command %q — did you mean %s?", args[0], orList(near))
			}
		}
		if len(args) > 1 {
			return usagef("%s takes one FILE or URL, got %d arguments (%s); its commands are %s", cmd.Name(), len(args),
				strings.Join(quoteAll(args), " "), strings.Join(commandNames(cmd), ", "))
		}
		return nil
	}
}

// groupCommand makes cmd, which only groups others (schedule), refuse what
// is not one of them: with no argument it prints its usage and exits 2, as
// submit does; an unknown one is an error naming the near commands. (Cobra
// prints the help of such a command and exits 0 for any arguments.)
func groupCommand(o *IO, cmd *cobra.Command) *cobra.Command {
	cmd.RunE = groupRunE(o)
	cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	// Runnable only to see its arguments: its usage shows no "cmd [flags]"
	// line of its own.
	cmd.SetUsageTemplate(strings.Replace(cmd.UsageTemplate(), "{{if .Runnable}}", "{{if and .Runnable (not .HasAvailableSubCommands)}}", 1))
	return cmd
}

func groupRunE(o *IO) func(cmd *cobra.Command, args []string) error {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) == 0 {
			fmt.Fprint(o.Stderr, cmd.UsageString())
			fmt.Fprintf(o.Stderr, "\nerror: %s needs a command: %s\n", cmd.CommandPath(), strings.Join(commandNames(cmd), ", "))
			return exitError{ExitUsage}
		}
		if near := nearCommands(cmd, args[0]); len(near) > 0 {
			return usagef("unknown command %q for %q — did you mean %s?", args[0], cmd.CommandPath(), orList(near))
		}
		return usagef("unknown command %q for %q; its commands are %s", args[0], cmd.CommandPath(), strings.Join(commandNames(cmd), ", "))
	}
}

// isInputArg reports whether submit's argument names an input rather than
// a mistyped command: stdin, a URL, an existing path, or anything shaped
// like a path (a dot or a separator in it).
func isInputArg(o *IO, arg string) bool {
	if arg == "-" || strings.Contains(arg, "://") || strings.ContainsAny(arg, `./\`) {
		return true
	}
	path := arg
	if !filepath.IsAbs(path) {
		path = filepath.Join(o.workDir(), path)
	}
	_, err := os.Lstat(path)
	return err == nil
}

// commandNames are cmd's commands a user can run, as help lists them.
func commandNames(cmd *cobra.Command) []string {
	var names []string
	for _, c := range cmd.Commands() {
		if c.IsAvailableCommand() {
			names = append(names, c.Name())
		}
	}
	return names
}

// nearCommands are the commands of cmd that typed is likely a slip for:
// the measure cobra's suggestions use (case-insensitive Levenshtein
// distance, or a prefix), made stricter for short names so that any
// two-letter word is not "gc".
func nearCommands(cmd *cobra.Command, typed string) []string {
	if typed == "" || strings.IndexFunc(typed, func(r rune) bool { return !unicode.IsLetter(r) && r != '-' }) >= 0 {
		return nil
	}
	t := strings.ToLower(typed)
	var near []string
	for _, name := range commandNames(cmd) {
		n := strings.ToLower(name)
		maxDist := 2
		if len(n) <= 4 {
			maxDist = 1
		}
		if d := editDistance(t, n); d <= maxDist || len(t) >= 2 && strings.HasPrefix(n, t) {
			near = append(near, name)
			continue
		}
		for _, s := range cmd.SuggestFor {
			if strings.EqualFold(s, typed) {
				near = append(near, name)
			}
		}
	}
	return near
}

// editDistance is the edit distance of a and b (bytes): insertions,
// deletions, substitutions and, unlike cobra's plain Levenshtein distance,
// swaps of two neighbours ("lsit"), each counting one.
func editDistance(a, b string) int {
	d := make([][]int, len(a)+1)
	for i := range d {
		d[i] = make([]int, len(b)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(a); i++ {
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(a)][len(b)]
}

func quoteAll(s []string) []string {
	q := make([]string, len(s))
	for i, v := range s {
		q[i] = fmt.Sprintf("%q", v)
	}
	return q
}

// orList is "a", "a" or "b", "a", "b" or "c".
func orList(names []string) string {
	q := quoteAll(names)
	if len(q) == 1 {
		return q[0]
	}
	return strings.Join(q[:len(q)-1], ", ") + " or " + q[len(q)-1]
}

// setVersion gives cmd a --version flag printing versionString.
func setVersion(cmd *cobra.Command) {
	info, ok := debug.ReadBuildInfo()
	cmd.Version = versionString(cmd.Name(), info, ok)
	// Cobra's own flag would say only "version for submit".
	cmd.Flags().Bool("version", false, "print the module version, VCS revision and Go version, and exit")
	cmd.SetVersionTemplate("{{.Version}}\n")
}

// versionString says which build a command is: the module and its version
// ("(devel)" when built from a checkout), the VCS revision, commit time and
// whether the tree had local changes, and the Go toolchain.
func versionString(command string, info *debug.BuildInfo, ok bool) string {
	if !ok || info == nil {
		return fmt.Sprintf("%s: no build information (%s %s/%s)", command, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	}
	settings := map[string]string{}
	for _, s := range info.Settings {
		settings[s.Key] = s.Value
	}
	version := info.Main.Version
	if version == "" {
		version = "(devel)"
	}
	var rev []string
	if r := settings["vcs.revision"]; r != "" {
		rev = append(rev, "revision "+r)
		if t := settings["vcs.time"]; t != "" {
			rev = append(rev, t)
		}
		if settings["vcs.modified"] == "true" {
			rev = append(rev, "with local changes")
		}
	} else {
		rev = append(rev, "revision unknown (built without VCS stamping: -buildvcs=false, or outside a git checkout)")
	}
	goVersion := info.GoVersion
	if goVersion == "" {
		goVersion = runtime.Version()
	}
	path := info.Main.Path
	if path == "" {
		path = "github.com/batchpipe/batchpipe"
	}
	arch := settings["GOOS"] + "/" + settings["GOARCH"]
	if arch == "/" {
		arch = runtime.GOOS + "/" + runtime.GOARCH
	}
	return fmt.Sprintf("%s %s %s, %s; %s %s", command, path, version, strings.Join(rev, ", "), goVersion, arch)
}
