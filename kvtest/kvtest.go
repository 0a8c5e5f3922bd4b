// Package kvtest starts a real kvd inside a test, as net/http/httptest
// starts a real HTTP server and miniredis a Redis: the same server,
// engine and API the kvd binary runs, on a temporary store and a loopback
// port, stopped when the test ends. Point the code under test at URL with
// Token (or use Client), and it talks to kvd exactly as it would in
// production.
//
//	func TestFlags(t *testing.T) {
//		srv := kvtest.NewServer(t)
//		ns := srv.Namespace(t, "flags")
//		// ... run the code under test against srv.URL, srv.Token and ns
//	}
package kvtest

import (
	"context"
	"testing"
	"time"

	"github.com/edgekv/kv/client"
	"github.com/edgekv/kv/internal/kvdtest"
)

// Server is a kvd running for one test.
type Server struct {
	// URL is the server's base URL, e.g. "http://127.0.0.1:41234"; the API
	// is under URL + "/v2/storage/kvs". Set it as TELNYX_BASE_URL (with or
	// without "/v2") for the official SDKs.
	URL string
	// Token is a bearer token with every permission, of the server's
	// default organization.
	Token string

	s *kvdtest.Server
}

// NewServer starts kvd on the embedded engine, in a temporary directory of
// t, listening on a free loopback port, with its background worker (so
// namespaces become ready and keys expire) and no rate limit. It stops,
// and its store is removed, when t ends.
func NewServer(t testing.TB) *Server {
	t.Helper()
	s := kvdtest.Start(t)
	return &Server{URL: s.URL, Token: s.Token, s: s}
}

// Client returns an SDK client of the server, with Token.
func (s *Server) Client() *client.Client {
	return client.New(client.WithBaseURL(s.URL), client.WithAPIKey(s.Token))
}

// Namespace creates a namespace called name, waits until it is ready, and
// returns its id. It fails t on any error.
func (s *Server) Namespace(t testing.TB, name string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := s.Client()
	ns, err := c.CreateNamespace(ctx, name)
	if err != nil {
		t.Fatalf("kvtest: create namespace %q: %v", name, err)
	}
	if _, err := c.WaitReady(ctx, ns.ID.String()); err != nil {
		t.Fatalf("kvtest: namespace %q never became ready: %v", name, err)
	}
	return ns.ID.String()
}

// NewToken returns a new token of organization org with every permission:
// its namespaces are invisible to the tokens of every other organization.
func (s *Server) NewToken(t testing.TB, org string) string {
	t.Helper()
	return s.s.NewToken(t, org)
}

// Restart stops kvd and starts it again on the same store and address, as
// a process restart would: what was acknowledged is still there.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	s.s.Restart(t)
}
