package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"
)

// The scale mode loads one namespace with many keys and measures what
// that costs and what it does to reads: the load rate, disk bytes per key,
// kvd's memory, its stop and start-up time on the loaded store, and the
// GET latency at that size against the same GET on a small store.

// Scale targets, printed beside the figures.
const (
	// ScaleP99Target is the most the GET p99 on the large store may be,
	// as a multiple of the GET p99 on the small one.
	ScaleP99Target = 2.0
	// ScaleRSSTarget is the most resident memory kvd may use on the
	// large store, in bytes.
	ScaleRSSTarget = 1 << 30
)

// The stages the scale mode measures GET at.
const (
	StageLoaded    = "loaded"    // on the large store, after the load
	StageRestarted = "restarted" // on the large store, after a restart
	StageSmall     = "small"     // on the small store
)

// ScaleReportVersion is the version of the scale report's JSON layout.
const ScaleReportVersion = 1

// scaleMaxKeys bounds ScaleConfig.Keys: key names are mainKey's, which
// have a fixed width up to this many keys.
const scaleMaxKeys = 100_000_000

// ScaleConfig is one scale run.
type ScaleConfig struct {
	// KVD is the kvd binary; empty builds ./cmd/kvd of this module into
	// WorkDir with the go command.
	KVD string
	// KVDArgs are further flags for every kvd the run starts, e.g.
	// {"--metrics-listen", "127.0.0.1:9090"} to profile it.
	KVDArgs []string

	Keys        int // keys loaded into the large store's namespace
	SmallKeys   int // keys of the small store the GET latency is compared with
	ValueSize   int // bytes of each value
	FillClients int // concurrent clients of the loads
	Clients     int // concurrent clients of the GET measurements

	Duration time.Duration // measured time of each GET measurement
	Warmup   time.Duration // unmeasured time before it
	// Settle is the longest wait, after the load, for kvd to go quiet
	// (background compactions done) before GET is measured; 0 does not
	// wait.
	Settle time.Duration
	// Progress is the time between two progress lines of the load.
	Progress time.Duration

	// WorkDir holds the binary, the data directories and the server
	// logs; empty uses a new temporary directory removed at the end.
	WorkDir string
	// Log receives progress lines (nil: discarded).
	Log io.Writer
}

// DefaultScaleConfig returns the defaults of kvbench scale.
func DefaultScaleConfig() ScaleConfig {
	return ScaleConfig{
		Keys:        10_000_000,
		SmallKeys:   10_000,
		ValueSize:   100,
		FillClients: 64,
		Clients:     64,
		Duration:    10 * time.Second,
		Warmup:      time.Second,
		Settle:      2 * time.Minute,
		Progress:    10 * time.Second,
	}
}

// Validate checks the configuration.
func (c *ScaleConfig) Validate() error {
	if err := checkTimes(c.Duration, c.Warmup, c.Settle); err != nil {
		return err
	}
	switch {
	case c.Keys < 1 || c.Keys > scaleMaxKeys:
		return fmt.Errorf("bench: --keys must be 1 to %d", scaleMaxKeys)
	case c.SmallKeys < 1 || c.SmallKeys > scaleMaxKeys:
		return fmt.Errorf("bench: --small-keys must be 1 to %d", scaleMaxKeys)
	case c.ValueSize < 0 || c.ValueSize > maxValue:
		return errors.New("bench: --value-size must be 0 to 1 MiB")
	case c.FillClients < 1 || c.FillClients > 4096:
		return errors.New("bench: --fill-clients must be 1 to 4096")
	case c.Clients < 1 || c.Clients > 4096:
		return errors.New("bench: --clients must be 1 to 4096")
	case c.Progress <= 0:
		return errors.New("bench: the progress interval must be positive")
	}
	return nil
}

func (c *ScaleConfig) logf(format string, args ...any) { logf(c.Log, format, args...) }

// runConfig returns the Config the shared fill and phase code reads, for
// a store of keys keys.
func (c *ScaleConfig) runConfig(keys int) *Config {
	return &Config{
		KVD: c.KVD, Keys: keys, ValueSize: c.ValueSize,
		Duration: c.Duration, Warmup: c.Warmup,
		Clients: []int{c.Clients}, FillClients: c.FillClients, Log: c.Log,
	}
}

