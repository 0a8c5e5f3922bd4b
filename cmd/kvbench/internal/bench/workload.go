package bench

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// maxOpsPerClient bounds every request loop in count, besides its time.
const maxOpsPerClient = 50_000_000

// payload is random bytes that values are cut from at random offsets, so
// that no two values are alike (the engine compresses blocks) and making
// one costs nothing.
type payload []byte

func newPayload(size int) payload {
	p := make([]byte, 2*size+4096)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range p {
		p[i] = byte(r.Uint32())
	}
	return p
}

func (p payload) value(r *rand.Rand, size int) []byte {
	off := r.IntN(len(p) - size + 1)
	return p[off : off+size]
}

// run is one target's state during a run.
type run struct {
	cfg *Config
	s   *server
	pg  *pgEnv // the PostgreSQL server of kvd on PostgreSQL; nil for other targets
	rep *Report

	small, big payload
	mainNS     string // Keys keys "k/%08d" with ValueSize values
	listNS     string // ListKeys keys, see listKey
	bigNS      string // BigKeys keys "b/%04d" with 1 MiB values
	bigFilled  bool
	newSeq     atomic.Int64 // put-new's next key
	batchSeq   atomic.Int64 // batch-put-100's next batch
	listWidth  int          // digits of a list key's index
	// etags holds, for each client of put-if-match, the ETags of its
	// keys from their last write.
	etags [][]string
	// incrKey and incrAcked are the key of the running incr-hot phase
	// and the incrs acknowledged in it.
	incrKey   string
	incrAcked atomic.Int64
}

// ifMatchKeys is the number of keys each put-if-match client owns.
const ifMatchKeys = 8

// batchOps is the number of puts in one batch of batch-put-100.
const batchOps = 100

func ifMatchKey(client, j int) string { return fmt.Sprintf("im/%02d/%d", client, j) }

func (r *run) keyURL(ns, key string) string {
	return r.s.base + "/v2/storage/kvs/" + ns + "/keys/" + key
}

func mainKey(i int) string { return fmt.Sprintf("k/%08d", i) }

// listKey names list key i: "l/" and i in listWidth digits, so that the
// keys sharing all but the last three digits are a run of 1000.
func (r *run) listKey(i int) string {
	s := strconv.Itoa(i)
	return "l/" + strings.Repeat("0", r.listWidth-len(s)) + s
}

// openTarget starts target name, fills its main namespace, lets it
// settle and runs the discarded warm-up phase; the caller measures it
// (measure) and closes it.
func openTarget(ctx context.Context, cfg *Config, dir, name string, pg *pgEnv, rep *Report) (_ *run, err error) {
	maxClients := cfg.maxClients()
	cfg.logf("%s: starting", name)
	s, err := startServer(ctx, cfg, dir, name, nil, maxClients)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			s.close()
		}
	}()
	r := &run{cfg: cfg, s: s, rep: rep, small: newPayload(cfg.ValueSize), listWidth: max(len(strconv.Itoa(cfg.ListKeys-1)), 4)}
	if name == TargetKVDPostgres {
		r.pg = pg
	}
	rep.PeakRSSResettable = rep.PeakRSSResettable || resetPeakRSS(s.proc.pid)
	if cfg.selected(GetHitSlowloris) {
		if err := checkServerFDs(name, s.proc.pid, cfg.SlowConns+maxClients+fdReserve, slowlorisUse, "--slow-conns"); err != nil {
			return nil, err
		}
	}

	if r.mainNS, err = s.createNamespace(ctx, "bench-main"); err != nil {
		return nil, err
	}
	fr, err := r.fill(ctx, "main", cfg.Keys, cfg.FillClients, func(w *worker, i int) error {
		return w.put(r.keyURL(r.mainNS, mainKey(i)), r.small.value(w.rng, cfg.ValueSize), 0)
	})
	if err != nil {
		return nil, err
	}
	r.settle(ctx, &fr)
	rep.Fills = append(rep.Fills, fr)
	r.discardedPhase(ctx)
	return r, nil
}

// serves reports whether the target serves workload wl.
func (r *run) serves(wl string) bool {
	return r.s.name != TargetBaseline || !slices.Contains(kvdOnly, wl)
}

