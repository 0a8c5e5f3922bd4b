package pgopstest

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/edgekv/kv/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// newHTTPClient is a client with enough idle connections for the test's
// goroutines and a bound on every request.
func newHTTPClient() *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 128
	return &http.Client{Transport: tr, Timeout: 60 * time.Second}
}

// api calls one kvd with one token.
type api struct {
	hc    *http.Client
	base  string // without /v2
	token string
}

// answer is an HTTP answer.
type answer struct {
	status int
	header http.Header
	body   []byte
}

// do sends a request to /v2/storage/kvs+path; a transport error is
// returned as is.
func (a api) do(method, path string, body io.Reader, header ...string) (answer, error) {
	req, err := http.NewRequestWithContext(context.Background(), method, a.base+"/v2/storage/kvs"+path, body)
	if err != nil {
		return answer{}, err
	}
	req.Header.Set("Authorization", "Bearer "+a.token)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := a.hc.Do(req)
	if err != nil {
		return answer{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return answer{resp.StatusCode, resp.Header, b}, err
}

// must sends a request and fails t unless the answer has status want.
func (a api) must(t testing.TB, want int, method, path string, body string, header ...string) answer {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	ans, err := a.do(method, path, r, header...)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	if ans.status != want {
		t.Fatalf("%s %s: status %d, want %d: %s", method, path, ans.status, want, ans.body)
	}
	return ans
}

// createNamespace creates a namespace and, when ready, waits until it is
// provision_ok.
func (a api) createNamespace(t testing.TB, name string, ready bool) string {
	t.Helper()
	ans := a.must(t, http.StatusCreated, http.MethodPost, "", fmt.Sprintf(`{"name":%q}`, name), "Content-Type", "application/json")
	var r struct {
		Data struct {
			ID string `json:"id"`
		} `json:"data"`
	}
	if err := json.Unmarshal(ans.body, &r); err != nil {
		t.Fatal(err)
	}
	if !ready {
		return r.Data.ID
	}
	deadline := time.Now().Add(time.Minute)
	for {
		ans := a.must(t, http.StatusOK, http.MethodGet, "/"+r.Data.ID, "")
		if strings.Contains(string(ans.body), `"provision_ok"`) {
			return r.Data.ID
		}
		if time.Now().After(deadline) {
			t.Fatalf("namespace %s not provision_ok after a minute: %s", r.Data.ID, ans.body)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// errorCode returns the code of the one error in the API's error envelope
// in body, or "" if body is not such an envelope.
func errorCode(body []byte) string {
	var e struct {
		Errors []struct {
			Code string `json:"code"`
		} `json:"errors"`
	}
	if json.Unmarshal(body, &e) != nil || len(e.Errors) != 1 {
		return ""
	}
	return e.Errors[0].Code
}
