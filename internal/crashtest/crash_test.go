package crashtest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgekv/kv/internal/linearizability"
)

// The shape of the crash workload: few keys, so that operations on each
// key interleave and every kill lands on keys with writes in flight.
const (
	crashKeys    = 16
	crashWorkers = 8
	// doomEvery: every this many cycles, a namespace is deleted while the
	// cycle runs.
	doomEvery = 5
	// clockSlack absorbs rounding between the test's and kvd's readings of
	// the same wall clock in the TTL checks.
	clockSlack = 50 * time.Millisecond
)

// TestCrashRecovery kills kvd with SIGKILL at random moments while clients
// write, delete and read over HTTP, restarts it on the same data directory,
// and checks after every restart that each acknowledged write reads back
// unless a later acknowledged write or delete superseded it; at the end the
// whole history, across every crash, must be linearizable. Along the way a
// namespace is deleted during some cycles (once a 200 answers its DELETE it
// never serves a key again and, after any restart, is deleting or gone)
// and keys are written with ttl_secs=1 (an expired key never reappears).
//
// KV_CRASH_CYCLES sets the number of kill cycles (default 50).
func TestCrashRecovery(t *testing.T) {
	cycles := envInt(t, "KV_CRASH_CYCLES", 50)
	seed := rand.Uint64()
	t.Logf("%d kill cycles, seed %d", cycles, seed)
	r := &crashRun{
		t:   t,
		rng: rand.New(rand.NewPCG(seed, 0)),
		hc:  newHTTPClient(),
		rec: linearizability.NewRecorder(),
	}
	r.k = startKVD(t, t.TempDir())
	r.api = api{hc: r.hc, base: r.k.url()}
	r.ns = r.api.createNamespace(t, "crash-main")
	start := time.Now()

	cycle := 1
	for ; cycle <= cycles && !t.Failed(); cycle++ {
		r.verify(cycle)
		var d *doomedNS
		if cycle%doomEvery == 0 {
			d = r.newDoomed(cycle)
		}
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		for w := range crashWorkers {
			wg.Add(1)
			seed := r.rng.Uint64()
			go func() { defer wg.Done(); r.keyWorker(ctx, w, seed) }()
		}
		wg.Add(1)
		go func() { defer wg.Done(); r.ttlWorker(ctx) }()
		if d != nil {
			wg.Add(2)
			go func() { defer wg.Done(); r.doomWorker(ctx, d) }()
			delay := time.Duration(r.rng.Int64N(int64(200 * time.Millisecond)))
			go func() { defer wg.Done(); r.doomDelete(ctx, d, delay) }()
		}
		time.Sleep(20*time.Millisecond + time.Duration(r.rng.Int64N(int64(280*time.Millisecond))))
		r.k.kill()
		killedAt := time.Now().Round(0)
		cancel()
		wg.Wait()
		r.hc.CloseIdleConnections()
		r.settleTTL(killedAt)
		if d != nil {
			r.checkDoomedCycle(d)
		}
		r.reportProblems(cycle)
		r.k.start()
	}
	r.verify(cycle)
	r.k.stop()

	st := r.rec.Stats()
	t.Logf("%d kill cycles in %v; after each restart checked %d keys, %d reads in all; history: %v",
		r.k.starts-1, time.Since(start).Round(time.Millisecond), crashKeys, r.checkedReads, st)
	t.Logf("acknowledged writes checked across restarts: %d on the register keys, %d TTL writes (%d checked expired), %d namespaces deleted (%d with the DELETE acknowledged before a kill)",
		st.AckedWrites, r.ttlAcked, r.ttlExpiredChecked, r.doomedGone, r.doomAckedBeforeKill)
	if st.AckedWrites == 0 {
		t.Fatal("no write was acknowledged: the workload did not run")
	}
	if t.Failed() {
		return
	}
	ops := r.rec.Operations()
	checkStart := time.Now()
	if linearizability.Check(t, ops) {
		t.Logf("porcupine: the history of %d operations across %d crashes is linearizable (checked in %v)", len(ops), r.k.starts-1, time.Since(checkStart).Round(time.Millisecond))
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

	mu       sync.Mutex
	problems []string // unexpected answers seen by the workers
	ttl      []*ttlWrite

	doomed []*doomedNS

	checkedReads        int
	ttlAcked            int
	ttlExpiredChecked   int
	doomedGone          int
	doomAckedBeforeKill int
}

func (r *crashRun) problem(format string, args ...any) {
	r.mu.Lock()
	r.problems = append(r.problems, fmt.Sprintf(format, args...))
	r.mu.Unlock()
}

func (r *crashRun) reportProblems(cycle int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, p := range r.problems {
		r.t.Errorf("cycle %d: %s", cycle, p)
	}
	r.problems = nil
}

func (r *crashRun) client(id int) *linearizability.Client {
	return &linearizability.Client{HTTP: r.hc, BaseURL: r.k.url(), Token: apiKey, Namespace: r.ns, Rec: r.rec, ID: id}
}

func keyName(i int) string { return fmt.Sprintf("k%02d", i) }

// keyWorker puts unique values, deletes and reads random keys until ctx is
// done. Requests refused at connect time (kvd is down) never reached a
// server and are not part of the history.
func (r *crashRun) keyWorker(ctx context.Context, id int, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 1))
	c := r.client(id)
	for ctx.Err() == nil {
		key := keyName(rng.IntN(crashKeys))
		var res linearizability.Result
		switch x := rng.IntN(100); {
		case x < 50:
			res = c.Put(ctx, key, fmt.Sprintf("v%d", r.seq.Add(1)))
		case x < 65:
			res = c.Delete(ctx, key)
		default:
			res = c.Get(ctx, key)
		}
		var se *linearizability.StatusError
		switch {
		case res.NotSent:
			time.Sleep(2 * time.Millisecond)
		case errors.As(res.Err, &se):
			r.problem("unexpected answer: %v", se)
		}
	}
}

