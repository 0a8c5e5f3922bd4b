package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/edgekv/kv"
	"github.com/edgekv/kv/internal/server"
	"github.com/edgekv/kv/internal/service"
)

const tokenUsage = `Usage:
  kvd token create --org ORG [--name N] [--namespace ID]... [--prefix P]...
                   [--read-only | --permissions LIST] [--expires DURATION] [--store DIR|URL]
  kvd token list [--org ORG] [-o json] [--store DIR|URL]
  kvd token revoke ID [--store DIR|URL]

Tokens are managed while kvd runs, on both engines: on the embedded engine
through the running kvd's admin channel (a socket in the store's directory),
or on the store itself when no kvd runs; on PostgreSQL in the database.
create prints the token's secret as the last line of its output; the secret
is shown once and never stored (only its SHA-256 digest is).
Permissions: ` + "namespaces:read, namespaces:write, keys:read, keys:write, keys:list, usage:read" + `
`

// runToken implements "kvd token create|list|revoke".
func runToken(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, tokenUsage)
		return exitUsage
	}
	cmd, args := args[0], args[1:]
	fs := flag.NewFlagSet("kvd token "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, tokenUsage) }
	storeSpec := fs.String("store", envOr(getenv, "KV_STORE", "./data"), "data directory or postgres:// URL (env KV_STORE)")
	var run func(context.Context, server.Tokens) error
	switch cmd {
	case "create":
		var spec service.TokenSpec
		var namespaces, prefixes multiFlag
		var perms string
		var readOnly bool
		var expires string
		fs.StringVar(&spec.Org, "org", "", "organization the token belongs to (required)")
		fs.StringVar(&spec.Name, "name", "", "a name to know the token by")
		fs.Var(&namespaces, "namespace", "a namespace id the token is limited to (repeatable); other namespaces do not exist for it")
		fs.Var(&prefixes, "prefix", "a key prefix the token is limited to (repeatable)")
		fs.StringVar(&perms, "permissions", "", "comma-separated permissions (default: all)")
		fs.BoolVar(&readOnly, "read-only", false, "namespaces:read, keys:read, keys:list and usage:read only")
		fs.StringVar(&expires, "expires", "", "how long the token is valid, e.g. 12h, 30d (default: until revoked)")
		if code, ok := parseTokenFlags(fs, args, stderr); !ok {
			return code
		}
		if spec.Org == "" {
			fmt.Fprintln(stderr, "kvd token create: --org is required")
			return exitUsage
		}
		if readOnly && perms != "" {
			fmt.Fprintln(stderr, "kvd token create: --read-only and --permissions go apart")
			return exitUsage
		}
		var err error
		switch {
		case readOnly:
			spec.Permissions = kv.ReadOnlyPermissions
		case perms != "":
			if spec.Permissions, err = kv.ParsePermissions(perms); err != nil {
				fmt.Fprintln(stderr, "kvd token create: --permissions:", err)
				return exitUsage
			}
		}
		for _, n := range namespaces {
			id, err := kv.ParseID(n)
			if err != nil {
				fmt.Fprintf(stderr, "kvd token create: --namespace %q is not a namespace id (a UUID)\n", n)
				return exitUsage
			}
			spec.Namespaces = append(spec.Namespaces, id)
		}
		if len(prefixes) > 0 {
			spec.Prefixes = prefixes
		}
		if expires != "" {
			if spec.ExpiresIn, err = parseDays(expires); err != nil || spec.ExpiresIn <= 0 {
				fmt.Fprintf(stderr, "kvd token create: --expires %q: want a positive duration such as 12h or 30d\n", expires)
				return exitUsage
			}
		}
		run = func(ctx context.Context, ts server.Tokens) error {
			secret, t, err := ts.Create(ctx, spec)
			if err != nil {
				return err
			}
			printToken(stdout, t)
			fmt.Fprintln(stdout, secret)
			return nil
		}
	case "list":
		org := fs.String("org", "", "only this organization's tokens")
		format := fs.String("o", "table", "table or json")
		if code, ok := parseTokenFlags(fs, args, stderr); !ok {
			return code
		}
		if *format != "table" && *format != "json" {
			fmt.Fprintf(stderr, "kvd token list: -o %q: want table or json\n", *format)
			return exitUsage
		}
		run = func(ctx context.Context, ts server.Tokens) error {
			list, err := ts.List(ctx, *org)
			if err != nil {
				return err
			}
			if *format == "json" {
				if list == nil {
					list = []kv.TokenRecord{}
				}
				enc := json.NewEncoder(stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(list)
			}
			tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tORG\tNAME\tSTATUS\tPERMISSIONS\tSCOPE\tEXPIRES\tLAST USED")
			for _, t := range list {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", t.ID, t.Org, orDash(t.Name), t.Status, permList(t.Permissions), scope(t), timeOrDash(t.ExpiresAt), timeOrDash(t.LastUsedAt))
			}
			return tw.Flush()
		}
	case "revoke":
		// The id may come before the flags, or after.
		var id string
		if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
			id, args = args[0], args[1:]
		}
		if code, ok := parseTokenFlags(fs, args, stderr); !ok {
			return code
		}
		if id == "" && fs.NArg() == 1 {
			id = fs.Arg(0)
		} else if fs.NArg() > 0 {
			id = ""
		}
		if id == "" {
			fmt.Fprintln(stderr, "kvd token revoke: give the id of one token to revoke (kvd token list shows them)")
			return exitUsage
		}
		run = func(ctx context.Context, ts server.Tokens) error {
			t, err := ts.Revoke(ctx, id)
			if err != nil {
				return err
			}
			printToken(stdout, t)
			return nil
		}
	default:
		fmt.Fprintf(stderr, "kvd token: unknown command %q\n%s", cmd, tokenUsage)
		return exitUsage
	}
	if cmd != "revoke" && fs.NArg() > 0 {
		fmt.Fprintf(stderr, "kvd token %s: unexpected argument %q\n", cmd, fs.Arg(0))
		return exitUsage
	}
	cfg := server.DefaultConfig()
	cfg.Store, cfg.Logger = *storeSpec, slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	ts, err := server.OpenTokens(ctx, cfg)
	if err != nil {
		fmt.Fprintln(stderr, "kvd:", err)
		return 1
	}
	err = run(ctx, ts)
	if cerr := ts.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		fmt.Fprintln(stderr, "kvd:", strings.TrimPrefix(err.Error(), "kv: "))
		var ke *kv.Error
		if errors.As(err, &ke) && ke.Code == kv.EInvalid {
			return exitUsage
		}
		return 1
	}
	return 0
}

