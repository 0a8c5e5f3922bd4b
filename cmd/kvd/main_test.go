package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edgekv/kv/internal/kvdtest"
	"github.com/edgekv/kv/internal/pgtest"
	"github.com/edgekv/kv/internal/server"
)

var kvdBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "kvd-bin")
	if err != nil {
		panic(err)
	}
	if kvdBin, err = kvdtest.BuildKVD(dir, true); err != nil {
		panic(err)
	}
	code := pgtest.Run(m)
	os.RemoveAll(dir)
	os.Exit(code)
}

// startKVD runs the kvd binary and waits until it answers /healthz.
func startKVD(t *testing.T, env []string, args ...string) (*exec.Cmd, *kvdtest.SyncBuffer) {
	t.Helper()
	cmd := exec.Command(kvdBin, args...)
	cmd.Env = append(os.Environ(), env...)
	logs := &kvdtest.SyncBuffer{}
	cmd.Stderr = logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd, logs
}

func waitHealthy(t *testing.T, addr string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("kvd on %s never became healthy: %v", addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func get(t *testing.T, url, token string) int {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func TestTokenCreateAndServe(t *testing.T) {
	dir := t.TempDir()
	out, err := exec.Command(kvdBin, "token", "create", "--org", "acme", "--store", dir).Output()
	if err != nil {
		t.Fatalf("token create: %v", err)
	}
	tok := lastLine(string(out))
	if !strings.HasPrefix(tok, "kvd_") || len(tok) < 4+43 || !strings.Contains(string(out), "org:") {
		t.Fatalf("token create printed %q; want the token's record, then a kvd_ secret of at least 256 bits", out)
	}
	addr := kvdtest.FreeAddr(t)
	cmd, logs := startKVD(t, []string{"KV_LISTEN=" + addr, "KV_STORE=" + dir, "TELNYX_API_KEY=env-key"})
	waitHealthy(t, addr)
	for _, tc := range []struct {
		token string
		want  int
	}{{tok, 200}, {"env-key", 200}, {"wrong", 401}} {
		if got := get(t, "http://"+addr+"/v2/storage/kvs", tc.token); got != tc.want {
			t.Fatalf("token %q: status %d, want %d", tc.token, got, tc.want)
		}
	}
	// While kvd runs, the token commands reach it through its admin
	// channel: a token made now works at once, and one revoked now is
	// refused at once.
	out, err = exec.Command(kvdBin, "token", "create", "--org", "acme", "--name", "live", "--store", dir).Output()
	if err != nil {
		t.Fatalf("token create while kvd runs: %v", err)
	}
	live := lastLine(string(out))
	if got := get(t, "http://"+addr+"/v2/storage/kvs", live); got != 200 {
		t.Fatalf("a token made while kvd runs: %d", got)
	}
	out, err = exec.Command(kvdBin, "token", "list", "--org", "acme", "-o", "json", "--store", dir).Output()
	if err != nil {
		t.Fatalf("token list while kvd runs: %v", err)
	}
	var list []struct{ ID, Name, Status string }
	if err := json.Unmarshal(out, &list); err != nil || len(list) != 2 || list[1].Name != "live" || strings.Contains(string(out), "kvd_") {
		t.Fatalf("token list = %s (%v); want both tokens, no secret", out, err)
	}
	if out, err := exec.Command(kvdBin, "token", "revoke", list[1].ID, "--store", dir).CombinedOutput(); err != nil || !strings.Contains(string(out), "revoked") {
		t.Fatalf("token revoke: %v %s", err, out)
	}
	if got := get(t, "http://"+addr+"/v2/storage/kvs", live); got != 401 {
		t.Fatalf("a revoked token: %d, want 401 at once", got)
	}
	if got := get(t, "http://"+addr+"/v2/storage/kvs", tok); got != 200 {
		t.Fatalf("the other token after a revocation: %d", got)
	}
	// SIGTERM stops it cleanly.
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("kvd exit after SIGTERM: %v\n%s", err, logs)
	}
	if !strings.Contains(logs.String(), "kvd stopped") {
		t.Fatalf("no clean stop in the log:\n%s", logs)
	}
	// No token is kept in plain text, in the data or the log.
	filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() {
			return err
		}
		b, _ := os.ReadFile(p)
		if bytes.Contains(b, []byte(tok)) || bytes.Contains(b, []byte("env-key")) {
			t.Errorf("%s holds a token in plain text", p)
		}
		return nil
	})
	if strings.Contains(logs.String(), tok) || strings.Contains(logs.String(), "env-key") {
		t.Error("the log holds a token")
	}
}

