package cli

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/edgekv/kv"
	"github.com/edgekv/kv/client"
)

func (a *app) newKeyCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "key", Short: "Keys of a namespace", Args: groupArgs, RunE: groupRun,
		Example: `  telnyx-edge storage kv key put user/123 '{"name":"Alice"}'
  telnyx-edge storage kv key get user/123
  telnyx-edge storage kv key list --prefix user/`}
	cmd.AddCommand(a.newKeyListCommand(), a.newKeyGetCommand(), a.newKeyPutCommand(), a.newKeyDeleteCommand(), a.newKeyInfoCommand())
	return cmd
}

// keyHandle resolves NS (args before the last n, or func.toml's only
// binding) and returns the namespace handle.
func (a *app) keyHandle(cmd *cobra.Command, nsArgs []string) (*client.Namespace, error) {
	c, err := a.client()
	if err != nil {
		return nil, err
	}
	id, err := a.resolveNS(cmd.Context(), c, nsArgs, 0)
	if err != nil {
		return nil, err
	}
	return c.Namespace(id), nil
}

type keyJSON struct {
	Key       string `json:"key"`
	SizeBytes int64  `json:"size_bytes"`
	UpdatedAt string `json:"updated_at"`
	// ExpiresAt and ETag are there when the service sends them.
	ExpiresAt string `json:"expires_at,omitempty"`
	ETag      string `json:"etag,omitempty"`
}

func (a *app) newKeyListCommand() *cobra.Command {
	var prefix, cursor string
	var limit int
	var all bool
	cmd := &cobra.Command{
		Use:   "list [NS]",
		Short: "List keys (names, sizes, update times; not values)",
		Long: `List keys in byte order, a page at a time (--limit, --cursor), or every
key with --all. -o wide adds each key's expiry and ETag when the service
reports them.`,
		Example: `  telnyx-edge storage kv key list --prefix user/
  telnyx-edge storage kv key list my-cache --all -o json
  telnyx-edge storage kv key list MY_CACHE --limit 100 --cursor CURSOR`,
		Args:              argsRange(0, 1),
		ValidArgsFunction: a.completeNS(),
		RunE: func(cmd *cobra.Command, args []string) error {
			if limit < 1 || limit > kv.MaxListLimit {
				return usagef("--limit must be from 1 to %d; got %d", kv.MaxListLimit, limit)
			}
			if err := checkPrefix(prefix); err != nil {
				return err
			}
			ns, err := a.keyHandle(cmd, args)
			if err != nil {
				return err
			}
			out := a.newKeyPrinter()
			if !all {
				page, err := ns.List(cmd.Context(), prefix, cursor, limit)
				if err != nil {
					return a.notFound(err, ns.ID(), "")
				}
				if err := out.page(page.Keys); err != nil {
					return err
				}
				if err := out.end(page); err != nil {
					return err
				}
				if page.HasMore && !a.json() {
					a.hint("More keys follow: run again with --cursor %s (or --all)", page.Cursor)
				}
				return nil
			}
			// Page by page, so memory stays one page whatever the size of
			// the namespace; Pages ends a walk whose cursors repeat.
			listed := 0
			for page, err := range ns.Pages(cmd.Context(), prefix, cursor, limit) {
				if err != nil {
					err = a.notFound(err, ns.ID(), "")
					if listed > 0 {
						return &explained{msg: fmt.Sprintf("the listing stopped after %s: %s", plural(listed, "key"), message(err)), err: err}
					}
					return err
				}
				if err := out.page(page.Keys); err != nil {
					return err
				}
				listed += len(page.Keys)
			}
			return out.end(client.KeyPage{})
		},
	}
	cmd.Flags().StringVar(&prefix, "prefix", "", "only keys starting with this prefix")
	cmd.Flags().StringVar(&cursor, "cursor", "", "continue after a previous page (its cursor)")
	cmd.Flags().IntVar(&limit, "limit", kv.DefaultListLimit, fmt.Sprintf("keys per page, 1 to %d", kv.MaxListLimit))
	cmd.Flags().BoolVar(&all, "all", false, "follow cursors and list every key")
	return cmd
}

