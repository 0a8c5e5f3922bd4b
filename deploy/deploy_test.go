package deploy

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// directives parses a unit file into its [Section] Key=value pairs, in
// order (a key may repeat).
func directives(t *testing.T, unit string) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	section := ""
	sc := bufio.NewScanner(strings.NewReader(unit))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			section = line
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				t.Fatalf("kvd.service:%d: %q is not a Key=value line of a section", n, line)
			}
			out[section+k] = append(out[section+k], v)
		}
	}
	return out
}

// TestUnitSettings pins what the unit promises: its own user, the store in
// its state directory, the hardening, restarts after a storage failure
// (exit 70), the environment file.
func TestUnitSettings(t *testing.T) {
	d := directives(t, Unit)
	want := map[string]string{
		"[Service]ExecStart":               "/usr/local/bin/kvd",
		"[Service]DynamicUser":             "yes",
		"[Service]StateDirectory":          "kvd kvd-backups",
		"[Service]ProtectSystem":           "strict",
		"[Service]ProtectHome":             "yes",
		"[Service]PrivateTmp":              "yes",
		"[Service]NoNewPrivileges":         "yes",
		"[Service]Restart":                 "on-failure",
		"[Service]EnvironmentFile":         "/etc/kvd/kvd.env",
		"[Service]RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
		"[Service]CapabilityBoundingSet":   "",
		"[Install]WantedBy":                "multi-user.target",
	}
	for k, v := range want {
		got, ok := d[k]
		if !ok || got[len(got)-1] != v {
			t.Errorf("%s = %q, want %q", k, got, v)
		}
	}
	if !slices.Contains(d["[Service]Environment"], "KV_STORE=/var/lib/kvd") {
		t.Errorf("Environment = %q: the store must be the state directory, /var/lib/kvd", d["[Service]Environment"])
	}
	// The environment file comes after Environment= in the unit, so that
	// it overrides the defaults (systemd applies them in order).
	if strings.Index(Unit, "EnvironmentFile=") < strings.LastIndex(Unit, "\nEnvironment=") {
		t.Error("EnvironmentFile= must follow every Environment= line, so that kvd.env overrides them")
	}
	nofile := d["[Service]LimitNOFILE"]
	if len(nofile) == 0 || len(nofile[0]) < 5 {
		t.Errorf("LimitNOFILE = %q; want at least 10000", nofile)
	}
}

// TestEnvironmentNamesKvdFlags checks that every KV_* variable the unit and
// the example environment file set is one kvd reads, as kvd -h lists them,
// so that a misspelt name cannot be silently ignored.
func TestEnvironmentNamesKvdFlags(t *testing.T) {
	kvd := buildKvd(t)
	var help bytes.Buffer
	cmd := exec.Command(kvd, "-h")
	cmd.Stdout, cmd.Stderr = &help, &help
	cmd.Run()
	known := map[string]bool{"TELNYX_API_KEY": true}
	for _, m := range regexp.MustCompile(`env (KV_[A-Z_]+)`).FindAllStringSubmatch(help.String(), -1) {
		known[m[1]] = true
	}
	if len(known) < 5 {
		t.Fatalf("kvd -h names only %d environment variables:\n%s", len(known), help.String())
	}
	names := regexp.MustCompile(`(?m)^(?:Environment=|#?)((?:KV|TELNYX)_[A-Z_]+)=`)
	for file, text := range map[string]string{"kvd.service": Unit, "kvd.env.example": EnvExample} {
		found := names.FindAllStringSubmatch(text, -1)
		if len(found) == 0 {
			t.Errorf("%s sets no variable", file)
		}
		for _, m := range found {
			if !known[m[1]] {
				t.Errorf("%s sets %s, which kvd does not read (kvd -h)", file, m[1])
			}
		}
	}
}

// TestUnitVerifies runs systemd-analyze verify on the unit, with ExecStart
// pointing at a freshly built kvd. Any complaint fails the test: verify
// exits 0 on unknown keys and unparsable values and only says so.
func TestUnitVerifies(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze is not installed; the unit is not verified")
	}
	kvd := buildKvd(t)
	dir := t.TempDir()
	unit := filepath.Join(dir, "kvd.service")
	if err := os.WriteFile(unit, []byte(strings.ReplaceAll(Unit, "/usr/local/bin/kvd", kvd)), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(analyze, "verify", unit).CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// buildKvd builds cmd/kvd into a temporary directory.
func buildKvd(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "kvd")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/edgekv/kv/cmd/kvd").CombinedOutput()
	if err != nil {
		t.Fatalf("go build kvd: %v\n%s", err, out)
	}
	return bin
}
