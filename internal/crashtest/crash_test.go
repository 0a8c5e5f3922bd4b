package crashtest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgekv/kv/internal/linearizability"
	"github.com/edgekv/kv/internal/pgtest"
	"github.com/jackc/pgx/v5"
)

// The shape of the crash workload: few keys, so that operations on each
// key interleave and every kill lands on keys with writes in flight.
const (
	crashKeys    = 16
	crashWorkers = 8
	// doomEvery: every this many cycles, a namespace is deleted while the
	// cycle runs.
	doomEvery = 5
	// quietEvery: every this many database crash cycles, the database is
	// also crashed and restarted once the cycle's requests are done.
	quietEvery = 3
	// clockSlack absorbs rounding between the test's and kvd's readings of
	// the same wall clock in the TTL checks.
	clockSlack = 50 * time.Millisecond
)

// TestCrashRecovery kills kvd with SIGKILL at random moments while clients
// write, delete and read over HTTP, restarts it on the same store, and
// checks after every restart that each acknowledged write reads back unless
// a later acknowledged write or delete superseded it; at the end the whole
// history, across every crash, must be linearizable. Along the way a
// namespace is deleted during some cycles (once a 200 answers its DELETE it
// never serves a key again and, after any restart, is deleting or gone)
// and keys are written with ttl_secs=1 (an expired key never reappears).
// It runs on the embedded engine and on PostgreSQL.
//
// KV_CRASH_CYCLES sets the number of kill cycles on the embedded engine
// (default 50), KV_CRASH_CYCLES_POSTGRES on PostgreSQL (default 20).
func TestCrashRecovery(t *testing.T) {
	t.Run("pebble", func(t *testing.T) {
		runKVDCrashes(t, t.TempDir(), envInt(t, "KV_CRASH_CYCLES", 50))
	})
	t.Run("postgres", func(t *testing.T) {
		// A kill can leave a lifecycle job claimed; the restarted kvd is
		// another lease holder and would wait out the default 30s lease.
		runKVDCrashes(t, pgtest.URL(t), envInt(t, "KV_CRASH_CYCLES_POSTGRES", 20), "--job-lease=1s")
	})
}

func runKVDCrashes(t *testing.T, store string, cycles int, args ...string) {
	r := newCrashRun(t, startKVD(t, store, args...), nil)
	r.feed = r.startFeedWatcher()
	r.run(cycles, func(cycle int) {
		var d *doomedNS
		if cycle%doomEvery == 0 {
			d = r.newDoomed(cycle)
		}
		var killedAt time.Time
		r.workload(d, func() {
			r.sleep(20*time.Millisecond, 300*time.Millisecond)
			r.k.kill()
			killedAt = time.Now().Round(0)
		})
		r.hc.CloseIdleConnections()
		if strings.HasPrefix(store, "postgres") {
			waitSessionsGone(t, store)
		}
		r.settleTTL(killedAt)
		if d != nil {
			r.checkDoomedCycle(d)
		}
		r.reportProblems(cycle)
		r.k.start()
	})
}

