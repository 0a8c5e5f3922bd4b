// Package httpconn guards the connections kvd serves HTTP/1.1 on, beneath
// net/http, where a handler cannot reach:
//
//   - it caps how many connections are open, so kvd never runs out of file
//     descriptors: at the cap it closes the connection that has waited
//     longest without sending a request (a new connection silent for over a
//     second, or an idle keep-alive one), and otherwise answers the new
//     connection 503 and closes it; connections serving a request are never
//     touched;
//   - it keeps the header bytes that connections hold while a request's
//     header section arrives within one budget (beyond a small allowance
//     per connection), so that many clients trickling large headers cannot
//     exhaust memory;
//   - it follows each request's framing, so the handler learns what
//     net/http hides: a request that carried both Content-Length and
//     Transfer-Encoding (net/http drops the former);
//   - it turns the plain-text errors net/http writes by itself (a malformed
//     request line, header or escape, headers too large, an unsupported
//     transfer coding) into the API's error envelope.
package httpconn

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgekv/kv"
)

// Config configures a Listener.
type Config struct {
	// MaxConns is the most connections open at once (> 0).
	MaxConns int
	// HeaderBudget is the header bytes that all connections together may
	// hold beyond FreeHeaderBytes each while their requests' header
	// sections arrive (> 0).
	HeaderBudget int64
	// FreeHeaderBytes is the header bytes a request may hold without
	// drawing on HeaderBudget (default 8 KiB).
	FreeHeaderBytes int
	// TLS, when set, serves TLS on every connection.
	TLS *tls.Config
	// EvictAfter is how long a connection must have been silent (new,
	// or idle between requests) before it may be closed to make room at
	// the cap (default 1s).
	EvictAfter time.Duration
	// OnRefuse is called once for every connection refused or closed by
	// the listener, with the reason ("max_connections", "evicted",
	// "header_budget"); nil does nothing.
	OnRefuse func(reason string)
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Listener accepts connections within the limits of its Config. Install
// its ConnState and ConnContext in the http.Server that serves it, and
// its Handler around the server's handler.
type Listener struct {
	net.Listener
	cfg Config

	hdrUsed atomic.Int64 // bytes drawn on HeaderBudget

	mu   sync.Mutex
	open int
	// Connections that are silent (new, or idle between requests), oldest
	// first: the candidates for eviction.
	fresh, idle connList

	refusing chan struct{} // bounds the goroutines answering refused connections
}

// NewListener returns a Listener that accepts from ln.
func NewListener(ln net.Listener, cfg Config) *Listener {
	if cfg.FreeHeaderBytes <= 0 {
		cfg.FreeHeaderBytes = 8 << 10
	}
	if cfg.EvictAfter <= 0 {
		cfg.EvictAfter = time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.OnRefuse == nil {
		cfg.OnRefuse = func(string) {}
	}
	return &Listener{Listener: ln, cfg: cfg, refusing: make(chan struct{}, 32)}
}

// Open is the number of connections open now.
func (l *Listener) Open() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.open
}

// HeaderBytesHeld is how much of HeaderBudget is drawn on now.
func (l *Listener) HeaderBytesHeld() int64 { return l.hdrUsed.Load() }

// Accept waits for a connection it can admit.
func (l *Listener) Accept() (net.Conn, error) {
	for {
		raw, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if !l.admit() {
			l.refuse(raw)
			continue
		}
		c := &Conn{l: l, raw: raw}
		c.Conn = raw
		if l.cfg.TLS != nil {
			c.Conn = tls.Server(raw, l.cfg.TLS)
		}
		l.mu.Lock()
		c.since = l.cfg.Now()
		l.fresh.pushBack(c)
		l.mu.Unlock()
		return c, nil
	}
}

// admit counts a new connection in, making room at the cap by closing the
// longest-silent connection if one has been silent long enough.
func (l *Listener) admit() bool {
	for range 8 { // a victim may already be closing by itself
		l.mu.Lock()
		if l.open < l.cfg.MaxConns {
			l.open++
			l.mu.Unlock()
			return true
		}
		cutoff := l.cfg.Now().Add(-l.cfg.EvictAfter)
		var victim *Conn
		for _, list := range []*connList{&l.fresh, &l.idle} {
			if c := list.head; c != nil && !c.since.After(cutoff) {
				victim = c
				break
			}
		}
		if victim != nil {
			victim.list.remove(victim)
		}
		l.mu.Unlock()
		if victim == nil {
			return false
		}
		l.cfg.OnRefuse("evicted")
		victim.Close()
	}
	return false
}

// refuse answers a connection that cannot be admitted with a 503 in the
// envelope (plain HTTP only) and closes it.
func (l *Listener) refuse(c net.Conn) {
	l.cfg.OnRefuse("max_connections")
	if l.cfg.TLS != nil {
		c.Close()
		return
	}
	select {
	case l.refusing <- struct{}{}:
	default:
		c.Close() // already answering many: do not add to the load
		return
	}
	go func() {
		defer func() { <-l.refusing }()
		defer c.Close()
		c.SetDeadline(time.Now().Add(time.Second))
		e := kv.Errorf(kv.EUnavailable, "kvd is serving its limit of %d connections; try again shortly", l.cfg.MaxConns)
		c.Write(errorResponse(http.StatusServiceUnavailable, e, "Retry-After: 1\r\n"))
	}()
}

// ConnState is the http.Server's ConnState hook: it tracks which
// connections are silent.
func (l *Listener) ConnState(nc net.Conn, state http.ConnState) {
	c, ok := nc.(*Conn)
	if !ok {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if c.list != nil {
		c.list.remove(c)
	}
	switch state {
	case http.StateIdle:
		c.since = l.cfg.Now()
		l.idle.pushBack(c)
	case http.StateNew:
		l.fresh.pushBack(c)
	}
}

type connKey struct{}

// ConnContext is the http.Server's ConnContext hook: it makes the
// connection known to Handler.
func (l *Listener) ConnContext(ctx context.Context, nc net.Conn) context.Context {
	if c, ok := nc.(*Conn); ok {
		return context.WithValue(ctx, connKey{}, c)
	}
	return ctx
}

// Handler wraps next: a request that carried both Content-Length and
// Transfer-Encoding is answered 400 and its connection closed, and so is
// one whose framing could not be followed (after next answers it).
func Handler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, _ := r.Context().Value(connKey{}).(*Conn)
		if c == nil {
			next.ServeHTTP(w, r)
			return
		}
		c.inHandler.Store(true)
		defer c.inHandler.Store(false)
		c.mu.Lock()
		v := c.framer.next()
		c.mu.Unlock()
		switch {
		case v.ContentLengthAndChunked:
			e := kv.Errorf(kv.EInvalid, "a request must not carry both Content-Length and Transfer-Encoding")
			w.Header().Set("Connection", "close")
			writeError(w, http.StatusBadRequest, e)
			// Out now, while the handler runs: Write would take a response
			// written after it for one of net/http's own.
			http.NewResponseController(w).Flush()
			return
		case !v.Known:
			w.Header().Set("Connection", "close")
		}
		next.ServeHTTP(w, r)
	})
}

