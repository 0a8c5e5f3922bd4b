// Package bench is kvbench's engine: it starts kvd and a bare net/http
// baseline as child processes, drives the same workloads against both over
// keep-alive HTTP connections, and reports throughput, latency
// percentiles, CPU, peak RSS and (under strace) fsyncs per acknowledged
// write.
package bench

import (
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"
)

// The workloads, in the order a run drives them.
const (
	GetHit = "get-hit"
	// GetHitSlowloris is get-hit while an attacker pool holds SlowConns
	// slow connections open to the target (see slowloris.go).
	GetHitSlowloris = "get-hit-slowloris"
	GetMiss         = "get-miss"
	PutOverwrite    = "put-overwrite"
	Mix9010         = "mix-90-10"
	PutNew          = "put-new"
	// PutIfMatch is put-overwrite with If-Match: each client overwrites
	// keys of its own, each with the ETag its previous write of the key
	// returned.
	PutIfMatch = "put-if-match"
	// BatchPut100 is atomic batches of 100 puts of new keys
	// (POST /v2/storage/kvs/{id}/batch); its rate counts keys.
	BatchPut100 = "batch-put-100"
	// IncrHot is a batch of one incr of one key shared by every client;
	// at the end of each phase the counter must equal the incrs
	// acknowledged.
	IncrHot  = "incr-hot"
	List1000 = "list-1000"
	Put1MiB  = "put-1mib"
	Get1MiB  = "get-1mib"
)

// Workloads lists every workload of kvd and the baseline, in run order.
var Workloads = []string{GetHit, GetHitSlowloris, GetMiss, PutOverwrite, Mix9010, PutNew, PutIfMatch, BatchPut100, IncrHot, List1000, Put1MiB, Get1MiB}

// kvdOnly are the workloads the baseline does not serve (conditional
// writes and batches); they are compared with kvd's own figures.
var kvdOnly = []string{PutIfMatch, BatchPut100, IncrHot}

// The workloads of PostgreSQL itself (the postgres target), each the
// counterpart of kvd's: one statement per operation, issued with pgx on
// as many connections as clients, on the server kvd on PostgreSQL uses.
const (
	// PGSelect is a primary-key SELECT of one of Keys rows of ValueSize
	// bytes: get-hit's counterpart.
	PGSelect = "pg-select"
	// PGUpsert is INSERT ... ON CONFLICT (k) DO UPDATE of one of those
	// rows with a new value, committed synchronously: the counterpart of
	// put-overwrite and put-new.
	PGUpsert = "pg-upsert"
	// PGRange is an index range scan of 1,000 rows of ListKeys from a
	// random start: list-1000's counterpart.
	PGRange = "pg-range"
)

// PGWorkloads lists the postgres target's workloads, in run order.
var PGWorkloads = []string{PGSelect, PGUpsert, PGRange}

// allWorkloads is every workload name kvbench knows.
func allWorkloads() []string { return append(slices.Clone(Workloads), PGWorkloads...) }

// Config.Postgres values besides a URL.
const (
	PostgresAuto = "auto"
	PostgresOff  = "off"
)

// firstLine returns s up to its first line break.
func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// Target names. A kvd target's ratio is taken against TargetBaseline;
// kvd on PostgreSQL's also against TargetPostgres, PostgreSQL itself.
const (
	TargetKVD         = "kvd"
	TargetKVDPostgres = "kvd-postgres"
	TargetPostgres    = "postgres"
	TargetBaseline    = "baseline"
)

