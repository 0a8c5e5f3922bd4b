package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// ReportVersion is the version of the JSON report's layout.
const ReportVersion = 1

// Report is everything one run measured; it is what --json writes.
type Report struct {
	Version  int       `json:"version"`
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished"`
	Host     Host      `json:"host"`
	Settings Settings  `json:"settings"`
	Fills    []Fill    `json:"fills"`
	Results  []Result  `json:"results"`
	Ratios   []Ratio   `json:"ratios"`
	// PostgresRatios compares kvd on PostgreSQL with PostgreSQL itself
	// (and its GET with the embedded engine's), see DBRatio.
	PostgresRatios []DBRatio `json:"postgres_ratios,omitempty"`
	// WorkloadRatios compares workloads of one target with others of the
	// same target: put-if-match with put-overwrite, batch-put-100's keys
	// with put-new's.
	WorkloadRatios []WorkloadRatio `json:"workload_ratios,omitempty"`
	// Discarded holds the warm-up phases each target runs after its first
	// fill, whose figures are kept out of Results: set beside the first
	// measured phase, they show whether the state the fill left had
	// settled.
	Discarded []Result `json:"discarded,omitempty"`
	Fsyncs    []Fsync  `json:"fsyncs"`
	// DiskSync is the disk's synced-write rate, when measured.
	DiskSync *DiskSync `json:"disk_sync,omitempty"`
	// SlowlorisRatios compares get-hit-slowloris with get-hit for each
	// target and client count both ran at.
	SlowlorisRatios []SlowRatio `json:"slowloris_ratios,omitempty"`
	// PeakRSSResettable says whether each result's PeakRSS is the peak of
	// its own phase (VmHWM reset through /proc/PID/clear_refs) rather than
	// of the server's life so far.
	PeakRSSResettable bool     `json:"peak_rss_resettable"`
	Notes             []string `json:"notes,omitempty"`
}

// Host describes the machine a report was measured on.
type Host struct {
	CPUs       int    `json:"cpus"`
	GOMAXPROCS int    `json:"gomaxprocs"`
	GoVersion  string `json:"go_version"`
	OS         string `json:"os"`
	Kernel     string `json:"kernel,omitempty"`
	LoadAvg    string `json:"load_avg_at_start,omitempty"` // 1, 5 and 15 minutes
}

// Settings is the part of the Config that shapes the figures.
type Settings struct {
	Keys        int      `json:"keys"`
	ListKeys    int      `json:"list_keys"`
	ValueSize   int      `json:"value_size"`
	BigKeys     int      `json:"big_keys"`
	Duration    string   `json:"duration"`
	Warmup      string   `json:"warmup"`
	Clients     []int    `json:"clients"`
	ListClients []int    `json:"list_clients"`
	FillClients int      `json:"fill_clients"`
	Workloads   []string `json:"workloads"`
	Postgres    bool     `json:"postgres"`
	// Settle is the longest wait for a server to go quiet after a fill.
	Settle string `json:"settle,omitempty"`
	// Profile is the --profile directory, when profiles were taken.
	Profile string `json:"profile_dir,omitempty"`
	// KVDArgs are the further flags every kvd ran with.
	KVDArgs []string `json:"kvd_args,omitempty"`
	// Rounds is how many times each phase ran on every target.
	Rounds int `json:"rounds,omitempty"`
	// SlowConns is get-hit-slowloris's number of attacker connections
	// (0 when it did not run).
	SlowConns int `json:"slow_conns,omitempty"`
}

// Fill is the timing of one namespace's fill.
type Fill struct {
	Target     string  `json:"target"`
	Namespace  string  `json:"namespace"`
	Keys       int     `json:"keys"`
	Clients    int     `json:"clients"`
	Seconds    float64 `json:"seconds"`
	KeysPerSec float64 `json:"keys_per_sec"`
	// Settle is the wait, after the fill, for the server to go quiet.
	Settle *ScaleSettle `json:"settle,omitempty"`
}

