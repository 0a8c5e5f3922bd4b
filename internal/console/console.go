// Package console serves kvd's web console at /console/: static HTML, CSS
// and JavaScript embedded in the binary, which talk to the public REST API
// under /v2/storage/kvs from the browser, with the bearer token the user
// pastes (kept in sessionStorage, never in a cookie, so there is no CSRF to
// defend against). Every response carries a strict Content-Security-Policy:
// the pages run no inline script or style, and load nothing from elsewhere.
package console

import (
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"net/http"
	"path"
	"strconv"
	"strings"
)

// Prefix is where the console lives; "/console" redirects to it.
const Prefix = "/console/"

// CSP is the Content-Security-Policy of every console response.
const CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
	"frame-ancestors 'none'; base-uri 'none'; form-action 'none'"

//go:embed web
var webFiles embed.FS

// asset is an embedded file ready to serve.
type asset struct {
	body        []byte
	contentType string
	etag        string
}

// Handler serves the console and passes every other request to next.
type Handler struct {
	next     http.Handler
	assets   map[string]*asset // by path under Prefix; "" is the index
	notFound *asset
}

// Mount returns a handler that serves the console under Prefix (and the
// redirect from "/console") and everything else with next.
func Mount(next http.Handler) *Handler {
	h := &Handler{next: next, assets: map[string]*asset{}}
	err := fs.WalkDir(webFiles, "web", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := webFiles.ReadFile(p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		h.assets[strings.TrimPrefix(p, "web/")] = &asset{body: b, contentType: contentType(p), etag: `"` + hex.EncodeToString(sum[:16]) + `"`}
		return nil
	})
	if err != nil {
		panic("console: embedded files: " + err.Error()) // built into the binary: cannot happen
	}
	h.assets[""] = h.assets["index.html"]
	h.notFound = h.assets["404.html"]
	return h
}

func contentType(p string) string {
	switch path.Ext(p) {
	case ".html":
		return "text/html; charset=utf-8"
	case ".js":
		return "text/javascript; charset=utf-8"
	case ".css":
		return "text/css; charset=utf-8"
	case ".svg":
		return "image/svg+xml"
	case ".png":
		return "image/png"
	}
	return "text/plain; charset=utf-8" // LICENSE, README.md
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p := r.URL.EscapedPath()
	if p != "/console" && !strings.HasPrefix(p, Prefix) {
		h.next.ServeHTTP(w, r)
		return
	}
	hd := w.Header()
	hd.Set("Content-Security-Policy", CSP)
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("Referrer-Policy", "no-referrer")
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		hd.Set("Allow", "GET, HEAD")
		h.write(w, r, http.StatusMethodNotAllowed, &asset{body: []byte("method not allowed; allowed: GET, HEAD\n"), contentType: "text/plain; charset=utf-8"})
		return
	}
	if p == "/console" {
		hd.Set("Location", Prefix)
		h.write(w, r, http.StatusMovedPermanently, &asset{body: []byte("the console is at " + Prefix + "\n"), contentType: "text/plain; charset=utf-8"})
		return
	}
	// The escaped path must name an embedded file exactly: no unescaping,
	// no cleaning, no directory listings.
	a := h.assets[strings.TrimPrefix(p, Prefix)]
	if a == nil {
		hd.Set("Cache-Control", "no-store")
		h.write(w, r, http.StatusNotFound, h.notFound)
		return
	}
	// Names are not fingerprinted, so caches revalidate every time; the
	// ETag makes that a 304.
	hd.Set("Cache-Control", "no-cache")
	hd.Set("ETag", a.etag)
	if etagMatches(r.Header.Get("If-None-Match"), a.etag) {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	h.write(w, r, http.StatusOK, a)
}

func (h *Handler) write(w http.ResponseWriter, r *http.Request, status int, a *asset) {
	hd := w.Header()
	hd.Set("Content-Type", a.contentType)
	hd.Set("Content-Length", strconv.Itoa(len(a.body)))
	w.WriteHeader(status)
	if r.Method != http.MethodHead {
		w.Write(a.body)
	}
}

// etagMatches reports whether an If-None-Match header names tag (or is *).
func etagMatches(header, tag string) bool {
	for header != "" {
		var one string
		one, header, _ = strings.Cut(header, ",")
		one = strings.TrimPrefix(strings.TrimSpace(one), "W/")
		if one == "*" || one == tag {
			return true
		}
	}
	return false
}