// ScaleReport is everything a scale run measured; it is what kvbench
// scale --json writes.
type ScaleReport struct {
	Version  int           `json:"version"`
	Started  time.Time     `json:"started"`
	Finished time.Time     `json:"finished"`
	Host     Host          `json:"host"`
	LoadEnd  string        `json:"load_avg_at_end,omitempty"` // 1, 5 and 15 minutes
	Settings ScaleSettings `json:"settings"`
	// KeyBytes is the length of a key name; RawBytesPerKey is KeyBytes
	// plus the value size, the data a key holds.
	KeyBytes       int `json:"key_bytes"`
	RawBytesPerKey int `json:"raw_bytes_per_key"`

	// StartEmpty is kvd's start on a new, empty store.
	StartEmpty ScaleStart `json:"start_empty"`
	Load       ScaleLoad  `json:"load"`
	// DiskLoaded is the large store's data directory right after the
	// load, DiskStopped after kvd stopped (Pebble flushes its memtable
	// on close).
	DiskLoaded  ScaleDisk   `json:"disk_after_load"`
	Settle      ScaleSettle `json:"settle"`
	DiskSettled ScaleDisk   `json:"disk_after_settle"`
	// StopSeconds is the time from SIGTERM to the exit of kvd on the
	// loaded store.
	StopSeconds float64   `json:"stop_seconds"`
	DiskStopped ScaleDisk `json:"disk_after_stop"`
	// DiskFinal is the large store's data directory once kvd, started
	// again on it and measured, stopped for good.
	DiskFinal ScaleDisk `json:"disk_final"`
	// StartLoaded is kvd's start on the loaded store.
	StartLoaded ScaleStart `json:"start_loaded"`
	// Usage is kvd's own account of the large namespace after the
	// restart.
	Usage *ScaleUsage `json:"usage,omitempty"`
	// SmallFill is the small store's load.
	SmallFill Fill       `json:"small_fill"`
	Gets      []ScaleGet `json:"gets"`

	// P99Ratio is the GET p99 on the loaded large store over the GET p99
	// on the small store; ColdP99Ratio the same after the restart.
	P99Ratio     float64 `json:"p99_ratio"`
	ColdP99Ratio float64 `json:"cold_p99_ratio"`
	// PeakRSS is the largest resident memory kvd on the large store was
	// seen to use (VmHWM), over the load, the GETs and the restart.
	PeakRSS int64         `json:"kvd_peak_rss_bytes"`
	Targets []ScaleTarget `json:"targets"`
	// PeakRSSResettable says whether VmHWM could be reset at the start of
	// each measurement, so that each peak is that measurement's own.
	PeakRSSResettable bool     `json:"peak_rss_resettable"`
	Notes             []string `json:"notes,omitempty"`
}

// ScaleSettings is the part of the ScaleConfig that shapes the figures.
type ScaleSettings struct {
	Keys            int      `json:"keys"`
	SmallKeys       int      `json:"small_keys"`
	ValueSize       int      `json:"value_size"`
	FillClients     int      `json:"fill_clients"`
	Clients         int      `json:"clients"`
	Duration        string   `json:"duration"`
	Warmup          string   `json:"warmup"`
	SettleMaxSecond float64  `json:"settle_max_seconds"`
	KVDArgs         []string `json:"kvd_args,omitempty"`
}

// ScaleStart is one start of kvd: the time from starting the process
// until /healthz answered 200, and its resident memory then.
type ScaleStart struct {
	Keys    int     `json:"keys"` // keys in the store it started on
	Seconds float64 `json:"seconds"`
	RSS     int64   `json:"rss_bytes"`
}

// ScaleLoad is the large store's load.
type ScaleLoad struct {
	Keys       int64   `json:"keys"` // keys created (PUT answered 201)
	Clients    int     `json:"clients"`
	Seconds    float64 `json:"seconds"`
	KeysPerSec float64 `json:"keys_per_sec"`
	// PeakRSS is kvd's VmHWM at the end of the load: the load's own peak
	// when PeakRSSIsLoadPeak, else the peak since kvd started.
	PeakRSS           int64 `json:"peak_rss_bytes"`
	PeakRSSIsLoadPeak bool  `json:"peak_rss_is_load_peak"`
	EndRSS            int64 `json:"end_rss_bytes"` // VmRSS at the end
	// ServerCPUSeconds is the CPU time kvd used over the load;
	// ServerCPU and ClientCPU are the cores kvd and kvbench used.
	ServerCPUSeconds float64 `json:"server_cpu_seconds"`
	ServerCPU        float64 `json:"server_cpu_cores"`
	ClientCPU        float64 `json:"client_cpu_cores"`
	// Samples are the progress lines' figures.
	Samples []ScaleSample `json:"samples"`
}

