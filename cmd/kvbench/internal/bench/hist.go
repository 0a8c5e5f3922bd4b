package bench

import (
	"math"
	"math/bits"
	"time"
)

// histSubBits sets the histogram's precision: every power-of-two range of
// values is split into 2^(histSubBits-1) equal buckets, so a recorded value
// is known to within 1/64 (about 1.6%) of itself.
const (
	histSubBits  = 7
	histSubCount = 1 << histSubBits
	histHalf     = histSubCount / 2
	histBuckets  = histSubCount + (64-histSubBits)*histHalf
)

// Histogram records durations in log-spaced buckets, in the manner of an
// HDR histogram: constant memory, O(1) Record, and quantiles accurate to
// about 1.6% of the value. The zero value is ready to use. A Histogram is
// not safe for concurrent use; give each goroutine its own and Merge them.
type Histogram struct {
	counts [histBuckets]uint64
	n      uint64
	sum    uint64
	min    uint64
	max    uint64
}

// bucketOf returns the bucket index of v.
func bucketOf(v uint64) int {
	if v < histSubCount {
		return int(v)
	}
	shift := bits.Len64(v) - histSubBits
	top := v >> uint(shift) // in [histHalf, histSubCount)
	return histSubCount + (shift-1)*histHalf + int(top-histHalf)
}

// bucketHigh returns the largest value that falls in bucket i.
func bucketHigh(i int) uint64 {
	if i < histSubCount {
		return uint64(i)
	}
	shift := uint((i-histSubCount)/histHalf + 1)
	top := uint64((i-histSubCount)%histHalf + histHalf)
	high := (top+1)<<shift - 1
	if high < top<<shift { // overflow at the very top of the range
		return math.MaxUint64
	}
	return high
}

// Record adds one observation; negative durations count as zero.
func (h *Histogram) Record(d time.Duration) {
	v := uint64(0)
	if d > 0 {
		v = uint64(d)
	}
	h.counts[bucketOf(v)]++
	if h.n == 0 || v < h.min {
		h.min = v
	}
	if v > h.max {
		h.max = v
	}
	h.n++
	h.sum += v
}

// Merge adds every observation of o to h.
func (h *Histogram) Merge(o *Histogram) {
	if o.n == 0 {
		return
	}
	for i, c := range o.counts {
		h.counts[i] += c
	}
	if h.n == 0 || o.min < h.min {
		h.min = o.min
	}
	if o.max > h.max {
		h.max = o.max
	}
	h.n += o.n
	h.sum += o.sum
}

// Count is the number of observations.
func (h *Histogram) Count() uint64 { return h.n }

// Max is the largest observation (0 when empty).
func (h *Histogram) Max() time.Duration { return time.Duration(h.max) }

// Mean is the average observation (0 when empty).
func (h *Histogram) Mean() time.Duration {
	if h.n == 0 {
		return 0
	}
	return time.Duration(h.sum / h.n)
}

// Quantile returns the value below or at which a fraction q (0..1) of the
// observations fall: the upper bound of the bucket holding that rank,
// clamped to the observed minimum and maximum. It is 0 when empty, and
// non-decreasing in q.
func (h *Histogram) Quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(h.n)))
	rank = max(rank, 1)
	rank = min(rank, h.n)
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			v := bucketHigh(i)
			v = max(v, h.min)
			v = min(v, h.max)
			return time.Duration(v)
		}
	}
	return time.Duration(h.max)
}
