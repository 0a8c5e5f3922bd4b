package service

import (
	"context"
	"errors"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgekv/kv"
	"github.com/edgekv/kv/internal/store"
)

// Watching: how a namespace's change feed reaches many watchers.
//
// Each namespace that has watchers in this process has one tail: a
// goroutine that follows the namespace's feed in the store (WaitHead, then
// ReadChanges) and keeps the latest changes in a ring shared by every
// watcher of the namespace. A watcher reads the ring at its own pace from
// its own position; the store is read once per change, whatever the
// number of watchers. The ring is published as an immutable view that
// watchers read without a lock: ten thousand watchers woken by one change
// would otherwise queue on the tail's mutex, one at a time. A watcher
// whose position is older than the ring (it resumed from an older
// revision, or fell behind by more than the ring holds) reads the store
// itself until it reaches the ring, holding one of a few catch-up slots;
// one that waits too long for a slot is sent an overflow event and
// closed, and resumes with since.
//
// Every event is encoded once, in the tail, and the same bytes go to
// every watcher that wants them.
//
// The watchers of a tail are grouped by the prefix they watch. Each group
// has its own view of the ring, only the changes under its prefix, and a
// change wakes only the groups it is under: ten thousand caches of one
// namespace that each follow their own part of it are neither all woken
// by every change nor each made to look through the others' changes. A
// group's view starts after the last change under its prefix that the
// ring dropped, so a watcher the ring has moved past while nothing under
// its prefix changed still reads on from its view, not from the store.
//
// A change wakes the watchers it concerns, and each then writes to
// its socket. So that ten thousand of them do not hold up, at every step,
// each other and every other request of the process (the PUTs among them
// that feed the watchers), a watcher writes only while it holds one of a
// few delivery slots, from reading the ring until it asks for more, and
// waits for one parked; one whose write blocks (a slow reader) keeps its
// slot to itself only briefly. And a tail of many watchers pauses after
// each view it publishes (publishPause), so that a namespace written to
// faster than its watchers can be woken wakes them once for several
// changes.

// EventKind is what a watch event says.
type EventKind uint8

const (
	EventPut      EventKind = EventKind(store.ChangePut)
	EventDelete   EventKind = EventKind(store.ChangeDelete)
	EventExpire   EventKind = EventKind(store.ChangeExpire)
	EventReady    EventKind = 10 // the snapshot (or the start) is complete at Revision
	EventOverflow EventKind = 11 // the watcher fell behind and is closed
)

func (k EventKind) String() string {
	switch k {
	case EventReady:
		return "ready"
	case EventOverflow:
		return "overflow"
	}
	return store.ChangeKind(k).String()
}

// Event is one event of a watch. Its encoding is cached: Frame.
type Event struct {
	Kind   EventKind
	Change store.Change // Revision for every kind; the rest for changes

	frames [2]atomic.Pointer[[]byte] // without and with the value
}

// Frame returns the event encoded by enc (values: with its value, when it
// has one), encoding it only the first time.
func (e *Event) Frame(values bool, enc func(e *Event, values bool) []byte) []byte {
	i := 0
	if values && e.Change.HasValue {
		i = 1
	}
	if f := e.frames[i].Load(); f != nil {
		return *f
	}
	f := enc(e, i == 1)
	e.frames[i].Store(&f)
	return f
}

// WatchOptions are a watch's parameters (see API.md, "Watch").
type WatchOptions struct {
	Prefix string
	// Since, when HasSince, is the revision after which changes are sent.
	Since    store.Revision
	HasSince bool
	// Snapshot: first every live key, as of a revision, then the changes
	// after it.
	Snapshot bool
	// Values: put events carry values up to store.MaxChangeValue.
	Values bool
}

