package postgres

import (
	"slices"
	"testing"

	"github.com/edgekv/kv/internal/store"
)

// parseSnapshot reads what pg_current_snapshot prints, and refuses
// anything else a server, or something in its place, could send.
func TestParseSnapshot(t *testing.T) {
	for _, c := range []struct {
		in   string
		want pgSnapshot
	}{
		{"10:10:", pgSnapshot{xmin: 10, xmax: 10}},
		{"10:20:15,10,12", pgSnapshot{xmin: 10, xmax: 20, xip: []uint64{10, 12, 15}}},
		{"10:20:12,12", pgSnapshot{xmin: 10, xmax: 20, xip: []uint64{12}}},
		{"18446744073709551614:18446744073709551615:18446744073709551614",
			pgSnapshot{xmin: 1<<64 - 2, xmax: 1<<64 - 1, xip: []uint64{1<<64 - 2}}},
	} {
		got, err := parseSnapshot(c.in)
		if err != nil || got.xmin != c.want.xmin || got.xmax != c.want.xmax || !slices.Equal(got.xip, c.want.xip) {
			t.Errorf("parseSnapshot(%q) = %+v, %v; want %+v", c.in, got, err, c.want)
		}
	}
	for _, bad := range []string{
		"", "10", "10:20", "10:20:1:2", "a:20:", "10:b:", "10:20:x", "10:20:12,", "10:20:,12",
		"-1:20:", "10:-20:", "20:10:", "10:20:9", "10:20:20", "10:20:1e3",
		"18446744073709551616:18446744073709551617:", " 10:20:", "10:20: 12",
	} {
		if got, err := parseSnapshot(bad); err == nil {
			t.Errorf("parseSnapshot(%q) = %+v, want an error", bad, got)
		}
	}
	if _, err := parseSnapshotAge("10:20:", -1); err == nil {
		t.Error("a next transaction id before xmin was accepted")
	}
	if s, err := parseSnapshotAge("10:20:12", 15); err != nil || s.next != 25 {
		t.Errorf("parseSnapshotAge: %+v, %v; want next 25", s, err)
	}
	if s, err := parseSnapshotAge("10:20:12", 3); err != nil || s.next != 20 {
		t.Errorf("parseSnapshotAge with the next id below xmax: %+v, %v; want next at xmax", s, err)
	}
}

// A wait set ends only once every transaction of it is seen ended: those
// listed, and those of its range, which a snapshot lists only once its
// xmax has passed them.
func TestWaitSet(t *testing.T) {
	snap := func(xmin, xmax uint64, xip ...uint64) pgSnapshot {
		return pgSnapshot{xmin: xmin, xmax: xmax, xip: xip}
	}
	x := pgSnapshot{xmin: 10, xmax: 12, xip: []uint64{10}, next: 15} // 12, 13, 14 may run unlisted
	w := x.running()
	if w.empty() {
		t.Fatal("a snapshot with a running transaction gave an empty wait set")
	}
	steps := []struct {
		s    pgSnapshot
		done bool
	}{
		{snap(10, 12, 10), false},     // nothing new
		{snap(11, 13), false},         // 10 and 12 ended; 13 and 14 unknown
		{snap(13, 20, 13, 14), false}, // 13 and 14 listed running
		{snap(14, 20, 14), false},
		{snap(20, 20), true},
	}
	for i, st := range steps {
		if got := w.prune(st.s); got != st.done {
			t.Fatalf("step %d: prune by %+v = %v, want %v (left %+v)", i, st.s, got, st.done, w)
		}
	}
	// A transaction at or past a later snapshot's xmax has not been seen
	// to end.
	w = waitSet{xids: []uint64{30}}
	if w.prune(snap(25, 30)) {
		t.Fatal("a transaction at the snapshot's xmax counted as ended")
	}
	if !w.prune(snap(31, 31)) {
		t.Fatal("a transaction below xmax and not listed still counted as running")
	}
	u := waitSet{xids: []uint64{3}, from: 10, to: 12}.union(waitSet{xids: []uint64{3, 5}, from: 20, to: 22})
	if !slices.Equal(u.xids, []uint64{3, 5}) || u.from != 10 || u.to != 22 {
		t.Fatalf("union = %+v", u)
	}
	if u := (waitSet{xids: []uint64{1}}).union(waitSet{from: 4, to: 6}); u.from != 4 || u.to != 6 {
		t.Fatalf("union with an empty range = %+v", u)
	}
}

// The head rises to a round's L once the round's transactions are seen
// ended, whatever order the rounds came in, and never falls; the rounds
// waiting stay few however many come while a transaction stays open.
func TestFeedObserve(t *testing.T) {
	f := newFeed()
	defer f.close()
	head := func() store.Revision { h, _ := f.current(); return h }
	f.observe(5, pgSnapshot{xmin: 100, xmax: 100, next: 100})
	if head() != 5 {
		t.Fatalf("head after a round with nothing running = %d, want 5", head())
	}
	// 100 stays open (unlisted: it is the youngest), 101 ends.
	f.observe(9, pgSnapshot{xmin: 100, xmax: 100, next: 102})
	f.observe(12, pgSnapshot{xmin: 100, xmax: 102, xip: []uint64{100}, next: 103})
	if head() != 5 {
		t.Fatalf("head with transaction 100 open = %d, want 5", head())
	}
	for i := range 3 * maxRounds {
		f.observe(store.Revision(20+i), pgSnapshot{xmin: 100, xmax: 103, xip: []uint64{100}, next: 103})
	}
	f.mu.Lock()
	n := len(f.rounds)
	f.mu.Unlock()
	if n > maxRounds {
		t.Fatalf("%d rounds waiting, want at most %d", n, maxRounds)
	}
	if head() != 5 {
		t.Fatalf("head with transaction 100 open = %d, want 5", head())
	}
	_, advanced := f.current()
	f.observe(200, pgSnapshot{xmin: 103, xmax: 104, xip: []uint64{103}, next: 104})
	select {
	case <-advanced:
	default:
		t.Fatal("the head rose without closing its channel")
	}
	if h := head(); h != 20+3*maxRounds-1 {
		t.Fatalf("head once 100 ended = %d, want the last round's L %d", h, 20+3*maxRounds-1)
	}
	// An older round, taken before, cannot lower it.
	f.observe(3, pgSnapshot{xmin: 50, xmax: 50, next: 50})
	if h := head(); h != 20+3*maxRounds-1 {
		t.Fatalf("head after an older round = %d", h)
	}
	f.observe(201, pgSnapshot{xmin: 105, xmax: 105, next: 105})
	if h := head(); h != 201 {
		t.Fatalf("head once 103 ended = %d, want 201", h)
	}
}
