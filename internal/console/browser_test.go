package console_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp/jsonv2"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/edgekv/kv"
	"github.com/edgekv/kv/client"
	"github.com/edgekv/kv/internal/kvdtest"
)

// chromium finds Debian's chromium (or another build of it) on PATH. It
// skips the test when there is none, unless KV_REQUIRE_CHROMIUM=1.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "headless-shell"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	msg := "no chromium binary on PATH; install it (Debian: apt-get install -y chromium) to run the console's browser tests"
	if os.Getenv("KV_REQUIRE_CHROMIUM") == "1" {
		t.Fatal(msg + " (KV_REQUIRE_CHROMIUM=1)")
	}
	t.Skip(msg)
	return ""
}

// browser is a headless Chromium driving one tab, with what the page
// reported: uncaught exceptions, console errors and the browser's security
// messages.
type browser struct {
	t     *testing.T
	ctx   context.Context
	shots string

	mu     sync.Mutex
	errors []string
}

// newBrowser starts Chromium with a fresh profile. The flags keep it from
// reaching out to any network (the machine has none but loopback).
func newBrowser(t *testing.T) *browser {
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium(t)),
		chromedp.NoSandbox, // Chromium refuses to run as root with its sandbox
		chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-domain-reliability", true),
		chromedp.Flag("no-pings", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(allocCtx)
	t.Cleanup(func() { cancelCtx(); cancelAlloc() })
	b := &browser{t: t, ctx: ctx, shots: os.Getenv("KV_CONSOLE_SCREENSHOTS")}
	if b.shots == "" {
		b.shots = t.TempDir()
	} else if err := os.MkdirAll(b.shots, 0o755); err != nil {
		t.Fatal(err)
	}
	// The first call starts the browser, bound to ctx (no timeout there).
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	messages := chromedp.Console(ctx)
	go func() {
		for m, err := range messages {
			if err != nil {
				return
			}
			// Network entries are the 4xx answers the test asks for.
			if m.IsException() || m.Type == chromedp.ConsoleError && m.Source != "network" {
				b.mu.Lock()
				b.errors = append(b.errors, m.String())
				b.mu.Unlock()
			}
		}
	}()
	// Before any page script: record CSP violations, so the test can show
	// the console works under its own policy.
	_, err := chromedp.Call(ctx, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{Source: `window.__csp = [];
document.addEventListener('securitypolicyviolation', e => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI));`})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// run runs actions, each step bounded (generously) so that a broken page
// fails the test instead of hanging it.
func (b *browser) run(actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 2*time.Minute)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		b.t.Fatalf("browser: %v\npage errors: %v", err, b.pageErrors())
	}
}

func (b *browser) pageErrors() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.errors...)
}

// eval evaluates a JavaScript expression in the page.
func eval[T any](b *browser, js string) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, time.Minute)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](js))
	if err != nil {
		b.t.Fatalf("evaluate %s: %v\npage errors: %v", js, err, b.pageErrors())
	}
	return v
}

// eval evaluates a JavaScript expression and decodes its value into out.
func (b *browser) eval(js string, out any) {
	b.t.Helper()
	v := eval[jsonv2.Value](b, js)
	if err := json.Unmarshal(v, out); err != nil {
		b.t.Fatalf("evaluate %s: %v in %s", js, err, v)
	}
}

// setValue is an action that sets the value of the element sel matches.
// (chromedp's SetValue cannot set an empty value.)
func setValue(sel, v string) chromedp.Action[chromedp.Void] {
	q, _ := json.Marshal(sel)
	val, _ := json.Marshal(v)
	return chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		_, err := chromedp.Evaluate[bool](fmt.Sprintf(`(() => { const e = document.querySelector(%s); if (!e) throw new Error('no ' + %s); e.value = %s; return true; })()`, q, q, val))(ctx, t)
		return err
	})
}

// waitJS waits (generously) until a JavaScript expression is truthy.
func (b *browser) waitJS(js string) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 2*time.Minute)
	defer cancel()
	_, err := chromedp.Run(ctx, chromedp.Poll[any](js, chromedp.WithPollingTimeout(60*time.Second), chromedp.WithPollingInterval(20*time.Millisecond)))
	if err != nil {
		b.t.Fatalf("waiting for %s: %v\nstatus %q, error %q\npage errors: %v", js, err,
			eval[string](b, `(document.querySelector('#status') || {}).textContent || ''`),
			eval[string](b, `(document.querySelector('#error') || {}).textContent || ''`), b.pageErrors())
	}
}