// ScaleSample is the load's progress at one moment.
type ScaleSample struct {
	Seconds    float64 `json:"seconds"` // since the load started
	Keys       int64   `json:"keys"`
	KeysPerSec float64 `json:"keys_per_sec"` // since the previous sample
	RSS        int64   `json:"rss_bytes"`
	ServerCPU  float64 `json:"server_cpu_cores"` // since the previous sample
	DiskBytes  int64   `json:"disk_bytes"`
}

// ScaleDisk is the size of a data directory.
type ScaleDisk struct {
	Files int   `json:"files"`
	Bytes int64 `json:"bytes"` // sum of the files' sizes
	// SSTBytes and WALBytes are the part of Bytes in sstables and in
	// write-ahead logs.
	SSTBytes int64 `json:"sst_bytes"`
	WALBytes int64 `json:"wal_bytes"`
	// AllocatedBytes is the disk space the files take (their blocks).
	AllocatedBytes int64   `json:"allocated_bytes"`
	BytesPerKey    float64 `json:"bytes_per_key"`
}

// ScaleSettle is the wait for kvd to go quiet after the load.
type ScaleSettle struct {
	Seconds          float64 `json:"seconds"`
	Quiet            bool    `json:"quiet"` // false: still busy when the wait ended
	ServerCPUSeconds float64 `json:"server_cpu_seconds"`
}

// ScaleUsage is kvd's usage record of the large namespace.
type ScaleUsage struct {
	Writes      int64 `json:"writes"`
	StoredBytes int64 `json:"stored_bytes"`
}

// ScaleGet is one GET measurement: random existing keys of a store.
type ScaleGet struct {
	Stage string `json:"stage"`
	Keys  int    `json:"keys"`
	// EndRSS is kvd's VmRSS right after the measurement.
	EndRSS int64 `json:"end_rss_bytes"`
	Result
}

// ScaleTarget is one target and whether the run met it.
type ScaleTarget struct {
	Name string `json:"name"`
	Want string `json:"want"`
	Got  string `json:"got"`
	Met  bool   `json:"met"`
}

// Get returns the GET measurement of stage.
func (r *ScaleReport) Get(stage string) (ScaleGet, bool) {
	for _, g := range r.Gets {
		if g.Stage == stage {
			return g, true
		}
	}
	return ScaleGet{}, false
}

