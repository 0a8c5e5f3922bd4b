package api

import (
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgekv/kv"
	"github.com/edgekv/kv/internal/fairshare"
	"github.com/edgekv/kv/internal/service"
	"github.com/edgekv/kv/internal/store"
)

// Request bodies and large responses are held in memory within budgets
// shared fairly by organizations (fairshare.Pool): a body over smallBody
// bytes (or of unknown length) is read only once the budget grants its
// length to the request's organization, and each bodyChunk of it must
// arrive within the pace (Config.SlowBody); a value over smallBody is
// written only once the response budget grants it, and each bodyChunk
// must be taken by the client within the pace. A request waits at most the
// pace for its grant, then gets 503. An organization over its share while
// another waits has its most recent grants taken back: those requests get
// 503 and their connections are closed.
const (
	// smallBody is the most a body or response may hold without a grant:
	// a connection's own buffers are of this size.
	smallBody = 4 << 10
	// bodyChunk is what must arrive, or be taken, within each pace.
	bodyChunk = 64 << 10
)

// DefaultBodyBudget and DefaultResponseBudget are the budgets' default
// sizes: sixteen 1 MiB values in flight each way.
const (
	DefaultBodyBudget     = 16 << 20
	DefaultResponseBudget = 16 << 20
)

// Value buffers come from size-classed pools, so a PUT does not allocate its
// body once warm.
var bufPools = [...]struct {
	size int
	pool sync.Pool
}{{size: smallBody}, {size: 64 << 10}, {size: kv.MaxValueSize + 1}}

func getBuf(n int) *[]byte {
	for i := range bufPools {
		p := &bufPools[i]
		if n <= p.size {
			if b, ok := p.pool.Get().(*[]byte); ok {
				return b
			}
			b := make([]byte, p.size)
			return &b
		}
	}
	b := make([]byte, n)
	return &b
}

func putBuf(b *[]byte) {
	for i := range bufPools {
		if cap(*b) == bufPools[i].size {
			bufPools[i].pool.Put(b)
			return
		}
	}
}

// body is a request body read whole.
type body struct {
	Data  []byte
	buf   *[]byte
	grant *fairshare.Grant
	more  []*fairshare.Grant // of a body that grew (readGrowing)
}

// release returns the body's memory.
func (b *body) release() {
	if b.buf != nil {
		putBuf(b.buf)
		b.buf = nil
	}
	b.grant.Release()
	for _, g := range b.more {
		g.Release()
	}
	b.more = nil
}

// Errors of reading a body.
var (
	errBodyIncomplete = kv.Errorf(kv.EInvalid, "the request body ended before it was complete; nothing was written")
	errBodyUnreadable = kv.Errorf(kv.EInvalid, "the request body could not be read; nothing was written")
)

func errBodyTooLarge(limit int) *kv.Error {
	if limit == kv.MaxValueSize {
		return kv.Errorf(kv.ETooLarge, "value is over the limit of %d bytes (1 MiB)", kv.MaxValueSize)
	}
	return kv.Errorf(kv.ETooLarge, "request body is over the limit of %d bytes", limit)
}

func errTooSlow(pace time.Duration) *kv.Error {
	return kv.Errorf(kv.EInvalid, "the request body arrived too slowly: each 64 KiB must arrive within %v", pace)
}

var errBodiesBusy = kv.Errorf(kv.EUnavailable, "too many request bodies are being received at once; try again")

