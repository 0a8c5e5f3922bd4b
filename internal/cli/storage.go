package cli

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"strings"

	"github.com/spf13/cobra"

	"github.com/edgekv/kv"
	"github.com/edgekv/kv/client"
	"github.com/edgekv/kv/internal/functoml"
)

func (a *app) newStorageCommand() *cobra.Command {
	storage := &cobra.Command{Use: "storage", Short: "Edge Compute storage", Args: groupArgs, RunE: groupRun}
	kvCmd := &cobra.Command{
		Use:   "kv",
		Short: "KV namespaces and keys",
		Long: `KV namespaces and keys.

NS names a namespace: its UUID, its name, or the name of a binding in
./func.toml (e.g. MY_CACHE). It may be left out when ./func.toml has exactly
one KV binding.`,
		Args: groupArgs,
		RunE: groupRun,
	}
	kvCmd.AddCommand(a.newListCommand(), a.newCreateCommand(), a.newGetCommand(), a.newDeleteCommand(), a.newBindCommand(), a.newKeyCommand(), a.newUsageCommand())
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
	fmt.Fprintln(tw, "ID\tNAME\tSTATUS\tCREATED")
	for _, ns := range nss {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", ns.ID, ns.Name, ns.Status, ns.CreatedAt.UTC().Format(kv.NamespaceTimeFormat))
	}
	return tw.Flush()
}

func (a *app) newListCommand() *cobra.Command {
	var page, pageSize int
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List namespaces",
		Args:  argsRange(0, 0),
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
				a.hint("Page %d of %d (%d namespaces); next: --page %d", p.PageNumber, p.TotalPages, p.TotalResults, p.PageNumber+1)
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
	cmd := &cobra.Command{
		Use:   "create --name NAME [--wait] [--bind BINDING]",
		Short: "Create a namespace",
		Long: `Create a namespace. Its name may contain only lowercase letters, numbers
and hyphens. Creation is asynchronous: the namespace starts "pending";
--wait polls until it is "provision_ok". --bind BINDING adds
[storage.kv.BINDING] with its id to ./func.toml (created if missing), keeping
the rest of the file as it is. Binding names match ^[A-Z][A-Z0-9_]*$.`,
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
				if ns, err = c.WaitReady(ctx, ns.ID); err != nil {
					return err
				}
			}
			if err := a.printNamespaces(false, nil, ns); err != nil {
				return err
			}
			if bind != "" {
				return a.bind(bind, ns.ID)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&name, "name", "", "namespace name (lowercase letters, numbers, hyphens)")
	cmd.Flags().BoolVar(&wait, "wait", false, "wait until the namespace is provision_ok")
	cmd.Flags().StringVar(&bind, "bind", "", "add the binding BINDING for the namespace to ./func.toml")
	return cmd
}

// bind writes the binding to ./func.toml and says so.
func (a *app) bind(name, id string) error {
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
		Args:  argsRange(0, 1),
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
				return err
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
		Args: argsRange(0, 1),
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
				return err
			}
			if err := a.confirm(yes, fmt.Sprintf("Delete namespace %s (%s) and all its keys?", ns.Name, ns.ID)); err != nil {
				return err
			}
			ns, err = c.DeleteNamespace(ctx, id)
			if err != nil {
				return err
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
		Args: argsRange(2, 2),
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
				return err
			}
			return a.bind(args[1], id)
		},
	}
}

// confirm asks before a destructive action. yes (or
// TELNYX_EDGE_SKIP_CONFIRMATIONS=1) skips the question; without a terminal
// to ask on, it refuses with a usage error.
func (a *app) confirm(yes bool, question string) error {
	if yes || a.env.Getenv(EnvSkipConfirmations) == "1" {
		return nil
	}
	if !a.env.IsTerminal() {
		return usagef("refusing to delete without confirmation: stdin is not a terminal; pass --yes (or set %s=1)", EnvSkipConfirmations)
	}
	fmt.Fprintf(a.env.Stderr, "%s [y/N] ", question)
	answer, _ := bufio.NewReader(a.env.Stdin).ReadString('\n')
	switch strings.ToLower(strings.TrimSpace(answer)) {
	case "y", "yes":
		return nil
	}
	return errors.New("aborted; nothing was deleted")
}

// resolveNS returns the namespace id named by args[at] or, when args has no
// element at, by the only KV binding of ./func.toml. NS is a namespace
// UUID, a func.toml binding name (uppercase, so never a namespace name), or
// a namespace name looked up by listing. A UUID always means an id.
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
		return bindings[0].ID, nil
	}
	ns := args[at]
	if id, err := kv.CanonicalID(ns); err == nil {
		return id, nil
	}
	if functoml.ValidateBindingName(ns) == nil {
		bindings, err := functoml.Read(path)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return "", err
		}
		for _, b := range bindings {
			if b.Name == ns {
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
			return n.ID, nil
		}
	}
	return "", kv.Errorf(kv.ENotFound, "no namespace named %q", ns)
}
