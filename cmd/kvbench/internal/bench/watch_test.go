package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgekv/kv/internal/pgtest"
)

// TestSSEReader feeds the watchers' stream reader what kvd sends and what
// a faulty or hostile server might.
func TestSSEReader(t *testing.T) {
	put := `id: 1042` + "\n" + `event: put` + "\n" +
		`data: {"key":"w/123456789-7","revision":1042,"etag":"\"x\"","size_bytes":21}` + "\n\n"
	tests := []struct {
		name string
		in   string
		want []sseEvent
		err  error // after the events
	}{
		{"kvd's frames", "event: ready\ndata: {\"revision\":7}\n\n" + put + ": ping\n\n" +
			"id: 1043\nevent: delete\ndata: {\"key\":\"w/123456789-7\",\"revision\":1043}\n\n",
			[]sseEvent{{kind: sseReady}, {kind: ssePut, rev: 1042, hasRev: true, sent: 123456789, hasSent: true},
				{kind: sseOther, rev: 1043, hasRev: true, sent: 123456789, hasSent: true}}, io.EOF},
		{"a key under one of the writer's prefixes", "id: 6\nevent: put\ndata: {\"key\":\"w/12/345-9\"}\n\n",
			[]sseEvent{{kind: ssePut, rev: 6, hasRev: true, sent: 345, hasSent: true}}, io.EOF},
		{"CRLF and no space after the colon", "id:5\r\nevent:put\r\ndata:{\"key\":\"w/9-1\"}\r\n\r\n",
			[]sseEvent{{kind: ssePut, rev: 5, hasRev: true, sent: 9, hasSent: true}}, io.EOF},
		{"blank lines and comments before an event", "\n\n: hello\n\n" + put,
			[]sseEvent{{kind: ssePut, rev: 1042, hasRev: true, sent: 123456789, hasSent: true}}, io.EOF},
		{"a key that is not the writer's", "id: 3\nevent: put\ndata: {\"key\":\"k/00000001\",\"revision\":3}\n\n",
			[]sseEvent{{kind: ssePut, rev: 3, hasRev: true}}, io.EOF},
		{"a send time without its sequence", "id: 3\nevent: put\ndata: {\"key\":\"w/123\"}\n\n",
			[]sseEvent{{kind: ssePut, rev: 3, hasRev: true}}, io.EOF},
		{"a send time of too many digits", "id: 3\nevent: put\ndata: {\"key\":\"w/99999999999999999999-1\"}\n\n",
			[]sseEvent{{kind: ssePut, rev: 3, hasRev: true}}, io.EOF},
		{"an id that is not a number", "id: 12a\nevent: put\ndata: {\"key\":\"w/1-1\"}\n\n",
			[]sseEvent{{kind: ssePut, sent: 1, hasSent: true}}, io.EOF},
		{"an unnamed event, a field without a colon", "data\nid: 4\n\n",
			[]sseEvent{{kind: sseOther, rev: 4, hasRev: true}}, io.EOF},
		{"an overflow", "event: overflow\ndata: {\"revision\":9}\n\n",
			[]sseEvent{{kind: sseOverflow}}, io.EOF},
		{"a line longer than the buffer", "id: 8\nevent: put\ndata: {\"key\":\"w/77-1\",\"pad\":\"" + strings.Repeat("x", 300) + "\"}\nid: 9\n\n",
			[]sseEvent{{kind: ssePut, rev: 9, hasRev: true, sent: 77, hasSent: true}}, io.EOF},
		{"the stream ends inside an event", put + "id: 1043\nevent: put\n",
			[]sseEvent{{kind: ssePut, rev: 1042, hasRev: true, sent: 123456789, hasSent: true}}, io.ErrUnexpectedEOF},
		{"the stream ends inside a line", "id: 10", nil, io.ErrUnexpectedEOF},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// A small buffer, and one byte per read, so that lines and
			// events straddle reads.
			r := &sseReader{br: bufio.NewReaderSize(&oneByteReader{strings.NewReader(tc.in)}, 64)}
			var got []sseEvent
			var err error
			for {
				var ev sseEvent
				if err = r.next(&ev); err != nil {
					break
				}
				got = append(got, ev)
			}
			if !errors.Is(err, tc.err) {
				t.Errorf("error %v, want %v", err, tc.err)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("events %+v, want %+v", got, tc.want)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Errorf("event %d: %+v, want %+v", i, got[i], tc.want[i])
				}
			}
		})
	}
}

