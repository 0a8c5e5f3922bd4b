package api

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/edgekv/kv"
	"github.com/edgekv/kv/internal/service"
	"github.com/edgekv/kv/internal/sockpeek"
	"github.com/edgekv/kv/internal/store"
)

// The watch stream (API.md, "Watch"): Server-Sent Events.
const (
	// pingEvery is how often an idle stream gets a ": ping" comment.
	pingEvery = 15 * time.Second
	// watchWriteTimeout is how long one write to a watcher may block
	// before the stream is closed: a client that takes nothing for that
	// long is gone or hostile.
	watchWriteTimeout = 30 * time.Second
	// peekEvery is how often a stream on a connection of its own looks
	// whether its client has closed the connection: a system call, of
	// which ten thousand streams would otherwise make ten thousand a
	// second.
	peekEvery = 5 * time.Second
)

func (h *Handler) watch(w *recorder, r *http.Request, who service.Principal, id kv.ID, token string) {
	q, err := parseQuery(r.URL.RawQuery, "prefix", "since", "snapshot", "values")
	if err != nil {
		h.fail(w, err)
		return
	}
	opts := service.WatchOptions{Prefix: q["prefix"]}
	if opts.Snapshot, err = q.boolean("snapshot"); err != nil {
		h.fail(w, err)
		return
	}
	if opts.Values, err = q.boolean("values"); err != nil {
		h.fail(w, err)
		return
	}
	// Last-Event-ID is what an EventSource sends when it reconnects, with
	// the URL (and its since) it first opened: it is the later position.
	if v, ok := r.Header["Last-Event-Id"]; ok {
		rev, err := parseRevision(strings.Join(v, ","))
		if err != nil {
			h.fail(w, kv.Errorf(kv.EInvalid, "the Last-Event-ID header must be a revision (a decimal integer); got %q", truncate(strings.Join(v, ","), 32)))
			return
		}
		opts.Since, opts.HasSince = rev, true
	} else if v, ok := q["since"]; ok {
		rev, err := parseRevision(v)
		if err != nil {
			h.fail(w, paramError("since", "since must be a revision (a decimal integer); got %q", truncate(v, 32)))
			return
		}
		opts.Since, opts.HasSince = rev, true
	}
	if opts.HasSince {
		opts.Snapshot = false // the watcher has its copy; it resumes
	}
	ctx := r.Context()
	wt, err := h.svc.Watch(ctx, who, id, opts)
	if err != nil {
		h.fail(w, err)
		return
	}
	closeWatcher := true // unless a goroutine of the stream's own takes it
	defer func() {
		if closeWatcher {
			wt.Close()
		}
	}()

	// A stream outlives the server's read and write timeouts: each write
	// gets its own deadline instead, and the request has been read.
	rc := http.NewResponseController(w)
	rc.SetReadDeadline(time.Time{})
	hd := w.Header()
	hd.Set("Content-Type", "text/event-stream")
	hd.Set("Cache-Control", "no-cache")
	hd.Set("X-Accel-Buffering", "no") // proxies must not hold events back
	// Not chunked: the body runs to the end of the connection, as the
	// SSE recommendation suggests. A chunked batch larger than the
	// connection's 4 KiB buffer takes three writes to the socket (the
	// chunk's header with the start of the data, the rest, its CRLF);
	// unchunked, one.
	hd.Set("Transfer-Encoding", "identity")
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return
	}
	// The status goes out now: a watch resumed with since may have
	// nothing to send for a long while, and its client waits for the
	// headers.
	rc.SetWriteDeadline(time.Now().Add(watchWriteTimeout))
	if err := rc.Flush(); err != nil {
		return
	}
	st := &stream{h: h, wt: wt, opts: opts, token: token, addr: r.RemoteAddr, id: w.id}
	// The rest of the stream is bytes to the end of the connection: it
	// takes the connection over from net/http, which would otherwise
	// keep, for each of ten thousand streams, a goroutine reading the
	// connection, its buffers, and this goroutine's grown stack. The
	// stream goes on in a goroutine of its own, and looks now and then
	// whether its client has left (peekEvery). Where the connection
	// cannot be taken over (HTTP/2), the stream runs here, on the
	// response.
	conn, _, err := rc.Hijack()
	if err != nil {
		st.s = &sseWriter{w: w, rc: rc, values: opts.Values}
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		defer context.AfterFunc(h.streamsCtx, cancel)() // a stop of the server ends it too
		st.run(ctx)
		return
	}
	st.s = &sseWriter{conn: conn, values: opts.Values}
	w.detached = true
	served, start := w.summary(r), w.start
	served.ctx = context.Background() // the request's ends as the handler returns
	sctx, cancel := context.WithCancel(h.streamsCtx)
	h.streams.Add(1)
	closeWatcher = false
	// A stop of the server closes the connection too: a write blocked
	// on a client that reads nothing ends at once.
	stop := context.AfterFunc(sctx, func() { conn.Close() })
	go func() {
		defer h.streams.Done()
		defer cancel()
		defer stop()
		defer conn.Close()
		defer wt.Close()
		st.run(sctx)
		h.served(served, st.s.sent, time.Since(start))
	}()
}

