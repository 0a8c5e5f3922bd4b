package cli

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/edgekv/kv"
	"github.com/edgekv/kv/client"
)

func (a *app) newExportCommand() *cobra.Command {
	var prefix, out string
	var concurrency int
	cmd := &cobra.Command{
		Use:   "export [NS] [--prefix P] [-o FILE]",
		Short: "Write a namespace's keys, values, content types and expiries as NDJSON",
		Long: `Write every key of a namespace (or those starting with --prefix) as NDJSON
in the kv-export/1 format: a header line, then one line per key with its
value (as text when it is UTF-8 without control characters, else as
value_base64), its content type and its expiry.

Only the documented list and get calls are used, so this works against the
hosted service too. Expiries come from the Kv-Expires-At header, which kvd
sends and the hosted service does not (expires_at is then null). Keys are
read --concurrency at a time and written in byte order; a key deleted
between the listing and its read is skipped and counted.

-o FILE writes the export to FILE atomically: to a temporary file beside it,
renamed over FILE only once the export is complete, so an interrupted or
failed export leaves FILE as it was. Without -o (or with -o -) the export
goes to stdout. A summary line goes to stderr; on a terminal, a progress
display while it runs.`,
		Example: `  telnyx-edge storage kv export my-cache -o my-cache.ndjson
  telnyx-edge storage kv export MY_CACHE --prefix user/ > users.ndjson`,
		Args:              argsRange(0, 1),
		ValidArgsFunction: a.completeNS(),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkPrefix(prefix); err != nil {
				return err
			}
			if concurrency < 1 || concurrency > 64 {
				return usagef("--concurrency must be from 1 to 64; got %d", concurrency)
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			id, err := a.resolveNS(ctx, c, args, 0)
			if err != nil {
				return err
			}
			return a.export(ctx, c, id, prefix, out, concurrency)
		},
	}
	cmd.Flags().StringVar(&prefix, "prefix", "", "only keys starting with this prefix")
	// Named like the global --output, which it shadows here: an export is
	// always NDJSON, and -o FILE is what people type.
	cmd.Flags().StringVarP(&out, "output", "o", "", "write to this file (atomically) instead of stdout")
	cmd.Flags().IntVar(&concurrency, "concurrency", 8, "keys read at once, 1 to 64")
	return cmd
}

// exportStats are the counts of a summary.
type exportStats struct {
	keys, skipped int
	bytes         int64
}

// fetched is one key read for the export: its line, or why there is none.
type fetched struct {
	line    []byte
	size    int
	skipped bool
	err     error
}

func (a *app) export(ctx context.Context, c *client.Client, id, prefix, outPath string, concurrency int) error {
	start := a.env.Now()
	info, err := a.readyNamespace(ctx, c, id)
	if err != nil {
		return err
	}
	ns := c.Namespace(id)
	out, err := a.openExport(outPath)
	if err != nil {
		return err
	}
	defer out.abort()
	w := bufio.NewWriterSize(out.w, 256<<10)
	header, _ := json.Marshal(exportHeader{Format: exportFormat, Namespace: info.Name, ExportedAt: a.env.Now().UTC().Format(kv.KeyTimeFormat)})
	w.Write(append(header, '\n'))

	bar := a.newProgress(-1, "exporting", false, "keys")
	st, err := exportKeys(ctx, ns, prefix, concurrency, w, bar)
	bar.done()
	if err == nil {
		err = w.Flush()
	}
	if err == nil && st.skipped > 0 {
		// Keys that vanish one by one are deletions; a namespace that
		// vanished makes every later read a 404 too.
		if _, nerr := c.GetNamespace(ctx, id); nerr != nil {
			err = fmt.Errorf("the export stopped: %w", a.notFound(nerr, id, ""))
		}
	}
	if err == nil {
		err = out.commit()
	}
	where := "stdout"
	if out.path != "" {
		where = outPath
	}
	if err != nil {
		if ctx.Err() != nil {
			a.hint("Export interrupted after %s; %s left unchanged", plural(st.keys, "key"), where)
		}
		return err
	}
	a.hint("Exported %s, %s bytes, from %s to %s in %s; skipped %s%s, failed 0",
		plural(st.keys, "key"), thousands(st.bytes), a.nsLabel(id), where, elapsed(a.env.Now().Sub(start)),
		thousands(int64(st.skipped)), reasons(st.skipped, "deleted before it was read"))
	return nil
}

