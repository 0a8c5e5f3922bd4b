package cli

import (
	"fmt"
	"math/big"
	"regexp"
	"strconv"
	"strings"

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
		Example: `  telnyx-edge storage kv usage
  telnyx-edge storage kv usage my-cache --month 2026-11
  telnyx-edge storage kv usage --month 2026-10 -o json`,
		Args:              argsRange(0, 1),
		ValidArgsFunction: a.completeNS(),
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
					return a.notFound(err, id, "")
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
	row(tw, thousands(u.Reads), thousands(u.Writes), thousands(u.Deletes), thousands(u.Lists), thousands(u.StoredBytes), quantity(u.StorageGBMonths))
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
			row(tw, n.ID, name, thousands(n.Reads), thousands(n.Writes), thousands(n.Deletes), thousands(n.Lists), thousands(n.StoredBytes), quantity(n.StorageGBMonths))
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
			row(tw, l.Resource, quantity(l.Quantity), quantity(l.Free), quantity(l.Billable), "$"+l.UnitPrice+" "+perUnits(l.PerUnits, l.Unit), "$"+l.Amount)
		}
		row(tw, "total", "", "", "", "", "$"+u.Bill.Total)
		if err := tw.Flush(); err != nil {
			return err
		}
		if hasRounded(u) {
			fmt.Fprintln(out, "\nGB-months are shown to 6 significant digits; -o json has them exactly. Amounts are exact.")
		}
	}
	return nil
}

// perUnits is "per million", "per GB-month", "per 1,000 operations".
func perUnits(n int64, unit string) string {
	switch n {
	case 1:
		return "per " + unit
	case 1_000:
		return "per thousand"
	case 1_000_000:
		return "per million"
	case 1_000_000_000:
		return "per billion"
	}
	return "per " + thousands(n) + " " + unit
}

// quantity shows a decimal quantity for a person: a whole number with
// thousands separators, a fraction to at most 6 significant digits
// (rounded half away from zero, trailing zeros dropped). Anything else is
// shown as it came.
func quantity(s string) string {
	r, ok := new(big.Rat).SetString(s)
	if !ok || !decimalRE.MatchString(s) {
		return s
	}
	intPart, frac, _ := strings.Cut(strings.TrimPrefix(s, "-"), ".")
	decimals := 0
	if digits := len(strings.TrimLeft(intPart, "0")); digits > 0 {
		decimals = max(0, 6-digits)
	} else if lead := len(frac) - len(strings.TrimLeft(frac, "0")); lead < len(frac) {
		decimals = lead + 6
	}
	out := r.FloatString(min(decimals, len(frac)))
	if strings.Contains(out, ".") {
		out = strings.TrimRight(strings.TrimRight(out, "0"), ".")
	}
	whole, rest, hasFrac := strings.Cut(out, ".")
	n, _ := strconv.ParseInt(whole, 10, 64)
	if out = thousands(n); hasFrac {
		out += "." + rest
	}
	if out == "-0" {
		out = "0"
	}
	return out
}

var decimalRE = regexp.MustCompile(`^-?[0-9]{1,18}(\.[0-9]+)?$`)

// hasRounded reports whether quantity dropped digits of a figure.
func hasRounded(u *client.Usage) bool {
	figures := []string{u.StorageGBMonths}
	for _, n := range u.Namespaces {
		figures = append(figures, n.StorageGBMonths)
	}
	for _, l := range u.Bill.Lines {
		figures = append(figures, l.Quantity, l.Free, l.Billable)
	}
	for _, f := range figures {
		a, ok1 := new(big.Rat).SetString(f)
		b, ok2 := new(big.Rat).SetString(strings.ReplaceAll(quantity(f), ",", ""))
		if ok1 && ok2 && a.Cmp(b) != 0 {
			return true
		}
	}
	return false
}

// plural is "1 namespace", "2 namespaces", with thousands separators.
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return thousands(int64(n)) + " " + noun + "s"
}

// thousands writes n with a comma between groups of three digits.
func thousands(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}
