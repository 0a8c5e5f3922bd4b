package console_test

import (
	"bufio"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/edgekv/kv/internal/console"
	"github.com/edgekv/kv/internal/kvdtest"
	"github.com/edgekv/kv/internal/server"
)

var httpClient = &http.Client{
	Timeout:       30 * time.Second,
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

func get(t *testing.T, method, url string, hdr ...string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	res, err := httpClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return res, string(b)
}

// wantSecurityHeaders checks the headers every console response carries.
func wantSecurityHeaders(t *testing.T, what string, h http.Header) {
	t.Helper()
	want := map[string]string{
		"Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
		"X-Content-Type-Options":  "nosniff",
		"Referrer-Policy":         "no-referrer",
	}
	for k, v := range want {
		if got := h.Values(k); len(got) != 1 || got[0] != v {
			t.Errorf("%s: %s = %q, want %q", what, k, got, v)
		}
	}
}

func TestConsoleHTTP(t *testing.T) {
	s := kvdtest.Start(t)

	res, _ := get(t, "GET", s.URL+"/console")
	if res.StatusCode != http.StatusMovedPermanently || res.Header.Get("Location") != "/console/" {
		t.Fatalf("/console: %d, Location %q", res.StatusCode, res.Header.Get("Location"))
	}
	wantSecurityHeaders(t, "/console", res.Header)

	res, body := get(t, "GET", s.URL+"/console/")
	if res.StatusCode != http.StatusOK || res.Header.Get("Content-Type") != "text/html; charset=utf-8" || !strings.Contains(body, `<script src="/console/app.js" defer></script>`) {
		t.Fatalf("/console/: %d %q\n%s", res.StatusCode, res.Header.Get("Content-Type"), body)
	}
	wantSecurityHeaders(t, "/console/", res.Header)
	etag := res.Header.Get("ETag")
	if !regexp.MustCompile(`^"[0-9a-f]{32}"$`).MatchString(etag) || res.Header.Get("Cache-Control") != "no-cache" {
		t.Fatalf("/console/: ETag %q, Cache-Control %q", etag, res.Header.Get("Cache-Control"))
	}
	// Revalidation: 304 with the same ETag and the same headers, no body.
	for _, inm := range []string{etag, `"other", ` + etag, "W/" + etag, "*"} {
		res, body = get(t, "GET", s.URL+"/console/", "If-None-Match", inm)
		if res.StatusCode != http.StatusNotModified || body != "" || res.Header.Get("ETag") != etag {
			t.Fatalf("If-None-Match %s: %d, ETag %q, %d bytes", inm, res.StatusCode, res.Header.Get("ETag"), len(body))
		}
		wantSecurityHeaders(t, "304", res.Header)
	}
	if res, _ = get(t, "GET", s.URL+"/console/", "If-None-Match", `"stale"`); res.StatusCode != http.StatusOK {
		t.Fatalf("a stale ETag: %d", res.StatusCode)
	}
	res, body = get(t, "HEAD", s.URL+"/console/")
	if res.StatusCode != http.StatusOK || body != "" || res.ContentLength <= 0 {
		t.Fatalf("HEAD /console/: %d, %d bytes, length %d", res.StatusCode, len(body), res.ContentLength)
	}

	for path, ctype := range map[string]string{
		"/console/app.js":                         "text/javascript; charset=utf-8",
		"/console/app.css":                        "text/css; charset=utf-8",
		"/console/index.html":                     "text/html; charset=utf-8",
		"/console/vendor/uplot/uPlot.iife.min.js": "text/javascript; charset=utf-8",
		"/console/vendor/uplot/uPlot.min.css":     "text/css; charset=utf-8",
		"/console/vendor/uplot/LICENSE":           "text/plain; charset=utf-8",
	} {
		res, body := get(t, "GET", s.URL+path)
		if res.StatusCode != http.StatusOK || res.Header.Get("Content-Type") != ctype || len(body) == 0 || res.Header.Get("ETag") == "" {
			t.Errorf("%s: %d %q, %d bytes, ETag %q", path, res.StatusCode, res.Header.Get("Content-Type"), len(body), res.Header.Get("ETag"))
		}
		wantSecurityHeaders(t, path, res.Header)
	}
	if _, js := get(t, "GET", s.URL+"/console/app.js"); !strings.Contains(js, "textContent") {
		t.Fatal("app.js is not the console's script")
	}

	// Unknown paths, directories and dot segments: the 404 page, never a
	// file from elsewhere, a listing or a redirect.
	for _, path := range []string{"/console/nope", "/console/vendor/", "/console/vendor/uplot", "/console/app.js/", "/console//app.js",
		"/console/../console/app.js", "/console/%2e%2e/console/app.js", "/console/app%2ejs", "/console/web/app.js"} {
		status, hdr, body := rawGet(t, s.Addr(), path)
		if status != http.StatusNotFound {
			t.Errorf("%s: %d, want 404", path, status)
			continue
		}
		if !strings.Contains(body, "Page not found") || hdr.Get("Content-Type") != "text/html; charset=utf-8" {
			t.Errorf("%s: not the 404 page: %q\n%s", path, hdr.Get("Content-Type"), body)
		}
		wantSecurityHeaders(t, path, hdr)
	}

	res, _ = get(t, "POST", s.URL+"/console/")
	if res.StatusCode != http.StatusMethodNotAllowed || res.Header.Get("Allow") != "GET, HEAD" {
		t.Fatalf("POST /console/: %d, Allow %q", res.StatusCode, res.Header.Get("Allow"))
	}
	wantSecurityHeaders(t, "405", res.Header)

	// The API beside it is untouched, and carries no console headers.
	res, _ = get(t, "GET", s.URL+"/v2/storage/kvs", "Authorization", "Bearer "+s.Token)
	if res.StatusCode != http.StatusOK || res.Header.Get("Content-Security-Policy") != "" {
		t.Fatalf("the API: %d, CSP %q", res.StatusCode, res.Header.Get("Content-Security-Policy"))
	}
	res, body = get(t, "GET", s.URL+"/consoles")
	if res.StatusCode != http.StatusNotFound || !strings.Contains(body, `"errors"`) {
		t.Fatalf("/consoles: %d %s (the API's 404, not the console's)", res.StatusCode, body)
	}
}

// rawGet sends a request line exactly as given, over a raw connection.
func rawGet(t *testing.T, addr, path string) (int, http.Header, string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: kvd\r\nConnection: close\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	res, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, res.Header, string(b)
}

func TestConsoleOff(t *testing.T) {
	s := kvdtest.Start(t, kvdtest.WithConfig(func(c *server.Config) { c.Console = false }))
	for _, path := range []string{"/console", "/console/", "/console/app.js"} {
		res, body := get(t, "GET", s.URL+path)
		if res.StatusCode != http.StatusNotFound || strings.Contains(body, "<html") || res.Header.Get("Content-Security-Policy") != "" {
			t.Errorf("%s with the console off: %d %s", path, res.StatusCode, body)
		}
	}
}

// The console's own files never build markup from strings, and its pages
// hold no inline script or style (the CSP would block them anyway).
func TestNoInlineCodeOrHTMLSinks(t *testing.T) {
	err := filepath.WalkDir("web", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || strings.Contains(p, "vendor") {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		src := string(b)
		switch filepath.Ext(p) {
		case ".html":
			scripts := regexp.MustCompile(`<script[^>]*>([^<]*)</script>`).FindAllStringSubmatch(src, -1)
			if len(scripts) != strings.Count(src, "<script") {
				t.Errorf("%s: a script tag that is not <script src=...></script>", p)
			}
			for _, m := range scripts {
				if !strings.Contains(m[0], ` src="/console/`) || m[1] != "" {
					t.Errorf("%s: inline or foreign script %q", p, m[0])
				}
			}
			for _, bad := range []*regexp.Regexp{
				regexp.MustCompile(`<style`), regexp.MustCompile(`\sstyle=`), regexp.MustCompile(`\son[a-z]+=`),
				regexp.MustCompile(`(?:src|href)="(?:[a-z]+:)?//`),
			} {
				for _, m := range bad.FindAllString(src, -1) {
					t.Errorf("%s: %q", p, m)
				}
			}
		case ".js":
			for _, bad := range []string{"innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function", "setAttribute('style'", ".cookie", "localStorage"} {
				if strings.Contains(src, bad) {
					t.Errorf("%s uses %s", p, bad)
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if console.CSP == "" {
		t.Fatal("no CSP")
	}
}
