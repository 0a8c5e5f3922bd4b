package postgres

import (
	"errors"
	"log/slog"
	"runtime"
	"time"
)

// Config tunes the engine. The zero value of each field means its default;
// DefaultConfig shows them.
type Config struct {
	// MaxConns is the most connections this process opens to the database.
	// Every store call holds one connection for its duration, so MaxConns
	// bounds the calls in flight; further calls wait for a free connection
	// (or their context's deadline). Key reads and plain writes of small
	// values share statements and transactions under load (getbatch.go,
	// putgroup.go): reads take at most one connection per CPU between
	// them, write groups one per CPU, at most half the pool (at least 2
	// of each). Size it against the server's max_connections divided by
	// the number of kvd processes, leaving room for other clients.
	// Default: 4 per CPU, at least 8.
	MaxConns int

	// StatementTimeout is set as the session's statement_timeout: the
	// server aborts any statement that runs longer, whatever the caller's
	// context says. It bounds the damage of a stuck lock or a runaway scan.
	// Default: 30s. Negative: no server-side limit (statement_timeout 0).
	StatementTimeout time.Duration

	// ConnectTimeout bounds establishing one connection, Open's included.
	// Default: 10s.
	ConnectTimeout time.Duration

	// OpenTimeout bounds how long Open waits for the database to accept a
	// connection: it tries again and again, with a growing pause between
	// attempts (see breaker.go), and logs why it waits. Default: 60s.
	// Negative: one attempt.
	OpenTimeout time.Duration

	// Logger receives the engine's own lines: Open waiting for the
	// database, and the database becoming unreachable and reachable again.
	// Default: slog.Default().
	Logger *slog.Logger

	// ApplicationName is shown in pg_stat_activity. Default: "kvd".
	ApplicationName string
}

// DefaultConfig returns the configuration Open uses for zero fields.
func DefaultConfig() Config {
	n := 4 * runtime.GOMAXPROCS(0)
	if n < 8 {
		n = 8
	}
	return Config{
		MaxConns:         n,
		StatementTimeout: 30 * time.Second,
		ConnectTimeout:   10 * time.Second,
		OpenTimeout:      60 * time.Second,
		Logger:           slog.Default(),
		ApplicationName:  "kvd",
	}
}

// EnsureDefaults returns c with every zero field set to its default.
func (c Config) EnsureDefaults() Config {
	d := DefaultConfig()
	if c.MaxConns == 0 {
		c.MaxConns = d.MaxConns
	}
	if c.StatementTimeout == 0 {
		c.StatementTimeout = d.StatementTimeout
	}
	if c.ConnectTimeout == 0 {
		c.ConnectTimeout = d.ConnectTimeout
	}
	if c.OpenTimeout == 0 {
		c.OpenTimeout = d.OpenTimeout
	}
	if c.ApplicationName == "" {
		c.ApplicationName = d.ApplicationName
	}
	if c.Logger == nil {
		c.Logger = d.Logger
	}
	return c
}

// Validate reports a configuration Open cannot use.
func (c Config) Validate() error {
	if c.MaxConns < 1 {
		return errors.New("postgres: MaxConns must be at least 1")
	}
	if c.ConnectTimeout < 0 {
		return errors.New("postgres: ConnectTimeout must not be negative")
	}
	if c.StatementTimeout > 0 && c.StatementTimeout < time.Millisecond {
		return errors.New("postgres: StatementTimeout must be at least 1ms (statement_timeout has millisecond resolution)")
	}
	return nil
}