type oneByteReader struct{ r io.Reader }

func (o *oneByteReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	return o.r.Read(p[:1])
}

func TestPeriodOf(t *testing.T) {
	var from [periods]int64
	if p := periodOf(5, from); p != -1 {
		t.Errorf("periods not yet known: period %d, want none (the warm-up)", p)
	}
	from[periodWindow], from[periodLoaded] = 10, 20
	for sent, want := range map[int64]int{9: -1, 10: periodWindow, 19: periodWindow, 20: periodLoaded, 1000: periodLoaded} {
		if p := periodOf(sent, from); p != want {
			t.Errorf("sent %d: period %d, want %d", sent, p, want)
		}
	}
}

// smallWatchConfig is a watch run small enough for a test.
func smallWatchConfig(t *testing.T, dir string) WatchConfig {
	cfg := DefaultWatchConfig()
	cfg.KVD, cfg.WatchersCmd = goBuild(t, dir, "kvd"), []string{goBuild(t, dir, "kvbench"), "watchers"}
	cfg.Keys, cfg.Watchers, cfg.Prefixes, cfg.WriteRate, cfg.Writers = 200, 50, 1, 100, 2
	cfg.Clients, cfg.FillClients = 4, 8
	cfg.Duration, cfg.Warmup = time.Second, 100*time.Millisecond
	cfg.Settle, cfg.Drain = time.Second, 10*time.Second
	cfg.WorkDir = dir
	return cfg
}

// TestRunWatchSmall runs the watch mode end to end with 50 watchers and
// 100 writes a second against a kvd it builds, and checks the report's
// invariants: every watcher received every write once, the latencies are
// positive and ordered, the memory and throughput figures are there.
func TestRunWatchSmall(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs kvd")
	}
	dir := t.TempDir()
	cfg := smallWatchConfig(t, dir)
	var log bytes.Buffer
	cfg.Log = &log
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	rep, err := RunWatch(ctx, cfg)
	if err != nil {
		t.Fatalf("%v\n%s", err, log.String())
	}
	if len(rep.Engines) != 1 || rep.Engines[0].Engine != EngineEmbedded {
		t.Fatalf("engines %+v, want the embedded one alone", rep.Engines)
	}
	checkWatchEngine(t, &rep.Engines[0], cfg, 1)

	var out bytes.Buffer
	rep.Print(&out)
	for _, s := range []string{"embedded (one kvd)", "50 of 50 ready", "missing 0, duplicated 0, overflows 0", "delivery latency", "get-hit", "put-new", "targets:", "every write reaches every watcher once"} {
		if !strings.Contains(out.String(), s) {
			t.Errorf("printed report lacks %q:\n%s", s, out.String())
		}
	}
	path := filepath.Join(dir, "watch.json")
	if err := rep.WriteJSON(path); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var back WatchReport
	if err := json.Unmarshal(b, &back); err != nil || len(back.Engines) != 1 || back.Engines[0].Events != rep.Engines[0].Events || back.Engines[0].Latency != rep.Engines[0].Latency {
		t.Fatalf("JSON round trip: %v", err)
	}
}