// measure prepares what workload wl needs (once) and measures it at n
// clients.
func (r *run) measure(ctx context.Context, wl string, n int) (Result, error) {
	if err := r.prepare(ctx, wl, r.rep); err != nil {
		return Result{}, fmt.Errorf("%s: prepare: %w", wl, err)
	}
	op := r.op(wl)
	if wl == GetHitSlowloris {
		res, err := r.slowPhase(ctx, wl, n, op)
		if err != nil {
			return Result{}, fmt.Errorf("%s at %d clients: %w", wl, n, err)
		}
		return res, nil
	}
	if wl == IncrHot {
		r.incrKey = fmt.Sprintf("hot/%d/%d", n, time.Now().UnixNano())
		r.incrAcked.Store(0)
	}
	res := r.phase(ctx, wl, n, op, nil, r.probes(ctx, wl, n)...)
	switch wl {
	case IncrHot:
		r.checkIncr(ctx, &res)
	case BatchPut100:
		res.KeysPerOp = batchOps
	}
	return res, nil
}

// close stops the target's server, noting its peak RSS over the run
// where it could not be taken per phase.
func (r *run) close() error {
	if rss, err := procStatus(r.s.proc.pid, "VmHWM"); err == nil && !r.rep.PeakRSSResettable {
		r.rep.Notes = append(r.rep.Notes, fmt.Sprintf("%s: peak RSS over the whole run %d MiB (VmHWM could not be reset per phase)", r.s.name, rss>>20))
	}
	if err := r.s.close(); err != nil {
		return fmt.Errorf("%s: stop: %w", r.s.name, err)
	}
	return nil
}

// prepare creates and fills what workload wl reads.
func (r *run) prepare(ctx context.Context, wl string, rep *Report) error {
	var err error
	switch wl {
	case List1000:
		if r.listNS != "" {
			return nil
		}
		if r.listNS, err = r.s.createNamespace(ctx, "bench-list"); err != nil {
			return err
		}
		fr, err := r.fill(ctx, "list", r.cfg.ListKeys, r.cfg.FillClients, func(w *worker, i int) error {
			return w.put(r.keyURL(r.listNS, r.listKey(i)), r.small.value(w.rng, r.cfg.ValueSize), 0)
		})
		if err == nil {
			r.settle(ctx, &fr)
		}
		rep.Fills = append(rep.Fills, fr)
		return err
	case PutIfMatch:
		if r.etags != nil {
			return nil
		}
		n := slices.Max(r.cfg.clientsFor(wl))
		r.cfg.logf("%s: writing %d keys of %d put-if-match clients", r.s.name, n*ifMatchKeys, n)
		etags := make([][]string, n)
		w := r.newWorker(0)
		for c := range etags {
			etags[c] = make([]string, ifMatchKeys)
			for j := range etags[c] {
				etag, err := w.request(http.MethodPut, r.keyURL(r.mainNS, ifMatchKey(c, j)), r.small.value(w.rng, r.cfg.ValueSize), "", http.StatusOK, http.StatusCreated, -1, nil)
				if err != nil {
					return err
				}
				if etag == "" {
					return errors.New("PUT answered without an ETag")
				}
				etags[c][j] = etag
			}
		}
		r.etags = etags
	case Put1MiB, Get1MiB:
		if r.bigNS == "" {
			r.big = newPayload(maxValue)
			if r.bigNS, err = r.s.createNamespace(ctx, "bench-big"); err != nil {
				return err
			}
		}
		if wl == Get1MiB && !r.bigFilled {
			fr, err := r.fill(ctx, "big", r.cfg.BigKeys, min(r.cfg.FillClients, 8), func(w *worker, i int) error {
				return w.put(r.keyURL(r.bigNS, fmt.Sprintf("b/%04d", i)), r.big.value(w.rng, maxValue), 0)
			})
			if err == nil {
				r.settle(ctx, &fr)
			}
			rep.Fills = append(rep.Fills, fr)
			r.bigFilled = err == nil
			return err
		}
	}
	return nil
}

// worker is one client: a goroutine issuing one request at a time.
type worker struct {
	id   int
	c    *http.Client
	auth string
	rng  *rand.Rand
	buf  []byte // response bodies that are read, not discarded
	body []byte // request bodies built per request (batches)
}

func (r *run) newWorker(id int) *worker {
	return &worker{id: id, c: r.s.client, auth: r.s.auth, rng: rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), uint64(id)))}
}

