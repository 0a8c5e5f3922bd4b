package kvtest_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"testing"

	"github.com/edgekv/kv/kvtest"
)

// flagEnabled is the code under test: an edge function's feature-flag
// check, written against the documented REST API with plain net/http.
func flagEnabled(ctx context.Context, baseURL, token, namespace, flag string) (bool, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", baseURL+"/v2/storage/kvs/"+namespace+"/keys/flags/"+flag, nil)
	if err != nil {
		return false, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusNotFound:
		return false, nil // an unset flag is off
	case http.StatusOK:
		b, err := io.ReadAll(resp.Body)
		return string(b) == "on", err
	default:
		return false, fmt.Errorf("reading flag %s: %s", flag, resp.Status)
	}
}

// TestFlagEnabled is the pattern: a real kvd per test, a namespace, the SDK
// to set things up, and the code under test pointed at srv.URL.
func TestFlagEnabled(t *testing.T) {
	ctx := context.Background()
	srv := kvtest.NewServer(t)
	ns := srv.Namespace(t, "flags")
	if _, err := srv.Client().Namespace(ns).Put(ctx, "flags/new-checkout", []byte("on"), nil); err != nil {
		t.Fatal(err)
	}
	for flag, want := range map[string]bool{"new-checkout": true, "dark-mode": false} {
		got, err := flagEnabled(ctx, srv.URL, srv.Token, ns, flag)
		if err != nil || got != want {
			t.Errorf("flag %s: %v, %v; want %v", flag, got, err, want)
		}
	}

	// Another organization's token sees none of it: the namespace is a
	// 404 to it, so the flag reads as unset.
	other := srv.NewToken(t, "other-org")
	if on, err := flagEnabled(ctx, srv.URL, other, ns, "new-checkout"); err != nil || on {
		t.Errorf("another organization's token: %v, %v; want the flag unset", on, err)
	}

	// What was acknowledged survives a restart.
	srv.Restart(t)
	if got, err := flagEnabled(ctx, srv.URL, srv.Token, ns, "new-checkout"); err != nil || !got {
		t.Errorf("after a restart: %v, %v", got, err)
	}
}
