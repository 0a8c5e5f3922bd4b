package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// measureFsyncs runs kvd on a fresh store under strace, which records every
// fsync and fdatasync with its time, drives put-new with clients clients
// for FsyncDuration after a warm-up, and counts the syncs that started
// within the measured window. strace slows the process, so this pass is
// separate from the throughput measurements and its ops/s mean nothing.
func measureFsyncs(ctx context.Context, cfg *Config, dir string, clients int) (Fsync, error) {
	f := Fsync{Target: TargetKVD, Workload: PutNew, Clients: clients, Method: "strace -f --seccomp-bpf -e trace=fsync,fdatasync"}
	strace, err := exec.LookPath("strace")
	if err != nil {
		f.Note = "strace is not installed, so fsyncs were not counted (apt-get install strace)"
		cfg.logf("%s", f.Note)
		return f, nil
	}
	trace := filepath.Join(dir, fmt.Sprintf("strace-%d.txt", clients))
	tracer := []string{strace, "-f", "--seccomp-bpf", "-ttt", "-qq", "-e", "trace=fsync,fdatasync", "-o", trace, "--"}
	cfg.logf("fsync pass: kvd under strace, put-new at %d clients for %s", clients, cfg.FsyncDuration)
	s, err := startServer(ctx, cfg, dir, TargetKVD, tracer, max(clients, 1))
	if err != nil {
		f.Note = fmt.Sprintf("kvd did not start under strace (%v); fsyncs were not counted", err)
		cfg.logf("%s", f.Note)
		return f, nil
	}
	r := &run{cfg: cfg, s: s, small: newPayload(cfg.ValueSize)}
	if r.mainNS, err = s.createNamespace(ctx, "bench-fsync"); err != nil {
		s.close()
		return f, err
	}
	short := *cfg
	short.Duration = cfg.FsyncDuration
	r.cfg = &short
	res := r.phase(ctx, PutNew, clients, r.op(PutNew), nil)
	if err := s.close(); err != nil {
		// The measured window is over; what strace wrote of it still counts.
		f.Note = fmt.Sprintf("kvd under strace did not stop in time (%v); strace may have lost its last lines", err)
		cfg.logf("%s", f.Note)
	}
	tf, err := os.Open(trace)
	if err != nil {
		return f, err
	}
	defer tf.Close()
	f.Fsync, f.Fdatasync, err = countSyncs(tf, res.from, res.to)
	if err != nil {
		return f, err
	}
	f.Writes = res.Ops
	f.Seconds = res.Seconds
	f.WritesPerSec = res.OpsPerSec
	if f.Writes > 0 {
		f.SyncsPerWrite = float64(f.Fsync+f.Fdatasync) / float64(f.Writes)
	}
	cfg.logf("fsync pass, %d clients: %d acknowledged writes, %d fsync + %d fdatasync = %.3f per write (under strace)",
		clients, f.Writes, f.Fsync, f.Fdatasync, f.SyncsPerWrite)
	return f, nil
}

// countSyncs counts the fsync and fdatasync calls in strace -f -ttt output
// that started between from and to. Lines look like
//
//	4242 1700000000.123456 fdatasync(7) = 0
//	4242 1700000000.123456 fsync(9 <unfinished ...>
//	4243 1700000000.123999 <... fsync resumed>) = 0
//
// and a call split over two lines is counted once, at its start.
func countSyncs(r io.Reader, from, to time.Time) (fsync, fdatasync int64, err error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 3 {
			continue
		}
		ts, call := f[1], f[2]
		if _, perr := strconv.Atoi(f[0]); perr != nil { // no pid column: a single process
			ts, call = f[0], f[1]
		}
		var which *int64
		switch {
		case strings.HasPrefix(call, "fsync("):
			which = &fsync
		case strings.HasPrefix(call, "fdatasync("):
			which = &fdatasync
		default:
			continue
		}
		sec, perr := strconv.ParseFloat(ts, 64)
		if perr != nil {
			continue
		}
		t := time.Unix(0, int64(sec*1e9))
		if !t.Before(from) && t.Before(to) {
			*which++
		}
	}
	return fsync, fdatasync, sc.Err()
}