// readBody reads r's body, of at most limit bytes, whole: a value is stored
// only if its body arrived complete (every declared byte, or the chunked
// terminator). Any other ending is an error, and so is a body over limit;
// after such an error the connection is closed, since the rest of the body
// may still be on its way. The caller must release the body.
func (h *Handler) readBody(w *recorder, r *http.Request, org string, limit int) (*body, error) {
	if r.ContentLength > int64(limit) {
		w.Header().Set("Connection", "close")
		return nil, errBodyTooLarge(limit)
	}
	if r.ContentLength == 0 {
		return &body{Data: []byte{}}, nil
	}
	if r.ContentLength < 0 && limit > kv.MaxValueSize {
		return h.readGrowing(w, r, org, limit)
	}
	want := limit + 1 // unknown length: room to see a body over limit
	if r.ContentLength > 0 {
		want = int(r.ContentLength)
	}
	b := &body{}
	var src io.Reader = r.Body
	var p *paced
	if want > smallBody {
		p = &paced{rc: http.NewResponseController(w), every: h.slowBody}
		g, err := h.bodies.Acquire(r.Context(), org, int64(want), h.slowBody, p.preempt)
		if err != nil {
			return nil, h.budgetError(w, r, err, errBodiesBusy)
		}
		b.grant = g
		p.r = r.Body
		src = p
	}
	b.buf = getBuf(want)
	buf := (*b.buf)[:min(cap(*b.buf), want)]
	n, err := readAll(src, buf)
	b.Data = buf[:n]
	if err == nil && n == len(buf) && r.ContentLength < 0 {
		err = errBodyTooLarge(limit) // limit+1 bytes arrived
	}
	if err != nil {
		b.release()
		w.Header().Set("Connection", "close")
		return nil, bodyError(r, err, limit)
	}
	if p != nil {
		// The pace's deadline must not outlive the body: net/http's read
		// in the background, which watches for the client going away,
		// would take its expiry for that and cancel the request.
		p.rc.SetReadDeadline(time.Time{})
	}
	return b, nil
}

// readGrowing reads a body of unknown length whose limit is larger than a
// value's (a batch): its buffer, and its grant of the budget, grow as it
// arrives, so that a small body holds little of the budget and a large one
// at most limit bytes of it.
func (h *Handler) readGrowing(w *recorder, r *http.Request, org string, limit int) (*body, error) {
	p := &paced{r: r.Body, rc: http.NewResponseController(w), every: h.slowBody}
	b := &body{}
	fail := func(err error) (*body, error) {
		b.release()
		w.Header().Set("Connection", "close")
		return nil, err
	}
	var buf []byte
	for {
		if len(buf) == limit {
			// Full: the body must end here.
			var one [1]byte
			n, err := io.ReadFull(p, one[:])
			if n > 0 {
				return fail(errBodyTooLarge(limit))
			}
			if err != io.EOF {
				return fail(bodyError(r, err, limit))
			}
			break
		}
		if len(buf) == cap(buf) {
			next := min(max(2*cap(buf), bodyChunk), limit)
			g, err := h.bodies.Acquire(r.Context(), org, int64(next-cap(buf)), h.slowBody, p.preempt)
			if err != nil {
				return fail(h.budgetError(w, r, err, errBodiesBusy))
			}
			b.more = append(b.more, g)
			buf = append(make([]byte, 0, next), buf...)
		}
		n, err := p.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			break
		}
		if err != nil {
			return fail(bodyError(r, err, limit))
		}
	}
	p.rc.SetReadDeadline(time.Time{})
	b.Data = buf
	return b, nil
}

