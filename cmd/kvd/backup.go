package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/edgekv/kv/internal/diskguard"
	"github.com/edgekv/kv/internal/server"
	"github.com/edgekv/kv/internal/store/pebble"
)

const backupUsage = `Usage:
  kvd backup --out DEST [--store DIR]     a checked point-in-time copy of the store, while kvd serves or not
  kvd restore --from DEST [--store DIR]   the backup DEST into the new or empty directory DIR
  kvd check [--store DIR]                 verify a store or a backup; exit 1 on any damage

These are for the embedded engine. On PostgreSQL use the database's own
tools (pg_dump, or base backups with WAL archiving).
`

// runBackup implements "kvd backup", "kvd restore" and "kvd check".
func runBackup(ctx context.Context, cmd string, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("kvd "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, backupUsage) }
	storeDir := fs.String("store", envOr(getenv, "KV_STORE", "./data"), "the store's data directory (env KV_STORE)")
	var out, from *string
	switch cmd {
	case "backup":
		out = fs.String("out", "", "the directory to write the backup to: new, or empty (required)")
	case "restore":
		from = fs.String("from", "", "the backup to restore (required)")
	}
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return 0
		}
		return exitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "kvd %s: unexpected argument %q\n", cmd, fs.Arg(0))
		return exitUsage
	}
	var (
		r   pebble.CheckReport
		err error
	)
	switch cmd {
	case "backup":
		if *out == "" {
			fmt.Fprintln(stderr, "kvd backup: --out is required")
			return exitUsage
		}
		cfg := server.DefaultConfig()
		cfg.Store, cfg.Logger = *storeDir, slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
		if r, err = server.Backup(ctx, cfg, *out); err == nil {
			fmt.Fprintf(stdout, "backup of %s written to %s and checked: %s\n", *storeDir, *out, summary(r))
		}
	case "restore":
		if *from == "" {
			fmt.Fprintln(stderr, "kvd restore: --from is required")
			return exitUsage
		}
		if r, err = server.Restore(*from, *storeDir); err == nil {
			fmt.Fprintf(stdout, "%s restored to %s and checked: %s\n", *from, *storeDir, summary(r))
		}
	case "check":
		if _, serr := os.Stat(*storeDir); serr != nil {
			err = fmt.Errorf("no store at %s: %w", *storeDir, serr)
			break
		}
		if r, err = pebble.Check(*storeDir); err == nil {
			if len(r.Problems) > 0 {
				for _, p := range r.Problems {
					fmt.Fprintf(stdout, "%s: %s\n", *storeDir, p)
				}
				fmt.Fprintf(stderr, "kvd check: %s is damaged (%d problems)\n", *storeDir, len(r.Problems))
				return exitFailed
			}
			fmt.Fprintf(stdout, "%s is sound: %s\n", *storeDir, summary(r))
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "kvd %s: %v\n", cmd, err)
		return exitFailed
	}
	return 0
}

func summary(r pebble.CheckReport) string {
	return fmt.Sprintf("layout %d, %d namespaces, %d tokens, %d keys, %s of keys and values, %d changes in the watch history",
		r.Layout, r.Namespaces, r.Tokens, r.Keys, diskguard.Bytes(uint64(r.Bytes)), r.Changes)
}
