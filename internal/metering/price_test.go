package metering

import (
	"math/big"
	"testing"
	"time"

	"github.com/edgekv/kv/internal/store"
	"github.com/edgekv/kv/internal/usagemath"
)

func line(t *testing.T, b Bill, resource string) Line {
	t.Helper()
	for _, l := range b.Lines {
		if l.Resource == resource {
			return l
		}
	}
	t.Fatalf("no %s line", resource)
	return Line{}
}

func TestBillEdges(t *testing.T) {
	for _, tc := range []struct {
		name   string
		counts store.UsageCounts
		gb     *big.Rat
		cents  map[string]int64
		total  int64
	}{
		{"zero", store.UsageCounts{}, new(big.Rat), nil, 0},
		{"exactly the free tier", store.UsageCounts{Reads: 10_000_000, Writes: 1_000_000, Deletes: 1_000_000, Lists: 1_000_000}, big.NewRat(1, 1), nil, 0},
		// One operation over costs a fraction of a cent: $0.00 to the cent.
		{"one over", store.UsageCounts{Reads: 10_000_001, Writes: 1_000_001, Deletes: 1_000_001, Lists: 1_000_001}, big.NewRat(1_000_000_001, 1_000_000_000), nil, 0},
		// Half a cent rounds up: 1/70 GB-month over at $0.35 is $0.005.
		{"half a cent", store.UsageCounts{}, big.NewRat(71, 70), map[string]int64{"storage": 1}, 1},
		{"large month", store.UsageCounts{Reads: 1_000_000_000, Writes: 500_000_000, Deletes: 3_000_000, Lists: 1_500_000}, big.NewRat(101, 1),
			// (1e9-1e7)×0.35/1e6 = 346.50; 499e6×3.5/1e6 = 1746.50; 2e6×3.5/1e6 = 7.00; 5e5×3.5/1e6 = 1.75; 100×0.35 = 35.00
			map[string]int64{"reads": 34650, "writes": 174650, "deletes": 700, "lists": 175, "storage": 3500}, 34650 + 174650 + 700 + 175 + 3500},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := NewBill(tc.counts, tc.gb)
			if len(b.Lines) != 5 {
				t.Fatalf("%d lines", len(b.Lines))
			}
			for _, l := range b.Lines {
				if l.Cents != tc.cents[l.Resource] {
					t.Errorf("%s: %d cents, want %d (quantity %s billable %s)", l.Resource, l.Cents, tc.cents[l.Resource], l.Quantity.FloatString(3), l.Billable.FloatString(3))
				}
				if l.Billable.Sign() < 0 {
					t.Errorf("%s: negative billable", l.Resource)
				}
			}
			if b.Cents != tc.total {
				t.Fatalf("total %s, want %s", Dollars(b.Cents), Dollars(tc.total))
			}
		})
	}
	b := NewBill(store.UsageCounts{Reads: 10_000_001}, new(big.Rat))
	if l := line(t, b, "reads"); l.Billable.Cmp(big.NewRat(1, 1)) != 0 || l.Free.Cmp(big.NewRat(10_000_000, 1)) != 0 {
		t.Fatalf("reads line arithmetic: %+v", l)
	}
}

func TestGBMonths(t *testing.T) {
	m, ok := usagemath.ParseMonth("2026-02") // 28 days
	if !ok {
		t.Fatal("ParseMonth(2026-02) refused")
	}
	// 2 GB for the whole month is 2 GB-months.
	bn := new(big.Int).Mul(big.NewInt(2*BytesPerGB), big.NewInt(int64(28*24*time.Hour)))
	if got := GBMonths(bn, m); got.Cmp(big.NewRat(2, 1)) != 0 {
		t.Fatalf("GBMonths = %s", got.FloatString(6))
	}
	for _, bad := range []string{"2026-13", "2026-1", "26-01", "", "2026-01-01", "abcd-ef"} {
		if _, ok := usagemath.ParseMonth(bad); ok {
			t.Errorf("ParseMonth(%q) accepted", bad)
		}
	}
	if usagemath.MonthFromIndex(m.Index()) != m || m.Next().String() != "2026-03" {
		t.Fatal("month index round trip")
	}
}