// readAll reads src into buf until src ends (io.EOF) or buf is full; a
// full buf is followed by one more read that must see the end. It returns
// nil only when src ended properly.
func readAll(src io.Reader, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		m, err := src.Read(buf[n:])
		n += m
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
	var one [1]byte
	for {
		m, err := src.Read(one[:])
		if m > 0 {
			return n, errOverflow
		}
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
}

var errOverflow = errors.New("body longer than declared")

// bodyError maps the error that ended a body's read.
func bodyError(r *http.Request, err error, limit int) error {
	var ke *kv.Error
	switch {
	case errors.As(err, &ke):
		return ke
	case errors.Is(err, errOverflow):
		return errBodyTooLarge(limit)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return errBodyIncomplete
	case r.Context().Err() != nil:
		return context.Cause(r.Context())
	}
	return errBodyUnreadable
}

// budgetError maps a failed fairshare.Acquire.
func (h *Handler) budgetError(w *recorder, r *http.Request, err error, busy *kv.Error) error {
	if r.Context().Err() != nil {
		return r.Context().Err()
	}
	w.Header().Set("Retry-After", "1")
	return busy
}

// paced reads a body that must deliver each bodyChunk within every: it
// moves the connection's read deadline forward at each chunk's start, so
// a client trickling its body is cut off instead of holding memory for
// long. A preempted read ends at once.
type paced struct {
	r         io.Reader
	rc        *http.ResponseController
	every     time.Duration
	left      int // bytes of the current chunk still to come
	armed     bool
	preempted atomic.Bool
}

func (p *paced) Read(b []byte) (int, error) {
	if p.preempted.Load() {
		return 0, errPreempted
	}
	if p.left <= 0 {
		p.armed = p.rc.SetReadDeadline(time.Now().Add(p.every)) == nil
		p.left = bodyChunk
	}
	n, err := p.r.Read(b[:min(len(b), p.left)])
	p.left -= n
	if err != nil && errors.Is(err, os.ErrDeadlineExceeded) {
		if p.preempted.Load() {
			return n, errPreempted
		}
		if p.armed {
			return n, errTooSlow(p.every)
		}
	}
	return n, err
}

// preempt ends the read: called by the budget from another goroutine.
func (p *paced) preempt() {
	p.preempted.Store(true)
	p.rc.SetReadDeadline(time.Now())
}

var errPreempted = kv.Errorf(kv.EUnavailable, "this organization is receiving more than its share of request bodies while others wait; try again")

var errResponsesBusy = kv.Errorf(kv.EUnavailable, "too many large values are being sent at once; try again")

// pacedWriter writes a response's body in chunks, each of which the
// client must take within every.
type pacedWriter struct {
	w         io.Writer
	rc        *http.ResponseController
	every     time.Duration
	preempted atomic.Bool
}

func (p *pacedWriter) write(b []byte) error {
	for len(b) > 0 {
		if p.preempted.Load() {
			return errPreempted
		}
		n := min(len(b), bodyChunk)
		p.rc.SetWriteDeadline(time.Now().Add(p.every))
		if _, err := p.w.Write(b[:n]); err != nil {
			return err
		}
		b = b[n:]
	}
	return nil
}

func (p *pacedWriter) preempt() {
	p.preempted.Store(true)
	p.rc.SetWriteDeadline(time.Now())
}

// getValue reads key for a response. A value over smallBody is returned
// with a grant of the response budget for it: when none is to be had at
// once, the value is let go while the grant is waited for, and read again
// (uncounted) once it is there.
func (h *Handler) getValue(w *recorder, r *http.Request, who service.Principal, rt route, pw *pacedWriter) (*valueRead, error) {
	v, err := h.svc.GetKey(r.Context(), who, rt.ns, rt.key)
	if err != nil || len(v.Data) <= smallBody {
		return &valueRead{v: v}, err
	}
	for range 3 {
		g, gerr := h.responses.Acquire(r.Context(), who.Org, int64(len(v.Data)), 0, pw.preempt)
		if gerr == nil {
			return &valueRead{v: v, grant: g}, nil
		}
		size := len(v.Data)
		v.Close()
		g, gerr = h.responses.Acquire(r.Context(), who.Org, int64(size), h.slowBody, pw.preempt)
		if gerr != nil {
			return nil, h.budgetError(w, r, gerr, errResponsesBusy)
		}
		v, err = h.svc.RereadKey(r.Context(), who, rt.ns, rt.key)
		if err != nil || len(v.Data) <= size {
			return &valueRead{v: v, grant: g}, err
		}
		g.Release() // it grew meanwhile
	}
	v.Close()
	w.Header().Set("Retry-After", "1")
	return nil, errResponsesBusy
}

// valueRead is a value being answered and the grant it is held under.
type valueRead struct {
	v     *store.Value
	grant *fairshare.Grant
}

func (vr *valueRead) close() {
	if vr.v != nil {
		vr.v.Close()
	}
	vr.grant.Release()
}
