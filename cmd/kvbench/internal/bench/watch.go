package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"
)

// The watch mode measures the change feed under many watchers: kvd's
// delivery latency from a PUT to every watcher of the namespace, that no
// watcher misses or repeats a change, kvd's memory with the streams open,
// and what the watchers cost the GETs and PUTs of other clients. On
// PostgreSQL it runs two kvd on one database, the watchers split between
// them and the writes going through the first, so that the latency
// includes crossing from one kvd to the other.

// Watch targets, printed beside the figures.
const (
	// WatchP99Target is the most the delivery p99 may be on the embedded
	// engine, WatchP99TargetPostgres across two kvd on PostgreSQL.
	WatchP99Target         = 100 * time.Millisecond
	WatchP99TargetPostgres = 250 * time.Millisecond
	// WatchRSSTarget is the most resident memory a kvd may use with the
	// watchers connected.
	WatchRSSTarget = 512 << 20
	// WatchCostTarget is the largest share of get-hit's or put-new's
	// throughput the watchers may take.
	WatchCostTarget = 0.10
)

// WatchReportVersion is the version of the watch report's JSON layout.
const WatchReportVersion = 1

// The engines the watch mode runs kvd on.
const (
	EngineEmbedded = "embedded"
	EnginePostgres = "postgres"
)

// watchOpens bounds the watches being opened at once, so that opening ten
// thousand does not overrun kvd's accept queue.
const watchOpens = 64

// kvdOwnFiles is the descriptors a kvd holds besides its API connections:
// its engine's table cache (at most 1000) and its other files (128), as
// internal/server sizes them.
const kvdOwnFiles = 1128

// watchUse names what needs the descriptors, in the errors of the
// descriptor checks.
const watchUse = "the watch mode"

// WatchConfig is one watch run.
type WatchConfig struct {
	// KVD is the kvd binary; empty builds ./cmd/kvd of this module into
	// WorkDir with the go command.
	KVD string
	// KVDArgs are further flags for every kvd the run starts, e.g.
	// {"--metrics-listen", "127.0.0.1:9090"} to profile it.
	KVDArgs []string
	// Postgres adds a run of two kvd on PostgreSQL: a postgres:// URL of
	// an empty database, PostgresAuto to start a throwaway server from
	// the machine's binaries, or PostgresOff (or "") for none.
	Postgres string
	// NoEmbedded leaves out the run on the embedded engine.
	NoEmbedded bool

	Keys        int // keys filled into the watched namespace, the keys get-hit reads
	ValueSize   int // bytes of each value, the fill's, put-new's and the writer's
	Watchers    int // watch streams open at once, each on its own connection
	WriteRate   int // PUTs per second of the writer
	Writers     int // connections the writer spreads its PUTs over
	Clients     int // concurrent clients of get-hit and put-new
	FillClients int // concurrent clients of the fill

	Duration time.Duration // measured time of each measurement
	Warmup   time.Duration // unmeasured time before it
	// Settle is the longest wait after the fill for kvd to go quiet; 0
	// does not wait.
	Settle time.Duration
	// Open is the longest time every watcher may take to open its stream
	// and receive its ready event.
	Open time.Duration
	// Drain is the longest wait, once the writer has stopped, for every
	// watcher to receive every write.
	Drain time.Duration

	// WorkDir holds the binary, the data directory and the server logs;
	// empty uses a new temporary directory removed at the end.
	WorkDir string
	// Log receives progress lines (nil: discarded).
	Log io.Writer
}

// DefaultWatchConfig returns the defaults of kvbench watch.
func DefaultWatchConfig() WatchConfig {
	return WatchConfig{
		Postgres:    PostgresOff,
		Keys:        10_000,
		ValueSize:   1 << 10,
		Watchers:    10_000,
		WriteRate:   1000,
		Writers:     4,
		Clients:     64,
		FillClients: 64,
		Duration:    5 * time.Second,
		Warmup:      time.Second,
		Settle:      30 * time.Second,
		Open:        2 * time.Minute,
		Drain:       30 * time.Second,
	}
}

// Validate checks the configuration.
func (c *WatchConfig) Validate() error {
	switch {
	case c.Keys < 1 || c.Keys > scaleMaxKeys:
		return fmt.Errorf("bench: --keys must be 1 to %d", scaleMaxKeys)
	case c.ValueSize < 0 || c.ValueSize > maxValue:
		return errors.New("bench: --value-size must be 0 to 1 MiB")
	case c.Watchers < 1 || c.Watchers > 1_000_000:
		return errors.New("bench: --watchers must be 1 to 1000000")
	case c.WriteRate < 1 || c.WriteRate > 1_000_000:
		return errors.New("bench: --write-rate must be 1 to 1000000")
	case c.Writers < 1 || c.Writers > 4096:
		return errors.New("bench: --writers must be 1 to 4096")
	case c.Clients < 1 || c.Clients > 4096:
		return errors.New("bench: --clients must be 1 to 4096")
	case c.FillClients < 1 || c.FillClients > 4096:
		return errors.New("bench: --fill-clients must be 1 to 4096")
	case c.Duration <= 0:
		return errors.New("bench: --duration must be positive")
	case c.Warmup < 0:
		return errors.New("bench: --warmup must not be negative")
	case c.Settle < 0:
		return errors.New("bench: --settle must not be negative")
	case c.Open <= 0:
		return errors.New("bench: --open-timeout must be positive")
	case c.Drain <= 0:
		return errors.New("bench: --drain must be positive")
	case c.NoEmbedded && (c.Postgres == "" || c.Postgres == PostgresOff):
		return errors.New("bench: no engine to run (the embedded engine is left out and no --postgres given)")
	}
	return nil
}

