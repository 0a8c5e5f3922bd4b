// Package server wires kvd together: it opens the storage engine named by
// the configuration, starts the lifecycle worker and serves the API, and
// stops them in order. cmd/kvd and the tests both run kvd through it.
package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgekv/kv"
	"github.com/edgekv/kv/internal/api"
	"github.com/edgekv/kv/internal/console"
	"github.com/edgekv/kv/internal/httpconn"
	"github.com/edgekv/kv/internal/lifecycle"
	"github.com/edgekv/kv/internal/metering"
	"github.com/edgekv/kv/internal/metrics"
	"github.com/edgekv/kv/internal/ratelimit"
	"github.com/edgekv/kv/internal/service"
	"github.com/edgekv/kv/internal/store"
	"github.com/edgekv/kv/internal/store/pebble"
	"github.com/edgekv/kv/internal/store/postgres"
)

// Config is kvd's configuration. DefaultConfig gives the defaults.
type Config struct {
	// Listen is the API's address (host:port).
	Listen string
	// Store is a data directory for the embedded engine, or a postgres://
	// URL for the PostgreSQL engine.
	Store string
	// Postgres tunes the PostgreSQL engine (pool size, statement timeout,
	// how long to wait for the database at start). Its Logger defaults to
	// Logger.
	Postgres postgres.Config

	// APIKey, when set, is accepted as a token of the default organization
	// (kvd takes it from TELNYX_API_KEY).
	APIKey string

	ReadHeaderTimeout time.Duration
	ReadTimeout       time.Duration
	WriteTimeout      time.Duration
	IdleTimeout       time.Duration
	MaxHeaderBytes    int
	// SlowBody is the pace bodies and large values must keep, and the
	// longest a request waits for room in the memory budgets (0:
	// api.DefaultSlowBody).
	SlowBody time.Duration
	// BodyBudget and ResponseBudget are the memory for request bodies
	// being received and for values being sent, shared fairly by
	// organizations (0: api.DefaultBodyBudget, api.DefaultResponseBudget).
	BodyBudget, ResponseBudget int64
	// MaxConnections caps the open connections of the API listener (0:
	// DefaultMaxConnections of the process's descriptor limit).
	MaxConnections int
	// HeaderBudget is the memory for request headers being received,
	// beyond 8 KiB per request (0: DefaultHeaderBudget).
	HeaderBudget int64
	// ShutdownTimeout bounds how long Close waits for requests in flight.
	ShutdownTimeout time.Duration

	// Lifecycle is the background worker's configuration; its Store, Now
	// and Logger are filled in by Open.
	Lifecycle lifecycle.Config
	// NoBackground runs no lifecycle worker in this process: namespaces are
	// provisioned and removed, and expired keys swept, only by other kvd
	// processes sharing the database.
	NoBackground bool

	// RateLimit is the number of requests a token may make per minute (0,
	// the default: unlimited), RateBurst how many at once (0: RateLimit).
	RateLimit int
	// AuthFailureLimit is how many failed authentications a client address
	// may make per minute before its unknown tokens get 429 without a
	// lookup (0: no limit; default service.DefaultAuthFailureLimit).
	AuthFailureLimit int
	// TokenPoll is how often this process reads the revocations made
	// anywhere (0: DefaultTokenPoll).
	TokenPoll time.Duration
	RateBurst int
	// MaxNamespaces limits each organization's namespaces (0: no limit).
	MaxNamespaces int
	// MaxStoredBytes limits the bytes (keys plus values) each organization
	// stores (0: no limit).
	MaxStoredBytes int64
	// CacheSize is the embedded engine's block cache, in bytes (0:
	// pebble.DefaultCacheSize).
	CacheSize int64
	// MinFreeSpace is the free space, in bytes, the embedded engine keeps
	// on its disk: below it, key writes and namespace creations get 507
	// until space is freed (0: no check).
	MinFreeSpace int64
	// OnStoreFatal is called once when the embedded engine meets a storage
	// error it cannot continue after; the process should then exit (kvd
	// logs the cause and exits 70). nil logs the cause.
	OnStoreFatal func(error)

	// TLSCert and TLSKey, when both set, serve HTTPS with that certificate.
	TLSCert string
	TLSKey  string

	// MetricsListen, when set, serves Prometheus metrics (/metrics) and
	// Go's profiles (/debug/pprof/) on this address, apart from the API.
	MetricsListen string

	// Console serves the web console at /console/ beside the API.
	Console bool

	AccessLog bool
	Logger    *slog.Logger     // nil: slog.Default()
	Now       func() time.Time // nil: time.Now
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{
		Listen:            "127.0.0.1:8080",
		Store:             "./data",
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       60 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		SlowBody:          api.DefaultSlowBody,
		ShutdownTimeout:   30 * time.Second,
		AuthFailureLimit:  service.DefaultAuthFailureLimit,
		Console:           true,
		MinFreeSpace:      DefaultMinFreeSpace,
		AccessLog:         true,
	}
}