// WriteJSON writes the report to path.
func (r *ScaleReport) WriteJSON(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// prepareWorkDir returns a mode's work directory: dir, created if need
// be, or a new temporary one (named from prefix) that cleanup removes. It
// builds kvd into it unless *kvd names a binary already, and sets *kvd.
func prepareWorkDir(ctx context.Context, prefix, dir string, kvd *string, log io.Writer) (string, func(), error) {
	cleanup := func() {}
	if dir == "" {
		d, err := os.MkdirTemp("", prefix)
		if err != nil {
			return "", nil, err
		}
		dir, cleanup = d, func() { os.RemoveAll(d) }
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", nil, err
	}
	if *kvd == "" {
		bin, err := buildKVD(ctx, dir, log)
		if err != nil {
			cleanup()
			return "", nil, err
		}
		*kvd = bin
	}
	return dir, cleanup, nil
}

// lockedWriter serialises the writes of several goroutines to w.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// scaleRun is a scale run's state.
type scaleRun struct {
	cfg *ScaleConfig
	dir string
	rep *ScaleReport
	// live is the kvd running now, stopped at the end if the run fails.
	live *server
}

// RunScale runs the scale mode and returns its report. On an error the
// report holds what was measured before it.
func RunScale(ctx context.Context, cfg ScaleConfig) (*ScaleReport, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Log != nil {
		// The load's progress lines come from their own goroutine.
		cfg.Log = &lockedWriter{w: cfg.Log}
	}
	dir, cleanup, err := prepareWorkDir(ctx, "kvbench-scale-", cfg.WorkDir, &cfg.KVD, cfg.Log)
	if err != nil {
		return nil, err
	}
	defer cleanup()
	keyBytes := len(mainKey(0))
	rep := &ScaleReport{
		Version: ScaleReportVersion,
		Started: time.Now().UTC(),
		Host:    hostInfo(),
		Settings: ScaleSettings{
			Keys: cfg.Keys, SmallKeys: cfg.SmallKeys, ValueSize: cfg.ValueSize,
			FillClients: cfg.FillClients, Clients: cfg.Clients,
			Duration: cfg.Duration.String(), Warmup: cfg.Warmup.String(),
			SettleMaxSecond: cfg.Settle.Seconds(), KVDArgs: cfg.KVDArgs,
		},
		KeyBytes:       keyBytes,
		RawBytesPerKey: keyBytes + cfg.ValueSize,
		Gets:           []ScaleGet{},
		Targets:        []ScaleTarget{},
	}
	sr := &scaleRun{cfg: &cfg, dir: dir, rep: rep}
	defer func() {
		if sr.live != nil {
			sr.live.close()
		}
	}()
	err = sr.run(ctx)
	rep.finish()
	if err != nil {
		return rep, fmt.Errorf("bench: scale: %w", err)
	}
	return rep, nil
}

func (sr *scaleRun) run(ctx context.Context) error {
	cfg, rep := sr.cfg, sr.rep
	large := serverSpec{
		name: TargetKVD, kvd: cfg.KVD, kvdArgs: cfg.KVDArgs,
		store: storeDir(sr.dir, "kvd-scale"), logDir: sr.dir,
		maxClients: max(cfg.FillClients, cfg.Clients),
	}

	// The large store: start on an empty store, load, measure GET.
	cfg.logf("kvd: starting on a new store %s", large.store)
	s, st, err := sr.start(ctx, large, 0)
	if err != nil {
		return fmt.Errorf("start kvd: %w", err)
	}
	rep.StartEmpty = st
	rep.PeakRSSResettable = resetPeakRSS(s.proc.pid)
	r := &run{cfg: cfg.runConfig(cfg.Keys), s: s, small: newPayload(cfg.ValueSize)}
	if r.mainNS, err = s.createNamespace(ctx, "bench-scale"); err != nil {
		return err
	}
	if rep.Load, err = sr.load(ctx, r, large.store); err != nil {
		return err
	}
	sr.notePeak(rep.Load.PeakRSS)
	if rep.DiskLoaded, err = sr.disk(large.store, "after the load"); err != nil {
		return err
	}
	if cfg.Settle > 0 {
		rep.Settle = sr.settle(ctx, s.proc.pid, cfg.Settle)
		if rep.DiskSettled, err = sr.disk(large.store, "after settling"); err != nil {
			return err
		}
	}
	rep.Gets = append(rep.Gets, sr.get(ctx, StageLoaded, r))

	// Stop, then start again on the loaded store.
	if rep.StopSeconds, err = sr.stop(s, true); err != nil {
		return err
	}
	if rep.DiskStopped, err = sr.disk(large.store, "after kvd stopped"); err != nil {
		return err
	}
	before := rep.DiskLoaded
	if rep.DiskSettled.Files > 0 {
		before = rep.DiskSettled
	}
	if rep.DiskStopped.SSTBytes <= before.SSTBytes {
		rep.Notes = append(rep.Notes, fmt.Sprintf("the stop wrote no sstable: kvd left its last writes in the WAL (%s), which the next start replays",
			fmtMiB(rep.DiskStopped.WALBytes)))
	}
	cfg.logf("kvd: starting again on the loaded store")
	if s, rep.StartLoaded, err = sr.start(ctx, large, cfg.Keys); err != nil {
		return fmt.Errorf("restart kvd: %w", err)
	}
	sr.notePeak(rep.StartLoaded.RSS)
	r.s = s
	rep.Gets = append(rep.Gets, sr.get(ctx, StageRestarted, r))
	rep.Notes = append(rep.Notes, "the restart empties kvd's caches, not the operating system's page cache: the store's files were read from memory if they fit")
	if u, err := sr.usage(ctx, s, r.mainNS); err != nil {
		rep.Notes = append(rep.Notes, fmt.Sprintf("kvd's usage record of the namespace could not be read: %v", err))
	} else {
		rep.Usage = u
		cfg.logf("kvd: usage record of the namespace: %d writes, %d stored bytes", u.Writes, u.StoredBytes)
	}
	if _, err := sr.stop(s, true); err != nil {
		return err
	}
	if rep.DiskFinal, err = sr.disk(large.store, "after the restarted kvd stopped"); err != nil {
		return err
	}

	// The small store, for the comparison.
	small := large
	small.store = storeDir(sr.dir, "kvd-scale-small")
	cfg.logf("kvd: starting on a new store %s for the %d-key comparison", small.store, cfg.SmallKeys)
	if s, _, err = sr.start(ctx, small, 0); err != nil {
		return fmt.Errorf("start kvd: %w", err)
	}
	rs := &run{cfg: cfg.runConfig(cfg.SmallKeys), s: s, small: newPayload(cfg.ValueSize)}
	if rs.mainNS, err = s.createNamespace(ctx, "bench-scale-small"); err != nil {
		return err
	}
	rep.SmallFill, err = rs.fill(ctx, "small", cfg.SmallKeys, cfg.FillClients, func(w *worker, i int) error {
		return w.put(rs.keyURL(rs.mainNS, mainKey(i)), rs.small.value(w.rng, cfg.ValueSize), http.StatusCreated)
	})
	if err != nil {
		return err
	}
	rep.Gets = append(rep.Gets, sr.get(ctx, StageSmall, rs))
	_, err = sr.stop(s, false)
	return err
}

// start starts kvd from spec, on a store of keys keys, and takes its
// start-up time and resident memory.
func (sr *scaleRun) start(ctx context.Context, spec serverSpec, keys int) (*server, ScaleStart, error) {
	s, err := spec.start(ctx)
	if err != nil {
		return nil, ScaleStart{}, err
	}
	sr.live = s
	st := ScaleStart{Keys: keys, Seconds: s.ready.Sub(s.proc.started).Seconds()}
	st.RSS, _ = procStatus(s.proc.pid, "VmRSS")
	sr.cfg.logf("kvd: serving %.3fs after it was started on a store of %d keys, RSS %d MiB", st.Seconds, keys, st.RSS>>20)
	return s, st, nil
}

// stop stops kvd with SIGTERM, as a supervisor would, and returns the
// time it took to exit; large says s serves the large store. kvd exiting
// with an error fails the run.
func (sr *scaleRun) stop(s *server, large bool) (float64, error) {
	if hwm, err := procStatus(s.proc.pid, "VmHWM"); err == nil && large {
		sr.notePeak(hwm)
	}
	s.client.CloseIdleConnections()
	t0 := time.Now()
	err := s.proc.stopWith(syscall.SIGTERM, 5*time.Minute)
	el := time.Since(t0).Seconds()
	sr.live = nil
	if err == nil && s.proc.waitErr != nil {
		err = fmt.Errorf("%v: %s", s.proc.waitErr, s.proc.logTail())
	}
	if err != nil {
		return el, fmt.Errorf("stop kvd: %w", err)
	}
	sr.cfg.logf("kvd: stopped %.3fs after SIGTERM", el)
	return el, nil
}

// notePeak raises the large store's peak RSS to rss.
func (sr *scaleRun) notePeak(rss int64) { sr.rep.PeakRSS = max(sr.rep.PeakRSS, rss) }

// load fills r's namespace with cfg.Keys keys, logging its progress.
func (sr *scaleRun) load(ctx context.Context, r *run, store string) (ScaleLoad, error) {
	cfg := sr.cfg
	pid := r.s.proc.pid
	ld := ScaleLoad{Clients: cfg.FillClients, Samples: []ScaleSample{}}
	ld.PeakRSSIsLoadPeak = resetPeakRSS(pid)
	var done atomic.Int64
	c0, s0 := selfCPU(), procCPUOrZero(pid)
	start := time.Now()

	stopProgress := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(cfg.Progress)
		defer t.Stop()
		prevT, prevN, prevCPU := start, int64(0), s0
		for {
			select {
			case <-stopProgress:
				return
			case now := <-t.C:
				n, cpu := done.Load(), procCPUOrZero(pid)
				dt := now.Sub(prevT).Seconds()
				smp := ScaleSample{Seconds: now.Sub(start).Seconds(), Keys: n, KeysPerSec: float64(n-prevN) / dt, ServerCPU: (cpu - prevCPU).Seconds() / dt}
				smp.RSS, _ = procStatus(pid, "VmRSS")
				if d, err := diskUsage(store); err == nil {
					smp.DiskBytes = d.Bytes
				}
				ld.Samples = append(ld.Samples, smp)
				cfg.logf("kvd: load %d/%d keys (%.1f%%) after %.0fs: %.0f keys/s now, %.0f keys/s overall, kvd RSS %d MiB, kvd CPU %.2f cores, store %d MiB",
					n, cfg.Keys, 100*float64(n)/float64(cfg.Keys), smp.Seconds, smp.KeysPerSec, float64(n)/smp.Seconds, smp.RSS>>20, smp.ServerCPU, smp.DiskBytes>>20)
				prevT, prevN, prevCPU = now, n, cpu
			}
		}
	})
	f, err := r.fill(ctx, "scale", cfg.Keys, cfg.FillClients, func(w *worker, i int) error {
		if err := w.put(r.keyURL(r.mainNS, mainKey(i)), r.small.value(w.rng, cfg.ValueSize), http.StatusCreated); err != nil {
			return err
		}
		done.Add(1)
		return nil
	})
	close(stopProgress)
	wg.Wait()
	c1, s1 := selfCPU(), procCPUOrZero(pid)
	el := time.Since(start).Seconds()

	ld.Keys, ld.Seconds, ld.KeysPerSec = done.Load(), f.Seconds, float64(done.Load())/f.Seconds
	ld.ServerCPUSeconds = (s1 - s0).Seconds()
	ld.ServerCPU = ld.ServerCPUSeconds / el
	ld.ClientCPU = (c1 - c0).Seconds() / el
	ld.PeakRSS, _ = procStatus(pid, "VmHWM")
	ld.EndRSS, _ = procStatus(pid, "VmRSS")
	cfg.logf("kvd: loaded %d keys in %.1fs (%.0f keys/s), kvd peak RSS %d MiB, RSS now %d MiB, kvd CPU %.0fs (%.2f cores), kvbench CPU %.2f cores",
		ld.Keys, ld.Seconds, ld.KeysPerSec, ld.PeakRSS>>20, ld.EndRSS>>20, ld.ServerCPUSeconds, ld.ServerCPU, ld.ClientCPU)
	return ld, err
}

