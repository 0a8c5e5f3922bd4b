package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/edgekv/kv/internal/kvdtest"
)

// Floods: the real binary under the attacks that once crashed it or took
// its memory, each while an honest client keeps being served.

// plainBin is kvd built without the race detector, whose shadow memory
// would dwarf what a memory test measures.
var plainBin = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "kvd-plain")
	if err != nil {
		return "", err
	}
	return kvdtest.BuildKVD(dir, false)
})

// startFloodKVD runs kvd on a fresh store under a shell that first sets
// the open-file limit (soft and hard) to nofile, or leaves it when 0.
// plain runs the binary built without the race detector.
func startFloodKVD(t *testing.T, nofile int, plain bool, args ...string) (cmd *exec.Cmd, logs *kvdtest.SyncBuffer, base, token string) {
	t.Helper()
	bin := kvdBin
	if plain {
		b, err := plainBin()
		if err != nil {
			t.Fatal(err)
		}
		bin = b
	}
	addr := kvdtest.FreeAddr(t)
	token = "flood-token"
	kvdArgs := append([]string{"--listen", addr, "--store", t.TempDir(), "--access-log=false", "--rate-limit=0"}, args...)
	if nofile > 0 {
		quoted := make([]string, len(kvdArgs))
		for i, a := range kvdArgs {
			quoted[i] = "'" + a + "'"
		}
		cmd = exec.Command("/bin/sh", "-c", fmt.Sprintf("ulimit -n %d && exec '%s' %s", nofile, bin, strings.Join(quoted, " ")))
	} else {
		cmd = exec.Command(bin, kvdArgs...)
	}
	cmd.Env = append(os.Environ(), "TELNYX_API_KEY="+token)
	logs = &kvdtest.SyncBuffer{}
	cmd.Stderr = logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	waitHealthy(t, addr)
	return cmd, logs, "http://" + addr, token
}

// honest is a client with its own connection pool.
type honest struct {
	t     *testing.T
	c     *http.Client
	base  string
	token string
}

func newHonest(t *testing.T, base, token string) *honest {
	return &honest{t: t, base: base, token: token, c: &http.Client{
		Timeout:   30 * time.Second,
		Transport: &http.Transport{MaxConnsPerHost: 1, MaxIdleConnsPerHost: 1, IdleConnTimeout: time.Hour},
	}}
}

func (h *honest) do(method, path string, body []byte) (int, []byte, error) {
	req, _ := http.NewRequest(method, h.base+path, bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+h.token)
	resp, err := h.c.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

func (h *honest) mustDo(method, path string, body []byte, want ...int) []byte {
	h.t.Helper()
	st, b, err := h.do(method, path, body)
	if err != nil {
		h.t.Fatalf("%s %s: %v", method, path, err)
	}
	for _, w := range want {
		if st == w {
			return b
		}
	}
	h.t.Fatalf("%s %s: %d %s, want %v", method, path, st, b, want)
	return nil
}

// readyNamespace creates a namespace and waits for it to be ready.
func (h *honest) readyNamespace(name string) string {
	h.t.Helper()
	b := h.mustDo("POST", "/v2/storage/kvs", []byte(`{"name":"`+name+`"}`), 201)
	var ns struct{ Data struct{ ID string } }
	json.Unmarshal(b, &ns)
	deadline := time.Now().Add(30 * time.Second)
	for !bytes.Contains(h.mustDo("GET", "/v2/storage/kvs/"+ns.Data.ID, nil, 200), []byte("provision_ok")) {
		if time.Now().After(deadline) {
			h.t.Fatal("namespace never became ready")
		}
		time.Sleep(20 * time.Millisecond)
	}
	return ns.Data.ID
}

// TestDescriptorFlood: with an open-file limit of 300 and 400 connections
// opened and left silent, a client whose connection was open before the
// flood keeps writing 1 MiB values, new clients are served once the silent
// connections have had their second, and kvd does not crash. (kvd once ran
// out of descriptors here and died in Pebble's WAL rotation.)
func TestDescriptorFlood(t *testing.T) {
	cmd, logs, base, token := startFloodKVD(t, 300, false)
	h := newHonest(t, base, token)
	id := h.readyNamespace("fd-flood")
	value := bytes.Repeat([]byte("v"), 1<<20)
	h.mustDo("PUT", "/v2/storage/kvs/"+id+"/keys/before", value, 201)

	addr := strings.TrimPrefix(base, "http://")
	var flood []net.Conn
	defer func() {
		for _, c := range flood {
			c.Close()
		}
	}()
	refused := 0
	for range 400 {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			refused++
			continue
		}
		flood = append(flood, c)
	}
	// Enough 1 MiB writes to rotate the write-ahead log more than once.
	for i := range 80 {
		h.mustDo("PUT", fmt.Sprintf("/v2/storage/kvs/%s/keys/during-%d", id, i), value, 201)
	}
	// A new client: at the cap, a connection silent for over a second
	// makes way for it; until then it may be told to come back.
	fresh := newHonest(t, base, token)
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, body, err := fresh.do("GET", "/v2/storage/kvs/"+id+"/keys/before", nil)
		if err == nil && st == 200 && len(body) == len(value) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a new client was never served during the flood: %d %v", st, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if cmd.ProcessState != nil || syscall.Kill(cmd.Process.Pid, 0) != nil {
		t.Fatalf("kvd died:\n%s", logs)
	}
	if l := logs.String(); strings.Contains(l, "fatal error") || strings.Contains(l, "too many open files") {
		t.Fatalf("kvd ran out of descriptors:\n%s", l)
	}
	for i := range 80 {
		if got := h.mustDo("GET", fmt.Sprintf("/v2/storage/kvs/%s/keys/during-%d", id, i), nil, 200); len(got) != len(value) {
			t.Fatalf("during-%d: %d bytes", i, len(got))
		}
	}
	t.Logf("%d of 400 flood connections were refused at connect", refused)
}