// do sends one request and reads the whole response. It fails unless the
// status is want (or want2, when non-zero) and, when wantLen >= 0, the
// body has that length. With into, the body is decoded as JSON into it.
func (w *worker) do(method, url string, body []byte, want, want2 int, wantLen int64, into any) error {
	_, err := w.request(method, url, body, "", want, want2, wantLen, into)
	return err
}

// request is do with an If-Match header (unless ifMatch is empty); it
// returns the response's ETag, with the response's error.
func (w *worker) request(method, url string, body []byte, ifMatch string, want, want2 int, wantLen int64, into any) (string, error) {
	var rd io.Reader = http.NoBody
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		return "", err
	}
	req.Header.Set("Authorization", w.auth)
	if body != nil {
		ct := "application/octet-stream"
		if strings.HasSuffix(url, "/batch") {
			ct = "application/json"
		}
		req.Header.Set("Content-Type", ct)
	}
	if ifMatch != "" {
		req.Header.Set("If-Match", ifMatch)
	}
	resp, err := w.c.Do(req)
	if err != nil {
		return "", err
	}
	etag := resp.Header.Get("ETag")
	var n int64
	if into != nil {
		bb := bytes.NewBuffer(w.buf[:0])
		n, err = bb.ReadFrom(resp.Body)
		w.buf = bb.Bytes()
		if err == nil && (resp.StatusCode == want || resp.StatusCode == want2) {
			err = json.Unmarshal(w.buf, into)
		}
	} else {
		n, err = io.Copy(io.Discard, resp.Body)
	}
	resp.Body.Close()
	if err != nil {
		return etag, err
	}
	if resp.StatusCode != want && (want2 == 0 || resp.StatusCode != want2) {
		return etag, &statusError{fmt.Sprintf("%s %s: status %d", method, req.URL.Path, resp.StatusCode), resp.StatusCode}
	}
	if wantLen >= 0 && n != wantLen {
		return etag, fmt.Errorf("%s %s: %d bytes, want %d", method, req.URL.Path, n, wantLen)
	}
	return etag, nil
}

// statusError is a response with a status the request did not want.
type statusError struct {
	msg    string
	status int
}

func (e *statusError) Error() string { return e.msg }

// put writes a value; want is 201 for a key known to be new, 0 for either
// 200 or 201.
func (w *worker) put(url string, v []byte, want int) error {
	if want != 0 {
		return w.do(http.MethodPut, url, v, want, 0, -1, nil)
	}
	return w.do(http.MethodPut, url, v, http.StatusOK, http.StatusCreated, -1, nil)
}

// opFunc performs one operation of a workload.
type opFunc func(w *worker, n uint64) error

// listPage is the part of a listing the load generator checks.
type listPage struct {
	Data []struct {
		Key string `json:"key"`
	} `json:"data"`
}