func (c *WatchConfig) logf(format string, args ...any) { logf(c.Log, format, args...) }

// runConfig returns the Config the shared fill and phase code reads.
func (c *WatchConfig) runConfig() *Config {
	return &Config{
		KVD: c.KVD, Keys: c.Keys, ValueSize: c.ValueSize,
		Duration: c.Duration, Warmup: c.Warmup, Settle: c.Settle,
		Clients: []int{c.Clients}, FillClients: c.FillClients, Log: c.Log,
	}
}

// WatchReport is everything a watch run measured; it is what kvbench
// watch --json writes.
type WatchReport struct {
	Version  int           `json:"version"`
	Started  time.Time     `json:"started"`
	Finished time.Time     `json:"finished"`
	Host     Host          `json:"host"`
	LoadEnd  string        `json:"load_avg_at_end,omitempty"` // 1, 5 and 15 minutes
	Settings WatchSettings `json:"settings"`
	Engines  []WatchEngine `json:"engines"`
	Targets  []ScaleTarget `json:"targets"`
	// PeakRSSResettable says whether kvd's VmHWM could be reset as the
	// watchers connected, so that its peak is the watch phase's own.
	PeakRSSResettable bool     `json:"peak_rss_resettable"`
	Notes             []string `json:"notes,omitempty"`
}

// WatchSettings is the part of the WatchConfig that shapes the figures.
type WatchSettings struct {
	Keys        int      `json:"keys"`
	ValueSize   int      `json:"value_size"`
	Watchers    int      `json:"watchers"`
	WriteRate   int      `json:"write_rate"`
	Writers     int      `json:"writers"`
	Clients     int      `json:"clients"`
	FillClients int      `json:"fill_clients"`
	Duration    string   `json:"duration"`
	Warmup      string   `json:"warmup"`
	KVDArgs     []string `json:"kvd_args,omitempty"`
}

// WatchEngine is the run on one engine.
type WatchEngine struct {
	Engine string `json:"engine"`
	// KVDs is the number of kvd processes: the watchers are spread over
	// them, the writer and the clients use the first.
	KVDs int `json:"kvds"`
	// Error is what ended the run on this engine early, if anything did.
	Error string `json:"error,omitempty"`
	Fill  Fill   `json:"fill"`

	// Watchers is the streams asked for, Ready those that received their
	// ready event, OpenSeconds the time until the last one did.
	Watchers    int     `json:"watchers"`
	Ready       int     `json:"ready"`
	OpenSeconds float64 `json:"open_seconds"`

	Writes WatchWrites `json:"writes"`
	Events WatchEvents `json:"events"`
	// Latency is the delivery latency (from sending the PUT to the
	// watcher reading the event) of the writes sent in the measured
	// window; LatencyLoaded that of the writes sent while get-hit and
	// put-new ran with the watchers connected.
	Latency       WatchLatency `json:"latency"`
	LatencyLoaded WatchLatency `json:"latency_loaded"`
	// EventsPerSec is the events all watchers received per second over
	// the measured window.
	EventsPerSec float64 `json:"events_per_sec"`
	// DrainSeconds is the time from the writer's stop until every watcher
	// had every write (or the wait gave up: Drained false).
	DrainSeconds float64 `json:"drain_seconds"`
	Drained      bool    `json:"drained"`

	// KVDPeakRSS is each kvd's peak resident memory (VmHWM) from the
	// watchers' connecting until they closed; PeakRSS the largest.
	KVDPeakRSS []int64 `json:"kvd_peak_rss_bytes"`
	PeakRSS    int64   `json:"peak_rss_bytes"`
	// KVDCPU is the cores every kvd together used over the measured
	// window; BenchCPU kvbench's (watchers and writer), BenchPeakRSS its
	// peak resident memory over the watch phase.
	KVDCPU       float64 `json:"kvd_cpu_cores"`
	BenchCPU     float64 `json:"kvbench_cpu_cores"`
	BenchPeakRSS int64   `json:"kvbench_peak_rss_bytes"`

	// Without and With are get-hit and put-new without watchers and with
	// them connected (and the writer writing); Costs compares them.
	Without []Result    `json:"without_watchers"`
	With    []Result    `json:"with_watchers"`
	Costs   []WatchCost `json:"costs"`
}

// WatchWrites is what the writer did.
type WatchWrites struct {
	Rate int `json:"rate"` // PUTs per second asked
	// Acked is the PUTs acknowledged (201) from the writer's start to its
	// stop; Errors those that failed (they may have been committed),
	// Skipped those left out because every writer connection was busy.
	Acked      int64  `json:"acked"`
	Errors     int64  `json:"errors"`
	FirstError string `json:"first_error,omitempty"`
	Skipped    int64  `json:"skipped"`
	// WindowAcked is the PUTs acknowledged in the measured window,
	// PerSec their rate.
	WindowAcked int64   `json:"window_acked"`
	PerSec      float64 `json:"per_sec"`
}

// WatchEvents counts the writer's put events the watchers received.
type WatchEvents struct {
	// Expected is every acknowledged write times the watchers that were
	// ready; Received the distinct writes the watchers received (each
	// watcher's events in increasing revision); Missing the writes some
	// watcher never received, Duplicated the events with a revision not
	// above the watcher's previous one.
	Expected   int64 `json:"expected"`
	Received   int64 `json:"received"`
	Missing    int64 `json:"missing"`
	Duplicated int64 `json:"duplicated"`
	// BeyondAcked is the writes watchers received beyond the
	// acknowledged ones: writes whose answer failed but which were
	// committed (at most Errors per watcher), otherwise a fault.
	BeyondAcked int64 `json:"beyond_acked"`
	// Overflows is the watchers sent an overflow event (each a failure:
	// it fell behind and was closed); EndedEarly the streams that ended
	// otherwise before the run closed them; Other the events that were
	// not the writer's puts.
	Overflows  int64  `json:"overflows"`
	EndedEarly int64  `json:"ended_early"`
	FirstEnd   string `json:"first_end,omitempty"`
	Other      int64  `json:"other"`
}

