package bench

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// --profile DIR writes, for every measured phase, into DIR:
//
//	TARGET.WORKLOAD.cN.cpu.pprof        CPU profile of the server (kvd, or the baseline), from its /debug/pprof/profile
//	TARGET.WORKLOAD.cN.statements.json  targets on PostgreSQL: pg_stat_statements over the window, and the server's counters
//	TARGET.WORKLOAD.cN.waits.json       targets on PostgreSQL: pg_stat_activity sampled every 10 ms, counted
//
// and the result of the phase names them, with a summary (Result.Profile).

// waitSampleEvery is the period of the pg_stat_activity samples.
const waitSampleEvery = 10 * time.Millisecond

// probeApp is the application_name of the profiler's own connections,
// which the samples leave out; probeTag marks its statements, which the
// statement figures leave out.
const (
	probeApp = "kvbench-probe"
	probeTag = "/* kvbench-probe */ "
)

// PhaseProfile is what --profile recorded of one phase: its files,
// relative to the profile directory, and a summary.
type PhaseProfile struct {
	CPU        string   `json:"cpu_profile,omitempty"`
	Statements string   `json:"statements,omitempty"`
	Waits      string   `json:"waits,omitempty"`
	Errors     []string `json:"errors,omitempty"`
	// Postgres summarizes the statements and waits, for targets on
	// PostgreSQL.
	Postgres *PGSummary `json:"postgres,omitempty"`
}

// PGSummary is a phase's PostgreSQL figures per operation of the load
// generator (a kvd request, or a pg-* statement).
type PGSummary struct {
	// StatementsPerOp is pg_stat_statements' calls over the window (the
	// profiler's own left out) per operation: statements that kvd sent,
	// BEGIN and COMMIT included, its background jobs' too.
	StatementsPerOp float64 `json:"statements_per_op"`
	// XIDsPerOp and MultiXactsPerOp are the transaction ids and multixact
	// ids the server assigned over the window, per operation.
	XIDsPerOp       float64 `json:"xids_per_op"`
	MultiXactsPerOp float64 `json:"multixacts_per_op"`
	// WALBytesPerOp and WALSyncsPerOp are pg_stat_wal's (PostgreSQL 14+;
	// -1 when unknown).
	WALBytesPerOp float64 `json:"wal_bytes_per_op"`
	WALSyncsPerOp float64 `json:"wal_syncs_per_op"`
	// Sessions is the mean number of client sessions in each state and
	// wait event over the samples, busiest first (at most 8).
	Sessions []WaitShare `json:"sessions"`
}

// WaitShare is the mean number of client sessions found in one state.
type WaitShare struct {
	What     string  `json:"what"` // "active CPU", "active Lock:transactionid", "idle Client:ClientRead", ...
	Sessions float64 `json:"sessions"`
}

// StatementsFile is the layout of a .statements.json file.
type StatementsFile struct {
	Target   string  `json:"target"`
	Workload string  `json:"workload"`
	Clients  int     `json:"clients"`
	Seconds  float64 `json:"seconds"`
	Ops      int64   `json:"ops"`
	// Calls is the statements run over the window, the profiler's own
	// left out; Statements the top ones by total execution time.
	Calls      int64       `json:"calls"`
	Statements []Statement `json:"statements"`
	// Counters are the changes over the window of the server's
	// statistics views (pg_stat_wal, pg_stat_slru by cache,
	// pg_stat_database by database, pg_stat_bgwriter), and of the
	// transaction and multixact ids assigned.
	Counters map[string]any `json:"counters"`
}

