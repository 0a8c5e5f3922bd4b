package cli

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/edgekv/kv"
	"github.com/edgekv/kv/client"
)

func (a *app) newKeyCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "key", Short: "Keys of a namespace", Args: groupArgs, RunE: groupRun}
	cmd.AddCommand(a.newKeyListCommand(), a.newKeyGetCommand(), a.newKeyPutCommand(), a.newKeyDeleteCommand())
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
}

func (a *app) newKeyListCommand() *cobra.Command {
	var prefix, cursor string
	var limit int
	var all bool
	cmd := &cobra.Command{
		Use:   "list [NS]",
		Short: "List keys (names, sizes, update times; not values)",
		Args:  argsRange(0, 1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if limit < 1 || limit > kv.MaxListLimit {
				return usagef("--limit must be from 1 to %d; got %d", kv.MaxListLimit, limit)
			}
			ns, err := a.keyHandle(cmd, args)
			if err != nil {
				return err
			}
			var keys []client.KeyInfo
			var page client.KeyPage
			if all {
				// Pages ends a walk whose cursors repeat.
				for p, err := range ns.Pages(cmd.Context(), prefix, cursor, limit) {
					if err != nil {
						return err
					}
					keys, page = append(keys, p.Keys...), p
				}
			} else if page, err = ns.List(cmd.Context(), prefix, cursor, limit); err != nil {
				return err
			} else {
				keys = page.Keys
			}
			if a.json() {
				data := make([]keyJSON, len(keys))
				for i, k := range keys {
					data[i] = keyJSON{Key: k.Key, SizeBytes: k.Size, UpdatedAt: k.UpdatedAt.UTC().Format(kv.KeyTimeFormat)}
				}
				meta := map[string]any{"has_more": page.HasMore}
				if page.HasMore {
					meta["cursor"] = page.Cursor
				}
				return a.writeJSON(map[string]any{"record_type": "storage_kv_key", "data": data, "meta": meta})
			}
			tw := a.table()
			row(tw, "KEY", "SIZE", "UPDATED")
			for _, k := range keys {
				row(tw, k.Key, strconv.FormatInt(k.Size, 10), k.UpdatedAt.UTC().Format(kv.KeyTimeFormat))
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			if page.HasMore {
				a.hint("More keys follow: run again with --cursor %s (or --all)", page.Cursor)
			}
			return nil
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
		Args:  argsRange(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ns, err := a.keyHandle(cmd, args[:len(args)-1])
			if err != nil {
				return err
			}
			_, _, err = ns.GetTo(cmd.Context(), args[len(args)-1], a.env.Stdout)
			return err
		},
	}
}

func (a *app) newKeyPutCommand() *cobra.Command {
	var path, contentType string
	var ttl time.Duration
	cmd := &cobra.Command{
		Use:   "put [NS] KEY [VALUE | -] [--path FILE]",
		Short: "Store a value, verbatim",
		Long: `Store a value, byte for byte: VALUE, the contents of --path FILE, or
stdin when VALUE (or FILE) is "-". With two arguments and no --path they are
KEY VALUE (NS from ./func.toml); with --path they are NS KEY.

--ttl makes the key expire: a Go duration (30s, 5m, 1h) of whole seconds,
at least 1s. Without --ttl the key is permanent.`,
		Args: argsRange(1, 3),
		RunE: func(cmd *cobra.Command, args []string) error {
			if cmd.Flags().Changed("ttl") && (ttl < time.Second || ttl%time.Second != 0) {
				return usagef("--ttl must be whole seconds and at least 1s (e.g. 30s, 5m, 1h); got %v", ttl)
			}
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
			opts := &client.PutOptions{TTL: ttl, ContentType: contentType}
			ctx := cmd.Context()
			var created bool
			switch {
			case value != nil && *value != "-":
				created, err = ns.Put(ctx, key, []byte(*value), opts)
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
				created, err = ns.Put(ctx, key, data, opts)
			default:
				created, err = a.putFile(cmd, ns, key, path, opts)
			}
			if err != nil {
				return err
			}
			if a.json() {
				return a.writeJSON(map[string]any{"key": key, "created": created})
			}
			if created {
				a.note("Created key %s", key)
			} else {
				a.note("Replaced key %s", key)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&path, "path", "", "store the contents of FILE (- for stdin)")
	cmd.Flags().DurationVar(&ttl, "ttl", 0, "expire the key after this duration (whole seconds, at least 1s)")
	cmd.Flags().StringVar(&contentType, "content-type", "", "Content-Type stored with the value (default application/octet-stream)")
	return cmd
}

// putFile streams a file's bytes; a regular file is seekable, so the write
// can be retried.
func (a *app) putFile(cmd *cobra.Command, ns *client.Namespace, key, path string, opts *client.PutOptions) (bool, error) {
	f, err := os.Open(a.path(path))
	if err != nil {
		return false, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return false, err
	}
	if fi.IsDir() {
		return false, fmt.Errorf("%s is a directory", path)
	}
	size := int64(-1)
	if fi.Mode().IsRegular() {
		size = fi.Size()
		if size > kv.MaxValueSize {
			// Refuse before uploading; the service would refuse it too.
			return false, kv.Errorf(kv.ETooLarge, "%s is %d bytes; a value is at most %d bytes (1 MiB)", path, size, kv.MaxValueSize)
		}
	}
	if size == 0 {
		return ns.Put(cmd.Context(), key, nil, opts)
	}
	return ns.PutFrom(cmd.Context(), key, f, size, opts)
}

func (a *app) newKeyDeleteCommand() *cobra.Command {
	var yes bool
	cmd := &cobra.Command{
		Use:   "delete [NS] KEY [-y]",
		Short: "Delete a key",
		Long: `Delete a key (deleting a missing key succeeds). On a terminal it asks for
confirmation; elsewhere it refuses unless given -y/--yes (or
TELNYX_EDGE_SKIP_CONFIRMATIONS=1).`,
		Args: argsRange(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ns, err := a.keyHandle(cmd, args[:len(args)-1])
			if err != nil {
				return err
			}
			key := args[len(args)-1]
			if err := a.confirm(cmd.Context(), yes, "Delete key %s?", key); err != nil {
				return err
			}
			if err := ns.Delete(cmd.Context(), key); err != nil {
				return err
			}
			if a.json() {
				return a.writeJSON(map[string]any{"key": key, "deleted": true})
			}
			a.note("Deleted key %s", key)
			return nil
		},
	}
	cmd.Flags().BoolVarP(&yes, "yes", "y", false, "do not ask for confirmation")
	return cmd
}
