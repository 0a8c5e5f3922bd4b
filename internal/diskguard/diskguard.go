// Package diskguard refuses writes while the file system under a store has
// less free space than a reserve, so that the storage engine never runs out
// of room for its own log, flushes and compactions. Writes resume by
// themselves once space is freed, as etcd's NOSPACE alarm does, but without
// an operator disarming it.
//
// A Guard measures free space in the background, every Interval and at once
// when asked (after a failed write), and keeps the verdict in an atomic
// pointer: Err, which every write calls, costs one atomic load.
package diskguard

import (
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgekv/kv"
)

// DefaultInterval is how often a Guard measures free space by default.
const DefaultInterval = 500 * time.Millisecond

// Config configures a Guard.
type Config struct {
	// Reserve is the free space, in bytes, below which writes are refused.
	Reserve uint64
	// Free returns the bytes available on the file system (to this
	// process: statfs's f_bavail, not counting blocks reserved for root).
	Free func() (uint64, error)
	// Interval is how often free space is measured; 0 means
	// DefaultInterval.
	Interval time.Duration
	// Logger receives one line when writes stop and one when they resume;
	// nil means slog.Default().
	Logger *slog.Logger
}

// Guard refuses writes while free space is below its reserve. Its methods
// are safe for concurrent use.
type Guard struct {
	cfg   Config
	state atomic.Pointer[kv.Error] // nil while there is room
	wake  chan struct{}
	stop  chan struct{}
	done  chan struct{}
	once  sync.Once

	// Only the measuring goroutine (or New, before it starts) touches these.
	refusing   bool
	statFailed bool
}

// New returns a Guard that has measured free space once, and measures it
// again in the background until Close.
func New(cfg Config) *Guard {
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	g := &Guard{cfg: cfg, wake: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	g.measure()
	go g.run()
	return g
}

// Err returns nil while writes may proceed, and otherwise an error of code
// kv.EInsufficientStorage that names the free space and the reserve.
func (g *Guard) Err() error {
	if e := g.state.Load(); e != nil {
		return e
	}
	return nil
}

// Check asks for free space to be measured now, without waiting for it;
// a write that failed calls it so that the writes after it are refused at
// once if the disk is full.
func (g *Guard) Check() {
	select {
	case g.wake <- struct{}{}:
	default: // a measurement is already due
	}
}

// Close stops the measurements. Err keeps its last verdict.
func (g *Guard) Close() {
	g.once.Do(func() { close(g.stop) })
	<-g.done
}

func (g *Guard) run() {
	defer close(g.done)
	t := time.NewTicker(g.cfg.Interval)
	defer t.Stop()
	for {
		select {
		case <-g.stop:
			return
		case <-t.C:
		case <-g.wake:
		}
		g.measure()
	}
}

// measure takes one measurement and updates the verdict. A file system that
// cannot be measured keeps the last verdict, and is logged once.
func (g *Guard) measure() {
	free, err := g.cfg.Free()
	if err != nil {
		if !g.statFailed {
			g.statFailed = true
			g.cfg.Logger.Warn("kvd: cannot measure the store's free space; keeping the last verdict", "err", err.Error())
		}
		return
	}
	g.statFailed = false
	if free >= g.cfg.Reserve {
		g.state.Store(nil)
		if g.refusing {
			g.refusing = false
			g.cfg.Logger.Info("kvd: the store's disk has room again: writes are accepted", "free", Bytes(free), "reserve", Bytes(g.cfg.Reserve))
		}
		return
	}
	g.state.Store(kv.Errorf(kv.EInsufficientStorage,
		"The store's disk has %s free, less than the %s kvd keeps in reserve; writes are refused until space is freed (reads and deletes still work)",
		Bytes(free), Bytes(g.cfg.Reserve)))
	if !g.refusing {
		g.refusing = true
		g.cfg.Logger.Warn("kvd: the store's disk is nearly full: writes are refused until space is freed", "free", Bytes(free), "reserve", Bytes(g.cfg.Reserve))
	}
}

// Bytes formats a size for people: "0 B", "512 B", "1.5 MiB", "128 MiB".
func Bytes(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	v, i := float64(n)/unit, 0
	for v >= unit && i < 5 {
		v /= unit
		i++
	}
	s := fmt.Sprintf("%.1f", v)
	if len(s) > 2 && s[len(s)-2:] == ".0" {
		s = s[:len(s)-2]
	}
	return s + " " + []string{"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"}[i]
}