// checkWatchEngine checks the invariants of one engine's run of cfg on
// kvds kvd processes.
func checkWatchEngine(t *testing.T, e *WatchEngine, cfg WatchConfig, kvds int) {
	t.Helper()
	if e.Error != "" || e.KVDs != kvds || e.Watchers != cfg.Watchers || e.Ready != cfg.Watchers || e.OpenSeconds <= 0 {
		t.Errorf("%s: error %q, %d kvd, %d of %d watchers ready in %vs", e.Engine, e.Error, e.KVDs, e.Ready, e.Watchers, e.OpenSeconds)
	}
	if e.Fill.Keys != cfg.Keys {
		t.Errorf("%s: fill %+v", e.Engine, e.Fill)
	}
	w := e.Writes
	if w.Acked <= 0 || w.Errors != 0 || w.WindowAcked <= 0 || w.PerSec <= 0 || w.WindowAcked > w.Acked {
		t.Errorf("%s: writes %+v", e.Engine, w)
	}
	v := e.Events
	n := int64(cfg.Watchers / cfg.Prefixes) // the watchers of each write
	if !e.Drained || v.Expected != w.Acked*n || v.Received != v.Expected || v.Missing != 0 || v.Duplicated != 0 ||
		v.BeyondAcked != 0 || v.Overflows != 0 || v.EndedEarly != 0 || v.Other != 0 {
		t.Errorf("%s: drained %v, events %+v, want %d each of %d watchers", e.Engine, e.Drained, v, w.Acked, n)
	}
	if !e.delivered() {
		t.Errorf("%s: not delivered", e.Engine)
	}
	for name, l := range map[string]WatchLatency{"window": e.Latency, "loaded": e.LatencyLoaded} {
		if l.Events <= 0 || l.P50us <= 0 || l.P50us > l.P90us || l.P90us > l.P99us || l.P99us > l.MaxUs || l.MeanUs <= 0 {
			t.Errorf("%s: %s latency %+v", e.Engine, name, l)
		}
	}
	if e.Latency.Events+e.LatencyLoaded.Events > v.Received || e.Latency.Events%n != 0 || e.LatencyLoaded.Events%n != 0 {
		t.Errorf("%s: %d + %d latency samples, %d events received by %d watchers: each write's samples are all in one period",
			e.Engine, e.Latency.Events, e.LatencyLoaded.Events, v.Received, n)
	}
	if e.EventsPerSec <= 0 || e.KVDCPU <= 0 || e.WatchersCPU <= 0 || e.BenchCPU < 0 || e.WatchersPeakRSS <= 0 || e.BenchPeakRSS <= 0 {
		t.Errorf("%s: %v events/s, CPU kvd %v, watchers %v, kvbench %v; RSS watchers %d, kvbench %d",
			e.Engine, e.EventsPerSec, e.KVDCPU, e.WatchersCPU, e.BenchCPU, e.WatchersPeakRSS, e.BenchPeakRSS)
	}
	if len(e.KVDPeakRSS) != kvds || e.PeakRSS <= 0 {
		t.Errorf("%s: kvd peak RSS %v, max %d", e.Engine, e.KVDPeakRSS, e.PeakRSS)
	}
	for _, p := range e.KVDPeakRSS {
		if p <= 0 || p > e.PeakRSS {
			t.Errorf("%s: kvd peak RSS %v, max %d", e.Engine, e.KVDPeakRSS, e.PeakRSS)
		}
	}
	if len(e.Without) != 2 || len(e.With) != 2 || len(e.WithoutAfter) != 2 || len(e.Costs) != 2 {
		t.Fatalf("%s: %d results without watchers, %d with, %d after, %d costs; want 2 each", e.Engine, len(e.Without), len(e.With), len(e.WithoutAfter), len(e.Costs))
	}
	for i, wl := range []string{GetHit, PutNew} {
		for _, x := range []Result{e.Without[i], e.With[i], e.WithoutAfter[i]} {
			if x.Workload != wl || x.Clients != cfg.Clients || x.Ops <= 0 || x.Errors != 0 {
				t.Errorf("%s: %s: %+v", e.Engine, wl, x)
			}
		}
		c := e.Costs[i]
		if c.Workload != wl || c.Without != (e.Without[i].OpsPerSec+e.WithoutAfter[i].OpsPerSec)/2 || c.With != e.With[i].OpsPerSec || c.Cost != 1-c.With/c.Without {
			t.Errorf("%s: cost %+v", e.Engine, c)
		}
	}
}

// TestRunWatchPostgres runs the watch mode on two kvd sharing a throwaway
// PostgreSQL, the watchers split between them, and over prefixes: each
// write reaches a fifth of them.
func TestRunWatchPostgres(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs kvd and PostgreSQL")
	}
	dir := t.TempDir()
	cfg := smallWatchConfig(t, dir)
	cfg.NoEmbedded, cfg.Postgres = true, PostgresAuto
	cfg.Prefixes = 5
	var log bytes.Buffer
	cfg.Log = &log
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	rep, err := RunWatch(ctx, cfg)
	if len(rep.Engines) == 0 && err == nil {
		if os.Getenv(pgtest.EnvRequire) != "1" {
			t.Skipf("no PostgreSQL here: %v", rep.Notes)
		}
		t.Fatalf("no run on PostgreSQL; notes: %v", rep.Notes)
	}
	if err != nil {
		t.Fatalf("%v\n%s", err, log.String())
	}
	e := &rep.Engines[0]
	if e.Engine != EnginePostgres {
		t.Fatalf("engines %+v, want the PostgreSQL one alone", rep.Engines)
	}
	checkWatchEngine(t, e, cfg, 2)
}
