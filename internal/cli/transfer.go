package cli

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/schollz/progressbar/v3"

	"github.com/edgekv/kv"
	"github.com/edgekv/kv/client"
)

// The export format (API.md, "Export format"): NDJSON, a header line, then
// one line per key.
const exportFormat = "kv-export/1"

// maxExportLine bounds one line of an export file: a 1 MiB value takes at
// most about 2 MiB as JSON text (export writes values with control
// characters as base64) and 1.4 MiB as base64.
const maxExportLine = 4 << 20

// exportHeader is the first line.
type exportHeader struct {
	Format     string `json:"format"`
	Namespace  string `json:"namespace"`
	ExportedAt string `json:"exported_at"`
}

// exportRecord is one key. Exactly one of Value and ValueBase64 is set.
type exportRecord struct {
	Key         string  `json:"key"`
	Value       *string `json:"value,omitempty"`
	ValueBase64 *string `json:"value_base64,omitempty"`
	ContentType string  `json:"content_type"`
	ExpiresAt   *string `json:"expires_at"`
}

// textValue reports whether v is written as JSON text rather than base64:
// valid UTF-8 without control characters other than tab, newline and
// carriage return (which JSON would escape as six bytes each).
func textValue(v []byte) bool {
	if !utf8.Valid(v) {
		return false
	}
	for _, c := range v {
		if c < 0x20 && c != '\t' && c != '\n' && c != '\r' {
			return false
		}
	}
	return true
}

// readyNamespace returns namespace id, which must be provision_ok for its
// keys to be read or written.
func (a *app) readyNamespace(ctx context.Context, c *client.Client, id string) (kv.Namespace, error) {
	ns, err := c.GetNamespace(ctx, id)
	if err != nil {
		return ns, a.notFound(err, id, "")
	}
	if ns.Name != "" {
		a.named(id, ns.Name)
	}
	if ns.Status != kv.StatusProvisionOK {
		return ns, fmt.Errorf("namespace %s is %s; its keys can be read and written once it is provision_ok", a.nsLabel(id), ns.Status)
	}
	return ns, nil
}

// progress shows a bar (or, when the total is unknown, a spinner with a
// count) on stderr while a transfer runs, when stderr is a terminal; it
// shows nothing otherwise. Its methods are safe for concurrent use.
type progress struct {
	bar *progressbar.ProgressBar // nil: not shown
}

// newProgress starts a progress display of max units (-1: unknown), in
// bytes when bytes is set, else counted as what.
func (a *app) newProgress(max int64, desc string, bytes bool, what string) *progress {
	if !a.env.StderrIsTerminal() {
		return &progress{}
	}
	opts := []progressbar.Option{
		progressbar.OptionSetWriter(a.env.Stderr),
		progressbar.OptionSetDescription(desc),
		progressbar.OptionThrottle(100 * time.Millisecond),
		progressbar.OptionSetElapsedTime(true),
		progressbar.OptionClearOnFinish(),
		progressbar.OptionSetRenderBlankState(true),
	}
	if bytes {
		opts = append(opts, progressbar.OptionShowBytes(true), progressbar.OptionShowTotalBytes(true), progressbar.OptionShowCount(), progressbar.OptionUseIECUnits(true))
	} else {
		opts = append(opts, progressbar.OptionShowCount(), progressbar.OptionShowIts(), progressbar.OptionSetItsString(what))
	}
	if max < 0 {
		opts = append(opts, progressbar.OptionSpinnerType(14))
	}
	return &progress{bar: progressbar.NewOptions64(max, opts...)}
}

func (p *progress) add(n int64) {
	if p.bar != nil {
		p.bar.Add64(n)
	}
}

// done removes the display, so that the summary line stands alone.
// Finish, not Exit: a spinner's goroutine redraws until the bar is
// finished.
func (p *progress) done() {
	if p.bar != nil {
		p.bar.Finish()
		p.bar.Clear()
	}
}

// countingReader counts the bytes read through it for a progress display.
type countingReader struct {
	r io.Reader
	p *progress
}

func (c countingReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.p.add(int64(n))
	return n, err
}

// elapsed is a duration for a summary line.
func elapsed(d time.Duration) string {
	switch {
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	case d < time.Minute:
		return d.Round(100 * time.Millisecond).String()
	}
	return d.Round(time.Second).String()
}

// reasons lists the non-zero counts of a summary as "1 expired, 2 ...".
func reasons(parts ...any) string {
	var out []string
	for i := 0; i+1 < len(parts); i += 2 {
		if n := parts[i].(int); n > 0 {
			out = append(out, fmt.Sprintf("%s %s", thousands(int64(n)), parts[i+1]))
		}
	}
	if len(out) == 0 {
		return ""
	}
	return " (" + strings.Join(out, ", ") + ")"
}
