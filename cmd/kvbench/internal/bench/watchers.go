package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// The watchers run in a process of their own, kvbench watchers, which the
// watch mode starts and drives over its standard input and output: ten
// thousand goroutines woken by every change would otherwise hold up, in
// kvbench's own scheduler, the clients whose throughput the mode
// measures, and the writer whose rate it sets. Both processes time
// events on the system's monotonic clock (monoNow).
//
// The protocol is a line each way per step. kvbench watch sends a
// watchersSpec as JSON; the watchers process opens the streams and
// answers a watchersReply once every one is ready (or not). Then each
// command line gets one reply line:
//
//	periods T0 T1       PUTs sent from T0 count toward the measured window, from T1 toward the loaded period
//	drain NANOS ACKED   wait up to NANOS until every stream has the writes acknowledged under its prefix; reply Drained
//	close ACKED         close the streams; reply the counts and latencies, then exit
//
// ACKED is the writes acknowledged under each prefix, in decimal, separated
// by commas.
//
// The process also exits, closing its streams, when its input ends.

// watchersSpec is what the watchers process opens.
type watchersSpec struct {
	Servers   []watchersServer `json:"servers"` // watcher i watches on server i % len
	Namespace string           `json:"namespace"`
	Watchers  int              `json:"watchers"`
	// Prefixes: watcher i watches w/(i mod Prefixes)/, or, with 1, the
	// whole namespace (see WatchConfig.Prefixes).
	Prefixes int `json:"prefixes"`
	// OpenNanos bounds the time until every watcher is ready.
	OpenNanos int64 `json:"open_nanos"`
}

type watchersServer struct {
	Name string `json:"name"`
	Base string `json:"base"` // http://host:port
	Auth string `json:"auth"` // Authorization header value
}

// watchersReply is the watchers process's answer to a step.
type watchersReply struct {
	Error         string        `json:"error,omitempty"`
	Ready         int           `json:"ready"`
	Drained       bool          `json:"drained,omitempty"`
	Events        *WatchEvents  `json:"events,omitempty"`
	Latency       *WatchLatency `json:"latency,omitempty"`
	LatencyLoaded *WatchLatency `json:"latency_loaded,omitempty"`
}

// The periods a PUT's delivery latency counts toward, by the time it was
// sent.
const (
	periodWindow = iota // the measured window
	periodLoaded        // after it: get-hit and put-new run
	periods
)

// latencyShards spreads the watchers' latency histograms, so that a
// watcher recording its samples seldom waits for another.
const latencyShards = 64

// latencyBatch is the samples a watcher keeps before it records them.
const latencyBatch = 64

// watchSet is the open watchers of a run.
type watchSet struct {
	// from holds the periods' starts (monoNow); 0 is not yet known, and
	// a sample recorded before it is known is warm-up.
	from     [periods]atomic.Int64
	shards   [latencyShards]latencyShard
	ws       []*watcher
	stopping atomic.Bool
	wg       sync.WaitGroup
}

type latencyShard struct {
	mu sync.Mutex
	h  [periods]Histogram
}

// watcher is one watch stream.
type watcher struct {
	set    *watchSet
	shard  *latencyShard
	prefix int // the prefix whose writes it expects
	conn   atomic.Pointer[net.Conn]
	ready  atomic.Bool
	got    atomic.Int64 // distinct writes received
	done   atomic.Bool  // the stream has ended

	// Set by the watcher's goroutine, read once it has ended.
	stamp       *stampConn // the stream's connection, which knows when it last read
	dups, other int64
	last        uint64
	overflow    bool
	endErr      error
	samples     [latencyBatch]latencySample
	n           int
}

// latencySample is one write's send time and delivery latency, in
// nanoseconds.
type latencySample struct{ sent, lat int64 }