// Statement is one pg_stat_statements entry over the window.
type Statement struct {
	Database       string  `json:"database"`
	Query          string  `json:"query"`
	Calls          int64   `json:"calls"`
	CallsPerOp     float64 `json:"calls_per_op"`
	TotalMs        float64 `json:"total_exec_ms"`
	MeanMs         float64 `json:"mean_exec_ms"`
	Rows           int64   `json:"rows"`
	SharedBlksHit  int64   `json:"shared_blks_hit"`
	SharedBlksRead int64   `json:"shared_blks_read"`
	SharedDirtied  int64   `json:"shared_blks_dirtied"`
	SharedWritten  int64   `json:"shared_blks_written"`
	WALRecords     int64   `json:"wal_records"`
	WALBytes       float64 `json:"wal_bytes"`
}

// WaitsFile is the layout of a .waits.json file.
type WaitsFile struct {
	Target     string      `json:"target"`
	Workload   string      `json:"workload"`
	Clients    int         `json:"clients"`
	IntervalMs float64     `json:"interval_ms"`
	Samples    int64       `json:"samples"`
	Counts     []WaitCount `json:"counts"`
}

// WaitCount is how many times, over the samples, a session of a kind was
// found in a state: Count / Samples is the mean number of such sessions.
type WaitCount struct {
	BackendType   string  `json:"backend_type"`
	State         string  `json:"state"`
	WaitEventType string  `json:"wait_event_type"`
	WaitEvent     string  `json:"wait_event"`
	Count         int64   `json:"count"`
	Sessions      float64 `json:"sessions"`
}

// phaseFile is the name, in the profile directory, of a phase's file.
func phaseFile(target, wl string, clients int, kind string) string {
	return fmt.Sprintf("%s.%s.c%d.%s", target, wl, clients, kind)
}

// newProbes returns the profiler's probes of one phase: a CPU profile of
// s (when it serves one), and for a target on PostgreSQL (env set) its
// statements and waits.
func newProbes(ctx context.Context, cfg *Config, env *pgEnv, s *server, target, wl string, clients int) []probe {
	var ps []probe
	if s != nil && s.debug != "" {
		ps = append(ps, &cpuProbe{cfg: cfg, url: "http://" + s.debug + "/debug/pprof/profile", file: phaseFile(target, wl, clients, "cpu.pprof")})
	}
	if env != nil {
		ps = append(ps, newPGProbe(ctx, cfg, env, target, wl, clients))
	}
	return ps
}

// cpuProbe takes a CPU profile of a server over the measured window.
type cpuProbe struct {
	cfg  *Config
	url  string
	file string
	done chan error
}

func (p *cpuProbe) start(ctx context.Context, window time.Duration) {
	// The handler takes whole seconds: the profile may outlast a window
	// that is not, and finish waits for it. The window starts probeLead
	// early.
	secs := max(1, int(math.Ceil((window - probeLead).Seconds())))
	p.done = make(chan error, 1)
	go func() {
		p.done <- fetchTo(ctx, fmt.Sprintf("%s?seconds=%d", p.url, secs), filepath.Join(p.cfg.ProfileDir, p.file), time.Duration(secs)*time.Second+30*time.Second)
	}()
}

func (p *cpuProbe) finish(res *Result) {
	prof := res.profile()
	if err := <-p.done; err != nil {
		prof.Errors = append(prof.Errors, "cpu profile: "+err.Error())
		return
	}
	prof.CPU = p.file
}