func (b *browser) text(sel string) string {
	b.t.Helper()
	return eval[string](b, fmt.Sprintf(`document.querySelector(%q).textContent`, sel))
}

// screenshot saves the whole page as name.png; viewportOnly keeps to what
// the window shows (for a page of 1,000 rows).
func (b *browser) screenshot(name string, viewportOnly ...bool) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, time.Minute)
	defer cancel()
	shot := chromedp.FullScreenshot(100) // quality 100: PNG
	if len(viewportOnly) > 0 && viewportOnly[0] {
		shot = chromedp.CaptureScreenshot()
	}
	png, err := chromedp.Run(ctx, shot)
	if err != nil {
		b.t.Fatalf("screenshot: %v", err)
	}
	if err := os.WriteFile(filepath.Join(b.shots, name+".png"), png, 0o644); err != nil {
		b.t.Fatal(err)
	}
}

// tabTo presses Tab until the focused element matches sel, and fails if
// it is not reached within max presses: the control is reachable from the
// keyboard.
func (b *browser) tabTo(sel string, max int) {
	b.t.Helper()
	for range max {
		if eval[bool](b, fmt.Sprintf(`!!document.activeElement && document.activeElement.matches(%q)`, sel)) {
			return
		}
		b.run(chromedp.KeyEvent(kb.Tab))
	}
	at := eval[string](b, `document.activeElement ? document.activeElement.outerHTML.slice(0, 120) : ''`)
	b.t.Fatalf("%s not reached with %d presses of Tab; focus is on %s", sel, max, at)
}

func (b *browser) setViewport(w, h int64) {
	b.t.Helper()
	b.run(chromedp.EmulateViewport(w, h))
}

// noHorizontalScroll checks that the page fits the viewport's width (wide
// tables scroll inside their own boxes).
func (b *browser) noHorizontalScroll(what string) {
	b.t.Helper()
	r := eval[struct{ Scroll, Inner int }](b, `({Scroll: document.documentElement.scrollWidth, Inner: window.innerWidth})`)
	if r.Scroll > r.Inner {
		b.t.Errorf("%s: the page is %dpx wide in a %dpx viewport", what, r.Scroll, r.Inner)
	}
}

