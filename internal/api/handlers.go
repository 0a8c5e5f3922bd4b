package api

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"github.com/edgekv/kv"
	"github.com/edgekv/kv/internal/service"
	"github.com/edgekv/kv/internal/store"
)

// maxJSONBody bounds the JSON body of a namespace creation.
const maxJSONBody = 64 << 10

func (h *Handler) createNamespace(w *recorder, r *http.Request, who service.Principal) {
	if _, err := parseQuery(r.URL.RawQuery); err != nil {
		h.fail(w, err)
		return
	}
	b, err := h.readBody(w, r, who.Org, maxJSONBody)
	if err != nil {
		h.fail(w, err)
		return
	}
	defer b.release()
	name, err := parseCreateBody(b.Data)
	if err != nil {
		h.fail(w, err)
		return
	}
	ns, err := h.svc.CreateNamespace(r.Context(), who, name)
	if err != nil {
		h.fail(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, kv.NamespaceEnvelope{Data: ns.Record()})
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

func (h *Handler) listNamespaces(w *recorder, r *http.Request, who service.Principal) {
	q, err := parseQuery(r.URL.RawQuery, "page[number]", "page[size]")
	if err != nil {
		h.fail(w, err)
		return
	}
	number, err := q.integer("page[number]", 1, "an integer of at least 1")
	if err != nil {
		h.fail(w, err)
		return
	}
	size, err := q.integer("page[size]", kv.DefaultPageSize, "an integer from 1 to 250")
	if err != nil {
		h.fail(w, err)
		return
	}
	page, err := h.svc.ListNamespaces(r.Context(), who, number, size)
	if err != nil {
		h.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, toNamespaceList(page))
}

func (h *Handler) getNamespace(w *recorder, r *http.Request, who service.Principal, id kv.ID) {
	if _, err := parseQuery(r.URL.RawQuery); err != nil {
		h.fail(w, err)
		return
	}
	ns, err := h.svc.GetNamespace(r.Context(), who, id)
	if err != nil {
		h.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, kv.NamespaceEnvelope{Data: ns.Record()})
}

func (h *Handler) deleteNamespace(w *recorder, r *http.Request, who service.Principal, id kv.ID) {
	if _, err := parseQuery(r.URL.RawQuery); err != nil {
		h.fail(w, err)
		return
	}
	ns, err := h.svc.DeleteNamespace(r.Context(), who, id)
	if err != nil {
		h.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, kv.NamespaceEnvelope{Data: ns.Record()})
}

func (h *Handler) getKey(w *recorder, r *http.Request, who service.Principal, rt route) {
	if _, err := parseQuery(r.URL.RawQuery); err != nil {
		h.fail(w, err)
		return
	}
	pw := &pacedWriter{w: w, rc: http.NewResponseController(w), every: h.slowBody}
	vr, err := h.getValue(w, r, who, rt, pw)
	if err != nil {
		h.fail(w, err)
		return
	}
	defer vr.close()
	v := vr.v
	hd := w.Header()
	etag := kv.FormatETag(uint64(v.Revision))
	hd["Etag"] = []string{etag}
	if inm, ok := r.Header["If-None-Match"]; ok {
		l, err := kv.ParseETags(strings.Join(inm, ","), true)
		if err != nil {
			delete(hd, "Etag")
			h.fail(w, errBadETag("If-None-Match"))
			return
		}
		if l.Matches(uint64(v.Revision)) {
			w.WriteHeader(http.StatusNotModified)
			return
		}
	}
	w.ctHdr[0], w.lenHdr[0] = v.ContentType, strconv.Itoa(len(v.Data))
	hd["Content-Type"], hd["Content-Length"] = w.ctHdr[:], w.lenHdr[:]
	// The key's metadata, an extension the hosted service does not send:
	// an export reads the expiry from it.
	if !v.UpdatedAt.IsZero() {
		var b [40]byte
		w.updHdr[0] = string(appendKeyTime(b[:0], v.UpdatedAt))
		hd["Kv-Updated-At"] = w.updHdr[:]
	}
	if !v.ExpiresAt.IsZero() {
		hd["Kv-Expires-At"] = []string{string(appendKeyTime(nil, v.ExpiresAt))}
	}
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return
	}
	if vr.grant == nil {
		w.Write(v.Data)
		return
	}
	// A client that does not take the value in time, or a grant the
	// budget took back, ends the write: the response is short of its
	// Content-Length, and net/http closes the connection.
	pw.write(v.Data)
}

func (h *Handler) putKey(w *recorder, r *http.Request, who service.Principal, rt route) {
	var p service.Put
	q, err := parseQuery(r.URL.RawQuery, "ttl_secs", "ttl")
	if err != nil {
		h.fail(w, err)
		return
	}
	if _, ok := q["ttl"]; ok {
		h.fail(w, kv.Errorf(kv.EUnprocessable, "unknown parameter ttl; the expiry parameter is ttl_secs (whole seconds)").WithParam("ttl"))
		return
	}
	if v, ok := q["ttl_secs"]; ok {
		secs, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			secs = -1
		}
		if p.TTL, err = service.ValidateTTL(secs); err != nil {
			h.fail(w, err)
			return
		}
	}
	// Validate the cheap parts before reading the body.
	if err := kv.ValidateKey(rt.key); err != nil {
		h.fail(w, err)
		return
	}
	if p.If, err = writeCondition(r, true); err != nil {
		h.fail(w, err)
		return
	}
	p.ContentType = r.Header.Get("Content-Type")
	if err := service.ValidateContentType(p.ContentType); err != nil {
		h.fail(w, err)
		return
	}
	b, err := h.readBody(w, r, who.Org, kv.MaxValueSize)
	if err != nil {
		h.fail(w, err)
		return
	}
	defer b.release()
	p.Data = b.Data
	wr, err := h.svc.PutKey(r.Context(), who, rt.ns, rt.key, p)
	if err != nil {
		h.fail(w, err)
		return
	}
	w.Header()["Content-Length"] = []string{"0"}
	w.Header()["Etag"] = []string{kv.FormatETag(uint64(wr.Revision))}
	if wr.Created {
		w.WriteHeader(http.StatusCreated)
	} else {
		w.WriteHeader(http.StatusOK)
	}
}