// Result is one workload at one client count against one target.
type Result struct {
	Target   string `json:"target"`
	Workload string `json:"workload"`
	Clients  int    `json:"clients"`
	// Started is when the phase started (its warm-up): the targets are
	// measured in turns, workload by workload.
	Started time.Time `json:"started"`
	// Rounds is the throughput of each round, with --rounds over 1: the
	// result is the round of median throughput.
	Rounds     []float64 `json:"rounds_ops_per_sec,omitempty"`
	Seconds    float64   `json:"seconds"`
	Ops        int64     `json:"ops"`
	Errors     int64     `json:"errors"`
	FirstError string    `json:"first_error,omitempty"`
	OpsPerSec  float64   `json:"ops_per_sec"`
	P50us      float64   `json:"p50_us"`
	P99us      float64   `json:"p99_us"`
	P999us     float64   `json:"p999_us"`
	MeanUs     float64   `json:"mean_us"`
	MaxUs      float64   `json:"max_us"`
	// ClientCPU and ServerCPU are the cores used by kvbench (the load
	// generator) and by the server during the measured window; the
	// postgres target's server is PostgreSQL. DBCPU is PostgreSQL's
	// processes' cores, for the targets on a PostgreSQL whose processes
	// kvbench knows (the throwaway server). OtherCPU is what the rest of
	// the machine used meanwhile: a phase that shared the cores with
	// other work shows it here.
	ClientCPU float64 `json:"client_cpu_cores"`
	ServerCPU float64 `json:"server_cpu_cores"`
	DBCPU     float64 `json:"db_cpu_cores,omitempty"`
	OtherCPU  float64 `json:"other_cpu_cores"`
	// PeakRSS is the server's VmHWM in bytes at the end of the phase.
	PeakRSS      int64 `json:"peak_rss_bytes"`
	PeakRSSPhase bool  `json:"peak_rss_is_phase_peak"`
	// Slowloris is the attacker pool's figures (get-hit-slowloris only).
	Slowloris *SlowStats `json:"slowloris,omitempty"`
	// Profile is what --profile recorded of the phase.
	Profile *PhaseProfile `json:"profile,omitempty"`
	// KeysPerOp is the keys each operation writes, when more than one
	// (batch-put-100).
	KeysPerOp int `json:"keys_per_op,omitempty"`
	// Check is the outcome of the workload's check at the end of the
	// phase (incr-hot: the counter against the incrs acknowledged);
	// CheckFailed says it failed, which counts as an error.
	Check       string `json:"check,omitempty"`
	CheckFailed bool   `json:"check_failed,omitempty"`

	from, to time.Time // the measured window
}

// Ratio compares a kvd target with the baseline at one workload and
// client count.
type Ratio struct {
	Target   string  `json:"target"`
	Workload string  `json:"workload"`
	Clients  int     `json:"clients"`
	Ratio    float64 `json:"ops_ratio"` // kvd ops/s over baseline ops/s
}

// DBRatio is a figure of kvd on PostgreSQL over the figure it is
// compared with, in the same run at the same client count: PUT over
// PostgreSQL's own upsert rate, GET over its primary-key select and over
// the embedded engine's GET, LIST over its range scan's pages/s.
type DBRatio struct {
	Target      string  `json:"target"`
	Workload    string  `json:"workload"`
	Clients     int     `json:"clients"`
	OpsPerSec   float64 `json:"ops_per_sec"`
	VsTarget    string  `json:"vs_target"`
	VsWorkload  string  `json:"vs_workload"`
	VsOpsPerSec float64 `json:"vs_ops_per_sec"`
	Ratio       float64 `json:"ops_ratio"`
}

// WorkloadRatio is a workload's rate over another's, for one target at
// one client count in the same run, with the goal set for it.
type WorkloadRatio struct {
	Target   string `json:"target"`
	Workload string `json:"workload"`
	Clients  int    `json:"clients"`
	// Started is when the phase started (its warm-up): the targets are
	// measured in turns, workload by workload.
	Started    time.Time `json:"started"`
	Unit       string    `json:"unit"` // of both rates: "ops/s" or "keys/s"
	Rate       float64   `json:"rate"`
	VsWorkload string    `json:"vs_workload"`
	VsRate     float64   `json:"vs_rate"`
	Ratio      float64   `json:"ratio"`
	Goal       float64   `json:"goal"` // the least ratio wanted
}

