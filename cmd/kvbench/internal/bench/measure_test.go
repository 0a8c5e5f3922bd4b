package bench

import (
	"context"
	"testing"
	"time"
)

// TestMeasureOutlastsAStall: when every client is held up for longer than
// the window (the first operation of each, started in the warm-up, ends
// well after the window would), the window lasts until an operation
// started in it has ended, and the phase has a figure rather than none.
func TestMeasureOutlastsAStall(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Warmup, cfg.Duration = 10*time.Millisecond, 50*time.Millisecond
	release := make(chan struct{})
	time.AfterFunc(300*time.Millisecond, func() { close(release) })
	l := load{
		target:    "stalled",
		serverCPU: func() time.Duration { return 0 },
		newOp: func(int) func(uint64) error {
			return func(n uint64) error {
				if n == 0 {
					<-release
				}
				return nil
			}
		},
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res := measure(ctx, &cfg, l, "stall", 2, nil, nil)
	if res.Ops <= 0 || res.Errors != 0 || res.OpsPerSec <= 0 {
		t.Fatalf("%d ops, %d errors, %.0f ops/s over %.3fs: the stall left the phase without a figure", res.Ops, res.Errors, res.OpsPerSec, res.Seconds)
	}
	if res.Seconds < 0.25 {
		t.Fatalf("the window lasted %.3fs, though nothing it started had ended before 0.3s", res.Seconds)
	}
}