// WatchLatency is a delivery latency distribution.
type WatchLatency struct {
	Events int64   `json:"events"`
	P50us  float64 `json:"p50_us"`
	P90us  float64 `json:"p90_us"`
	P99us  float64 `json:"p99_us"`
	MaxUs  float64 `json:"max_us"`
	MeanUs float64 `json:"mean_us"`
}

// WatchCost is a workload's throughput without and with the watchers.
type WatchCost struct {
	Workload string  `json:"workload"`
	Clients  int     `json:"clients"`
	Without  float64 `json:"without_ops_per_sec"`
	With     float64 `json:"with_ops_per_sec"`
	// Cost is 1 - With/Without: the share of the throughput the watchers
	// took.
	Cost float64 `json:"cost"`
}

// delivered reports whether every ready watcher received every
// acknowledged write once, and every watcher asked for was ready.
func (e *WatchEngine) delivered() bool {
	v := e.Events
	return e.Ready == e.Watchers && v.Missing == 0 && v.Duplicated == 0 && v.Overflows == 0 && v.EndedEarly == 0
}

// WriteJSON writes the report to path.
func (r *WatchReport) WriteJSON(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// RunWatch runs the watch mode and returns its report. On an error the
// report holds what was measured before it. A run in which some watcher
// missed, repeated or overflowed a write is reported, and is an error.
func RunWatch(ctx context.Context, cfg WatchConfig) (*WatchReport, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	dir := cfg.WorkDir
	if dir == "" {
		d, err := os.MkdirTemp("", "kvbench-watch-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(d)
		dir = d
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	if cfg.Log != nil {
		cfg.Log = &lockedWriter{w: cfg.Log}
	}
	// Every watcher's connection, the writer's and the clients' are
	// kvbench's; a child started after this inherits the raised limit.
	if err := raiseFDLimit(cfg.Watchers+cfg.Clients+cfg.Writers+fdReserve, watchUse, "--watchers"); err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	if cfg.KVD == "" {
		bin, err := buildKVD(ctx, dir, cfg.Log)
		if err != nil {
			return nil, err
		}
		cfg.KVD = bin
	}
	rep := &WatchReport{
		Version: WatchReportVersion,
		Started: time.Now().UTC(),
		Host:    hostInfo(),
		Settings: WatchSettings{
			Keys: cfg.Keys, ValueSize: cfg.ValueSize, Watchers: cfg.Watchers, WriteRate: cfg.WriteRate,
			Writers: cfg.Writers, Clients: cfg.Clients, FillClients: cfg.FillClients,
			Duration: cfg.Duration.String(), Warmup: cfg.Warmup.String(), KVDArgs: cfg.KVDArgs,
		},
		Engines: []WatchEngine{},
		Targets: []ScaleTarget{},
	}
	err := runWatchEngines(ctx, &cfg, dir, rep)
	rep.finish()
	if err == nil {
		for _, e := range rep.Engines {
			if !e.delivered() {
				err = fmt.Errorf("%s: not every watcher received every write once (%d of %d ready, %d missing, %d duplicated, %d overflows, %d ended early)",
					e.Engine, e.Ready, e.Watchers, e.Events.Missing, e.Events.Duplicated, e.Events.Overflows, e.Events.EndedEarly)
				break
			}
		}
	}
	if err != nil {
		return rep, fmt.Errorf("bench: watch: %w", err)
	}
	return rep, nil
}

// runWatchEngines runs the embedded engine, then PostgreSQL when asked.
func runWatchEngines(ctx context.Context, cfg *WatchConfig, dir string, rep *WatchReport) error {
	run := func(engine string, pg *pgEnv) error {
		e, err := runWatchEngine(ctx, cfg, dir, engine, pg, rep)
		if err != nil {
			e.Error = err.Error()
		}
		rep.Engines = append(rep.Engines, e)
		if err != nil {
			return fmt.Errorf("%s: %w", engine, err)
		}
		return nil
	}
	if !cfg.NoEmbedded {
		if err := run(EngineEmbedded, nil); err != nil {
			return err
		}
	}
	var pg *pgEnv
	switch cfg.Postgres {
	case "", PostgresOff:
		return nil
	case PostgresAuto:
		env, err := startThrowaway(false, cfg.logf)
		if err != nil {
			cfg.logf("kvd on PostgreSQL left out: %v", err)
			rep.Notes = append(rep.Notes, "kvd on PostgreSQL left out: "+firstLine(err.Error()))
			return nil
		}
		pg = env
	default:
		pg = urlEnv(cfg.Postgres, false)
	}
	defer pg.close()
	d := pg.describe()
	cfg.logf("%s", d)
	rep.Notes = append(rep.Notes, d)
	rep.Notes = append(rep.Notes, pg.notes...)
	return run(EnginePostgres, pg)
}

// watchRun is the state of the run on one engine.
type watchRun struct {
	cfg     *WatchConfig
	rep     *WatchReport
	e       *WatchEngine
	servers []*server
	// r serves the watched namespace (get-hit reads it, the writer writes
	// it); puts serves put-new's namespace, which no one watches, so
	// that put-new measures what the watchers cost a writer, not the
	// fan-out of its own writes.
	r, puts *run
}

// runWatchEngine runs the watch mode on one engine: one kvd on a new data
// directory, or, with pg, two kvd on its database.
func runWatchEngine(ctx context.Context, cfg *WatchConfig, dir, engine string, pg *pgEnv, rep *WatchReport) (WatchEngine, error) {
	e := WatchEngine{Engine: engine, KVDs: 1, Watchers: cfg.Watchers, Writes: WatchWrites{Rate: cfg.WriteRate},
		KVDPeakRSS: []int64{}, Without: []Result{}, With: []Result{}, Costs: []WatchCost{}}
	store, name := storeDir(dir, "kvd-watch"), TargetKVD
	if pg != nil {
		e.KVDs, store, name = 2, pg.kvdURL, TargetKVDPostgres
	}
	// Each kvd must take its share of the watchers beside the clients,
	// the writer and the fill; kvd's default cap is 10,000.
	conns := max((cfg.Watchers+e.KVDs-1)/e.KVDs+cfg.Clients+cfg.Writers, cfg.FillClients) + 64
	args := append([]string{"--max-connections", strconv.Itoa(conns)}, cfg.KVDArgs...)
	wr := &watchRun{cfg: cfg, rep: rep, e: &e}
	defer func() {
		for _, s := range wr.servers {
			s.close()
		}
	}()
	for i := range e.KVDs {
		sp := serverSpec{name: name, kvd: cfg.KVD, kvdArgs: args, store: store, logDir: dir,
			maxClients: max(cfg.FillClients, cfg.Clients) + cfg.Writers}
		if e.KVDs > 1 {
			sp.name = fmt.Sprintf("%s-%d", name, i+1)
		}
		cfg.logf("%s: starting (--max-connections %d)", sp.name, conns)
		s, err := sp.start(ctx)
		if err != nil {
			return e, fmt.Errorf("start %s: %w", sp.name, err)
		}
		wr.servers = append(wr.servers, s)
		if err := checkServerFDs(s.name, s.proc.pid, conns+kvdOwnFiles, watchUse, "--watchers"); err != nil {
			return e, err
		}
	}
	rc := cfg.runConfig()
	s := wr.servers[0]
	wr.r = &run{cfg: rc, s: s, pg: pg, small: newPayload(cfg.ValueSize)}
	wr.puts = &run{cfg: rc, s: s, pg: pg, small: wr.r.small}
	var err error
	if wr.r.mainNS, err = s.createNamespace(ctx, "bench-watch"); err != nil {
		return e, err
	}
	if wr.puts.mainNS, err = s.createNamespace(ctx, "bench-watch-put"); err != nil {
		return e, err
	}
	r := wr.r
	e.Fill, err = r.fill(ctx, "watched", cfg.Keys, cfg.FillClients, func(w *worker, i int) error {
		return w.put(r.keyURL(r.mainNS, mainKey(i)), r.small.value(w.rng, cfg.ValueSize), http.StatusCreated)
	})
	if err != nil {
		return e, err
	}
	r.settle(ctx, &e.Fill)

	e.Without = wr.throughput(ctx, "without watchers")
	err = wr.watch(ctx)
	for i, w := range e.Without {
		if i < len(e.With) {
			c := WatchCost{Workload: w.Workload, Clients: w.Clients, Without: w.OpsPerSec, With: e.With[i].OpsPerSec}
			if c.Without > 0 {
				c.Cost = 1 - c.With/c.Without
			}
			e.Costs = append(e.Costs, c)
		}
	}
	return e, err
}

// throughput measures get-hit of the watched namespace and put-new of the
// other.
func (wr *watchRun) throughput(ctx context.Context, when string) []Result {
	n := wr.cfg.Clients
	var out []Result
	for _, x := range []struct {
		r  *run
		wl string
	}{{wr.r, GetHit}, {wr.puts, PutNew}} {
		res := x.r.phase(ctx, x.wl, n, x.r.op(x.wl), nil)
		wr.cfg.logf("%s (%s)", res.line(), when)
		out = append(out, res)
	}
	return out
}

// watch opens the watchers, runs the writer, measures the delivery, then
// get-hit and put-new with the watchers connected, and closes them.
func (wr *watchRun) watch(ctx context.Context) error {
	cfg, e := wr.cfg, wr.e
	resettable := true
	for _, s := range wr.servers {
		resettable = resetPeakRSS(s.proc.pid) && resettable
	}
	wr.rep.PeakRSSResettable = resettable
	self := os.Getpid()
	resetPeakRSS(self)
	peaks := make([]int64, len(wr.servers))
	notePeaks := func() {
		for i, s := range wr.servers {
			if hwm, err := procStatus(s.proc.pid, "VmHWM"); err == nil {
				peaks[i] = max(peaks[i], hwm)
			}
		}
	}
	defer func() {
		e.KVDPeakRSS = peaks
		for _, p := range peaks {
			e.PeakRSS = max(e.PeakRSS, p)
		}
		e.BenchPeakRSS, _ = procStatus(self, "VmHWM")
	}()

	cfg.logf("%s: opening %d watchers over %d kvd", wr.servers[0].name, cfg.Watchers, len(wr.servers))
	start := time.Now()
	ws, err := openWatchers(ctx, wr.servers, wr.r.mainNS, cfg.Watchers, cfg.Open)
	e.Ready = ws.ready()
	if err != nil {
		ws.close()
		return err
	}
	e.OpenSeconds = time.Since(start).Seconds()
	cfg.logf("%s: %d watchers ready after %.1fs", wr.servers[0].name, e.Ready, e.OpenSeconds)
	notePeaks()

	w := startWatchWriter(wr.r, ws.base, cfg.WriteRate, cfg.Writers)
	sleepUntil(ctx, time.Now().Add(cfg.Warmup))
	cpu := func() time.Duration {
		var d time.Duration
		for _, s := range wr.servers {
			d += procCPUOrZero(s.proc.pid)
		}
		return d
	}
	t0, k0, c0, a0, n0 := ws.mark(markWindow), cpu(), selfCPU(), w.acked.Load(), ws.received()
	sleepUntil(ctx, time.Now().Add(cfg.Duration))
	t1, k1, c1, a1, n1 := ws.mark(markLoaded), cpu(), selfCPU(), w.acked.Load(), ws.received()
	el := time.Duration(t1 - t0).Seconds()
	e.Writes.WindowAcked = a1 - a0
	e.Writes.PerSec = float64(a1-a0) / el
	e.EventsPerSec = float64(n1-n0) / el
	e.KVDCPU = (k1 - k0).Seconds() / el
	e.BenchCPU = (c1 - c0).Seconds() / el
	cfg.logf("%s: writer %.0f PUT/s, watchers %.0f events/s, kvd CPU %.2f cores, kvbench CPU %.2f cores",
		wr.servers[0].name, e.Writes.PerSec, e.EventsPerSec, e.KVDCPU, e.BenchCPU)

	notePeaks() // measure resets the first kvd's peak at each phase's start
	for _, res := range wr.throughput(ctx, "with watchers") {
		e.With = append(e.With, res)
		peaks[0] = max(peaks[0], res.PeakRSS)
		notePeaks()
	}
	ws.mark(markAfter)
	w.stop()
	e.Writes.Acked, e.Writes.Errors, e.Writes.Skipped = w.acked.Load(), w.errs.Load(), w.skipped.Load()
	if v, ok := w.firstErr.Load().(string); ok {
		e.Writes.FirstError = v
	}
	cfg.logf("%s: writer stopped: %d PUTs acknowledged, %d failed, %d skipped; waiting up to %s for every watcher to have them",
		wr.servers[0].name, e.Writes.Acked, e.Writes.Errors, e.Writes.Skipped, cfg.Drain)
	d0 := time.Now()
	e.Drained = ws.waitDelivered(ctx, e.Writes.Acked, cfg.Drain)
	e.DrainSeconds = time.Since(d0).Seconds()
	notePeaks()
	ws.close()
	e.Events = ws.tally(e.Writes.Acked)
	e.Latency, e.LatencyLoaded = ws.latency(markWindow), ws.latency(markLoaded)
	cfg.logf("%s: %d events expected, %d received, %d missing, %d duplicated, %d overflows, %d ended early; delivery p50 %s p99 %s max %s",
		wr.servers[0].name, e.Events.Expected, e.Events.Received, e.Events.Missing, e.Events.Duplicated, e.Events.Overflows, e.Events.EndedEarly,
		fmtUs(e.Latency.P50us), fmtUs(e.Latency.P99us), fmtUs(e.Latency.MaxUs))
	return ctx.Err()
}

// watchWriter PUTs new keys into the watched namespace at a steady rate,
// each key naming the time it was sent (see watchKeyPrefix).
type watchWriter struct {
	acked, errs, skipped atomic.Int64
	firstErr             atomic.Value
	cancel               context.CancelFunc
	wg                   sync.WaitGroup
}

// startWatchWriter starts rate PUTs per second over conns connections of
// r's server. A tick whose PUT finds every connection busy and the queue
// (a tenth of a second of PUTs) full is skipped and counted, so that a
// slow server lowers the rate achieved instead of piling up writes.
func startWatchWriter(r *run, base time.Time, rate, conns int) *watchWriter {
	ctx, cancel := context.WithCancel(context.Background())
	w := &watchWriter{cancel: cancel}
	jobs := make(chan struct{}, max(rate/10, conns))
	w.wg.Go(func() {
		period := max(time.Second/time.Duration(rate), time.Millisecond)
		t := time.NewTicker(period)
		defer t.Stop()
		start, issued := time.Now(), int64(0)
		for {
			select {
			case <-ctx.Done():
				return
			case now := <-t.C:
				for due := int64(now.Sub(start).Seconds()*float64(rate)) - issued; due > 0; due-- {
					select {
					case jobs <- struct{}{}:
					default:
						w.skipped.Add(1)
					}
					issued++
				}
			}
		}
	})
	var seq atomic.Int64
	for c := range conns {
		wk := r.newWorker(c)
		w.wg.Go(func() {
			for {
				select {
				case <-ctx.Done():
					return
				case <-jobs:
				}
				key := watchKeyPrefix + strconv.FormatInt(int64(time.Since(base)), 10) + "-" + strconv.FormatInt(seq.Add(1), 10)
				if err := wk.put(r.keyURL(r.mainNS, key), r.small.value(wk.rng, r.cfg.ValueSize), http.StatusCreated); err != nil {
					w.errs.Add(1)
					w.firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				w.acked.Add(1)
			}
		})
	}
	return w
}

// stop stops the writer and waits for its PUTs in flight.
func (w *watchWriter) stop() {
	w.cancel()
	w.wg.Wait()
}

// The marks of a watch phase: the delivery latency of a write counts
// toward the period its PUT was sent in.
const (
	markWindow = iota // the measured window starts
	markLoaded        // it ends; get-hit and put-new run
	markAfter         // they have ended
	marks
)

// latencyShards spreads the watchers' latency histograms, so that a
// watcher recording its samples seldom waits for another.
const latencyShards = 64

// latencyBatch is the samples a watcher keeps before it records them.
const latencyBatch = 64

// watchSet is the open watchers of a run.
type watchSet struct {
	base time.Time
	// at holds the marks, in nanoseconds since base; 0 is not yet.
	at       [marks]atomic.Int64
	shards   [latencyShards]latencyShard
	ws       []*watcher
	stopping atomic.Bool
	wg       sync.WaitGroup
}

type latencyShard struct {
	mu sync.Mutex
	h  [markAfter]Histogram // per period: markWindow, markLoaded
}

// watcher is one watch stream.
type watcher struct {
	set   *watchSet
	shard *latencyShard
	conn  atomic.Pointer[net.Conn]
	ready atomic.Bool
	got   atomic.Int64 // distinct writes received
	done  atomic.Bool  // the stream has ended

	// stamp is the stream's connection, which knows when it last read.
	stamp *stampConn

	// Set by the watcher's goroutine, read once it has ended.
	dups, other int64
	last        uint64
	overflow    bool
	endErr      error
	samples     [latencyBatch]latencySample
	n           int
}

// latencySample is one write's send time and delivery latency, in
// nanoseconds.
type latencySample struct{ sent, lat int64 }

// openWatchers opens n watches of namespace ns, watcher i on server
// i % len(servers), and waits until each has received its ready event.
// It fails when a watch could not be opened, or not all were ready within
// timeout; the set returned must be closed in every case.
func openWatchers(ctx context.Context, servers []*server, ns string, n int, timeout time.Duration) (*watchSet, error) {
	set := &watchSet{base: time.Now(), ws: make([]*watcher, n)}
	var ready sync.WaitGroup
	var failed atomic.Int64
	var firstErr atomic.Value
	sem := make(chan struct{}, watchOpens)
	stopOnCancel := context.AfterFunc(ctx, set.closeConns)
	defer stopOnCancel()
	for i := range n {
		w := &watcher{set: set, shard: &set.shards[i%latencyShards]}
		set.ws[i] = w
		s := servers[i%len(servers)]
		ready.Add(1)
		set.wg.Go(func() {
			defer w.done.Store(true)
			sem <- struct{}{}
			sr, err := w.open(s, ns, timeout)
			<-sem
			if err != nil {
				if !set.stopping.Load() {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, fmt.Sprintf("%s: %v", s.name, err))
				}
				w.endErr = err
				ready.Done()
				return
			}
			w.ready.Store(true)
			ready.Done()
			w.follow(sr)
		})
	}
	allReady := make(chan struct{})
	go func() { ready.Wait(); close(allReady) }()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-allReady:
	case <-t.C:
		return set, fmt.Errorf("%d of %d watchers ready after %s", set.ready(), n, timeout)
	case <-ctx.Done():
		return set, ctx.Err()
	}
	if f := failed.Load(); f > 0 {
		return set, fmt.Errorf("%d of %d watches could not be opened; first: %s", f, n, firstErr.Load())
	}
	return set, ctx.Err()
}

// open opens w's stream on server s: a GET of the watch on a connection
// of its own, read up to its ready event.
func (w *watcher) open(s *server, ns string, timeout time.Duration) (*sseReader, error) {
	u, err := url.Parse(s.base)
	if err != nil {
		return nil, err
	}
	c, err := net.DialTimeout("tcp", u.Host, 10*time.Second)
	if err != nil {
		return nil, err
	}
	w.conn.Store(&c)
	if w.set.stopping.Load() {
		c.Close()
		return nil, net.ErrClosed
	}
	c.SetDeadline(time.Now().Add(timeout))
	req := "GET /v2/storage/kvs/" + ns + "/watch HTTP/1.1\r\nHost: " + u.Host + "\r\nAuthorization: " + s.auth + "\r\nAccept: text/event-stream\r\n\r\n"
	if _, err := io.WriteString(c, req); err != nil {
		return nil, err
	}
	sc := &stampConn{Conn: c, base: w.set.base}
	resp, err := http.ReadResponse(bufio.NewReaderSize(sc, 8<<10), nil)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return nil, fmt.Errorf("watch: %s: %s", resp.Status, strings.TrimSpace(string(b)))
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
		return nil, fmt.Errorf("watch: Content-Type %q, want text/event-stream", ct)
	}
	sr := &sseReader{br: bufio.NewReaderSize(resp.Body, 4<<10)}
	var ev sseEvent
	if err := sr.next(&ev); err != nil {
		return nil, fmt.Errorf("watch: before its ready event: %w", err)
	}
	if ev.kind != sseReady {
		return nil, fmt.Errorf("watch: the first event is not ready (kind %d)", ev.kind)
	}
	c.SetDeadline(time.Time{})
	w.stamp = sc
	return sr, nil
}

// follow reads w's stream until it ends or the set is closed.
func (w *watcher) follow(sr *sseReader) {
	defer w.flush()
	var ev sseEvent
	for {
		if err := sr.next(&ev); err != nil {
			if !w.set.stopping.Load() {
				w.endErr = err
			}
			return
		}
		switch {
		case ev.kind == sseOverflow:
			w.overflow = true
			return
		case ev.kind != ssePut || !ev.hasSent || !ev.hasRev:
			w.other++
		case ev.rev <= w.last:
			w.dups++
		default:
			w.last = ev.rev
			w.got.Add(1)
			w.samples[w.n] = latencySample{ev.sent, w.stamp.at - ev.sent}
			if w.n++; w.n == len(w.samples) {
				w.flush()
			}
		}
	}
}

// flush records w's samples in its shard's histograms.
func (w *watcher) flush() {
	if w.n == 0 {
		return
	}
	var at [marks]int64
	for i := range at {
		at[i] = w.set.at[i].Load()
	}
	w.shard.mu.Lock()
	for _, s := range w.samples[:w.n] {
		if p := periodOf(s.sent, at); p >= 0 {
			w.shard.h[p].Record(time.Duration(s.lat))
		}
	}
	w.shard.mu.Unlock()
	w.n = 0
}

// periodOf returns the period (markWindow, markLoaded) a PUT sent at sent
// counts toward, or -1 for none (the warm-up, or after). A mark not yet
// set lies after every sample being recorded.
func periodOf(sent int64, at [marks]int64) int {
	after := func(m int) bool { return at[m] != 0 && sent >= at[m] }
	switch {
	case !after(markWindow), after(markAfter):
		return -1
	case after(markLoaded):
		return markLoaded
	default:
		return markWindow
	}
}

// mark sets mark m to now and returns it, in nanoseconds since base.
func (s *watchSet) mark(m int) int64 {
	t := int64(time.Since(s.base))
	s.at[m].Store(t)
	return t
}

// ready returns the watchers that received their ready event.
func (s *watchSet) ready() int {
	n := 0
	for _, w := range s.ws {
		if w != nil && w.ready.Load() {
			n++
		}
	}
	return n
}

// received returns the writes all watchers have received so far.
func (s *watchSet) received() int64 {
	var n int64
	for _, w := range s.ws {
		n += w.got.Load()
	}
	return n
}

// waitDelivered waits until every watcher still following its stream has
// received acked writes, or timeout passes; it reports whether they all
// had.
func (s *watchSet) waitDelivered(ctx context.Context, acked int64, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for {
		all := true
		for _, w := range s.ws {
			if !w.done.Load() && w.got.Load() < acked {
				all = false
				break
			}
		}
		if all || time.Now().After(deadline) || ctx.Err() != nil {
			return all
		}
		sleepUntil(ctx, time.Now().Add(20*time.Millisecond))
	}
}

// closeConns closes every watcher's connection, ending its stream.
func (s *watchSet) closeConns() {
	s.stopping.Store(true)
	for _, w := range s.ws {
		if w == nil {
			continue
		}
		if c := w.conn.Load(); c != nil {
			(*c).Close()
		}
	}
}

// close ends every stream and waits for the watchers to finish.
func (s *watchSet) close() {
	s.closeConns()
	s.wg.Wait()
	// A watcher that stored its connection after closeConns looked at it
	// has seen stopping and closed it itself.
}

// tally counts the events of the closed set against acked writes.
func (s *watchSet) tally(acked int64) WatchEvents {
	var v WatchEvents
	for _, w := range s.ws {
		if !w.ready.Load() {
			continue
		}
		got := w.got.Load()
		v.Expected += acked
		v.Received += got
		v.Missing += max(0, acked-got)
		v.BeyondAcked += max(0, got-acked)
		v.Duplicated += w.dups
		v.Other += w.other
		switch {
		case w.overflow:
			v.Overflows++
		case w.endErr != nil:
			v.EndedEarly++
			if v.FirstEnd == "" {
				v.FirstEnd = w.endErr.Error()
			}
		}
	}
	return v
}

// latency returns the delivery latency of the writes sent in period p.
func (s *watchSet) latency(p int) WatchLatency {
	var h Histogram
	for i := range s.shards {
		h.Merge(&s.shards[i].h[p])
	}
	return WatchLatency{
		Events: int64(h.Count()),
		P50us:  us(h.Quantile(0.50)), P90us: us(h.Quantile(0.90)), P99us: us(h.Quantile(0.99)),
		MaxUs: us(h.Max()), MeanUs: us(h.Mean()),
	}
}

// finish sets the end time and the target checks.
func (r *WatchReport) finish() {
	r.Finished = time.Now().UTC()
	r.LoadEnd = hostInfo().LoadAvg
	r.Targets = r.Targets[:0]
	for _, e := range r.Engines {
		if e.Ready == 0 {
			continue
		}
		p99 := WatchP99Target
		if e.Engine == EnginePostgres {
			p99 = WatchP99TargetPostgres
		}
		v := e.Events
		r.Targets = append(r.Targets,
			ScaleTarget{
				Name: fmt.Sprintf("%s: every write reaches every watcher once", e.Engine),
				Want: "0 missing, duplicated, overflowed, ended",
				Got:  fmt.Sprintf("%d ready of %d, %d missing, %d duplicated, %d overflows, %d ended early", e.Ready, e.Watchers, v.Missing, v.Duplicated, v.Overflows, v.EndedEarly),
				Met:  e.delivered(),
			},
			ScaleTarget{
				Name: fmt.Sprintf("%s: delivery p99, %d watchers, %d writes/s", e.Engine, e.Ready, e.Writes.Rate),
				Want: "< " + fmtUs(us(p99)),
				Got:  fmtUs(e.Latency.P99us),
				Met:  e.Latency.Events > 0 && e.Latency.P99us < us(p99),
			},
			ScaleTarget{
				Name: fmt.Sprintf("%s: kvd peak RSS with the watchers", e.Engine),
				Want: fmt.Sprintf("< %d MiB", WatchRSSTarget>>20),
				Got:  fmt.Sprintf("%d MiB", e.PeakRSS>>20),
				Met:  e.PeakRSS > 0 && e.PeakRSS < WatchRSSTarget,
			})
		for _, c := range e.Costs {
			r.Targets = append(r.Targets, ScaleTarget{
				Name: fmt.Sprintf("%s: cost of the watchers to %s, %d clients", e.Engine, c.Workload, c.Clients),
				Want: fmt.Sprintf("< %.0f%%", 100*WatchCostTarget),
				Got:  fmt.Sprintf("%.1f%% (%s -> %s ops/s)", 100*c.Cost, fmtRate(c.Without), fmtRate(c.With)),
				Met:  c.Without > 0 && c.Cost < WatchCostTarget,
			})
		}
	}
}

// Print writes the report as a few small tables.
func (r *WatchReport) Print(w io.Writer) {
	s := r.Settings
	fmt.Fprintf(w, "kvbench watch: %d CPUs, %s, %s, kernel %s, load average at start %s, at end %s\n",
		r.Host.CPUs, r.Host.GoVersion, r.Host.OS, r.Host.Kernel, r.Host.LoadAvg, r.LoadEnd)
	fmt.Fprintf(w, "%d watchers of one namespace (no prefix, values=false), each on its own connection; a writer of %d PUT/s of %d B over %d connections;\n",
		s.Watchers, s.WriteRate, s.ValueSize, s.Writers)
	fmt.Fprintf(w, "%d keys in the namespace; get-hit (of them) and put-new (into an unwatched namespace) at %d clients, each %s after %s warm-up",
		s.Keys, s.Clients, s.Duration, s.Warmup)
	if len(s.KVDArgs) > 0 {
		fmt.Fprintf(w, "; kvd %s", strings.Join(s.KVDArgs, " "))
	}
	fmt.Fprintln(w)
	for _, e := range r.Engines {
		e.print(w)
	}
	printTargets(w, r.Targets)
	if !r.PeakRSSResettable {
		fmt.Fprintln(w, "\nkvd's peak RSS is its peak since it started (VmHWM could not be reset)")
	}
	for _, n := range r.Notes {
		fmt.Fprintln(w, "note:", n)
	}
}

func (e *WatchEngine) print(w io.Writer) {
	where := "one kvd"
	if e.KVDs > 1 {
		where = fmt.Sprintf("%d kvd on one database: the watchers split between them, the writer and the clients on the first", e.KVDs)
	}
	fmt.Fprintf(w, "\n%s (%s)\n", e.Engine, where)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	if e.Error != "" {
		fmt.Fprintf(tw, "  error\t%s\n", e.Error)
	}
	fmt.Fprintf(tw, "  watchers\t%d of %d ready in %.1fs\n", e.Ready, e.Watchers, e.OpenSeconds)
	x := e.Writes
	fmt.Fprintf(tw, "  writes\t%.0f PUT/s in the measured window (asked %d/s); %d acknowledged in all, %d failed, %d skipped\n",
		x.PerSec, x.Rate, x.Acked, x.Errors, x.Skipped)
	if x.FirstError != "" {
		fmt.Fprintf(tw, "  \tfirst failed PUT: %s\n", x.FirstError)
	}
	v := e.Events
	fmt.Fprintf(tw, "  events\texpected %d, received %d, missing %d, duplicated %d, overflows %d, ended early %d, beyond acknowledged %d, other %d\n",
		v.Expected, v.Received, v.Missing, v.Duplicated, v.Overflows, v.EndedEarly, v.BeyondAcked, v.Other)
	if v.FirstEnd != "" {
		fmt.Fprintf(tw, "  \tfirst stream ended early: %s\n", v.FirstEnd)
	}
	drained := "every watcher had every write"
	if !e.Drained {
		drained = "gave up waiting for every watcher to have every write"
	}
	fmt.Fprintf(tw, "  delivered\t%.0f events/s to the watchers in the measured window; %s %.2fs after the writer stopped\n", e.EventsPerSec, drained, e.DrainSeconds)
	lat := func(name string, l WatchLatency) {
		fmt.Fprintf(tw, "  %s\tp50 %s, p90 %s, p99 %s, max %s (%d events)\n", name, fmtUs(l.P50us), fmtUs(l.P90us), fmtUs(l.P99us), fmtUs(l.MaxUs), l.Events)
	}
	lat("delivery latency", e.Latency)
	lat("  with get-hit/put-new", e.LatencyLoaded)
	var rss []string
	for _, p := range e.KVDPeakRSS {
		rss = append(rss, fmt.Sprintf("%d MiB", p>>20))
	}
	fmt.Fprintf(tw, "  kvd peak RSS\t%s (watchers connected to closed)\n", strings.Join(rss, ", "))
	fmt.Fprintf(tw, "  CPU, measured window\tkvd %.2f cores, kvbench %.2f cores (kvbench peak RSS %d MiB)\n", e.KVDCPU, e.BenchCPU, e.BenchPeakRSS>>20)
	tw.Flush()
	if len(e.Without) == 0 {
		return
	}
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "  workload\tclients\twatchers\tops/s\tp50\tp99\terrors\tkvd cpu\tcost\t")
	for i, x := range e.Without {
		row := func(y Result, watchers, cost string) {
			fmt.Fprintf(tw, "  %s\t%d\t%s\t%s\t%s\t%s\t%d\t%.2f\t%s\t\n", y.Workload, y.Clients, watchers,
				fmtRate(y.OpsPerSec), fmtUs(y.P50us), fmtUs(y.P99us), y.Errors, y.ServerCPU, cost)
		}
		row(x, "0", "")
		if i < len(e.With) {
			cost := ""
			if i < len(e.Costs) {
				cost = fmt.Sprintf("%.1f%%", 100*e.Costs[i].Cost)
			}
			row(e.With[i], strconv.Itoa(e.Ready), cost)
		}
	}
	tw.Flush()
}