// The whole console in a real Chromium against a real kvd.
func TestConsoleInBrowser(t *testing.T) {
	b := newBrowser(t)
	s := kvdtest.Start(t)
	ctx := context.Background()
	api := client.New(client.WithBaseURL(s.URL), client.WithAPIKey(s.Token))

	// Load, and how long it takes from a local kvd.
	start := time.Now()
	b.run(chromedp.Navigate(s.URL + "/console"))
	b.waitJS(`document.querySelector('#token') !== null`)
	wall := time.Since(start)
	b.waitJS(`performance.getEntriesByType('navigation')[0].loadEventEnd > 0`)
	var nav struct{ DCL, Load float64 }
	b.eval(`(() => { const n = performance.getEntriesByType('navigation')[0]; return {DCL: n.domContentLoadedEventEnd, Load: n.loadEventEnd}; })()`, &nav)
	t.Logf("console load from a local kvd: DOMContentLoaded %.1f ms, load %.1f ms (navigation timing); %v until the login form, from the test", nav.DCL, nav.Load, wall.Round(time.Millisecond))
	var loc string
	b.eval(`location.pathname`, &loc)
	if loc != "/console/" {
		t.Fatalf("/console led to %s", loc)
	}
	b.screenshot("01-login")

	// Log in: a wrong token shows the API's own detail; the right one,
	// typed and sent with Enter, gets in.
	b.run(chromedp.SendKeys(chromedp.CSS("#token"), "not-a-token"), chromedp.KeyEvent(kb.Enter))
	b.waitJS(`!document.querySelector('#error').hidden`)
	if msg := b.text("#error"); !strings.Contains(msg, "not accepted") || !strings.Contains(strings.ToLower(msg), "token") {
		t.Fatalf("wrong token: %q", msg)
	}
	b.run(setValue("#token", ""), chromedp.SendKeys(chromedp.CSS("#token"), s.Token), chromedp.KeyEvent(kb.Enter))
	b.waitJS(`document.querySelector('#ns-table') !== null && document.querySelector('#error').hidden`)
	var stored string
	b.eval(`sessionStorage.getItem('kvd.console.token')`, &stored)
	if stored != s.Token {
		t.Fatalf("sessionStorage holds %q", stored)
	}
	var cookies string
	b.eval(`document.cookie`, &cookies)
	if cookies != "" {
		t.Fatalf("the console set cookies: %q", cookies)
	}

	// Create a namespace and watch it turn ready.
	b.run(chromedp.SendKeys(chromedp.CSS("#new-ns-name"), "web-test"), chromedp.Click(chromedp.CSS("#create-ns")))
	b.waitJS(`document.querySelector('#ns-rows tr[data-name="web-test"] .badge.provision_ok') !== null && document.querySelector('#create-progress').textContent.includes('ready')`)
	if p := b.text("#create-progress"); p != "web-test: provision_ok — ready" {
		t.Fatalf("progress: %q", p)
	}
	// A refused name shows the API's detail.
	b.run(chromedp.SendKeys(chromedp.CSS("#new-ns-name"), "Bad_Name"), chromedp.Click(chromedp.CSS("#create-ns")))
	b.waitJS(`!document.querySelector('#error').hidden`)
	if msg := b.text("#error"); !strings.Contains(msg, "lowercase") {
		t.Fatalf("bad name: %q", msg)
	}
	b.run(setValue("#new-ns-name", ""))
	b.screenshot("02-namespaces")
	var id string
	b.eval(`document.querySelector('#ns-rows tr[data-name="web-test"]').dataset.id`, &id)
	ns := api.Namespace(id)

	// Keys: put one through the page.
	b.run(chromedp.Click(chromedp.CSS(`a[aria-label="Keys of web-test"]`)))
	b.waitJS(`document.querySelector('#key-table') !== null && document.querySelector('#keys-caption').textContent === 'No keys yet.'`)
	doc := `{"name":"Alice","tags":["a","b"],"n":1}`
	b.run(
		chromedp.SendKeys(chromedp.CSS("#new-key"), "user/1"),
		setValue("#new-type", "application/json"),
		setValue("#new-value", doc),
		chromedp.Click(chromedp.CSS("#put-key")))
	b.waitJS(`[...document.querySelectorAll('#key-rows a')].some(a => a.textContent === 'user/1')`)
	if v, ct, err := ns.Get(ctx, "user/1"); err != nil || string(v) != doc || ct != "application/json" {
		t.Fatalf("user/1 as stored: %q %q %v", v, ct, err)
	}
	// A file uploaded as a value keeps its bytes and type.
	upload := filepath.Join(t.TempDir(), "data.json")
	fileBytes := []byte("{\"from\":\"a file\"}\n")
	if err := os.WriteFile(upload, fileBytes, 0o644); err != nil {
		t.Fatal(err)
	}
	b.run(chromedp.SendKeys(chromedp.CSS("#new-key"), "files/data.json"),
		chromedp.SetUploadFiles(chromedp.CSS("#new-file"), []string{upload}),
		chromedp.Click(chromedp.CSS("#put-key")))
	b.waitJS(`[...document.querySelectorAll('#key-rows a')].some(a => a.textContent === 'files/data.json')`)
	if v, ct, err := ns.Get(ctx, "files/data.json"); err != nil || !bytes.Equal(v, fileBytes) || ct != "application/json" {
		t.Fatalf("uploaded value: %q %q %v", v, ct, err)
	}
	// A key the API refuses: its detail, as text.
	b.run(chromedp.SendKeys(chromedp.CSS("#new-key"), `<img src=x onerror="window.__xss=3">`), chromedp.Click(chromedp.CSS("#put-key")))
	b.waitJS(`!document.querySelector('#error').hidden`)
	if msg := b.text("#error"); !strings.Contains(msg, "<") && !strings.Contains(msg, "not allowed") {
		t.Fatalf("bad key: %q", msg)
	}
	b.run(setValue("#new-key", ""))

	// More keys through the API: binary, and markup meant to run.
	binary := make([]byte, 256)
	for i := range binary {
		binary[i] = byte(i)
	}
	hostile := `<script>window.__xss=1</script><img src=x onerror="window.__xss=2"><b>bold</b>`
	for k, v := range map[string][]byte{"bin/blob": binary, "xss/html": []byte(hostile)} {
		if _, err := ns.Put(ctx, k, v, &client.PutOptions{ContentType: map[bool]string{true: "text/html", false: "application/octet-stream"}[k == "xss/html"]}); err != nil {
			t.Fatal(err)
		}
	}

	// A key of dots is listed, and its page says why a browser cannot
	// fetch it, instead of fetching something else.
	if _, err := ns.Put(ctx, "..", []byte("dots"), nil); err != nil {
		t.Fatal(err)
	}
	b.run(chromedp.Navigate(s.URL + "/console/#/ns/" + id + "/key/.."))
	b.waitJS(`!document.querySelector('#error').hidden`)
	if msg := b.text("#error"); !strings.Contains(msg, "cannot be reached from a browser") {
		t.Fatalf("key ..: %q", msg)
	}
	b.run(chromedp.Navigate(s.URL + "/console/#/ns/" + id))
	b.waitJS(`[...document.querySelectorAll('#key-rows a')].some(a => a.textContent === '..')`)

	// Find by prefix.
	b.run(chromedp.SendKeys(chromedp.CSS("#prefix"), "user/"), chromedp.Click(chromedp.CSS("#list-keys")))
	b.waitJS(`document.querySelector('#keys-caption').textContent.includes('starting with')`)
	var listed []string
	b.eval(`[...document.querySelectorAll('#key-rows a')].map(a => a.textContent)`, &listed)
	if len(listed) != 1 || listed[0] != "user/1" {
		t.Fatalf("prefix user/: %q", listed)
	}
	b.screenshot("03-keys")

	// View it: JSON pretty-printed, then hex; the metadata as the server
	// sends it, "—" where it sends nothing.
	b.run(chromedp.Click(chromedp.CSS(`#key-rows a`)))
	b.waitJS(`document.querySelector('#value') !== null`)
	var pretty bytes.Buffer
	json.Indent(&pretty, []byte(doc), "", "  ")
	if got := b.text("#value"); got != pretty.String() {
		t.Fatalf("JSON view:\n%s\nwant\n%s", got, pretty.String())
	}
	hdr := headOf(t, s, id, "user/1")
	for sel, want := range map[string]string{
		"#meta-size":    fmt.Sprintf("%d bytes", len(doc)),
		"#meta-type":    "application/json",
		"#meta-updated": orDash(hdr.Get("Kv-Updated-At")),
		"#meta-expires": orDash(hdr.Get("Kv-Expires-At")),
		"#meta-etag":    orDash(hdr.Get("ETag")),
	} {
		if got := b.text(sel); got != want {
			t.Errorf("%s = %q, want %q", sel, got, want)
		}
	}
	b.screenshot("04-key-json")
	b.run(chromedp.Click(chromedp.CSS("#mode-hex")))
	if got := b.text("#value"); !strings.HasPrefix(got, "00000000  7b 22 6e 61 6d 65 22 3a  22 41 6c 69 63 65 22 2c  |{\"name\":\"Alice\",|") {
		t.Fatalf("hex view:\n%s", got)
	}
	b.screenshot("05-key-hex")

	// Edit and save.
	edited := `{"name":"Bob"}`
	b.run(setValue("#edit-value", edited), chromedp.Click(chromedp.CSS("#save-key")))
	b.waitJS(`document.querySelector('#status').textContent === 'Saved user/1.' && document.querySelector('#value') && document.querySelector('#value').textContent.includes('Bob')`)
	if v, _, err := ns.Get(ctx, "user/1"); err != nil || string(v) != edited {
		t.Fatalf("after the edit: %q %v", v, err)
	}

	// Binary: hex only.
	b.run(chromedp.Navigate(s.URL + "/console/#/ns/" + id + "/key/bin%2Fblob"))
	b.waitJS(`document.querySelector('#key-h code') && document.querySelector('#key-h code').textContent === 'bin/blob'`)
	b.waitJS(`document.querySelector('#value') !== null`)
	var textDisabled bool
	b.eval(`document.querySelector('#mode-text').disabled && document.querySelector('#mode-hex').checked`, &textDisabled)
	if got := b.text("#value"); !textDisabled || !strings.HasPrefix(got, "00000000  00 01 02 03 04 05 06 07  08 09 0a 0b 0c 0d 0e 0f  |................|") {
		t.Fatalf("binary value (text disabled %v):\n%s", textDisabled, got)
	}

	// Markup in a value is shown as text and never runs.
	b.run(chromedp.Navigate(s.URL + "/console/#/ns/" + id + "/key/xss%2Fhtml"))
	b.waitJS(`document.querySelector('#key-h code') && document.querySelector('#key-h code').textContent === 'xss/html'`)
	b.waitJS(`document.querySelector('#value') !== null`)
	if got := b.text("#value"); got != hostile {
		t.Fatalf("hostile value shown as %q", got)
	}
	var dom struct {
		Flag    any
		Imgs    int
		Bold    int
		Scripts []string
	}
	b.eval(`({Flag: window.__xss === undefined ? null : window.__xss, Imgs: document.querySelectorAll('img').length,
		Bold: document.querySelectorAll('main b').length, Scripts: [...document.scripts].map(s => s.getAttribute('src') || 'inline')})`, &dom)
	if dom.Flag != nil || dom.Imgs != 0 || dom.Bold != 0 || len(dom.Scripts) != 2 || dom.Scripts[0] != "/console/vendor/uplot/uPlot.iife.min.js" || dom.Scripts[1] != "/console/app.js" {
		t.Fatalf("hostile value: the page has %+v", dom)
	}
	b.screenshot("06-key-hostile")

	// Delete a key, confirming in the dialog from the keyboard.
	b.run(chromedp.Navigate(s.URL + "/console/#/ns/" + id + "/key/user%2F1"))
	b.waitJS(`document.querySelector('#key-h code') && document.querySelector('#key-h code').textContent === 'user/1'`)
	b.waitJS(`document.querySelector('#delete-key') !== null`)
	b.run(chromedp.Focus(chromedp.CSS("#delete-key")), chromedp.KeyEvent(kb.Enter))
	b.waitJS(`document.querySelector('dialog[open]') !== null`)
	b.tabTo("#confirm-ok", 3)
	b.run(chromedp.KeyEvent(kb.Enter))
	b.waitJS(`document.querySelector('#key-table') !== null && document.querySelector('#status').textContent === 'Deleted user/1.'`)
	if _, _, err := ns.Get(ctx, "user/1"); !errors.Is(err, kv.ErrNotFound) {
		t.Fatalf("user/1 after the delete: %v", err)
	}

	// A page of 1,000 keys, and the cursor to the next.
	big, err := api.CreateNamespace(ctx, "many")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := api.WaitReady(ctx, big.ID.String()); err != nil {
		t.Fatal(err)
	}
	fill(t, api.Namespace(big.ID.String()), 1001)
	b.run(chromedp.Navigate(s.URL + "/console/#/ns/" + big.ID.String()))
	b.waitJS(`document.querySelectorAll('#key-rows tr').length === 1000`)
	var render struct {
		Keys int
		MS   float64
	}
	b.eval(`window.kvdConsole.lastRender`, &render)
	t.Logf("rendering a page of %d keys: %.1f ms (performance.now() around building and inserting the rows)", render.Keys, render.MS)
	var firstLast []string
	b.eval(`[document.querySelector('#key-rows tr:first-child a').textContent, document.querySelector('#key-rows tr:last-child a').textContent]`, &firstLast)
	if render.Keys != 1000 || len(firstLast) != 2 || firstLast[0] != "k/0000" || firstLast[1] != "k/0999" {
		t.Fatalf("1,000-key page: %+v %q", render, firstLast)
	}
	b.screenshot("07-keys-1000", true)
	b.run(chromedp.Click(chromedp.CSS("#keys-next")))
	b.waitJS(`document.querySelectorAll('#key-rows tr').length === 1 && document.querySelector('#key-rows a').textContent === 'k/1000'`)
	b.run(chromedp.Click(chromedp.CSS("#keys-prev")))
	b.waitJS(`document.querySelectorAll('#key-rows tr').length === 1000`)

	// Usage and the bill, with both charts drawn.
	type chartFigures struct {
		Days          int
		Reads         float64
		Writes        float64
		LastBytes     float64
		OpsPixels     int
		BytesPixels   int
		WritesColored int
	}
	var (
		chart chartFigures
		rep   kv.UsageRecord
	)
	for attempt := 0; ; attempt++ {
		b.run(chromedp.Navigate(s.URL + "/console/#/usage"))
		b.waitJS(`window.kvdConsole.charts.ops && window.kvdConsole.charts.bytes && document.querySelector('#bill-total')`)
		b.eval(`(() => {
			const c = window.kvdConsole.charts;
			const sum = a => a.reduce((s, v) => s + v, 0);
			// Pixels drawn: not transparent, and of the writes line's colour.
			const count = (sel, match) => {
				const cv = document.querySelector(sel + ' canvas');
				const d = cv.getContext('2d').getImageData(0, 0, cv.width, cv.height).data;
				let n = 0;
				for (let i = 0; i < d.length; i += 4) if (match(d[i], d[i+1], d[i+2], d[i+3])) n++;
				return n;
			};
			return {
				Days: c.ops.data[0].length, Reads: sum(c.ops.data[1]), Writes: sum(c.ops.data[2]),
				LastBytes: c.bytes.data[1][c.bytes.data[1].length - 1],
				OpsPixels: count('#ops-chart', (r, g, b, a) => a > 0),
				BytesPixels: count('#bytes-chart', (r, g, b, a) => a > 0),
				WritesColored: count('#ops-chart', (r, g, b, a) => a === 255 && Math.abs(r - 214) < 8 && Math.abs(g - 39) < 8 && Math.abs(b - 40) < 8),
			};
		})()`, &chart)
		rep = usageOf(t, s)
		// A day that ended between the page's request and the test's: again.
		if chart.Days == len(rep.Days) || attempt == 1 {
			break
		}
		b.run(chromedp.Navigate(s.URL + "/console/#/namespaces"))
	}
	if chart.Days != len(rep.Days) || chart.Reads != float64(rep.Reads) || chart.Writes != float64(rep.Writes) || chart.LastBytes != float64(rep.StoredBytes) ||
		chart.OpsPixels == 0 || chart.BytesPixels == 0 || chart.WritesColored == 0 || rep.Writes < 1000 {
		t.Fatalf("charts %+v; usage has %d days, %d reads, %d writes, %d bytes", chart, len(rep.Days), rep.Reads, rep.Writes, rep.StoredBytes)
	}
	if got := b.text("#bill-total"); got != "$"+rep.Bill.Total {
		t.Fatalf("bill total %q, want $%s", got, rep.Bill.Total)
	}
	var billLines int
	b.eval(`document.querySelectorAll('#bill tbody tr').length`, &billLines)
	if billLines != len(rep.Bill.Lines) {
		t.Fatalf("bill has %d lines on the page, %d in the API", billLines, len(rep.Bill.Lines))
	}
	b.noHorizontalScroll("usage at 1280px")
	b.screenshot("08-usage")
	// An earlier month, from the keyboard: no usage, every day listed.
	b.run(chromedp.Focus(chromedp.CSS("#usage-prev")), chromedp.KeyEvent(kb.Enter))
	shown, err := time.Parse("2006-01", rep.Month)
	if err != nil {
		t.Fatal(err)
	}
	before := shown.AddDate(0, -1, 0)
	b.waitJS(fmt.Sprintf(`document.querySelector('#usage-period') && document.querySelector('#usage-period').textContent.includes('%s:')`, before.Format("2006-01")))
	var prevDays int
	b.eval(`document.querySelectorAll('#usage-days tbody tr').length`, &prevDays)
	if want := before.AddDate(0, 1, -1).Day(); prevDays != want {
		t.Fatalf("%s has %d days on the page, want %d", before.Format("2006-01"), prevDays, want)
	}

	// Narrow screens: everything fits, tables scroll in their boxes.
	b.setViewport(375, 812)
	b.run(chromedp.Navigate(s.URL + "/console/#/usage"))
	b.waitJS(`window.kvdConsole.charts.ops && document.querySelector('#bill-total')`)
	b.noHorizontalScroll("usage at 375px")
	b.screenshot("09-usage-375")
	b.run(chromedp.Navigate(s.URL + "/console/#/namespaces"))
	b.waitJS(`document.querySelectorAll('#ns-rows tr').length === 2`)
	b.noHorizontalScroll("namespaces at 375px")
	b.screenshot("10-namespaces-375")
	b.run(chromedp.Navigate(s.URL + "/console/#/ns/" + big.ID.String()))
	b.waitJS(`document.querySelectorAll('#key-rows tr').length === 1000`)
	b.noHorizontalScroll("keys at 375px")
	b.screenshot("11-keys-375", true)
	b.setViewport(1280, 900)

	// Delete the namespace from the keyboard: Tab to its Delete button,
	// Enter, confirm; the row goes once the namespace is gone.
	b.run(chromedp.Navigate(s.URL + "/console/#/namespaces"))
	b.waitJS(`document.querySelectorAll('#ns-rows tr').length === 2`)
	b.run(chromedp.Focus(chromedp.CSS("#new-ns-name")))
	b.tabTo(`button[aria-label="Delete web-test"]`, 20)
	b.run(chromedp.KeyEvent(kb.Enter))
	b.waitJS(`document.querySelector('dialog[open]') !== null`)
	b.screenshot("12-delete-dialog")
	b.run(chromedp.KeyEvent(kb.Escape)) // Escape cancels
	b.waitJS(`document.querySelector('dialog') === null`)
	if _, err := api.GetNamespace(ctx, id); err != nil {
		t.Fatalf("cancelled deletion deleted: %v", err)
	}
	b.run(chromedp.KeyEvent(kb.Enter)) // focus is back on Delete
	b.waitJS(`document.querySelector('dialog[open]') !== null`)
	b.run(chromedp.Click(chromedp.CSS("#confirm-ok")))
	b.waitJS(`document.querySelector('#ns-rows tr[data-name="web-test"]') === null && document.querySelectorAll('#ns-rows tr').length === 1`)
	if _, err := api.GetNamespace(ctx, id); !errors.Is(err, kv.ErrNotFound) {
		t.Fatalf("namespace after the deletion: %v", err)
	}

	// Paging: 21 namespaces are two pages of 20.
	for i := range 20 {
		if _, err := api.CreateNamespace(ctx, fmt.Sprintf("page-%02d", i)); err != nil {
			t.Fatal(err)
		}
	}
	b.run(chromedp.Navigate(s.URL + "/console/#/namespaces?page=1"))
	b.waitJS(`document.querySelectorAll('#ns-rows tr').length === 20 && document.querySelector('#ns-page-info').textContent === 'Page 1 of 2'`)
	b.run(chromedp.Click(chromedp.CSS("#ns-next")))
	b.waitJS(`document.querySelectorAll('#ns-rows tr').length === 1 && document.querySelector('#ns-page-info').textContent === 'Page 2 of 2'`)
	if last := b.text("#ns-rows tr td a"); last != "page-19" {
		t.Fatalf("page 2 holds %q, want the newest, page-19", last)
	}

	// Every control has a label; landmarks are there.
	var unlabeled []string
	b.eval(`[...document.querySelectorAll('input, select, textarea')].filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label')).map(e => e.id || e.outerHTML)`, &unlabeled)
	var landmarks int
	b.eval(`document.querySelectorAll('header, nav[aria-label], main, footer').length`, &landmarks)
	if len(unlabeled) != 0 || landmarks < 4 {
		t.Fatalf("unlabeled controls %q; %d landmarks", unlabeled, landmarks)
	}

	// Log out: back to the login form, nothing kept.
	b.run(chromedp.Click(chromedp.CSS("#logout")))
	b.waitJS(`document.querySelector('#token') !== null`)
	b.eval(`sessionStorage.getItem('kvd.console.token') || ''`, &stored)
	if stored != "" {
		t.Fatalf("after logging out, sessionStorage holds %q", stored)
	}

	var csp []string
	b.eval(`window.__csp`, &csp)
	if len(csp) != 0 {
		t.Errorf("Content-Security-Policy violations: %q", csp)
	}
	if errs := b.pageErrors(); len(errs) != 0 {
		t.Errorf("the page reported errors: %q", errs)
	}
	t.Logf("screenshots in %s", b.shots)
}

