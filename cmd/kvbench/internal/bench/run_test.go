package bench

import (
	"context"
	"encoding/json"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/edgekv/kv/internal/pgtest"
)

func TestHistogramQuantiles(t *testing.T) {
	var h Histogram
	r := rand.New(rand.NewPCG(1, 2))
	vals := make([]time.Duration, 100_000)
	for i := range vals {
		vals[i] = time.Duration(r.ExpFloat64() * float64(time.Millisecond))
		h.Record(vals[i])
	}
	slices.Sort(vals)
	for _, q := range []float64{0.5, 0.9, 0.99, 0.999} {
		want := vals[int(q*float64(len(vals)))-1]
		got := h.Quantile(q)
		if d := float64(got-want) / float64(want); d < -0.02 || d > 0.02 {
			t.Errorf("quantile %v = %v, want %v within 2%%", q, got, want)
		}
	}
	if h.Count() != uint64(len(vals)) || h.Max() < vals[len(vals)-1] {
		t.Fatalf("count %d max %v", h.Count(), h.Max())
	}
	var a, b Histogram
	for i, v := range vals {
		if i%2 == 0 {
			a.Record(v)
		} else {
			b.Record(v)
		}
	}
	a.Merge(&b)
	if a.Quantile(0.99) != h.Quantile(0.99) || a.Count() != h.Count() {
		t.Fatal("merged histogram differs from the whole")
	}
}

// TestRunSmall runs the whole benchmark briefly against the real kvd and
// the baseline, and checks that the report is complete and consistent.
func TestRunSmall(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs kvd and kvbench")
	}
	dir := t.TempDir()
	kvd := goBuild(t, dir, "kvd")
	kvbench := goBuild(t, dir, "kvbench")
	cfg := DefaultConfig()
	cfg.KVD, cfg.Baseline = kvd, []string{kvbench, "baseline", "--listen"}
	cfg.Keys, cfg.ListKeys, cfg.BigKeys = 200, 2500, 4
	cfg.Duration, cfg.Warmup = 300*time.Millisecond, 50*time.Millisecond
	cfg.Clients, cfg.ListClients, cfg.FillClients = []int{1, 4}, []int{2}, 8
	cfg.FsyncDuration = 0
	cfg.Postgres = PostgresOff // TestRunPostgresAuto has it
	cfg.DiskSyncDuration = 100 * time.Millisecond
	cfg.SlowConns = 30
	cfg.WorkDir = dir
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	rep, err := Run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, target := range []string{TargetKVD, TargetBaseline} {
		for _, w := range Workloads {
			for _, n := range cfg.clientsFor(w) {
				r, ok := rep.Find(target, w, n)
				if !ok {
					t.Fatalf("no result for %s %s at %d clients", target, w, n)
				}
				if r.Ops <= 0 || r.Errors != 0 || r.OpsPerSec <= 0 {
					t.Errorf("%s %s %d: %d ops, %d errors (%s)", target, w, n, r.Ops, r.Errors, r.FirstError)
				}
				if !(r.P50us <= r.P99us && r.P99us <= r.P999us && r.P999us <= r.MaxUs*1.02) {
					t.Errorf("%s %s %d: percentiles out of order: %v %v %v max %v", target, w, n, r.P50us, r.P99us, r.P999us, r.MaxUs)
				}
				if r.PeakRSS <= 0 {
					t.Errorf("%s %s %d: no peak RSS", target, w, n)
				}
				if target == TargetKVD {
					if rt := rep.ratio(TargetKVD, w, n); rt <= 0 {
						t.Errorf("%s %d: no ratio", w, n)
					}
				}
				if st := r.Slowloris; (st != nil) != (w == GetHitSlowloris) {
					t.Errorf("%s %s %d: slowloris figures %v", target, w, n, st)
				} else if st != nil {
					if st.Conns != cfg.SlowConns || st.MinOpen <= 0 || st.MinOpen > int64(cfg.SlowConns) || st.AvgOpen < float64(st.MinOpen) {
						t.Errorf("%s %s %d: slowloris figures %+v", target, w, n, *st)
					}
					if q, ok := rep.slowRatio(target, n); !ok || q.Ratio <= 0 {
						t.Errorf("%s %d: no slowloris ratio", target, n)
					}
				}
			}
		}
	}
	if ds := rep.DiskSync; ds == nil || ds.AppendsPerSec <= 0 || ds.OverwritesPerSec <= 0 || ds.KVDPutNew1 <= 0 || ds.KVDOfAppends <= 0 {
		t.Errorf("disk sync figures: %+v", ds)
	}
	path := filepath.Join(dir, "report.json")
	if err := rep.WriteJSON(path); err != nil {
		t.Fatal(err)
	}
	back, err := ReadJSON(path)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := json.Marshal(rep)
	b, _ := json.Marshal(back)
	if string(a) != string(b) || len(back.Results) != len(rep.Results) {
		t.Fatal("the report changed in a JSON round trip")
	}
	os.Remove(path)
}

// TestRunPostgresAuto runs kvbench's default PostgreSQL target: a
// throwaway server it starts from the machine's binaries.
func TestRunPostgresAuto(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs kvd and PostgreSQL")
	}
	dir := t.TempDir()
	cfg := DefaultConfig()
	cfg.KVD, cfg.Baseline = goBuild(t, dir, "kvd"), []string{goBuild(t, dir, "kvbench"), "baseline", "--listen"}
	cfg.NoEmbedded = true
	cfg.Workloads = []string{GetHit, PutNew}
	cfg.Keys, cfg.Clients, cfg.FillClients = 50, []int{2}, 4
	cfg.Duration, cfg.Warmup = 200*time.Millisecond, 50*time.Millisecond
	cfg.FsyncDuration, cfg.DiskSyncDuration = 0, 0
	cfg.WorkDir = dir
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	rep, err := Run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range cfg.Workloads {
		r, ok := rep.Find(TargetKVDPostgres, w, 2)
		if !ok {
			if os.Getenv(pgtest.EnvRequire) != "1" {
				t.Skipf("no PostgreSQL here: %v", rep.Notes)
			}
			t.Fatalf("no result for kvd on PostgreSQL, %s; notes: %v", w, rep.Notes)
		}
		if r.Ops <= 0 || r.Errors != 0 {
			t.Errorf("kvd on PostgreSQL, %s: %d ops, %d errors (%s)", w, r.Ops, r.Errors, r.FirstError)
		}
	}
}

// goBuild builds ./cmd/name of this module into dir and returns the
// binary's path.
func goBuild(t *testing.T, dir, name string) string {
	t.Helper()
	bin := filepath.Join(dir, name)
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/edgekv/kv/cmd/"+name).CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", name, err, out)
	}
	return bin
}