// Config is one benchmark run.
type Config struct {
	// KVD is the kvd binary; empty builds ./cmd/kvd of this module into
	// WorkDir with the go command.
	KVD string
	// KVDArgs are further flags for every kvd the run starts, e.g.
	// {"--pg-max-conns", "32"}.
	KVDArgs []string
	// Baseline is the command that serves the baseline on an address
	// appended as its last argument, e.g. {"/path/kvbench", "baseline",
	// "--listen"}. Empty runs this executable with those arguments.
	Baseline []string
	// Postgres adds a kvd target on PostgreSQL: a postgres:// URL of an
	// empty database, PostgresAuto to start a throwaway server from the
	// machine's binaries when there are any, or PostgresOff (or "") for
	// none.
	Postgres string
	// NoEmbedded leaves out the kvd target on the embedded engine.
	NoEmbedded bool

	Keys        int           // keys filled with 1 KiB values before the key workloads
	ListKeys    int           // keys in list-1000's namespace
	ValueSize   int           // bytes of the small values (1 KiB)
	BigKeys     int           // distinct keys of put-1mib and get-1mib
	Duration    time.Duration // measured time of each workload and client count
	Warmup      time.Duration // unmeasured time before it
	Clients     []int         // concurrent clients of each workload
	ListClients []int         // further client counts for list-1000 (4)
	FillClients int           // concurrent clients of the fills
	Workloads   []string      // the workloads to run; empty: all

	// SlowConns is the number of slow connections get-hit-slowloris keeps
	// open to the target: a third idle, a third trickling a request header,
	// a third trickling a 1 MiB PUT body. SlowInterval is the time between
	// two trickled writes of one connection.
	SlowConns    int
	SlowInterval time.Duration

	// FsyncDuration is the length of each strace pass that counts kvd's
	// fsyncs during put-new; 0 skips it.
	FsyncDuration time.Duration
	// DiskSyncDuration is how long each mode of the disk's own sync rate
	// is measured, in the work directory; 0 skips it.
	DiskSyncDuration time.Duration

	// Rounds is how many times each phase runs on every target, in turns;
	// a result is its target's median round (1: once).
	Rounds int

	// Settle is the longest wait after each fill for the target's server
	// (and PostgreSQL's processes, for a target on PostgreSQL) to go
	// quiet: its flushes, compactions, checkpoints done. 0 does not wait.
	Settle time.Duration
	// ProfileDir, when set, receives a CPU profile of the server of every
	// measured phase and, for the targets on PostgreSQL, its statements
	// and wait events (see profile.go).
	ProfileDir string

	// WorkDir holds the binaries, data directories and server logs; empty
	// uses a new temporary directory removed at the end.
	WorkDir string
	// Log receives progress lines (nil: discarded).
	Log io.Writer
}

// DefaultConfig returns the defaults of the command.
func DefaultConfig() Config {
	return Config{
		Keys:             10_000,
		ListKeys:         1_000_000,
		ValueSize:        1 << 10,
		BigKeys:          64,
		Duration:         10 * time.Second,
		Warmup:           time.Second,
		Clients:          []int{1, 64},
		ListClients:      []int{4},
		FillClients:      64,
		SlowConns:        1000,
		SlowInterval:     time.Second,
		FsyncDuration:    5 * time.Second,
		DiskSyncDuration: 3 * time.Second,
		Settle:           time.Minute,
		Rounds:           1,
		Postgres:         PostgresAuto,
	}
}

// Validate checks the configuration.
func (c *Config) Validate() error {
	if err := checkTimes(c.Duration, c.Warmup, c.Settle); err != nil {
		return err
	}
	switch {
	case c.Keys < 1:
		return errors.New("bench: --keys must be at least 1")
	case c.ListKeys < 1:
		return errors.New("bench: --list-keys must be at least 1")
	case c.ValueSize < 0 || c.ValueSize > maxValue:
		return errors.New("bench: value size must be 0 to 1 MiB")
	case c.BigKeys < 1:
		return errors.New("bench: big keys must be at least 1")
	case len(c.Clients) == 0:
		return errors.New("bench: --clients is empty")
	case c.FillClients < 1:
		return errors.New("bench: --fill-clients must be at least 1")
	case c.Rounds < 1 || c.Rounds > 100:
		return errors.New("bench: --rounds must be 1 to 100")
	case c.selected(GetHitSlowloris) && (c.SlowConns < 1 || c.SlowConns > 1<<20):
		return errors.New("bench: --slow-conns must be 1 to 1048576")
	case c.selected(GetHitSlowloris) && c.SlowInterval <= 0:
		return errors.New("bench: --slow-interval must be positive")
	case c.NoEmbedded && (c.Postgres == "" || c.Postgres == PostgresOff):
		return errors.New("bench: no kvd target (the embedded engine is left out and no --postgres given)")
	case (c.Postgres == "" || c.Postgres == PostgresOff) && slices.ContainsFunc(c.Workloads, func(w string) bool { return slices.Contains(PGWorkloads, w) }):
		return errNoPostgres
	}
	for _, n := range append(slices.Clone(c.Clients), c.ListClients...) {
		if n < 1 || n > 4096 {
			return fmt.Errorf("bench: %d clients: want 1 to 4096", n)
		}
	}
	for _, w := range c.Workloads {
		if !slices.Contains(allWorkloads(), w) {
			return fmt.Errorf("bench: unknown workload %q (have %s)", w, strings.Join(allWorkloads(), ", "))
		}
	}
	return nil
}

