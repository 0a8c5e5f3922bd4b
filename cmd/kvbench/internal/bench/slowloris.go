package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// The kinds of slow connection the attacker pool holds; connection i is of
// kind i % slowKinds, so the pool is an even mix.
const (
	// slowIdle connects and sends nothing.
	slowIdle = iota
	// slowHeader sends a request line, then trickles header bytes and never
	// ends the header.
	slowHeader
	// slowBody sends a complete PUT header (valid token, existing
	// namespace, Content-Length 1 MiB), then trickles the body.
	slowBody
	slowKinds
)

var slowKindNames = [slowKinds]string{"idle", "header", "body"}

// slowBodyLength is the Content-Length the body tricklers announce.
const slowBodyLength = maxValue

// headerTrickle is the header text a header trickler repeats, one byte at
// a time; it never sends the blank line that would end the header.
const headerTrickle = "X-Slowloris: 1\r\n"

// slowPoolConfig configures an attacker pool.
type slowPoolConfig struct {
	Addr  string // the target's host:port
	Conns int    // connections to keep open
	// Interval is the time between two trickled writes of a connection
	// (each connection varies it by up to ±25%, so writes spread out).
	Interval time.Duration
	// BodyBytes is how many body bytes a body trickler sends each Interval.
	BodyBytes int
	// HeaderPath is the request target of the header tricklers.
	HeaderPath string
	// BodyPath returns the request target of body trickler i (a key of an
	// existing namespace); Auth is its Authorization header.
	BodyPath func(i int) string
	Auth     string
	// MaxDials bounds the dials in progress at once (0: 64).
	MaxDials int
}

// slowPool keeps Conns slow connections open to a server. A connection
// the server ends (it times out, or answers, e.g. with a 400 or 503) is
// replaced at once by a new one of the same kind, and counted as a
// reconnect.
type slowPool struct {
	cfg    slowPoolConfig
	dialer net.Dialer
	dials  chan struct{} // dial slots
	cancel context.CancelFunc
	wg     sync.WaitGroup
	start  time.Time

	open       atomic.Int64 // connections established and not yet ended
	started    atomic.Int64 // slots that have had a connection open once
	ready      chan struct{}
	rampDur    atomic.Int64 // time from start until every slot was open
	reconnects [slowKinds]atomic.Int64
	dialErrors atomic.Int64

	mu        sync.Mutex
	responses map[int]int64 // status codes of the answers servers sent
	stopOnce  sync.Once
}

// startSlowPool starts the pool's connections; Ready is closed once each
// of them has been open.
func startSlowPool(cfg slowPoolConfig) *slowPool {
	if cfg.Interval <= 0 {
		cfg.Interval = time.Second
	}
	if cfg.BodyBytes <= 0 {
		cfg.BodyBytes = 4
	}
	if cfg.MaxDials <= 0 {
		cfg.MaxDials = 64
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &slowPool{
		cfg:       cfg,
		dialer:    net.Dialer{Timeout: 5 * time.Second},
		dials:     make(chan struct{}, cfg.MaxDials),
		cancel:    cancel,
		start:     time.Now(),
		ready:     make(chan struct{}),
		responses: map[int]int64{},
	}
	if cfg.Conns <= 0 {
		close(p.ready)
	}
	for i := range cfg.Conns {
		p.wg.Go(func() { p.hold(ctx, i) })
	}
	return p
}

// Ready is closed when every connection of the pool has been open at least
// once.
func (p *slowPool) Ready() <-chan struct{} { return p.ready }

// Open returns the connections open now.
func (p *slowPool) Open() int64 { return p.open.Load() }

// Reconnects returns the connections opened to replace one the server
// ended.
func (p *slowPool) Reconnects() int64 {
	var n int64
	for i := range p.reconnects {
		n += p.reconnects[i].Load()
	}
	return n
}

// waitReady waits until the pool is ready, ctx ends or timeout passes.
func (p *slowPool) waitReady(ctx context.Context, timeout time.Duration) error {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-p.ready:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return fmt.Errorf("slowloris: %d of %d connections opened within %s (%d open now, %d dial errors)",
			p.started.Load(), p.cfg.Conns, timeout, p.open.Load(), p.dialErrors.Load())
	}
}

// Stop closes every connection and waits for the pool's goroutines to
// end; it returns the pool's totals.
func (p *slowPool) Stop() SlowStats {
	p.stopOnce.Do(func() {
		p.cancel()
		p.wg.Wait()
	})
	return p.stats()
}

