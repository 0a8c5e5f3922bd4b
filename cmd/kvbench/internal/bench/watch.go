package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
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
const WatchReportVersion = 2

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
	// WatchersCmd is the command of the watchers process (see
	// watchers.go); empty runs this executable with "watchers".
	WatchersCmd []string

	Keys      int // keys filled into the watched namespace, the keys get-hit reads
	ValueSize int // bytes of each value, the fill's, put-new's and the writer's
	Watchers  int // watch streams open at once, each on its own connection
	// Prefixes is the parts of the namespace the watchers follow: with
	// 1, every watcher watches the whole namespace and every write
	// reaches every watcher; with N > 1, watcher i watches the prefix
	// w/(i mod N)/ and the writer's j-th PUT goes under w/(j mod N)/, so
	// that a write reaches Watchers/N of them. The default, 1,000, is 10,000
	// caches that each follow their own part of a namespace, each write
	// reaching ten of them: ten times the write rate in events.
	Prefixes    int
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
		Prefixes:    1000,
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
	if err := checkTimes(c.Duration, c.Warmup, c.Settle); err != nil {
		return err
	}
	switch {
	case c.Keys < 1 || c.Keys > scaleMaxKeys:
		return fmt.Errorf("bench: --keys must be 1 to %d", scaleMaxKeys)
	case c.ValueSize < 0 || c.ValueSize > maxValue:
		return errors.New("bench: --value-size must be 0 to 1 MiB")
	case c.Watchers < 1 || c.Watchers > 1_000_000:
		return errors.New("bench: --watchers must be 1 to 1000000")
	case c.Prefixes < 1 || c.Prefixes > c.Watchers:
		return errors.New("bench: --prefixes must be 1 to --watchers")
	case c.WriteRate < 1 || c.WriteRate > 1_000_000:
		return errors.New("bench: --write-rate must be 1 to 1000000")
	case c.Writers < 1 || c.Writers > 4096:
		return errors.New("bench: --writers must be 1 to 4096")
	case c.Clients < 1 || c.Clients > 4096:
		return errors.New("bench: --clients must be 1 to 4096")
	case c.FillClients < 1 || c.FillClients > 4096:
		return errors.New("bench: --fill-clients must be 1 to 4096")
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
	Prefixes    int      `json:"prefixes"`
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
	// EventsPerSec is the events of the writes sent in the measured
	// window that the watchers received, per second of the window.
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
	// window, WatchersCPU the watchers process's, BenchCPU kvbench's own
	// (the writer; the clients are idle then). WatchersPeakRSS and
	// BenchPeakRSS are their peak resident memory over the watch phase.
	KVDCPU          float64 `json:"kvd_cpu_cores"`
	WatchersCPU     float64 `json:"watchers_cpu_cores"`
	BenchCPU        float64 `json:"kvbench_cpu_cores"`
	WatchersPeakRSS int64   `json:"watchers_peak_rss_bytes"`
	BenchPeakRSS    int64   `json:"kvbench_peak_rss_bytes"`

	// Without and With are get-hit and put-new without watchers and with
	// them connected, the writer writing in both; WithoutAfter is them
	// again once the watchers have gone, so that a drift of the store
	// over the run (its compactions, its growth) is not counted as the
	// watchers' cost. Costs compares With with the mean of the two.
	Without      []Result    `json:"without_watchers"`
	WithoutAfter []Result    `json:"without_watchers_after"`
	With         []Result    `json:"with_watchers"`
	Costs        []WatchCost `json:"costs"`
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
	Without  float64 `json:"without_ops_per_sec"` // the mean of before and after
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
	if cfg.Log != nil {
		cfg.Log = &lockedWriter{w: cfg.Log}
	}
	// The watchers process, started later, inherits the raised limit.
	if err := raiseFDLimit(cfg.Watchers+cfg.Clients+cfg.Writers+fdReserve, watchUse, "--watchers"); err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	dir, cleanup, err := prepareWorkDir(ctx, "kvbench-watch-", cfg.WorkDir, &cfg.KVD, cfg.Log)
	if err != nil {
		return nil, err
	}
	defer cleanup()
	if len(cfg.WatchersCmd) == 0 {
		self, err := os.Executable()
		if err != nil {
			return nil, err
		}
		cfg.WatchersCmd = []string{self, "watchers"}
	}
	rep := &WatchReport{
		Version: WatchReportVersion,
		Started: time.Now().UTC(),
		Host:    hostInfo(),
		Settings: WatchSettings{
			Keys: cfg.Keys, ValueSize: cfg.ValueSize, Watchers: cfg.Watchers, Prefixes: cfg.Prefixes, WriteRate: cfg.WriteRate,
			Writers: cfg.Writers, Clients: cfg.Clients, FillClients: cfg.FillClients,
			Duration: cfg.Duration.String(), Warmup: cfg.Warmup.String(), KVDArgs: cfg.KVDArgs,
		},
		Engines: []WatchEngine{},
		Targets: []ScaleTarget{},
	}
	err = runWatchEngines(ctx, &cfg, dir, rep)
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
	pg, notes := openPostgres(cfg.Postgres, false, cfg.logf)
	rep.Notes = append(rep.Notes, notes...)
	if pg == nil {
		return nil
	}
	defer pg.close()
	return run(EnginePostgres, pg)
}

