package examples

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgekv/kv"
	"github.com/edgekv/kv/client"
	"github.com/edgekv/kv/internal/kvdtest"
	"github.com/edgekv/kv/internal/pgtest"
)

func TestMain(m *testing.M) {
	code := pgtest.Run(m)
	if kvdDir != "" {
		os.RemoveAll(kvdDir)
	}
	os.Exit(code)
}

// The documentation's session counter under load: 64 clients, 100 views
// each, of one session. Read-then-PUT (the documented code) loses views;
// the If-Match loop of session_counter.mjs, ViewSession (Update) and incr
// each end at exactly 6,400, with every count from 1 to 6,400 handed out
// once. On the embedded engine, on PostgreSQL, and through two kvd on one
// PostgreSQL database (half the clients on each).
//
// kvd runs as its own process, built without the race detector whatever
// the test's build: the load is the point, and kvd's own races are the
// business of its own tests.
const (
	sessionClients = 64
	sessionViews   = 100
	sessionTotal   = sessionClients * sessionViews
)

var (
	kvdOnce sync.Once
	kvdDir  string
	kvdBin  string
	kvdErr  error
)

// kvdProcess is a kvd process.
type kvdProcess struct{ URL string }

// startKVD runs kvd on store with the API key key, and waits until it
// serves.
func startKVD(t *testing.T, store, key string) *kvdProcess {
	t.Helper()
	kvdOnce.Do(func() {
		if kvdDir, kvdErr = os.MkdirTemp("", "kvd-session-"); kvdErr == nil {
			kvdBin, kvdErr = kvdtest.BuildKVD(kvdDir, false)
		}
	})
	if kvdErr != nil {
		t.Fatal(kvdErr)
	}
	addr := kvdtest.FreeAddr(t)
	cmd := exec.Command(kvdBin, "--listen", addr, "--store", store, "--access-log=false", "--rate-limit=0", "--job-lease", "1s")
	cmd.Env = append(os.Environ(), "TELNYX_API_KEY="+key)
	logs := &kvdtest.SyncBuffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		cmd.Wait()
	})
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return &kvdProcess{URL: "http://" + addr}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("kvd on %s never became healthy: %v\n%s", addr, err, logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// noSyncCommit sets synchronous_commit off on kvd's connections to the
// database u: a commit returns before its WAL reaches the disk. Writes of
// one key take the key's row lock in turn, so on a slow disk the test
// would measure 6,400 flushes one after the other; what it checks is that
// concurrent writers lose nothing, which the locks and transactions
// decide, not the flush. (The crash tests check durability.)
func noSyncCommit(t *testing.T, u string) string {
	t.Helper()
	p, err := url.Parse(u)
	if err != nil {
		t.Fatal(err)
	}
	q := p.Query()
	q.Set("synchronous_commit", "off")
	p.RawQuery = q.Encode()
	return p.String()
}

// cluster is one or more kvd on one store, with a ready namespace.
type cluster struct {
	servers []*kvdProcess
	ns      string
	token   string
}

func newCluster(t *testing.T, engine string) *cluster {
	t.Helper()
	key := "session-key-" + kv.NewID().String()
	var servers []*kvdProcess
	switch engine {
	case "embedded":
		servers = append(servers, startKVD(t, t.TempDir(), key))
	case "postgres":
		servers = append(servers, startKVD(t, noSyncCommit(t, pgtest.URL(t)), key))
	case "two kvd on postgres":
		db := noSyncCommit(t, pgtest.URL(t))
		servers = append(servers, startKVD(t, db, key), startKVD(t, db, key))
	}
	c := &cluster{servers: servers, token: key}
	sdk := c.client(0)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ns, err := sdk.CreateNamespace(ctx, "sessions")
	if err != nil {
		t.Fatal(err)
	}
	// Ready on every server (they share the store).
	for i := range servers {
		if _, err := c.client(i).WaitReady(ctx, ns.ID.String()); err != nil {
			t.Fatal(err)
		}
	}
	c.ns = ns.ID.String()
	return c
}

// httpClient keeps a connection per client open, as 64 edge functions
// would.
var httpClient = &http.Client{Transport: countingTransport{&http.Transport{MaxIdleConnsPerHost: 2 * sessionClients}}}

// sent counts the requests made through httpClient.
var sent atomic.Int64

type countingTransport struct{ http.RoundTripper }

func (c countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	sent.Add(1)
	return c.RoundTripper.RoundTrip(r)
}

// client returns an SDK client of server i (modulo the number of servers).
func (c *cluster) client(i int) *client.Client {
	s := c.servers[i%len(c.servers)]
	return client.New(client.WithBaseURL(s.URL), client.WithAPIKey(c.token), client.WithHTTPClient(httpClient))
}

// keyURL is the URL of key on server i.
func (c *cluster) keyURL(i int, key string) string {
	return c.servers[i%len(c.servers)].URL + "/v2/storage/kvs/" + c.ns + "/keys/" + url.PathEscape(key)
}

// views reads the views of a stored session.
func (c *cluster) views(t *testing.T, key string) int {
	t.Helper()
	v, _, err := c.client(0).Namespace(c.ns).Get(context.Background(), key)
	if err != nil {
		t.Fatalf("read %s: %v", key, err)
	}
	var s struct{ Views float64 }
	if err := json.Unmarshal(v, &s); err != nil {
		t.Fatalf("%s is %q: %v", key, v, err)
	}
	return int(s.Views)
}

// seed stores a fresh session under key, with views 0.
func (c *cluster) seed(t *testing.T, key string) {
	t.Helper()
	if _, err := c.client(0).Namespace(c.ns).Put(context.Background(), key, []byte(`{"created":1,"views":0}`), &client.PutOptions{ContentType: "application/json"}); err != nil {
		t.Fatal(err)
	}
}

// run runs fn for each of sessionClients clients, sessionViews times, and
// returns the first error.
func run(fn func(client, view int) error) error {
	var wg sync.WaitGroup
	errs := make(chan error, sessionClients)
	for i := range sessionClients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for v := range sessionViews {
				if err := fn(i, v); err != nil {
					errs <- fmt.Errorf("client %d, view %d: %w", i, v, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// checkCounts fails t unless counts holds every number from 1 to
// sessionTotal exactly once: each view was counted once, and no two saw
// the same count.
func checkCounts(t *testing.T, what string, counts []int) {
	t.Helper()
	slices.Sort(counts)
	if len(counts) != sessionTotal {
		t.Fatalf("%s: %d counts returned; want %d", what, len(counts), sessionTotal)
	}
	for i, n := range counts {
		if n != i+1 {
			t.Fatalf("%s: the counts returned are not 1 to %d, each once: position %d holds %d", what, sessionTotal, i, n)
		}
	}
}

func TestSessionCounter(t *testing.T) {
	for _, engine := range []string{"embedded", "postgres", "two kvd on postgres"} {
		t.Run(engine, func(t *testing.T) {
			c := newCluster(t, engine)
			t.Run("read-then-PUT", func(t *testing.T) { naiveCounter(t, c) })
			t.Run("If-Match loop in JavaScript", func(t *testing.T) { jsCounter(t, c) })
			t.Run("Update in Go", func(t *testing.T) { goCounter(t, c) })
			t.Run("incr", func(t *testing.T) { incrCounter(t, c) })
		})
	}
}

// naiveCounter is the documented handler: GET, views + 1, PUT.
func naiveCounter(t *testing.T, c *cluster) {
	const key = "session/naive"
	c.seed(t, key)
	auth := "Bearer " + c.token
	start := time.Now()
	err := run(func(i, _ int) error {
		req, _ := http.NewRequest("GET", c.keyURL(i, key), nil)
		req.Header.Set("Authorization", auth)
		resp, err := httpClient.Do(req)
		if err != nil {
			return err
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var data map[string]any
		if err := json.Unmarshal(body, &data); err != nil {
			return fmt.Errorf("GET answered %d %q", resp.StatusCode, body)
		}
		data["views"] = data["views"].(float64) + 1
		updated, _ := json.Marshal(data)
		req, _ = http.NewRequest("PUT", c.keyURL(i, key), bytes.NewReader(updated))
		req.Header.Set("Authorization", auth)
		resp, err = httpClient.Do(req)
		if err != nil {
			return err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode >= 300 {
			return fmt.Errorf("PUT answered %d", resp.StatusCode)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	views := c.views(t, key)
	if views < 1 || views > sessionTotal {
		t.Fatalf("read-then-PUT ended at %d views; it can only lose views, not add them", views)
	}
	t.Logf("read-then-PUT: %d of %d views counted, %d lost (%.1f%%), in %v", views, sessionTotal, sessionTotal-views, 100*float64(sessionTotal-views)/sessionTotal, time.Since(start).Round(time.Millisecond))
}

// jsDriver runs the handler of session_counter.mjs for CLIENTS concurrent
// clients, VIEWS times each, and prints the views each answer carried.
const jsDriver = `
let requests = 0;
const realFetch = globalThis.fetch;
globalThis.fetch = (...args) => { requests++; return realFetch(...args); };
const { handler } = await import(process.env.EXAMPLE_URL);
const counts = [];
await Promise.all(Array.from({ length: Number(process.env.CLIENTS) }, async () => {
  for (let i = 0; i < Number(process.env.VIEWS); i++) {
    const res = await handler(new Request("http://function/", { headers: { "X-Session-ID": process.env.SESSION } }));
    counts.push(JSON.parse(await res.text()).views);
  }
}));
console.log(JSON.stringify({ counts, requests }));
`

// jsProcesses is how many node processes share the clients: a process
// runs its clients on one thread.
const jsProcesses = 2

// runJS runs the driver in jsProcesses node processes, clients split
// between them and each process on its own server of c, and returns the
// counts the answers carried and the requests made.
func runJS(t *testing.T, c *cluster, session string, clients, views int) (counts []int, requests int) {
	t.Helper()
	node := nodeOrSkip(t)
	abs, err := filepath.Abs("session_counter.mjs")
	if err != nil {
		t.Fatal(err)
	}
	n := jsProcesses
	var mu sync.Mutex
	var all []int
	var wg sync.WaitGroup
	for i := range n {
		s := c.servers[i%len(c.servers)]
		wg.Add(1)
		go func() {
			defer wg.Done()
			cmd := exec.Command(node, "--input-type=module", "-e", jsDriver)
			cmd.Env = append(os.Environ(), "KV_MY_CACHE_ID="+c.ns, "TELNYX_API_KEY="+c.token, "TELNYX_BASE_URL="+s.URL+"/v2",
				"EXAMPLE_URL=file://"+abs, "SESSION="+session, "CLIENTS="+strconv.Itoa(clients/n+boolInt(i < clients%n)), "VIEWS="+strconv.Itoa(views))
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			if err != nil {
				t.Errorf("node session_counter.mjs against %s: %v\n%s", s.URL, err, stderr.String())
				return
			}
			var res struct {
				Counts   []int
				Requests int
			}
			if err := json.Unmarshal(out, &res); err != nil {
				t.Errorf("the driver printed %q: %v", out, err)
				return
			}
			mu.Lock()
			all = append(all, res.Counts...)
			requests += res.Requests
			mu.Unlock()
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	return all, requests
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func jsCounter(t *testing.T, c *cluster) {
	const session = "js"
	c.seed(t, "session/"+session)
	start := time.Now()
	counts, requests := runJS(t, c, session, sessionClients, sessionViews)
	if views := c.views(t, "session/"+session); views != sessionTotal {
		t.Fatalf("the If-Match loop ended at %d views; want %d", views, sessionTotal)
	}
	checkCounts(t, "the If-Match loop", counts)
	t.Logf("If-Match loop (JavaScript): %d views, none lost, in %v (%d requests)", sessionTotal, time.Since(start).Round(time.Millisecond), requests)

	// A new session: of 64 concurrent first views exactly one creates it
	// (If-None-Match: *), and the others count.
	counts, _ = runJS(t, c, "js-new", sessionClients, 1)
	slices.Sort(counts)
	if views := c.views(t, "session/js-new"); views != sessionClients-1 || counts[0] != 0 || counts[len(counts)-1] != sessionClients-1 {
		t.Fatalf("64 first views of a new session: %d views, counts %v; want one creation at 0 and 63 views", views, counts)
	}
}

func goCounter(t *testing.T, c *cluster) {
	const session = "go"
	c.seed(t, "session/"+session)
	handlers := make([]http.HandlerFunc, len(c.servers))
	for i := range handlers {
		handlers[i] = SessionHandler(c.client(i).Namespace(c.ns))
	}
	var mu sync.Mutex
	var counts []int
	start, before := time.Now(), sent.Load()
	err := run(func(i, _ int) error {
		w := httptest.NewRecorder()
		r := httptest.NewRequest("GET", "/", nil)
		r.Header.Set("X-Session-ID", session)
		handlers[i%len(handlers)](w, r)
		if w.Code != http.StatusOK {
			return fmt.Errorf("the handler answered %d %s", w.Code, w.Body)
		}
		var s struct{ Views int }
		if err := json.Unmarshal(w.Body.Bytes(), &s); err != nil {
			return err
		}
		mu.Lock()
		counts = append(counts, s.Views)
		mu.Unlock()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if views := c.views(t, "session/"+session); views != sessionTotal {
		t.Fatalf("Update ended at %d views; want %d", views, sessionTotal)
	}
	checkCounts(t, "Update", counts)
	info, err := c.client(0).Namespace(c.ns).Info(context.Background(), "session/"+session)
	if err != nil || info.ContentType != "application/json" || info.ExpiresAt.IsZero() {
		t.Fatalf("the session after Update: %+v, %v; want application/json with an expiry", info, err)
	}
	t.Logf("Update (Go): %d views, none lost, in %v (%d requests)", sessionTotal, time.Since(start).Round(time.Millisecond), sent.Load()-before)
}

func incrCounter(t *testing.T, c *cluster) {
	const key = "session/incr/views"
	nss := make([]*client.Namespace, len(c.servers))
	for i := range nss {
		nss[i] = c.client(i).Namespace(c.ns)
	}
	var mu sync.Mutex
	var counts []int
	start := time.Now()
	err := run(func(i, _ int) error {
		n, err := nss[i%len(nss)].Incr(context.Background(), key, 1)
		if err != nil {
			return err
		}
		mu.Lock()
		counts = append(counts, int(n))
		mu.Unlock()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	v, _, err := nss[0].Get(context.Background(), key)
	if err != nil || string(v) != strconv.Itoa(sessionTotal) {
		t.Fatalf("incr ended at %q (%v); want %d", v, err, sessionTotal)
	}
	checkCounts(t, "incr", counts)
	t.Logf("incr: %d views, none lost, in %v", sessionTotal, time.Since(start).Round(time.Millisecond))
}
