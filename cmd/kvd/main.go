// Command kvd is the key-value server: the Telnyx Edge Compute KV API on an
// embedded engine (Pebble) or on a PostgreSQL-wire database.
//
//	kvd [--listen ADDR] [--store DIR|postgres://...]
//	kvd token create --org NAME [--store DIR|postgres://...]
//	kvd backup --out DEST [--store DIR]
//	kvd restore --from DEST [--store DIR]
//	kvd check [--store DIR]
//	kvd version
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/edgekv/kv/internal/server"
	"github.com/edgekv/kv/internal/version"
)

func main() {
	// Whatever kvd creates (the store's files) is its user's alone; the
	// engine also sets the modes itself.
	syscall.Umask(0o077)
	os.Exit(run(context.Background(), os.Args[1:], os.Getenv, os.Stdout, os.Stderr))
}

// Exit codes.
const (
	exitFailed  = 1  // could not start, or did not stop cleanly
	exitUsage   = 2  // bad flags or environment
	exitStorage = 70 // the embedded engine met a storage error it cannot continue after
)

// run is kvd's main; it returns the exit code. It never waits on the
// store beyond what its configuration allows: a store that fails makes it
// return exitStorage at once, and a stop returns within the shutdown
// timeout even when the engine is stuck.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	if len(args) >= 1 && args[0] == "token" {
		return runToken(ctx, args[1:], getenv, stdout, stderr)
	}
	if len(args) >= 1 && (args[0] == "backup" || args[0] == "restore" || args[0] == "check") {
		return runBackup(ctx, args[0], args[1:], getenv, stdout, stderr)
	}
	if len(args) == 1 && (args[0] == "version" || args[0] == "--version" || args[0] == "-version") {
		fmt.Fprintln(stdout, version.String("kvd"))
		return 0
	}
	cfg, logger, err := parseFlags(args, getenv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "kvd:", err)
		return exitUsage
	}
	// The engine calls this from the goroutine that met the error, which
	// never returns; the process exits from here instead.
	fatal := make(chan error, 1)
	cfg.OnStoreFatal = func(err error) {
		select {
		case fatal <- err:
		default:
		}
	}
	storageFailed := func(err error) int {
		logger.Error("kvd: the store failed; exiting so that kvd restarts on what is on disk (nothing unacknowledged was served)", "err", err.Error(), "exit_code", exitStorage)
		return exitStorage
	}
	if limit, err := server.RaiseDescriptorLimit(); err != nil {
		logger.Warn("kvd: could not raise the open-file limit to its maximum", "limit", limit, "err", err)
	} else if limit < 1024 {
		logger.Warn("kvd: the open-file limit is low; connections are capped well below it", "limit", limit)
	}
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	type opened struct {
		srv *server.Server
		err error
	}
	open := make(chan opened, 1)
	go func() {
		srv, err := server.Open(ctx, cfg)
		open <- opened{srv, err}
	}()
	var srv *server.Server
	select {
	case o := <-open:
		if o.err != nil {
			fmt.Fprintln(stderr, "kvd:", o.err)
			return exitFailed
		}
		srv = o.srv
	case err := <-fatal:
		return storageFailed(err)
	case <-ctx.Done():
		fmt.Fprintln(stderr, "kvd: stopped before the store was open")
		return exitFailed
	}

	select {
	case <-ctx.Done():
		logger.Info("kvd stopping: draining requests")
	case err := <-srv.Done():
		logger.Error("kvd: server stopped", "err", err)
	case err := <-fatal:
		return storageFailed(err)
	}
	closed := make(chan error, 1)
	go func() { closed <- srv.Close() }()
	deadline := time.NewTimer(cfg.ShutdownTimeout)
	defer deadline.Stop()
	select {
	case err := <-closed:
		if err != nil {
			logger.Error("kvd: stop", "err", err.Error())
			return exitFailed
		}
	case err := <-fatal:
		return storageFailed(err)
	case <-deadline.C:
		logger.Error("kvd: stopping took longer than --shutdown-timeout; exiting without closing the store (every acknowledged write is on disk)", "shutdown_timeout", cfg.ShutdownTimeout)
		return exitFailed
	}
	logger.Info("kvd stopped")
	return 0
}

func envOr(getenv func(string) string, name, def string) string {
	if v := getenv(name); v != "" {
		return v
	}
	return def
}

// envInt reads an integer variable, or def when unset; a malformed value
// is reported by parseFlags.
func envInt(getenv func(string) string, name string, def int) int {
	if n, err := strconv.Atoi(getenv(name)); err == nil {
		return n
	}
	return def
}