// op returns workload wl's operation.
func (r *run) op(wl string) opFunc {
	size := r.cfg.ValueSize
	switch wl {
	case GetHit, GetHitSlowloris:
		return func(w *worker, _ uint64) error {
			return w.do(http.MethodGet, r.keyURL(r.mainNS, mainKey(w.rng.IntN(r.cfg.Keys))), nil, http.StatusOK, 0, int64(size), nil)
		}
	case GetMiss:
		return func(w *worker, _ uint64) error {
			return w.do(http.MethodGet, r.keyURL(r.mainNS, "miss/"+strconv.FormatUint(w.rng.Uint64(), 36)), nil, http.StatusNotFound, 0, -1, nil)
		}
	case PutOverwrite:
		return func(w *worker, _ uint64) error {
			return w.put(r.keyURL(r.mainNS, mainKey(w.rng.IntN(r.cfg.Keys))), r.small.value(w.rng, size), http.StatusOK)
		}
	case Mix9010:
		return func(w *worker, _ uint64) error {
			k := r.keyURL(r.mainNS, mainKey(w.rng.IntN(r.cfg.Keys)))
			if w.rng.IntN(10) == 0 {
				return w.put(k, r.small.value(w.rng, size), http.StatusOK)
			}
			return w.do(http.MethodGet, k, nil, http.StatusOK, 0, int64(size), nil)
		}
	case PutNew:
		return func(w *worker, _ uint64) error {
			k := "n/" + strconv.FormatInt(r.newSeq.Add(1), 10)
			return w.put(r.keyURL(r.mainNS, k), r.small.value(w.rng, size), http.StatusCreated)
		}
	case List1000:
		groups := r.cfg.ListKeys / 1000
		return func(w *worker, n uint64) error {
			prefix, want := "l/", r.cfg.ListKeys
			if groups > 0 {
				prefix, want = r.listKey(w.rng.IntN(groups) * 1000)[:2+r.listWidth-3], 1000
			}
			url := r.s.base + "/v2/storage/kvs/" + r.listNS + "/keys?limit=1000&prefix=" + prefix
			// Decoding a page costs the client as much as serving it: check
			// one page in 16.
			if n%16 != 0 {
				return w.do(http.MethodGet, url, nil, http.StatusOK, 0, -1, nil)
			}
			var page listPage
			if err := w.do(http.MethodGet, url, nil, http.StatusOK, 0, -1, &page); err != nil {
				return err
			}
			if len(page.Data) != want || !strings.HasPrefix(page.Data[0].Key, prefix) {
				return fmt.Errorf("list prefix %s: %d keys, want %d", prefix, len(page.Data), want)
			}
			return nil
		}
	case PutIfMatch:
		return func(w *worker, _ uint64) error {
			etags := r.etags[w.id]
			j := w.rng.IntN(len(etags))
			etag, err := w.request(http.MethodPut, r.keyURL(r.mainNS, ifMatchKey(w.id, j)), r.small.value(w.rng, size), etags[j], http.StatusOK, 0, -1, nil)
			if etag != "" {
				// A 412 carries the current ETag: the next write uses it.
				etags[j] = etag
			}
			if err == nil && etag == "" {
				return errors.New("PUT answered without an ETag")
			}
			return err
		}
	case BatchPut100:
		return func(w *worker, _ uint64) error {
			b := r.batchSeq.Add(1)
			body := append(w.body[:0], `{"ops":[`...)
			for j := range batchOps {
				if j > 0 {
					body = append(body, ',')
				}
				body = fmt.Appendf(body, `{"op":"put","key":"bp/%d/%02d","value_base64":"`, b, j)
				body = base64.StdEncoding.AppendEncode(body, r.small.value(w.rng, size))
				body = append(body, `"}`...)
			}
			body = append(body, "]}"...)
			w.body = body
			var res batchResponse
			if err := w.do(http.MethodPost, r.s.base+"/v2/storage/kvs/"+r.mainNS+"/batch", body, http.StatusOK, 0, -1, &res); err != nil {
				return err
			}
			if !res.Data.Committed || len(res.Data.Results) != batchOps {
				return fmt.Errorf("batch %d: committed %v, %d results", b, res.Data.Committed, len(res.Data.Results))
			}
			return nil
		}
	case IncrHot:
		return func(w *worker, _ uint64) error {
			body := fmt.Appendf(w.body[:0], `{"ops":[{"op":"incr","key":%q}]}`, r.incrKey)
			w.body = body
			var res batchResponse
			if err := w.do(http.MethodPost, r.s.base+"/v2/storage/kvs/"+r.mainNS+"/batch", body, http.StatusOK, 0, -1, &res); err != nil {
				return err
			}
			if !res.Data.Committed || len(res.Data.Results) != 1 {
				return fmt.Errorf("incr: committed %v, %d results", res.Data.Committed, len(res.Data.Results))
			}
			r.incrAcked.Add(1)
			return nil
		}
	case Put1MiB:
		return func(w *worker, _ uint64) error {
			k := r.keyURL(r.bigNS, fmt.Sprintf("b/%04d", w.rng.IntN(r.cfg.BigKeys)))
			return w.put(k, r.big.value(w.rng, maxValue), 0)
		}
	case Get1MiB:
		return func(w *worker, _ uint64) error {
			k := r.keyURL(r.bigNS, fmt.Sprintf("b/%04d", w.rng.IntN(r.cfg.BigKeys)))
			return w.do(http.MethodGet, k, nil, http.StatusOK, 0, maxValue, nil)
		}
	}
	panic("bench: no workload " + wl)
}

// batchResponse is the part of a batch's answer the load generator
// checks.
type batchResponse struct {
	Data struct {
		Committed bool              `json:"committed"`
		Results   []json.RawMessage `json:"results"`
	} `json:"data"`
}