// stream is one watch stream being sent.
type stream struct {
	h     *Handler
	s     *sseWriter
	wt    *service.Watcher
	opts  service.WatchOptions
	token string
	addr  string // the client's, for the token's checks
	id    string // the request's id
}

// run sends the snapshot (if asked), the ready event (unless the watch
// resumes) and the changes, until the client goes, the watch ends, or
// the server stops.
func (st *stream) run(ctx context.Context) {
	h, s, wt := st.h, st.s, st.wt
	defer s.release()
	if st.opts.Snapshot {
		// A stop of the server ends a snapshot too, between two keys: a
		// slow client would otherwise hold the shutdown until its end.
		send := func(e *service.Event) error {
			if h.closing.Load() {
				return errClosing
			}
			return s.event(e)
		}
		if _, err := wt.Snapshot(ctx, send); err != nil {
			// The status is sent; the stream just ends, and the
			// client resumes or starts again.
			h.log.Debug("watch: snapshot ended", "request_id", st.id, "err", err)
			return
		}
	}
	if !st.opts.HasSince {
		s.ready(wt.Revision())
	}
	if s.flush() != nil {
		return
	}
	// The token is not checked again and again: its hold says when it
	// must be (revoked, here or in another process, or expired), so that
	// a stream stops within about a second of its token, as everything
	// else does, and an idle one wakes only for its pings and its looks
	// at the client.
	_, hold, err := h.svc.HoldToken(ctx, st.token, st.addr)
	if err != nil {
		return
	}
	idle := pingEvery
	if s.conn != nil {
		idle = peekEvery
	}
	lastPing, lastPeek := time.Now(), time.Now()
	for {
		wait := idle
		if !hold.Expires.IsZero() {
			wait = min(wait, time.Until(hold.Expires))
		}
		evs, err := wt.Next(ctx, wait, hold.Dropped)
		if err != nil {
			return
		}
		for _, e := range evs {
			if e.Kind == service.EventOverflow {
				s.overflow(e.Change.Revision)
				s.flush()
				return
			}
			s.event(e)
		}
		if len(evs) == 0 && time.Since(lastPing) >= pingEvery {
			s.write(pingFrame)
		}
		if s.pending() {
			if s.flush() != nil {
				return
			}
			lastPing = time.Now()
		}
		if h.closing.Load() {
			return
		}
		now := time.Now()
		if hold.Stale(now) {
			if _, hold, err = h.svc.HoldToken(ctx, st.token, st.addr); err != nil {
				return
			}
		}
		// Nothing reads a stream's connection of its own: it looks now
		// and then whether its client has gone. (Next returns from half
		// of its wait on, at a tick of a clock shared by every stream.)
		if now.Sub(lastPeek) >= peekEvery/2 {
			if s.conn != nil && sockpeek.Look(s.conn) == sockpeek.Closed {
				return
			}
			hold.Touch(now)
			lastPeek = now
		}
	}
}

// errClosing ends a snapshot when the server stops.
var errClosing = errors.New("the server is stopping")

// parseRevision parses a decimal revision.
func parseRevision(s string) (store.Revision, error) {
	n, err := strconv.ParseUint(strings.TrimSpace(s), 10, 64)
	return store.Revision(n), err
}

// boolean returns parameter name as a bool: true or false (absent:
// false); anything else is an error.
func (q query) boolean(name string) (bool, error) {
	switch v, ok := q[name]; {
	case !ok || v == "false":
		return false, nil
	case v == "true":
		return true, nil
	default:
		return false, paramError(name, "%s must be true or false; got %q", name, truncate(v, 32))
	}
}

// pingFrame is the comment that keeps an idle stream's connection alive.
var pingFrame = []byte(": ping\n\n")

// sseFlushAt is how many bytes of events a stream gathers before it
// writes them out, if its batch has more.
const sseFlushAt = 32 << 10

// sseBuffers holds the buffers streams gather their events in. A stream
// holds one only from its first event to the flush that follows, so that
// ten thousand streams waiting for a change hold none, and a batch of
// events still goes out in one write.
var sseBuffers = sync.Pool{New: func() any { b := make([]byte, 0, sseFlushAt); return &b }}

// rearmEvery is how often a stream's write deadline is pushed back: it is
// a timer update, too costly to make for every batch of ten thousand
// streams, and the deadline is set that much further away.
const rearmEvery = 10 * time.Second

// sseWriter gathers a stream's events and writes them out, the writes
// under a deadline at least watchWriteTimeout away: to conn, the
// connection taken over from net/http, or else to the response w.
type sseWriter struct {
	conn   net.Conn
	w      http.ResponseWriter
	rc     *http.ResponseController
	values bool
	buf    *[]byte   // from sseBuffers while events wait for a flush
	armed  time.Time // when the write deadline was last set
	sent   int64     // bytes written to conn
	err    error
}