// exportKeys lists the keys and reads them concurrently, writing their
// lines to w in listing order. At most about 2*concurrency values are held
// at a time, whatever the size of the namespace.
func exportKeys(ctx context.Context, ns *client.Namespace, prefix string, concurrency int, w io.Writer, bar *progress) (exportStats, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// futures carries, in listing order, the channel each read answers on.
	futures := make(chan chan fetched, concurrency)
	sem := make(chan struct{}, concurrency)
	go func() {
		defer close(futures)
		for page, err := range ns.Pages(ctx, prefix, "", 0) {
			if err != nil {
				f := make(chan fetched, 1)
				f <- fetched{err: &explained{msg: "listing keys: " + message(err), err: err}}
				futures <- f
				return
			}
			for _, k := range page.Keys {
				f := make(chan fetched, 1)
				select {
				case futures <- f:
				case <-ctx.Done():
					return
				}
				select {
				case sem <- struct{}{}:
				case <-ctx.Done():
					f <- fetched{err: ctx.Err()}
					return
				}
				go func(key string) {
					defer func() { <-sem }()
					f <- fetchKey(ctx, ns, key)
				}(k.Key)
			}
		}
	}()
	var st exportStats
	var err error
	for f := range futures {
		r := <-f
		switch {
		case err != nil: // draining after a failure
		case r.err != nil:
			err = r.err
			cancel()
		case r.skipped:
			st.skipped++
		default:
			if _, werr := w.Write(r.line); werr != nil {
				err = fmt.Errorf("writing the export: %w", werr)
				cancel()
				continue
			}
			st.keys++
			st.bytes += int64(r.size)
			bar.add(1)
		}
	}
	return st, err
}

// fetchKey reads one key and encodes its line.
func fetchKey(ctx context.Context, ns *client.Namespace, key string) fetched {
	value, info, err := ns.GetInfo(ctx, key)
	if errors.Is(err, kv.ErrNotFound) {
		return fetched{skipped: true}
	}
	if err != nil {
		if ctx.Err() != nil {
			return fetched{err: ctx.Err()}
		}
		return fetched{err: &explained{msg: fmt.Sprintf("reading key %s: %s", key, message(err)), err: err}}
	}
	rec := exportRecord{Key: key, ContentType: info.ContentType}
	if textValue(value) {
		s := string(value)
		rec.Value = &s
	} else {
		s := base64.StdEncoding.EncodeToString(value)
		rec.ValueBase64 = &s
	}
	if !info.ExpiresAt.IsZero() {
		s := info.ExpiresAt.UTC().Format(kv.KeyTimeFormat)
		rec.ExpiresAt = &s
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(rec); err != nil { // Encode adds the newline
		return fetched{err: err}
	}
	return fetched{line: b.Bytes(), size: len(value)}
}

// exportFile is where an export goes: stdout, or a temporary file renamed
// over path by commit.
type exportFile struct {
	w    io.Writer
	path string   // "" for stdout
	tmp  *os.File // nil for stdout
	done bool
}

func (a *app) openExport(name string) (*exportFile, error) {
	if name == "" || name == "-" {
		return &exportFile{w: a.env.Stdout}, nil
	}
	path := a.path(name)
	if fi, err := os.Stat(path); err == nil && fi.IsDir() {
		return nil, usagef("-o %s is a directory; name a file", name)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return nil, fmt.Errorf("cannot write the export beside %s: %w", name, err)
	}
	return &exportFile{w: tmp, path: path, tmp: tmp}, nil
}

// commit makes the export durable and puts it in place.
func (f *exportFile) commit() error {
	f.done = true
	if f.tmp == nil {
		return nil
	}
	err := f.tmp.Sync()
	if cerr := f.tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.tmp.Name(), f.path)
	}
	if err != nil {
		os.Remove(f.tmp.Name())
		return fmt.Errorf("writing the export: %w", err)
	}
	if d, err := os.Open(filepath.Dir(f.path)); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// abort removes the temporary file of an export that did not commit.
func (f *exportFile) abort() {
	if f.done || f.tmp == nil {
		return
	}
	f.tmp.Close()
	os.Remove(f.tmp.Name())
}