// checkTimes checks the times every mode has: measured, warm-up and
// settle.
func checkTimes(duration, warmup, settle time.Duration) error {
	switch {
	case duration <= 0:
		return errors.New("bench: --duration must be positive")
	case warmup < 0:
		return errors.New("bench: --warmup must not be negative")
	case settle < 0:
		return errors.New("bench: --settle must not be negative")
	}
	return nil
}

func (c *Config) selected(w string) bool {
	return len(c.Workloads) == 0 || slices.Contains(c.Workloads, w)
}

// anySelected reports whether any of ws is selected.
func (c *Config) anySelected(ws []string) bool {
	return slices.ContainsFunc(ws, c.selected)
}

// clientsFor returns the client counts workload w runs at.
func (c *Config) clientsFor(w string) []int {
	n := slices.Clone(c.Clients)
	if w == List1000 || w == PGRange {
		n = append(n, c.ListClients...)
	}
	slices.Sort(n)
	return slices.Compact(n)
}

// maxClients returns the most concurrent clients any phase or fill uses.
func (c *Config) maxClients() int {
	n := c.FillClients
	for _, w := range allWorkloads() {
		for _, k := range c.clientsFor(w) {
			n = max(n, k)
		}
	}
	return n
}

func (c *Config) logf(format string, args ...any) { logf(c.Log, format, args...) }

// logf writes a progress line to w, unless w is nil.
func logf(w io.Writer, format string, args ...any) {
	if w != nil {
		fmt.Fprintf(w, format+"\n", args...)
	}
}

// buildKVD builds ./cmd/kvd of this module into dir with the go command
// and returns the binary's path.
func buildKVD(ctx context.Context, dir string, log io.Writer) (string, error) {
	bin := filepath.Join(dir, "kvd")
	logf(log, "building kvd: go build -o %s github.com/edgekv/kv/cmd/kvd", bin)
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/edgekv/kv/cmd/kvd")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("bench: build kvd (run from the module, or pass --kvd): %v\n%s", err, out)
	}
	return bin, nil
}

// Run runs the benchmark and returns its report. A target that fails is
// reported as an error; a workload whose requests fail is reported with
// its error count and first error.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	dir := cfg.WorkDir
	if dir == "" {
		d, err := os.MkdirTemp("", "kvbench-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(d)
		dir = d
	}
	if cfg.KVD == "" {
		bin, err := buildKVD(ctx, dir, cfg.Log)
		if err != nil {
			return nil, err
		}
		cfg.KVD = bin
	}
	if len(cfg.Baseline) == 0 {
		self, err := os.Executable()
		if err != nil {
			return nil, err
		}
		cfg.Baseline = []string{self, "baseline", "--listen"}
	}

	if cfg.selected(GetHitSlowloris) {
		// The attacker's connections and the clients' share this process.
		if err := raiseFDLimit(cfg.SlowConns+cfg.maxClients()+fdReserve, slowlorisUse, "--slow-conns"); err != nil {
			return nil, fmt.Errorf("bench: %w", err)
		}
	}

	if cfg.ProfileDir != "" {
		if err := os.MkdirAll(cfg.ProfileDir, 0o755); err != nil {
			return nil, fmt.Errorf("bench: --profile: %w", err)
		}
	}

	rep := newReport(cfg)
	httpLoads := cfg.anySelected(Workloads)
	var targets []string
	if !cfg.NoEmbedded && httpLoads {
		targets = append(targets, TargetKVD)
	}
	pg, notes := openPostgres(cfg.Postgres, cfg.ProfileDir != "", cfg.logf)
	rep.Notes = append(rep.Notes, notes...)
	if pg != nil {
		defer pg.close()
		cfg.Postgres = pg.kvdURL
		if httpLoads {
			targets = append(targets, TargetKVDPostgres)
		}
		if cfg.anySelected(PGWorkloads) {
			targets = append(targets, TargetPostgres)
		}
	}
	if httpLoads {
		targets = append(targets, TargetBaseline)
	}
	if err := measureTargets(ctx, &cfg, dir, targets, pg, rep); err != nil {
		return rep, err
	}
	if cfg.FsyncDuration > 0 && !cfg.NoEmbedded {
		for _, n := range cfg.Clients {
			f, err := measureFsyncs(ctx, &cfg, dir, n)
			if err != nil {
				return rep, fmt.Errorf("bench: fsync pass: %w", err)
			}
			rep.Fsyncs = append(rep.Fsyncs, f)
			if f.Note != "" && f.Writes == 0 {
				break // strace is missing or cannot trace here: once is enough
			}
		}
	}
	if cfg.DiskSyncDuration > 0 {
		ds, err := measureDiskSync(dir, cfg.DiskSyncDuration)
		if err != nil {
			return rep, fmt.Errorf("bench: %w", err)
		}
		if x, ok := rep.Find(TargetKVD, PutNew, 1); ok && ds.AppendsPerSec > 0 {
			ds.KVDPutNew1, ds.KVDOfAppends = x.OpsPerSec, x.OpsPerSec/ds.AppendsPerSec
		}
		rep.DiskSync = &ds
		cfg.logf("%s", ds.line())
	}
	rep.computeRatios()
	rep.Finished = time.Now().UTC()
	return rep, nil
}