// DefaultMinFreeSpace is the free space the embedded engine keeps by
// default: room for a few flushes and compactions of its 32 MiB memtables.
const DefaultMinFreeSpace = 128 << 20

// Server is a running kvd.
type Server struct {
	cfg     Config
	Store   store.Store
	Service *service.Service
	Worker  *lifecycle.Worker
	meter   *metering.Buffer

	http      *http.Server
	metrics   *http.Server // nil without MetricsListen
	metricsLn net.Listener
	api       *api.Handler
	ln        net.Listener
	conns     *httpconn.Listener
	admin     *adminServer // nil: none
	tls       bool
	stopping  atomic.Bool
	cancel    context.CancelFunc
	bg        sync.WaitGroup
	serveErr  chan error
	closed    bool
}

// DefaultTokenPoll is how often a kvd reads the token revocations made in
// any process: a revoked token is refused everywhere within about this.
const DefaultTokenPoll = 250 * time.Millisecond

// ErrStoreLocked is returned by OpenStore when another process has the
// embedded engine's directory open.
var ErrStoreLocked = pebble.ErrLocked

// OpenStore opens the engine named by cfg.Store: a postgres:// or
// postgresql:// URL, or else a directory for the embedded engine.
func OpenStore(ctx context.Context, cfg Config) (store.Store, error) {
	if isPostgresURL(cfg.Store) {
		pc := cfg.Postgres
		if pc.Logger == nil {
			pc.Logger = cfg.Logger
		}
		return postgres.Open(ctx, cfg.Store, pc)
	}
	if cfg.Store == "" {
		return nil, errors.New("no store given: pass --store DIR or --store postgres://URL")
	}
	return pebble.Open(cfg.Store, pebble.Options{Logger: cfg.Logger, CacheSize: cfg.CacheSize, MaxOpenFiles: EngineFiles(DescriptorLimit()),
		MinFreeSpace: cfg.MinFreeSpace, OnFatal: cfg.OnStoreFatal})
}

// spaceOf returns the free-space check of an engine that has one.
func spaceOf(st store.Store) service.Space {
	if e, ok := st.(*pebble.DB); ok && e.Space() != nil {
		return e.Space()
	}
	return nil
}

func isPostgresURL(s string) bool {
	return strings.HasPrefix(s, "postgres://") || strings.HasPrefix(s, "postgresql://")
}

// Open opens the store, binds the listener and starts serving; it returns
// once requests are being accepted.
func Open(ctx context.Context, cfg Config) (*Server, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	st, err := OpenStore(ctx, cfg)
	if err != nil {
		return nil, err
	}
	s, err := Start(cfg, st)
	if err != nil {
		st.Close()
		return nil, err
	}
	return s, nil
}