// workloadPairs are the comparisons of WorkloadRatio.
var workloadPairs = []struct {
	workload, vs string
	goal         float64
}{
	{PutIfMatch, PutOverwrite, 0.91}, // a conditional write costs at most 1.1x a plain one
	{BatchPut100, PutNew, 20},        // keys/s of batches of 100 against single PUTs
}

// IncrHotGoal is the incr-hot rate wanted of the embedded engine at 64
// clients.
const IncrHotGoal = 5000

// keysPerSec is the rate of x in keys written per second.
func (x Result) keysPerSec() float64 { return x.OpsPerSec * float64(max(x.KeysPerOp, 1)) }

// dbPairs are the comparisons of DBRatio: a kvd on PostgreSQL workload,
// and the target and workload it is compared with.
var dbPairs = []struct{ workload, vsTarget, vsWorkload string }{
	{GetHit, TargetPostgres, PGSelect},
	{GetHit, TargetKVD, GetHit},
	{PutOverwrite, TargetPostgres, PGUpsert},
	{PutNew, TargetPostgres, PGUpsert},
	{List1000, TargetPostgres, PGRange},
}

// SlowStats is what the attacker pool of get-hit-slowloris did.
type SlowStats struct {
	Conns           int            `json:"conns"`            // connections the pool keeps open
	Mix             map[string]int `json:"mix"`              // connections of each kind: idle, header, body
	IntervalSeconds float64        `json:"interval_seconds"` // between two trickled writes of a connection
	RampSeconds     float64        `json:"ramp_seconds"`     // until every connection had been open
	// MinOpen and AvgOpen are the smallest and mean number of connections
	// open, sampled every 10ms over the measured window; Reconnects is the
	// connections reopened within it after the server ended them.
	MinOpen    int64   `json:"min_open"`
	AvgOpen    float64 `json:"avg_open"`
	Reconnects int64   `json:"reconnects"`
	// ReconnectsTotal and ReconnectsByKind count from the pool's start to
	// its teardown (warm-up and measured window).
	ReconnectsTotal  int64            `json:"reconnects_total"`
	ReconnectsByKind map[string]int64 `json:"reconnects_by_kind"`
	// Responses counts the answers the server sent on attacker
	// connections, by status code, before the connection was replaced.
	Responses map[string]int64 `json:"responses,omitempty"`
	// DialErrors counts the connections that could not be opened (the
	// dial or the first write failed).
	DialErrors int64 `json:"dial_errors"`
}

// SlowRatio is get-hit-slowloris's throughput over get-hit's, for one
// target and client count.
type SlowRatio struct {
	Target             string  `json:"target"`
	Clients            int     `json:"clients"`
	GetHitOpsPerSec    float64 `json:"get_hit_ops_per_sec"`
	SlowlorisOpsPerSec float64 `json:"slowloris_ops_per_sec"`
	Ratio              float64 `json:"ops_ratio"` // slowloris ops/s over get-hit ops/s
}

// Fsync is one strace pass's count of kvd's syncs.
type Fsync struct {
	Target        string  `json:"target"`
	Workload      string  `json:"workload"`
	Clients       int     `json:"clients"`
	Method        string  `json:"method"`
	Seconds       float64 `json:"seconds"`
	Writes        int64   `json:"acknowledged_writes"`
	WritesPerSec  float64 `json:"writes_per_sec_under_strace"`
	Fsync         int64   `json:"fsync"`
	Fdatasync     int64   `json:"fdatasync"`
	SyncsPerWrite float64 `json:"syncs_per_write"`
	Note          string  `json:"note,omitempty"`
}