// Conn is a connection accepted by a Listener.
type Conn struct {
	net.Conn          // raw, or TLS over raw
	raw      net.Conn // the TCP connection
	l        *Listener

	inHandler atomic.Bool // a handler is serving a request of it

	mu      sync.Mutex // guards framer and charged
	framer  framer
	charged int64 // bytes drawn on the listener's header budget

	closeOnce sync.Once

	// Guarded by the listener's mu.
	list       *connList
	prev, next *Conn
	since      time.Time
}

// errHeaderBudget ends a connection whose header bytes would exceed the
// budget; net/http closes a connection whose read fails with EOF without
// answering, the answer having been written already.
var errHeaderBudget = io.EOF

// Read reads from the client and follows the framing of what it read.
func (c *Conn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		if herr := c.follow(p[:n]); herr != nil {
			return 0, herr
		}
	}
	return n, err
}

// follow feeds b to the framer and settles the header bytes it holds with
// the budget.
func (c *Conn) follow(b []byte) error {
	c.mu.Lock()
	c.framer.feed(b)
	want := int64(max(0, c.framer.pending()-c.l.cfg.FreeHeaderBytes))
	delta := want - c.charged
	c.charged = want
	c.mu.Unlock()
	if delta == 0 {
		return nil
	}
	if used := c.l.hdrUsed.Add(delta); delta > 0 && used > c.l.cfg.HeaderBudget {
		c.l.cfg.OnRefuse("header_budget")
		e := kv.Errorf(kv.ETooLarge, "kvd is receiving too many large request headers at once; send smaller headers or try again shortly")
		c.Conn.SetWriteDeadline(time.Now().Add(time.Second))
		c.Conn.Write(errorResponse(http.StatusRequestHeaderFieldsTooLarge, e, "Retry-After: 1\r\n"))
		c.Close()
		return errHeaderBudget
	}
	return nil
}

// Write writes to the client; an error net/http writes by itself, in
// plain text, is sent in the API's envelope instead.
func (c *Conn) Write(p []byte) (int, error) {
	if !c.inHandler.Load() {
		if status, detail, ok := netHTTPError(p); ok {
			if _, err := c.Conn.Write(errorResponse(status, envelopeError(status, detail), "")); err != nil {
				return 0, err
			}
			return len(p), nil
		}
	}
	return c.Conn.Write(p)
}

