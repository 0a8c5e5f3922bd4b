package api_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/edgekv/kv"
	"github.com/edgekv/kv/internal/api"
	"github.com/edgekv/kv/internal/service"
	"github.com/edgekv/kv/internal/store"
	"github.com/edgekv/kv/internal/store/pebble"
)

// faultyStore is a real engine whose GetKey panics and whose DeleteKey
// fails with an engine error: faults injected on purpose.
type faultyStore struct{ store.Store }

func (faultyStore) GetKey(context.Context, string, kv.ID, string, time.Time) (*store.Value, error) {
	panic("injected fault")
}

func (faultyStore) DeleteKey(context.Context, string, kv.ID, string, time.Time) (bool, error) {
	return false, io.ErrUnexpectedEOF // an engine failure with internals in its text
}

func TestInternalFaultsAreEnvelopes(t *testing.T) {
	db, err := pebble.Open(t.TempDir(), pebble.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var logs strings.Builder
	svc := service.New(service.Config{Store: faultyStore{db}, StaticTokens: map[string]string{"tok": "org"}})
	srv := httptest.NewServer(api.New(api.Config{Service: svc, Logger: slog.New(slog.NewTextHandler(&logs, nil))}))
	defer srv.Close()
	ns := kv.Namespace{ID: kv.NewID(), Org: "org", Name: "n", Status: kv.StatusPending, CreatedAt: time.Now(), UpdatedAt: time.Now()}
	if err := db.CreateNamespace(t.Context(), ns); err != nil {
		t.Fatal(err)
	}
	if err := db.CompleteProvision(t.Context(), ns.ID, "", kv.StatusProvisionOK, time.Now()); err != nil {
		t.Fatal(err)
	}
	for _, method := range []string{"GET", "DELETE"} {
		req, _ := http.NewRequest(method, srv.URL+"/v2/storage/kvs/"+ns.ID.String()+"/keys/k", nil)
		req.Header.Set("Authorization", "Bearer tok")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s: connection dropped instead of a 500: %v", method, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var env struct {
			Errors []struct{ Code, Detail string } `json:"errors"`
		}
		if resp.StatusCode != 500 || json.Unmarshal(body, &env) != nil || len(env.Errors) != 1 || env.Errors[0].Code != "10010" {
			t.Fatalf("%s: %d %s, want a 500 envelope with code 10010", method, resp.StatusCode, body)
		}
		if strings.Contains(string(body), "injected") || strings.Contains(string(body), "unexpected EOF") {
			t.Fatalf("%s: internals leaked: %s", method, body)
		}
		if id := resp.Header.Get("X-Request-Id"); id == "" || !strings.Contains(env.Errors[0].Detail, id) {
			t.Fatalf("%s: detail %q does not name the request id %q", method, env.Errors[0].Detail, id)
		}
	}
	if !strings.Contains(logs.String(), "injected fault") || !strings.Contains(logs.String(), "unexpected EOF") {
		t.Fatalf("faults not logged: %s", logs.String())
	}
}