// disk measures the large store's data directory.
func (sr *scaleRun) disk(store, when string) (ScaleDisk, error) {
	d, err := diskUsage(store)
	if err != nil {
		return d, err
	}
	d.BytesPerKey = float64(d.Bytes) / float64(sr.cfg.Keys)
	sr.cfg.logf("kvd: store %s: %d files, %d bytes (sstables %d, WAL %d; %d allocated) = %.1f bytes per key (raw %d)",
		when, d.Files, d.Bytes, d.SSTBytes, d.WALBytes, d.AllocatedBytes, d.BytesPerKey, sr.rep.RawBytesPerKey)
	return d, nil
}

// diskUsage sums the sizes of the regular files under dir.
func diskUsage(dir string) (ScaleDisk, error) {
	var d ScaleDisk
	err := filepath.WalkDir(dir, func(path string, e fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) && path != dir {
				return nil // removed while walking (a compaction's input)
			}
			return err
		}
		if !e.Type().IsRegular() {
			return nil
		}
		info, err := e.Info()
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		d.Files++
		d.Bytes += info.Size()
		switch filepath.Ext(path) {
		case ".sst":
			d.SSTBytes += info.Size()
		case ".log":
			d.WALBytes += info.Size()
		}
		if st, ok := info.Sys().(*syscall.Stat_t); ok {
			d.AllocatedBytes += st.Blocks * 512
		}
		return nil
	})
	return d, err
}