// take makes sure the stream holds a buffer and returns it.
func (s *sseWriter) take() *[]byte {
	if s.buf == nil {
		s.buf = sseBuffers.Get().(*[]byte)
	}
	return s.buf
}

func (s *sseWriter) pending() bool { return s.buf != nil && len(*s.buf) > 0 }

func (s *sseWriter) write(b []byte) {
	p := s.take()
	*p = append(*p, b...)
}

func (s *sseWriter) event(e *service.Event) error {
	if s.err != nil {
		return s.err
	}
	s.write(e.Frame(s.values, encodeEvent))
	if len(*s.buf) >= sseFlushAt {
		return s.flush()
	}
	return nil
}

func (s *sseWriter) ready(rev store.Revision) { s.revisionEvent("ready", rev) }

func (s *sseWriter) overflow(rev store.Revision) { s.revisionEvent("overflow", rev) }

// revisionEvent adds an event whose data is only a revision.
func (s *sseWriter) revisionEvent(kind string, rev store.Revision) {
	p := s.take()
	b := append(*p, "event: "...)
	b = append(b, kind...)
	b = append(b, "\ndata: {\"revision\":"...)
	b = strconv.AppendUint(b, uint64(rev), 10)
	*p = append(b, "}\n\n"...)
}

func (s *sseWriter) flush() error {
	if s.err != nil || !s.pending() {
		return s.err
	}
	rearm := false
	if now := time.Now(); now.Sub(s.armed) >= rearmEvery {
		rearm, s.armed = true, now
	}
	deadline := s.armed.Add(watchWriteTimeout + rearmEvery)
	var err error
	if s.conn != nil {
		if rearm {
			s.conn.SetWriteDeadline(deadline)
		}
		var n int
		n, err = s.conn.Write(*s.buf)
		s.sent += int64(n)
	} else {
		if rearm {
			s.rc.SetWriteDeadline(deadline)
		}
		if _, err = s.w.Write(*s.buf); err == nil {
			err = s.rc.Flush()
		}
	}
	s.release()
	s.err = err
	return err
}

// release gives the stream's buffer back, with whatever it holds.
func (s *sseWriter) release() {
	if s.buf == nil {
		return
	}
	if cap(*s.buf) <= 4*sseFlushAt { // not one grown by a large value
		*s.buf = (*s.buf)[:0]
		sseBuffers.Put(s.buf)
	}
	s.buf = nil
}

// encodeEvent is an event's frame: its id, its kind and its data.
//
//	id: 1042
//	event: put
//	data: {"key":"user/1","revision":1042,"etag":"\"…\"","size_bytes":21,"content_type":"application/json","updated_at":"…","expires_at":null}
func encodeEvent(e *service.Event, values bool) []byte {
	c := &e.Change
	b := make([]byte, 0, 192+len(c.Key)+len(c.Value)*2)
	b = append(b, "id: "...)
	b = strconv.AppendUint(b, uint64(c.Revision), 10)
	b = append(b, "\nevent: "...)
	b = append(b, e.Kind.String()...)
	b = append(b, "\ndata: {\"key\":"...)
	b = appendJSONString(b, c.Key)
	b = append(b, `,"revision":`...)
	b = strconv.AppendUint(b, uint64(c.Revision), 10)
	if e.Kind == service.EventPut {
		b = append(b, `,"etag":`...)
		b = appendJSONString(b, kv.FormatETag(uint64(c.Revision)))
		b = append(b, `,"size_bytes":`...)
		b = strconv.AppendInt(b, c.Size, 10)
		b = append(b, `,"content_type":`...)
		b = appendJSONString(b, c.ContentType)
		b = append(b, `,"updated_at":"`...)
		b = appendKeyTime(b, c.UpdatedAt)
		b = append(b, `","expires_at":`...)
		if c.ExpiresAt.IsZero() {
			b = append(b, "null"...)
		} else {
			b = append(b, '"')
			b = appendKeyTime(b, c.ExpiresAt)
			b = append(b, '"')
		}
		if values && c.HasValue {
			if utf8.Valid(c.Value) {
				b = append(b, `,"value":`...)
				b = appendJSONString(b, string(c.Value))
			} else {
				b = append(b, `,"value_base64":"`...)
				b = base64.StdEncoding.AppendEncode(b, c.Value)
				b = append(b, '"')
			}
		}
	}
	return append(b, "}\n\n"...)
}

// appendJSONString appends s as a JSON string. Escaping U+2028 and
// U+2029 as encoding/json does keeps the data on one line for every
// reader; a newline in the data would end the event.
func appendJSONString(b []byte, s string) []byte {
	q, _ := json.Marshal(s) // a string always encodes
	return append(b, q...)
}