func parseTokenFlags(fs *flag.FlagSet, args []string, stderr io.Writer) (int, bool) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0, false
		}
		return exitUsage, false
	}
	return 0, true
}

// multiFlag is a flag that may be given more than once.
type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

// parseDays parses a Go duration that may also count days ("30d",
// "1d12h").
func parseDays(s string) (time.Duration, error) {
	var days int64
	if i := strings.IndexByte(s, 'd'); i > 0 {
		n, err := strconv.ParseInt(s[:i], 10, 64)
		if err != nil || n < 0 || n > 100*365 {
			return 0, fmt.Errorf("bad days in %q", s)
		}
		days, s = n, s[i+1:]
	}
	var rest time.Duration
	if s != "" {
		var err error
		if rest, err = time.ParseDuration(s); err != nil {
			return 0, err
		}
	}
	return time.Duration(days)*24*time.Hour + rest, nil
}

func printToken(w io.Writer, t kv.TokenRecord) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "id:\t%s\n", t.ID)
	fmt.Fprintf(tw, "org:\t%s\n", t.Org)
	fmt.Fprintf(tw, "name:\t%s\n", orDash(t.Name))
	fmt.Fprintf(tw, "status:\t%s\n", t.Status)
	fmt.Fprintf(tw, "permissions:\t%s\n", permList(t.Permissions))
	fmt.Fprintf(tw, "scope:\t%s\n", scope(t))
	fmt.Fprintf(tw, "expires:\t%s\n", timeOrDash(t.ExpiresAt))
	if t.RevokedAt != nil {
		fmt.Fprintf(tw, "revoked:\t%s\n", timeOrDash(t.RevokedAt))
	}
	tw.Flush()
}

func permList(ps []kv.Permission) string {
	if len(ps) == len(kv.AllPermissions) {
		return "all"
	}
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = string(p)
	}
	return strings.Join(s, ",")
}

func scope(t kv.TokenRecord) string {
	var parts []string
	if t.Namespaces != nil {
		ids := make([]string, len(t.Namespaces))
		for i, id := range t.Namespaces {
			ids[i] = id.String()
		}
		parts = append(parts, "namespaces "+strings.Join(ids, ","))
	}
	if t.Prefixes != nil {
		parts = append(parts, "prefixes "+strings.Join(t.Prefixes, ","))
	}
	if len(parts) == 0 {
		return "the whole organization"
	}
	return strings.Join(parts, "; ")
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func timeOrDash(t *time.Time) string {
	if t == nil {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}
