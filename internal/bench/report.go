package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
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
	Fsyncs   []Fsync   `json:"fsyncs"`
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
}

// Fill is the timing of one namespace's fill.
type Fill struct {
	Target     string  `json:"target"`
	Namespace  string  `json:"namespace"`
	Keys       int     `json:"keys"`
	Clients    int     `json:"clients"`
	Seconds    float64 `json:"seconds"`
	KeysPerSec float64 `json:"keys_per_sec"`
}

// Result is one workload at one client count against one target.
type Result struct {
	Target     string  `json:"target"`
	Workload   string  `json:"workload"`
	Clients    int     `json:"clients"`
	Seconds    float64 `json:"seconds"`
	Ops        int64   `json:"ops"`
	Errors     int64   `json:"errors"`
	FirstError string  `json:"first_error,omitempty"`
	OpsPerSec  float64 `json:"ops_per_sec"`
	P50us      float64 `json:"p50_us"`
	P99us      float64 `json:"p99_us"`
	P999us     float64 `json:"p999_us"`
	MeanUs     float64 `json:"mean_us"`
	MaxUs      float64 `json:"max_us"`
	// ClientCPU and ServerCPU are the cores used by kvbench (the load
	// generator) and by the server during the measured window.
	ClientCPU float64 `json:"client_cpu_cores"`
	ServerCPU float64 `json:"server_cpu_cores"`
	// PeakRSS is the server's VmHWM in bytes at the end of the phase.
	PeakRSS      int64 `json:"peak_rss_bytes"`
	PeakRSSPhase bool  `json:"peak_rss_is_phase_peak"`

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
	}
	return &Report{
		Version: ReportVersion,
		Started: time.Now().UTC(),
		Host:    hostInfo(),
		Settings: Settings{
			Keys: cfg.Keys, ListKeys: cfg.ListKeys, ValueSize: cfg.ValueSize, BigKeys: cfg.BigKeys,
			Duration: cfg.Duration.String(), Warmup: cfg.Warmup.String(),
			Clients: cfg.Clients, ListClients: cfg.ListClients, FillClients: cfg.FillClients,
			Workloads: wl, Postgres: cfg.Postgres != "",
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
	s := fmt.Sprintf("%s %s c=%d: %s ops/s p50 %s p99 %s p99.9 %s, cpu client %.2f server %.2f, peak RSS %d MiB",
		x.Target, x.Workload, x.Clients, fmtRate(x.OpsPerSec), fmtUs(x.P50us), fmtUs(x.P99us), fmtUs(x.P999us),
		x.ClientCPU, x.ServerCPU, x.PeakRSS>>20)
	if x.Errors > 0 {
		s += fmt.Sprintf(", %d errors (first: %s)", x.Errors, x.FirstError)
	}
	return s
}

// Print writes the report as tables.
func (r *Report) Print(w io.Writer) {
	fmt.Fprintf(w, "kvbench: %d CPUs, %s, %s, kernel %s, load average at start %s\n",
		r.Host.CPUs, r.Host.GoVersion, r.Host.OS, r.Host.Kernel, r.Host.LoadAvg)
	s := r.Settings
	fmt.Fprintf(w, "keys %d x %d B, list namespace %d keys, %s per workload after %s warm-up, clients %v\n\n",
		s.Keys, s.ValueSize, s.ListKeys, s.Duration, s.Warmup, s.Clients)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "workload\tclients\ttarget\tops/s\tp50\tp99\tp99.9\tvs baseline\terrors\tclient cpu\tserver cpu\tpeak RSS\t")
	for _, x := range r.Results {
		ratio := ""
		if q := r.ratio(x.Target, x.Workload, x.Clients); q > 0 {
			ratio = fmt.Sprintf("%.2fx", q)
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%.2f\t%.2f\t%d MiB\t\n",
			x.Workload, x.Clients, x.Target, fmtRate(x.OpsPerSec), fmtUs(x.P50us), fmtUs(x.P99us), fmtUs(x.P999us),
			ratio, x.Errors, x.ClientCPU, x.ServerCPU, x.PeakRSS>>20)
	}
	tw.Flush()
	if !r.PeakRSSResettable {
		fmt.Fprintln(w, "\npeak RSS is the server's peak since it started (VmHWM could not be reset per phase)")
	}
	if len(r.Fills) > 0 {
		fmt.Fprintln(w, "\nfills:")
		for _, f := range r.Fills {
			fmt.Fprintf(w, "  %s %s: %d keys in %.1fs (%.0f keys/s, %d clients)\n", f.Target, f.Namespace, f.Keys, f.Seconds, f.KeysPerSec, f.Clients)
		}
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
