package cli

import (
	"fmt"

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
	fmt.Fprintf(out, "Usage for %s (%s to %s)\n\n", u.Month, u.PeriodStart, u.PeriodEnd)
	tw := a.table()
	fmt.Fprintln(tw, "READS\tWRITES\tDELETES\tLISTS\tSTORED BYTES\tGB-MONTHS")
	fmt.Fprintf(tw, "%d\t%d\t%d\t%d\t%d\t%s\n", u.Reads, u.Writes, u.Deletes, u.Lists, u.StoredBytes, u.StorageGBMonths)
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(u.Namespaces) > 0 {
		fmt.Fprintln(out, "\nBy namespace:")
		tw = a.table()
		fmt.Fprintln(tw, "ID\tNAME\tREADS\tWRITES\tDELETES\tLISTS\tSTORED BYTES\tGB-MONTHS")
		for _, n := range u.Namespaces {
			name := n.Name
			if name == "" {
				name = "(deleted)"
			}
			fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t%d\t%s\n", n.ID, name, n.Reads, n.Writes, n.Deletes, n.Lists, n.StoredBytes, n.StorageGBMonths)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if u.Bill != nil {
		fmt.Fprintf(out, "\nBill (%s):\n", u.Bill.Currency)
		tw = a.table()
		fmt.Fprintln(tw, "RESOURCE\tQUANTITY\tFREE\tBILLABLE\tUNIT PRICE\tAMOUNT")
		for _, l := range u.Bill.Lines {
			per := "per " + l.Unit
			if l.PerUnits != 1 {
				per = fmt.Sprintf("per %d %s", l.PerUnits, l.Unit)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t$%s %s\t$%s\n", l.Resource, l.Quantity, l.Free, l.Billable, l.UnitPrice, per, l.Amount)
		}
		fmt.Fprintf(tw, "total\t\t\t\t\t$%s\n", u.Bill.Total)
		return tw.Flush()
	}
	return nil
}
