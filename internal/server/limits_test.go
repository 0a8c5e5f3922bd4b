package server_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgekv/kv/internal/kvdtest"
	"github.com/edgekv/kv/internal/server"
)

func call(t *testing.T, c *http.Client, method, url, token, body string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func errCode(t *testing.T, body string) string {
	t.Helper()
	var env struct {
		Errors []struct{ Code, Detail string }
	}
	if json.Unmarshal([]byte(body), &env) != nil || len(env.Errors) != 1 {
		t.Fatalf("not an error envelope: %s", body)
	}
	return env.Errors[0].Code
}

func TestRateLimit(t *testing.T) {
	clock := kvdtest.NewClock(time.Unix(1_800_000_000, 0))
	s := kvdtest.Start(t, kvdtest.WithClock(clock.Now), kvdtest.WithConfig(func(c *server.Config) { c.RateLimit = 5 }))
	url := s.URL + "/v2/storage/kvs"
	for i := range 5 {
		resp, _ := call(t, http.DefaultClient, "GET", url, s.Token, "")
		if resp.StatusCode != 200 || resp.Header.Get("X-RateLimit-Limit") != "5" || resp.Header.Get("X-RateLimit-Remaining") != itoa(4-i) {
			t.Fatalf("request %d: %d, limit %q remaining %q", i, resp.StatusCode, resp.Header.Get("X-RateLimit-Limit"), resp.Header.Get("X-RateLimit-Remaining"))
		}
	}
	resp, body := call(t, http.DefaultClient, "GET", url, s.Token, "")
	if resp.StatusCode != 429 || errCode(t, body) != "10032" || resp.Header.Get("Retry-After") != "12" {
		t.Fatalf("over the limit: %d Retry-After %q %s", resp.StatusCode, resp.Header.Get("Retry-After"), body)
	}
	// Limits are per token.
	other := s.NewToken(t, "default")
	if resp, _ := call(t, http.DefaultClient, "GET", url, other, ""); resp.StatusCode != 200 {
		t.Fatalf("another token was limited: %d", resp.StatusCode)
	}
	// Unknown tokens are refused as such, not counted.
	if resp, _ := call(t, http.DefaultClient, "GET", url, "nope", ""); resp.StatusCode != 401 {
		t.Fatalf("unknown token: %d", resp.StatusCode)
	}
	clock.Advance(12 * time.Second)
	if resp, _ := call(t, http.DefaultClient, "GET", url, s.Token, ""); resp.StatusCode != 200 {
		t.Fatalf("after Retry-After: %d", resp.StatusCode)
	}
	if resp, _ := call(t, http.DefaultClient, "GET", url, s.Token, ""); resp.StatusCode != 429 {
		t.Fatalf("refill exceeded the rate: %d", resp.StatusCode)
	}
}

func itoa(n int) string { b, _ := json.Marshal(n); return string(b) }

func TestMaxNamespaces(t *testing.T) {
	s := kvdtest.Start(t, kvdtest.WithConfig(func(c *server.Config) { c.MaxNamespaces = 2 }))
	url := s.URL + "/v2/storage/kvs"
	var ids []string
	for _, name := range []string{"a", "b"} {
		resp, body := call(t, http.DefaultClient, "POST", url, s.Token, `{"name":"`+name+`"}`)
		if resp.StatusCode != 201 {
			t.Fatalf("create %s: %d %s", name, resp.StatusCode, body)
		}
		var ns struct{ Data struct{ ID string } }
		json.Unmarshal([]byte(body), &ns)
		ids = append(ids, ns.Data.ID)
	}
	resp, body := call(t, http.DefaultClient, "POST", url, s.Token, `{"name":"c"}`)
	if resp.StatusCode != 403 || errCode(t, body) != "10034" || !strings.Contains(body, "limit") {
		t.Fatalf("third namespace: %d %s", resp.StatusCode, body)
	}
	// Another organization has its own allowance.
	if resp, _ := call(t, http.DefaultClient, "POST", url, s.NewToken(t, "acme"), `{"name":"c"}`); resp.StatusCode != 201 {
		t.Fatalf("other organization: %d", resp.StatusCode)
	}
	call(t, http.DefaultClient, "DELETE", url+"/"+ids[0], s.Token, "")
	s.Worker.RunJobs(t.Context())
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, _ := call(t, http.DefaultClient, "POST", url, s.Token, `{"name":"c"}`)
		if resp.StatusCode == 201 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no room after a deletion: %d", resp.StatusCode)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// selfSigned writes a certificate for 127.0.0.1 and its key to dir.
func selfSigned(t *testing.T, dir string) (certFile, keyFile string, pool *x509.CertPool) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "kvd test"},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
	cert, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

func TestTLS(t *testing.T) {
	certFile, keyFile, pool := selfSigned(t, t.TempDir())
	s := kvdtest.Start(t, kvdtest.WithConfig(func(c *server.Config) { c.TLSCert, c.TLSKey = certFile, keyFile }))
	if !strings.HasPrefix(s.URL, "https://") {
		t.Fatalf("URL %s is not https", s.URL)
	}
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	if resp, body := call(t, c, "GET", s.URL+"/v2/storage/kvs", s.Token, ""); resp.StatusCode != 200 || resp.TLS == nil {
		t.Fatalf("over TLS: %d %s", resp.StatusCode, body)
	}
	// Plain HTTP to the TLS port gets no API response.
	if resp, err := http.Get("http://" + s.Addr() + "/healthz"); err == nil && resp.StatusCode == 200 {
		t.Fatal("plain HTTP was served on the TLS port")
	}
	// A bad key pair refuses to start.
	bad := kvdtest.Config(t)
	bad.TLSCert, bad.TLSKey = certFile, certFile
	if _, err := server.Open(t.Context(), bad); err == nil || !strings.Contains(err.Error(), "TLS") {
		t.Fatalf("bad key pair: %v", err)
	}
}