func parseFlags(args []string, getenv func(string) string, stderr io.Writer) (server.Config, *slog.Logger, error) {
	cfg := server.DefaultConfig()
	fs := flag.NewFlagSet("kvd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: kvd [flags]\n       kvd token create --org NAME [--store DIR|URL]\n       kvd backup --out DEST | restore --from DEST | check  [--store DIR]\n       kvd version\n\nFlags:\n")
		fs.PrintDefaults()
		fmt.Fprintf(stderr, "\nEvery flag may be set in the environment instead (its variable is named beside it; the command line wins). TELNYX_API_KEY is accepted as a token of the %q organization.\n", "default")
	}
	fs.StringVar(&cfg.Listen, "listen", envOr(getenv, "KV_LISTEN", cfg.Listen), "address to serve the API on (env KV_LISTEN)")
	fs.StringVar(&cfg.Store, "store", envOr(getenv, "KV_STORE", cfg.Store), "data directory of the embedded engine, or a postgres:// URL (env KV_STORE)")
	fs.BoolVar(&cfg.NoBackground, "no-background", false, "run no background jobs here (namespace provisioning and removal, expiry sweeps); other kvd sharing the database must")
	fs.IntVar(&cfg.RateLimit, "rate-limit", envInt(getenv, "KV_RATE_LIMIT", cfg.RateLimit), "requests per minute per token; 0 (the default) for no limit (env KV_RATE_LIMIT)")
	fs.IntVar(&cfg.AuthFailureLimit, "auth-failure-limit", envInt(getenv, "KV_AUTH_FAILURE_LIMIT", cfg.AuthFailureLimit), "failed authentications a client address may make per minute before its unknown tokens get 429; 0 for no limit (env KV_AUTH_FAILURE_LIMIT)")
	fs.IntVar(&cfg.RateBurst, "rate-burst", cfg.RateBurst, "requests a token may make at once (default: the rate limit)")
	fs.IntVar(&cfg.MaxNamespaces, "max-namespaces", cfg.MaxNamespaces, "namespaces per organization; 0 for no limit")
	fs.Var(byteSize{&cfg.MaxStoredBytes}, "max-stored-bytes", "bytes (keys plus values) per organization, e.g. 10GiB or 500MB; 0 for no limit")
	fs.StringVar(&cfg.TLSCert, "tls-cert", getenv("KV_TLS_CERT"), "PEM certificate (chain) to serve HTTPS with (env KV_TLS_CERT)")
	fs.StringVar(&cfg.TLSKey, "tls-key", getenv("KV_TLS_KEY"), "PEM private key of --tls-cert (env KV_TLS_KEY)")
	fs.Var(byteSize{&cfg.CacheSize}, "cache-size", "embedded engine: block cache for data read from disk, e.g. 256MiB (default 64MiB)")
	if v := getenv("KV_MIN_FREE_SPACE"); v != "" {
		n, err := parseByteSize(v)
		if err != nil {
			return cfg, nil, fmt.Errorf("KV_MIN_FREE_SPACE: %w", err)
		}
		cfg.MinFreeSpace = n
	}
	fs.Var(byteSize{&cfg.MinFreeSpace}, "min-free-space", "embedded engine: free space to keep on the store's disk; below it, writes get 507 until space is freed, e.g. 1GiB; 0 turns the check off (env KV_MIN_FREE_SPACE)")
	fs.IntVar(&cfg.Postgres.MaxConns, "pg-max-conns", 0, "PostgreSQL: most connections this process opens (default 4 per CPU, at least 8)")
	fs.DurationVar(&cfg.Postgres.StatementTimeout, "pg-statement-timeout", 0, "PostgreSQL: server-side statement_timeout (default 30s)")
	pgConnectTimeout := fs.Duration("pg-connect-timeout", 60*time.Second, "PostgreSQL: how long to wait at start for the database to accept a connection, trying again with backoff; 0 for one attempt (env KV_PG_CONNECT_TIMEOUT)")
	fs.DurationVar(&cfg.Lifecycle.WatchRetention, "watch-retention", 0, "how long the change feed keeps changes, so that a watch may resume from them (default 24h)")
	fs.DurationVar(&cfg.Lifecycle.Lease, "job-lease", 0, "how long a background job is one process's before another may take it over (default 30s)")
	fs.StringVar(&cfg.MetricsListen, "metrics-listen", getenv("KV_METRICS_LISTEN"), "serve Prometheus /metrics and /debug/pprof/ on this address; off when empty (env KV_METRICS_LISTEN)")
	fs.BoolVar(&cfg.AccessLog, "access-log", cfg.AccessLog, "log one line per request")
	consoleEnv := getenv("KV_CONSOLE")
	if consoleEnv != "" {
		on, err := strconv.ParseBool(consoleEnv)
		if err != nil {
			return cfg, nil, fmt.Errorf("KV_CONSOLE=%q is not true or false", consoleEnv)
		}
		cfg.Console = on
	}
	fs.BoolVar(&cfg.Console, "console", cfg.Console, "serve the web console at /console/ on the API listener (env KV_CONSOLE)")
	logLevel := fs.String("log-level", envOr(getenv, "KV_LOG_LEVEL", "info"), "debug, info, warn or error (env KV_LOG_LEVEL)")
	logFormat := fs.String("log-format", envOr(getenv, "KV_LOG_FORMAT", "text"), "text or json (env KV_LOG_FORMAT)")
	fs.DurationVar(&cfg.ShutdownTimeout, "shutdown-timeout", cfg.ShutdownTimeout, "how long a stop waits for requests in flight")
	fs.DurationVar(&cfg.SlowBody, "slow-body-timeout", cfg.SlowBody, "each 64 KiB of a request body over 4 KiB must arrive within this (400 otherwise), each 64 KiB of a value over 4 KiB be taken by the client within this, and a request waits at most this for room in the memory budgets (503 otherwise)")
	fs.IntVar(&cfg.MaxConnections, "max-connections", envInt(getenv, "KV_MAX_CONNECTIONS", 0), "most API connections open at once (env KV_MAX_CONNECTIONS; default: below the open-file limit, at most 10000)")
	fs.Var(byteSize{&cfg.BodyBudget}, "body-memory", "memory for request bodies being received, shared fairly by organizations (default 16MiB)")
	fs.Var(byteSize{&cfg.ResponseBudget}, "response-memory", "memory for values over 4 KiB being sent, shared fairly by organizations (default 16MiB)")
	fs.Var(byteSize{&cfg.HeaderBudget}, "header-memory", "memory for request headers being received, beyond 8 KiB per request (default 32MiB)")
	if v := getenv("KV_PG_CONNECT_TIMEOUT"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			return cfg, nil, fmt.Errorf("KV_PG_CONNECT_TIMEOUT=%q is not a duration (e.g. 60s, 2m)", v)
		}
		*pgConnectTimeout = d
	}
	// Every flag may also be given in the environment, as KV_ and its name
	// in capitals (--max-stored-bytes: KV_MAX_STORED_BYTES); the command
	// line wins. Flags that read theirs above say so in their usage.
	var envErr error
	fs.VisitAll(func(f *flag.Flag) {
		name := envName(f.Name)
		if strings.Contains(f.Usage, "(env "+name) {
			return
		}
		f.Usage += " (env " + name + ")"
		if v := getenv(name); v != "" && envErr == nil {
			if err := f.Value.Set(v); err != nil {
				envErr = fmt.Errorf("%s=%q: %v", name, v, err)
			}
		}
	})
	if envErr != nil {
		return cfg, nil, envErr
	}
	if err := fs.Parse(args); err != nil {
		return cfg, nil, err
	}
	switch {
	case *pgConnectTimeout < 0:
		return cfg, nil, errors.New("--pg-connect-timeout must not be negative")
	case *pgConnectTimeout == 0:
		cfg.Postgres.OpenTimeout = -1 // one attempt
	default:
		cfg.Postgres.OpenTimeout = *pgConnectTimeout
	}
	for _, name := range []string{"KV_RATE_LIMIT", "KV_AUTH_FAILURE_LIMIT"} {
		if v := getenv(name); v != "" {
			if _, err := strconv.Atoi(v); err != nil {
				return cfg, nil, fmt.Errorf("%s=%q is not a whole number", name, v)
			}
		}
	}
	if (cfg.TLSCert == "") != (cfg.TLSKey == "") {
		return cfg, nil, errors.New("--tls-cert and --tls-key go together")
	}
	if cfg.RateLimit < 0 || cfg.RateBurst < 0 || cfg.MaxNamespaces < 0 || cfg.MaxConnections < 0 || cfg.AuthFailureLimit < 0 {
		return cfg, nil, errors.New("--rate-limit, --rate-burst, --max-namespaces, --max-connections and --auth-failure-limit must not be negative")
	}
	for _, b := range []struct {
		name string
		n    int64
	}{{"--body-memory", cfg.BodyBudget}, {"--response-memory", cfg.ResponseBudget}} {
		if b.n != 0 && b.n <= 1<<20 {
			return cfg, nil, fmt.Errorf("%s must hold at least one value of the largest size: more than 1MiB", b.name)
		}
	}
	if cfg.SlowBody <= 0 {
		return cfg, nil, errors.New("--slow-body-timeout must be positive")
	}
	if fs.NArg() > 0 {
		return cfg, nil, fmt.Errorf("unexpected argument %q (see kvd -h)", fs.Arg(0))
	}
	logger, err := newLogger(*logLevel, *logFormat, stderr)
	if err != nil {
		return cfg, nil, err
	}
	cfg.Logger = logger
	cfg.APIKey = getenv("TELNYX_API_KEY")
	return cfg, logger, nil
}

func newLogger(level, format string, w io.Writer) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch strings.ToLower(format) {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", format)
}

// envName is the environment variable of the flag called name.
func envName(name string) string {
	return "KV_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}