// watchRun is the state of the run on one engine.
type watchRun struct {
	cfg     *WatchConfig
	dir     string // where the logs go
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
		KVDPeakRSS: []int64{}, Without: []Result{}, WithoutAfter: []Result{}, With: []Result{}, Costs: []WatchCost{}}
	store, name := storeDir(dir, "kvd-watch"), TargetKVD
	if pg != nil {
		e.KVDs, store, name = 2, pg.kvdURL, TargetKVDPostgres
	}
	// Each kvd must take its share of the watchers beside the clients,
	// the writer and the fill; kvd's default cap is 10,000.
	conns := max((cfg.Watchers+e.KVDs-1)/e.KVDs+cfg.Clients+cfg.Writers, cfg.FillClients) + 64
	args := append([]string{"--max-connections", strconv.Itoa(conns)}, cfg.KVDArgs...)
	wr := &watchRun{cfg: cfg, dir: dir, rep: rep, e: &e}
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

	// The writer writes while the watchers are away too, so that the cost
	// is the watchers' own, not that of the writes they follow.
	without := func(when string) []Result {
		bg := startWatchWriter(wr.r, cfg.WriteRate, cfg.Writers, cfg.Prefixes)
		defer bg.stop()
		return wr.throughput(ctx, when)
	}
	e.Without = without("without watchers, with the writer")
	if err = wr.watch(ctx); err == nil {
		e.WithoutAfter = without("without watchers again, with the writer")
	}
	for i, w := range e.Without {
		if i < len(e.With) && i < len(e.WithoutAfter) {
			c := WatchCost{Workload: w.Workload, Clients: w.Clients, Without: (w.OpsPerSec + e.WithoutAfter[i].OpsPerSec) / 2, With: e.With[i].OpsPerSec}
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
	var wp *watchersProc
	defer func() {
		e.KVDPeakRSS = peaks
		for _, p := range peaks {
			e.PeakRSS = max(e.PeakRSS, p)
		}
		e.BenchPeakRSS, _ = procStatus(self, "VmHWM")
		if wp != nil {
			// Unless the process has exited already, after its counts.
			if hwm, err := procStatus(wp.pid(), "VmHWM"); err == nil {
				e.WatchersPeakRSS = max(e.WatchersPeakRSS, hwm)
			}
			wp.stop(time.Minute)
		}
	}()

	first := wr.servers[0].name
	spec := watchersSpec{Namespace: wr.r.mainNS, Watchers: cfg.Watchers, Prefixes: cfg.Prefixes, OpenNanos: int64(cfg.Open)}
	for _, s := range wr.servers {
		spec.Servers = append(spec.Servers, watchersServer{Name: s.name, Base: s.base, Auth: s.auth})
	}
	cfg.logf("%s: opening %d watchers over %d kvd, in a process of their own", first, cfg.Watchers, len(wr.servers))
	start := time.Now()
	wp, rep, err := startWatchers(cfg.WatchersCmd, spec, filepath.Join(wr.dir, fmt.Sprintf("watchers-%d.log", time.Now().UnixNano())))
	e.Ready = rep.Ready
	if err != nil {
		return err
	}
	e.OpenSeconds = time.Since(start).Seconds()
	cfg.logf("%s: %d watchers ready after %.1fs", first, e.Ready, e.OpenSeconds)
	notePeaks()

	// The periods are known before the first PUT, so that the watchers
	// count every write's latency toward the period it was sent in.
	t0 := monoNow() + int64(cfg.Warmup)
	t1 := t0 + int64(cfg.Duration)
	if _, err := wp.call("periods %d %d", t0, t1); err != nil {
		return err
	}
	w := startWatchWriter(wr.r, cfg.WriteRate, cfg.Writers, cfg.Prefixes)
	cpu := func() (kvd, watchers time.Duration) {
		for _, s := range wr.servers {
			kvd += procCPUOrZero(s.proc.pid)
		}
		return kvd, procCPUOrZero(wp.pid())
	}
	sleepMono(ctx, t0)
	k0, v0 := cpu()
	m0, b0, a0 := monoNow(), selfCPU(), w.acked.Load()
	sleepMono(ctx, t1)
	k1, v1 := cpu()
	m1, b1, a1 := monoNow(), selfCPU(), w.acked.Load()
	el := time.Duration(m1 - m0).Seconds()
	e.Writes.WindowAcked = a1 - a0
	e.Writes.PerSec = float64(e.Writes.WindowAcked) / el
	e.KVDCPU = (k1 - k0).Seconds() / el
	e.WatchersCPU = (v1 - v0).Seconds() / el
	e.BenchCPU = (b1 - b0).Seconds() / el
	cfg.logf("%s: writer %.0f PUT/s; CPU: kvd %.2f cores, watchers %.2f, kvbench %.2f", first, e.Writes.PerSec, e.KVDCPU, e.WatchersCPU, e.BenchCPU)

	notePeaks() // measure resets the first kvd's peak at each phase's start
	for _, res := range wr.throughput(ctx, "with watchers") {
		e.With = append(e.With, res)
		peaks[0] = max(peaks[0], res.PeakRSS)
		notePeaks()
	}
	w.stop()
	acked := w.ackedByPrefix()
	e.Writes.Acked, e.Writes.Errors, e.Writes.Skipped = w.acked.Load(), w.errs.Load(), w.skipped.Load()
	if v, ok := w.firstErr.Load().(string); ok {
		e.Writes.FirstError = v
	}
	cfg.logf("%s: writer stopped: %d PUTs acknowledged, %d failed, %d skipped; waiting up to %s for every watcher to have them",
		first, e.Writes.Acked, e.Writes.Errors, e.Writes.Skipped, cfg.Drain)
	d0 := time.Now()
	if rep, err = wp.call("drain %d %s", int64(cfg.Drain), acked); err != nil {
		return err
	}
	e.Drained, e.DrainSeconds = rep.Drained, time.Since(d0).Seconds()
	notePeaks()
	e.WatchersPeakRSS, _ = procStatus(wp.pid(), "VmHWM")
	if rep, err = wp.call("close %s", acked); err != nil {
		return err
	}
	if rep.Events == nil || rep.Latency == nil || rep.LatencyLoaded == nil {
		return errors.New("watchers process: no counts in its last reply")
	}
	e.Events, e.Latency, e.LatencyLoaded = *rep.Events, *rep.Latency, *rep.LatencyLoaded
	e.EventsPerSec = float64(e.Latency.Events) / cfg.Duration.Seconds()
	cfg.logf("%s: %d events expected, %d received, %d missing, %d duplicated, %d overflows, %d ended early; delivery p50 %s p99 %s max %s",
		first, e.Events.Expected, e.Events.Received, e.Events.Missing, e.Events.Duplicated, e.Events.Overflows, e.Events.EndedEarly,
		fmtUs(e.Latency.P50us), fmtUs(e.Latency.P99us), fmtUs(e.Latency.MaxUs))
	return ctx.Err()
}

// sleepMono sleeps until the monotonic clock reads t (see monoNow), or
// ctx ends.
func sleepMono(ctx context.Context, t int64) {
	sleepUntil(ctx, time.Now().Add(time.Duration(t-monoNow())))
}

// watchWriter PUTs new keys into the watched namespace at a steady rate,
// each key naming its prefix and the time it was sent (see
// watchKeyPrefix).
type watchWriter struct {
	acked, errs, skipped atomic.Int64
	byPrefix             []atomic.Int64 // acked, by the key's prefix
	firstErr             atomic.Value
	cancel               context.CancelFunc
	wg                   sync.WaitGroup
}

// startWatchWriter starts rate PUTs per second over conns connections of
// r's server, the j-th under prefix j mod prefixes. A tick whose PUT finds
// every connection busy and the queue (a tenth of a second of PUTs) full
// is skipped and counted, so that a slow server lowers the rate achieved
// instead of piling up writes.
func startWatchWriter(r *run, rate, conns, prefixes int) *watchWriter {
	ctx, cancel := context.WithCancel(context.Background())
	w := &watchWriter{cancel: cancel, byPrefix: make([]atomic.Int64, prefixes)}
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
				n := seq.Add(1)
				g := int(n % int64(len(w.byPrefix)))
				key := watchKey(g, monoNow(), n)
				if err := wk.put(r.keyURL(r.mainNS, key), r.small.value(wk.rng, r.cfg.ValueSize), http.StatusCreated); err != nil {
					w.errs.Add(1)
					w.firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				w.acked.Add(1)
				w.byPrefix[g].Add(1)
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

// ackedByPrefix returns the PUTs acknowledged under each prefix, as the
// watchers process's commands take them: decimals separated by commas.
func (w *watchWriter) ackedByPrefix() string {
	var b strings.Builder
	for i := range w.byPrefix {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.FormatInt(w.byPrefix[i].Load(), 10))
	}
	return b.String()
}

// shape names, in a target's name, how the watchers split the writes.
func (s WatchSettings) shape() string {
	if s.Prefixes <= 1 {
		return ", each to every watcher"
	}
	return fmt.Sprintf(", each to %d", s.Watchers/s.Prefixes)
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
				Name: fmt.Sprintf("%s: delivery p99, %d watchers, %d writes/s%s", e.Engine, e.Ready, e.Writes.Rate, r.Settings.shape()),
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
				Got:  fmt.Sprintf("%.1f%% (%s -> %s ops/s; without: the mean of before and after)", 100*c.Cost, fmtRate(c.Without), fmtRate(c.With)),
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
	if s.Prefixes <= 1 {
		fmt.Fprintf(w, "%d watchers of one namespace (no prefix: every write reaches every watcher; values=false), each on its own connection;\n", s.Watchers)
	} else {
		fmt.Fprintf(w, "%d watchers of one namespace, split over %d prefixes (a write reaches %d of them; values=false), each on its own connection;\n",
			s.Watchers, s.Prefixes, s.Watchers/s.Prefixes)
	}
	fmt.Fprintf(w, "a writer of %d PUT/s of %d B over %d connections, also while get-hit and put-new run without the watchers;\n",
		s.WriteRate, s.ValueSize, s.Writers)
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
	fmt.Fprintf(tw, "  CPU, measured window\tkvd %.2f cores, watchers process %.2f, kvbench (writer) %.2f\n", e.KVDCPU, e.WatchersCPU, e.BenchCPU)
	fmt.Fprintf(tw, "  load generator RSS\twatchers process peak %d MiB, kvbench peak %d MiB\n", e.WatchersPeakRSS>>20, e.BenchPeakRSS>>20)
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
		if i < len(e.WithoutAfter) {
			row(e.WithoutAfter[i], "0 (after)", "")
		}
	}
	tw.Flush()
}
