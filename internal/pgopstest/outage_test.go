package pgopstest

import (
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgekv/kv/internal/kvdtest"
	"github.com/edgekv/kv/internal/pgtest"
	"github.com/edgekv/kv/internal/server"
)

// maxProbes is the most connection attempts kvd's breaker can make in d
// after it opened: it waits at least half of 100ms, 200ms, 400ms, ...,
// 2s, 2s, ... between two (see internal/store/postgres/breaker.go).
func maxProbes(d time.Duration) int {
	n := 0
	wait := 100 * time.Millisecond
	for sum := wait / 2; sum <= d; sum += wait / 2 {
		n++
		wait = min(2*wait, 2*time.Second)
	}
	return n
}

// TestDatabaseOutage stops kvd's database (a clean, fast shutdown) for 10s
// while 64 clients keep sending requests without pause, and counts the
// connections kvd opens to it on a TCP proxy in front of it. kvd must make
// at most as many attempts as its pool has connections (those under way
// when the database went away) plus one per breaker interval, each of them
// at most two connections (pgx sends a cancel request after a start-up
// that failed); every
// request must be answered, while the database is down with 503, code
// 10033 and Retry-After; and kvd serves again once the database is back,
// without a restart.
func TestDatabaseOutage(t *testing.T) {
	const (
		pool    = 8
		clients = 64
		outage  = 10 * time.Second
	)
	srv := pgtest.NewServer(t)
	proxy := pgtest.NewProxy(t, srv.Addr())
	k := kvdtest.Start(t, kvdtest.WithStore(proxy.URL(srv.URL(t))), kvdtest.WithConfig(func(c *server.Config) {
		c.Postgres.MaxConns = pool
	}))
	hc := newHTTPClient()
	a := api{hc: hc, base: k.URL, token: k.Token}
	ns := a.createNamespace(t, "outage", true)

	var down atomic.Bool
	var mu sync.Mutex
	var unavailable, served, badRetry int
	var latencies []time.Duration
	perClient := make([]int, clients)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for id := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				key := fmt.Sprintf("k%d", (id+n)%16)
				method, body := http.MethodGet, ""
				if n%2 == 0 {
					method, body = http.MethodPut, fmt.Sprintf("v%d-%d", id, n)
				}
				wasDown := down.Load()
				began := time.Now()
				ans, err := a.do(method, "/"+ns+"/keys/"+key, strings.NewReader(body))
				took := time.Since(began)
				mu.Lock()
				switch {
				case err != nil:
					t.Errorf("%s %s: no answer from kvd: %v", method, key, err)
				case ans.status == http.StatusServiceUnavailable && errorCode(ans.body) == "10033":
					if ans.header.Get("Retry-After") == "" {
						badRetry++
					}
					if wasDown && down.Load() {
						unavailable++
						perClient[id]++
						latencies = append(latencies, took)
					}
				case ans.status < 300 || ans.status == http.StatusNotFound:
					served++
				default:
					t.Errorf("%s %s: status %d: %s; want success, 404 or 503 with code 10033", method, key, ans.status, ans.body)
				}
				mu.Unlock()
				if err != nil {
					time.Sleep(10 * time.Millisecond)
				}
			}
		}()
	}
	time.Sleep(time.Second) // the pool is warm, every connection in use

	before := proxy.Accepted()
	wentDown := time.Now()
	srv.Stop(t)
	down.Store(true)
	time.Sleep(outage)
	down.Store(false)
	attempts := proxy.Accepted() - before
	downFor := time.Since(wentDown)
	srv.Restart(t)
	cameBack := time.Now()

	// kvd serves again by itself.
	deadline := time.Now().Add(time.Minute)
	for {
		ans, err := a.do(http.MethodPut, "/"+ns+"/keys/after", strings.NewReader("v"))
		if err == nil && ans.status < 300 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("kvd does not serve a minute after its database came back: %v %d %s", err, ans.status, ans.body)
		}
		time.Sleep(10 * time.Millisecond)
	}
	recovered := time.Since(cameBack)
	close(stop)
	wg.Wait()

	// Each attempt is at most two connections: pgx follows a start-up
	// that failed on a closed connection with a cancel request.
	bound := 2 * int64(pool+maxProbes(downFor))
	mu.Lock()
	defer mu.Unlock()
	median := time.Duration(0)
	if len(latencies) > 0 {
		sort.Slice(latencies, func(i, j int) bool { return latencies[i] < latencies[j] })
		median = latencies[len(latencies)/2]
	}
	t.Logf("%d clients, a pool of %d, the database down for %v: kvd opened %d connections (bound %d); %d requests answered 503 while it was down (median %v); serving again %v after it was back",
		clients, pool, downFor.Round(time.Millisecond), attempts, bound, unavailable, median, recovered.Round(time.Millisecond))
	if attempts > bound {
		t.Errorf("kvd opened %d connections while the database was down for %v; want at most %d (two for each of its pool's %d attempts, and of one probe per breaker interval)", attempts, downFor, bound, pool)
	}
	if badRetry > 0 {
		t.Errorf("%d answers 503 without Retry-After", badRetry)
	}
	for id, n := range perClient {
		if n == 0 {
			t.Errorf("client %d got no answer while the database was down: its requests waited rather than failed", id)
		}
	}
}