func newReport(cfg Config) *Report {
	wl := cfg.Workloads
	if len(wl) == 0 {
		wl = Workloads
		if cfg.Postgres != "" && cfg.Postgres != PostgresOff {
			wl = allWorkloads()
		}
	}
	settle := ""
	if cfg.Settle > 0 {
		settle = cfg.Settle.String()
	}
	slow := 0
	if cfg.selected(GetHitSlowloris) {
		slow = cfg.SlowConns
	}
	return &Report{
		Version: ReportVersion,
		Started: time.Now().UTC(),
		Host:    hostInfo(),
		Settings: Settings{
			Keys: cfg.Keys, ListKeys: cfg.ListKeys, ValueSize: cfg.ValueSize, BigKeys: cfg.BigKeys,
			Duration: cfg.Duration.String(), Warmup: cfg.Warmup.String(),
			Clients: cfg.Clients, ListClients: cfg.ListClients, FillClients: cfg.FillClients,
			Workloads: wl, Postgres: cfg.Postgres != "" && cfg.Postgres != PostgresOff, SlowConns: slow,
			Settle: settle, Profile: cfg.ProfileDir, KVDArgs: cfg.KVDArgs, Rounds: cfg.Rounds,
		},
		Fills: []Fill{}, Results: []Result{}, Ratios: []Ratio{}, Fsyncs: []Fsync{},
	}
}

// Find returns the result of target at workload and clients.
func (r *Report) Find(target, workload string, clients int) (Result, bool) {
	for _, x := range r.Results {
		if x.Target == target && x.Workload == workload && x.Clients == clients {
			return x, true
		}
	}
	return Result{}, false
}

func (r *Report) computeRatios() {
	r.Ratios = r.Ratios[:0]
	for _, x := range r.Results {
		if x.Target == TargetBaseline {
			continue
		}
		b, ok := r.Find(TargetBaseline, x.Workload, x.Clients)
		if !ok || b.OpsPerSec == 0 {
			continue
		}
		r.Ratios = append(r.Ratios, Ratio{Target: x.Target, Workload: x.Workload, Clients: x.Clients, Ratio: x.OpsPerSec / b.OpsPerSec})
	}
	r.PostgresRatios = r.PostgresRatios[:0]
	for _, x := range r.Results {
		if x.Target != TargetKVDPostgres {
			continue
		}
		for _, p := range dbPairs {
			if p.workload != x.Workload {
				continue
			}
			y, ok := r.Find(p.vsTarget, p.vsWorkload, x.Clients)
			if !ok || y.OpsPerSec == 0 {
				continue
			}
			r.PostgresRatios = append(r.PostgresRatios, DBRatio{Target: x.Target, Workload: x.Workload, Clients: x.Clients, OpsPerSec: x.OpsPerSec,
				VsTarget: p.vsTarget, VsWorkload: p.vsWorkload, VsOpsPerSec: y.OpsPerSec, Ratio: x.OpsPerSec / y.OpsPerSec})
		}
	}
	r.WorkloadRatios = r.WorkloadRatios[:0]
	for _, x := range r.Results {
		for _, p := range workloadPairs {
			if p.workload != x.Workload {
				continue
			}
			y, ok := r.Find(x.Target, p.vs, x.Clients)
			if !ok || y.OpsPerSec == 0 {
				continue
			}
			unit := "ops/s"
			if x.KeysPerOp > 1 {
				unit = "keys/s"
			}
			r.WorkloadRatios = append(r.WorkloadRatios, WorkloadRatio{Target: x.Target, Workload: x.Workload, Clients: x.Clients, Unit: unit,
				Rate: x.keysPerSec(), VsWorkload: p.vs, VsRate: y.keysPerSec(), Ratio: x.keysPerSec() / y.keysPerSec(), Goal: p.goal})
		}
	}
	r.SlowlorisRatios = r.SlowlorisRatios[:0]
	for _, x := range r.Results {
		if x.Workload != GetHitSlowloris {
			continue
		}
		g, ok := r.Find(x.Target, GetHit, x.Clients)
		if !ok || g.OpsPerSec == 0 {
			continue
		}
		r.SlowlorisRatios = append(r.SlowlorisRatios, SlowRatio{Target: x.Target, Clients: x.Clients,
			GetHitOpsPerSec: g.OpsPerSec, SlowlorisOpsPerSec: x.OpsPerSec, Ratio: x.OpsPerSec / g.OpsPerSec})
	}
}

