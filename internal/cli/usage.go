package cli

import (
	"fmt"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/edgekv/kv/client"
)

func (a *app) newUsageCommand() *cobra.Command {
	var month string
	cmd := &cobra.Command{
		Use:   "usage [NS]",
		Short: "Show metered usage and the month's bill",
		Long: `Show metered usage for a calendar month (UTC): the organization's, with
its bill, or one namespace's when NS is given.`,
		Args: argsRange(0, 1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			var u *client.Usage
			if len(args) == 1 {
				id, err := a.resolveNS(cmd.Context(), c, args, 0)
				if err != nil {
					return err
				}
				u, err = c.Namespace(id).Usage(cmd.Context(), month)
				if err != nil {
					return err
				}
			} else if u, err = c.Usage(cmd.Context(), month); err != nil {
				return err
			}
			if a.json() {
				return a.writeJSON(map[string]any{"data": u})
			}
			return a.printUsage(u)
		},
	}
	cmd.Flags().StringVar(&month, "month", "", "month as YYYY-MM (default: the current month)")
	return cmd
}

func (a *app) printUsage(u *client.Usage) error {
	out := a.env.Stdout
	fmt.Fprintf(out, "Usage for %s (%s to %s)\n\n", escArgs([]any{u.Month, u.PeriodStart, u.PeriodEnd})...)
	tw := a.table()
	row(tw, "READS", "WRITES", "DELETES", "LISTS", "STORED BYTES", "GB-MONTHS")
	row(tw, itoa(u.Reads), itoa(u.Writes), itoa(u.Deletes), itoa(u.Lists), itoa(u.StoredBytes), u.StorageGBMonths)
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(u.Namespaces) > 0 {
		fmt.Fprintln(out, "\nBy namespace:")
		tw = a.table()
		row(tw, "ID", "NAME", "READS", "WRITES", "DELETES", "LISTS", "STORED BYTES", "GB-MONTHS")
		for _, n := range u.Namespaces {
			name := n.Name
			if name == "" {
				name = "(deleted)"
			}
			row(tw, n.ID, name, itoa(n.Reads), itoa(n.Writes), itoa(n.Deletes), itoa(n.Lists), itoa(n.StoredBytes), n.StorageGBMonths)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if u.Bill != nil {
		fmt.Fprintf(out, "\nBill (%s):\n", esc(u.Bill.Currency))
		tw = a.table()
		row(tw, "RESOURCE", "QUANTITY", "FREE", "BILLABLE", "UNIT PRICE", "AMOUNT")
		for _, l := range u.Bill.Lines {
			per := "per " + l.Unit
			if l.PerUnits != 1 {
				per = fmt.Sprintf("per %d %s", l.PerUnits, l.Unit)
			}
			row(tw, l.Resource, l.Quantity, l.Free, l.Billable, "$"+l.UnitPrice+" "+per, "$"+l.Amount)
		}
		row(tw, "total", "", "", "", "", "$"+u.Bill.Total)
		return tw.Flush()
	}
	return nil
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
