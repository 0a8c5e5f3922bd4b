package cli

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/edgekv/kv"
	"github.com/edgekv/kv/client"
	"github.com/edgekv/kv/internal/functoml"
)

// named records the name (a namespace name or a binding) a namespace id was
// given by on the command line.
func (a *app) named(id, name string) {
	if a.names == nil {
		a.names = map[string]string{}
	}
	a.names[id] = name
}

// nsLabel names a namespace in a message: "my-cache (<id>)" when it was
// given by name or binding, else its id.
func (a *app) nsLabel(id string) string {
	if name := a.names[id]; name != "" {
		return name + " (" + id + ")"
	}
	return id
}

// explained is an error told in the user's terms: msg is shown, and err is
// what it matches (a not-found answer keeps the exit code 3).
type explained struct {
	msg string
	err error
}

func (e *explained) Error() string { return e.msg }
func (e *explained) Unwrap() error { return e.err }

// notFound rewrites a not-found answer about namespace id (and key, for
// a read of one key) to say which key or namespace is missing. Other
// errors pass through.
func (a *app) notFound(err error, id, key string) error {
	var apiErr *client.APIError
	if !errors.As(err, &apiErr) || apiErr.Code != kv.ENotFound {
		return err
	}
	ns := a.nsLabel(id)
	var msg string
	switch {
	case key != "" && apiErr.Parameter == "key":
		msg = fmt.Sprintf("key %s not found in namespace %s", key, ns)
	case key == "" || apiErr.Parameter == "id":
		msg = fmt.Sprintf("namespace %s not found", ns)
	default: // the answer does not say which
		msg = fmt.Sprintf("key %s not found in namespace %s, or no such namespace: %s", key, ns, message(err))
	}
	return &explained{msg: msg, err: err}
}

// completeNS completes a command's first argument, NS, with namespace
// names and func.toml binding names. It asks the service with a short
// timeout, so a slow or absent one never stalls the shell.
func (a *app) completeNS() func(*cobra.Command, []string, string) ([]cobra.Completion, cobra.ShellCompDirective) {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		if len(args) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		var out []cobra.Completion
		if bindings, err := functoml.Read(a.path(functoml.FileName)); err == nil {
			for _, b := range bindings {
				if strings.HasPrefix(b.Name, toComplete) {
					out = append(out, cobra.CompletionWithDesc(b.Name, "func.toml binding"))
				}
			}
		}
		c, err := a.client()
		if err != nil {
			return out, cobra.ShellCompDirectiveNoFileComp
		}
		ctx, cancel := context.WithTimeout(cmd.Context(), 2*time.Second)
		defer cancel()
		p, err := c.ListNamespaces(ctx, 1, kv.MaxPageSize)
		if err != nil {
			return out, cobra.ShellCompDirectiveNoFileComp
		}
		for _, ns := range p.Namespaces {
			if kv.ValidateNamespaceName(ns.Name) == nil && strings.HasPrefix(ns.Name, toComplete) {
				out = append(out, cobra.CompletionWithDesc(ns.Name, string(ns.Status)))
			}
		}
		return out, cobra.ShellCompDirectiveNoFileComp
	}
}
