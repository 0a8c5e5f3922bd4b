package bench

import (
	"context"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// slowServer is a loopback HTTP server that counts its connections, the
// bytes it has read and the requests that reached its handler.
type slowServer struct {
	srv       *http.Server
	addr      string
	open      atomic.Int64 // connections accepted and not yet closed
	bytesRead atomic.Int64
	puts      atomic.Int64 // PUTs with the pool's token that reached the handler
	others    atomic.Int64 // any other request that reached the handler
	badPaths  atomic.Int64 // PUTs to another path than the pool's
	done      chan struct{}
}

type countingListener struct {
	net.Listener
	s *slowServer
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &countingConn{Conn: c, s: l.s}, nil
}

type countingConn struct {
	net.Conn
	s    *slowServer
	once sync.Once
}

func (c *countingConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.s.bytesRead.Add(int64(n))
	return n, err
}

func (c *countingConn) Close() error {
	c.once.Do(func() { c.s.open.Add(-1) })
	return c.Conn.Close()
}

// startSlowServer serves on loopback with the given header and request
// read timeouts (0: none). Its PUT handler reads the body like the
// baseline's does.
func startSlowServer(t *testing.T, readHeader, read time.Duration) *slowServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &slowServer{addr: ln.Addr().String(), done: make(chan struct{})}
	s.srv = &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodPut && r.Header.Get("Authorization") == "Bearer pool-token" {
				s.puts.Add(1)
				if !strings.HasPrefix(r.URL.Path, "/v2/storage/kvs/ns/keys/slowloris/") {
					s.badPaths.Add(1)
				}
			} else {
				s.others.Add(1)
			}
			// Read the body until it ends or the read fails, as the
			// baseline's PUT does.
			buf := make([]byte, 4096)
			for {
				if _, err := r.Body.Read(buf); err != nil {
					http.Error(w, "read body", http.StatusBadRequest)
					return
				}
			}
		}),
		ReadHeaderTimeout: readHeader,
		ReadTimeout:       read,
		ConnState: func(c net.Conn, st http.ConnState) {
			if st == http.StateNew {
				s.open.Add(1)
			}
		},
	}
	go func() {
		defer close(s.done)
		s.srv.Serve(countingListener{Listener: ln, s: s})
	}()
	t.Cleanup(func() {
		s.srv.Close()
		<-s.done
	})
	return s
}

func testPoolConfig(addr string, n int, interval time.Duration) slowPoolConfig {
	return slowPoolConfig{
		Addr:       addr,
		Conns:      n,
		Interval:   interval,
		HeaderPath: "/v2/storage/kvs/ns/keys/k",
		BodyPath:   func(i int) string { return "/v2/storage/kvs/ns/keys/slowloris/" + strconv.Itoa(i) },
		Auth:       "Bearer pool-token",
		MaxDials:   8,
	}
}