// slowRatio returns get-hit-slowloris's ratio to get-hit for target at
// clients.
func (r *Report) slowRatio(target string, clients int) (SlowRatio, bool) {
	for _, x := range r.SlowlorisRatios {
		if x.Target == target && x.Clients == clients {
			return x, true
		}
	}
	return SlowRatio{}, false
}

// dbRatios returns the PostgresRatios of target at workload and clients.
func (r *Report) dbRatios(target, workload string, clients int) []DBRatio {
	var out []DBRatio
	for _, x := range r.PostgresRatios {
		if x.Target == target && x.Workload == workload && x.Clients == clients {
			out = append(out, x)
		}
	}
	return out
}

// vsName names what a DBRatio compares with, for the tables.
func (x DBRatio) vsName() string {
	if x.VsTarget == TargetPostgres {
		return x.VsWorkload
	}
	return x.VsTarget + " " + x.VsWorkload
}

// ratio returns the ratio of target at workload and clients (0 if none).
func (r *Report) ratio(target, workload string, clients int) float64 {
	for _, x := range r.Ratios {
		if x.Target == target && x.Workload == workload && x.Clients == clients {
			return x.Ratio
		}
	}
	return 0
}

// WriteJSON writes the report to path.
func (r *Report) WriteJSON(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// ReadJSON reads a report written by WriteJSON.
func ReadJSON(path string) (*Report, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var r Report
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("bench: %s: %w", path, err)
	}
	if r.Version != ReportVersion {
		return nil, fmt.Errorf("bench: %s: report version %d, want %d", path, r.Version, ReportVersion)
	}
	return &r, nil
}

// fmtUs formats microseconds compactly.
func fmtUs(v float64) string {
	switch {
	case v >= 10_000:
		return fmt.Sprintf("%.0fms", v/1000)
	case v >= 1000:
		return fmt.Sprintf("%.1fms", v/1000)
	default:
		return fmt.Sprintf("%.0fµs", v)
	}
}

func fmtRate(v float64) string {
	if v >= 100 {
		return fmt.Sprintf("%.0f", v)
	}
	return fmt.Sprintf("%.1f", v)
}

// line is a one-line summary of a result, for progress output.
func (x Result) line() string {
	s := fmt.Sprintf("%s %s c=%d: %s ops/s p50 %s p99 %s p99.9 %s, cpu client %.2f server %.2f",
		x.Target, x.Workload, x.Clients, fmtRate(x.OpsPerSec), fmtUs(x.P50us), fmtUs(x.P99us), fmtUs(x.P999us),
		x.ClientCPU, x.ServerCPU)
	if x.DBCPU > 0 && x.Target != TargetPostgres {
		s += fmt.Sprintf(" postgres %.2f", x.DBCPU)
	}
	s += fmt.Sprintf(" others %.2f", x.OtherCPU)
	if x.PeakRSS > 0 {
		s += fmt.Sprintf(", peak RSS %d MiB", x.PeakRSS>>20)
	}
	if x.Errors > 0 {
		s += fmt.Sprintf(", %d errors (first: %s)", x.Errors, x.FirstError)
	}
	if st := x.Slowloris; st != nil {
		s += fmt.Sprintf("; slowloris: %d conns, open min %d avg %.1f, %d reconnects (%d in all)", st.Conns, st.MinOpen, st.AvgOpen, st.Reconnects, st.ReconnectsTotal)
	}
	return s
}

