package bench

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// The tables of the pg-* workloads: kvbench_kv holds Keys rows named as
// kvd's main namespace's keys with ValueSize values, kvbench_range holds
// ListKeys rows named as list-1000's keys. t is the write's time in Unix
// ns, as kvd keeps one per key.
const (
	pgKVTable    = "kvbench_kv"
	pgRangeTable = "kvbench_range"
)

// The statements of the pg-* workloads. Each runs alone, in its own
// implicit transaction, with synchronous_commit on.
const (
	sqlPGSelect = `SELECT v FROM ` + pgKVTable + ` WHERE k = $1`
	sqlPGUpsert = `INSERT INTO ` + pgKVTable + ` (k, v, t) VALUES ($1, $2, $3)
ON CONFLICT (k) DO UPDATE SET v = excluded.v, t = excluded.t`
	// The columns a kvd listing returns: the key, its size and its time.
	sqlPGRange = `SELECT k, octet_length(v), t FROM ` + pgRangeTable + ` WHERE k >= $1 ORDER BY k LIMIT 1000`
)

// pgRun is the postgres target's state during a run.
type pgRun struct {
	cfg *Config
	env *pgEnv
	rep *Report

	small      payload
	listWidth  int
	rangeReady bool
}

// openPostgresTarget prepares the measures of PostgreSQL itself, on the
// server kvd on PostgreSQL uses: it creates and fills its table and runs
// the discarded warm-up phase. Each phase (measure) runs on a pool of as
// many connections as clients.
func openPostgresTarget(ctx context.Context, cfg *Config, env *pgEnv, rep *Report) (*pgRun, error) {
	p := &pgRun{cfg: cfg, env: env, rep: rep, small: newPayload(cfg.ValueSize), listWidth: max(len(strconv.Itoa(cfg.ListKeys-1)), 4)}
	cfg.logf("%s: creating %s and %s", TargetPostgres, pgKVTable, pgRangeTable)
	err := env.withConn(env.benchURL, func(ctx context.Context, c *pgx.Conn) error {
		for _, q := range []string{
			"DROP TABLE IF EXISTS " + pgKVTable + ", " + pgRangeTable,
			"CREATE TABLE " + pgKVTable + " (k bytea PRIMARY KEY, v bytea NOT NULL, t bigint NOT NULL)",
			"CREATE TABLE " + pgRangeTable + " (k bytea PRIMARY KEY, v bytea NOT NULL, t bigint NOT NULL)",
		} {
			if _, err := c.Exec(ctx, q); err != nil {
				return fmt.Errorf("%s: %w", q, err)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if err := p.fill(ctx, "main", pgKVTable, cfg.Keys, mainKey); err != nil {
		return nil, err
	}
	p.discardedPhase(ctx)
	return p, nil
}

// measure measures workload wl (a pg-* workload) at n clients, filling
// the range table first for pg-range.
func (p *pgRun) measure(ctx context.Context, wl string, n int) (Result, error) {
	if wl == PGRange && !p.rangeReady {
		if err := p.fill(ctx, "list", pgRangeTable, p.cfg.ListKeys, p.listKey); err != nil {
			return Result{}, err
		}
		p.rangeReady = true
	}
	res, err := p.phase(ctx, wl, n, true)
	if err != nil {
		return Result{}, fmt.Errorf("%s at %d clients: %w", wl, n, err)
	}
	return res, nil
}

// pgTargetApp is the application_name of the pg-* workloads' sessions.
const pgTargetApp = "kvbench"

func (p *pgRun) listKey(i int) string {
	s := strconv.Itoa(i)
	return "l/" + strings.Repeat("0", p.listWidth-len(s)) + s
}

// fill loads n rows into table with COPY: keys key(0..n-1), values cut
// from the same random payload as kvd's, so that neither side gets
// compressible data. Then it vacuums and analyzes the table, checkpoints,
// and waits for the server to go quiet.
func (p *pgRun) fill(ctx context.Context, what, table string, n int, key func(int) string) error {
	cfg := p.cfg
	cfg.logf("%s: filling %s: %d rows (COPY)", TargetPostgres, table, n)
	start := time.Now()
	rng := rand.New(rand.NewPCG(3, 4))
	now := time.Now().UnixNano()
	err := p.env.withConn(p.env.benchURL, func(ctx context.Context, c *pgx.Conn) error {
		i := 0
		_, err := c.CopyFrom(ctx, pgx.Identifier{table}, []string{"k", "v", "t"}, pgx.CopyFromFunc(func() ([]any, error) {
			if i == n {
				return nil, nil
			}
			row := []any{[]byte(key(i)), p.small.value(rng, cfg.ValueSize), now}
			i++
			return row, nil
		}))
		return err
	})
	if err != nil {
		return fmt.Errorf("fill %s: %w", table, err)
	}
	el := time.Since(start)
	f := Fill{Target: TargetPostgres, Namespace: what, Keys: n, Clients: 1, Seconds: el.Seconds(), KeysPerSec: float64(n) / el.Seconds()}
	cfg.logf("%s: filled %s in %.1fs (%.0f rows/s)", TargetPostgres, table, f.Seconds, f.KeysPerSec)
	if err := p.env.vacuum(p.env.benchURL, table); err != nil {
		return err
	}
	if cfg.Settle > 0 && p.env.knowsCPU() {
		st := waitQuiet(ctx, cfg.Log, TargetPostgres, p.env.cpu, cfg.Settle)
		f.Settle = &st
	}
	p.rep.Fills = append(p.rep.Fills, f)
	return nil
}

// discardedPhase runs pg-select at the run's most clients and keeps its
// figures apart, as the kvd targets' discarded phase does.
func (p *pgRun) discardedPhase(ctx context.Context) {
	n := slices.Max(p.cfg.Clients)
	p.cfg.logf("%s: discarded warm-up phase: %s at %d clients", TargetPostgres, PGSelect, n)
	res, err := p.phase(ctx, PGSelect, n, false)
	if err != nil {
		p.cfg.logf("%s: discarded phase: %v", TargetPostgres, err)
		return
	}
	p.rep.Discarded = append(p.rep.Discarded, res)
	p.cfg.logf("%s (discarded)", res.line())
}

// phase drives workload wl at clients clients, each with a connection of
// a pool of its own, opened before the warm-up. With profile, the
// measured window is profiled when --profile is set.
func (p *pgRun) phase(ctx context.Context, wl string, clients int, profile bool) (Result, error) {
	pc, err := pgxpool.ParseConfig(p.env.benchURL)
	if err != nil {
		return Result{}, err
	}
	pc.MaxConns, pc.MinConns = int32(clients), 0
	if pc.ConnConfig.RuntimeParams == nil {
		pc.ConnConfig.RuntimeParams = map[string]string{}
	}
	pc.ConnConfig.RuntimeParams["synchronous_commit"] = "on"
	pc.ConnConfig.RuntimeParams["application_name"] = pgTargetApp
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return Result{}, err
	}
	defer pool.Close()
	if err := warmPool(ctx, pool, clients); err != nil {
		return Result{}, err
	}
	l := load{target: TargetPostgres, serverCPU: p.env.cpu, newOp: p.op(ctx, pool, wl)}
	var probes []probe
	if profile && p.cfg.ProfileDir != "" {
		probes = newProbes(ctx, p.cfg, p.env, nil, TargetPostgres, wl, clients)
	}
	res := measure(ctx, p.cfg, l, wl, clients, nil, probes)
	if p.env.knowsCPU() {
		res.DBCPU = res.ServerCPU
	} else {
		res.ServerCPU = 0
	}
	return res, nil
}

// warmPool opens n connections of pool, so that no phase pays for
// connecting.
func warmPool(ctx context.Context, pool *pgxpool.Pool, n int) error {
	conns := make([]*pgxpool.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			c.Release()
		}
	}()
	var mu sync.Mutex
	var wg sync.WaitGroup
	var firstErr error
	for range n {
		wg.Go(func() {
			c, err := pool.Acquire(ctx)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				firstErr = cmpErr(firstErr, err)
				return
			}
			conns = append(conns, c)
		})
	}
	wg.Wait()
	if firstErr != nil {
		return fmt.Errorf("open %d connections: %w", n, firstErr)
	}
	return nil
}

func cmpErr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

// op returns the operations of workload wl on pool.
func (p *pgRun) op(ctx context.Context, pool *pgxpool.Pool, wl string) func(c int) func(uint64) error {
	cfg := p.cfg
	size := cfg.ValueSize
	return func(c int) func(uint64) error {
		rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), uint64(c)))
		var buf []byte
		switch wl {
		case PGSelect:
			return func(uint64) error {
				k := mainKey(rng.IntN(cfg.Keys))
				if err := pool.QueryRow(ctx, sqlPGSelect, []byte(k)).Scan(&buf); err != nil {
					return fmt.Errorf("select %s: %w", k, err)
				}
				if len(buf) != size {
					return fmt.Errorf("select %s: %d bytes, want %d", k, len(buf), size)
				}
				return nil
			}
		case PGUpsert:
			return func(uint64) error {
				k := mainKey(rng.IntN(cfg.Keys))
				tag, err := pool.Exec(ctx, sqlPGUpsert, []byte(k), p.small.value(rng, size), time.Now().UnixNano())
				if err != nil {
					return fmt.Errorf("upsert %s: %w", k, err)
				}
				if tag.RowsAffected() != 1 {
					return fmt.Errorf("upsert %s: %d rows", k, tag.RowsAffected())
				}
				return nil
			}
		case PGRange:
			span := max(cfg.ListKeys-1000, 0) + 1
			return func(uint64) error {
				i := rng.IntN(span)
				want := min(1000, cfg.ListKeys-i)
				rows, err := pool.Query(ctx, sqlPGRange, []byte(p.listKey(i)))
				if err != nil {
					return fmt.Errorf("range from %d: %w", i, err)
				}
				var (
					k    []byte
					n, t int64
				)
				got := 0
				for rows.Next() {
					if err := rows.Scan(&k, &n, &t); err != nil {
						rows.Close()
						return err
					}
					got++
				}
				if err := rows.Err(); err != nil {
					return fmt.Errorf("range from %d: %w", i, err)
				}
				if got != want {
					return fmt.Errorf("range from %d: %d rows, want %d", i, got, want)
				}
				return nil
			}
		}
		panic("bench: no workload " + wl)
	}
}