// Close closes the connection and returns what it held.
func (c *Conn) Close() error {
	err := c.Conn.Close()
	c.closeOnce.Do(func() {
		c.mu.Lock()
		charged := c.charged
		c.charged = 0
		c.mu.Unlock()
		c.l.hdrUsed.Add(-charged)
		c.l.mu.Lock()
		c.l.open--
		if c.list != nil {
			c.list.remove(c)
		}
		c.l.mu.Unlock()
	})
	return err
}

// NetConn returns the TCP connection under c, for a look at its socket
// (see sockpeek).
func (c *Conn) NetConn() net.Conn { return c.raw }

// ConnectionState lets net/http and handlers see the TLS state.
func (c *Conn) ConnectionState() (tls.ConnectionState, bool) {
	if tc, ok := c.Conn.(*tls.Conn); ok {
		return tc.ConnectionState(), true
	}
	return tls.ConnectionState{}, false
}

// netHTTPError recognises an error response that net/http writes by
// itself: for a request it cannot parse, "HTTP/1.1 NNN Text" with exactly
// the headers "Content-Type: text/plain; charset=utf-8" and "Connection:
// close", then "NNN Text[: detail]"; for an Expect it does not support, a
// 417 (kvd's own responses all carry X-Request-Id). It returns the status
// and net/http's detail, if any.
func netHTTPError(p []byte) (status int, detail string, ok bool) {
	if len(p) < 12 || !bytes.HasPrefix(p, []byte("HTTP/1.")) || p[8] != ' ' {
		return 0, "", false
	}
	status, err := strconv.Atoi(string(p[9:12]))
	if err != nil || status < 400 {
		return 0, "", false
	}
	const plainHeaders = "\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n"
	eol := bytes.Index(p, []byte("\r\n"))
	if eol >= 0 && bytes.HasPrefix(p[eol:], []byte(plainHeaders)) {
		body := string(p[eol+len(plainHeaders):])
		if _, d, found := cutString(body, ": "); found {
			detail = d
		}
		return status, detail, true
	}
	if status == http.StatusExpectationFailed {
		end := bytes.Index(p, []byte("\r\n\r\n"))
		if end >= 0 && !bytes.Contains(p[:end], []byte("\r\nX-Request-Id:")) {
			return status, "", true
		}
	}
	return 0, "", false
}

func cutString(s, sep string) (before, after string, found bool) {
	if i := bytes.Index([]byte(s), []byte(sep)); i >= 0 {
		return s[:i], s[i+len(sep):], true
	}
	return s, "", false
}

// envelopeError is the error sent in place of net/http's own.
func envelopeError(status int, detail string) *kv.Error {
	switch status {
	case http.StatusRequestHeaderFieldsTooLarge:
		return kv.Errorf(kv.ETooLarge, "the request's headers are over the limit; send smaller headers")
	case http.StatusNotImplemented:
		return kv.Errorf(kv.EInvalid, "unsupported Transfer-Encoding; the only transfer coding accepted is chunked")
	case http.StatusHTTPVersionNotSupported:
		return kv.Errorf(kv.EInvalid, "unsupported HTTP version; send HTTP/1.1")
	case http.StatusExpectationFailed:
		return kv.Errorf(kv.EInvalid, "unsupported Expect header; the only expectation accepted is 100-continue")
	}
	if detail != "" && len(detail) <= 200 {
		return kv.Errorf(kv.EInvalid, "the request could not be parsed: %s", detail)
	}
	return kv.Errorf(kv.EInvalid, "the request could not be parsed: a malformed request line, header or URL (a %% in a path or query must begin an escape such as %%2F)")
}

// errorResponse is a whole HTTP/1.1 response carrying e in the envelope,
// closing the connection.
func errorResponse(status int, e *kv.Error, extraHeaders string) []byte {
	body, _ := json.Marshal(e.Envelope())
	var b bytes.Buffer
	fmt.Fprintf(&b, "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\nX-Should-Retry: %t\r\n%s\r\n",
		status, http.StatusText(status), len(body), kv.ShouldRetry(status, e), extraHeaders)
	b.Write(body)
	return b.Bytes()
}

// writeError answers e in the envelope through a ResponseWriter.
func writeError(w http.ResponseWriter, status int, e *kv.Error) {
	body, _ := json.Marshal(e.Envelope())
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	h.Set("X-Should-Retry", strconv.FormatBool(kv.ShouldRetry(status, e)))
	w.WriteHeader(status)
	w.Write(body)
}

// connList is an intrusive list of connections, oldest first.
type connList struct{ head, tail *Conn }

func (l *connList) pushBack(c *Conn) {
	c.list, c.prev, c.next = l, l.tail, nil
	if l.tail != nil {
		l.tail.next = c
	} else {
		l.head = c
	}
	l.tail = c
}

func (l *connList) remove(c *Conn) {
	if c.prev != nil {
		c.prev.next = c.next
	} else {
		l.head = c.next
	}
	if c.next != nil {
		c.next.prev = c.prev
	} else {
		l.tail = c.prev
	}
	c.list, c.prev, c.next = nil, nil, nil
}
