package pgopstest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgekv/kv"
	"github.com/edgekv/kv/internal/kvdtest"
	"github.com/edgekv/kv/internal/linearizability"
	"github.com/edgekv/kv/internal/pgtest"
	"github.com/jackc/pgx/v5"
)

// The failover workload: writers over a few register keys, whose history
// porcupine checks, and writes of keys that are written once ("journal"
// keys), each of which must survive if it was acknowledged.
const (
	failoverWriters = 32
	registerKeys    = 24
	journalEvery    = 4 // every this many operations of a writer, one journal write
)

// TestFailover runs kvd on a pg_auto_failover formation (a monitor, a
// primary and a synchronous secondary, see pgtest.Formation) through a
// multi-host URL with target_session_attrs=read-write, while 32 writers
// PUT, DELETE and GET over HTTP, and
//
//	(a) loses the primary: its pg_autoctl and its postmaster, with every
//	    backend, get SIGKILL at once, as when its machine dies; the monitor
//	    promotes the secondary; later the lost node is started again and
//	    rejoins as the new primary's secondary;
//	(b) makes a planned switchover (pg_autoctl perform switchover) back.
//
// kvd is never restarted. Before each event the test checks that the
// primary replicates synchronously (synchronous_commit on, a standby
// streaming as synchronous), or an acknowledged write could be lost by
// design. After each, kvd must serve again by itself. Every answer must be
// a success, a 404 of a missing key, or a 503 with code 10033; never a 500.
// At the end every key reads back, through kvd and directly with pgx on the
// final primary, what the history allows: every acknowledged write is there
// unless an acknowledged write superseded it, and every acknowledged
// journal write is there; and the whole history, with writes that failed
// as maybe-applied, is linearizable. The windows of unavailability (first
// failed to first succeeded request after each event) are logged, never
// asserted.
//
// It skips when pg_auto_failover is not installed, unless
// KV_REQUIRE_FAILOVER=1.
func TestFailover(t *testing.T) {
	start := time.Now()
	f := pgtest.NewFormation(t)
	primary, secondary := f.WaitStable(t)
	t.Logf("formation up in %v: %s primary, %s secondary; kvd's URL %s", time.Since(start).Round(time.Millisecond), primary.Name, secondary.Name, f.URL())

	k := kvdtest.Start(t, kvdtest.WithStore(f.URL()))
	hc := newHTTPClient()
	a := api{hc: hc, base: k.URL, token: k.Token}
	ns := a.createNamespace(t, "failover", true)
	w := &failoverRun{t: t, hc: hc, base: k.URL, token: k.Token, ns: ns, rec: linearizability.NewRecorder()}

	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for id := range failoverWriters {
		wg.Add(1)
		go func() { defer wg.Done(); w.writer(ctx, id) }()
	}
	stopped := false
	stopWriters := func() {
		if !stopped {
			stopped = true
			stop()
			wg.Wait()
		}
	}
	defer stopWriters() // also when the test fails midway
	w.settle(3 * time.Second)

	// (a) The primary is lost.
	r := f.WaitSynchronous(t, primary)
	t.Logf("before the kill: %s replicates synchronously: synchronous_commit=%s, synchronous_standby_names=%q, standbys %v, number_sync_standbys=%d",
		primary.Name, r.SynchronousCommit, r.SynchronousStandbyNames, r.Standbys, r.NumberSyncStandbys)
	kill := w.event("kill of " + primary.Name)
	f.Kill(t, primary)
	f.WaitWritable(t, secondary)
	t.Logf("the monitor made %s the primary %v after the kill", secondary.Name, time.Since(kill.at).Round(time.Millisecond))
	w.waitServing(kill)
	w.settle(time.Second)
	f.Start(t, primary)
	primary, secondary = f.WaitStable(t)
	t.Logf("%s rejoined as the secondary of %s", secondary.Name, primary.Name)
	w.settle(time.Second)

	// (b) A planned switchover.
	r = f.WaitSynchronous(t, primary)
	t.Logf("before the switchover: %s replicates synchronously: synchronous_commit=%s, synchronous_standby_names=%q, standbys %v",
		primary.Name, r.SynchronousCommit, r.SynchronousStandbyNames, r.Standbys)
	sw := w.event("switchover from " + primary.Name)
	f.Switchover(t)
	primary, secondary = f.WaitStable(t)
	t.Logf("switchover done %v after it was asked for: %s primary, %s secondary", time.Since(sw.at).Round(time.Millisecond), primary.Name, secondary.Name)
	w.waitServing(sw)
	w.settle(time.Second)
	stopWriters()

	w.reportProblems()
	for _, e := range []*event{kill, sw} {
		w.logWindow(e)
	}
	if t.Failed() {
		return
	}
	w.verify(primary)
	ops := w.rec.Operations()
	st := w.rec.Stats()
	checkStart := time.Now()
	if linearizability.Check(t, ops) {
		t.Logf("porcupine: the history is linearizable: %v (checked in %v)", st, time.Since(checkStart).Round(time.Millisecond))
	}
	t.Logf("whole test: %v", time.Since(start).Round(time.Millisecond))
}

