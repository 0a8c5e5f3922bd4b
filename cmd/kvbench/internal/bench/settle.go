package bench

import (
	"context"
	"io"
	"time"
)

// quietCPU is the most CPU, in cores, a server may use over quietWindow to
// count as quiet.
const (
	quietCPU    = 0.05
	quietWindow = 2 * time.Second
)

// waitQuiet waits until the processes whose CPU time cpu returns have used
// less than quietCPU cores over quietWindow (or over maxWait, if shorter):
// their background work (an engine's flushes and compactions, PostgreSQL's
// checkpoints and autovacuum) is done. It gives up after maxWait, or when
// ctx ends. what names them in the progress lines written to log.
func waitQuiet(ctx context.Context, log io.Writer, what string, cpu func() time.Duration, maxWait time.Duration) ScaleSettle {
	window := min(quietWindow, maxWait)
	every := window / 8
	logf(log, "%s: waiting up to %s to go quiet (below %.2f cores over %s)", what, maxWait, quietCPU, window)
	type sample struct {
		t   time.Time
		cpu time.Duration
	}
	start := time.Now()
	cpu0 := cpu()
	samples := []sample{{start, cpu0}}
	st := ScaleSettle{}
	for {
		sleepUntil(ctx, time.Now().Add(every))
		now, c := time.Now(), cpu()
		samples = append(samples, sample{now, c})
		for len(samples) > 1 && now.Sub(samples[1].t) >= window {
			samples = samples[1:]
		}
		if w := now.Sub(samples[0].t); w >= window && (c-samples[0].cpu).Seconds()/w.Seconds() < quietCPU {
			st.Quiet = true
			break
		}
		if now.Sub(start) >= maxWait || ctx.Err() != nil {
			break
		}
	}
	st.Seconds = time.Since(start).Seconds()
	st.ServerCPUSeconds = (cpu() - cpu0).Seconds()
	if st.Quiet {
		logf(log, "%s: quiet after %.1fs (%.1fs of CPU)", what, st.Seconds, st.ServerCPUSeconds)
	} else {
		logf(log, "%s: still busy after %.1fs (%.1fs of CPU); measuring anyway", what, st.Seconds, st.ServerCPUSeconds)
	}
	return st
}
