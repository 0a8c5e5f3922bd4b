package cli

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/edgekv/kv"
	"github.com/edgekv/kv/client"
	"github.com/edgekv/kv/internal/functoml"
)

func (a *app) newStorageCommand() *cobra.Command {
	storage := &cobra.Command{Use: "storage", Short: "Edge Compute storage", Args: groupArgs, RunE: groupRun,
		Example: "  telnyx-edge storage kv list"}
	kvCmd := &cobra.Command{
		Use:   "kv",
		Short: "KV namespaces and keys",
		Long: `KV namespaces and keys.

NS names a namespace: its UUID, its name, or the name of a binding in
./func.toml (e.g. MY_CACHE). It may be left out when ./func.toml has exactly
one KV binding.`,
		Example: `  telnyx-edge storage kv create --name my-cache --wait --bind MY_CACHE
  telnyx-edge storage kv list
  telnyx-edge storage kv key put user/123 '{"name":"Alice"}'
  telnyx-edge storage kv usage`,
		Args: groupArgs,
		RunE: groupRun,
	}
	kvCmd.AddCommand(a.newListCommand(), a.newCreateCommand(), a.newGetCommand(), a.newDeleteCommand(), a.newBindCommand(), a.newKeyCommand(), a.newUsageCommand(), a.newExportCommand(), a.newImportCommand(), a.newBulkCommand(), a.newWatchCommand())
	storage.AddCommand(kvCmd)
	return storage
}

// printNamespaces prints namespaces as a table, or as {"data": ...} (one
// object, or a list when list is set) in JSON mode.
func (a *app) printNamespaces(list bool, meta any, nss ...kv.Namespace) error {
	if a.json() {
		if !list {
			return a.writeJSON(map[string]any{"data": nss[0].Record()})
		}
		data := make([]kv.NamespaceRecord, len(nss))
		for i, ns := range nss {
			data[i] = ns.Record()
		}
		return a.writeJSON(map[string]any{"data": data, "meta": meta})
	}
	tw := a.table()
	row(tw, "ID", "NAME", "STATUS", "CREATED")
	for _, ns := range nss {
		row(tw, ns.ID.String(), ns.Name, string(ns.Status), ns.CreatedAt.UTC().Format(kv.NamespaceTimeFormat))
	}
	return tw.Flush()
}

func (a *app) newListCommand() *cobra.Command {
	var page, pageSize int
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List namespaces",
		Example: `  telnyx-edge storage kv list
  telnyx-edge storage kv list --page 2 --page-size 50 -o json`,
		Args: argsRange(0, 0),
		RunE: func(cmd *cobra.Command, args []string) error {
			if page < 1 {
				return usagef("--page must be at least 1; got %d", page)
			}
			if pageSize < 1 || pageSize > kv.MaxPageSize {
				return usagef("--page-size must be from 1 to %d; got %d", kv.MaxPageSize, pageSize)
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			p, err := c.ListNamespaces(cmd.Context(), page, pageSize)
			if err != nil {
				return err
			}
			meta := map[string]int{"page_number": p.PageNumber, "page_size": p.PageSize, "total_pages": p.TotalPages, "total_results": p.TotalResults}
			if err := a.printNamespaces(true, meta, p.Namespaces...); err != nil {
				return err
			}
			if !a.json() && p.PageNumber < p.TotalPages {
				a.hint("Page %d of %d (%s); next: --page %d", p.PageNumber, p.TotalPages, plural(p.TotalResults, "namespace"), p.PageNumber+1)
			}
			return nil
		},
	}
	cmd.Flags().IntVar(&page, "page", 1, "page number, from 1")
	cmd.Flags().IntVar(&pageSize, "page-size", kv.DefaultPageSize, fmt.Sprintf("namespaces per page, 1 to %d", kv.MaxPageSize))
	return cmd
}