// peakRSS reads the process's peak resident set (VmHWM) and resets it.
func peakRSS(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	var kb int64
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ = strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
		}
	}
	os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0)
	return kb << 10
}

// enoughDescriptors skips a test that needs n descriptors of its own when
// the test process cannot have them.
func enoughDescriptors(t *testing.T, n int) {
	t.Helper()
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil || l.Cur < uint64(n) {
		t.Skipf("this test needs %d open files; the limit here is %d", n, l.Cur)
	}
}

const floodRSSLimit = 512 << 20

// TestMemoryFloods: kvd's resident memory stays under 512 MiB through each
// of three floods, and an honest client keeps being served during each:
// 8,000 unauthenticated connections each sending 60 KB of headers; 5,000
// authenticated PUTs that declare 65,536 bytes and stall before the last;
// 352 clients that do not read their 1 MiB GETs.
func TestMemoryFloods(t *testing.T) {
	if testing.Short() {
		t.Skip("floods kvd with thousands of connections")
	}
	enoughDescriptors(t, 9000)
	cmd, logs, base, token := startFloodKVD(t, 0, true)
	pid := cmd.Process.Pid
	addr := strings.TrimPrefix(base, "http://")
	h := newHonest(t, base, token)
	id := h.readyNamespace("memory-flood")
	big := bytes.Repeat([]byte("b"), 1<<20)
	h.mustDo("PUT", "/v2/storage/kvs/"+id+"/keys/big", big, 201)
	peakRSS(t, pid)

	honestRound := func(what string) {
		t.Helper()
		for i := range 20 {
			key := fmt.Sprintf("/v2/storage/kvs/%s/keys/honest-%d", id, i)
			h.mustDo("PUT", key, []byte(what), 201, 200)
			if got := string(h.mustDo("GET", key, nil, 200)); got != what {
				t.Fatalf("%s: read back %q", what, got)
			}
		}
	}
	flood := func(name string, n int, open func(i int) net.Conn) {
		t.Helper()
		conns := make([]net.Conn, 0, n)
		for i := range n {
			if c := open(i); c != nil {
				conns = append(conns, c)
			}
		}
		time.Sleep(2 * time.Second) // let kvd take in what they sent
		honestRound(name)
		rss := peakRSS(t, pid)
		t.Logf("%s: %d connections, kvd peak RSS %d MiB", name, len(conns), rss>>20)
		if rss > floodRSSLimit {
			t.Errorf("%s: kvd peak RSS %d MiB, over %d MiB", name, rss>>20, floodRSSLimit>>20)
		}
		for _, c := range conns {
			c.Close()
		}
	}
	dial := func() net.Conn {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			return nil
		}
		return c
	}
	header := "GET /v2/storage/kvs HTTP/1.1\r\nHost: kvd\r\nX-Pad: " + strings.Repeat("p", 60_000)
	flood("headers", 8000, func(int) net.Conn {
		c := dial()
		if c != nil {
			io.WriteString(c, header) // the header never ends
		}
		return c
	})
	flood("stalled bodies", 5000, func(i int) net.Conn {
		c := dial()
		if c != nil {
			fmt.Fprintf(c, "PUT /v2/storage/kvs/%s/keys/stall-%d HTTP/1.1\r\nHost: kvd\r\nAuthorization: Bearer %s\r\nContent-Length: 65536\r\n\r\n", id, i, token)
			c.Write(bytes.Repeat([]byte("s"), 65535))
		}
		return c
	})
	flood("unread responses", 352, func(int) net.Conn {
		c := dial()
		if c != nil {
			if tc, ok := c.(*net.TCPConn); ok {
				tc.SetReadBuffer(4 << 10)
			}
			fmt.Fprintf(c, "GET /v2/storage/kvs/%s/keys/big HTTP/1.1\r\nHost: kvd\r\nAuthorization: Bearer %s\r\n\r\n", id, token)
		}
		return c
	})
	if strings.Contains(logs.String(), "panic") {
		t.Fatalf("kvd panicked:\n%s", logs)
	}
}