// settle waits until kvd has gone quiet (its background compactions are
// done), or until maxWait passes; see waitQuiet.
func (sr *scaleRun) settle(ctx context.Context, pid int, maxWait time.Duration) ScaleSettle {
	return waitQuiet(ctx, sr.cfg.Log, "kvd", func() time.Duration { return procCPUOrZero(pid) }, maxWait)
}

// get measures GET of random existing keys of r's namespace.
func (sr *scaleRun) get(ctx context.Context, stage string, r *run) ScaleGet {
	pid := r.s.proc.pid
	large := stage != StageSmall
	if hwm, err := procStatus(pid, "VmHWM"); err == nil && large {
		sr.notePeak(hwm) // the peak since the last measurement's start
	}
	sr.cfg.logf("kvd: GET of random existing keys of the %d-key store (%s) at %d clients", r.cfg.Keys, stage, sr.cfg.Clients)
	res := r.phase(ctx, GetHit, sr.cfg.Clients, r.op(GetHit), nil)
	g := ScaleGet{Stage: stage, Keys: r.cfg.Keys, Result: res}
	g.EndRSS, _ = procStatus(pid, "VmRSS")
	if large {
		sr.notePeak(res.PeakRSS)
	}
	sr.cfg.logf("%s (%s, %d keys)", res.line(), stage, r.cfg.Keys)
	return g
}