func orDash(s string) string {
	if s == "" {
		return "—"
	}
	return s
}

// headOf is the headers the server sends with key of namespace id.
func headOf(t *testing.T, s *kvdtest.Server, id, key string) http.Header {
	t.Helper()
	res, _ := get(t, "GET", s.URL+"/v2/storage/kvs/"+id+"/keys/"+strings.ReplaceAll(key, "/", "%2F"), "Authorization", "Bearer "+s.Token)
	if res.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d", key, res.StatusCode)
	}
	return res.Header
}

// usageOf is the organization's usage this month, by day, from the API.
func usageOf(t *testing.T, s *kvdtest.Server) kv.UsageRecord {
	t.Helper()
	res, body := get(t, "GET", s.URL+"/v2/storage/kvs/usage?granularity=day", "Authorization", "Bearer "+s.Token)
	var env struct{ Data kv.UsageRecord }
	if res.StatusCode != http.StatusOK || json.Unmarshal([]byte(body), &env) != nil || env.Data.Bill == nil {
		t.Fatalf("usage: %d %s", res.StatusCode, body)
	}
	return env.Data
}

// fill writes keys k/0000 … into ns, a few at a time.
func fill(t *testing.T, ns *client.Namespace, n int) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	sem := make(chan struct{}, 8)
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if _, err := ns.Put(context.Background(), fmt.Sprintf("k/%04d", i), []byte(fmt.Sprintf("value %d", i)), nil); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// A key that changed while it was open: the page sends If-Match with the
// ETag it was given, and on 412 says so and offers to reload. kvd runs
// behind a proxy that gives the key an ETag and then refuses the write as
// changed, so the test does not depend on which ETags kvd itself sends.
func TestConsoleKeyChangedInBrowser(t *testing.T) {
	b := newBrowser(t)
	s := kvdtest.Start(t)
	ctx := context.Background()
	api := client.New(client.WithBaseURL(s.URL), client.WithAPIKey(s.Token))
	ns, err := api.CreateNamespace(ctx, "changing")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := api.WaitReady(ctx, ns.ID.String()); err != nil {
		t.Fatal(err)
	}
	if _, err := api.Namespace(ns.ID.String()).Put(ctx, "doc", []byte("first"), &client.PutOptions{ContentType: "text/plain"}); err != nil {
		t.Fatal(err)
	}
	target, err := url.Parse(s.URL)
	if err != nil {
		t.Fatal(err)
	}
	keyPath := "/v2/storage/kvs/" + ns.ID.String() + "/keys/doc"
	var (
		mu      sync.Mutex
		ifMatch []string
	)
	proxy := httputil.NewSingleHostReverseProxy(target)
	proxy.ModifyResponse = func(res *http.Response) error {
		if res.Request.URL.EscapedPath() == keyPath && res.Request.Method == http.MethodGet && res.StatusCode == http.StatusOK {
			res.Header.Set("ETag", `"e1"`)
			res.Header.Set("Kv-Updated-At", "2026-11-15T12:00:00.000000000Z")
		}
		return nil
	}
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.EscapedPath() == keyPath && r.Method == http.MethodPut {
			mu.Lock()
			ifMatch = append(ifMatch, r.Header.Get("If-Match"))
			mu.Unlock()
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("ETag", `"e2"`)
			w.WriteHeader(http.StatusPreconditionFailed)
			io.WriteString(w, `{"errors":[{"code":"10035","title":"Precondition failed","detail":"the key's ETag is now \"e2\""}]}`)
			return
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(front.Close)

	b.run(chromedp.Navigate(front.URL + "/console/"))
	b.waitJS(`document.querySelector('#token') !== null`)
	b.run(chromedp.SendKeys(chromedp.CSS("#token"), s.Token), chromedp.KeyEvent(kb.Enter))
	b.waitJS(`document.querySelector('#ns-table') !== null`)
	b.run(chromedp.Navigate(front.URL + "/console/#/ns/" + ns.ID.String() + "/key/doc"))
	b.waitJS(`document.querySelector('#key-h code') && document.querySelector('#key-h code').textContent === 'doc'`)
	if etag, updated := b.text("#meta-etag"), b.text("#meta-updated"); etag != `"e1"` || updated != "2026-11-15T12:00:00.000000000Z" {
		t.Fatalf("ETag %q, updated %q", etag, updated)
	}
	b.run(setValue("#edit-value", "second"), chromedp.Click(chromedp.CSS("#save-key")))
	b.waitJS(`!document.querySelector('#conflict').hidden`)
	if msg := b.text("#conflict"); !strings.Contains(msg, "changed since it was loaded") || !strings.Contains(msg, `the key's ETag is now "e2"`) {
		t.Fatalf("conflict message: %q", msg)
	}
	mu.Lock()
	sent := append([]string(nil), ifMatch...)
	mu.Unlock()
	if len(sent) != 1 || sent[0] != `"e1"` {
		t.Fatalf("If-Match sent: %q", sent)
	}
	if v, _, err := api.Namespace(ns.ID.String()).Get(ctx, "doc"); err != nil || string(v) != "first" {
		t.Fatalf("the refused write changed the key: %q %v", v, err)
	}
	b.screenshot("13-key-changed")
	// Reload: the key's current value, and the conflict gone; the focus
	// was on the button, so Enter does it.
	if !eval[bool](b, `document.activeElement && document.activeElement.id === 'reload-key'`) {
		t.Fatal("the reload button does not have the focus")
	}
	b.run(chromedp.KeyEvent(kb.Enter))
	b.waitJS(`document.querySelector('#conflict') && document.querySelector('#conflict').hidden && document.querySelector('#edit-value').value === 'first'`)
	if errs := b.pageErrors(); len(errs) != 0 {
		t.Errorf("the page reported errors: %q", errs)
	}
}