func (p *slowPool) stats() SlowStats {
	st := SlowStats{
		Conns:            p.cfg.Conns,
		Mix:              map[string]int{},
		RampSeconds:      time.Duration(p.rampDur.Load()).Seconds(),
		ReconnectsTotal:  p.Reconnects(),
		ReconnectsByKind: map[string]int64{},
		DialErrors:       p.dialErrors.Load(),
		IntervalSeconds:  p.cfg.Interval.Seconds(),
	}
	for k := range slowKinds {
		st.Mix[slowKindNames[k]] = (p.cfg.Conns + slowKinds - 1 - k) / slowKinds
		st.ReconnectsByKind[slowKindNames[k]] = p.reconnects[k].Load()
	}
	p.mu.Lock()
	if len(p.responses) > 0 {
		st.Responses = map[string]int64{}
		for code, n := range p.responses {
			st.Responses[strconv.Itoa(code)] = n
		}
	}
	p.mu.Unlock()
	return st
}

// hold keeps connection slot i open until ctx ends.
func (p *slowPool) hold(ctx context.Context, i int) {
	kind := i % slowKinds
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), uint64(i)))
	opened := false
	for ctx.Err() == nil {
		c, err := p.connect(ctx, i, kind)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			p.dialErrors.Add(1)
			sleepCtx(ctx, 50*time.Millisecond+time.Duration(rng.Int64N(int64(100*time.Millisecond))))
			continue
		}
		p.open.Add(1)
		if opened {
			p.reconnects[kind].Add(1)
		} else {
			opened = true
			if p.started.Add(1) == int64(p.cfg.Conns) {
				p.rampDur.Store(int64(time.Since(p.start)))
				close(p.ready)
			}
		}
		// Closing the connection when ctx ends wakes a blocked read or
		// write at once.
		stop := context.AfterFunc(ctx, func() { c.Close() })
		p.trickle(ctx, c, kind, rng)
		stop()
		c.Close()
		p.open.Add(-1)
	}
}

