package bench

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/edgekv/kv"
)

// maxValue is the largest value the API accepts (1 MiB).
const maxValue = 1 << 20

// NewBaseline returns the baseline server: the key routes of the API over
// an in-memory map, with no authentication, validation or durability. It
// is the yardstick kvd is compared with: the cost of net/http, JSON and a
// locked map, and nothing else.
//
// It serves POST /v2/storage/kvs (the namespace is provision_ok at once),
// GET /v2/storage/kvs/{id}, PUT, GET and DELETE
// /v2/storage/kvs/{id}/keys/{key}, GET /v2/storage/kvs/{id}/keys with
// prefix, limit and cursor in kvd's JSON shape, and GET /healthz.
func NewBaseline() http.Handler {
	b := &baseline{spaces: map[string]*memSpace{}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusOK) })
	mux.HandleFunc("POST /v2/storage/kvs", b.createNamespace)
	mux.HandleFunc("GET /v2/storage/kvs/{id}", b.getNamespace)
	mux.HandleFunc("PUT /v2/storage/kvs/{id}/keys/{key...}", b.put)
	mux.HandleFunc("GET /v2/storage/kvs/{id}/keys/{key...}", b.get)
	mux.HandleFunc("DELETE /v2/storage/kvs/{id}/keys/{key...}", b.delete)
	mux.HandleFunc("GET /v2/storage/kvs/{id}/keys", b.list)
	return mux
}

type baseline struct {
	mu     sync.RWMutex
	spaces map[string]*memSpace
}

// memSpace is one namespace. Keys live in a map; listing walks a sorted
// index that new keys join lazily: they are appended to pending, and the
// next listing sorts pending and merges it in. Deleted keys stay in the map
// as tombstones so that the index never holds a key twice.
type memSpace struct {
	meta nsJSON

	mu      sync.RWMutex
	m       map[string]*memValue
	sorted  []string
	pending []string
}

type memValue struct {
	data        []byte
	contentType string
	updated     time.Time
	deleted     bool
}

type nsJSON = kv.NamespaceRecord

type keyJSON struct {
	Key       string `json:"key"`
	SizeBytes int    `json:"size_bytes"`
	UpdatedAt string `json:"updated_at"`
}