// checkIncr reads the counter of the incr-hot phase just run and records
// in res whether it equals the incrs acknowledged. An incr whose answer
// was lost (an error of the load generator) may have counted or not: the
// counter must then lie between the acknowledged incrs and those plus the
// errors.
func (r *run) checkIncr(ctx context.Context, res *Result) {
	acked, unsure := r.incrAcked.Load(), res.Errors
	got, err := r.readCounter(ctx, r.incrKey)
	res.CheckFailed = true
	switch {
	case err != nil:
		res.Check = fmt.Sprintf("counter not read: %v", err)
	case got < acked || got > acked+unsure:
		res.Check = fmt.Sprintf("counter %d, but %d incrs acknowledged (%d unsure)", got, acked, unsure)
	default:
		res.Check = fmt.Sprintf("counter %d = %d incrs acknowledged", got, acked)
		res.CheckFailed = false
	}
	if res.CheckFailed {
		res.Errors++
		if res.FirstError == "" {
			res.FirstError = res.Check
		}
	}
	r.cfg.logf("%s %s c=%d: %s", r.s.name, IncrHot, res.Clients, res.Check)
}

// readCounter returns the integer stored at key of the main namespace, 0
// if there is none.
func (r *run) readCounter(ctx context.Context, key string) (int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.keyURL(r.mainNS, key), nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", r.s.auth)
	resp, err := r.s.client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64))
	switch {
	case err != nil:
		return 0, err
	case resp.StatusCode == http.StatusNotFound:
		return 0, nil
	case resp.StatusCode != http.StatusOK:
		return 0, fmt.Errorf("GET %s: status %d", key, resp.StatusCode)
	}
	return strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
}

// fill writes keys 0..n-1 with clients concurrent writers; it fails at
// the first failed write.
func (r *run) fill(ctx context.Context, what string, n, clients int, put func(w *worker, i int) error) (Fill, error) {
	r.cfg.logf("%s: filling %s namespace: %d keys, %d clients", r.s.name, what, n, clients)
	start := time.Now()
	var next atomic.Int64
	var wg sync.WaitGroup
	var once sync.Once
	var firstErr error
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for c := range min(clients, n) {
		w := r.newWorker(c)
		wg.Go(func() {
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := put(w, i); err != nil {
					once.Do(func() { firstErr = fmt.Errorf("fill %s key %d: %w", what, i, err); cancel() })
					return
				}
			}
		})
	}
	wg.Wait()
	el := time.Since(start)
	f := Fill{Target: r.s.name, Namespace: what, Keys: n, Clients: clients, Seconds: el.Seconds(), KeysPerSec: float64(n) / el.Seconds()}
	r.cfg.logf("%s: filled %s namespace in %.1fs (%.0f keys/s)", r.s.name, what, f.Seconds, f.KeysPerSec)
	if firstErr == nil {
		firstErr = ctx.Err()
	}
	return f, firstErr
}

// slowPhase runs phase while an attacker pool holds cfg.SlowConns slow
// connections open to the server: the pool opens all of them before the
// warm-up starts and is torn down after the measured window.
func (r *run) slowPhase(ctx context.Context, wl string, clients int, op opFunc) (Result, error) {
	cfg := r.cfg
	u, err := url.Parse(r.s.base)
	if err != nil {
		return Result{}, err
	}
	cfg.logf("%s: slowloris: opening %d slow connections (idle, trickled header, trickled 1 MiB PUT body)", r.s.name, cfg.SlowConns)
	pool := startSlowPool(slowPoolConfig{
		Addr:       u.Host,
		Conns:      cfg.SlowConns,
		Interval:   cfg.SlowInterval,
		HeaderPath: "/v2/storage/kvs/" + r.mainNS + "/keys/" + mainKey(0),
		BodyPath:   func(i int) string { return "/v2/storage/kvs/" + r.mainNS + "/keys/slowloris/" + strconv.Itoa(i) },
		Auth:       r.s.auth,
	})
	if err := pool.waitReady(ctx, 60*time.Second); err != nil {
		pool.Stop()
		return Result{}, err
	}
	cfg.logf("%s: slowloris: %d connections open after %.2fs", r.s.name, pool.Open(), time.Since(pool.start).Seconds())
	res := r.phase(ctx, wl, clients, op, pool, r.probes(ctx, wl, clients)...)
	st := pool.Stop()
	st.MinOpen, st.AvgOpen, st.Reconnects = res.Slowloris.MinOpen, res.Slowloris.AvgOpen, res.Slowloris.Reconnects
	res.Slowloris = &st
	return res, nil
}