type failoverRun struct {
	t     *testing.T
	hc    *http.Client
	base  string
	token string
	ns    string
	rec   *linearizability.Recorder
	seq   atomic.Int64

	mu       sync.Mutex
	problems []string
	results  []result // every answered request, in order of return
	journal  []journalWrite
	events   []*event
}

// result is one request of the workload as the unavailability windows see
// it: when it was sent and answered (the recorder's clock), and whether it
// succeeded.
type result struct {
	call, ret int64
	ok        bool
}

type journalWrite struct {
	key, value string
	acked      bool
}

// event is a failover event, on the recorder's clock.
type event struct {
	what string
	at   time.Time
	rec  int64
}

func (w *failoverRun) event(what string) *event {
	e := &event{what: what, at: time.Now(), rec: w.rec.Now()}
	w.mu.Lock()
	w.events = append(w.events, e)
	w.mu.Unlock()
	return e
}

func (w *failoverRun) problem(format string, args ...any) {
	w.mu.Lock()
	w.problems = append(w.problems, fmt.Sprintf(format, args...))
	w.mu.Unlock()
}

func (w *failoverRun) reportProblems() {
	w.mu.Lock()
	defer w.mu.Unlock()
	const most = 20
	for i, p := range w.problems {
		if i == most {
			w.t.Errorf("and %d more", len(w.problems)-most)
			break
		}
		w.t.Error(p)
	}
}

// settle lets the workload run for d.
func (w *failoverRun) settle(d time.Duration) { time.Sleep(d) }

func (w *failoverRun) client(id int) *linearizability.Client {
	return &linearizability.Client{HTTP: w.hc, BaseURL: w.base, Token: w.token, Namespace: w.ns, Rec: w.rec, ID: id}
}

// writer puts unique values, deletes and reads the register keys, and
// now and then writes a journal key, until ctx is done. A request is never
// cancelled: each gets its answer in full.
func (w *failoverRun) writer(ctx context.Context, id int) {
	rng := rand.New(rand.NewPCG(uint64(id), 42))
	c := w.client(id)
	var pause time.Duration
	// failing: the writer's last request failed. Until one succeeds it
	// writes no register key: a write that fails is of unknown outcome,
	// and each such write of a register key stays pending to the end of
	// porcupine's search, which grows with 2^(pending writes of one key).
	// So an outage costs at most one unknown register write per writer;
	// reads (dropped when they fail) and journal writes (each key its own
	// history) carry on.
	failing := false
	for i := 0; ctx.Err() == nil; i++ {
		var res linearizability.Result
		var journal *journalWrite
		switch x := rng.IntN(100); {
		case i%journalEvery == journalEvery-1 || failing && x < 60:
			n := w.seq.Add(1)
			journal = &journalWrite{key: fmt.Sprintf("j-%06d", n), value: fmt.Sprintf("j%d", n)}
			res = c.Put(context.Background(), journal.key, journal.value)
		case x < 45:
			res = c.Put(context.Background(), registerKey(rng.IntN(registerKeys)), fmt.Sprintf("v%d", w.seq.Add(1)))
		case x < 60:
			res = c.Delete(context.Background(), registerKey(rng.IntN(registerKeys)))
		default:
			res = c.Get(context.Background(), registerKey(rng.IntN(registerKeys)))
		}
		ok := w.judge(res)
		failing = !ok
		w.mu.Lock()
		w.results = append(w.results, result{res.Call, res.Return, ok})
		if journal != nil {
			journal.acked = ok
			w.journal = append(w.journal, *journal)
		}
		w.mu.Unlock()
		// Back off while kvd answers 503, as a client should: it keeps
		// the writes of unknown outcome few (each widens porcupine's
		// search) and the database's recovery unhurried.
		switch {
		case ok:
			pause = 0
		case pause == 0:
			pause = 10 * time.Millisecond
		case pause < time.Second:
			pause *= 2
		}
		time.Sleep(pause)
	}
}