type listJSON struct {
	RecordType string    `json:"record_type"`
	Data       []keyJSON `json:"data"`
	Meta       struct {
		HasMore bool   `json:"has_more"`
		Cursor  string `json:"cursor,omitempty"`
	} `json:"meta"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	w.Write(body)
}

func (b *baseline) createNamespace(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Name string `json:"name"`
	}
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<16)).Decode(&req); err != nil {
		http.Error(w, "bad JSON", http.StatusBadRequest)
		return
	}
	var id [16]byte
	rand.Read(id[:])
	now := time.Now().UTC().Format("2006-01-02T15:04:05.000Z")
	ns := &memSpace{m: map[string]*memValue{}, meta: nsJSON{
		RecordType: "storage_kv", ID: hex.EncodeToString(id[:]), Name: req.Name,
		Status: "provision_ok", CreatedAt: now, UpdatedAt: now,
	}}
	b.mu.Lock()
	b.spaces[ns.meta.ID] = ns
	b.mu.Unlock()
	writeJSON(w, http.StatusCreated, map[string]any{"data": ns.meta})
}

func (b *baseline) space(w http.ResponseWriter, r *http.Request) *memSpace {
	b.mu.RLock()
	ns := b.spaces[r.PathValue("id")]
	b.mu.RUnlock()
	if ns == nil {
		http.Error(w, "namespace not found", http.StatusNotFound)
	}
	return ns
}

func (b *baseline) getNamespace(w http.ResponseWriter, r *http.Request) {
	if ns := b.space(w, r); ns != nil {
		writeJSON(w, http.StatusOK, map[string]any{"data": ns.meta})
	}
}

func (b *baseline) put(w http.ResponseWriter, r *http.Request) {
	ns := b.space(w, r)
	if ns == nil {
		return
	}
	data, err := io.ReadAll(io.LimitReader(r.Body, maxValue+1))
	if err != nil {
		http.Error(w, "read body", http.StatusBadRequest)
		return
	}
	if len(data) > maxValue {
		http.Error(w, "value too large", http.StatusRequestEntityTooLarge)
		return
	}
	ct := r.Header.Get("Content-Type")
	if ct == "" {
		ct = "application/octet-stream"
	}
	key := r.PathValue("key")
	nv := &memValue{data: data, contentType: ct, updated: time.Now()}
	ns.mu.Lock()
	old := ns.m[key]
	ns.m[key] = nv
	if old == nil {
		ns.pending = append(ns.pending, key)
	}
	ns.mu.Unlock()
	if old == nil || old.deleted {
		w.WriteHeader(http.StatusCreated)
		return
	}
	w.WriteHeader(http.StatusOK)
}

func (b *baseline) get(w http.ResponseWriter, r *http.Request) {
	ns := b.space(w, r)
	if ns == nil {
		return
	}
	ns.mu.RLock()
	v := ns.m[r.PathValue("key")]
	ns.mu.RUnlock()
	if v == nil || v.deleted {
		http.Error(w, "key not found", http.StatusNotFound)
		return
	}
	w.Header().Set("Content-Type", v.contentType)
	w.Header().Set("Content-Length", strconv.Itoa(len(v.data)))
	w.WriteHeader(http.StatusOK)
	w.Write(v.data)
}

func (b *baseline) delete(w http.ResponseWriter, r *http.Request) {
	ns := b.space(w, r)
	if ns == nil {
		return
	}
	key := r.PathValue("key")
	ns.mu.Lock()
	if v := ns.m[key]; v != nil && !v.deleted {
		ns.m[key] = &memValue{deleted: true, updated: time.Now()}
	}
	ns.mu.Unlock()
	w.WriteHeader(http.StatusOK)
}

func (b *baseline) list(w http.ResponseWriter, r *http.Request) {
	ns := b.space(w, r)
	if ns == nil {
		return
	}
	q := r.URL.Query()
	prefix := q.Get("prefix")
	limit := 1000
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			http.Error(w, "bad limit", http.StatusBadRequest)
			return
		}
		limit = min(n, 1000)
	}
	from := prefix
	after := ""
	if c := q.Get("cursor"); c != "" {
		k, err := base64.RawURLEncoding.DecodeString(c)
		if err != nil {
			http.Error(w, "bad cursor", http.StatusBadRequest)
			return
		}
		after = string(k)
		from = max(from, after)
	}

	ns.mu.RLock()
	if len(ns.pending) > 0 {
		ns.mu.RUnlock()
		ns.mu.Lock()
		ns.mergePendingLocked()
		ns.mu.Unlock()
		ns.mu.RLock()
	}
	out := listJSON{RecordType: "storage_kv_key", Data: make([]keyJSON, 0, min(limit, 64))}
	i, _ := slices.BinarySearch(ns.sorted, from)
	for ; i < len(ns.sorted); i++ {
		k := ns.sorted[i]
		if !strings.HasPrefix(k, prefix) {
			break
		}
		v := ns.m[k]
		if k == after || v.deleted {
			continue
		}
		if len(out.Data) == limit {
			out.Meta.HasMore = true
			out.Meta.Cursor = base64.RawURLEncoding.EncodeToString([]byte(out.Data[limit-1].Key))
			break
		}
		out.Data = append(out.Data, keyJSON{Key: k, SizeBytes: len(k) + len(v.data), UpdatedAt: v.updated.UTC().Format(time.RFC3339Nano)})
	}
	ns.mu.RUnlock()
	writeJSON(w, http.StatusOK, out)
}

// mergePendingLocked folds the keys written since the last listing into
// the sorted index; the caller holds ns.mu exclusively.
func (ns *memSpace) mergePendingLocked() {
	if len(ns.pending) == 0 {
		return
	}
	slices.Sort(ns.pending)
	merged := make([]string, 0, len(ns.sorted)+len(ns.pending))
	i, j := 0, 0
	for i < len(ns.sorted) && j < len(ns.pending) {
		if ns.sorted[i] < ns.pending[j] {
			merged = append(merged, ns.sorted[i])
			i++
		} else {
			merged = append(merged, ns.pending[j])
			j++
		}
	}
	merged = append(merged, ns.sorted[i:]...)
	merged = append(merged, ns.pending[j:]...)
	ns.sorted, ns.pending = merged, nil
}