// slowLine describes a get-hit-slowloris result: the attacker's figures
// and how much of get-hit's throughput was kept.
func (r *Report) slowLine(x Result) string {
	st := x.Slowloris
	s := fmt.Sprintf("%s c=%d: %d slow conns (%s), open min %d avg %.1f, %d reconnects in the measured window (%s in all",
		x.Target, x.Clients, st.Conns, fmtMix(st.Mix), st.MinOpen, st.AvgOpen, st.Reconnects, fmtKinds(st.ReconnectsByKind))
	if len(st.Responses) > 0 {
		s += "; answers " + fmtKinds(st.Responses)
	}
	if st.DialErrors > 0 {
		s += fmt.Sprintf("; %d dial errors", st.DialErrors)
	}
	s += ")"
	if q, ok := r.slowRatio(x.Target, x.Clients); ok {
		s += fmt.Sprintf(": slowloris keeps %.0f%% of get-hit (%s vs %s ops/s)", 100*q.Ratio, fmtRate(q.SlowlorisOpsPerSec), fmtRate(q.GetHitOpsPerSec))
	} else {
		s += ": no get-hit result to compare with (run get-hit too)"
	}
	return s
}

func fmtMix(m map[string]int) string {
	var parts []string
	for _, k := range slowKindNames {
		parts = append(parts, fmt.Sprintf("%d %s", m[k], k))
	}
	return strings.Join(parts, ", ")
}

// fmtKinds formats counts by name, names in order.
func fmtKinds(m map[string]int64) string {
	keys := slices.Sorted(maps.Keys(m))
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s %d", k, m[k])
	}
	return strings.Join(parts, ", ")
}