// connect dials the target and sends what connection kind sends at once.
func (p *slowPool) connect(ctx context.Context, i, kind int) (net.Conn, error) {
	select {
	case p.dials <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	c, err := p.dialer.DialContext(ctx, "tcp", p.cfg.Addr)
	<-p.dials
	if err != nil {
		return nil, err
	}
	var head string
	switch kind {
	case slowHeader:
		head = "GET " + p.cfg.HeaderPath + " HTTP/1.1\r\nHost: " + p.cfg.Addr + "\r\n"
	case slowBody:
		head = "PUT " + p.cfg.BodyPath(i) + " HTTP/1.1\r\nHost: " + p.cfg.Addr +
			"\r\nAuthorization: " + p.cfg.Auth +
			"\r\nContent-Type: application/octet-stream\r\nContent-Length: " + strconv.Itoa(slowBodyLength) + "\r\n\r\n"
	}
	if head != "" {
		c.SetWriteDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write([]byte(head)); err != nil {
			c.Close()
			return nil, err
		}
	}
	return c, nil
}

// trickle writes connection c's slow bytes until the server ends it (it
// closes the connection or answers) or ctx ends.
func (p *slowPool) trickle(ctx context.Context, c net.Conn, kind int, rng *rand.Rand) {
	iv := p.cfg.Interval
	next := time.Now().Add(time.Duration(rng.Int64N(int64(iv)) + 1))
	buf := make([]byte, 512)
	body := make([]byte, p.cfg.BodyBytes)
	for i := range body {
		body[i] = 'x'
	}
	sent, hdr := 0, 0
	for ctx.Err() == nil {
		if kind == slowIdle {
			c.SetReadDeadline(time.Time{}) // nothing to write: wait for the end
		} else {
			c.SetReadDeadline(next)
		}
		n, err := c.Read(buf)
		if n > 0 {
			// The server answered: the request is over, whatever follows.
			p.recordResponse(buf[:n])
			return
		}
		var ne net.Error
		if err == nil || !errors.As(err, &ne) || !ne.Timeout() {
			return // closed by the server (EOF, reset) or by Stop
		}
		var chunk []byte
		switch kind {
		case slowHeader:
			chunk = []byte{headerTrickle[hdr%len(headerTrickle)]}
			hdr++
		case slowBody:
			// Never the last byte: the body must stay unfinished.
			chunk = body[:min(len(body), slowBodyLength-1-sent)]
			sent += len(chunk)
		}
		if len(chunk) > 0 {
			c.SetWriteDeadline(time.Now().Add(5 * time.Second))
			if _, err := c.Write(chunk); err != nil {
				return
			}
		}
		next = time.Now().Add(iv*3/4 + time.Duration(rng.Int64N(int64(iv)/2+1)))
	}
}

// recordResponse counts the status code of an answer that begins with b.
func (p *slowPool) recordResponse(b []byte) {
	code := 0
	if line, _, _ := strings.Cut(string(b), "\r\n"); strings.HasPrefix(line, "HTTP/") {
		if f := strings.Fields(line); len(f) >= 2 {
			code, _ = strconv.Atoi(f[1])
		}
	}
	p.mu.Lock()
	p.responses[code]++
	p.mu.Unlock()
}

// openWatch samples a pool's open connections over a window.
type openWatch struct {
	done    chan struct{}
	min     int64
	sum     float64
	samples int
	recon   int64 // reconnects within the window
}

// watch samples the open connections every 10ms from from until to, and
// counts the reconnects in between; wait returns the figures.
func (p *slowPool) watch(ctx context.Context, from, to time.Time) *openWatch {
	w := &openWatch{done: make(chan struct{}), min: -1}
	go func() {
		defer close(w.done)
		sleepUntil(ctx, from)
		r0 := p.Reconnects()
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		for {
			n := p.open.Load()
			if w.min < 0 || n < w.min {
				w.min = n
			}
			w.sum += float64(n)
			w.samples++
			if ctx.Err() != nil || !time.Now().Before(to) {
				break
			}
			select {
			case <-ctx.Done():
			case <-t.C:
			}
		}
		w.recon = p.Reconnects() - r0
	}()
	return w
}

// wait waits for the window to end and returns the smallest and mean
// number of open connections sampled in it and the reconnects.
func (w *openWatch) wait() (minOpen int64, avgOpen float64, reconnects int64) {
	<-w.done
	if w.samples == 0 {
		return 0, 0, w.recon
	}
	return w.min, w.sum / float64(w.samples), w.recon
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// slowlorisUse names what needs the descriptors the slowloris workload
// holds, in the errors of raiseFDLimit and checkServerFDs.
const slowlorisUse = "the slowloris workload"

// fdReserve is the file descriptors, besides the attacker's connections
// and the clients', that a process is given room for.
const fdReserve = 256

// raiseFDLimit raises this process's soft RLIMIT_NOFILE to its hard limit
// and checks that it allows need descriptors (all ones is unlimited); what
// needs them, and the flag that lowers the need, go into the error. (The Go
// runtime raises it too, at start, on Linux; kvd and the baseline, being Go
// programs, raise their own.)
func raiseFDLimit(need int, what, flag string) error {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return fmt.Errorf("getrlimit: %w", err)
	}
	if rl.Cur < rl.Max {
		up := rl
		up.Cur = up.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &up); err == nil {
			rl = up
		}
	}
	if rl.Cur != ^uint64(0) && rl.Cur < uint64(need) {
		return fmt.Errorf("%s needs about %d file descriptors in kvbench, but its RLIMIT_NOFILE is %d (hard limit %d): raise the hard limit (ulimit -Hn, limits.conf or the container's nofile) or lower %s", what, need, rl.Cur, rl.Max, flag)
	}
	return nil
}

// procFDLimit returns the soft "Max open files" limit of process pid (-1:
// unlimited).
func procFDLimit(pid int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/limits", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "Max open files")
		if !ok {
			continue
		}
		fs := strings.Fields(rest)
		if len(fs) == 0 {
			break
		}
		if fs[0] == "unlimited" {
			return -1, nil
		}
		return strconv.ParseInt(fs[0], 10, 64)
	}
	return 0, fmt.Errorf("/proc/%d/limits: no Max open files", pid)
}

// checkServerFDs checks that server process pid may hold need descriptors;
// what needs them, and the flag that lowers the need, go into the error.
func checkServerFDs(name string, pid, need int, what, flag string) error {
	lim, err := procFDLimit(pid)
	if err != nil {
		return nil // not Linux, or the process is gone: nothing to check
	}
	if lim >= 0 && lim < int64(need) {
		return fmt.Errorf("%s needs about %d file descriptors in %s (pid %d), but its RLIMIT_NOFILE is %d: raise the hard limit or lower %s", what, need, name, pid, lim, flag)
	}
	return nil
}
