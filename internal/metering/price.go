package metering

import (
	"fmt"
	"math/big"
	"time"

	"github.com/edgekv/kv/internal/store"
	"github.com/edgekv/kv/internal/usagemath"
)

// A price list row: so much free each month, then a price per unit.
type Price struct {
	Resource  string
	Unit      string   // what Quantity counts
	Free      *big.Rat // free units each month
	PerUnits  int64    // the price is per this many units
	UnitPrice *big.Rat // dollars per PerUnits units
}

// PriceList is the published table (per organization per calendar month).
var PriceList = []Price{
	{"reads", "operations", big.NewRat(10_000_000, 1), 1_000_000, big.NewRat(35, 100)},
	{"writes", "operations", big.NewRat(1_000_000, 1), 1_000_000, big.NewRat(350, 100)},
	{"deletes", "operations", big.NewRat(1_000_000, 1), 1_000_000, big.NewRat(350, 100)},
	{"lists", "operations", big.NewRat(1_000_000, 1), 1_000_000, big.NewRat(350, 100)},
	{"storage", "GB-month", big.NewRat(1, 1), 1, big.NewRat(35, 100)},
}

// BytesPerGB is the gigabyte of the price list: 10^9 bytes.
const BytesPerGB = 1_000_000_000

// GBMonths converts byte-nanoseconds to GB-months of month m: a GB stored
// for the whole month is one GB-month.
func GBMonths(byteNanos *big.Int, m usagemath.Month) *big.Rat {
	den := new(big.Int).Mul(big.NewInt(BytesPerGB), big.NewInt(int64(m.Len()/time.Nanosecond)))
	return new(big.Rat).SetFrac(byteNanos, den)
}

// Line is one line of a bill, with its arithmetic.
type Line struct {
	Price
	Quantity *big.Rat
	Billable *big.Rat // max(0, Quantity - Free)
	Cents    int64    // Billable × UnitPrice / PerUnits, rounded half up to the cent
}

// Bill is a month's bill.
type Bill struct {
	Lines []Line
	Cents int64 // the sum of the lines' rounded amounts
}

// NewBill prices counts and stored GB-months with PriceList, free tier
// first, each line rounded to the cent.
func NewBill(c store.UsageCounts, gbMonths *big.Rat) Bill {
	qty := map[string]*big.Rat{
		"reads":   big.NewRat(c.Reads, 1),
		"writes":  big.NewRat(c.Writes, 1),
		"deletes": big.NewRat(c.Deletes, 1),
		"lists":   big.NewRat(c.Lists, 1),
		"storage": gbMonths,
	}
	var b Bill
	for _, p := range PriceList {
		q := qty[p.Resource]
		billable := new(big.Rat).Sub(q, p.Free)
		if billable.Sign() < 0 {
			billable.SetInt64(0)
		}
		amount := new(big.Rat).Mul(billable, p.UnitPrice)
		amount.Quo(amount, big.NewRat(p.PerUnits, 1))
		cents := roundHalfUp(amount.Mul(amount, big.NewRat(100, 1)))
		b.Lines = append(b.Lines, Line{Price: p, Quantity: q, Billable: billable, Cents: cents})
		b.Cents += cents
	}
	return b
}

func roundHalfUp(r *big.Rat) int64 {
	// floor(r + 1/2) for r >= 0
	x := new(big.Rat).Add(r, big.NewRat(1, 2))
	q := new(big.Int).Quo(x.Num(), x.Denom())
	return q.Int64()
}

// Dollars formats cents as dollars ("12.34").
func Dollars(cents int64) string { return fmt.Sprintf("%d.%02d", cents/100, cents%100) }