// The bounds of watching.
const (
	// ringEvents and ringBytes bound a namespace's ring of recent changes.
	ringEvents = 4096
	ringBytes  = 16 << 20
	// catchUpSlots bounds the watchers reading the store at once;
	// catchUpWait is how long a watcher waits for a slot before it is
	// sent an overflow.
	catchUpSlots = 32
	catchUpWait  = 10 * time.Second
	// snapshotSlots bounds the snapshots being sent at once; a watch that
	// waits longer than snapshotWait for one is refused with a 503.
	snapshotSlots = 8
	snapshotWait  = 5 * time.Second
	// eventBatch is the most events Next returns at once.
	eventBatch = 256
	// deliverySlotsPerCPU bounds, per CPU, the watchers delivering at
	// once; deliveryHold is how long one keeps its slot to itself.
	deliverySlotsPerCPU = 8
	deliveryHold        = 10 * time.Millisecond
	// wakeCost is about what waking one watcher for a view costs (its
	// turn at a delivery slot, the ring read, a write to its socket);
	// maxPublishPause bounds the pause that it sets, see publishPause.
	wakeCost        = 2500 * time.Nanosecond
	maxPublishPause = 25 * time.Millisecond
	// recheckTail is how often a tail reads its namespace when nothing
	// changes, to see whether it is still there.
	recheckTail = time.Second
	// clockTick is the period of the clock that ends the waits of
	// watchers with nothing to send; the watchers are spread over
	// clockPhases phases of it, so that ten thousand of them do not all
	// wake at once.
	clockTick   = time.Second
	clockPhases = 16
	// slowRounds: a phase's slow channel is closed at every slowRounds-th
	// tick of it, for the waits of slowTick or more (a stream that has
	// only its pings and its checks of the client to make).
	slowRounds = 5
	slowTick   = slowRounds * clockTick
)

// watchClock ends the waits of watchers (Next's wait) without a timer of
// each their own: ten thousand timers made and stopped every second would
// cost more than the watchers' own work. Phase i's channel is closed, and
// replaced, once every clockTick, at offset i/clockPhases of it, and its
// slow channel once every slowTick. It runs while there are watchers.
type watchClock struct {
	phases [clockPhases]atomic.Pointer[chan struct{}]
	slow   [clockPhases]atomic.Pointer[chan struct{}]
	next   atomic.Uint32 // the phase of the next watcher
	stop   chan struct{} // under watchHub.mu; nil while stopped
}

// start starts the clock; the caller holds watchHub.mu.
func (c *watchClock) start() {
	if c.stop != nil {
		return
	}
	for i := range c.phases {
		for _, p := range []*atomic.Pointer[chan struct{}]{&c.phases[i], &c.slow[i]} {
			if p.Load() == nil {
				ch := make(chan struct{})
				p.Store(&ch)
			}
		}
	}
	stop := make(chan struct{})
	c.stop = stop
	go func() {
		t := time.NewTicker(clockTick / clockPhases)
		defer t.Stop()
		for n := 0; ; n++ {
			select {
			case <-stop:
				return
			case <-t.C:
			}
			i := n % clockPhases
			ch := make(chan struct{})
			close(*c.phases[i].Swap(&ch))
			if n/clockPhases%slowRounds == 0 {
				ch := make(chan struct{})
				close(*c.slow[i].Swap(&ch))
			}
		}
	}()
}

// halt stops the clock; the caller holds watchHub.mu.
func (c *watchClock) halt() {
	if c.stop != nil {
		close(c.stop)
		c.stop = nil
	}
}

// tick returns the channel that phase's next tick closes, or for a wait
// of slowTick or more its next slow tick.
func (c *watchClock) tick(phase int, wait time.Duration) <-chan struct{} {
	if wait >= slowTick {
		return *c.slow[phase].Load()
	}
	return *c.phases[phase].Load()
}

// watchHub holds the tails of the namespaces being watched.
type watchHub struct {
	mu       sync.Mutex
	tails    map[tailKey]*nsTail
	catchUp  chan struct{}
	snapshot chan struct{}
	deliver  chan struct{} // the delivery slots
	clock    watchClock

	// The bounds above, as this hub applies them (tests make them small).
	ringEvents, ringBytes int
	catchUpWait           time.Duration

	// Counts since the process started, for WatchStats.
	events    atomic.Int64 // put, delete and expire events handed out, snapshots' included
	overflows atomic.Int64 // watchers sent an overflow
	catchUps  atomic.Int64 // reads of the store by watchers the ring had left behind
}