func TestDrainOnSIGTERM(t *testing.T) {
	addr := kvdtest.FreeAddr(t)
	cmd, logs := startKVD(t, []string{"TELNYX_API_KEY=k"}, "--listen", addr, "--store", t.TempDir())
	waitHealthy(t, addr)
	// A request being served when SIGTERM lands (its body still arriving)
	// completes; the process then exits 0.
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	io.WriteString(conn, "POST /v2/storage/kvs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer k\r\nContent-Length: 15\r\n\r\n{\"name\":")
	time.Sleep(100 * time.Millisecond) // let the handler start reading the body
	cmd.Process.Signal(syscall.SIGTERM)
	time.Sleep(100 * time.Millisecond)
	io.WriteString(conn, `"late"}`)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("request in flight during SIGTERM got no response: %v\n%s", err, logs)
	}
	if resp.StatusCode != 201 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("exit: %v\n%s", err, logs)
		}
	case <-ctx.Done():
		t.Fatal("kvd did not exit after SIGTERM")
	}
}

func TestBadFlags(t *testing.T) {
	for _, args := range [][]string{{"--nope"}, {"extra"}, {"--log-level", "loud"}, {"token"}, {"token", "create"}, {"--max-stored-bytes", "10 apples"}, {"--max-stored-bytes", "-1"}, {"--slow-body-timeout", "0s"}, {"--min-free-space", "lots"}, {"--pg-connect-timeout", "-1s"}, {"--pg-connect-timeout", "soon"}} {
		var stderr bytes.Buffer
		code := run(context.Background(), args, func(string) string { return "" }, io.Discard, &stderr)
		if code != 2 || stderr.Len() == 0 {
			t.Errorf("kvd %v: exit %d, stderr %q; want 2 and a message", args, code, stderr.String())
		}
	}
}

func TestConsoleFlag(t *testing.T) {
	for _, tc := range []struct {
		args []string
		env  string
		want bool
	}{
		{nil, "", true},
		{[]string{"--console=false"}, "", false},
		{nil, "false", false},
		{nil, "0", false},
		{[]string{"--console=true"}, "false", true}, // the flag wins
		{[]string{"--console=false"}, "true", false},
	} {
		env := func(k string) string {
			if k == "KV_CONSOLE" {
				return tc.env
			}
			return ""
		}
		cfg, _, err := parseFlags(tc.args, env, io.Discard)
		if err != nil || cfg.Console != tc.want {
			t.Errorf("kvd %v with KV_CONSOLE=%q: console %v, %v; want %v", tc.args, tc.env, cfg.Console, err, tc.want)
		}
	}
	var stderr bytes.Buffer
	code := run(context.Background(), nil, func(k string) string {
		if k == "KV_CONSOLE" {
			return "maybe"
		}
		return ""
	}, io.Discard, &stderr)
	if code != 2 || !strings.Contains(stderr.String(), "KV_CONSOLE") {
		t.Fatalf("KV_CONSOLE=maybe: exit %d, %q", code, stderr.String())
	}
}

func TestMinFreeSpaceSettings(t *testing.T) {
	env := func(v string) func(string) string {
		return func(name string) string {
			if name == "KV_MIN_FREE_SPACE" {
				return v
			}
			return ""
		}
	}
	for _, tc := range []struct {
		env  string
		args []string
		want int64
	}{
		{"", nil, server.DefaultMinFreeSpace},
		{"1GiB", nil, 1 << 30},
		{"1GiB", []string{"--min-free-space", "0"}, 0},
		{"", []string{"--min-free-space", "500MB"}, 500e6},
	} {
		cfg, _, err := parseFlags(tc.args, env(tc.env), io.Discard)
		if err != nil || cfg.MinFreeSpace != tc.want {
			t.Errorf("KV_MIN_FREE_SPACE=%q %v: %d, %v; want %d", tc.env, tc.args, cfg.MinFreeSpace, err, tc.want)
		}
	}
	var stderr bytes.Buffer
	if code := run(context.Background(), nil, env("a lot"), io.Discard, &stderr); code != 2 || !strings.Contains(stderr.String(), "KV_MIN_FREE_SPACE") {
		t.Errorf("KV_MIN_FREE_SPACE=\"a lot\": exit %d, %q; want 2 and a message naming it", code, stderr.String())
	}
}

func TestParseByteSize(t *testing.T) {
	for in, want := range map[string]int64{
		"0": 0, "1234": 1234, "10B": 10, "5KB": 5000, "5 kb": 5000, "2KiB": 2048,
		"3MiB": 3 << 20, "7MB": 7e6, "1GiB": 1 << 30, "2GB": 2e9, "1TiB": 1 << 40, "4TB": 4e12,
	} {
		if got, err := parseByteSize(in); err != nil || got != want {
			t.Errorf("parseByteSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "KiB", "1.5GB", "-3", "12XB", "9999999999TiB", "0x10"} {
		if got, err := parseByteSize(in); err == nil {
			t.Errorf("parseByteSize(%q) = %d; want an error", in, got)
		}
	}
	cfg, _, err := parseFlags([]string{"--max-stored-bytes", "512MiB"}, func(string) string { return "" }, io.Discard)
	if err != nil || cfg.MaxStoredBytes != 512<<20 {
		t.Fatalf("--max-stored-bytes 512MiB: %d, %v", cfg.MaxStoredBytes, err)
	}
}
