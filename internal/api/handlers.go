package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/edgekv/kv"
	"github.com/edgekv/kv/internal/service"
)

// maxJSONBody bounds the JSON body of a namespace creation.
const maxJSONBody = 64 << 10

func (h *Handler) fail(w *recorder, err error) { writeError(w, w.id, h.log, err) }

func (h *Handler) createNamespace(w *recorder, r *http.Request, org string) {
	if r.ContentLength > maxJSONBody {
		w.Header().Set("Connection", "close")
		h.fail(w, kv.Errorf(kv.ETooLarge, "request body is over %d bytes", maxJSONBody))
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxJSONBody))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			h.fail(w, kv.Errorf(kv.ETooLarge, "request body is over %d bytes", maxJSONBody))
			return
		}
		h.fail(w, kv.Errorf(kv.EInvalid, "could not read the request body"))
		return
	}
	name, err := parseCreateBody(body)
	if err != nil {
		h.fail(w, err)
		return
	}
	ns, err := h.svc.CreateNamespace(r.Context(), org, name)
	if err != nil {
		h.fail(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, namespaceEnvelope{Data: ns.Record()})
}

// parseCreateBody extracts the name from {"name": "..."}.
func parseCreateBody(body []byte) (string, error) {
	bad := kv.Errorf(kv.EInvalid, `request body must be a JSON object like {"name": "my-cache"}`)
	if len(bytes.TrimSpace(body)) == 0 {
		return "", bad
	}
	var fields map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&fields); err != nil || fields == nil {
		return "", bad
	}
	if _, err := dec.Token(); err != io.EOF {
		return "", bad
	}
	raw, ok := fields["name"]
	if !ok {
		return "", kv.Errorf(kv.EInvalid, "name is required; it may contain only lowercase letters, numbers and hyphens").WithPointer("/name")
	}
	var name string
	if err := json.Unmarshal(raw, &name); err != nil {
		return "", kv.Errorf(kv.EInvalid, "name must be a string").WithPointer("/name")
	}
	return name, nil
}

// queryInt parses an integer query parameter; absent gives def.
func queryInt(q url.Values, name string, def int, what string) (int, error) {
	v, ok := q[name]
	if !ok || len(v) == 0 {
		return def, nil
	}
	n, err := strconv.Atoi(v[0])
	if err != nil {
		if ne, ok := err.(*strconv.NumError); ok && ne.Err == strconv.ErrRange && v[0] != "" && v[0][0] != '-' {
			return int(^uint(0) >> 1), nil // huge: clamped by the caller
		}
		return 0, kv.Errorf(kv.EInvalid, "%s must be %s; got %q", name, what, truncate(v[0], 32)).WithParam(name)
	}
	return n, nil
}

func (h *Handler) listNamespaces(w *recorder, r *http.Request, org string) {
	q := r.URL.Query()
	number, err := queryInt(q, "page[number]", 1, "an integer of at least 1")
	if err != nil {
		h.fail(w, err)
		return
	}
	size, err := queryInt(q, "page[size]", kv.DefaultPageSize, "an integer from 1 to 250")
	if err != nil {
		h.fail(w, err)
		return
	}
	page, err := h.svc.ListNamespaces(r.Context(), org, number, size)
	if err != nil {
		h.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, toNamespaceList(page))
}

func (h *Handler) getNamespace(w *recorder, r *http.Request, org, id string) {
	ns, err := h.svc.GetNamespace(r.Context(), org, id)
	if err != nil {
		h.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, namespaceEnvelope{Data: ns.Record()})
}

func (h *Handler) deleteNamespace(w *recorder, r *http.Request, org, id string) {
	ns, err := h.svc.DeleteNamespace(r.Context(), org, id)
	if err != nil {
		h.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, namespaceEnvelope{Data: ns.Record()})
}