// fetchTo writes the body of a GET of url to path.
func fetchTo(ctx context.Context, url, path string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("GET %s: %s: %s", url, resp.Status, strings.TrimSpace(string(b)))
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// profile returns the result's profile record, made on first use.
func (x *Result) profile() *PhaseProfile {
	if x.Profile == nil {
		x.Profile = &PhaseProfile{}
	}
	return x.Profile
}

// pgProbe resets pg_stat_statements as the window opens and reads it
// after, with the server's counters before and after; meanwhile it samples
// pg_stat_activity every waitSampleEvery.
type pgProbe struct {
	cfg      *Config
	env      *pgEnv
	target   string
	wl       string
	clients  int
	ctl      *pgx.Conn // resets and snapshots
	sampler  *pgx.Conn
	err      error
	before   map[string]any
	windowAt time.Time

	mu      sync.Mutex
	samples int64
	counts  map[[4]string]int64
	done    chan error
}

// newPGProbe opens the probe's connections now, before the phase starts.
func newPGProbe(ctx context.Context, cfg *Config, env *pgEnv, target, wl string, clients int) *pgProbe {
	p := &pgProbe{cfg: cfg, env: env, target: target, wl: wl, clients: clients, counts: map[[4]string]int64{}}
	connect := func() (*pgx.Conn, error) {
		pc, err := pgx.ParseConfig(env.benchURL)
		if err != nil {
			return nil, err
		}
		pc.RuntimeParams["application_name"] = probeApp
		return pgx.ConnectConfig(ctx, pc)
	}
	if p.ctl, p.err = connect(); p.err == nil {
		p.sampler, p.err = connect()
	}
	return p
}

func (p *pgProbe) start(ctx context.Context, window time.Duration) {
	if p.err != nil {
		return
	}
	if p.env.statements {
		if _, err := p.ctl.Exec(ctx, probeTag+"SELECT pg_stat_statements_reset()"); err != nil {
			p.err = fmt.Errorf("pg_stat_statements_reset: %w", err)
			return
		}
	}
	p.before = readCounters(ctx, p.ctl)
	p.windowAt = time.Now()
	p.done = make(chan error, 1)
	end := p.windowAt.Add(window)
	go func() { p.done <- p.sample(ctx, end) }()
}

// sampleSQL counts the sessions of the server by kind, state and wait
// event, the profiler's own left out; %s is a further condition.
const sampleSQL = probeTag + `SELECT backend_type, coalesce(state, ''), coalesce(wait_event_type, ''), coalesce(wait_event, ''), count(*)
FROM pg_stat_activity
WHERE pid <> pg_backend_pid() AND application_name <> '` + probeApp + `' AND backend_type IS NOT NULL %s
GROUP BY 1, 2, 3, 4`

// sampleQuery is sampleSQL for a phase of target on env: the client
// sessions counted are the target's own (the pg-* workloads' pool, or
// kvd's, which stays connected while PostgreSQL itself is measured); on
// a throwaway server, the launcher's own connection to the postgres
// database (no application name) is left out too.
func sampleQuery(env *pgEnv, target string) string {
	own := "application_name <> '" + pgTargetApp + "'"
	if target == TargetPostgres {
		own = "application_name = '" + pgTargetApp + "'"
	}
	cond := "AND (backend_type <> 'client backend' OR " + own + ")"
	if env.ownDB {
		cond += " AND NOT (datname = 'postgres' AND application_name = '')"
	}
	return fmt.Sprintf(sampleSQL, cond)
}

// sample samples pg_stat_activity until end.
func (p *pgProbe) sample(ctx context.Context, end time.Time) error {
	t := time.NewTicker(waitSampleEvery)
	defer t.Stop()
	q := sampleQuery(p.env, p.target)
	for {
		rows, err := p.sampler.Query(ctx, q)
		if err != nil {
			return err
		}
		got := map[[4]string]int64{}
		for rows.Next() {
			var k [4]string
			var n int64
			if err := rows.Scan(&k[0], &k[1], &k[2], &k[3], &n); err != nil {
				rows.Close()
				return err
			}
			got[k] += n
		}
		if err := rows.Err(); err != nil {
			return err
		}
		p.mu.Lock()
		p.samples++
		for k, n := range got {
			p.counts[k] += n
		}
		p.mu.Unlock()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case now := <-t.C:
			if !now.Before(end) {
				return nil
			}
		}
	}
}