// Print writes the report as tables.
func (r *Report) Print(w io.Writer) {
	fmt.Fprintf(w, "kvbench: %d CPUs, %s, %s, kernel %s, load average at start %s\n",
		r.Host.CPUs, r.Host.GoVersion, r.Host.OS, r.Host.Kernel, r.Host.LoadAvg)
	s := r.Settings
	fmt.Fprintf(w, "keys %d x %d B, list namespace %d keys, %s per workload after %s warm-up, clients %v",
		s.Keys, s.ValueSize, s.ListKeys, s.Duration, s.Warmup, s.Clients)
	if len(s.KVDArgs) > 0 {
		fmt.Fprintf(w, ", kvd %s", strings.Join(s.KVDArgs, " "))
	}
	if s.Rounds > 1 {
		fmt.Fprintf(w, "; each phase %d rounds, the targets in turns, the median round shown", s.Rounds)
	}
	fmt.Fprint(w, "\n\n")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "workload\tclients\ttarget\tops/s\tp50\tp99\tp99.9\tvs baseline\tvs postgres\terrors\tclient cpu\tserver cpu\tpg cpu\tother cpu\tpeak RSS\t")
	for _, x := range r.Results {
		ratio := ""
		if q := r.ratio(x.Target, x.Workload, x.Clients); q > 0 {
			ratio = fmt.Sprintf("%.2fx", q)
		}
		var vs []string
		for _, d := range r.dbRatios(x.Target, x.Workload, x.Clients) {
			vs = append(vs, fmt.Sprintf("%.2fx %s", d.Ratio, d.vsName()))
		}
		dbCPU, rss := "", ""
		if x.DBCPU > 0 {
			dbCPU = fmt.Sprintf("%.2f", x.DBCPU)
		}
		if x.PeakRSS > 0 {
			rss = fmt.Sprintf("%d MiB", x.PeakRSS>>20)
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%.2f\t%.2f\t%s\t%.2f\t%s\t\n",
			x.Workload, x.Clients, x.Target, fmtRate(x.OpsPerSec), fmtUs(x.P50us), fmtUs(x.P99us), fmtUs(x.P999us),
			ratio, strings.Join(vs, ", "), x.Errors, x.ClientCPU, x.ServerCPU, dbCPU, x.OtherCPU, rss)
	}
	tw.Flush()
	if len(r.PostgresRatios) > 0 {
		fmt.Fprintln(w, "\nkvd on PostgreSQL against PostgreSQL itself (same server, same clients; pg-upsert/pg-select: one statement per operation through pgx, synchronous commit; pg-range: 1,000 rows per page):")
		for _, d := range r.PostgresRatios {
			fmt.Fprintf(w, "  %s c=%d: %s/s = %.2fx %s (%s/s)\n", d.Workload, d.Clients, fmtRate(d.OpsPerSec), d.Ratio, d.vsName(), fmtRate(d.VsOpsPerSec))
		}
	}
	var own []string
	for _, q := range r.WorkloadRatios {
		own = append(own, fmt.Sprintf("  %s %s c=%d: %s %s = %.2fx %s (%s %s; goal >= %gx)", q.Target, q.Workload, q.Clients,
			fmtRate(q.Rate), q.Unit, q.Ratio, q.VsWorkload, fmtRate(q.VsRate), q.Unit, q.Goal))
	}
	for _, x := range r.Results {
		if x.Workload == IncrHot {
			line := fmt.Sprintf("  %s %s c=%d: %s ops/s", x.Target, x.Workload, x.Clients, fmtRate(x.OpsPerSec))
			if x.Target == TargetKVD && x.Clients == 64 {
				line += fmt.Sprintf(" (goal >= %d/s)", IncrHotGoal)
			}
			own = append(own, line+"; "+x.Check)
		}
	}
	if len(own) > 0 {
		fmt.Fprintln(w, "\nconditional writes, batches and counters against kvd's own figures (same target, same run):")
		for _, l := range own {
			fmt.Fprintln(w, l)
		}
	}
	if len(r.Discarded) > 0 {
		fmt.Fprintln(w, "\ndiscarded warm-up phases (run after the first fill, figures kept out of the results):")
		for _, x := range r.Discarded {
			line := "  " + x.line()
			if y, ok := r.Find(x.Target, x.Workload, x.Clients); ok && x.OpsPerSec > 0 {
				line += fmt.Sprintf("; the measured phase did %.2fx of it", y.OpsPerSec/x.OpsPerSec)
			}
			fmt.Fprintln(w, line)
		}
	}
	r.printProfiles(w)
	if !r.PeakRSSResettable {
		fmt.Fprintln(w, "\npeak RSS is the server's peak since it started (VmHWM could not be reset per phase)")
	}
	var slow []string
	for _, x := range r.Results {
		if x.Workload == GetHitSlowloris && x.Slowloris != nil {
			slow = append(slow, r.slowLine(x))
		}
	}
	if len(slow) > 0 {
		fmt.Fprintln(w, "\nslowloris (get-hit while slow connections are held open; the attacker runs in kvbench and shares its CPU):")
		for _, l := range slow {
			fmt.Fprintln(w, " ", l)
		}
	}
	if len(r.Fills) > 0 {
		fmt.Fprintln(w, "\nfills:")
		for _, f := range r.Fills {
			line := fmt.Sprintf("  %s %s: %d keys in %.1fs (%.0f keys/s, %d clients)", f.Target, f.Namespace, f.Keys, f.Seconds, f.KeysPerSec, f.Clients)
			if st := f.Settle; st != nil {
				state := "quiet"
				if !st.Quiet {
					state = "still busy"
				}
				line += fmt.Sprintf("; %s %.1fs later (%.1fs of CPU meanwhile)", state, st.Seconds, st.ServerCPUSeconds)
			}
			fmt.Fprintln(w, line)
		}
	}
	if r.DiskSync != nil {
		fmt.Fprintln(w, "\n"+r.DiskSync.line())
	}
	if len(r.Fsyncs) > 0 {
		fmt.Fprintln(w, "\nfsyncs per acknowledged write (kvd under strace, a separate pass; its throughput is not comparable):")
		for _, f := range r.Fsyncs {
			if f.Note != "" {
				fmt.Fprintf(w, "  %s\n", f.Note)
				if f.Writes == 0 {
					continue
				}
			}
			fmt.Fprintf(w, "  %s %d clients, %.1fs: %d writes, %d fsync + %d fdatasync = %.3f syncs per write\n",
				f.Workload, f.Clients, f.Seconds, f.Writes, f.Fsync, f.Fdatasync, f.SyncsPerWrite)
		}
	}
	for _, n := range r.Notes {
		fmt.Fprintln(w, "note:", n)
	}
}