// openWatchers opens spec.Watchers watches, watcher i on server i %
// len(spec.Servers), and waits until each has received its ready event.
// It fails when a watch could not be opened, or not all were ready in
// time; the set returned must be closed in every case.
func openWatchers(ctx context.Context, spec watchersSpec) (*watchSet, error) {
	n, timeout := spec.Watchers, time.Duration(spec.OpenNanos)
	set := &watchSet{ws: make([]*watcher, n)}
	var ready sync.WaitGroup
	var failed atomic.Int64
	var firstErr atomic.Value
	sem := make(chan struct{}, watchOpens)
	for i := range n {
		w := &watcher{set: set, shard: &set.shards[i%latencyShards], prefix: i % spec.Prefixes}
		set.ws[i] = w
		s := spec.Servers[i%len(spec.Servers)]
		path := "/v2/storage/kvs/" + spec.Namespace + "/watch"
		if spec.Prefixes > 1 {
			path += "?prefix=" + url.QueryEscape(watchPrefix(w.prefix))
		}
		ready.Add(1)
		set.wg.Go(func() {
			defer w.done.Store(true)
			sem <- struct{}{}
			sr, err := w.open(s, path, timeout)
			<-sem
			if err != nil {
				if !set.stopping.Load() {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, fmt.Sprintf("%s: %v", s.Name, err))
				}
				w.endErr = err
				ready.Done()
				return
			}
			w.ready.Store(true)
			ready.Done()
			w.follow(sr)
		})
	}
	allReady := make(chan struct{})
	go func() { ready.Wait(); close(allReady) }()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-allReady:
	case <-t.C:
		return set, fmt.Errorf("%d of %d watchers ready after %s", set.ready(), n, timeout)
	case <-ctx.Done():
		return set, ctx.Err()
	}
	if f := failed.Load(); f > 0 {
		return set, fmt.Errorf("%d of %d watches could not be opened; first: %s", f, n, firstErr.Load())
	}
	return set, nil
}

// open opens w's stream on server s: a GET of path on a connection of its
// own, read up to its ready event.
func (w *watcher) open(s watchersServer, path string, timeout time.Duration) (*sseReader, error) {
	u, err := url.Parse(s.Base)
	if err != nil {
		return nil, err
	}
	c, err := net.DialTimeout("tcp", u.Host, 10*time.Second)
	if err != nil {
		return nil, err
	}
	w.conn.Store(&c)
	if w.set.stopping.Load() { // closeConns may have missed c
		c.Close()
		return nil, net.ErrClosed
	}
	c.SetDeadline(time.Now().Add(timeout))
	req := "GET " + path + " HTTP/1.1\r\nHost: " + u.Host + "\r\nAuthorization: " + s.Auth + "\r\nAccept: text/event-stream\r\n\r\n"
	if _, err := io.WriteString(c, req); err != nil {
		return nil, err
	}
	sc := &stampConn{Conn: c}
	resp, err := http.ReadResponse(bufio.NewReaderSize(sc, 8<<10), nil)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return nil, fmt.Errorf("watch: %s: %s", resp.Status, strings.TrimSpace(string(b)))
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
		return nil, fmt.Errorf("watch: Content-Type %q, want text/event-stream", ct)
	}
	sr := &sseReader{br: bufio.NewReaderSize(resp.Body, 4<<10)}
	var ev sseEvent
	if err := sr.next(&ev); err != nil {
		return nil, fmt.Errorf("watch: before its ready event: %w", err)
	}
	if ev.kind != sseReady {
		return nil, fmt.Errorf("watch: the first event is not ready (kind %d)", ev.kind)
	}
	c.SetDeadline(time.Time{})
	w.stamp = sc
	return sr, nil
}

// follow reads w's stream until it ends or the set is closed.
func (w *watcher) follow(sr *sseReader) {
	defer w.flush()
	var ev sseEvent
	for {
		if err := sr.next(&ev); err != nil {
			if !w.set.stopping.Load() {
				w.endErr = err
			}
			return
		}
		switch {
		case ev.kind == sseOverflow:
			w.overflow = true
			return
		case ev.kind != ssePut || !ev.hasSent || !ev.hasRev:
			w.other++
		case ev.rev <= w.last:
			w.dups++
		default:
			w.last = ev.rev
			w.got.Add(1)
			w.samples[w.n] = latencySample{ev.sent, w.stamp.at - ev.sent}
			if w.n++; w.n == len(w.samples) {
				w.flush()
			}
		}
	}
}

// flush records w's samples in its shard's histograms.
func (w *watcher) flush() {
	if w.n == 0 {
		return
	}
	var from [periods]int64
	for i := range from {
		from[i] = w.set.from[i].Load()
	}
	w.shard.mu.Lock()
	for _, s := range w.samples[:w.n] {
		if p := periodOf(s.sent, from); p >= 0 {
			w.shard.h[p].Record(time.Duration(s.lat))
		}
	}
	w.shard.mu.Unlock()
	w.n = 0
}