// usage reads kvd's usage record of namespace ns for this month.
func (sr *scaleRun) usage(ctx context.Context, s *server, ns string) (*ScaleUsage, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.base+"/v2/storage/kvs/"+ns+"/usage", nil)
	req.Header.Set("Authorization", s.auth)
	var env struct {
		Data ScaleUsage `json:"data"`
	}
	if err := s.doJSON(req, http.StatusOK, &env); err != nil {
		return nil, err
	}
	return &env.Data, nil
}

// finish computes the ratios and target checks.
func (r *ScaleReport) finish() {
	r.Finished = time.Now().UTC()
	r.LoadEnd = hostInfo().LoadAvg
	small, okS := r.Get(StageSmall)
	loaded, okL := r.Get(StageLoaded)
	cold, okC := r.Get(StageRestarted)
	if okS && small.P99us > 0 {
		if okL {
			r.P99Ratio = loaded.P99us / small.P99us
		}
		if okC {
			r.ColdP99Ratio = cold.P99us / small.P99us
		}
	}
	r.Targets = r.Targets[:0]
	if r.P99Ratio > 0 {
		r.Targets = append(r.Targets, ScaleTarget{
			Name: fmt.Sprintf("GET p99 at %d keys vs %d keys, %d clients", r.Settings.Keys, r.Settings.SmallKeys, r.Settings.Clients),
			Want: fmt.Sprintf("<= %.0fx", ScaleP99Target),
			Got:  fmt.Sprintf("%.2fx (%s vs %s)", r.P99Ratio, fmtUs(loaded.P99us), fmtUs(small.P99us)),
			Met:  r.P99Ratio <= ScaleP99Target,
		})
	}
	if r.ColdP99Ratio > 0 {
		r.Targets = append(r.Targets, ScaleTarget{
			Name: "the same after a restart (kvd's caches empty, page cache warm)",
			Want: fmt.Sprintf("<= %.0fx", ScaleP99Target),
			Got:  fmt.Sprintf("%.2fx (%s vs %s)", r.ColdP99Ratio, fmtUs(cold.P99us), fmtUs(small.P99us)),
			Met:  r.ColdP99Ratio <= ScaleP99Target,
		})
	}
	if r.PeakRSS > 0 {
		r.Targets = append(r.Targets, ScaleTarget{
			Name: fmt.Sprintf("kvd peak RSS on the %d-key store", r.Settings.Keys),
			Want: fmt.Sprintf("<= %d MiB", ScaleRSSTarget>>20),
			Got:  fmt.Sprintf("%d MiB", r.PeakRSS>>20),
			Met:  r.PeakRSS <= ScaleRSSTarget,
		})
	}
}