// pgPartners are the workloads of PostgreSQL itself, each measured right
// after the kvd workload it is compared with.
var pgPartners = map[string]string{GetHit: PGSelect, PutOverwrite: PGUpsert, List1000: PGRange}

// target is one system being measured: kvd or the baseline (http), or
// PostgreSQL itself (pg).
type target struct {
	name string
	http *run
	pg   *pgRun
}

// workload returns what the target runs of workload wl (its partner, for
// PostgreSQL itself), if anything.
func (t target) workload(cfg *Config, wl string) (string, bool) {
	if t.pg != nil {
		wl = pgPartners[wl]
	}
	ok := wl != "" && cfg.selected(wl) && (t.http == nil || t.http.serves(wl))
	return wl, ok
}

func (t target) measure(ctx context.Context, wl string, n int) (Result, error) {
	if t.pg != nil {
		return t.pg.measure(ctx, wl, n)
	}
	return t.http.measure(ctx, wl, n)
}

// measureTargets starts and fills every target, then measures them in
// turns: each workload at each client count on every target, one right
// after the other, so that a ratio compares phases seconds apart rather
// than minutes (the speed of a shared machine drifts over minutes). Each
// phase starts once every target has gone quiet (up to Settle, at most
// 10 s), so that none measures another's leftover flushes and
// compactions.
func measureTargets(ctx context.Context, cfg *Config, dir string, names []string, pg *pgEnv, rep *Report) (err error) {
	var ts []target
	defer func() {
		for _, t := range slices.Backward(ts) {
			if t.http != nil {
				if cerr := t.http.close(); err == nil && cerr != nil {
					err = fmt.Errorf("bench: %w", cerr)
				}
			}
		}
	}()
	for _, name := range names {
		t := target{name: name}
		var err error
		if name == TargetPostgres {
			t.pg, err = openPostgresTarget(ctx, cfg, pg, rep)
		} else {
			t.http, err = openTarget(ctx, cfg, dir, name, pg, rep)
		}
		if err != nil {
			return fmt.Errorf("bench: %s: %w", name, err)
		}
		ts = append(ts, t)
	}
	cpu := func() time.Duration {
		var sum time.Duration
		for _, t := range ts {
			if t.http != nil {
				sum += procCPUOrZero(t.http.s.proc.pid)
			}
		}
		if pg != nil && pg.knowsCPU() {
			sum += pg.cpu()
		}
		return sum
	}
	first := len(rep.Results)
	for _, wl := range Workloads {
		var clients []int
		for _, t := range ts {
			if w, ok := t.workload(cfg, wl); ok {
				clients = append(clients, cfg.clientsFor(w)...)
			}
		}
		slices.Sort(clients)
		for _, n := range slices.Compact(clients) {
			rounds := make([][]Result, len(ts))
			for range cfg.Rounds {
				for i, t := range ts {
					w, ok := t.workload(cfg, wl)
					if !ok || !slices.Contains(cfg.clientsFor(w), n) {
						continue
					}
					if err := ctx.Err(); err != nil {
						return err
					}
					if cfg.Settle > 0 {
						if st := waitQuiet(ctx, nil, "", cpu, min(cfg.Settle, 10*time.Second)); !st.Quiet {
							cfg.logf("%s %s c=%d: the targets still busy after %.0fs (%.2f cores); measuring anyway", t.name, w, n, st.Seconds, st.ServerCPUSeconds/st.Seconds)
						}
					}
					started := time.Now()
					res, err := t.measure(ctx, w, n)
					if err != nil {
						return fmt.Errorf("bench: %s: %w", t.name, err)
					}
					res.Started = started
					rounds[i] = append(rounds[i], res)
					cfg.logf("%s", res.line())
				}
			}
			for _, rs := range rounds {
				if len(rs) > 0 {
					rep.Results = append(rep.Results, medianRound(rs))
				}
			}
		}
	}
	// The table shows each target's results together, in the order the
	// targets were named.
	slices.SortStableFunc(rep.Results[first:], func(a, b Result) int {
		return slices.Index(names, a.Target) - slices.Index(names, b.Target)
	})
	return nil
}

