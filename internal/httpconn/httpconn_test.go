package httpconn

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"io"
	"math/big"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgekv/kv"
)

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// serve runs an http.Server with h on a Listener of cfg.
func serve(t *testing.T, cfg Config, h http.Handler) (*Listener, string) {
	t.Helper()
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := NewListener(tcp, cfg)
	srv := &http.Server{Handler: Handler(h), ConnState: ln.ConnState, ConnContext: ln.ConnContext, ReadHeaderTimeout: time.Minute}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln, tcp.Addr().String()
}

var okHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	io.Copy(io.Discard, r.Body)
	w.Header().Set("X-Request-Id", "r")
	w.Write([]byte("ok"))
})

func dial(t *testing.T, addr string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, bufio.NewReader(c)
}

func readResp(t *testing.T, c net.Conn, br *bufio.Reader) (*http.Response, string) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("no response: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func wantEnvelope(t *testing.T, what string, resp *http.Response, body string, status int, code kv.ErrorCode) {
	t.Helper()
	var env kv.ErrorEnvelope
	if resp.StatusCode != status || resp.Header.Get("Content-Type") != "application/json" || json.Unmarshal([]byte(body), &env) != nil || len(env.Errors) != 1 || env.Errors[0].Code != string(code) {
		t.Fatalf("%s: %d %q %s; want %d with code %s in the envelope", what, resp.StatusCode, resp.Header.Get("Content-Type"), body, status, code)
	}
}

func closed(c net.Conn, br *bufio.Reader) bool {
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err := br.ReadByte()
	ne, ok := err.(net.Error)
	return err != nil && !(ok && ne.Timeout())
}