// judge reports whether a request succeeded, and records a problem for any
// answer other than success, a 404 of a missing key, or a 503 with code
// 10033 in the error envelope. kvd is never restarted, so every request
// must be answered.
func (w *failoverRun) judge(res linearizability.Result) bool {
	var se *linearizability.StatusError
	switch {
	case res.Err == nil:
		return true
	case res.NotSent:
		w.problem("kvd refused a connection: %v", res.Err)
	case errors.As(res.Err, &se):
		if se.Status != http.StatusServiceUnavailable || errorCode([]byte(se.Body)) != string(kv.EUnavailable) {
			w.problem("%s(%s): status %d: %s; want success or 503 with code 10033", se.Op.Kind, se.Op.Key, se.Status, se.Body)
		}
	default:
		w.problem("no answer from kvd: %v", res.Err)
	}
	return false
}

func registerKey(i int) string { return fmt.Sprintf("k%02d", i) }

// waitServing waits until a request sent from now on succeeds: kvd
// serves again, without a restart, once the formation has a primary. It
// fails the test if kvd does not within a few minutes.
func (w *failoverRun) waitServing(e *event) {
	w.t.Helper()
	since := w.rec.Now()
	deadline := time.Now().Add(3 * time.Minute)
	for {
		w.mu.Lock()
		served := false
		for i := len(w.results) - 1; i >= 0 && !served; i-- {
			r := w.results[i]
			served = r.ok && r.call > since
		}
		w.mu.Unlock()
		if served {
			return
		}
		if time.Now().After(deadline) {
			w.t.Fatalf("kvd does not serve %v after the %s", time.Since(e.at).Round(time.Second), e.what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// logWindow logs the window of unavailability after e: from the first
// request that failed after it to the first one sent after that which
// succeeded, and how many failed in between.
func (w *failoverRun) logWindow(e *event) {
	w.mu.Lock()
	defer w.mu.Unlock()
	rs := append([]result(nil), w.results...)
	sort.Slice(rs, func(i, j int) bool { return rs[i].ret < rs[j].ret })
	var firstFail, firstOK *result
	failed := 0
	for i := range rs {
		r := &rs[i]
		switch {
		case r.ret <= e.rec:
		case firstFail == nil && !r.ok:
			firstFail = r
			failed++
		case firstFail != nil && !r.ok && firstOK == nil:
			failed++
		case firstFail != nil && r.ok && r.call >= firstFail.ret && firstOK == nil:
			firstOK = r
		}
	}
	switch {
	case firstFail == nil:
		w.t.Logf("%s: no request failed", e.what)
	case firstOK == nil:
		w.t.Logf("%s: requests failed from %v after it, and none succeeded after that", e.what, time.Duration(firstFail.ret-e.rec))
	default:
		w.t.Logf("%s: unavailable for %v (first failed request answered %v after the event, first success %v after it; %d requests failed)",
			e.what, time.Duration(firstOK.ret-firstFail.ret).Round(time.Millisecond),
			time.Duration(firstFail.ret-e.rec).Round(time.Millisecond), time.Duration(firstOK.ret-e.rec).Round(time.Millisecond), failed)
	}
}

// verify reads every key the workload touched through kvd, and directly
// from primary's database with pgx, once the writers have stopped: each
// read must be what the history allows (linearizability.CheckRead), the two
// must agree, and every acknowledged journal write must be there.
func (w *failoverRun) verify(primary *pgtest.Node) {
	t := w.t
	ops := w.rec.Operations()
	keys := map[string]bool{}
	for _, op := range ops {
		keys[op.Input.(linearizability.Input).Key] = true
	}

	// Directly from the primary: the namespace's rows.
	ctx := context.Background()
	c, err := pgx.Connect(ctx, primary.URL(pgtest.FormationDB))
	if err != nil {
		t.Fatalf("connect to the primary %s: %v", primary.Name, err)
	}
	defer c.Close(ctx)
	var inRecovery bool
	if err := c.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&inRecovery); err != nil || inRecovery {
		t.Fatalf("node %s is not the primary (in recovery %v, %v)", primary.Name, inRecovery, err)
	}
	id, err := kv.ParseID(w.ns)
	if err != nil {
		t.Fatal(err)
	}
	rows, err := c.Query(ctx, "SELECT key, value FROM keys WHERE ns_id = $1", id)
	if err != nil {
		t.Fatal(err)
	}
	direct := map[string]string{}
	for rows.Next() {
		var k, v []byte
		if err := rows.Scan(&k, &v); err != nil {
			t.Fatal(err)
		}
		direct[string(k)] = string(v)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}

	// Through kvd, many at once.
	names := make([]string, 0, len(keys))
	for k := range keys {
		names = append(names, k)
	}
	sort.Strings(names)
	reads := make([]linearizability.Result, len(names))
	var wg sync.WaitGroup
	next := atomic.Int64{}
	for id := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := w.client(failoverWriters + id)
			for i := int(next.Add(1) - 1); i < len(names); i = int(next.Add(1) - 1) {
				reads[i] = c.Get(context.Background(), names[i])
			}
		}()
	}
	wg.Wait()

	checked := 0
	for i, key := range names {
		res := reads[i]
		if res.Err != nil || res.NotSent {
			t.Errorf("read %s through kvd after the failovers: %v", key, res.Err)
			continue
		}
		if err := linearizability.CheckRead(ops, key, res.Out, res.Call, res.Return); err != nil {
			t.Errorf("after the failovers, through kvd: %v", err)
		}
		v, ok := direct[key]
		if ok != res.Out.Found || ok && v != res.Out.Value {
			t.Errorf("key %s: kvd reads %+v, the primary's table holds %q (present %v)", key, res.Out, v, ok)
		}
		checked++
	}
	acked, unknownThere, unknownGone := 0, 0, 0
	for _, j := range w.journal {
		v, ok := direct[j.key]
		switch {
		case j.acked && (!ok || v != j.value):
			t.Errorf("acknowledged write of journal key %s = %q lost: the primary holds %q (present %v)", j.key, j.value, v, ok)
		case j.acked:
			acked++
		case ok && v != j.value:
			t.Errorf("journal key %s holds %q; it was written once, with %q", j.key, v, j.value)
		case ok:
			unknownThere++
		default:
			unknownGone++
		}
	}
	st := linearizability.Stats{}
	for _, op := range ops {
		if op.Input.(linearizability.Input).Kind != linearizability.Get {
			if op.Output.(linearizability.Output).Unknown {
				st.UnknownWrite++
			} else {
				st.AckedWrites++
			}
		}
	}
	t.Logf("checked %d keys through kvd and on the primary %s: %d acknowledged writes in the history (%d of journal keys, each present), %d writes of unknown outcome (%d journal writes there, %d not)",
		checked, primary.Name, st.AckedWrites, acked, st.UnknownWrite, unknownThere, unknownGone)
	if acked == 0 {
		t.Error("no journal write was acknowledged: the workload did not run")
	}
}
