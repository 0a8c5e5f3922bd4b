package usagemath

import (
	"math"
	"math/big"
	"math/rand/v2"
	"testing"
)

func TestInt128(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	vals := []int64{0, 1, -1, math.MaxInt64, math.MinInt64 + 1, 1 << 40, -(1 << 50)}
	for range 200 {
		vals = append(vals, r.Int64()-math.MaxInt64/2)
	}
	sum, want := Int128{}, new(big.Int)
	for i, a := range vals {
		b := vals[(i*7+3)%len(vals)]
		p := Mul64(a, b)
		wp := new(big.Int).Mul(big.NewInt(a), big.NewInt(b))
		if p.Big().Cmp(wp) != 0 {
			t.Fatalf("Mul64(%d, %d) = %v, want %v", a, b, p.Big(), wp)
		}
		if got := Int128FromBinary(p.AppendBinary(nil)); got != p {
			t.Fatalf("binary round trip of %v", p.Big())
		}
		sum = sum.Add(p)
		want.Add(want, wp)
		if sum.Big().Cmp(want) != 0 {
			t.Fatalf("running sum %v, want %v", sum.Big(), want)
		}
	}
	if (Int128{Hi: 0, Lo: 5}).Neg().Big().Int64() != -5 {
		t.Fatal("Neg")
	}
}