// medianRound returns, of the rounds of one phase, the one of median
// throughput (the lower of the two middle ones for an even number), with
// every round's throughput, their errors added up, and a failed check if
// any round's failed.
func medianRound(rs []Result) Result {
	byRate := slices.Clone(rs)
	slices.SortStableFunc(byRate, func(a, b Result) int { return cmp.Compare(a.OpsPerSec, b.OpsPerSec) })
	m := byRate[(len(byRate)-1)/2]
	if len(rs) == 1 {
		return m
	}
	m.Errors, m.FirstError = 0, ""
	for _, r := range rs {
		m.Rounds = append(m.Rounds, r.OpsPerSec)
		m.Errors += r.Errors
		if m.FirstError == "" {
			m.FirstError = r.FirstError
		}
		if r.CheckFailed {
			m.Check, m.CheckFailed = r.Check, true
		}
	}
	return m
}

// server is a target being benchmarked.
type server struct {
	name string
	// debug is the address of the server's /debug/pprof/ (kvd's
	// --metrics-listen, the baseline's --pprof), when it serves one.
	debug  string
	spec   serverSpec // how it was started, to start it again
	proc   *proc
	base   string // http://host:port
	auth   string // Authorization header value
	client *http.Client
	// ready is when /healthz first answered 200; proc.started is when the
	// process was started.
	ready time.Time
}

// serverSpec describes how to start one target.
type serverSpec struct {
	name     string
	kvd      string   // the kvd binary; empty starts the baseline
	baseline []string // the baseline's argv, its address appended
	store    string   // kvd's --store: a data directory or a postgres:// URL
	kvdArgs  []string // further kvd flags
	logDir   string   // where the server's log goes
	tracer   []string // argv prefix the server runs under (strace), or nil
	debug    bool     // serve /debug/pprof/ on a port of its own
	// maxClients is the most concurrent clients the load generator's
	// client keeps connections for.
	maxClients int
}

// storeDir returns a new data directory name for target name in dir.
func storeDir(dir, name string) string {
	return filepath.Join(dir, fmt.Sprintf("%s-store-%d", name, time.Now().UnixNano()))
}

// startServer starts target name (optionally under a tracer: argv
// prefix) with its store in dir.
func startServer(ctx context.Context, cfg *Config, dir, name string, tracer []string, maxClients int) (*server, error) {
	sp := serverSpec{name: name, logDir: dir, tracer: tracer, maxClients: maxClients, debug: cfg.ProfileDir != "" && tracer == nil}
	switch name {
	case TargetBaseline:
		sp.baseline = cfg.Baseline
	case TargetKVDPostgres:
		sp.kvd, sp.store, sp.kvdArgs = cfg.KVD, cfg.Postgres, cfg.KVDArgs
	default:
		sp.kvd, sp.store, sp.kvdArgs = cfg.KVD, storeDir(dir, name), cfg.KVDArgs
	}
	return sp.start(ctx)
}