func (h *Handler) getKey(w *recorder, r *http.Request, org string, rt route) {
	v, err := h.svc.GetKey(r.Context(), org, rt.id, rt.key)
	if err != nil {
		h.fail(w, err)
		return
	}
	defer v.Close()
	hd := w.Header()
	w.ctHdr[0], w.lenHdr[0] = v.ContentType, strconv.Itoa(len(v.Data))
	hd["Content-Type"], hd["Content-Length"] = w.ctHdr[:], w.lenHdr[:]
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		w.Write(v.Data)
	}
}

func (h *Handler) putKey(w *recorder, r *http.Request, org string, rt route) {
	var p service.Put
	if r.URL.RawQuery != "" {
		q := r.URL.Query()
		if _, ok := q["ttl"]; ok {
			h.fail(w, kv.Errorf(kv.EUnprocessable, "unknown parameter ttl; the expiry parameter is ttl_secs (whole seconds)").WithParam("ttl"))
			return
		}
		if v, ok := q["ttl_secs"]; ok {
			secs, err := strconv.ParseInt(v[0], 10, 64)
			if err != nil {
				secs = -1
			}
			if p.TTL, err = service.ValidateTTL(secs); err != nil {
				h.fail(w, err)
				return
			}
		}
	}
	// Validate the cheap parts before reading the body.
	if _, err := kv.CanonicalID(rt.id); err != nil {
		h.fail(w, err)
		return
	}
	if err := kv.ValidateKey(rt.key); err != nil {
		h.fail(w, err)
		return
	}
	p.ContentType = r.Header.Get("Content-Type")
	if err := service.ValidateContentType(p.ContentType); err != nil {
		h.fail(w, err)
		return
	}
	var body io.Reader = r.Body
	if r.ContentLength < 0 || r.ContentLength > smallBody {
		// Large values wait for one of a few slots, so that memory stays
		// bounded however many arrive at once; the rest of each body waits
		// in the client's socket. A slot is held only while its body keeps
		// arriving at a decent pace.
		if err := h.takeLargeSlot(r); err != nil {
			w.Header().Set("Retry-After", "1")
			h.fail(w, err)
			return
		}
		defer func() { <-h.largeBodies }()
		body = &pacedReader{r: r.Body, rc: http.NewResponseController(w), every: h.slowBody}
	}
	value, release, err := readValue(w, r, body)
	if err != nil {
		h.fail(w, err)
		return
	}
	defer release()
	p.Data = value
	created, err := h.svc.PutKey(r.Context(), org, rt.id, rt.key, p)
	if err != nil {
		h.fail(w, err)
		return
	}
	w.Header()["Content-Length"] = []string{"0"}
	if created {
		w.WriteHeader(http.StatusCreated)
	} else {
		w.WriteHeader(http.StatusOK)
	}
}

func (h *Handler) deleteKey(w *recorder, r *http.Request, org string, rt route) {
	if err := h.svc.DeleteKey(r.Context(), org, rt.id, rt.key); err != nil {
		h.fail(w, err)
		return
	}
	w.Header()["Content-Length"] = []string{"0"}
	w.WriteHeader(http.StatusOK)
}

func (h *Handler) listKeys(w *recorder, r *http.Request, org, id string) {
	q := r.URL.Query()
	limit, err := queryInt(q, "limit", kv.DefaultListLimit, "an integer from 1 to 1000")
	if err != nil {
		h.fail(w, err)
		return
	}
	page, err := h.svc.ListKeys(r.Context(), org, id, q.Get("prefix"), q.Get("cursor"), limit)
	if err != nil {
		h.fail(w, err)
		return
	}
	bp := listBufs.Get().(*[]byte)
	b := appendKeyList((*bp)[:0], page)
	hd := w.Header()
	hd.Set("Content-Type", "application/json")
	hd.Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(http.StatusOK)
	w.Write(b)
	*bp = b
	listBufs.Put(bp)
}

// listBufs hold encoded key listings (about 100 KiB for a full page).
var listBufs = sync.Pool{New: func() any { b := make([]byte, 0, 128<<10); return &b }}