func (h *Handler) deleteKey(w *recorder, r *http.Request, who service.Principal, rt route) {
	if _, err := parseQuery(r.URL.RawQuery); err != nil {
		h.fail(w, err)
		return
	}
	cond, err := writeCondition(r, false)
	if err != nil {
		h.fail(w, err)
		return
	}
	if err := h.svc.DeleteKey(r.Context(), who, rt.ns, rt.key, cond); err != nil {
		h.fail(w, err)
		return
	}
	w.Header()["Content-Length"] = []string{"0"}
	w.WriteHeader(http.StatusOK)
}

func (h *Handler) listKeys(w *recorder, r *http.Request, who service.Principal, id kv.ID) {
	q, err := parseQuery(r.URL.RawQuery, "prefix", "limit", "cursor")
	if err != nil {
		h.fail(w, err)
		return
	}
	limit, err := q.integer("limit", kv.DefaultListLimit, "an integer from 1 to 1000")
	if err != nil {
		h.fail(w, err)
		return
	}
	page, err := h.svc.ListKeys(r.Context(), who, id, q["prefix"], q["cursor"], limit)
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

// writeCondition is the precondition of a PUT (put true) or DELETE from
// its If-Match and If-None-Match headers. A PUT may carry If-None-Match:
// * (the key must not exist); either may carry If-Match: "e1", "e2" (the
// key's ETag must be one of them) or If-Match: * (the key must exist).
func writeCondition(r *http.Request, put bool) (store.Condition, error) {
	var c store.Condition
	if im, ok := r.Header["If-Match"]; ok {
		l, err := kv.ParseETags(strings.Join(im, ","), false)
		if err != nil {
			return c, errBadETag("If-Match")
		}
		if l.Any {
			c.Exists = true
		}
		for _, rev := range l.Revisions {
			c.Revisions = append(c.Revisions, store.Revision(rev))
		}
	}
	if inm, ok := r.Header["If-None-Match"]; ok {
		if strings.TrimSpace(strings.Join(inm, ",")) != "*" || !put {
			what := "on a PUT only If-None-Match: * (the key must not exist) is allowed"
			if !put {
				what = "a DELETE takes If-Match only"
			}
			return c, kv.Errorf(kv.EInvalid, "If-None-Match: %s", what).WithParam("If-None-Match")
		}
		if !c.IsZero() {
			return c, kv.Errorf(kv.EInvalid, "If-Match and If-None-Match: * together can never both hold; send one").WithParam("If-None-Match")
		}
		c.Absent = true
	}
	return c, nil
}

func errBadETag(header string) error {
	return kv.Errorf(kv.EInvalid, "%s must be * or a comma-separated list of entity tags such as \"0000018c2f5e9a10\" (with the quotes), as an ETag header gave them", header).WithParam(header)
}

// listBufs hold encoded key listings (about 100 KiB for a full page).
var listBufs = sync.Pool{New: func() any { b := make([]byte, 0, 128<<10); return &b }}
