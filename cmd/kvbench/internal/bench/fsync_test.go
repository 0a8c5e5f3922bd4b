package bench

import (
	"strings"
	"testing"
	"time"
)

func TestCountSyncs(t *testing.T) {
	trace := `4242 1700000000.100000 fdatasync(7) = 0
4242 1700000001.000000 fdatasync(7) = 0
4243 1700000001.500000 fsync(9 <unfinished ...>
4242 1700000001.600000 fdatasync(7) = 0
4243 1700000001.700000 <... fsync resumed>) = 0
4244 1700000001.800000 fsync(3) = 0
4242 1700000002.000000 fdatasync(7) = 0
4242 1700000003.000000 +++ exited with 0 +++
1700000001.900000 fdatasync(4) = 0
`
	from := time.Unix(1700000001, 0)
	to := time.Unix(1700000002, 0)
	fs, fds, err := countSyncs(strings.NewReader(trace), from, to)
	if err != nil {
		t.Fatal(err)
	}
	// In [from, to): fdatasync at 1.0, 1.6 and 1.9 (no pid column); fsync
	// at 1.5 (split over two lines, counted once) and 1.8.
	if fs != 2 || fds != 3 {
		t.Fatalf("got %d fsync and %d fdatasync, want 2 and 3", fs, fds)
	}
}
