package api_test

import (
	"bytes"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/edgekv/kv"
	"github.com/edgekv/kv/internal/api"
	"github.com/edgekv/kv/internal/service"
	"github.com/edgekv/kv/internal/store/pebble"
)

// discardWriter is a ResponseWriter that keeps nothing, so a benchmark
// measures the handler alone.
type discardWriter struct{ h http.Header }

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) Write(b []byte) (int, error) { return len(b), nil }
func (w *discardWriter) WriteHeader(int)             {}

// readyHandler is the API over a real Pebble with one ready namespace,
// whose id it returns; the bearer token "tok" is of its organization.
func readyHandler(b testing.TB) (*api.Handler, string) {
	db, err := pebble.Open(b.TempDir(), pebble.Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { db.Close() })
	svc := service.New(service.Config{Store: db, StaticTokens: map[string]string{"tok": "org"}})
	h := api.New(api.Config{Service: svc, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	now := time.Now()
	ns := kv.Namespace{ID: kv.NewID(), Org: "org", Name: "bench", Status: kv.StatusPending, CreatedAt: now, UpdatedAt: now}
	if err := db.CreateNamespace(b.Context(), ns); err != nil {
		b.Fatal(err)
	}
	if err := db.CompleteProvision(b.Context(), ns.ID, "", kv.StatusProvisionOK, now); err != nil {
		b.Fatal(err)
	}
	return h, ns.ID.String()
}

// BenchmarkHandlerGetHit is the hot GET path from parsed request to
// written value: allocations here are kvd's own.
func BenchmarkHandlerGetHit(b *testing.B) {
	h, id := readyHandler(b)
	url := "/v2/storage/kvs/" + id + "/keys/user/123"
	put := httptest.NewRequest("PUT", url, bytes.NewReader(make([]byte, 1024)))
	put.Header.Set("Authorization", "Bearer tok")
	h.ServeHTTP(httptest.NewRecorder(), put)
	req := httptest.NewRequest("GET", url, nil)
	req.Header.Set("Authorization", "Bearer tok")
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		w := &discardWriter{h: http.Header{}}
		for pb.Next() {
			clear(w.h)
			h.ServeHTTP(w, req)
		}
	})
}

// BenchmarkHandlerPut is a durable 1 KiB overwrite.
func BenchmarkHandlerPut(b *testing.B) {
	h, id := readyHandler(b)
	url := "/v2/storage/kvs/" + id + "/keys/user/123"
	body := make([]byte, 1024)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		w := &discardWriter{h: http.Header{}}
		for pb.Next() {
			clear(w.h)
			req := httptest.NewRequest("PUT", url, bytes.NewReader(body))
			req.Header.Set("Authorization", "Bearer tok")
			h.ServeHTTP(w, req)
		}
	})
}