// Print writes the report as a few small tables.
func (r *ScaleReport) Print(w io.Writer) {
	s := r.Settings
	fmt.Fprintf(w, "kvbench scale: %d CPUs, %s, %s, kernel %s, load average at start %s, at end %s\n",
		r.Host.CPUs, r.Host.GoVersion, r.Host.OS, r.Host.Kernel, r.Host.LoadAvg, r.LoadEnd)
	fmt.Fprintf(w, "%d keys x %d B values in one namespace (keys like %q, %d B: %d B of data per key); fill %d clients; GET %d clients, %s after %s warm-up\n\n",
		s.Keys, s.ValueSize, mainKey(0), r.KeyBytes, r.RawBytesPerKey, s.FillClients, s.Clients, s.Duration, s.Warmup)

	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	l := r.Load
	if l.Seconds > 0 {
		fmt.Fprintf(tw, "load\t%d keys in %.1fs = %.0f keys/s (%d clients)\n", l.Keys, l.Seconds, l.KeysPerSec, l.Clients)
		peak := "since start"
		if l.PeakRSSIsLoadPeak {
			peak = "over the load"
		}
		fmt.Fprintf(tw, "  kvd memory\tpeak RSS %d MiB (VmHWM %s), RSS at the end %d MiB\n", l.PeakRSS>>20, peak, l.EndRSS>>20)
		fmt.Fprintf(tw, "  CPU\tkvd %.0fs = %.2f cores, kvbench %.2f cores\n", l.ServerCPUSeconds, l.ServerCPU, l.ClientCPU)
	}
	disk := func(name string, d ScaleDisk) {
		if d.Files == 0 {
			return
		}
		fmt.Fprintf(tw, "%s\t%.1f bytes/key = %.2fx the %d B of data (%s in %d files: sstables %s, WAL %s; %s allocated)\n",
			name, d.BytesPerKey, d.BytesPerKey/float64(max(r.RawBytesPerKey, 1)), r.RawBytesPerKey,
			fmtMiB(d.Bytes), d.Files, fmtMiB(d.SSTBytes), fmtMiB(d.WALBytes), fmtMiB(d.AllocatedBytes))
	}
	disk("disk after load", r.DiskLoaded)
	if r.Settle.Seconds > 0 {
		state := "quiet"
		if !r.Settle.Quiet {
			state = "still busy"
		}
		fmt.Fprintf(tw, "settle\t%s after %.1fs (kvd CPU %.1fs)\n", state, r.Settle.Seconds, r.Settle.ServerCPUSeconds)
	}
	disk("disk after settle", r.DiskSettled)
	if r.StopSeconds > 0 {
		fmt.Fprintf(tw, "stop\t%.3fs from SIGTERM to exit\n", r.StopSeconds)
	}
	disk("disk after stop", r.DiskStopped)
	disk("disk at the end", r.DiskFinal)
	if r.StartEmpty.Seconds > 0 {
		fmt.Fprintf(tw, "start-up, empty store\t%.3fs to /healthz 200, RSS %d MiB\n", r.StartEmpty.Seconds, r.StartEmpty.RSS>>20)
	}
	if r.StartLoaded.Seconds > 0 {
		fmt.Fprintf(tw, "start-up, %d keys\t%.3fs to /healthz 200, RSS %d MiB\n", r.StartLoaded.Keys, r.StartLoaded.Seconds, r.StartLoaded.RSS>>20)
	}
	if u := r.Usage; u != nil {
		fmt.Fprintf(tw, "kvd usage record\t%d writes, %d stored bytes (%.1f per key)\n", u.Writes, u.StoredBytes, float64(u.StoredBytes)/float64(max(s.Keys, 1)))
	}
	if f := r.SmallFill; f.Keys > 0 {
		fmt.Fprintf(tw, "small store load\t%d keys in %.1fs = %.0f keys/s\n", f.Keys, f.Seconds, f.KeysPerSec)
	}
	tw.Flush()

	if len(r.Gets) > 0 {
		fmt.Fprintf(w, "\nGET of random existing keys, %d clients:\n", s.Clients)
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "store\tkeys\tops/s\tp50\tp99\tp99.9\tmax\tp99 vs small\terrors\tkvd cpu\tpeak RSS\tRSS after\t")
		small, okS := r.Get(StageSmall)
		for _, g := range r.Gets {
			ratio := ""
			if okS && small.P99us > 0 && g.Stage != StageSmall {
				ratio = fmt.Sprintf("%.2fx", g.P99us/small.P99us)
			}
			fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%.2f\t%d MiB\t%d MiB\t\n",
				g.Stage, g.Keys, fmtRate(g.OpsPerSec), fmtUs(g.P50us), fmtUs(g.P99us), fmtUs(g.P999us), fmtUs(g.MaxUs),
				ratio, g.Errors, g.ServerCPU, g.PeakRSS>>20, g.EndRSS>>20)
		}
		tw.Flush()
		for _, g := range r.Gets {
			if g.Errors > 0 {
				fmt.Fprintf(w, "  %s: first error: %s\n", g.Stage, g.FirstError)
			}
		}
	}
	printTargets(w, r.Targets)
	if !r.PeakRSSResettable {
		fmt.Fprintln(w, "\npeak RSS figures are kvd's peak since it started (VmHWM could not be reset)")
	}
	for _, n := range r.Notes {
		fmt.Fprintln(w, "note:", n)
	}
}

// printTargets writes the targets and whether each was met, if there are
// any.
func printTargets(w io.Writer, targets []ScaleTarget) {
	if len(targets) == 0 {
		return
	}
	fmt.Fprintln(w, "\ntargets:")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, t := range targets {
		verdict := "met"
		if !t.Met {
			verdict = "MISSED"
		}
		fmt.Fprintf(tw, "  %s\t%s\twant %s\t%s\n", t.Name, t.Got, t.Want, verdict)
	}
	tw.Flush()
}

// fmtMiB formats a byte count in MiB, or in GiB from 1 GiB.
func fmtMiB(b int64) string {
	if b >= 1<<30 {
		return fmt.Sprintf("%.2f GiB", float64(b)/(1<<30))
	}
	return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20))
}