func waitOpen(t *testing.T, ln *Listener, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for ln.Open() != n {
		if time.Now().After(deadline) {
			t.Fatalf("open = %d, want %d", ln.Open(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestCapRefusesThenEvictsSilent(t *testing.T) {
	clock := &fakeClock{t: time.Unix(1e9, 0)}
	var mu sync.Mutex
	reasons := map[string]int{}
	ln, addr := serve(t, Config{MaxConns: 2, HeaderBudget: 1 << 20, Now: clock.now, OnRefuse: func(r string) { mu.Lock(); reasons[r]++; mu.Unlock() }}, okHandler)
	a, abr := dial(t, addr)
	b, _ := dial(t, addr)
	_ = b
	waitOpen(t, ln, 2)
	// At the cap, with nobody silent for long: 503 in the envelope.
	c, cbr := dial(t, addr)
	resp, body := readResp(t, c, cbr)
	wantEnvelope(t, "at the cap", resp, body, 503, kv.EUnavailable)
	if resp.Header.Get("Retry-After") == "" || resp.Header.Get("X-Should-Retry") != "true" {
		t.Fatalf("at the cap: headers %v", resp.Header)
	}
	// a serves a request and stays idle; b stays silent. Once both have
	// been silent long enough, a new connection evicts the oldest: b.
	io.WriteString(a, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp, body := readResp(t, a, abr); resp.StatusCode != 200 || body != "ok" {
		t.Fatalf("a: %d %s", resp.StatusCode, body)
	}
	clock.advance(2 * time.Second)
	d, dbr := dial(t, addr)
	io.WriteString(d, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp, body := readResp(t, d, dbr); resp.StatusCode != 200 || body != "ok" {
		t.Fatalf("d after eviction: %d %s", resp.StatusCode, body)
	}
	if !closed(b, bufio.NewReader(b)) {
		t.Fatal("the silent connection b was not the one evicted")
	}
	mu.Lock()
	defer mu.Unlock()
	if reasons["max_connections"] != 1 || reasons["evicted"] != 1 {
		t.Fatalf("refusals %v", reasons)
	}
}

func TestActiveConnectionsAreNeverEvicted(t *testing.T) {
	clock := &fakeClock{t: time.Unix(1e9, 0)}
	release := make(chan struct{})
	entered := make(chan struct{}, 1)
	slow := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		entered <- struct{}{}
		<-release
		w.Write([]byte("done"))
	})
	ln, addr := serve(t, Config{MaxConns: 1, HeaderBudget: 1 << 20, Now: clock.now}, slow)
	a, abr := dial(t, addr)
	io.WriteString(a, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	<-entered
	clock.advance(time.Hour)
	b, bbr := dial(t, addr)
	resp, body := readResp(t, b, bbr)
	wantEnvelope(t, "at the cap with an active connection", resp, body, 503, kv.EUnavailable)
	close(release)
	if resp, body := readResp(t, a, abr); resp.StatusCode != 200 || body != "done" {
		t.Fatalf("the active request: %d %s", resp.StatusCode, body)
	}
	_ = ln
}

func TestHeaderBudget(t *testing.T) {
	var mu sync.Mutex
	reasons := map[string]int{}
	ln, addr := serve(t, Config{MaxConns: 100, HeaderBudget: 64 << 10, FreeHeaderBytes: 1 << 10, OnRefuse: func(r string) { mu.Lock(); reasons[r]++; mu.Unlock() }}, okHandler)
	// Three clients send 40 KB of header each and never finish: the
	// budget holds one and a half of them.
	type cl struct {
		c  net.Conn
		br *bufio.Reader
	}
	var hogs []cl
	for range 3 {
		c, br := dial(t, addr)
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\nX-Pad: "+strings.Repeat("p", 40<<10))
		hogs = append(hogs, cl{c, br})
	}
	refused := 0
	for _, h := range hogs {
		h.c.SetReadDeadline(time.Now().Add(2 * time.Second))
		resp, err := http.ReadResponse(h.br, nil)
		if err != nil {
			continue // still sending its header: within the budget
		}
		b, _ := io.ReadAll(resp.Body)
		wantEnvelope(t, "over the header budget", resp, string(b), 431, kv.ETooLarge)
		refused++
	}
	if refused < 1 || refused > 2 {
		t.Fatalf("%d of 3 large headers refused; the budget holds one (and a part)", refused)
	}
	if held := ln.HeaderBytesHeld(); held > 64<<10 {
		t.Fatalf("header bytes held %d, over the budget", held)
	}
	// A request with a small header is served meanwhile.
	c, br := dial(t, addr)
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp, body := readResp(t, c, br); resp.StatusCode != 200 || body != "ok" {
		t.Fatalf("a small request during the flood: %d %s", resp.StatusCode, body)
	}
	// Closing the hogs returns what they held.
	for _, h := range hogs {
		h.c.Close()
	}
	deadline := time.Now().Add(10 * time.Second)
	for ln.HeaderBytesHeld() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("header bytes held after the clients left: %d", ln.HeaderBytesHeld())
		}
		time.Sleep(time.Millisecond)
	}
}

func TestTLSFramingAndEnvelope(t *testing.T) {
	cert := selfSigned(t)
	_, addr := serve(t, Config{MaxConns: 10, HeaderBudget: 1 << 20, TLS: &tls.Config{Certificates: []tls.Certificate{cert}}}, okHandler)
	c, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp, body := readResp(t, c, br); resp.StatusCode != 200 || body != "ok" {
		t.Fatalf("over TLS: %d %s", resp.StatusCode, body)
	}
	io.WriteString(c, "PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
	resp, body := readResp(t, c, br)
	wantEnvelope(t, "CL+TE over TLS", resp, body, 400, kv.EInvalid)
	if !resp.Close {
		t.Fatal("CL+TE over TLS: connection kept")
	}
	c2, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	io.WriteString(c2, "GET /%zz HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, body = readResp(t, c2, bufio.NewReader(c2))
	wantEnvelope(t, "bad escape over TLS", resp, body, 400, kv.EInvalid)
}

func selfSigned(t *testing.T) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "kvd"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// A handler's own error answer, in plain text and without X-Request-Id,
// is its own: only what net/http writes by itself is put in the envelope.
func TestHandlersOwnErrorsPassThrough(t *testing.T) {
	_, addr := serve(t, Config{MaxConns: 10, HeaderBudget: 1 << 20}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "no such page", http.StatusNotFound)
	}))
	c, br := dial(t, addr)
	io.WriteString(c, "GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, body := readResp(t, c, br)
	if resp.StatusCode != 404 || body != "no such page\n" || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
		t.Fatalf("a handler's plain-text 404 was rewritten: %d %q %q", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
}
