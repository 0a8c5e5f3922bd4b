// Package kvdtest runs a real kvd for tests: the real HTTP server on a
// loopback port over a real engine (Pebble in a temp dir by default).
package kvdtest

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/edgekv/kv"
	"github.com/edgekv/kv/internal/lifecycle"
	"github.com/edgekv/kv/internal/server"
	"github.com/edgekv/kv/internal/service"
)

// Server is a kvd running for a test.
type Server struct {
	// URL is the base URL, e.g. http://127.0.0.1:41234 (without /v2).
	URL string
	// Token is a bearer token of the default organization.
	Token string
	// Dir is the data directory or database URL the server runs on.
	Dir string

	*server.Server
	cfg server.Config
}

// Option adjusts the configuration of a Server before it starts.
type Option func(*server.Config)

// WithStore runs the server on the given data directory or database URL.
func WithStore(spec string) Option { return func(c *server.Config) { c.Store = spec } }

// WithClock gives the server a clock.
func WithClock(now func() time.Time) Option { return func(c *server.Config) { c.Now = now } }

// WithoutBackground runs no lifecycle worker: namespaces stay pending or
// deleting until a server with one runs on the same store.
func WithoutBackground() Option { return func(c *server.Config) { c.NoBackground = true } }

// WithConfig lets a test change any setting.
func WithConfig(f func(*server.Config)) Option { return Option(f) }

// WithAPIKey sets the static token of the default organization.
func WithAPIKey(key string) Option { return func(c *server.Config) { c.APIKey = key } }

// WithLogger sends the server's log to l.
func WithLogger(l *slog.Logger) Option { return func(c *server.Config) { c.Logger = l } }

// Config returns the configuration a Server starts with: Pebble in a temp
// dir, a free loopback port, a fixed API key for the default organization,
// quiet logs and a fast lifecycle worker.
func Config(t testing.TB) server.Config {
	cfg := server.DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.Store = t.TempDir()
	cfg.APIKey = "test-token-" + kv.NewID().String()
	cfg.AccessLog = false
	cfg.RateLimit = 0 // tests that want a limit set one
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg.ShutdownTimeout = 10 * time.Second
	cfg.Lifecycle = lifecycle.Config{Poll: 20 * time.Millisecond, Sweep: time.Hour}
	return cfg
}

// Start starts a kvd and stops it when the test ends.
func Start(t testing.TB, opts ...Option) *Server {
	t.Helper()
	cfg := Config(t)
	for _, o := range opts {
		o(&cfg)
	}
	return StartConfig(t, cfg)
}

// StartConfig starts a kvd with cfg and stops it when the test ends.
func StartConfig(t testing.TB, cfg server.Config) *Server {
	t.Helper()
	srv, err := server.Open(context.Background(), cfg)
	if err != nil {
		t.Fatalf("kvdtest: start kvd: %v", err)
	}
	s := &Server{URL: srv.URL(), Token: cfg.APIKey, Dir: cfg.Store, Server: srv, cfg: cfg}
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { srv.Close() }) })
	return s
}

// Restart stops the server gracefully and starts it again on the same
// store and port, as a restarted process would.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	if err := s.Server.Close(); err != nil {
		t.Fatalf("kvdtest: stop kvd: %v", err)
	}
	cfg := s.cfg
	cfg.Listen = s.Addr()
	srv, err := server.Open(context.Background(), cfg)
	if err != nil {
		t.Fatalf("kvdtest: restart kvd: %v", err)
	}
	s.Server = srv
	t.Cleanup(func() { srv.Close() })
}

// NewToken returns a new token of organization org, with every
// permission.
func (s *Server) NewToken(t testing.TB, org string) string {
	t.Helper()
	return s.NewScopedToken(t, service.TokenSpec{Org: org})
}

// NewScopedToken returns a new token made to spec.
func (s *Server) NewScopedToken(t testing.TB, spec service.TokenSpec) string {
	t.Helper()
	secret, _, err := s.Service.CreateToken(context.Background(), spec)
	if err != nil {
		t.Fatalf("kvdtest: new token: %v", err)
	}
	return secret
}

// Provision runs the pending lifecycle jobs now and returns once
// namespace id is ready. The background worker may have claimed the job
// first, so it waits for the outcome rather than trusting RunJobs alone.
func (s *Server) Provision(t testing.TB, org, namespaceID string) {
	t.Helper()
	id, err := kv.ParseID(namespaceID)
	if err != nil {
		t.Fatalf("kvdtest: provision: %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		s.Worker.RunJobs(context.Background())
		ns, err := s.Store.GetNamespace(context.Background(), org, id)
		if err != nil {
			t.Fatalf("kvdtest: provision %s: %v", id, err)
		}
		if ns.Status != kv.StatusPending {
			if !ns.Ready() {
				t.Fatalf("kvdtest: namespace %s is %s, not ready", id, ns.Status)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("kvdtest: namespace %s still pending after 10s", id)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