type tailKey struct {
	org string
	ns  kv.ID
}

func newWatchHub() *watchHub {
	return &watchHub{tails: map[tailKey]*nsTail{}, catchUp: make(chan struct{}, catchUpSlots), snapshot: make(chan struct{}, snapshotSlots),
		deliver:    make(chan struct{}, max(16, deliverySlotsPerCPU*runtime.GOMAXPROCS(0))),
		ringEvents: ringEvents, ringBytes: ringBytes, catchUpWait: catchUpWait}
}

// WatchStats is what the watches of this process are, and have done
// since it started.
type WatchStats struct {
	Watchers   int64 // open watches
	Namespaces int64 // namespaces they watch (tails)
	Events     int64 // put, delete and expire events handed to watchers (snapshots included)
	Overflows  int64 // watchers that fell too far behind and were closed
	CatchUps   int64 // reads of the store by watchers behind the shared ring
}

// WatchStats returns the watches open in this process now.
func (s *Service) WatchStats() WatchStats {
	h := s.watches
	h.mu.Lock()
	defer h.mu.Unlock()
	st := WatchStats{Namespaces: int64(len(h.tails)), Events: h.events.Load(), Overflows: h.overflows.Load(), CatchUps: h.catchUps.Load()}
	for _, t := range h.tails {
		st.Watchers += t.users.Load()
	}
	return st
}

// freeSlot gives back a delivery slot.
func (h *watchHub) freeSlot() { <-h.deliver }

// nsTail follows one namespace's feed for the watchers of this process.
type nsTail struct {
	hub    *watchHub
	key    tailKey
	feed   store.Changes
	cancel context.CancelFunc
	// users is the tail's watchers; it changes under watchHub.mu.
	users atomic.Int64

	// view is the ring now; only the tail's goroutine publishes views.
	view atomic.Pointer[ringView]

	// mu guards groups and lens, and orders a group's start against
	// the views published meanwhile.
	mu sync.Mutex
	// groups is the watchers by the prefix they watch; lens is the
	// lengths of those prefixes, in increasing order, and ofLen how many
	// have each.
	groups map[string]*prefixGroup
	lens   []int
	ofLen  map[int]int
	gen    uint64 // marks the groups one call of add changes
}

// prefixGroup is the watchers of a tail that watch one prefix.
type prefixGroup struct {
	prefix string
	// Under nsTail.mu: the watchers; the call of add that last changed
	// the group, with the view it is making and whether it wakes them.
	users int
	mark  uint64
	next  *groupView
	woken bool
	// view is the group's part of the ring now; only the tail's
	// goroutine publishes views, as it does the ring's.
	view atomic.Pointer[groupView]
	// wake is closed, and replaced, when a view with a change under the
	// prefix is published, or the feed ends.
	wake atomic.Pointer[chan struct{}]
}

// groupView is a group's part of a ringView: its changes, in order, and
// the revision after which it holds every change under the prefix that
// the ring has (base: the last one the ring dropped, or the ring's base
// when the group began). A view is never changed once published; it
// shares its array with its predecessor as ringView does.
type groupView struct {
	events []*Event
	base   store.Revision
	// dead is the slots before events in its array: changes the ring
	// dropped, which the array still holds (and keeps from the garbage
	// collector, values and all) until the view moves to a new one.
	dead int
}

// ringView is a tail's ring as of one moment. A view is never changed
// once published. A newer view shares its predecessor's array: it only
// appends past the predecessor's end, where no published view reads, and
// drops from the front by slicing.
type ringView struct {
	// events holds the latest changes, those after base, in order.
	events []*Event
	bytes  int
	base   store.Revision
	err    error // the feed ended: the namespace is gone or not ready
}