func (p *pgProbe) finish(res *Result) {
	prof := res.profile()
	defer func() {
		for _, c := range []*pgx.Conn{p.ctl, p.sampler} {
			if c != nil {
				c.Close(context.Background())
			}
		}
	}()
	if p.err != nil {
		prof.Errors = append(prof.Errors, "postgres: "+p.err.Error())
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := <-p.done; err != nil {
		prof.Errors = append(prof.Errors, "pg_stat_activity samples: "+err.Error())
	}
	sum := &PGSummary{WALBytesPerOp: -1, WALSyncsPerOp: -1}
	prof.Postgres = sum
	ops := float64(max(res.Ops, 1))

	// Statements, and the counters: read after every client has stopped,
	// so that every operation that counts is in them.
	sf := StatementsFile{Target: p.target, Workload: p.wl, Clients: p.clients, Seconds: res.Seconds, Ops: res.Ops, Statements: []Statement{}}
	if p.env.statements {
		st, calls, err := readStatements(ctx, p.ctl)
		if err != nil {
			prof.Errors = append(prof.Errors, "pg_stat_statements: "+err.Error())
		}
		for i := range st {
			st[i].CallsPerOp = float64(st[i].Calls) / ops
		}
		sf.Statements, sf.Calls = st, calls
		sum.StatementsPerOp = float64(calls) / ops
	}
	sf.Counters = diffCounters(p.before, readCounters(ctx, p.ctl))
	if v, ok := sf.Counters["xids_assigned"].(float64); ok {
		sum.XIDsPerOp = v / ops
	}
	if v, ok := sf.Counters["multixacts_assigned"].(float64); ok {
		sum.MultiXactsPerOp = v / ops
	}
	if w, ok := sf.Counters["wal"].(map[string]any); ok {
		if v, ok := w["wal_bytes"].(float64); ok {
			sum.WALBytesPerOp = v / ops
		}
		if v, ok := w["wal_sync"].(float64); ok {
			sum.WALSyncsPerOp = v / ops
		}
	}
	name := phaseFile(p.target, p.wl, p.clients, "statements.json")
	if err := writeJSONFile(filepath.Join(p.cfg.ProfileDir, name), sf); err != nil {
		prof.Errors = append(prof.Errors, err.Error())
	} else {
		prof.Statements = name
	}

	p.mu.Lock()
	wf := WaitsFile{Target: p.target, Workload: p.wl, Clients: p.clients, IntervalMs: float64(waitSampleEvery) / float64(time.Millisecond), Samples: p.samples, Counts: []WaitCount{}}
	for k, n := range p.counts {
		wf.Counts = append(wf.Counts, WaitCount{BackendType: k[0], State: k[1], WaitEventType: k[2], WaitEvent: k[3], Count: n, Sessions: float64(n) / float64(max(p.samples, 1))})
	}
	p.mu.Unlock()
	slices.SortFunc(wf.Counts, func(a, b WaitCount) int {
		return cmp.Or(cmp.Compare(b.Count, a.Count), strings.Compare(a.BackendType+a.State+a.WaitEvent, b.BackendType+b.State+b.WaitEvent))
	})
	for _, c := range wf.Counts {
		if c.BackendType != "client backend" || len(sum.Sessions) == 8 {
			continue
		}
		sum.Sessions = append(sum.Sessions, WaitShare{What: c.what(), Sessions: c.Sessions})
	}
	name = phaseFile(p.target, p.wl, p.clients, "waits.json")
	if err := writeJSONFile(filepath.Join(p.cfg.ProfileDir, name), wf); err != nil {
		prof.Errors = append(prof.Errors, err.Error())
	} else {
		prof.Waits = name
	}
}

// what names a session's state: "active CPU" for a session running
// without a wait event.
func (c WaitCount) what() string {
	s := c.State
	if s == "" {
		s = "-"
	}
	if c.WaitEventType == "" {
		return s + " CPU"
	}
	return s + " " + c.WaitEventType + ":" + c.WaitEvent
}

// readStatements returns the statements pg_stat_statements holds, the
// profiler's own left out, by total execution time (at most 50), and
// the calls of all of them. Fields are read from the view's row as JSON,
// so that the names of PostgreSQL 13 and later (total_exec_time) and of
// 12 (total_time) both work.
func readStatements(ctx context.Context, c *pgx.Conn) ([]Statement, int64, error) {
	rows, err := c.Query(ctx, probeTag+`SELECT coalesce(d.datname, ''), to_jsonb(s) FROM `+extension+` s
LEFT JOIN pg_database d ON d.oid = s.dbid
WHERE s.query NOT LIKE '%kvbench-probe%'`)
	if err != nil {
		return nil, 0, err
	}
	defer rows.Close()
	var out []Statement
	var calls int64
	for rows.Next() {
		var db string
		var m map[string]any
		if err := rows.Scan(&db, &m); err != nil {
			return nil, 0, err
		}
		num := func(names ...string) float64 {
			for _, n := range names {
				if v, ok := m[n].(float64); ok {
					return v
				}
			}
			return 0
		}
		q, _ := m["query"].(string)
		st := Statement{
			Database: db, Query: q, Calls: int64(num("calls")),
			TotalMs: num("total_exec_time", "total_time"), MeanMs: num("mean_exec_time", "mean_time"),
			Rows: int64(num("rows")), SharedBlksHit: int64(num("shared_blks_hit")), SharedBlksRead: int64(num("shared_blks_read")),
			SharedDirtied: int64(num("shared_blks_dirtied")), SharedWritten: int64(num("shared_blks_written")),
			WALRecords: int64(num("wal_records")), WALBytes: num("wal_bytes"),
		}
		calls += st.Calls
		out = append(out, st)
	}
	if err := rows.Err(); err != nil {
		return nil, 0, err
	}
	slices.SortFunc(out, func(a, b Statement) int { return cmp.Compare(b.TotalMs, a.TotalMs) })
	if len(out) > 50 {
		out = out[:50]
	}
	return out, calls, nil
}

// counterSQL reads the server's counters, each as JSON; a view the server
// does not have (an older version) is left out.
var counterSQL = map[string]string{
	"wal":      `SELECT to_jsonb(w) FROM pg_stat_wal w`,
	"slru":     `SELECT jsonb_object_agg(name, to_jsonb(s)) FROM pg_stat_slru s`,
	"database": `SELECT jsonb_object_agg(datname, to_jsonb(d)) FROM pg_stat_database d WHERE datname IS NOT NULL`,
	"bgwriter": `SELECT to_jsonb(b) FROM pg_stat_bgwriter b`,
	// Ages relative to template0's frozen limits, which nothing moves: the
	// transaction ids and multixact ids assigned so far.
	"xids_assigned":       `SELECT to_jsonb(age(datfrozenxid)) FROM pg_database WHERE datname = 'template0'`,
	"multixacts_assigned": `SELECT to_jsonb(mxid_age(datminmxid)) FROM pg_database WHERE datname = 'template0'`,
}

// readCounters reads every counter it can.
func readCounters(ctx context.Context, c *pgx.Conn) map[string]any {
	out := map[string]any{}
	for name, q := range counterSQL {
		var v any
		if err := c.QueryRow(ctx, probeTag+q).Scan(&v); err == nil && v != nil {
			out[name] = v
		}
	}
	return out
}

// diffCounters returns after less before, for every number in both (maps
// recursively); other values are left out.
func diffCounters(before, after map[string]any) map[string]any {
	out := map[string]any{}
	for k, a := range after {
		switch a := a.(type) {
		case float64:
			if b, ok := before[k].(float64); ok {
				out[k] = a - b
			}
		case map[string]any:
			if b, ok := before[k].(map[string]any); ok {
				if d := diffCounters(b, a); len(d) > 0 {
					out[k] = d
				}
			}
		}
	}
	return out
}

// writeJSONFile writes v as indented JSON to path.
func writeJSONFile(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}