// start starts the server on a free loopback port and waits until its
// /healthz answers 200.
func (sp serverSpec) start(ctx context.Context) (*server, error) {
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ { // a free port can be taken before the child binds it
		addr, err := freeAddr()
		if err != nil {
			return nil, err
		}
		var argv, env []string
		var key [16]byte
		rand.Read(key[:])
		token := "kvbench-" + hex.EncodeToString(key[:])
		debug := ""
		if sp.debug && (sp.kvd != "" || strings.TrimLeft(sp.baseline[len(sp.baseline)-1], "-") == "listen") {
			if debug, err = freeAddr(); err != nil {
				return nil, err
			}
		}
		if sp.kvd == "" {
			argv = slices.Clone(sp.baseline)
			if debug != "" {
				// kvbench baseline's --pprof goes before the --listen
				// flag the argv ends with.
				argv = append(argv[:len(argv)-1], "--pprof", debug, argv[len(argv)-1])
			}
			argv = append(argv, addr)
		} else {
			argv = []string{sp.kvd, "--listen", addr, "--store", sp.store, "--access-log=false", "--rate-limit=0", "--log-level", "warn"}
			if debug != "" {
				argv = append(argv, "--metrics-listen", debug)
			}
			argv = append(argv, sp.kvdArgs...)
			env = []string{"TELNYX_API_KEY=" + token}
		}
		argv = append(slices.Clone(sp.tracer), argv...)
		p, err := startProc(argv, env, filepath.Join(sp.logDir, fmt.Sprintf("%s-%d.log", sp.name, time.Now().UnixNano())))
		if err != nil {
			return nil, err
		}
		if len(sp.tracer) > 0 {
			if p.pid, err = childPID(p.cmd.Process.Pid, 10*time.Second); err != nil {
				p.stop(5 * time.Second)
				return nil, err
			}
		}
		if err := p.waitReady(ctx, "http://"+addr+"/healthz", 60*time.Second); err != nil {
			p.stop(5 * time.Second)
			lastErr = err
			continue
		}
		return &server{name: sp.name, debug: debug, spec: sp, proc: p, base: "http://" + addr, auth: "Bearer " + token, client: newClient(sp.maxClients), ready: time.Now()}, nil
	}
	return nil, lastErr
}

// newClient returns the load generator's client: keep-alive connections
// to one host, enough idle ones for every client, no compression.
func newClient(maxConns int) *http.Client {
	tr := &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        maxConns,
		MaxIdleConnsPerHost: maxConns,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
		ForceAttemptHTTP2:   false,
	}
	return &http.Client{Transport: tr, Timeout: 60 * time.Second}
}

func (s *server) close() error {
	s.client.CloseIdleConnections()
	return s.proc.stop(60 * time.Second)
}

// createNamespace creates a namespace and waits until it is provision_ok.
func (s *server) createNamespace(ctx context.Context, name string) (string, error) {
	body := fmt.Sprintf(`{"name": %q}`, name)
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, s.base+"/v2/storage/kvs", strings.NewReader(body))
	req.Header.Set("Authorization", s.auth)
	req.Header.Set("Content-Type", "application/json")
	var ns struct {
		Data struct {
			ID     string `json:"id"`
			Status string `json:"status"`
		} `json:"data"`
	}
	if err := s.doJSON(req, http.StatusCreated, &ns); err != nil {
		return "", fmt.Errorf("create namespace: %w", err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for ns.Data.Status != "provision_ok" {
		if time.Now().After(deadline) {
			return "", fmt.Errorf("namespace %s still %s after 30s", ns.Data.ID, ns.Data.Status)
		}
		time.Sleep(20 * time.Millisecond)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.base+"/v2/storage/kvs/"+ns.Data.ID, nil)
		req.Header.Set("Authorization", s.auth)
		if err := s.doJSON(req, http.StatusOK, &ns); err != nil {
			return "", fmt.Errorf("get namespace: %w", err)
		}
	}
	return ns.Data.ID, nil
}

func (s *server) doJSON(req *http.Request, want int, v any) error {
	resp, err := s.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != want {
		return fmt.Errorf("%s %s: %s: %s", req.Method, req.URL.Path, resp.Status, bytes.TrimSpace(b))
	}
	return json.Unmarshal(b, v)
}

// hostInfo describes the machine, for the report.
func hostInfo() Host {
	h := Host{CPUs: runtime.NumCPU(), GOMAXPROCS: runtime.GOMAXPROCS(0), GoVersion: runtime.Version(), OS: runtime.GOOS + "/" + runtime.GOARCH}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		h.Kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		h.LoadAvg = strings.Join(strings.Fields(string(b))[:3], " ")
	}
	return h
}
