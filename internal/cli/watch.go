package cli

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"github.com/edgekv/kv"
	"github.com/edgekv/kv/client"
)

func (a *app) newWatchCommand() *cobra.Command {
	var prefix string
	var since uint64
	var snapshot, values bool
	cmd := &cobra.Command{
		Use:   "watch [NS] [--prefix P] [--since REV] [--snapshot] [--values]",
		Short: "Follow a namespace's changes as they happen",
		Long: `Print every change of the namespace's keys (or of those starting with
--prefix) as it is committed: puts, deletes and expiries, one per line, each
with its revision, until interrupted.

--since REV starts after revision REV (a revision printed earlier), so that
a watch stopped and started again misses nothing; --snapshot first prints
every live key, then "ready" with the revision the copy is complete at. A
dropped connection is resumed by itself from the last revision printed.

With -o json each change is one JSON object per line (NDJSON): event, key,
revision, and for puts etag, size_bytes, content_type, updated_at,
expires_at, and with --values the value (value_base64 when it is not
UTF-8; values over 64 KiB are left out).

This is kvd's extension of the API; the hosted service has no watch.`,
		Example: `  telnyx-edge storage kv watch MY_CACHE --prefix flags/
  telnyx-edge storage kv watch my-cache --since 1042 -o json`,
		Args:              argsRange(0, 1),
		ValidArgsFunction: a.completeNS(),
		RunE: func(cmd *cobra.Command, args []string) error {
			if prefix != "" {
				if err := checkPrefix(prefix); err != nil {
					return err
				}
			}
			if since != 0 && snapshot {
				return usagef("--since and --snapshot do not go together: --since resumes a copy made earlier")
			}
			ns, err := a.keyHandle(cmd, args)
			if err != nil {
				return err
			}
			return a.watch(cmd.Context(), ns, client.WatchOptions{Prefix: prefix, Since: since, Snapshot: snapshot, Values: values})
		},
	}
	cmd.Flags().StringVar(&prefix, "prefix", "", "only keys starting with this prefix")
	cmd.Flags().Uint64Var(&since, "since", 0, "start after this revision")
	cmd.Flags().BoolVar(&snapshot, "snapshot", false, "first print every live key, then ready")
	cmd.Flags().BoolVar(&values, "values", false, "print values (up to 64 KiB)")
	return cmd
}

// watchLine is a change as -o json prints it.
type watchLine struct {
	Event       string  `json:"event"`
	Key         string  `json:"key,omitempty"`
	Revision    uint64  `json:"revision"`
	ETag        string  `json:"etag,omitempty"`
	SizeBytes   *int64  `json:"size_bytes,omitempty"`
	ContentType string  `json:"content_type,omitempty"`
	UpdatedAt   string  `json:"updated_at,omitempty"`
	ExpiresAt   *string `json:"expires_at,omitempty"`
	Value       *string `json:"value,omitempty"`
	ValueBase64 *string `json:"value_base64,omitempty"`
}

func (a *app) watch(ctx context.Context, ns *client.Namespace, opts client.WatchOptions) error {
	for ev, err := range ns.Watch(ctx, opts) {
		if err != nil {
			if errors.Is(err, context.Canceled) && ctx.Err() != nil {
				return nil // interrupted: the normal end
			}
			var api *client.APIError
			if errors.As(err, &api) && errors.Is(err, client.ErrHistoryGone) {
				return fmt.Errorf("%w (the oldest revision kept is %d; start again with --snapshot)", err, api.OldestRevision)
			}
			return err
		}
		if err := a.printEvent(ev, opts.Values); err != nil {
			return err
		}
	}
	return nil
}

func (a *app) printEvent(ev client.Event, values bool) error {
	if a.json() {
		l := watchLine{Event: string(ev.Kind), Key: ev.Key, Revision: ev.Revision, ETag: ev.ETag}
		if ev.Kind == client.EventPut {
			size := ev.Size
			l.SizeBytes, l.ContentType, l.UpdatedAt = &size, ev.ContentType, ev.UpdatedAt.UTC().Format(kv.KeyTimeFormat)
			if !ev.ExpiresAt.IsZero() {
				e := ev.ExpiresAt.UTC().Format(kv.KeyTimeFormat)
				l.ExpiresAt = &e
			}
			if values && ev.HasValue {
				if utf8.Valid(ev.Value) {
					v := string(ev.Value)
					l.Value = &v
				} else {
					v := base64.StdEncoding.EncodeToString(ev.Value)
					l.ValueBase64 = &v
				}
			}
		}
		b, err := json.Marshal(l)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(a.env.Stdout, "%s\n", escJSON(b))
		return err
	}
	var line string
	switch ev.Kind {
	case client.EventReady:
		line = fmt.Sprintf("%d  ready", ev.Revision)
	case client.EventReset:
		line = "reset: the snapshot was cut off and starts again"
	case client.EventPut:
		line = fmt.Sprintf("%d  put     %s  (%s, %s", ev.Revision, esc(ev.Key), bytesText(ev.Size), esc(ev.ContentType))
		if !ev.ExpiresAt.IsZero() {
			line += ", expires " + ev.ExpiresAt.UTC().Format(time.RFC3339)
		}
		line += ")"
		if values && ev.HasValue {
			line += "  " + esc(valueText(ev.Value))
		}
	default:
		line = fmt.Sprintf("%d  %-6s  %s", ev.Revision, ev.Kind, esc(ev.Key))
	}
	_, err := fmt.Fprintln(a.env.Stdout, line)
	return err
}

// bytesText is a size for people.
func bytesText(n int64) string {
	if n == 1 {
		return "1 byte"
	}
	return fmt.Sprintf("%d bytes", n)
}

// valueText is a value on one line: as text when it is UTF-8, else in
// base64.
func valueText(v []byte) string {
	if utf8.Valid(v) {
		return fmt.Sprintf("%q", v)
	}
	return "base64:" + base64.StdEncoding.EncodeToString(v)
}