func (a *app) newCreateCommand() *cobra.Command {
	var name, bind string
	var wait bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "create --name NAME [--wait [--timeout D]] [--bind BINDING]",
		Short: "Create a namespace",
		Long: `Create a namespace. Its name may contain only lowercase letters, numbers
and hyphens. Creation is asynchronous: the namespace starts "pending";
--wait polls until it is "provision_ok", for at most --timeout (default 2m),
saying on stderr which namespace it waits for. --bind BINDING adds
[storage.kv.BINDING] with its id to ./func.toml (created if missing), keeping
the rest of the file as it is. Binding names match ^[A-Z][A-Z0-9_]*$.`,
		Example: `  telnyx-edge storage kv create --name my-cache
  telnyx-edge storage kv create --name my-cache --wait --timeout 30s --bind MY_CACHE`,
		Args: argsRange(0, 0),
		RunE: func(cmd *cobra.Command, args []string) error {
			if name == "" {
				return usagef("--name is required: telnyx-edge storage kv create --name my-cache")
			}
			if bind != "" {
				if err := functoml.ValidateBindingName(bind); err != nil {
					return &usageError{msg: err.Error()}
				}
			}
			if cmd.Flags().Changed("timeout") && !wait {
				return usagef("--timeout goes with --wait")
			}
			if timeout <= 0 {
				return usagef("--timeout must be positive; got %v", timeout)
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			ns, err := c.CreateNamespace(ctx, name)
			if err != nil {
				return err
			}
			if wait {
				if ns, err = a.waitReady(ctx, c, ns, timeout); err != nil {
					return err
				}
			}
			if err := a.printNamespaces(false, nil, ns); err != nil {
				return err
			}
			if bind != "" {
				return a.bind(bind, ns.ID.String())
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&name, "name", "", "namespace name (lowercase letters, numbers, hyphens)")
	cmd.Flags().BoolVar(&wait, "wait", false, "wait until the namespace is provision_ok")
	cmd.Flags().DurationVar(&timeout, "timeout", 2*time.Minute, "with --wait: give up after this long")
	cmd.Flags().StringVar(&bind, "bind", "", "add the binding BINDING for the namespace to ./func.toml")
	return cmd
}

// waitReady waits until the namespace just created is provision_ok, for at
// most timeout. Its id comes first, so an interrupted wait still tells
// which namespace was left pending; on a terminal the wait shows as one
// rewritten status line.
func (a *app) waitReady(ctx context.Context, c *client.Client, ns kv.Namespace, timeout time.Duration) (kv.Namespace, error) {
	a.hint("Created namespace %s (%s); waiting up to %v until it is provision_ok", ns.Name, ns.ID, timeout)
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	start := time.Now()
	live := a.env.StderrIsTerminal()
	last := ns
	got, err := c.WaitReadyFunc(wctx, ns.ID.String(), func(n kv.Namespace) {
		last = n
		if live {
			fmt.Fprintf(a.env.Stderr, "\r\x1b[Kstatus: %s (%s)", esc(string(n.Status)), time.Since(start).Round(time.Second))
		}
	})
	if live {
		fmt.Fprint(a.env.Stderr, "\r\x1b[K")
	}
	if err == nil || ctx.Err() != nil {
		return got, err
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return got, fmt.Errorf("namespace %s (%s) is not provision_ok after %v (last status: %s); see it with: telnyx-edge storage kv get %s",
			last.Name, ns.ID, timeout, last.Status, ns.ID)
	}
	return got, err
}

// bind writes the binding to ./func.toml and says so.
func (a *app) bind(name, id string) error {
	if _, err := kv.ParseID(id); err != nil {
		return fmt.Errorf("not binding %s: the service gave the namespace id %.80q, which is not a UUID", name, id)
	}
	path := a.path(functoml.FileName)
	changed, err := functoml.WriteBinding(path, name, id)
	if err != nil {
		return err
	}
	if !changed {
		a.note("func.toml already binds %s (%s) to %s", name, functoml.EnvName(name), id)
		return nil
	}
	a.note("Bound %s (%s) to %s in func.toml", name, functoml.EnvName(name), id)
	return nil
}

func (a *app) newGetCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "get [NS]",
		Short: "Show a namespace",
		Example: `  telnyx-edge storage kv get my-cache
  telnyx-edge storage kv get MY_CACHE -o json
  telnyx-edge storage kv get 550e8400-e29b-41d4-a716-446655440000`,
		Args:              argsRange(0, 1),
		ValidArgsFunction: a.completeNS(),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			id, err := a.resolveNS(cmd.Context(), c, args, 0)
			if err != nil {
				return err
			}
			ns, err := c.GetNamespace(cmd.Context(), id)
			if err != nil {
				return a.notFound(err, id, "")
			}
			return a.printNamespaces(false, nil, ns)
		},
	}
}

func (a *app) newDeleteCommand() *cobra.Command {
	var yes bool
	cmd := &cobra.Command{
		Use:   "delete [NS] [-y]",
		Short: "Delete a namespace and all its keys",
		Long: `Delete a namespace and all its keys. Deletion is asynchronous: the
namespace shows "deleting" until it is gone. On a terminal it asks for
confirmation; elsewhere it refuses unless given -y/--yes (or
TELNYX_EDGE_SKIP_CONFIRMATIONS=1).`,
		Example: `  telnyx-edge storage kv delete my-cache
  telnyx-edge storage kv delete MY_CACHE --yes`,
		Args:              argsRange(0, 1),
		ValidArgsFunction: a.completeNS(),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			id, err := a.resolveNS(ctx, c, args, 0)
			if err != nil {
				return err
			}
			ns, err := c.GetNamespace(ctx, id)
			if err != nil {
				return a.notFound(err, id, "")
			}
			if err := a.confirm(ctx, yes, "Delete namespace %s (%s) and all its keys?", ns.Name, ns.ID); err != nil {
				return err
			}
			ns, err = c.DeleteNamespace(ctx, id)
			if err != nil {
				return a.notFound(err, id, "")
			}
			return a.printNamespaces(false, nil, ns)
		},
	}
	cmd.Flags().BoolVarP(&yes, "yes", "y", false, "do not ask for confirmation")
	return cmd
}