// eventually polls cond until it holds, failing the test after 10s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("still not the case after 10s: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestSlowPoolHolds checks against a server without timeouts that the pool
// opens exactly N connections, keeps trickling on them without
// reconnecting, brings its body tricklers' complete PUT headers to the
// handler and no other request, and leaves nothing behind when stopped.
func TestSlowPoolHolds(t *testing.T) {
	s := startSlowServer(t, 0, 0)
	goroutines := runtime.NumGoroutine()
	const n = 30
	p := startSlowPool(testPoolConfig(s.addr, n, 20*time.Millisecond))
	if err := p.waitReady(context.Background(), 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if got := p.Open(); got != n {
		t.Fatalf("pool ready with %d connections open, want %d", got, n)
	}
	eventually(t, "the server has accepted n connections", func() bool { return s.open.Load() == n })
	eventually(t, "every body trickler's PUT reached the handler", func() bool { return s.puts.Load() == n/slowKinds })
	// The trickled bytes keep arriving.
	b0 := s.bytesRead.Load()
	eventually(t, "more bytes arrive", func() bool { return s.bytesRead.Load() > b0+n })
	if got := s.open.Load(); got != n {
		t.Errorf("server has %d connections, want %d", got, n)
	}
	if got := s.others.Load(); got != 0 {
		t.Errorf("%d requests other than the body tricklers' PUTs reached the handler; idle and header tricklers must never complete one", got)
	}
	if got := s.badPaths.Load(); got != 0 {
		t.Errorf("%d PUTs to an unexpected path", got)
	}

	w := p.watch(context.Background(), time.Now(), time.Now().Add(50*time.Millisecond))
	minOpen, avgOpen, recon := w.wait()
	if minOpen != n || avgOpen != n || recon != 0 {
		t.Errorf("watch: min %d avg %v reconnects %d, want %d %d 0", minOpen, avgOpen, recon, n, n)
	}

	st := p.Stop()
	if st.ReconnectsTotal != 0 || st.DialErrors != 0 || len(st.Responses) != 0 {
		t.Errorf("a server that never closes: %d reconnects, %d dial errors, answers %v; want none", st.ReconnectsTotal, st.DialErrors, st.Responses)
	}
	if st.Conns != n || st.Mix["idle"]+st.Mix["header"]+st.Mix["body"] != n || st.Mix["body"] != n/slowKinds {
		t.Errorf("stats: %d conns, mix %v", st.Conns, st.Mix)
	}
	checkTornDown(t, p, s, goroutines)
}

// TestSlowPoolReconnects checks against a server that times slow clients
// out that the pool replaces every kind of connection the server ends,
// counts it, and records the server's answers to the body tricklers.
func TestSlowPoolReconnects(t *testing.T) {
	s := startSlowServer(t, 150*time.Millisecond, 300*time.Millisecond)
	goroutines := runtime.NumGoroutine()
	const n = 30
	p := startSlowPool(testPoolConfig(s.addr, n, 20*time.Millisecond))
	if err := p.waitReady(context.Background(), 10*time.Second); err != nil {
		t.Fatal(err)
	}
	// Every connection has been ended by the server at least once.
	eventually(t, "each kind reconnects", func() bool {
		for k := range slowKinds {
			if p.reconnects[k].Load() < int64(n/slowKinds) {
				return false
			}
		}
		return true
	})
	// The pool keeps its n slots: never more than n open, here or at the
	// server.
	if got := p.Open(); got > n {
		t.Errorf("%d connections open, want at most %d", got, n)
	}
	st := p.Stop()
	if st.ReconnectsTotal < n {
		t.Errorf("%d reconnects in all, want at least %d", st.ReconnectsTotal, n)
	}
	if sum := st.ReconnectsByKind["idle"] + st.ReconnectsByKind["header"] + st.ReconnectsByKind["body"]; sum != st.ReconnectsTotal {
		t.Errorf("reconnects by kind %v do not add up to %d", st.ReconnectsByKind, st.ReconnectsTotal)
	}
	// The server's ReadTimeout ends the body tricklers' PUTs inside the
	// handler, which answers 400; idle and header tricklers are closed
	// without an answer.
	if st.Responses["400"] == 0 {
		t.Errorf("answers %v, want some 400s to the body tricklers", st.Responses)
	}
	if s.others.Load() != 0 {
		t.Errorf("%d requests other than the body tricklers' PUTs reached the handler", s.others.Load())
	}
	checkTornDown(t, p, s, goroutines)
}

// checkTornDown checks that a stopped pool holds no connection and left no
// goroutine running.
func checkTornDown(t *testing.T, p *slowPool, s *slowServer, goroutines int) {
	t.Helper()
	if got := p.Open(); got != 0 {
		t.Errorf("%d connections open after Stop", got)
	}
	eventually(t, "the server sees every connection closed", func() bool { return s.open.Load() == 0 })
	eventually(t, "the pool's goroutines end", func() bool { return runtime.NumGoroutine() <= goroutines })
	// Stop is idempotent.
	p.Stop()
}

func TestSlowPoolDialErrors(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	p := startSlowPool(testPoolConfig(addr, 3, 20*time.Millisecond))
	err = p.waitReady(context.Background(), 300*time.Millisecond)
	st := p.Stop()
	if err == nil || !strings.Contains(err.Error(), "0 of 3 connections") {
		t.Errorf("waitReady: %v, want a failure naming 0 of 3 connections", err)
	}
	if st.DialErrors == 0 || st.ReconnectsTotal != 0 {
		t.Errorf("%d dial errors, %d reconnects; want some and none", st.DialErrors, st.ReconnectsTotal)
	}
}

func TestFDLimits(t *testing.T) {
	if err := raiseFDLimit(64, slowlorisUse, "--slow-conns"); err != nil {
		t.Fatalf("64 descriptors: %v", err)
	}
	err := raiseFDLimit(1<<62, slowlorisUse, "--slow-conns")
	if err == nil || !strings.Contains(err.Error(), "--slow-conns") {
		t.Fatalf("an impossible need: %v, want an error naming --slow-conns", err)
	}
	lim, err := procFDLimit(1)
	if err != nil {
		t.Skip("no /proc/PID/limits:", err)
	}
	if lim == 0 {
		t.Fatal("pid 1: a limit of 0 open files")
	}
	if lim > 0 {
		if err := checkServerFDs("init", 1, int(lim)+1, slowlorisUse, "--slow-conns"); err == nil {
			t.Error("checkServerFDs accepts a need over the process's limit")
		}
	}
	if err := checkServerFDs("init", 1, 1, slowlorisUse, "--slow-conns"); err != nil {
		t.Error(err)
	}
}

func TestSlowRatios(t *testing.T) {
	rep := &Report{Results: []Result{
		{Target: TargetKVD, Workload: GetHit, Clients: 64, OpsPerSec: 1000},
		{Target: TargetKVD, Workload: GetHitSlowloris, Clients: 64, OpsPerSec: 970,
			Slowloris: &SlowStats{Conns: 9, Mix: map[string]int{"idle": 3, "header": 3, "body": 3}, MinOpen: 8, AvgOpen: 8.9,
				ReconnectsByKind: map[string]int64{"idle": 1, "header": 0, "body": 2}, Responses: map[string]int64{"503": 2}}},
		{Target: TargetKVD, Workload: GetHitSlowloris, Clients: 1, OpsPerSec: 10, Slowloris: &SlowStats{Conns: 9}},
		{Target: TargetBaseline, Workload: GetHit, Clients: 64, OpsPerSec: 2000},
	}}
	rep.computeRatios()
	if len(rep.SlowlorisRatios) != 1 {
		t.Fatalf("ratios %+v, want one (c=1 has no get-hit)", rep.SlowlorisRatios)
	}
	q := rep.SlowlorisRatios[0]
	if q.Target != TargetKVD || q.Clients != 64 || q.Ratio != 0.97 || q.GetHitOpsPerSec != 1000 {
		t.Fatalf("ratio %+v", q)
	}
	var b strings.Builder
	rep.Print(&b)
	out := b.String()
	for _, want := range []string{"slowloris keeps 97% of get-hit", "open min 8 avg 8.9", "answers 503 2", "c=1: 9 slow conns", "run get-hit too"} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
}
