// Package version tells which build of a command is running: the module
// version, the VCS revision it was built from (and whether the work tree
// had uncommitted changes), and the Go version, from the build information
// the Go toolchain embeds in every binary.
package version

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"
)

// String is the version line of the command name, e.g.
//
//	kvd v1.2.0 (revision 3f2a9c1d0b7e, 2026-11-30T10:00:00Z, modified) go1.26.8 linux/amd64
func String(name string) string {
	bi, ok := debug.ReadBuildInfo()
	return Format(name, bi, ok)
}

// Format is String for given build information; ok false means there is
// none (a binary built without module support).
func Format(name string, bi *debug.BuildInfo, ok bool) string {
	v, goVersion := "(unknown)", runtime.Version()
	var details []string
	if ok && bi != nil {
		if bi.Main.Version != "" {
			v = bi.Main.Version
		}
		if bi.GoVersion != "" {
			goVersion = bi.GoVersion
		}
		settings := map[string]string{}
		for _, s := range bi.Settings {
			settings[s.Key] = s.Value
		}
		if rev := settings["vcs.revision"]; rev != "" {
			details = append(details, "revision "+rev[:min(12, len(rev))])
		}
		if t := settings["vcs.time"]; t != "" {
			details = append(details, t)
		}
		if settings["vcs.modified"] == "true" {
			details = append(details, "modified")
		}
	}
	line := name + " " + v
	if len(details) > 0 {
		line += " (" + strings.Join(details, ", ") + ")"
	}
	return fmt.Sprintf("%s %s %s/%s", line, goVersion, runtime.GOOS, runtime.GOARCH)
}
