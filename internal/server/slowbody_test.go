package server_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgekv/kv"
	"github.com/edgekv/kv/internal/kvdtest"
	"github.com/edgekv/kv/internal/server"
)

// largePut opens a connection and sends the headers of a PUT of a 1 MiB
// value, and the first n bytes of it.
func largePut(t *testing.T, s *kvdtest.Server, ns, key string, n int) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	fmt.Fprintf(c, "PUT /v2/storage/kvs/%s/keys/%s HTTP/1.1\r\nHost: kvd\r\nAuthorization: Bearer %s\r\nContent-Length: %d\r\n\r\n", ns, key, s.Token, 1<<20)
	if _, err := c.Write(bytes.Repeat([]byte("x"), n)); err != nil {
		t.Fatal(err)
	}
	return c, bufio.NewReader(c)
}

func readResponse(t *testing.T, c net.Conn, br *bufio.Reader) (*http.Response, string) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	defer resp.Body.Close()
	var b strings.Builder
	bufio.NewReader(resp.Body).WriteTo(&b)
	return resp, b.String()
}

// TestSlowLargeBodiesAreCutOff: clients that stall while sending large
// values hold the few slots such values are read in only until they fall
// behind the required pace; they get a 400 and their connection closed,
// and a value sent at a normal pace is then stored.
func TestSlowLargeBodiesAreCutOff(t *testing.T) {
	s := kvdtest.Start(t, kvdtest.WithConfig(func(c *server.Config) {
		c.SlowBody = 300 * time.Millisecond
		c.BodyBudget = 4 * (1<<20 + 1) // room for four 1 MiB values
	}))
	ns := readyNamespace(t, s)
	type conn struct {
		c  net.Conn
		br *bufio.Reader
	}
	var stalled []conn
	for i := range 6 { // more than the budget holds
		c, br := largePut(t, s, ns, fmt.Sprintf("slow-%d", i), 1000)
		stalled = append(stalled, conn{c, br})
	}
	// A client at full speed gets its value stored, once the stalled ones
	// have been cut off; while they hold every slot it is told to retry
	// (503, Retry-After), as a client should, a few times at most. Without
	// the pacing they would hold the slots for the whole read timeout.
	var resp *http.Response
	var body string
	for try := 0; try < 10; try++ {
		resp, body = call(t, http.DefaultClient, "PUT", s.URL+"/v2/storage/kvs/"+ns+"/keys/fast", s.Token, strings.Repeat("f", 1<<20))
		if resp.StatusCode != http.StatusServiceUnavailable {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("a 1 MiB PUT at full speed while slow ones stall: %d %s", resp.StatusCode, body)
	}
	for i, sc := range stalled {
		resp, body := readResponse(t, sc.c, sc.br)
		switch {
		case resp.StatusCode == http.StatusBadRequest && errCode(t, body) == "10015" && strings.Contains(body, "too slowly"):
			if !resp.Close {
				t.Errorf("stalled PUT %d: the connection stays open after the 400", i)
			}
		case resp.StatusCode == http.StatusServiceUnavailable && errCode(t, body) == "10033" && resp.Header.Get("Retry-After") != "":
			// It never got a slot: the stalled ones ahead of it held them.
		default:
			t.Errorf("stalled PUT %d: %d %s; want 400 (too slow) or 503", i, resp.StatusCode, body)
		}
	}
	for i := range 6 {
		if resp, _ := call(t, http.DefaultClient, "GET", s.URL+"/v2/storage/kvs/"+ns+"/keys/"+fmt.Sprintf("slow-%d", i), s.Token, ""); resp.StatusCode != http.StatusNotFound {
			t.Errorf("slow-%d: %d; a value that never fully arrived must not be stored", i, resp.StatusCode)
		}
	}
}

// TestLargeBodiesWaitBounded: while every slot is held by a value that
// arrives slowly but at the required pace, another large PUT waits for a
// slot for a bounded time and then gets a 503 with Retry-After; the paced
// ones are stored.
func TestLargeBodiesWaitBounded(t *testing.T) {
	const every = 2 * time.Second
	const slots = 4
	s := kvdtest.Start(t, kvdtest.WithConfig(func(c *server.Config) {
		c.SlowBody = every
		c.BodyBudget = slots * (1<<20 + 1)
		c.MetricsListen = "127.0.0.1:0"
	}))
	ns := readyNamespace(t, s)
	var wg sync.WaitGroup
	results := make([]int, slots)
	for i := range slots {
		c, br := largePut(t, s, ns, fmt.Sprintf("paced-%d", i), 64<<10)
		wg.Add(1)
		go func() {
			defer wg.Done()
			chunk := bytes.Repeat([]byte("p"), 64<<10)
			for sent := 64 << 10; sent < 1<<20; sent += len(chunk) {
				time.Sleep(every / 8) // 8 times the required pace
				if _, err := c.Write(chunk); err != nil {
					t.Errorf("paced PUT %d: %v", i, err)
					return
				}
			}
			resp, body := readResponse(t, c, br)
			results[i] = resp.StatusCode
			if resp.StatusCode != http.StatusCreated {
				t.Errorf("paced PUT %d: %d %s", i, resp.StatusCode, body)
			}
		}()
	}
	time.Sleep(every / 2) // let them take the slots
	resp, body := call(t, http.DefaultClient, "PUT", s.URL+"/v2/storage/kvs/"+ns+"/keys/waiting", s.Token, strings.Repeat("w", 1<<20))
	if resp.StatusCode != http.StatusServiceUnavailable || errCode(t, body) != "10033" || resp.Header.Get("Retry-After") != "1" {
		t.Errorf("a large PUT while every slot is held: %d Retry-After %q %s; want 503", resp.StatusCode, resp.Header.Get("Retry-After"), body)
	}
	if v, _ := value(scrape(t, s), "kvd_refused_total", "reason", "body_budget"); v != 1 {
		t.Errorf("kvd_refused_total{reason=\"body_budget\"} = %v; want 1", v)
	}
	wg.Wait()
}

// readyNamespace creates a namespace and provisions it at once.
func readyNamespace(t *testing.T, s *kvdtest.Server) string {
	t.Helper()
	resp, body := call(t, http.DefaultClient, "POST", s.URL+"/v2/storage/kvs", s.Token, `{"name":"ns-`+fmt.Sprint(time.Now().UnixNano())+`"}`)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("create namespace: %d %s", resp.StatusCode, body)
	}
	var ns struct{ Data struct{ ID string } }
	if err := json.Unmarshal([]byte(body), &ns); err != nil {
		t.Fatal(err)
	}
	s.Provision(t, kv.DefaultOrg, ns.Data.ID)
	return ns.Data.ID
}