func (a *app) newBindCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "bind NS BINDING",
		Short: "Bind a namespace in ./func.toml",
		Long: `Add or update [storage.kv.BINDING] with the namespace's id in ./func.toml
(created if missing), keeping every other line of the file as it is. The
function then receives the id as KV_<BINDING>_ID. Binding names match
^[A-Z][A-Z0-9_]*$.`,
		Example: `  telnyx-edge storage kv bind my-cache MY_CACHE
  telnyx-edge storage kv bind 550e8400-e29b-41d4-a716-446655440000 SESSIONS`,
		Args:              argsRange(2, 2),
		ValidArgsFunction: a.completeNS(),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := functoml.ValidateBindingName(args[1]); err != nil {
				return &usageError{msg: err.Error()}
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			id, err := a.resolveNS(cmd.Context(), c, args[:1], 0)
			if err != nil {
				return err
			}
			if _, err := c.GetNamespace(cmd.Context(), id); err != nil {
				return a.notFound(err, id, "")
			}
			return a.bind(args[1], id)
		},
	}
}

// confirm asks before a destructive action. yes (or
// TELNYX_EDGE_SKIP_CONFIRMATIONS=1) skips the question; without a terminal
// to ask on, it refuses with a usage error.
func (a *app) confirm(ctx context.Context, yes bool, question string, args ...any) error {
	if yes || a.env.Getenv(EnvSkipConfirmations) == "1" {
		return nil
	}
	if !a.env.IsTerminal() {
		return usagef("refusing to delete without confirmation: stdin is not a terminal; pass --yes (or set %s=1)", EnvSkipConfirmations)
	}
	fmt.Fprintf(a.env.Stderr, question+" [y/N] ", escArgs(args)...)
	answer, err := a.readLine(ctx)
	if err != nil && ctx.Err() != nil {
		return err
	}
	switch strings.ToLower(strings.TrimSpace(answer)) {
	case "y", "yes":
		return nil
	}
	return errors.New("aborted; nothing was deleted")
}

// readLine reads a line from stdin, or returns early when ctx ends (a read
// from a terminal does not end on Ctrl-C by itself).
func (a *app) readLine(ctx context.Context) (string, error) {
	return readCtx(ctx, func() (string, error) {
		return bufio.NewReader(a.env.Stdin).ReadString('\n')
	})
}

// readCtx runs read, returning early with ctx's error when ctx ends first;
// the read is then abandoned (the process is about to exit).
func readCtx[T any](ctx context.Context, read func() (T, error)) (T, error) {
	type result struct {
		v   T
		err error
	}
	done := make(chan result, 1)
	go func() {
		v, err := read()
		done <- result{v, err}
	}()
	select {
	case r := <-done:
		return r.v, r.err
	case <-ctx.Done():
		var zero T
		return zero, ctx.Err()
	}
}

// resolveNS returns the namespace id named by args[at] or, when args has no
// element at, by the only KV binding of ./func.toml. NS is a namespace
// UUID, a func.toml binding name (uppercase, so never a namespace name), or
// a namespace name looked up by listing. A UUID always means an id. The
// name it was given by is kept for messages (nsLabel).
func (a *app) resolveNS(ctx context.Context, c *client.Client, args []string, at int) (string, error) {
	path := a.path(functoml.FileName)
	if len(args) <= at {
		bindings, err := functoml.Read(path)
		if errors.Is(err, fs.ErrNotExist) {
			return "", usagef("NS is required: there is no ./func.toml to take the namespace from")
		}
		if err != nil {
			return "", err
		}
		if len(bindings) != 1 {
			names := make([]string, len(bindings))
			for i, b := range bindings {
				names[i] = b.Name
			}
			return "", usagef("NS is required: ./func.toml has %d KV bindings (%s); name one", len(bindings), strings.Join(names, ", "))
		}
		a.named(bindings[0].ID, bindings[0].Name)
		return bindings[0].ID, nil
	}
	ns := args[at]
	if id, err := kv.ParseID(ns); err == nil {
		return id.String(), nil
	}
	if functoml.ValidateBindingName(ns) == nil {
		bindings, err := functoml.Read(path)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return "", err
		}
		for _, b := range bindings {
			if b.Name == ns {
				a.named(b.ID, b.Name)
				return b.ID, nil
			}
		}
		return "", kv.Errorf(kv.ENotFound, "no KV binding %s in ./func.toml", ns)
	}
	if err := kv.ValidateNamespaceName(ns); err != nil {
		return "", usagef("NS %q is not a namespace id, name or func.toml binding name", ns)
	}
	for n, err := range c.Namespaces(ctx) {
		if err != nil {
			return "", err
		}
		if n.Name == ns {
			a.named(n.ID.String(), n.Name)
			return n.ID.String(), nil
		}
	}
	return "", kv.Errorf(kv.ENotFound, "namespace %s not found: no namespace has that name", ns)
}