// join returns the tail of ns, started at the feed's head if it was not
// running, and the group of prefix in it. The caller must leave them.
func (h *watchHub) join(feed store.Changes, org string, ns kv.ID, head store.Revision, prefix string) (*nsTail, *prefixGroup) {
	h.mu.Lock()
	defer h.mu.Unlock()
	k := tailKey{org, ns}
	t := h.tails[k]
	if t == nil {
		ctx, cancel := context.WithCancel(context.Background())
		t = &nsTail{hub: h, key: k, feed: feed, cancel: cancel, groups: map[string]*prefixGroup{}, ofLen: map[int]int{}}
		t.view.Store(&ringView{base: head})
		h.tails[k] = t
		h.clock.start()
		go t.run(ctx, head)
	}
	t.users.Add(1)
	return t, t.joinGroup(prefix)
}

func (h *watchHub) leave(t *nsTail, g *prefixGroup) {
	h.mu.Lock()
	defer h.mu.Unlock()
	t.leaveGroup(g)
	if t.users.Add(-1) == 0 {
		t.cancel()
		if h.tails[t.key] == t {
			delete(h.tails, t.key)
		}
		if len(h.tails) == 0 {
			h.clock.halt()
		}
	}
}

func (t *nsTail) joinGroup(prefix string) *prefixGroup {
	t.mu.Lock()
	defer t.mu.Unlock()
	g := t.groups[prefix]
	if g == nil {
		g = &prefixGroup{prefix: prefix}
		c := make(chan struct{})
		g.wake.Store(&c)
		// What the ring dropped before now is unknown to the group: any
		// of it may have been under the prefix.
		v := t.view.Load()
		gv := &groupView{base: v.base}
		for _, e := range v.events {
			if strings.HasPrefix(e.Change.Key, prefix) {
				gv.events = append(gv.events, e)
			}
		}
		g.view.Store(gv)
		t.groups[prefix] = g
		if t.ofLen[len(prefix)]++; t.ofLen[len(prefix)] == 1 {
			i, _ := slices.BinarySearch(t.lens, len(prefix))
			t.lens = slices.Insert(t.lens, i, len(prefix))
		}
	}
	g.users++
	return g
}

func (t *nsTail) leaveGroup(g *prefixGroup) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if g.users--; g.users == 0 && t.groups[g.prefix] == g {
		delete(t.groups, g.prefix)
		n := len(g.prefix)
		if t.ofLen[n]--; t.ofLen[n] == 0 {
			delete(t.ofLen, n)
			if i, ok := slices.BinarySearch(t.lens, n); ok {
				t.lens = slices.Delete(t.lens, i, i+1)
			}
		}
	}
}

// groupsOf calls fn for each group whose prefix key is under; the caller
// holds mu.
func (t *nsTail) groupsOf(key string, fn func(*prefixGroup)) {
	for _, l := range t.lens {
		if l > len(key) {
			return
		}
		if g := t.groups[key[:l]]; g != nil {
			fn(g)
		}
	}
}

// wakeUp wakes the watchers of g.
func (g *prefixGroup) wakeUp() {
	c := make(chan struct{})
	close(*g.wake.Swap(&c))
}

