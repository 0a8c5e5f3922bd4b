package main

import (
	"bytes"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestEveryFlagHasItsVariable: every flag `kvd -h` lists names its
// environment variable, KV_ and its name in capitals; the README's table
// lists every flag with that variable and no variable kvd does not read.
func TestEveryFlagHasItsVariable(t *testing.T) {
	var help bytes.Buffer
	cmd := exec.Command(kvdBin, "-h")
	cmd.Stdout, cmd.Stderr = &help, &help
	cmd.Run()
	flags := regexp.MustCompile(`(?m)^  -(\S+)`).FindAllStringSubmatch(help.String(), -1)
	if len(flags) < 20 {
		t.Fatalf("kvd -h lists %d flags:\n%s", len(flags), help.String())
	}
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	known := map[string]bool{"TELNYX_API_KEY": true}
	for _, f := range flags {
		env := envName(f[1])
		known[env] = true
		if !strings.Contains(help.String(), "(env "+env) {
			t.Errorf("kvd -h does not name %s beside --%s", env, f[1])
		}
		if !strings.Contains(string(readme), "| `--"+f[1]+"` | `"+env+"` |") {
			t.Errorf("the README's table of flags lacks --%s (%s)", f[1], env)
		}
	}
	for _, m := range regexp.MustCompile("(?m)^\\| [^|]* \\| `([A-Z_]+)` \\|").FindAllStringSubmatch(string(readme), -1) {
		if !known[m[1]] {
			t.Errorf("the README's table names %s, which kvd does not read", m[1])
		}
	}
}

// TestFlagFromEnvironment: a flag with no variable of its own before
// reads it from the environment, the command line wins, and a bad value
// is an error naming the variable.
func TestFlagFromEnvironment(t *testing.T) {
	env := map[string]string{"KV_SHUTDOWN_TIMEOUT": "7s", "KV_MAX_NAMESPACES": "3", "KV_ACCESS_LOG": "false"}
	getenv := func(k string) string { return env[k] }
	cfg, _, err := parseFlags([]string{"--max-namespaces", "5"}, getenv, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.ShutdownTimeout != 7*time.Second || cfg.MaxNamespaces != 5 || cfg.AccessLog {
		t.Fatalf("shutdown %v, max namespaces %d, access log %v; want 7s from the environment, 5 from the command line, false", cfg.ShutdownTimeout, cfg.MaxNamespaces, cfg.AccessLog)
	}
	env["KV_MAX_STORED_BYTES"] = "lots"
	if _, _, err := parseFlags(nil, getenv, io.Discard); err == nil || !strings.Contains(err.Error(), "KV_MAX_STORED_BYTES") {
		t.Fatalf("a bad KV_MAX_STORED_BYTES: %v", err)
	}
}