// waitSessionsGone waits, after kvd was killed, until the database has no
// session of it left. The database outlives kvd: a transaction the dead
// process had sent whole, its COMMIT included, still runs to its end (after
// a lock wait, say), so the outcome of its writes is settled only then, and
// the checks after the restart take the outcomes they did not see as
// settled.
func waitSessionsGone(t *testing.T, url string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatalf("connect to count the killed kvd's sessions: %v", err)
	}
	defer c.Close(context.Background())
	for {
		var n int
		err := c.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND application_name = 'kvd' AND pid <> pg_backend_pid()`).Scan(&n)
		if err != nil {
			t.Fatalf("counting the killed kvd's sessions (%d at the last count; 30s at most): %v", n, err)
		}
		if n == 0 {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestDatabaseCrash crashes PostgreSQL under a running kvd: at random
// moments while clients write, delete and read, the database server is
// stopped the way a crash would (an immediate shutdown: every server process
// exits at once, without a checkpoint), kept down for a while, and started
// again on the same data directory and port, where it recovers from its
// write-ahead log. kvd itself is never restarted. While the database is
// down kvd must answer every request, and with 503 and code 10033 in the
// API's error envelope when it cannot do the work; a request made and
// answered while the database is up must succeed as usual. After every
// restart each acknowledged write reads back unless a later acknowledged
// write or delete superseded it, and at the end the whole history, in which
// a write answered 503 may or may not have happened, must be linearizable.
// TTL writes and namespace deletions run as in TestCrashRecovery.
//
// The test needs a PostgreSQL server of its own (pgtest.NewServer), so it
// is skipped when the tests run against an external server
// (KV_TEST_POSTGRES_URL). KV_DB_CRASH_CYCLES sets the number of database
// crashes (default 10).
func TestDatabaseCrash(t *testing.T) {
	cycles := envInt(t, "KV_DB_CRASH_CYCLES", 10)
	srv := pgtest.NewServer(t)
	// A crash can fail a lifecycle job after its claim; the lease then
	// decides when it is tried again.
	r := newCrashRun(t, startKVD(t, srv.URL(t), "--job-lease=1s"), srv)
	r.run(cycles, func(cycle int) {
		var d *doomedNS
		if cycle%doomEvery == 0 {
			d = r.newDoomed(cycle)
		}
		r.workload(d, func() {
			r.sleep(20*time.Millisecond, 300*time.Millisecond)
			r.databaseDown()
			srv.Crash(t)
			r.probeOutage(cycle)
			r.sleep(50*time.Millisecond, 300*time.Millisecond)
			srv.Restart(t)
			r.databaseUp()
			// kvd must serve normally again, without a restart, while
			// the clients go on.
			r.sleep(100*time.Millisecond, 300*time.Millisecond)
		})
		r.settleTTL(time.Now().Round(0))
		if d != nil {
			r.checkDoomedCycle(d)
		}
		r.reportProblems(cycle)
		if cycle%quietEvery == 0 {
			// A crash with no request in flight or made while the
			// database is down: kvd's connections of before the crash
			// are all dead, and the next cycle's reads must not fail on
			// them.
			r.databaseDown()
			srv.Crash(t)
			srv.Restart(t)
			r.databaseUp()
			r.quietCrashes++
		}
		if !r.k.running() {
			t.Fatalf("cycle %d: kvd exited (%v):\n%s", cycle, r.k.cmd.ProcessState, r.k.logs)
		}
	})
	if t.Failed() {
		t.Logf("kvd log:\n%s\ndatabase server log:\n%s", r.k.logs, srv.Log())
	}
}

type crashRun struct {
	t   *testing.T
	rng *rand.Rand // used by the test goroutine only
	hc  *http.Client
	rec *linearizability.Recorder
	k   *kvd
	api api
	ns  string
	seq atomic.Int64 // makes every written value unique

	// db is the database server that is crashed, nil when kvd is.
	db *pgtest.Server
	// feed follows the main namespace's watch across the kills; nil when
	// the run does not watch.
	feed *feedWatcher

	mu       sync.Mutex
	problems []string // unexpected answers seen by the workers
	ttl      []*ttlWrite
	outages  []outage // when the database was down, on the recorder's clock

	doomed []*doomedNS

	crashes             int
	checkedReads        int
	ttlAcked            int
	ttlExpiredChecked   int
	doomedGone          int
	doomAckedBeforeKill int
	outageAnswers       int // 503s to the workload while the database was down
	outageProbes        int // requests made while the database was surely down
	quietCrashes        int // database crashes with no request in flight

	pairs         [crashPairs]pairState // guarded by mu
	pairsChecked  int
	batchesAcked  int
	batchesUnsure int
}

// crashPairs is the number of key pairs the batch workers write, each
// pair by one worker, atomically: both keys in one batch.
const crashPairs = 4

// pairState is what one pair's worker has done: the sequence numbers of
// its last acknowledged batch and of the batches after it whose outcome
// is unknown.
type pairState struct {
	acked  int64
	unsure []int64
}

// outage is a time the database was down: from just before its crash to
// just after its restart had completed (0: not yet).
type outage struct{ down, up int64 }

// newCrashRun sets up a run on kvd k; db is the database server the run
// crashes, or nil if it kills kvd.
func newCrashRun(t *testing.T, k *kvd, db *pgtest.Server) *crashRun {
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	hc := newHTTPClient()
	r := &crashRun{
		t:   t,
		rng: rand.New(rand.NewPCG(seed, 0)),
		hc:  hc,
		rec: linearizability.NewRecorder(),
		k:   k,
		api: api{hc: hc, base: k.url()},
		db:  db,
	}
	r.ns = r.api.createNamespace(t, "crash-main")
	return r
}

// what names the crashes of the run in its report.
func (r *crashRun) what() (cycles, restart string) {
	if r.db != nil {
		return "database crash cycles", "database restart"
	}
	return "kill cycles", "restart"
}

// run runs cycles crash cycles, each after checking every key, then checks
// the keys once more, stops kvd, reports what was checked and checks the
// whole history with porcupine.
func (r *crashRun) run(cycles int, cycle func(n int)) {
	t := r.t
	noun, restart := r.what()
	t.Logf("%d %s", cycles, noun)
	start := time.Now()
	n := 1
	for ; n <= cycles && !t.Failed(); n++ {
		r.verify(n)
		cycle(n)
		r.crashes++
	}
	r.verify(n)
	if r.feed != nil {
		r.feed.check()
	}
	r.k.stop()

	st := r.rec.Stats()
	t.Logf("%d %s in %v; after each %s checked %d keys, %d reads in all; history: %v",
		r.crashes, noun, time.Since(start).Round(time.Millisecond), restart, crashKeys, r.checkedReads, st)
	deleteAcked := "before a kill"
	if r.db != nil {
		deleteAcked = "within its cycle"
	}
	t.Logf("acknowledged writes checked across %ss: %d on the register keys, %d TTL writes (%d checked expired), %d namespaces deleted (%d with the DELETE acknowledged %s), %d atomic batches (%d of unknown outcome; pairs checked whole %d times)",
		restart, st.AckedWrites, r.ttlAcked, r.ttlExpiredChecked, r.doomedGone, r.doomAckedBeforeKill, deleteAcked, r.batchesAcked, r.batchesUnsure, r.pairsChecked)
	if r.batchesAcked == 0 {
		t.Fatal("no batch was acknowledged: the batch workers did not run")
	}
	if r.db != nil {
		t.Logf("while the database was down: %d requests of the workload answered 503, and %d of %d probes; %d more database crashes with no request in flight; kvd was never restarted", r.outageAnswers, r.outageProbes, 2*r.crashes, r.quietCrashes)
	}
	if st.AckedWrites == 0 {
		t.Fatal("no write was acknowledged: the workload did not run")
	}
	if t.Failed() {
		return
	}
	ops := r.rec.Operations()
	checkStart := time.Now()
	if linearizability.Check(t, ops) {
		t.Logf("porcupine: the history of %d operations across %d crashes is linearizable (checked in %v)", len(ops), r.crashes, time.Since(checkStart).Round(time.Millisecond))
	}
}

// sleep waits a random time in [min, max).
func (r *crashRun) sleep(min, max time.Duration) {
	time.Sleep(min + time.Duration(r.rng.Int64N(int64(max-min))))
}

// workload runs the clients (and, with d, the doomed namespace's) while
// crash runs, then stops them and waits until every request has been
// answered or has failed.
func (r *crashRun) workload(d *doomedNS, crash func()) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }() // also when crash fails the test
	for w := range crashWorkers {
		wg.Add(1)
		seed := r.rng.Uint64()
		go func() { defer wg.Done(); r.keyWorker(ctx, w, seed) }()
	}
	wg.Add(1)
	go func() { defer wg.Done(); r.ttlWorker(ctx) }()
	for p := range crashPairs {
		wg.Add(1)
		go func() { defer wg.Done(); r.batchWorker(ctx, p) }()
	}
	if d != nil {
		wg.Add(2)
		go func() { defer wg.Done(); r.doomWorker(ctx, d) }()
		delay := time.Duration(r.rng.Int64N(int64(200 * time.Millisecond)))
		go func() { defer wg.Done(); r.doomDelete(ctx, d, delay) }()
	}
	crash()
}

func (r *crashRun) problem(format string, args ...any) {
	r.mu.Lock()
	r.problems = append(r.problems, fmt.Sprintf(format, args...))
	r.mu.Unlock()
}

func (r *crashRun) reportProblems(cycle int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	const most = 10
	for i, p := range r.problems {
		if i == most {
			r.t.Errorf("cycle %d: and %d more", cycle, len(r.problems)-most)
			break
		}
		r.t.Errorf("cycle %d: %s", cycle, p)
	}
	r.problems = nil
}

// databaseDown and databaseUp bracket a database outage.
func (r *crashRun) databaseDown() {
	r.mu.Lock()
	r.outages = append(r.outages, outage{down: r.rec.Now()})
	r.mu.Unlock()
}

func (r *crashRun) databaseUp() {
	r.mu.Lock()
	r.outages[len(r.outages)-1].up = r.rec.Now()
	r.mu.Unlock()
}

// duringOutage reports whether a request called at call and answered at
// ret overlapped a database outage.
func (r *crashRun) duringOutage(call, ret int64) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, o := range r.outages {
		if ret >= o.down && (o.up == 0 || call <= o.up) {
			return true
		}
	}
	return false
}

// breakerWindow is how long after the database is back kvd may still
// refuse a request without trying the database: its breaker makes the
// next connection attempt within its longest interval (2s) of the last
// failed one. Generous, for a loaded machine.
const breakerWindow = 5 * time.Second

// breakerRefusal reports whether body is the refusal of kvd's breaker: the
// last attempt to connect failed and the next is not due yet.
func breakerRefusal(body string) bool {
	return errorCode(body) == "10033" && strings.Contains(body, "could not be reached")
}

// afterOutage reports whether a request called at call was sent within
// breakerWindow of the end of a database outage.
func (r *crashRun) afterOutage(call int64) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, o := range r.outages {
		if o.up != 0 && call > o.up && call <= o.up+int64(breakerWindow) {
			return true
		}
	}
	return false
}

// failed judges a request that did not get an answer it expects: status
// is the HTTP status, or 0 with err when there was no answer. When kvd is
// killed, a request without an answer is the kill's doing. When the
// database is crashed, kvd never goes away, so every request must be
// answered, and a 5xx is acceptable only for a request that overlapped an
// outage, and only as 503 with code 10033 in the error envelope, or for
// one sent shortly after an outage and refused by kvd's breaker, whose next
// attempt to connect was not due yet. Anything else is a problem.
func (r *crashRun) failed(what string, call, ret int64, status int, body string, err error) {
	if err != nil {
		status = 0 // no answer, or not all of it
	}
	switch {
	case status == 0 && r.db == nil:
	case status == 0:
		r.problem("%s: no answer from kvd, which was not restarted: %v", what, err)
	case status >= 500 && r.db != nil && (r.duringOutage(call, ret) || r.afterOutage(call) && breakerRefusal(body)):
		if status != http.StatusServiceUnavailable || errorCode(body) != "10033" {
			r.problem("%s while the database was down: status %d: %s; want 503 with code 10033 in the error envelope", what, status, body)
			return
		}
		r.mu.Lock()
		r.outageAnswers++
		r.mu.Unlock()
	default:
		r.problem("%s: unexpected answer: status %d: %s", what, status, body)
	}
}

// errorCode returns the code of the one error in the API's error envelope
// in body, or "" if body is not such an envelope.
func errorCode(body string) string {
	var e struct {
		Errors []struct {
			Code  string `json:"code"`
			Title string `json:"title"`
		} `json:"errors"`
	}
	if json.Unmarshal([]byte(body), &e) != nil || len(e.Errors) != 1 || e.Errors[0].Title == "" {
		return ""
	}
	return e.Errors[0].Code
}

// probeOutage runs right after the database went down (its postmaster has
// exited): a write and a read must each be answered with 503 and code
// 10033, within the client's timeout.
func (r *crashRun) probeOutage(cycle int) {
	c := r.client(crashWorkers + 1)
	for _, res := range []linearizability.Result{
		c.Put(context.Background(), keyName(r.rng.IntN(crashKeys)), fmt.Sprintf("v%d", r.seq.Add(1))),
		c.Get(context.Background(), keyName(r.rng.IntN(crashKeys))),
	} {
		var se *linearizability.StatusError
		if !errors.As(res.Err, &se) || se.Status != http.StatusServiceUnavailable || errorCode(se.Body) != "10033" {
			r.t.Errorf("cycle %d: with the database down, kvd answered %+v (%v); want 503 with code 10033 in the error envelope", cycle, res.Out, res.Err)
			continue
		}
		r.outageProbes++
	}
}

func (r *crashRun) client(id int) *linearizability.Client {
	return &linearizability.Client{HTTP: r.hc, BaseURL: r.k.url(), Token: apiKey, Namespace: r.ns, Rec: r.rec, ID: id}
}

func keyName(i int) string { return fmt.Sprintf("k%02d", i) }

// keyWorker puts unique values, deletes and reads random keys until ctx is
// done. Requests refused at connect time (kvd is down) never reached a
// server and are not part of the history. A request is not cancelled when
// ctx is done: every request gets its answer (or its failure) in full.
func (r *crashRun) keyWorker(ctx context.Context, id int, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 1))
	c := r.client(id)
	var b backoff
	for ctx.Err() == nil {
		key := keyName(rng.IntN(crashKeys))
		var res linearizability.Result
		put := false
		switch x := rng.IntN(100); {
		case x < 50:
			put = true
			res = c.Put(context.Background(), key, fmt.Sprintf("v%d", r.seq.Add(1)))
		case x < 65:
			res = c.Delete(context.Background(), key)
		default:
			res = c.Get(context.Background(), key)
		}
		var se *linearizability.StatusError
		switch {
		case res.NotSent:
			if r.db != nil {
				r.problem("%v: kvd, which was not restarted, refused the connection", res.Err)
			}
			time.Sleep(2 * time.Millisecond)
		case errors.As(res.Err, &se):
			r.failed(se.Op.Kind.String()+"("+key+")", res.Call, res.Return, se.Status, se.Body, nil)
			b.wait(se.Status)
		case res.Err != nil:
			r.failed("request on "+key, res.Call, res.Return, 0, "", res.Err)
		default:
			b.reset()
			if put && r.feed != nil {
				r.feed.ackedPut(key, res.ETag)
			}
		}
	}
}

// backoff spaces a client's requests while they are answered 5xx, as a
// client should, so that an outage does not fill the history with writes
// of unknown outcome (each makes porcupine's search wider) nor flood the
// recovering database with connection attempts.
type backoff time.Duration

func (b *backoff) wait(status int) {
	if status < 500 {
		return
	}
	switch {
	case *b == 0:
		*b = backoff(5 * time.Millisecond)
	case *b < backoff(100*time.Millisecond):
		*b *= 2
	}
	time.Sleep(time.Duration(*b))
}

func (b *backoff) reset() { *b = 0 }

// verify runs with no request in flight, right after kvd (re)started: each
// register key must read what the history allows; TTL keys and deleted
// namespaces are checked as well.
func (r *crashRun) verify(cycle int) {
	t := r.t
	c := r.client(crashWorkers)
	if r.db != nil {
		r.waitBreaker(cycle, c)
	}
	ops := r.rec.Operations()
	for i := range crashKeys {
		key := keyName(i)
		res := c.Get(context.Background(), key)
		if res.Err != nil || res.NotSent {
			t.Fatalf("cycle %d: read %s after restart: %v", cycle, key, res.Err)
		}
		r.checkedReads++
		if err := linearizability.CheckRead(ops, key, res.Out, res.Call, res.Return); err != nil {
			t.Errorf("cycle %d, after restart: %v", cycle, err)
		}
	}
	r.verifyTTL(cycle)
	r.verifyDoomed(cycle)
	r.verifyPairs(cycle)
}

func pairKey(p int, k string) string { return fmt.Sprintf("pair/%d/%s", p, k) }

// batchWorker writes pair p's two keys, and a counter, in atomic batches
// of one new value each, one batch at a time, until ctx is done.
func (r *crashRun) batchWorker(ctx context.Context, p int) {
	var b backoff
	for ctx.Err() == nil {
		seq := r.seq.Add(1)
		v := strconv.FormatInt(seq, 10)
		body := fmt.Sprintf(`{"ops":[{"op":"put","key":%q,"value":%q},{"op":"incr","key":%q},{"op":"put","key":%q,"value":%q}]}`,
			pairKey(p, "a"), v, pairKey(p, "n"), pairKey(p, "b"), v)
		req, _ := http.NewRequest(http.MethodPost, r.k.url()+"/v2/storage/kvs/"+r.ns+"/batch", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+apiKey)
		resp, err := r.hc.Do(req)
		status := 0
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			status = resp.StatusCode
		}
		r.mu.Lock()
		st := &r.pairs[p]
		switch {
		case err != nil && linearizability.IsNotSent(err):
		case status == http.StatusOK:
			st.acked, st.unsure = seq, nil
			r.batchesAcked++
		default:
			st.unsure = append(st.unsure, seq)
			r.batchesUnsure++
		}
		r.mu.Unlock()
		switch {
		case err != nil && linearizability.IsNotSent(err):
			time.Sleep(2 * time.Millisecond)
		case status == http.StatusOK:
			b.reset()
		default:
			b.wait(max(status, 500))
		}
	}
}

// verifyPairs checks, with nothing in flight, that each pair holds one
// batch's writes whole: both keys the same value, that of its last
// acknowledged batch or of a later one whose outcome is unknown.
func (r *crashRun) verifyPairs(cycle int) {
	for p := range crashPairs {
		var got [2]string
		for i, k := range []string{"a", "b"} {
			req, _ := http.NewRequest(http.MethodGet, r.k.url()+"/v2/storage/kvs/"+r.ns+"/keys/"+pairKey(p, k), nil)
			req.Header.Set("Authorization", "Bearer "+apiKey)
			resp, err := r.hc.Do(req)
			if err != nil {
				r.t.Fatalf("cycle %d: read %s: %v", cycle, pairKey(p, k), err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			switch resp.StatusCode {
			case http.StatusOK:
				got[i] = string(b)
			case http.StatusNotFound:
			default:
				r.t.Fatalf("cycle %d: read %s: %d %s", cycle, pairKey(p, k), resp.StatusCode, b)
			}
		}
		r.mu.Lock()
		st := r.pairs[p]
		r.pairsChecked++
		r.mu.Unlock()
		if got[0] != got[1] {
			r.t.Errorf("cycle %d: pair %d holds %q and %q: a batch was applied in part", cycle, p, got[0], got[1])
			continue
		}
		allowed := map[string]bool{}
		if st.acked == 0 {
			allowed[""] = true
		} else {
			allowed[strconv.FormatInt(st.acked, 10)] = true
		}
		for _, u := range st.unsure {
			allowed[strconv.FormatInt(u, 10)] = true
		}
		if !allowed[got[0]] {
			r.t.Errorf("cycle %d: pair %d holds %q; its last acknowledged batch wrote %d (later, unknown: %v): an acknowledged batch was lost", cycle, p, got[0], st.acked, st.unsure)
		}
		// What is there is now what the next cycle builds on.
		r.mu.Lock()
		if n, err := strconv.ParseInt(got[0], 10, 64); err == nil {
			r.pairs[p] = pairState{acked: n}
		} else {
			r.pairs[p] = pairState{}
		}
		r.mu.Unlock()
	}
}

// waitBreaker waits, after a database restart, until kvd's breaker has
// made its next connection attempt and lets requests through again (see
// breakerWindow).
func (r *crashRun) waitBreaker(cycle int, c *linearizability.Client) {
	deadline := time.Now().Add(breakerWindow)
	for {
		res := c.Get(context.Background(), keyName(0))
		var se *linearizability.StatusError
		if !errors.As(res.Err, &se) || !breakerRefusal(se.Body) {
			return
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("cycle %d: kvd's breaker still refuses requests %v after the database came back: %s", cycle, breakerWindow, se.Body)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// ttlWrite is one write of a key with ttl_secs=1; each TTL key is written
// once. Times are wall-clock readings (kvd computes expiry from its wall
// clock); ret is the kill time when the outcome is unknown.
type ttlWrite struct {
	key, value string
	call, ret  time.Time
	acked      bool
}

func (r *crashRun) ttlWorker(ctx context.Context) {
	for ctx.Err() == nil {
		n := r.seq.Add(1)
		w := &ttlWrite{key: fmt.Sprintf("ttl-%d", n), value: fmt.Sprintf("t%d", n)}
		w.call = time.Now().Round(0)
		call := r.rec.Now()
		code, b, err := r.api.call(context.Background(), http.MethodPut, "/"+r.ns+"/keys/"+w.key+"?ttl_secs=1", strings.NewReader(w.value))
		w.ret = time.Now().Round(0)
		ret := r.rec.Now()
		switch {
		case err != nil && linearizability.IsNotSent(err):
			if r.db != nil {
				r.problem("put %s?ttl_secs=1: %v: kvd, which was not restarted, refused the connection", w.key, err)
			}
			time.Sleep(2 * time.Millisecond)
			continue
		case err != nil:
			r.failed("put "+w.key+"?ttl_secs=1", call, ret, 0, "", err)
			w.ret = time.Time{} // unknown: settled at the kill
		case code == http.StatusCreated:
			w.acked = true
		case code >= 500:
			// Unknown outcome; if the write happened, it did before
			// its answer.
			r.failed("put "+w.key+"?ttl_secs=1", call, ret, code, string(b), nil)
		default:
			r.problem("put %s?ttl_secs=1: status %d: %s", w.key, code, b)
			continue
		}
		r.mu.Lock()
		r.ttl = append(r.ttl, w)
		r.mu.Unlock()
		select {
		case <-ctx.Done():
		case <-time.After(15 * time.Millisecond):
		}
	}
}

// settleTTL gives every TTL write of unknown outcome without an answer the
// kill time, or any time once no request is in flight, as its latest
// possible moment of effect.
func (r *crashRun) settleTTL(killedAt time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, w := range r.ttl {
		if w.ret.IsZero() {
			w.ret = killedAt
		}
	}
}

// verifyTTL checks the TTL keys: an acknowledged one reads back while its
// second cannot have run out, none reads back (or is listed) once its second
// surely has, and a write of unknown outcome reads back as written or not
// at all. Recent writes are read one by one, older ones by a sample and by
// one listing.
func (r *crashRun) verifyTTL(cycle int) {
	t := r.t
	r.mu.Lock()
	writes := append([]*ttlWrite(nil), r.ttl...)
	r.mu.Unlock()

	listCall := time.Now().Round(0)
	code, b, err := r.api.call(context.Background(), http.MethodGet, "/"+r.ns+"/keys?prefix=ttl-&limit=1000", nil)
	if err != nil || code != http.StatusOK {
		t.Fatalf("cycle %d: list ttl- keys: %d %v %s", cycle, code, err, b)
	}
	var list struct {
		Data []struct {
			Key string `json:"key"`
		} `json:"data"`
	}
	if err := json.Unmarshal(b, &list); err != nil {
		t.Fatal(err)
	}
	listed := map[string]bool{}
	for _, k := range list.Data {
		listed[k.Key] = true
	}
	for _, w := range writes {
		if listed[w.key] && listCall.After(w.ret.Add(time.Second+clockSlack)) {
			t.Errorf("cycle %d: %s expired by %v but is listed after the restart", cycle, w.key, listCall.Sub(w.ret.Add(time.Second)))
		}
	}

	for i, w := range writes {
		recent := listCall.Sub(w.ret) < 3*time.Second
		if !recent && r.rng.IntN(len(writes)) >= 8 && i != 0 {
			continue
		}
		call := time.Now().Round(0)
		code, b, err := r.api.call(context.Background(), http.MethodGet, "/"+r.ns+"/keys/"+w.key, nil)
		ret := time.Now().Round(0)
		if err != nil {
			t.Fatalf("cycle %d: get %s: %v", cycle, w.key, err)
		}
		switch {
		case code == http.StatusOK && string(b) != w.value:
			t.Errorf("cycle %d: %s reads %q; it was written once, with %q", cycle, w.key, b, w.value)
		case code == http.StatusOK && call.After(w.ret.Add(time.Second+clockSlack)):
			t.Errorf("cycle %d: %s expired %v before this read, yet reads back after a restart", cycle, w.key, call.Sub(w.ret.Add(time.Second)))
		case code == http.StatusNotFound && w.acked && ret.Before(w.call.Add(time.Second-clockSlack)):
			t.Errorf("cycle %d: acknowledged write of %s (ttl_secs=1) lost: 404 %v before it could expire", cycle, w.key, w.call.Add(time.Second).Sub(ret))
		case code != http.StatusOK && code != http.StatusNotFound:
			t.Errorf("cycle %d: get %s: status %d: %s", cycle, w.key, code, b)
		}
		if code == http.StatusNotFound && call.After(w.ret.Add(time.Second+clockSlack)) {
			r.ttlExpiredChecked++
		}
	}
	r.ttlAcked = 0
	for _, w := range writes {
		if w.acked {
			r.ttlAcked++
		}
	}
}

// doomedNS is a namespace deleted while a cycle runs. Its key operations
// come from one goroutine; times are on the recorder's clock.
type doomedNS struct {
	id    string
	cycle int

	mu     sync.Mutex
	writes map[string][]doomWrite // per key, in order
	ops    []doomOp

	delState         int // delNone, delUnknown or delAcked
	delCall, delRet  int64
	gone             bool
	ackedBeforeKills bool
}

const (
	delNone = iota
	delUnknown
	delAcked
)

type doomWrite struct {
	value string
	acked bool // else: unknown outcome
}

type doomOp struct {
	what      string
	call, ret int64
	status    int // 0: transport error
}

const doomKeys = 4

// newDoomed creates a namespace with a few acknowledged keys.
func (r *crashRun) newDoomed(cycle int) *doomedNS {
	d := &doomedNS{id: r.api.createNamespace(r.t, fmt.Sprintf("doomed-%d", cycle)), cycle: cycle, writes: map[string][]doomWrite{}}
	for i := range doomKeys {
		key, value := fmt.Sprintf("d%d", i), fmt.Sprintf("d%d", r.seq.Add(1))
		code, b, err := r.api.call(context.Background(), http.MethodPut, "/"+d.id+"/keys/"+key, strings.NewReader(value))
		if err != nil || code != http.StatusCreated {
			r.t.Fatalf("put %s in %s: %d %v %s", key, d.id, code, err, b)
		}
		d.writes[key] = append(d.writes[key], doomWrite{value, true})
	}
	r.doomed = append(r.doomed, d)
	return d
}

// doomWorker writes and reads the doomed namespace's keys until ctx is done.
func (r *crashRun) doomWorker(ctx context.Context, d *doomedNS) {
	var bo backoff
	for i := 0; ctx.Err() == nil; i++ {
		key := fmt.Sprintf("d%d", i%doomKeys)
		value := fmt.Sprintf("d%d", r.seq.Add(1))
		for _, method := range []string{http.MethodPut, http.MethodGet} {
			var body *strings.Reader
			if method == http.MethodPut {
				body = strings.NewReader(value)
			} else {
				body = strings.NewReader("")
			}
			call := r.rec.Now()
			code, b, err := r.api.call(context.Background(), method, "/"+d.id+"/keys/"+key, body)
			ret := r.rec.Now()
			if err != nil && linearizability.IsNotSent(err) {
				if r.db != nil {
					r.problem("%s %s in a namespace being deleted: %v: kvd, which was not restarted, refused the connection", method, key, err)
				}
				time.Sleep(2 * time.Millisecond)
				continue
			}
			refused := code == http.StatusConflict || code == http.StatusNotFound
			d.mu.Lock()
			d.ops = append(d.ops, doomOp{what: method + " " + key, call: call, ret: ret, status: code})
			if code < 500 {
				bo.reset()
			}
			if method == http.MethodPut && !refused {
				d.writes[key] = append(d.writes[key], doomWrite{value, err == nil && (code == http.StatusOK || code == http.StatusCreated)})
			}
			d.mu.Unlock()
			if err != nil || (code != http.StatusOK && code != http.StatusCreated && !refused) {
				r.failed(fmt.Sprintf("%s %s in a namespace being deleted", method, key), call, ret, code, string(b), err)
			}
			if err == nil {
				bo.wait(code)
			}
		}
	}
}

// doomDelete deletes the doomed namespace after delay, unless the crash
// comes first (kvd's) or the cycle ends.
func (r *crashRun) doomDelete(ctx context.Context, d *doomedNS, delay time.Duration) {
	select {
	case <-ctx.Done():
		return
	case <-time.After(delay):
	}
	call := r.rec.Now()
	code, b, err := r.api.call(context.Background(), http.MethodDelete, "/"+d.id, nil)
	ret := r.rec.Now()
	d.mu.Lock()
	defer d.mu.Unlock()
	switch {
	case err != nil && linearizability.IsNotSent(err):
		if r.db != nil {
			r.problem("delete namespace %s: %v: kvd, which was not restarted, refused the connection", d.id, err)
		}
	case err != nil || code >= 500:
		d.delState, d.delCall = delUnknown, call
		r.failed("delete namespace "+d.id, call, ret, code, string(b), err)
	case code == http.StatusOK:
		d.delState, d.delCall, d.delRet = delAcked, call, ret
		d.ackedBeforeKills = true
	default:
		r.problem("delete namespace %s: status %d: %s", d.id, code, b)
	}
}

// checkDoomedCycle checks, once the cycle's goroutines are done, that no
// key operation on the doomed namespace succeeded after its DELETE was
// answered with 200.
func (r *crashRun) checkDoomedCycle(d *doomedNS) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.delState != delAcked {
		return
	}
	r.doomAckedBeforeKill++
	for _, op := range d.ops {
		if op.call > d.delRet && (op.status == http.StatusOK || op.status == http.StatusCreated) {
			r.t.Errorf("cycle %d: %s answered %d after the DELETE of its namespace was answered 200", d.cycle, op.what, op.status)
		}
	}
}

// verifyDoomed checks every doomed namespace after a restart. One whose
// DELETE was acknowledged is deleting or gone, and none of its keys reads
// back; one whose DELETE never happened, or failed with the kill, is either
// intact (every acknowledged write there) or deleting or gone. Each is then
// deleted if need be and waited for until it answers 404; a namespace that
// answered 404 must never come back.
func (r *crashRun) verifyDoomed(cycle int) {
	t := r.t
	for _, d := range r.doomed {
		code, status := r.api.namespace(t, d.id)
		if d.gone {
			if code != http.StatusNotFound {
				t.Errorf("cycle %d: namespace %s, gone since cycle %d, answers %d %q", cycle, d.id, d.cycle, code, status)
			}
			continue
		}
		switch {
		case code == http.StatusNotFound && d.delState == delNone:
			t.Errorf("cycle %d: namespace %s vanished without a DELETE", cycle, d.id)
		case code == http.StatusNotFound:
		case code == http.StatusOK && status == "deleting" && d.delState == delNone:
			t.Errorf("cycle %d: namespace %s is deleting without a DELETE", cycle, d.id)
		case code == http.StatusOK && status == "deleting":
		case code == http.StatusOK && status == "provision_ok" && d.delState == delAcked:
			t.Errorf("cycle %d: namespace %s is provision_ok again after its DELETE was answered 200", cycle, d.id)
		case code == http.StatusOK && status == "provision_ok":
			r.checkDoomedKeys(cycle, d)
			c, b, err := r.api.call(context.Background(), http.MethodDelete, "/"+d.id, nil)
			if err != nil || c != http.StatusOK {
				t.Fatalf("cycle %d: delete namespace %s: %d %v %s", cycle, d.id, c, err, b)
			}
			d.delState = delAcked
		default:
			t.Errorf("cycle %d: namespace %s answers %d %q after a restart; want provision_ok, deleting or 404", cycle, d.id, code, status)
		}
		// Until it is gone, no key of it may be read.
		r.api.waitNamespace(t, d.id, func(code int, status string) bool {
			kc, kb, err := r.api.call(context.Background(), http.MethodGet, "/"+d.id+"/keys/d0", nil)
			if err == nil && kc != http.StatusConflict && kc != http.StatusNotFound {
				t.Errorf("cycle %d: key d0 of namespace %s, being deleted, answers %d %q", cycle, d.id, kc, kb)
			}
			return code == http.StatusNotFound
		}, "404 once deleted")
		d.gone = true
		r.doomedGone++
	}
}

// checkDoomedKeys checks that an intact doomed namespace holds, for each
// key, its last acknowledged value or a later one of unknown outcome.
func (r *crashRun) checkDoomedKeys(cycle int, d *doomedNS) {
	for key, ws := range d.writes {
		code, b, err := r.api.call(context.Background(), http.MethodGet, "/"+d.id+"/keys/"+key, nil)
		if err != nil {
			r.t.Fatalf("cycle %d: get %s: %v", cycle, key, err)
		}
		last := 0
		for i, w := range ws {
			if w.acked {
				last = i
			}
		}
		ok := false
		for _, w := range ws[last:] {
			ok = ok || (code == http.StatusOK && string(b) == w.value)
		}
		if !ok {
			r.t.Errorf("cycle %d: key %s of intact namespace %s answers %d %q; its last acknowledged value is %q", cycle, key, d.id, code, b, ws[last].value)
		}
	}
}