// run reads the feed, from pos on, into the ring until ctx ends or the
// namespace goes.
func (t *nsTail) run(ctx context.Context, pos store.Revision) {
	backoff := 50 * time.Millisecond
	hint, _ := t.feed.(store.ChangeHint)
	var read time.Time // the last read of the store
	for ctx.Err() == nil {
		read = time.Now()
		changes, head, err := t.feed.ReadChanges(ctx, t.key.org, t.key.ns, "", pos, eventBatch, true)
		switch {
		case err == nil:
			backoff = 50 * time.Millisecond
		case ctx.Err() != nil:
			return
		case feedEnded(err):
			t.end(err)
			return
		default: // the store is unavailable for now: try again
			if !sleepCtx(ctx, backoff) {
				return
			}
			backoff = min(2*backoff, 2*time.Second)
			continue
		}
		pos = readUpTo(pos, changes, head)
		woken := t.add(changes)
		if len(changes) == eventBatch {
			continue
		}
		if woken > 0 && !sleepCtx(ctx, publishPause(woken)) {
			return
		}
		// The wait is bounded so that the namespace is read again at
		// least every recheckTail even when nothing changes: a namespace
		// deleted meanwhile ends its watches.
		// One deadline for the waits until the next read: the head of
		// a busy engine moves thousands of times a second, and a timer
		// for each wait would cost more than the wait.
		wctx, cancel := context.WithDeadline(ctx, read.Add(recheckTail))
		for {
			head, err := t.feed.WaitHead(wctx, pos)
			if err != nil {
				if ctx.Err() == nil && !errors.Is(err, context.DeadlineExceeded) && !sleepCtx(ctx, backoff) {
					cancel()
					return
				}
				break
			}
			// The head moved; unless the namespace has a change below it,
			// another namespace's change moved it: wait on (until it is
			// time to see that the namespace is still there).
			if last, ok := changeHint(hint, t.key); ok && last <= pos {
				pos = head
				continue
			}
			break
		}
		cancel()
	}
}

// changeHint asks hint, if the engine gives one, for the last revision
// taken for a change of the namespace k.
func changeHint(hint store.ChangeHint, k tailKey) (store.Revision, bool) {
	if hint == nil {
		return 0, false
	}
	return hint.LastRevisionTaken(k.org, k.ns)
}

// readUpTo is where a reader of the feed at pos is once ReadChanges (with
// limit eventBatch) returned changes and head: after the last change, or
// at the head when the page was not full (nothing more under its prefix
// up to there).
func readUpTo(pos store.Revision, changes []store.Change, head store.Revision) store.Revision {
	if len(changes) > 0 {
		pos = changes[len(changes)-1].Revision
	}
	if len(changes) < eventBatch {
		pos = max(pos, head)
	}
	return pos
}

// publishPause is how long a tail waits, after it published a view that
// woke users watchers, before it reads the feed again: so that a namespace
// written to faster than its watchers can be woken gathers the changes of
// the pause into one view, one write per watcher. The pause is about what
// waking them costs (users x
// wakeCost, at most maxPublishPause), so that waking takes at most about
// half of one CPU whatever the write rate: 25 us for 10 watchers, 25 ms
// for 10,000, which then wake at most 40 times a second.
func publishPause(users int64) time.Duration {
	return min(time.Duration(users)*wakeCost, maxPublishPause)
}