// verify runs with no request in flight, right after kvd (re)started: each
// register key must read what the history allows; TTL keys and deleted
// namespaces are checked as well.
func (r *crashRun) verify(cycle int) {
	t := r.t
	ops := r.rec.Operations()
	c := r.client(crashWorkers)
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
		code, b, err := r.api.call(ctx, http.MethodPut, "/"+r.ns+"/keys/"+w.key+"?ttl_secs=1", strings.NewReader(w.value))
		w.ret = time.Now().Round(0)
		switch {
		case err != nil && linearizability.IsNotSent(err):
			time.Sleep(2 * time.Millisecond)
			continue
		case err != nil:
			w.ret = time.Time{} // unknown: settled at the kill
		case code == http.StatusCreated:
			w.acked = true
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

// settleTTL gives every TTL write of unknown outcome the kill time as its
// latest possible moment of effect.
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
			code, b, err := r.api.call(ctx, method, "/"+d.id+"/keys/"+key, body)
			ret := r.rec.Now()
			if err != nil && linearizability.IsNotSent(err) {
				time.Sleep(2 * time.Millisecond)
				continue
			}
			d.mu.Lock()
			d.ops = append(d.ops, doomOp{what: method + " " + key, call: call, ret: ret, status: code})
			if method == http.MethodPut && (err != nil || code == http.StatusOK || code == http.StatusCreated) {
				d.writes[key] = append(d.writes[key], doomWrite{value, err == nil})
			}
			d.mu.Unlock()
			if err == nil && code != http.StatusOK && code != http.StatusCreated && code != http.StatusConflict && code != http.StatusNotFound {
				r.problem("%s %s in a namespace being deleted: status %d: %s", method, key, code, b)
			}
		}
	}
}

// doomDelete deletes the doomed namespace after delay, unless kvd is
// killed first.
func (r *crashRun) doomDelete(ctx context.Context, d *doomedNS, delay time.Duration) {
	select {
	case <-ctx.Done():
		return
	case <-time.After(delay):
	}
	call := r.rec.Now()
	code, b, err := r.api.call(ctx, http.MethodDelete, "/"+d.id, nil)
	ret := r.rec.Now()
	d.mu.Lock()
	defer d.mu.Unlock()
	switch {
	case err != nil && linearizability.IsNotSent(err):
	case err != nil:
		d.delState, d.delCall = delUnknown, call
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