func (a *app) newKeyGetCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "get [NS] KEY",
		Short: "Print a value: its raw bytes, nothing added",
		Example: `  telnyx-edge storage kv key get user/123
  telnyx-edge storage kv key get my-cache user/avatar > avatar.png`,
		Args:              argsRange(1, 2),
		ValidArgsFunction: a.completeNS(),
		RunE: func(cmd *cobra.Command, args []string) error {
			ns, err := a.keyHandle(cmd, args[:len(args)-1])
			if err != nil {
				return err
			}
			key := args[len(args)-1]
			_, _, err = ns.GetTo(cmd.Context(), key, a.env.Stdout)
			return a.notFound(err, ns.ID(), key)
		},
	}
}

func (a *app) newKeyPutCommand() *cobra.Command {
	var path, contentType, ifMatch string
	var ifAbsent bool
	var ttl ttlFlag
	cmd := &cobra.Command{
		Use:   "put [NS] KEY [VALUE | -] [--path FILE]",
		Short: "Store a value, verbatim",
		Long: `Store a value, byte for byte: VALUE, the contents of --path FILE, or
stdin when VALUE (or FILE) is "-". With two arguments and no --path they are
KEY VALUE (NS from ./func.toml); with --path they are NS KEY.

--ttl makes the key expire: a duration of whole seconds, at least 1s, in
days (d), hours (h), minutes (m) and seconds (s): 30s, 5m, 1h, 1d, 2d12h.
Without --ttl the key is permanent.

--if-match ETAG writes only if the key still has that ETag (as key info or
a previous put printed it, with or without its double quotes; "*": if the
key exists at all), and --if-absent only if the key does not exist. When the condition fails nothing is
written, the error names the key's current ETag, and the exit code is 4.`,
		Example: `  telnyx-edge storage kv key put user/123 '{"name":"Alice"}' --content-type application/json
  telnyx-edge storage kv key put my-cache user/avatar --path ./avatar.png --content-type image/png
  telnyx-edge storage kv key put session/abc '{"userId":42}' --ttl 1d
  printf 'true' | telnyx-edge storage kv key put flag/new-ui -
  telnyx-edge storage kv key put config/site '{"v":2}' --if-match '"3f2a…"'
  telnyx-edge storage kv key put lock/job-7 worker-1 --if-absent --ttl 5m`,
		Args:              argsRange(1, 3),
		ValidArgsFunction: a.completeNS(),
		RunE: func(cmd *cobra.Command, args []string) error {
			var nsArgs []string
			var key string
			var value *string
			switch {
			case path != "" && len(args) == 3:
				return usagef("give the value either as VALUE or with --path, not both")
			case path != "":
				nsArgs, key = args[:len(args)-1], args[len(args)-1]
			case len(args) == 1:
				return usagef("no value: give VALUE, --path FILE, or - for stdin")
			default:
				nsArgs, key, value = args[:len(args)-2], args[len(args)-2], &args[len(args)-1]
			}
			ns, err := a.keyHandle(cmd, nsArgs)
			var ue *usageError
			if errors.As(err, &ue) && len(nsArgs) == 0 && len(args) == 2 {
				return usagef("%s (two arguments without --path are KEY VALUE; to name NS, give NS KEY VALUE)", ue.msg)
			}
			if err != nil {
				return err
			}
			if ifMatch != "" && ifAbsent {
				return usagef("--if-match and --if-absent cannot be combined: a key cannot both have an ETag and be absent")
			}
			if cmd.Flags().Changed("if-match") && strings.TrimSpace(ifMatch) == "" {
				return usagef(`--if-match needs an ETag, as key info prints it (e.g. '"3f2a"'), or "*"`)
			}
			ifMatch = quoteETag(ifMatch)
			opts := &client.PutOptions{TTL: ttl.d, ContentType: contentType, IfMatch: ifMatch, IfAbsent: ifAbsent}
			ctx := cmd.Context()
			var res client.PutResult
			switch {
			case value != nil && *value != "-":
				res, err = ns.PutWithResult(ctx, key, []byte(*value), opts)
			case value != nil || path == "-":
				// stdin is buffered (a value is at most 1 MiB) so the write
				// can be retried.
				if a.env.IsTerminal() {
					a.hint("Reading the value from stdin; end with Ctrl-D")
				}
				data, rerr := readCtx(ctx, func() ([]byte, error) {
					return io.ReadAll(io.LimitReader(a.env.Stdin, kv.MaxValueSize+1))
				})
				if rerr != nil {
					if ctx.Err() != nil {
						return rerr
					}
					return fmt.Errorf("reading stdin: %v", rerr)
				}
				res, err = ns.PutWithResult(ctx, key, data, opts)
			default:
				res, err = a.putFile(cmd, ns, key, path, opts)
			}
			if err != nil {
				return a.preconditionFailed(a.notFound(err, ns.ID(), ""), "written", key, ifMatch, ifAbsent)
			}
			if (ifMatch != "" || ifAbsent) && res.ETag == "" {
				a.hint("Warning: the service sent no ETag, so it may not honour conditional writes: key %s may have been written regardless of %s", key, conditionFlag(ifMatch, ifAbsent))
			}
			if a.json() {
				out := map[string]any{"key": key, "created": res.Created}
				if res.ETag != "" {
					out["etag"] = res.ETag
				}
				return a.writeJSON(out)
			}
			verb := "Replaced"
			if res.Created {
				verb = "Created"
			}
			if res.ETag != "" {
				a.note("%s key %s (ETag %s)", verb, key, res.ETag)
			} else {
				a.note("%s key %s", verb, key)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&path, "path", "", "store the contents of FILE (- for stdin)")
	cmd.Flags().StringVar(&ifMatch, "if-match", "", `write only if the key's ETag is ETAG ("*": if the key exists)`)
	cmd.Flags().BoolVar(&ifAbsent, "if-absent", false, "write only if the key does not exist")
	cmd.Flags().Var(&ttl, "ttl", "expire the key after this duration: 30s, 5m, 1h, 1d, 2d12h (whole seconds, at least 1s)")
	cmd.Flags().StringVar(&contentType, "content-type", "", "Content-Type stored with the value (default application/octet-stream)")
	return cmd
}

// putFile streams a file's bytes; a regular file is seekable, so the write
// can be retried.
func (a *app) putFile(cmd *cobra.Command, ns *client.Namespace, key, path string, opts *client.PutOptions) (client.PutResult, error) {
	f, err := os.Open(a.path(path))
	if err != nil {
		return client.PutResult{}, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return client.PutResult{}, err
	}
	if fi.IsDir() {
		return client.PutResult{}, fmt.Errorf("%s is a directory", path)
	}
	size := int64(-1)
	if fi.Mode().IsRegular() {
		size = fi.Size()
		if size > kv.MaxValueSize {
			// Refuse before uploading; the service would refuse it too.
			return client.PutResult{}, kv.Errorf(kv.ETooLarge, "%s is %d bytes; a value is at most %d bytes (1 MiB)", path, size, kv.MaxValueSize)
		}
	}
	if size == 0 {
		return ns.PutWithResult(cmd.Context(), key, nil, opts)
	}
	return ns.PutFromWithResult(cmd.Context(), key, f, size, opts)
}

// quoteETag puts the double quotes of an entity tag around a --if-match
// value that has none (a shell drops them from --if-match "3f2a..."); a
// value with quotes, "*" or a list is sent as given.
func quoteETag(v string) string {
	v = strings.TrimSpace(v)
	if v == "" || v == "*" || strings.ContainsAny(v, `",`) {
		return v
	}
	return `"` + v + `"`
}

// conditionFlag names the condition flag in use.
func conditionFlag(ifMatch string, ifAbsent bool) string {
	if ifAbsent {
		return "--if-absent"
	}
	return "--if-match"
}

// preconditionFailed rewrites a failed condition (412) of a write or
// delete of key to say what the key is now; other errors pass through.
// done is "written" or "deleted".
func (a *app) preconditionFailed(err error, done, key, ifMatch string, ifAbsent bool) error {
	var apiErr *client.APIError
	if !errors.Is(err, client.ErrPreconditionFailed) || !errors.As(err, &apiErr) {
		return err
	}
	var msg string
	switch {
	case ifAbsent && apiErr.ETag != "":
		msg = fmt.Sprintf("key %s was not %s: it exists already, with ETag %s (--if-absent)", key, done, apiErr.ETag)
	case ifAbsent:
		msg = fmt.Sprintf("key %s was not %s: it exists already (--if-absent)", key, done)
	case apiErr.ETag != "":
		msg = fmt.Sprintf("key %s was not %s: its ETag is %s, not %s (--if-match)", key, done, apiErr.ETag, ifMatch)
	default:
		msg = fmt.Sprintf("key %s was not %s: it does not exist (--if-match needs an existing key)", key, done)
	}
	return &explained{msg: msg, err: err}
}

func (a *app) newKeyDeleteCommand() *cobra.Command {
	var yes bool
	var ifMatch string
	cmd := &cobra.Command{
		Use:   "delete [NS] KEY [-y]",
		Short: "Delete a key",
		Long: `Delete a key (deleting a missing key succeeds). On a terminal it asks for
confirmation; elsewhere it refuses unless given -y/--yes (or
TELNYX_EDGE_SKIP_CONFIRMATIONS=1).

--if-match ETAG deletes only if the key still has that ETag ("*": if it
exists); otherwise nothing is deleted, the error names the key's current
ETag, and the exit code is 4.`,
		Example: `  telnyx-edge storage kv key delete user/123
  telnyx-edge storage kv key delete my-cache user/123 --yes
  telnyx-edge storage kv key delete lock/job-7 --if-match '"3f2a…"' --yes`,
		Args:              argsRange(1, 2),
		ValidArgsFunction: a.completeNS(),
		RunE: func(cmd *cobra.Command, args []string) error {
			ns, err := a.keyHandle(cmd, args[:len(args)-1])
			if err != nil {
				return err
			}
			key := args[len(args)-1]
			if err := a.confirm(cmd.Context(), yes, "Delete key %s?", key); err != nil {
				return err
			}
			if cmd.Flags().Changed("if-match") && strings.TrimSpace(ifMatch) == "" {
				return usagef(`--if-match needs an ETag, as key info prints it (e.g. '"3f2a"'), or "*"`)
			}
			ifMatch = quoteETag(ifMatch)
			if err := ns.DeleteWithOptions(cmd.Context(), key, &client.DeleteOptions{IfMatch: ifMatch}); err != nil {
				return a.preconditionFailed(a.notFound(err, ns.ID(), ""), "deleted", key, ifMatch, false)
			}
			if a.json() {
				return a.writeJSON(map[string]any{"key": key, "deleted": true})
			}
			a.note("Deleted key %s", key)
			return nil
		},
	}
	cmd.Flags().BoolVarP(&yes, "yes", "y", false, "do not ask for confirmation")
	cmd.Flags().StringVar(&ifMatch, "if-match", "", `delete only if the key's ETag is ETAG ("*": if the key exists)`)
	return cmd
}

// checkPrefix refuses a --prefix that no key can start with, which would
// list nothing.
func checkPrefix(p string) error {
	if kv.ValidKeyPrefix(p) {
		return nil
	}
	if len(p) > kv.MaxKeyLen {
		return usagef("--prefix is %d characters long; no key is longer than %d", len(p), kv.MaxKeyLen)
	}
	if p[0] == '_' {
		return usagef("--prefix %q cannot match any key: keys starting with '_' are reserved", p)
	}
	i := strings.IndexFunc(p, func(r rune) bool { return !kv.ValidKeyPrefix(string(r)) })
	return usagef("--prefix %q cannot match any key: no key contains %q; keys are made of a-z A-Z 0-9 - _ / = .", p, p[i:i+1])
}

// keyPrinter writes a key listing a page at a time: an aligned table
// (flushed after each page), or the API's JSON shape, streamed.
type keyPrinter struct {
	a       *app
	tw      *tabwriter.Writer
	started bool
	// the wide table's optional columns, fixed by the first page
	expiry, etag bool
	first        bool // no JSON item written yet
}

func (a *app) newKeyPrinter() *keyPrinter { return &keyPrinter{a: a, first: true} }

func (p *keyPrinter) page(keys []client.KeyInfo) error {
	w := p.a.env.Stdout
	if p.a.json() {
		if !p.started {
			io.WriteString(w, "{\n  \"data\": [")
			p.started = true
		}
		for _, k := range keys {
			item := keyJSON{Key: k.Key, SizeBytes: k.Size, UpdatedAt: k.UpdatedAt.UTC().Format(kv.KeyTimeFormat), ETag: k.ETag}
			if !k.ExpiresAt.IsZero() {
				item.ExpiresAt = k.ExpiresAt.UTC().Format(kv.KeyTimeFormat)
			}
			b, err := json.MarshalIndent(item, "    ", "  ")
			if err != nil {
				return err
			}
			sep := ",\n    "
			if p.first {
				sep, p.first = "\n    ", false
			}
			io.WriteString(w, sep)
			w.Write(escJSON(b))
		}
		return nil
	}
	if !p.started {
		p.tw = p.a.table()
		header := []string{"KEY", "SIZE", "UPDATED"}
		if p.a.output == "wide" {
			for _, k := range keys {
				p.expiry = p.expiry || k.ExpiryKnown
				p.etag = p.etag || k.ETag != ""
			}
			if p.expiry {
				header = append(header, "EXPIRES")
			}
			if p.etag {
				header = append(header, "ETAG")
			}
		}
		row(p.tw, header...)
		p.started = true
	}
	for _, k := range keys {
		cells := []string{k.Key, strconv.FormatInt(k.Size, 10), k.UpdatedAt.UTC().Format(kv.KeyTimeFormat)}
		if p.expiry {
			cells = append(cells, orDash(k.ExpiresAt))
		}
		if p.etag {
			cells = append(cells, cmp.Or(k.ETag, "-"))
		}
		row(p.tw, cells...)
	}
	return p.tw.Flush()
}

// end finishes the listing; last is the final page (its cursor, if more
// keys follow).
func (p *keyPrinter) end(last client.KeyPage) error {
	if !p.started {
		if err := p.page(nil); err != nil {
			return err
		}
	}
	if !p.a.json() {
		return nil
	}
	meta := map[string]any{"has_more": last.HasMore}
	if last.HasMore {
		meta["cursor"] = last.Cursor
	}
	b, err := json.MarshalIndent(meta, "  ", "  ")
	if err != nil {
		return err
	}
	w := p.a.env.Stdout
	if p.first {
		io.WriteString(w, "],\n")
	} else {
		io.WriteString(w, "\n  ],\n")
	}
	io.WriteString(w, "  \"meta\": ")
	w.Write(escJSON(b))
	_, err = io.WriteString(w, ",\n  \"record_type\": \"storage_kv_key\"\n}\n")
	return err
}

func orDash(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(kv.KeyTimeFormat)
}

func (a *app) newKeyInfoCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "info [NS] KEY",
		Short: "Show a key's size, content type, update time, expiry and ETag",
		Long: `Show what the service says of a key without reading its value: size,
content type, when it was last written, when it expires, and its ETag.
What the service does not report shows as "unknown".`,
		Example: `  telnyx-edge storage kv key info user/123
  telnyx-edge storage kv key info my-cache session/abc -o json`,
		Args:              argsRange(1, 2),
		ValidArgsFunction: a.completeNS(),
		RunE: func(cmd *cobra.Command, args []string) error {
			ns, err := a.keyHandle(cmd, args[:len(args)-1])
			if err != nil {
				return err
			}
			key := args[len(args)-1]
			ctx := cmd.Context()
			info, err := ns.Info(ctx, key)
			if errors.Is(err, kv.ErrNotFound) {
				// A HEAD answer has no body to say what is missing.
				if _, nsErr := ns.Client().GetNamespace(ctx, ns.ID()); nsErr != nil {
					return a.notFound(nsErr, ns.ID(), "")
				}
				return &explained{msg: fmt.Sprintf("key %s not found in namespace %s", key, a.nsLabel(ns.ID())), err: err}
			}
			if err != nil {
				return err
			}
			if a.json() {
				out := map[string]any{"key": info.Key, "size_bytes": info.Size, "content_type": info.ContentType,
					"updated_at": nil, "expires_at": nil, "etag": nil}
				if !info.UpdatedAt.IsZero() {
					out["updated_at"] = info.UpdatedAt.UTC().Format(kv.KeyTimeFormat)
				}
				if !info.ExpiresAt.IsZero() {
					out["expires_at"] = info.ExpiresAt.UTC().Format(kv.KeyTimeFormat)
				}
				if info.ETag != "" {
					out["etag"] = info.ETag
				}
				return a.writeJSON(out)
			}
			updated, expires, etag := "unknown", "unknown", cmp.Or(info.ETag, "unknown")
			if !info.UpdatedAt.IsZero() {
				updated = info.UpdatedAt.UTC().Format(kv.KeyTimeFormat)
			}
			switch {
			case !info.ExpiresAt.IsZero():
				expires = info.ExpiresAt.UTC().Format(kv.KeyTimeFormat)
			case info.ExpiryKnown:
				expires = "never"
			}
			tw := a.table()
			row(tw, "Key:", info.Key)
			row(tw, "Namespace:", a.nsLabel(ns.ID()))
			row(tw, "Size:", plural(int(info.Size), "byte"))
			row(tw, "Content type:", cmp.Or(info.ContentType, "unknown"))
			row(tw, "Updated:", updated)
			row(tw, "Expires:", expires)
			row(tw, "ETag:", etag)
			return tw.Flush()
		},
	}
}