// phase drives workload wl with clients concurrent clients against r's
// server: see measure. With pool, its open connections and reconnects are
// sampled over the measured window; probes watch the measured window.
func (r *run) phase(ctx context.Context, wl string, clients int, op opFunc, pool *slowPool, probes ...probe) Result {
	l := r.load()
	l.newOp = func(c int) func(uint64) error {
		w := r.newWorker(c)
		return func(n uint64) error { return op(w, n) }
	}
	return measure(ctx, r.cfg, l, wl, clients, pool, probes)
}

// load returns what measure watches of r's server; newOp is the caller's.
func (r *run) load() load {
	pid := r.s.proc.pid
	l := load{target: r.s.name, rssPID: pid, serverCPU: func() time.Duration { return procCPUOrZero(pid) }}
	if r.s.name == TargetKVDPostgres && r.pg != nil {
		l.dbCPU = r.pg.cpu
	}
	return l
}

// load is what measure drives and watches: the clients' operations, and
// the processes whose CPU (and peak RSS) the result reports.
type load struct {
	target string
	// rssPID is the process whose peak RSS the result reports; 0: none.
	rssPID int
	// serverCPU is the CPU time the target's server has used so far.
	serverCPU func() time.Duration
	// dbCPU is the CPU time PostgreSQL's processes have used so far, for a
	// target on PostgreSQL when they are known; nil otherwise.
	dbCPU func() time.Duration
	// newOp returns client c's operation; n counts its operations from 0.
	newOp func(c int) func(n uint64) error
}

// probe watches the measured window of a phase: start is called as the
// window opens (probeLead before it), with the time to its end, finish
// once it has closed and every client has stopped.
const probeLead = 5 * time.Millisecond

type probe interface {
	start(ctx context.Context, window time.Duration)
	finish(res *Result)
}

