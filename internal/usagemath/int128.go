package usagemath

import (
	"encoding/binary"
	"math/big"
	"math/bits"
	"time"
)

// Int128 is a signed 128-bit integer in two's complement. Storage is metered
// in byte-nanoseconds, whose sums outgrow 64 bits (a terabyte for a month is
// about 2.7e27); engines keep them in this fixed width.
type Int128 struct {
	Hi int64
	Lo uint64
}

// Add returns a+b.
func (a Int128) Add(b Int128) Int128 {
	lo, carry := bits.Add64(a.Lo, b.Lo, 0)
	return Int128{Hi: a.Hi + b.Hi + int64(carry), Lo: lo}
}

// Neg returns -a.
func (a Int128) Neg() Int128 {
	lo, borrow := bits.Sub64(0, a.Lo, 0)
	return Int128{Hi: -a.Hi - int64(borrow), Lo: lo}
}

// Mul64 returns the exact product a*b.
func Mul64(a, b int64) Int128 {
	neg := (a < 0) != (b < 0)
	hi, lo := bits.Mul64(abs(a), abs(b))
	r := Int128{Hi: int64(hi), Lo: lo}
	if neg {
		return r.Neg()
	}
	return r
}

func abs(x int64) uint64 {
	if x < 0 {
		return uint64(-x)
	}
	return uint64(x)
}

// Big returns a as a big.Int.
func (a Int128) Big() *big.Int {
	b := new(big.Int).SetInt64(a.Hi)
	b.Lsh(b, 64)
	return b.Add(b, new(big.Int).SetUint64(a.Lo))
}

// AppendBinary appends a's 16-byte big-endian form.
func (a Int128) AppendBinary(dst []byte) []byte {
	dst = binary.BigEndian.AppendUint64(dst, uint64(a.Hi))
	return binary.BigEndian.AppendUint64(dst, a.Lo)
}

// Int128FromBinary reads the form AppendBinary writes.
func Int128FromBinary(b []byte) Int128 {
	return Int128{Hi: int64(binary.BigEndian.Uint64(b)), Lo: binary.BigEndian.Uint64(b[8:])}
}

// StorageIntegral is the integral of stored bytes over [month start, at]
// given the bytes stored at the month's start (carried), the sum of the
// changes within the month up to at (delta), and the sum of each change
// times its offset from the month's start in nanoseconds (weighted):
// (carried+delta)*(at-start) - weighted.
func StorageIntegral(carried, delta int64, weighted *big.Int, sinceStart time.Duration) *big.Int {
	r := new(big.Int).Mul(big.NewInt(carried+delta), big.NewInt(int64(sinceStart)))
	return r.Sub(r, weighted)
}
