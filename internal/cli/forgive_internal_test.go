package cli

import (
	"runtime/debug"
	"strings"
	"testing"
)

// versionString names the module version, the VCS revision, its time and
// local changes from the build information; without a revision it says why.
func TestVersionString(t *testing.T) {
	info := &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Path: "github.com/batchpipe/batchpipe", Version: "v1.4.0"},
		Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "8584aac58b59e6c2f8200ab6abf13413e84dedac"},
			{Key: "vcs.time", Value: "2026-12-02T01:18:09Z"}, {Key: "vcs.modified", Value: "true"}, {Key: "GOOS", Value: "linux"}, {Key: "GOARCH", Value: "amd64"}}}
	got := versionString("submit", info, true)
	want := "submit github.com/batchpipe/batchpipe v1.4.0, revision 8584aac58b59e6c2f8200ab6abf13413e84dedac, 2026-12-02T01:18:09Z, with local changes; go1.26.8 linux/amd64"
	if got != want {
		t.Errorf("versionString:\n got %s\nwant %s", got, want)
	}
	info.Settings = nil
	if got := versionString("worker", info, true); !strings.Contains(got, "revision unknown") || !strings.HasPrefix(got, "worker github.com/batchpipe/batchpipe v1.4.0,") {
		t.Errorf("versionString without VCS settings: %s", got)
	}
	if got := versionString("worker", nil, false); !strings.Contains(got, "no build information") {
		t.Errorf("versionString without build information: %s", got)
	}
}

// nearCommands takes slips (a letter off, two swapped, a prefix) for the
// command and leaves other words alone.
func TestNearCommands(t *testing.T) {
	root := newSubmitCommand(t.Context(), &IO{})
	for typed, want := range map[string]string{"statuss": "status", "lst": "list", "lsit": "list", "stat": "status",
		"Status": "status", "canecl": "cancel", "x": "", "in": "", "data": "", "test": "", "foo": "", "gcc": "gc", "input1": ""} {
		if got := strings.Join(nearCommands(root, typed), ","); got != want {
			t.Errorf("nearCommands(%q) = %q, want %q", typed, got, want)
		}
	}
}
