package store

import (
	"math"
	"strconv"
)

// CounterContentType is the content type of a value an incr stored.
const CounterContentType = "text/plain"

// ParseCounter reads a value an incr can add to: ASCII decimal digits,
// optionally after a '-', that fit an int64. Anything else (spaces, a
// '+', an empty value) is ErrNotInteger.
func ParseCounter(b []byte) (int64, error) {
	digits := b
	if len(digits) > 0 && digits[0] == '-' {
		digits = digits[1:]
	}
	if len(digits) == 0 || len(digits) > 19 {
		return 0, ErrNotInteger
	}
	for _, c := range digits {
		if c < '0' || c > '9' {
			return 0, ErrNotInteger
		}
	}
	n, err := strconv.ParseInt(string(b), 10, 64)
	if err != nil {
		return 0, ErrNotInteger
	}
	return n, nil
}

// AddCounter returns n+by, and false when that overflows an int64.
func AddCounter(n, by int64) (int64, bool) {
	if by > 0 && n > math.MaxInt64-by || by < 0 && n < math.MinInt64-by {
		return 0, false
	}
	return n + by, true
}

// FormatCounter is the stored form of a counter's value.
func FormatCounter(n int64) []byte { return strconv.AppendInt(nil, n, 10) }