// measure drives workload wl with clients concurrent clients: a warm-up,
// then Duration measured. Operations that start within the measured window
// count; their latency runs from sending the request to the end of the
// response body. With pool, its open connections and reconnects are
// sampled over the measured window.
func measure(ctx context.Context, cfg *Config, l load, wl string, clients int, pool *slowPool, probes []probe) Result {
	resettable := l.rssPID > 0 && resetPeakRSS(l.rssPID)
	start := time.Now()
	measureFrom := start.Add(cfg.Warmup)
	stopAt := measureFrom.Add(cfg.Duration)
	// The window ends at stopAt, or later if no operation started in it
	// has ended by then (every client was held up, a stall of the server
	// longer than the window): it lasts until the first one has, so that
	// the phase has a figure. Clients start operations until it ends.
	var end atomic.Int64
	end.Store(stopAt.UnixNano())

	var watch *openWatch
	if pool != nil {
		watch = pool.watch(ctx, measureFrom, stopAt)
	}
	hists := make([]Histogram, clients)
	var ops, errs atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	for c := range clients {
		op := l.newOp(c)
		h := &hists[c]
		wg.Go(func() {
			for n := uint64(0); n < maxOpsPerClient && ctx.Err() == nil; n++ {
				t0 := time.Now()
				if t0.UnixNano() >= end.Load() {
					return
				}
				err := op(n)
				if t0.Before(measureFrom) {
					continue
				}
				if err != nil {
					errs.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				h.Record(time.Since(t0))
				ops.Add(1)
			}
		})
	}
	dbCPU := l.dbCPU
	if dbCPU == nil {
		dbCPU = func() time.Duration { return 0 }
	}
	if len(probes) > 0 {
		// A moment early, so that a probe's counters are reset before the
		// first operation of the window starts.
		sleepUntil(ctx, measureFrom.Add(-probeLead))
		for _, p := range probes {
			p.start(ctx, time.Until(stopAt))
		}
	}
	sleepUntil(ctx, measureFrom)
	c0, s0, d0, h0 := selfCPU(), l.serverCPU(), dbCPU(), hostBusy()
	t0 := time.Now()
	sleepUntil(ctx, stopAt)
	for ops.Load()+errs.Load() == 0 && ctx.Err() == nil {
		end.Store(time.Now().Add(time.Second).UnixNano())
		sleepUntil(ctx, time.Now().Add(10*time.Millisecond))
	}
	end.Store(time.Now().UnixNano())
	c1, s1, d1, h1 := selfCPU(), l.serverCPU(), dbCPU(), hostBusy()
	t1 := time.Now()
	elapsed := t1.Sub(t0)
	wg.Wait()

	var h Histogram
	for i := range hists {
		h.Merge(&hists[i])
	}
	res := Result{
		Target: l.target, Workload: wl, Clients: clients,
		Seconds: elapsed.Seconds(), Ops: int64(h.Count()), Errors: errs.Load(),
		P50us: us(h.Quantile(0.50)), P99us: us(h.Quantile(0.99)), P999us: us(h.Quantile(0.999)),
		MeanUs: us(h.Mean()), MaxUs: us(h.Max()),
		ClientCPU: (c1 - c0).Seconds() / elapsed.Seconds(),
		ServerCPU: (s1 - s0).Seconds() / elapsed.Seconds(),
		from:      t0, to: t1,
	}
	if l.dbCPU != nil {
		res.DBCPU = (d1 - d0).Seconds() / elapsed.Seconds()
	}
	if h0 >= 0 && h1 >= h0 {
		// The host's busy time less what the load generator, the server
		// and the database used: other processes on the machine.
		res.OtherCPU = max(0, (h1-h0).Seconds()/elapsed.Seconds()-res.ClientCPU-res.ServerCPU-res.DBCPU)
	}
	res.OpsPerSec = float64(res.Ops) / res.Seconds
	if v, ok := firstErr.Load().(string); ok {
		res.FirstError = v
	}
	if l.rssPID > 0 {
		if hwm, err := procStatus(l.rssPID, "VmHWM"); err == nil {
			res.PeakRSS = hwm
			res.PeakRSSPhase = resettable
		}
	}
	if watch != nil {
		st := &SlowStats{}
		st.MinOpen, st.AvgOpen, st.Reconnects = watch.wait()
		res.Slowloris = st
	}
	for _, p := range probes {
		p.finish(&res)
	}
	return res
}

func procCPUOrZero(pid int) time.Duration {
	d, _ := procCPU(pid)
	return d
}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

func sleepUntil(ctx context.Context, t time.Time) {
	d := time.Until(t)
	if d <= 0 {
		return
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ctx.Done():
	case <-timer.C:
	}
}

// discardedPhase drives GETs of the filled keys at the most clients of the
// run and keeps its figures out of the results, so the first measured phase
// does not pay for what the fill left behind (cold caches, the fill's
// flushes and compactions, connections not yet open) and a phase's figure
// does not depend on its place in the run. The report lists the figures
// apart (Report.Discarded), to compare with the measured phase.
func (r *run) discardedPhase(ctx context.Context) {
	n := slices.Max(r.cfg.Clients)
	r.cfg.logf("%s: discarded warm-up phase: %s at %d clients", r.s.name, GetHit, n)
	res := r.phase(ctx, GetHit, n, r.op(GetHit), nil)
	if r.rep != nil {
		r.rep.Discarded = append(r.rep.Discarded, res)
	}
	r.cfg.logf("%s (discarded)", res.line())
}

// settle makes the server's state after fill f steady before anything is
// measured: on PostgreSQL it vacuums and analyzes kvd's database and
// checkpoints (autovacuum would otherwise start on the fill's rows in the
// middle of a measurement), then it waits for the server, and PostgreSQL's
// processes when known, to go quiet (the engine's flushes and
// compactions), up to Settle.
func (r *run) settle(ctx context.Context, f *Fill) {
	if r.pg != nil {
		start := time.Now()
		if err := r.pg.vacuum(r.pg.kvdURL, ""); err != nil {
			r.cfg.logf("%s: %v", r.s.name, err)
		} else {
			r.cfg.logf("%s: VACUUM (ANALYZE) and CHECKPOINT after the fill: %.1fs", r.s.name, time.Since(start).Seconds())
		}
	}
	if r.cfg.Settle <= 0 {
		return
	}
	pid := r.s.proc.pid
	cpu := func() time.Duration { return procCPUOrZero(pid) }
	if r.pg != nil && r.pg.knowsCPU() {
		cpu = func() time.Duration { return procCPUOrZero(pid) + r.pg.cpu() }
	}
	st := waitQuiet(ctx, r.cfg.Log, r.s.name, cpu, r.cfg.Settle)
	f.Settle = &st
}

// probes returns the profiler's probes of a measured phase of workload wl
// at clients clients, when --profile is set.
func (r *run) probes(ctx context.Context, wl string, clients int) []probe {
	if r.cfg.ProfileDir == "" {
		return nil
	}
	return newProbes(ctx, r.cfg, r.pg, r.s, r.s.name, wl, clients)
}
