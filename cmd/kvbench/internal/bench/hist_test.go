package bench

import (
	"math"
	"testing"
	"time"
)

func TestHistogramUniformQuantiles(t *testing.T) {
	var h Histogram
	for i := 1; i <= 10000; i++ {
		h.Record(time.Duration(i) * time.Microsecond)
	}
	if h.Count() != 10000 {
		t.Fatalf("count %d, want 10000", h.Count())
	}
	for _, tc := range []struct {
		q    float64
		want time.Duration
	}{
		{0.5, 5000 * time.Microsecond},
		{0.99, 9900 * time.Microsecond},
		{0.999, 9990 * time.Microsecond},
		{1, 10000 * time.Microsecond},
	} {
		got := h.Quantile(tc.q)
		if rel := math.Abs(float64(got-tc.want)) / float64(tc.want); rel > 1.0/64 {
			t.Errorf("Quantile(%v) = %v, want %v within 1/64", tc.q, got, tc.want)
		}
	}
	if q0 := h.Quantile(0); q0 < time.Microsecond || q0 > time.Microsecond*65/64 {
		t.Errorf("Quantile(0) = %v, want the minimum 1µs within 1/64", q0)
	}
	if h.Max() != 10*time.Millisecond {
		t.Errorf("Max = %v, want 10ms", h.Max())
	}
	if m := h.Mean(); m < 5000*time.Microsecond || m > 5001*time.Microsecond {
		t.Errorf("Mean = %v, want 5000.5µs", m)
	}
}

func TestHistogramOrderedAndClamped(t *testing.T) {
	var h Histogram
	// A skewed distribution: mostly fast, a slow tail.
	for i := range 1000 {
		d := 100 * time.Microsecond
		if i%100 == 0 {
			d = 50 * time.Millisecond
		}
		h.Record(d)
	}
	prev := time.Duration(0)
	for q := 0.0; q <= 1.0; q += 0.001 {
		v := h.Quantile(q)
		if v < prev {
			t.Fatalf("Quantile(%v) = %v < %v: not monotonic", q, v, prev)
		}
		if v < 100*time.Microsecond || v > 50*time.Millisecond {
			t.Fatalf("Quantile(%v) = %v outside [min, max]", q, v)
		}
		prev = v
	}
	// The tail is the maximum, so it is exact; the body is within 1/64.
	if p50, p999 := h.Quantile(0.5), h.Quantile(0.999); p50 > 100*time.Microsecond*65/64 || p999 != 50*time.Millisecond {
		t.Errorf("p50 %v p99.9 %v, want 100µs (within 1/64) and 50ms", p50, p999)
	}
}

func TestHistogramEmptyAndNegative(t *testing.T) {
	var h Histogram
	if h.Quantile(0.5) != 0 || h.Mean() != 0 || h.Max() != 0 {
		t.Fatal("an empty histogram should report zeros")
	}
	h.Record(-time.Second)
	if h.Count() != 1 || h.Quantile(1) != 0 {
		t.Fatalf("a negative duration should count as 0: count %d, q1 %v", h.Count(), h.Quantile(1))
	}
}

func TestHistogramMerge(t *testing.T) {
	var a, b, all Histogram
	for i := 1; i <= 2000; i++ {
		d := time.Duration(i*i) * time.Nanosecond
		all.Record(d)
		if i%2 == 0 {
			a.Record(d)
		} else {
			b.Record(d)
		}
	}
	var m Histogram
	m.Merge(&a)
	m.Merge(&b)
	m.Merge(&Histogram{})
	if m.Count() != all.Count() || m.Max() != all.Max() || m.Mean() != all.Mean() {
		t.Fatalf("merged count/max/mean %d/%v/%v, want %d/%v/%v", m.Count(), m.Max(), m.Mean(), all.Count(), all.Max(), all.Mean())
	}
	for _, q := range []float64{0, 0.1, 0.5, 0.9, 0.99, 0.999, 1} {
		if m.Quantile(q) != all.Quantile(q) {
			t.Errorf("Quantile(%v): merged %v, direct %v", q, m.Quantile(q), all.Quantile(q))
		}
	}
}

func TestBucketBounds(t *testing.T) {
	prevHigh := uint64(0)
	for i := range histBuckets {
		high := bucketHigh(i)
		if bucketOf(high) != i {
			t.Fatalf("bucketOf(bucketHigh(%d)=%d) = %d", i, high, bucketOf(high))
		}
		if i > 0 {
			if high <= prevHigh {
				t.Fatalf("bucket %d high %d not above bucket %d's %d", i, high, i-1, prevHigh)
			}
			if bucketOf(prevHigh+1) != i {
				t.Fatalf("bucketOf(%d) = %d, want %d", prevHigh+1, bucketOf(prevHigh+1), i)
			}
		}
		prevHigh = high
	}
	if bucketOf(math.MaxUint64) != histBuckets-1 {
		t.Fatalf("the largest value lands in bucket %d, want %d", bucketOf(math.MaxUint64), histBuckets-1)
	}
}
