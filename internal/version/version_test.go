package version

import (
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
)

func TestFormat(t *testing.T) {
	platform := " " + runtime.GOOS + "/" + runtime.GOARCH
	bi := &debug.BuildInfo{
		GoVersion: "go1.26.8",
		Main:      debug.Module{Path: "github.com/edgekv/kv", Version: "v1.2.0"},
		Settings: []debug.BuildSetting{
			{Key: "vcs", Value: "git"},
			{Key: "vcs.revision", Value: "3f2a9c1d0b7e5a6f00112233445566778899aabb"},
			{Key: "vcs.time", Value: "2026-11-30T10:00:00Z"},
			{Key: "vcs.modified", Value: "true"},
		},
	}
	for _, tc := range []struct {
		bi   *debug.BuildInfo
		ok   bool
		want string
	}{
		{bi, true, "kvd v1.2.0 (revision 3f2a9c1d0b7e, 2026-11-30T10:00:00Z, modified) go1.26.8" + platform},
		{&debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "(devel)"}}, true, "kvd (devel) go1.26.8" + platform},
		{nil, false, "kvd (unknown) " + runtime.Version() + platform},
	} {
		if got := Format("kvd", tc.bi, tc.ok); got != tc.want {
			t.Errorf("Format = %q; want %q", got, tc.want)
		}
	}
	if s := String("x"); !strings.HasPrefix(s, "x ") || !strings.Contains(s, "go1.") {
		t.Errorf("String = %q", s)
	}
}