// Compare prints, for every result the two reports share, B's ops/s over
// A's and both p99s.
func Compare(w io.Writer, a, b *Report, nameA, nameB string) {
	fmt.Fprintf(w, "A = %s (%s)\nB = %s (%s)\n\n", nameA, a.Started.Format(time.RFC3339), nameB, b.Started.Format(time.RFC3339))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "workload\tclients\ttarget\tA ops/s\tB ops/s\tB/A\tA p99\tB p99\tA vs baseline\tB vs baseline\t")
	shared := 0
	for _, x := range a.Results {
		y, ok := b.Find(x.Target, x.Workload, x.Clients)
		if !ok {
			continue
		}
		shared++
		q := "-"
		if x.OpsPerSec > 0 {
			q = fmt.Sprintf("%.2f", y.OpsPerSec/x.OpsPerSec)
		}
		ra, rb := "", ""
		if v := a.ratio(x.Target, x.Workload, x.Clients); v > 0 {
			ra = fmt.Sprintf("%.2fx", v)
		}
		if v := b.ratio(x.Target, x.Workload, x.Clients); v > 0 {
			rb = fmt.Sprintf("%.2fx", v)
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n",
			x.Workload, x.Clients, x.Target, fmtRate(x.OpsPerSec), fmtRate(y.OpsPerSec), q, fmtUs(x.P99us), fmtUs(y.P99us), ra, rb)
	}
	tw.Flush()
	if shared == 0 {
		fmt.Fprintln(w, "the reports share no workload, client count and target")
	}
	var notes []string
	if a.Settings.Keys != b.Settings.Keys || a.Settings.ListKeys != b.Settings.ListKeys || a.Settings.Duration != b.Settings.Duration {
		notes = append(notes, "the runs used different --keys, --list-keys or --duration")
	}
	if a.Host.CPUs != b.Host.CPUs {
		notes = append(notes, fmt.Sprintf("the runs had %d and %d CPUs", a.Host.CPUs, b.Host.CPUs))
	}
	if len(notes) > 0 {
		fmt.Fprintln(w, "\nnote:", strings.Join(notes, "; "))
	}
}

// printProfiles lists what --profile recorded of each phase.
func (r *Report) printProfiles(w io.Writer) {
	var lines []string
	for _, x := range r.Results {
		p := x.Profile
		if p == nil {
			continue
		}
		var parts []string
		if pg := p.Postgres; pg != nil {
			s := fmt.Sprintf("%.2f statements, %.2f xids, %.3f multixacts", pg.StatementsPerOp, pg.XIDsPerOp, pg.MultiXactsPerOp)
			if pg.WALBytesPerOp >= 0 {
				s += fmt.Sprintf(", %.0f WAL bytes, %.3f WAL syncs", pg.WALBytesPerOp, pg.WALSyncsPerOp)
			}
			parts = append(parts, s+" per op")
			if len(pg.Sessions) > 0 {
				var ss []string
				for _, s := range pg.Sessions[:min(len(pg.Sessions), 4)] {
					ss = append(ss, fmt.Sprintf("%s %.1f", s.What, s.Sessions))
				}
				parts = append(parts, "sessions: "+strings.Join(ss, ", "))
			}
		}
		var files []string
		for _, f := range []string{p.CPU, p.Statements, p.Waits} {
			if f != "" {
				files = append(files, f)
			}
		}
		if len(files) > 0 {
			parts = append(parts, strings.Join(files, " "))
		}
		parts = append(parts, p.Errors...)
		lines = append(lines, fmt.Sprintf("  %s %s c=%d: %s", x.Target, x.Workload, x.Clients, strings.Join(parts, "; ")))
	}
	if len(lines) == 0 {
		return
	}
	fmt.Fprintf(w, "\nprofiles in %s (go tool pprof -top FILE.cpu.pprof; PostgreSQL: per operation of the load generator, mean client sessions by state):\n", r.Settings.Profile)
	for _, l := range lines {
		fmt.Fprintln(w, l)
	}
}