// Start serves an already open store; Close closes it.
func Start(cfg Config, st store.Store) (*Server, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	var tlsConfig *tls.Config
	if cfg.TLSCert != "" || cfg.TLSKey != "" {
		cert, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
		if err != nil {
			return nil, fmt.Errorf("TLS certificate: %w", err)
		}
		tlsConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	tcp, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", cfg.Listen, err)
	}
	maxConns := cfg.MaxConnections
	if maxConns <= 0 {
		maxConns = DefaultMaxConnections(DescriptorLimit())
	}
	headerBudget := cfg.HeaderBudget
	if headerBudget <= 0 {
		headerBudget = DefaultHeaderBudget
	}
	var refusals *metrics.Refusals // set below when metrics are served
	ln := httpconn.NewListener(tcp, httpconn.Config{
		MaxConns:     maxConns,
		HeaderBudget: headerBudget,
		TLS:          tlsConfig,
		OnRefuse:     func(reason string) { refusals.Inc(reason) },
	})
	lc := cfg.Lifecycle
	lc.Store, lc.Now, lc.Logger = st, cfg.Now, cfg.Logger
	worker := lifecycle.New(lc)
	statics := map[string]string{}
	if cfg.APIKey != "" {
		statics[cfg.APIKey] = kv.DefaultOrg
	}
	meter := metering.NewBuffer(st, time.Second, cfg.Logger)
	meter.Start()
	svc := service.New(service.Config{Store: st, Now: cfg.Now, Wake: worker.Wake, StaticTokens: statics, MaxNamespaces: cfg.MaxNamespaces, MaxStoredBytes: cfg.MaxStoredBytes, Meter: meter, Space: spaceOf(st),
		Auth: service.AuthConfig{FailureLimit: cfg.AuthFailureLimit, Log: cfg.Logger}})
	s := &Server{cfg: cfg, Store: st, Service: svc, Worker: worker, meter: meter, ln: ln, tls: tlsConfig != nil, serveErr: make(chan error, 1)}
	var httpMetrics *metrics.HTTP
	if cfg.MetricsListen != "" {
		reg := metrics.NewRegistry()
		httpMetrics = metrics.NewHTTP(reg)
		mln, err := net.Listen("tcp", cfg.MetricsListen)
		if err != nil {
			ln.Close()
			meter.Stop(context.Background())
			return nil, fmt.Errorf("metrics: listen on %s: %w", cfg.MetricsListen, err)
		}
		refusals = metrics.NewRefusals(reg)
		registerCollectors(reg, st, worker, svc, cfg.Now)
		s.metricsLn = mln
		s.metrics = &http.Server{Handler: metrics.Handler(reg), ReadHeaderTimeout: 10 * time.Second}
		go s.metrics.Serve(mln)
	}
	s.api = api.New(api.Config{
		Service:        svc,
		Logger:         cfg.Logger,
		AccessLog:      cfg.AccessLog,
		Ready:          func() bool { return !s.stopping.Load() },
		Metrics:        httpMetrics,
		Refusals:       refusals,
		Limiter:        ratelimit.New(ratelimit.Config{Limit: cfg.RateLimit, Burst: cfg.RateBurst, Window: time.Minute, Now: cfg.Now}),
		SlowBody:       cfg.SlowBody,
		BodyBudget:     cfg.BodyBudget,
		ResponseBudget: cfg.ResponseBudget,
	})
	var handler http.Handler = s.api
	if cfg.Console {
		handler = console.Mount(s.api)
	}
	s.conns = ln
	s.http = &http.Server{
		Handler:           httpconn.Handler(handler),
		ConnState:         ln.ConnState,
		ConnContext:       ln.ConnContext,
		ReadHeaderTimeout: cfg.ReadHeaderTimeout,
		ReadTimeout:       cfg.ReadTimeout,
		WriteTimeout:      cfg.WriteTimeout,
		IdleTimeout:       cfg.IdleTimeout,
		MaxHeaderBytes:    cfg.MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelWarn),
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	poll := cfg.TokenPoll
	if poll <= 0 {
		poll = DefaultTokenPoll
	}
	s.bg.Add(1)
	go func() { defer s.bg.Done(); svc.WatchTokens(ctx, poll) }()
	if db, embedded := st.(*pebble.DB); embedded && !isPostgresURL(cfg.Store) {
		if a, err := startAdmin(cfg.Store, svc, db, cfg.Logger); err != nil {
			cfg.Logger.Warn("kvd: no admin channel; `kvd token` needs this kvd stopped", "err", err)
		} else {
			s.admin = a
		}
	}
	if !cfg.NoBackground {
		s.bg.Add(1)
		go func() { defer s.bg.Done(); worker.Run(ctx) }()
	}
	go func() { s.serveErr <- s.http.Serve(ln) }()
	cfg.Logger.Info("kvd serving", "addr", ln.Addr().String(), "store", redactStore(cfg.Store), "max_connections", maxConns)
	if cfg.APIKey == "" {
		cfg.Logger.Warn("TELNYX_API_KEY is not set: only tokens made with 'kvd token create' are accepted")
	}
	return s, nil
}

// redactStore hides a password in a database URL.
func redactStore(spec string) string {
	if !isPostgresURL(spec) {
		return spec
	}
	if i := strings.Index(spec, "://"); i >= 0 {
		if at := strings.LastIndex(spec, "@"); at > i {
			userinfo := spec[i+3 : at]
			if c := strings.Index(userinfo, ":"); c >= 0 {
				return spec[:i+3] + userinfo[:c] + ":***" + spec[at:]
			}
		}
	}
	return spec
}

// InFlight is the number of requests being served.
func (s *Server) InFlight() int64 { return s.api.InFlight() }

// MetricsAddr is the metrics listener's address ("" without one).
func (s *Server) MetricsAddr() string {
	if s.metricsLn == nil {
		return ""
	}
	return s.metricsLn.Addr().String()
}

// Addr is the address the API listens on.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// URL is the API's base URL (without /v2).
func (s *Server) URL() string {
	if s.tls {
		return "https://" + s.Addr()
	}
	return "http://" + s.Addr()
}

// Done is closed with the serving error when the server stops by itself.
func (s *Server) Done() <-chan error { return s.serveErr }

// Close stops the server gracefully: it stops accepting connections, waits
// (up to ShutdownTimeout) for requests in flight, stops the lifecycle
// worker after its current job, and closes the store.
func (s *Server) Close() error {
	if s.closed {
		return nil
	}
	s.closed = true
	s.stopping.Store(true)
	s.api.Close()
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
	defer cancel()
	err := s.http.Shutdown(ctx)
	if err != nil {
		s.http.Close()
	}
	err = errors.Join(err, s.api.WaitStreams(ctx))
	if s.metrics != nil {
		s.metrics.Close()
	}
	if s.admin != nil {
		s.admin.close()
	}
	s.cancel()
	s.bg.Wait()
	return errors.Join(err, s.meter.Stop(context.Background()), s.Store.Close())
}