// ttlFlag is --ttl: a Go duration, with days (d) allowed as the first unit.
type ttlFlag struct{ d time.Duration }

func (f *ttlFlag) String() string {
	if f.d == 0 {
		return ""
	}
	return f.d.String()
}

func (f *ttlFlag) Type() string { return "duration" }

func (f *ttlFlag) Set(s string) error {
	d, err := parseTTL(s)
	if err != nil {
		return err
	}
	f.d = d
	return nil
}

// parseTTL reads a TTL: [Nd][Go duration], whole seconds, from 1s to the
// service's maximum.
func parseTTL(s string) (time.Duration, error) {
	const bad = "want whole seconds, at least 1s (30s, 5m, 1h, 1d, 2d12h)"
	var d time.Duration
	rest := s
	if i := strings.IndexByte(s, 'd'); i > 0 {
		days, err := strconv.ParseInt(s[:i], 10, 64)
		if err != nil || days < 0 || days > kv.MaxTTLSeconds/86400 {
			return 0, errors.New(bad)
		}
		d, rest = time.Duration(days)*24*time.Hour, s[i+1:]
	}
	if rest != "" {
		if rest[0] == '-' || rest[0] == '+' {
			return 0, errors.New(bad)
		}
		r, err := time.ParseDuration(rest)
		if err != nil || r < 0 || r > time.Duration(kv.MaxTTLSeconds)*time.Second-d {
			return 0, errors.New(bad)
		}
		d += r
	}
	if d < time.Second || d%time.Second != 0 {
		return 0, fmt.Errorf("%s; got %v", bad, d)
	}
	return d, nil
}