// feedEnded reports whether a feed error ends every watch of the
// namespace: it is gone, or no longer ready.
func feedEnded(err error) bool {
	var nr *store.NotReadyError
	return errors.Is(err, store.ErrNamespaceNotFound) || errors.As(err, &nr)
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// add publishes a view with changes appended to the ring, the oldest
// evicted beyond its bounds, and wakes the watchers of the changes'
// prefixes; it returns how many it woke.
func (t *nsTail) add(changes []store.Change) int64 {
	if len(changes) == 0 {
		return 0
	}
	v := t.view.Load()
	n := &ringView{events: v.events, bytes: v.bytes, base: v.base}
	for _, c := range changes {
		n.events = append(n.events, &Event{Kind: EventKind(c.Kind), Change: c})
		n.bytes += ringSize(&c)
	}
	// Evicted events stay in the array, where older views may still read
	// them, until an append moves the ring to a new one.
	drop := 0
	for len(n.events)-drop > t.hub.ringEvents || n.bytes > t.hub.ringBytes && drop < len(n.events) {
		e := n.events[drop]
		n.bytes -= ringSize(&e.Change)
		n.base = e.Change.Revision
		drop++
	}
	added := n.events[len(n.events)-len(changes):]
	t.mu.Lock()
	defer t.mu.Unlock()
	// The groups' views change as the ring's: what it gets is appended
	// to the views of the groups it is under, and what it drops (the
	// oldest first, perhaps some of what it just got) leaves the front of
	// theirs, as a group's view is the ring's changes under its prefix,
	// in the same order.
	t.gen++
	var touched []*prefixGroup
	view := func(g *prefixGroup) *groupView {
		if g.mark != t.gen {
			g.mark, g.woken = t.gen, false
			v := *g.view.Load()
			g.next = &v
			touched = append(touched, g)
		}
		return g.next
	}
	for _, e := range added {
		t.groupsOf(e.Change.Key, func(g *prefixGroup) {
			v := view(g)
			v.events = append(v.events, e)
			g.woken = true
		})
	}
	for _, e := range n.events[:drop] {
		t.groupsOf(e.Change.Key, func(g *prefixGroup) {
			v := view(g)
			if len(v.events) > 0 && v.events[0] == e {
				v.events, v.dead = v.events[1:], v.dead+1
			}
			v.base = e.Change.Revision
		})
	}
	// A view whose array holds more dropped changes than live ones moves
	// to a new array: a quiet group would otherwise keep what the ring
	// dropped for as long as it lives (ten thousand of them, a change of
	// 64 KiB each).
	for _, g := range touched {
		if v := g.next; v.dead > len(v.events) {
			var fresh []*Event // nil for none: an empty slice of the old array would keep it
			if len(v.events) > 0 {
				fresh = slices.Clone(v.events)
			}
			v.events, v.dead = fresh, 0
		}
	}
	n.events = n.events[drop:]
	t.view.Store(n)
	// A watcher takes its group's channel before it reads the group's
	// view, so that a view published in between still wakes it.
	var woken int64
	for _, g := range touched {
		g.view.Store(g.next)
		g.next = nil
		if g.woken {
			woken += int64(g.users)
			g.wakeUp()
		}
	}
	return woken
}

// ringSize is what a change counts toward the ring's bytes.
func ringSize(c *store.Change) int { return len(c.Value) + len(c.Key) + 64 }

// end publishes a view that says the feed ended with err, and wakes every
// watcher.
func (t *nsTail) end(err error) {
	n := *t.view.Load()
	n.err = err
	t.mu.Lock()
	defer t.mu.Unlock()
	t.view.Store(&n)
	for _, g := range t.groups {
		g.wakeUp()
	}
}

// Watcher is one open watch. It is used by one goroutine.
type Watcher struct {
	s     *Service
	who   Principal
	ns    kv.ID
	opts  WatchOptions
	tail  *nsTail
	group *prefixGroup   // the watchers of the tail with its prefix
	pos   store.Revision // every change up to it was delivered or skipped
	phase int            // of the hub's clock
	// holding says the watcher holds a delivery slot; hold gives it back
	// after deliveryHold, unless stopped first.
	holding bool
	hold    *time.Timer
}

// Watch opens a watch of namespace id (see API.md, "Watch"). It counts
// one list. The caller must Close the watcher.
func (s *Service) Watch(ctx context.Context, p Principal, id kv.ID, opts WatchOptions) (*Watcher, error) {
	if err := p.namespace(id, kv.PermKeysRead); err != nil {
		return nil, err
	}
	if err := p.listPrefix(opts.Prefix); err != nil {
		return nil, err
	}
	if len(opts.Prefix) > kv.MaxKeyLen {
		return nil, kv.Errorf(kv.EInvalid, "prefix is longer than any key can be (%d characters)", kv.MaxKeyLen).WithParam("prefix")
	}
	head, err := s.store.Head(ctx)
	if err != nil {
		return nil, fromStore(err, "")
	}
	from := head
	if opts.HasSince {
		from = opts.Since
	}
	// Check the namespace (and the history, from since) now, so that a
	// watch that cannot be served is refused before its stream starts.
	if _, _, err := s.store.ReadChanges(ctx, p.Org, id, opts.Prefix, from, 1, false); err != nil {
		return nil, watchErr(err)
	}
	w := &Watcher{s: s, who: p, ns: id, opts: opts, pos: from, phase: int(s.watches.clock.next.Add(1) % clockPhases)}
	w.tail, w.group = s.watches.join(s.store, p.Org, id, head, opts.Prefix)
	s.meter.Add(p.Org, id, s.now(), store.UsageCounts{Lists: 1})
	return w, nil
}

func watchErr(err error) error {
	var gone *store.HistoryGoneError
	if errors.As(err, &gone) {
		e := kv.Errorf(kv.EHistoryGone, "the changes after that revision are no longer kept; resume from revision %d or later, or start again with snapshot=true", gone.Oldest)
		e.OldestRevision = uint64(gone.Oldest)
		return e
	}
	return fromStore(err, "")
}

// Close ends the watch.
func (w *Watcher) Close() {
	w.releaseSlot()
	if w.tail != nil {
		w.s.watches.leave(w.tail, w.group)
		w.tail = nil
	}
}

// Snapshot sends, through fn, a put event for every live key under the
// watch's prefix as of a revision, which it returns; the watch goes on
// from there. It counts a read per key sent. A watch that cannot get one
// of the snapshot slots within a few seconds is refused (503).
func (w *Watcher) Snapshot(ctx context.Context, fn func(*Event) error) (store.Revision, error) {
	t := time.NewTimer(snapshotWait)
	defer t.Stop()
	select {
	case w.s.watches.snapshot <- struct{}{}:
		defer func() { <-w.s.watches.snapshot }()
	case <-t.C:
		return 0, kv.Errorf(kv.EUnavailable, "too many snapshots are being sent; try again shortly")
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	sent := 0
	now := w.s.now()
	defer func() {
		if sent > 0 {
			w.s.meter.Add(w.who.Org, w.ns, w.s.now(), store.UsageCounts{Reads: int64(sent)})
			w.s.watches.events.Add(int64(sent))
		}
	}()
	at, err := w.s.store.Snapshot(ctx, w.who.Org, w.ns, w.opts.Prefix, now, w.opts.Values, func(c store.Change) error {
		sent++
		return fn(&Event{Kind: EventPut, Change: c})
	})
	if err != nil {
		return 0, watchErr(err)
	}
	w.pos = at
	return at, nil
}

// Revision is the revision up to which every change was delivered (or
// was not the watch's): the resume point, and a ready event's revision.
func (w *Watcher) Revision() store.Revision { return w.pos }

// Next returns the next events (at most a few hundred), waiting about
// wait for one (until the first tick of the hub's clock after wait/2: from
// half of wait, or as little as a test's, to wait plus a tick, or for a
// wait of slowTick or more plus a slow tick); none when the wait ended
// without any, or when stop was closed while it waited. The slice is
// valid until the next call. An overflow event comes last and ends the
// watch. An error ends it too: the namespace was deleted, or ctx ended.
//
// The watcher holds a delivery slot from the moment Next returns events
// until it calls Next again or Close: the caller writes them out in
// between, and calls again as soon as it has. A watcher with nothing to
// send takes no slot, and waits for news without a timer of its own.
func (w *Watcher) Next(ctx context.Context, wait time.Duration, stop <-chan struct{}) ([]*Event, error) {
	w.releaseSlot()
	soonest := time.Now().Add(wait / 2)
	for {
		tick := w.s.watches.clock.tick(w.phase, wait)
		moved := *w.group.wake.Load() // before the views: see nsTail.add
		if !w.hasNews() {
			select {
			case <-moved:
			case <-tick:
				if !time.Now().Before(soonest) {
					return nil, nil
				}
			case <-stop:
				return nil, nil
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			continue
		}
		// The slot first, then the read: what came while the watcher
		// waited for the slot goes out in the same write.
		if err := w.takeSlot(ctx); err != nil {
			return nil, err
		}
		evs, behind, err := w.fromRing()
		if err == nil && len(evs) == 0 && behind {
			w.releaseSlot()
			if evs, err = w.catchUp(ctx); err == nil && len(evs) > 0 {
				err = w.takeSlot(ctx)
			}
		}
		if err != nil {
			return nil, err
		}
		if len(evs) > 0 {
			return w.count(evs), nil
		}
		w.releaseSlot()
	}
}

// hasNews reports whether the watcher has something to read: changes in
// its group's view after its position, changes it must read from the
// store, or the end of the feed.
func (w *Watcher) hasNews() bool {
	gv := w.group.view.Load()
	if w.tail.view.Load().err != nil || w.pos < gv.base {
		return true
	}
	n := len(gv.events)
	return n > 0 && gv.events[n-1].Change.Revision > w.pos
}

// takeSlot waits for a delivery slot.
func (w *Watcher) takeSlot(ctx context.Context) error {
	select {
	case w.s.watches.deliver <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	w.holding = true
	if w.hold == nil {
		w.hold = time.AfterFunc(deliveryHold, w.s.watches.freeSlot)
	} else {
		w.hold.Reset(deliveryHold)
	}
	return nil
}

// releaseSlot gives back the watcher's delivery slot, unless its hold
// ran out and gave it back already.
func (w *Watcher) releaseSlot() {
	if !w.holding {
		return
	}
	w.holding = false
	if w.hold.Stop() {
		w.s.watches.freeSlot()
	}
}

// count meters the changes among evs.
func (w *Watcher) count(evs []*Event) []*Event {
	n := 0
	for _, e := range evs {
		if e.Kind != EventOverflow {
			n++
		} else {
			w.s.watches.overflows.Add(1)
		}
	}
	if n > 0 {
		w.s.meter.Add(w.who.Org, w.ns, w.s.now(), store.UsageCounts{Reads: int64(n)})
		w.s.watches.events.Add(int64(n))
	}
	return evs
}

// fromRing takes the watcher's next events from its group's view of the
// ring. behind: the ring dropped changes under the prefix after the
// watcher's position.
func (w *Watcher) fromRing() (evs []*Event, behind bool, err error) {
	gv := w.group.view.Load()
	if v := w.tail.view.Load(); v.err != nil {
		return nil, false, fromStore(v.err, "")
	}
	if w.pos < gv.base {
		return nil, true, nil
	}
	ring := gv.events
	i := sort.Search(len(ring), func(i int) bool { return ring[i].Change.Revision > w.pos })
	evs = ring[i:min(len(ring), i+eventBatch)] // views are never changed
	if len(evs) > 0 {
		w.pos = evs[len(evs)-1].Change.Revision
	}
	return evs, false, nil
}

// catchUp reads the watcher's next changes from the store, holding a
// catch-up slot; a watcher that cannot get one in time is sent an
// overflow.
func (w *Watcher) catchUp(ctx context.Context) ([]*Event, error) {
	t := time.NewTimer(w.s.watches.catchUpWait)
	defer t.Stop()
	select {
	case w.s.watches.catchUp <- struct{}{}:
		defer func() { <-w.s.watches.catchUp }()
	case <-t.C:
		return []*Event{{Kind: EventOverflow, Change: store.Change{Revision: w.pos}}}, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	w.s.watches.catchUps.Add(1)
	changes, head, err := w.s.store.ReadChanges(ctx, w.who.Org, w.ns, w.opts.Prefix, w.pos, eventBatch, w.opts.Values)
	var gone *store.HistoryGoneError
	switch {
	case errors.As(err, &gone):
		// Compacted while the watcher was behind: it must start again.
		return []*Event{{Kind: EventOverflow, Change: store.Change{Revision: w.pos}}}, nil
	case err != nil:
		return nil, fromStore(err, "")
	}
	evs := make([]*Event, len(changes))
	for i, c := range changes {
		evs[i] = &Event{Kind: EventKind(c.Kind), Change: c}
	}
	w.pos = readUpTo(w.pos, changes, head)
	return evs, nil
}