// smallBody is the largest value read without taking one of the
// maxLargeBodies slots, which bound how many larger values (up to 1 MiB
// each) are in memory at once.
const (
	smallBody      = 64 << 10
	maxLargeBodies = 4
)

// Value buffers come from size-classed pools, so a PUT does not allocate its
// body once warm.
var bufPools = [...]struct {
	size int
	pool sync.Pool
}{{size: 4 << 10}, {size: 64 << 10}, {size: kv.MaxValueSize + 1}}

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

var errTooLarge = kv.Errorf(kv.ETooLarge, "value is over the limit of %d bytes (1 MiB)", kv.MaxValueSize)

// takeLargeSlot waits for one of the slots large values are read in, for
// at most h.slowBody.
func (h *Handler) takeLargeSlot(r *http.Request) error {
	select {
	case h.largeBodies <- struct{}{}:
		return nil
	default:
	}
	t := time.NewTimer(h.slowBody)
	defer t.Stop()
	select {
	case h.largeBodies <- struct{}{}:
		return nil
	case <-t.C:
		return kv.Errorf(kv.EUnavailable, "too many large values are being received; try again")
	case <-r.Context().Done():
		return kv.Errorf(kv.EUnavailable, "the request ended while waiting to be read")
	}
}

// pacedReader reads a request body that must deliver each bodyChunk bytes
// within every: it moves the connection's read deadline forward by every
// at each chunk's start, so a client trickling its body is cut off instead
// of holding the server's resources for long.
type pacedReader struct {
	r     io.Reader
	rc    *http.ResponseController
	every time.Duration
	left  int // bytes of the current chunk still to come
	paced bool
}

// bodyChunk is the amount of a large body that must arrive within each
// pacedReader interval.
const bodyChunk = 64 << 10

func (p *pacedReader) Read(b []byte) (int, error) {
	if p.left <= 0 {
		p.paced = p.rc.SetReadDeadline(time.Now().Add(p.every)) == nil
		p.left = bodyChunk
	}
	n, err := p.r.Read(b[:min(len(b), p.left)])
	p.left -= n
	if err != nil && p.paced && errors.Is(err, os.ErrDeadlineExceeded) {
		err = kv.Errorf(kv.EInvalid, "the request body arrived too slowly: a value over 64 KiB must deliver each 64 KiB within %v", p.every)
	}
	return n, err
}

// readValue reads a PUT body, from body (r.Body or a wrapper of it), of at
// most kv.MaxValueSize bytes. A body that declares or turns out to be larger
// is refused without reading the rest, and the connection is closed after
// the response; so is one that arrives too slowly.
func readValue(w *recorder, r *http.Request, body io.Reader) ([]byte, func(), error) {
	if r.ContentLength > kv.MaxValueSize {
		w.Header().Set("Connection", "close")
		return nil, nil, errTooLarge
	}
	want := kv.MaxValueSize + 1
	if r.ContentLength >= 0 {
		want = int(r.ContentLength)
	}
	bp := getBuf(want)
	buf := (*bp)[:cap(*bp)]
	n, err := io.ReadFull(body, buf[:min(len(buf), kv.MaxValueSize+1)])
	var slow *kv.Error // from pacedReader
	switch {
	case errors.As(err, &slow):
		putBuf(bp)
		w.Header().Set("Connection", "close")
		return nil, nil, slow
	case err == io.EOF || err == io.ErrUnexpectedEOF:
		if r.ContentLength >= 0 && int64(n) != r.ContentLength {
			putBuf(bp)
			return nil, nil, kv.Errorf(kv.EInvalid, "request body ended after %d of %d bytes", n, r.ContentLength)
		}
	case err != nil:
		putBuf(bp)
		return nil, nil, kv.Errorf(kv.EInvalid, "could not read the request body")
	case n > kv.MaxValueSize:
		putBuf(bp)
		w.Header().Set("Connection", "close")
		return nil, nil, errTooLarge
	}
	return buf[:n], func() { putBuf(bp) }, nil
}
