package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edgekv/kv/internal/kvdtest"
	"github.com/edgekv/kv/internal/pgtest"
)

// kvd started before its database waits for it, saying so in its log, and
// serves as soon as the database is up.
func TestWaitsForDatabaseAtStart(t *testing.T) {
	srv := pgtest.NewServer(t)
	u := srv.URL(t)
	srv.Stop(t)
	addr := kvdtest.FreeAddr(t)
	start := time.Now()
	cmd, logs := startKVD(t, []string{"TELNYX_API_KEY=k"}, "--listen", addr, "--store", u)

	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(logs.String(), "waiting for the database") {
		if time.Now().After(deadline) {
			t.Fatalf("kvd does not say it waits for the database:\n%s", logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(time.Second)
	if err := cmd.Process.Signal(syscall.Signal(0)); err != nil {
		t.Fatalf("kvd exited while its database was down (%v):\n%s", err, logs)
	}
	if c, err := net.Dial("tcp", addr); err == nil {
		c.Close()
		t.Fatal("kvd listens before its database is up")
	}
	srv.Restart(t)
	waitHealthy(t, addr)
	waited := time.Since(start)
	req, _ := http.NewRequest("POST", "http://"+addr+"/v2/storage/kvs", strings.NewReader(`{"name":"after-wait"}`))
	req.Header.Set("Authorization", "Bearer k")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("create a namespace once the database is up: %d %s", resp.StatusCode, body)
	}
	l := logs.String()
	if n := strings.Count(l, "waiting for the database"); n > 1+int(waited/(5*time.Second)) {
		t.Errorf("%d lines saying kvd waits, in %v; want at most one every 5s:\n%s", n, waited, l)
	}
	if !strings.Contains(l, "connected to the database") {
		t.Errorf("the log does not say kvd connected:\n%s", l)
	}
}

// kvd gives up waiting after --pg-connect-timeout (or
// KV_PG_CONNECT_TIMEOUT): one clear line naming the cause, and exit 1.
func TestGivesUpWaitingForDatabase(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := l.Addr().String()
	l.Close()
	// Two hosts, and sslmode's default (prefer), so that each attempt
	// tries four times and its error has a line per try.
	u := "postgres://kvd@" + dead + "," + dead + "/kv"
	for _, c := range []struct {
		name string
		env  []string
		args []string
		want string
	}{
		{"flag", nil, []string{"--pg-connect-timeout", "2s"}, "within 2s"},
		{"environment", []string{"KV_PG_CONNECT_TIMEOUT=1s"}, nil, "within 1s"},
	} {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, kvdBin, append([]string{"--listen", kvdtest.FreeAddr(t), "--store", u}, c.args...)...)
			cmd.Env = append([]string{"TELNYX_API_KEY=k"}, c.env...)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			err := cmd.Run()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 1 {
				t.Fatalf("kvd on a database that is not there: %v; want exit 1\n%s", err, &stderr)
			}
			last := lastLine(stderr.String())
			if !strings.HasPrefix(last, "kvd: ") || !strings.Contains(last, "did not accept a connection "+c.want) || !strings.Contains(last, "connection refused") {
				t.Fatalf("last line %q; want kvd: ... did not accept a connection %s ... and the cause\n%s", last, c.want, &stderr)
			}
		})
	}
}

// A malformed KV_PG_CONNECT_TIMEOUT is a usage error.
func TestBadConnectTimeoutEnv(t *testing.T) {
	var stderr bytes.Buffer
	env := func(k string) string {
		if k == "KV_PG_CONNECT_TIMEOUT" {
			return "soon"
		}
		return ""
	}
	if code := run(context.Background(), nil, env, io.Discard, &stderr); code != 2 || !strings.Contains(stderr.String(), "KV_PG_CONNECT_TIMEOUT") {
		t.Fatalf("exit %d, stderr %q; want 2 and a message naming KV_PG_CONNECT_TIMEOUT", code, stderr.String())
	}
}