// periodOf returns the period a PUT sent at sent counts toward, or -1
// for none (the warm-up): from holds the periods' starts, 0 for not yet
// known.
func periodOf(sent int64, from [periods]int64) int {
	switch {
	case from[periodWindow] == 0 || sent < from[periodWindow]:
		return -1
	case from[periodLoaded] != 0 && sent >= from[periodLoaded]:
		return periodLoaded
	default:
		return periodWindow
	}
}

// ready returns the watchers that received their ready event.
func (s *watchSet) ready() int {
	n := 0
	for _, w := range s.ws {
		if w != nil && w.ready.Load() {
			n++
		}
	}
	return n
}

// waitDelivered waits until every watcher still following its stream has
// received the writes acked under its prefix, or timeout passes; it
// reports whether they all had.
func (s *watchSet) waitDelivered(ctx context.Context, acked []int64, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for {
		all := true
		for _, w := range s.ws {
			if !w.done.Load() && w.got.Load() < acked[w.prefix] {
				all = false
				break
			}
		}
		if all || time.Now().After(deadline) || ctx.Err() != nil {
			return all
		}
		sleepUntil(ctx, time.Now().Add(20*time.Millisecond))
	}
}

// close ends every stream and waits for the watchers to finish.
func (s *watchSet) close() {
	s.stopping.Store(true)
	for _, w := range s.ws {
		if c := w.conn.Load(); c != nil {
			(*c).Close()
		}
	}
	s.wg.Wait()
}

// tally counts the events of the closed set against the writes acked
// under each prefix.
func (s *watchSet) tally(acked []int64) WatchEvents {
	var v WatchEvents
	for _, w := range s.ws {
		if !w.ready.Load() {
			continue
		}
		got, acked := w.got.Load(), acked[w.prefix]
		v.Expected += acked
		v.Received += got
		v.Missing += max(0, acked-got)
		v.BeyondAcked += max(0, got-acked)
		v.Duplicated += w.dups
		v.Other += w.other
		switch {
		case w.overflow:
			v.Overflows++
		case w.endErr != nil:
			v.EndedEarly++
			if v.FirstEnd == "" {
				v.FirstEnd = w.endErr.Error()
			}
		}
	}
	return v
}

// latency returns the delivery latency of the writes sent in period p.
func (s *watchSet) latency(p int) WatchLatency {
	var h Histogram
	for i := range s.shards {
		h.Merge(&s.shards[i].h[p])
	}
	return WatchLatency{
		Events: int64(h.Count()),
		P50us:  us(h.Quantile(0.50)), P90us: us(h.Quantile(0.90)), P99us: us(h.Quantile(0.99)),
		MaxUs: us(h.Max()), MeanUs: us(h.Mean()),
	}
}

// ServeWatchers is the watchers process (kvbench watchers): it reads a
// watchersSpec from in, opens the streams, and follows the commands that
// come after it, answering each on out (see the protocol above).
func ServeWatchers(ctx context.Context, in io.Reader, out io.Writer) error {
	lines := bufio.NewScanner(in)
	lines.Buffer(nil, 64<<20) // a count for each of up to a million prefixes
	enc := json.NewEncoder(out)
	if !lines.Scan() {
		return errors.New("bench: watchers: no spec on the input")
	}
	var spec watchersSpec
	if err := json.Unmarshal(lines.Bytes(), &spec); err != nil {
		return fmt.Errorf("bench: watchers: spec: %w", err)
	}
	if spec.Watchers < 1 || len(spec.Servers) == 0 || spec.OpenNanos <= 0 || spec.Prefixes < 1 {
		return fmt.Errorf("bench: watchers: spec %+v: no watchers, servers, prefixes or open time", spec)
	}
	if err := raiseFDLimit(spec.Watchers+fdReserve, watchUse, "--watchers"); err != nil {
		enc.Encode(watchersReply{Error: err.Error()})
		return err
	}
	set, err := openWatchers(ctx, spec)
	defer set.close()
	rep := watchersReply{Ready: set.ready()}
	if err != nil {
		rep.Error = err.Error()
	}
	if err := enc.Encode(rep); err != nil || rep.Error != "" {
		return err
	}
	for lines.Scan() {
		// Every argument is a list of decimals separated by commas: one
		// for a time, one per prefix for the writes acknowledged.
		f := strings.Fields(lines.Text())
		args := make([][]int64, max(len(f)-1, 0))
		for i := range args {
			if args[i], err = parseCounts(f[i+1]); err != nil {
				return fmt.Errorf("bench: watchers: command %.80q: %w", lines.Text(), err)
			}
		}
		perPrefix := func(a []int64) bool { return len(a) == spec.Prefixes }
		rep := watchersReply{Ready: set.ready()}
		switch {
		case len(f) == 3 && f[0] == "periods":
			set.from[periodWindow].Store(args[0][0])
			set.from[periodLoaded].Store(args[1][0])
		case len(f) == 3 && f[0] == "drain" && perPrefix(args[1]):
			rep.Drained = set.waitDelivered(ctx, args[1], time.Duration(args[0][0]))
		case len(f) == 2 && f[0] == "close" && perPrefix(args[0]):
			set.close()
			ev, lat, loaded := set.tally(args[0]), set.latency(periodWindow), set.latency(periodLoaded)
			rep.Events, rep.Latency, rep.LatencyLoaded = &ev, &lat, &loaded
			return enc.Encode(rep)
		default:
			return fmt.Errorf("bench: watchers: unknown command %.80q (of %d prefixes)", lines.Text(), spec.Prefixes)
		}
		if err := enc.Encode(rep); err != nil {
			return err
		}
	}
	return lines.Err()
}

// parseCounts parses decimals separated by commas.
func parseCounts(s string) ([]int64, error) {
	parts := strings.Split(s, ",")
	n := make([]int64, len(parts))
	for i, p := range parts {
		var err error
		if n[i], err = strconv.ParseInt(p, 10, 64); err != nil {
			return nil, err
		}
	}
	return n, nil
}

// watchersProc is a running watchers process.
type watchersProc struct {
	cmd     *exec.Cmd
	in      io.WriteCloser
	out     *json.Decoder
	logPath string
}

// startWatchers starts the watchers process argv (e.g. {kvbench,
// "watchers"}), its errors logged to logPath, sends it spec and waits for
// its first reply: every watcher ready, or why not.
func startWatchers(argv []string, spec watchersSpec, logPath string) (*watchersProc, watchersReply, error) {
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, watchersReply{}, err
	}
	defer logf.Close() // the child has its own copy
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stderr = logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // as startProc's children
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, watchersReply{}, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, watchersReply{}, err
	}
	if err := cmd.Start(); err != nil {
		return nil, watchersReply{}, fmt.Errorf("start %s: %w", argv[0], err)
	}
	p := &watchersProc{cmd: cmd, in: in, out: json.NewDecoder(out), logPath: logPath}
	b, _ := json.Marshal(spec)
	rep, err := p.roundTrip(string(b))
	if err == nil && rep.Error != "" {
		err = errors.New(rep.Error)
	}
	return p, rep, err
}

// call sends a command and returns its reply.
func (p *watchersProc) call(format string, args ...any) (watchersReply, error) {
	return p.roundTrip(fmt.Sprintf(format, args...))
}

func (p *watchersProc) roundTrip(line string) (watchersReply, error) {
	var rep watchersReply
	if _, err := io.WriteString(p.in, line+"\n"); err != nil {
		return rep, fmt.Errorf("watchers process: %w: %s", err, p.logTail())
	}
	if err := p.out.Decode(&rep); err != nil {
		return rep, fmt.Errorf("watchers process: %w: %s", err, p.logTail())
	}
	return rep, nil
}

func (p *watchersProc) pid() int { return p.cmd.Process.Pid }

// logTail returns the end of the process's error output.
func (p *watchersProc) logTail() string {
	b, _ := os.ReadFile(p.logPath)
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return strings.TrimSpace(string(b))
}

// stop ends the process: closing its input closes its streams; it is
// killed if it has not exited within grace.
func (p *watchersProc) stop(grace time.Duration) {
	p.in.Close()
	done := make(chan struct{})
	go func() { p.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(grace):
		p.cmd.Process.Kill()
		<-done
	}
}
