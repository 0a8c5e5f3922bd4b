package pebble_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"

	"github.com/edgekv/kv"
	"github.com/edgekv/kv/internal/linearizability"
	"github.com/edgekv/kv/internal/store"
	"github.com/edgekv/kv/internal/store/pebble"
)

// The fault-injection tests run the engine on Pebble's crash-simulating
// memory file system: CrashClone returns what a disk could hold after a
// power loss at that instant (everything synced, and a random part of what
// was not), and errorfs makes chosen file operations fail.

const (
	crashOrg  = "acme"
	crashDir  = "db"
	crashKeys = 8
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// TestPowerLoss runs writers on the engine, takes a crash clone of its file
// system at a random moment while writes are in flight, reopens the clone
// and checks that every write acknowledged before the clone survived (and
// nothing else appeared): the reopened engine's reads, appended to the
// history, must leave it linearizable, with the writes in flight at the
// crash of unknown outcome. The namespace table and tokens must be intact.
//
// KV_POWERLOSS_SEEDS sets the number of seeds (default 100); KV_POWERLOSS_SEED
// runs that one seed alone.
func TestPowerLoss(t *testing.T) {
	seeds := []uint64{}
	if s := os.Getenv("KV_POWERLOSS_SEED"); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("KV_POWERLOSS_SEED=%q: %v", s, err)
		}
		seeds = append(seeds, n)
	} else {
		n := 100
		if s := os.Getenv("KV_POWERLOSS_SEEDS"); s != "" {
			var err error
			if n, err = strconv.Atoi(s); err != nil || n < 1 {
				t.Fatalf("KV_POWERLOSS_SEEDS=%q: want a positive integer", s)
			}
		}
		base := rand.Uint64()
		for i := range n {
			seeds = append(seeds, base+uint64(i))
		}
	}
	start := time.Now()
	var acked, ops, flushed int
	for _, seed := range seeds {
		a, o, f := powerLoss(t, seed)
		acked, ops, flushed = acked+a, ops+o, flushed+f
		if t.Failed() {
			t.Fatalf("seed %d failed; rerun it alone with KV_POWERLOSS_SEED=%d", seed, seed)
		}
	}
	t.Logf("%d seeds in %v: %d operations, %d writes acknowledged before a crash and checked after it; %d seeds with large values (memtable flushes)",
		len(seeds), time.Since(start).Round(time.Millisecond), ops, acked, flushed)
}

// nsChange is an acknowledged change to the namespace table.
type nsChange struct {
	ns        kv.Namespace
	call, ret int64 // on the recorder's clock
}

func powerLoss(t *testing.T, seed uint64) (acked, nops, large int) {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 0))
	ctx := context.Background()
	fs := vfs.NewCrashableMem()
	db, err := pebble.Open(crashDir, pebble.Options{FS: fs, Logger: quiet})
	if err != nil {
		t.Fatalf("seed %d: open: %v", seed, err)
	}
	defer func() {
		if db != nil {
			db.Close()
		}
	}()

	// The namespace table before the workload: one of each status, and a
	// purged one; and a token.
	now := time.Now().UTC().Truncate(time.Millisecond)
	live := newNS(t, db, "live", now, kv.StatusProvisionOK)
	pending := newNS(t, db, "pending", now, "")
	doomed := newNS(t, db, "doomed", now, kv.StatusProvisionOK)
	if _, err := db.MarkDeleting(ctx, crashOrg, doomed.ID, now); err != nil {
		t.Fatal(err)
	}
	doomed.Status = kv.StatusDeleting
	purged := newNS(t, db, "purged", now, kv.StatusProvisionOK)
	if _, err := db.MarkDeleting(ctx, crashOrg, purged.ID, now); err != nil {
		t.Fatal(err)
	}
	if err := db.PurgeNamespace(ctx, purged.ID, ""); err != nil {
		t.Fatal(err)
	}
	tok := store.DigestToken("token-" + strconv.FormatUint(seed, 10))
	if err := db.CreateToken(ctx, store.Token{ID: "tok_crash", Org: crashOrg, Permissions: kv.AllPermissions, CreatedAt: time.Now()}, tok); err != nil {
		t.Fatal(err)
	}

	valueSize := 16
	if rng.IntN(4) == 0 {
		valueSize, large = 32<<10, 1 // a few hundred writes fill a memtable
	}
	rec := linearizability.NewRecorder()
	var ackCount atomic.Int64
	var seq atomic.Int64
	var stop atomic.Bool
	var wg sync.WaitGroup
	var errMu sync.Mutex
	var errs []error
	workers := 2 + rng.IntN(7)
	for w := range workers {
		wg.Add(1)
		wseed := rng.Uint64()
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(wseed, 1))
			for !stop.Load() {
				key := fmt.Sprintf("k%d", r.IntN(crashKeys))
				in := linearizability.Input{Key: key}
				var out linearizability.Output
				call := rec.Now()
				var err error
				switch x := r.IntN(100); {
				case x < 55:
					in.Kind, in.Value = linearizability.Put, fmt.Sprintf("v%d", seq.Add(1))
					var w store.Written
					w, err = db.PutKey(ctx, crashOrg, live.ID, key, store.PutValue{Data: padValue(in.Value, valueSize), ContentType: "application/octet-stream"}, time.Now())
					out.Created = w.Created
				case x < 70:
					in.Kind = linearizability.Delete
					_, err = db.DeleteKey(ctx, crashOrg, live.ID, key, time.Now())
				default:
					in.Kind = linearizability.Get
					out, err = getPadded(db, live.ID, key, valueSize)
				}
				ret := rec.Now()
				if err != nil {
					errMu.Lock()
					errs = append(errs, fmt.Errorf("%s(%s): %w", in.Kind, key, err))
					errMu.Unlock()
					return
				}
				rec.Record(w, in, out, call, ret)
				if in.Kind != linearizability.Get {
					ackCount.Add(1)
				}
			}
		}()
	}
	// Namespace changes go on meanwhile: creations, and deletions of what
	// was created.
	var changes []nsChange
	var nsDone sync.WaitGroup
	nsDone.Add(1)
	go func() {
		defer nsDone.Done()
		for i := 0; !stop.Load(); i++ {
			at := time.Now().UTC().Truncate(time.Millisecond)
			ns := kv.Namespace{ID: kv.NewID(), Org: crashOrg, Name: fmt.Sprintf("extra-%d", i), Status: kv.StatusPending, CreatedAt: at, UpdatedAt: at}
			call := rec.Now()
			if err := db.CreateNamespace(ctx, ns); err != nil {
				errMu.Lock()
				errs = append(errs, err)
				errMu.Unlock()
				return
			}
			changes = append(changes, nsChange{ns, call, rec.Now()})
			if i%2 == 1 {
				call := rec.Now()
				got, err := db.MarkDeleting(ctx, crashOrg, ns.ID, at)
				if err != nil {
					errMu.Lock()
					errs = append(errs, err)
					errMu.Unlock()
					return
				}
				changes = append(changes, nsChange{got, call, rec.Now()})
			}
			time.Sleep(time.Millisecond)
		}
	}()

	// Crash after a random number of acknowledged writes, writers running.
	target := int64(rng.IntN(400))
	deadline := time.Now().Add(10 * time.Second)
	for ackCount.Load() < target && time.Now().Before(deadline) {
		time.Sleep(100 * time.Microsecond)
	}
	c0 := rec.Now()
	crashed := fs.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: rng.IntN(101), RNG: rand.New(rand.NewPCG(rng.Uint64(), 2))})
	c1 := rec.Now()
	stop.Store(true)
	wg.Wait()
	nsDone.Wait()
	for _, err := range errs {
		t.Errorf("seed %d: %v", seed, err)
	}
	if err := db.Close(); err != nil {
		t.Errorf("seed %d: close: %v", seed, err)
	}
	db = nil

	// The history as the crashed disk knows it: what returned before the
	// clone stands; what started after it never happened; the rest may or
	// may not have.
	var history []porcupine.Operation
	for _, op := range rec.Operations() {
		switch {
		case op.Return < c0:
		case op.Call > c1:
			continue
		case op.Input.(linearizability.Input).Kind == linearizability.Get:
			continue
		default:
			op.Output, op.Return = linearizability.Output{Unknown: true}, linearizability.Infinity
		}
		if op.Return != linearizability.Infinity && op.Input.(linearizability.Input).Kind != linearizability.Get {
			acked++
		}
		history = append(history, op)
	}

	db, err = pebble.Open(crashDir, pebble.Options{FS: crashed, Logger: quiet})
	if err != nil {
		t.Fatalf("seed %d: reopen after the crash: %v", seed, err)
	}
	for i := range crashKeys {
		key := fmt.Sprintf("k%d", i)
		call := rec.Now()
		out, err := getPadded(db, live.ID, key, valueSize)
		ret := rec.Now()
		if err != nil {
			t.Fatalf("seed %d: get %s after the crash: %v", seed, key, err)
		}
		if err := linearizability.CheckRead(history, key, out, call, ret); err != nil {
			t.Errorf("seed %d: after the crash: %v", seed, err)
		}
		history = append(history, porcupine.Operation{ClientId: workers, Input: linearizability.Input{Kind: linearizability.Get, Key: key}, Output: out, Call: call, Return: ret})
	}
	linearizability.Check(t, history)

	// The namespace table and the token.
	for _, want := range []kv.Namespace{live, pending, doomed} {
		got, err := db.GetNamespace(ctx, crashOrg, want.ID)
		if err != nil || got.Status != want.Status || got.Name != want.Name {
			t.Errorf("seed %d: namespace %s after the crash: %+v, %v; want status %s", seed, want.Name, got, err, want.Status)
		}
	}
	if _, err := db.GetNamespace(ctx, crashOrg, purged.ID); !errors.Is(err, store.ErrNamespaceNotFound) {
		t.Errorf("seed %d: purged namespace after the crash: %v; want not found", seed, err)
	}
	checkNamespaceChanges(t, seed, db, changes, c0, c1)
	if got, err := db.TokenByDigest(ctx, tok); err != nil || got.Org != crashOrg {
		t.Errorf("seed %d: token after the crash: %+v, %v", seed, got, err)
	}
	// The engine works on: a write after the crash is read back.
	if _, err := db.PutKey(ctx, crashOrg, live.ID, "after", store.PutValue{Data: []byte("x"), ContentType: "a/b"}, time.Now()); err != nil {
		t.Errorf("seed %d: put after the crash: %v", seed, err)
	}
	if out, err := getOutput(db, live.ID, "after"); err != nil || out.Value != "x" {
		t.Errorf("seed %d: get after the crash: %+v, %v", seed, out, err)
	}
	return acked, len(history), large
}

// checkNamespaceChanges checks that each namespace created or marked
// deleting, acknowledged before the crash (returned before c0, when the
// clone began), is as the last such change left it; one changed around the
// crash (called before c1, when the clone was done) is in one of its states.
func checkNamespaceChanges(t *testing.T, seed uint64, db *pebble.DB, changes []nsChange, c0, c1 int64) {
	t.Helper()
	type states struct {
		acked   *kv.Namespace
		allowed []kv.Status
	}
	byID := map[kv.ID]*states{}
	var order []kv.ID
	for _, c := range changes {
		s := byID[c.ns.ID]
		if s == nil {
			s = &states{}
			byID[c.ns.ID] = s
			order = append(order, c.ns.ID)
		}
		if c.ret < c0 {
			ns := c.ns
			s.acked, s.allowed = &ns, []kv.Status{ns.Status}
		} else if c.call <= c1 {
			s.allowed = append(s.allowed, c.ns.Status)
		}
	}
	for _, id := range order {
		s := byID[id]
		got, err := db.GetNamespace(context.Background(), crashOrg, id)
		if s.acked == nil {
			if err == nil && !slices.Contains(s.allowed, got.Status) {
				t.Errorf("seed %d: namespace %s, created around the crash, is %s; want one of %v", seed, id, got.Status, s.allowed)
			}
			continue
		}
		if err != nil {
			t.Errorf("seed %d: namespace %s (%s acknowledged before the crash) is lost: %v", seed, s.acked.Name, s.acked.Status, err)
			continue
		}
		ok := false
		for _, st := range s.allowed {
			ok = ok || got.Status == st
		}
		if !ok || got.Name != s.acked.Name || !got.CreatedAt.Equal(s.acked.CreatedAt) {
			t.Errorf("seed %d: namespace %s after the crash: %+v; want one of %v", seed, s.acked.Name, got, s.allowed)
		}
	}
}

func newNS(t *testing.T, db *pebble.DB, name string, at time.Time, to kv.Status) kv.Namespace {
	t.Helper()
	ctx := context.Background()
	ns := kv.Namespace{ID: kv.NewID(), Org: crashOrg, Name: name, Status: kv.StatusPending, CreatedAt: at, UpdatedAt: at}
	if err := db.CreateNamespace(ctx, ns); err != nil {
		t.Fatal(err)
	}
	if to == "" {
		return ns
	}
	for {
		got, ok, err := db.ClaimLifecycleJob(ctx, "setup", at, time.Minute)
		if err != nil || !ok {
			t.Fatalf("claim %s: %v %v", name, ok, err)
		}
		if got.ID == ns.ID {
			break
		}
	}
	if err := db.CompleteProvision(ctx, ns.ID, "setup", to, at); err != nil {
		t.Fatal(err)
	}
	ns.Status = to
	return ns
}

// getOutput reads key as a linearizability output.
func getOutput(db *pebble.DB, nsID kv.ID, key string) (linearizability.Output, error) {
	v, err := db.GetKey(context.Background(), crashOrg, nsID, key, time.Now())
	if errors.Is(err, store.ErrKeyNotFound) {
		return linearizability.Output{}, nil
	}
	if err != nil {
		return linearizability.Output{}, err
	}
	defer v.Close()
	return linearizability.Output{Found: true, Value: string(v.Data)}, nil
}

// getPadded reads a value written by padValue.
func getPadded(db *pebble.DB, nsID kv.ID, key string, size int) (linearizability.Output, error) {
	out, err := getOutput(db, nsID, key)
	if err != nil || !out.Found {
		return out, err
	}
	v, ok := unpadValue(out.Value, size)
	if !ok {
		return out, fmt.Errorf("torn value %.40q... (%d bytes)", out.Value, len(out.Value))
	}
	out.Value = v
	return out, nil
}

// padValue makes a value of size bytes that starts with v; unpadValue
// takes v back, or reports a value that is not whole.
func padValue(v string, size int) []byte {
	b := []byte(v + "|")
	for len(b) < size {
		b = append(b, byte('a'+len(b)%26))
	}
	return b
}

func unpadValue(s string, size int) (string, bool) {
	i := strings.IndexByte(s, '|')
	if i < 0 {
		return "", false
	}
	return s[:i], bytes.Equal([]byte(s), padValue(s[:i], size))
}

// walFaults makes writes or syncs of the WAL (*.log files) fail while on.
type walFaults struct {
	on    atomic.Bool
	kinds []errorfs.OpKind
	hits  atomic.Int64
}

func (f *walFaults) MaybeError(op errorfs.Op) error {
	if !f.on.Load() || !strings.HasSuffix(op.Path, ".log") {
		return nil
	}
	for _, k := range f.kinds {
		if op.Kind == k {
			f.hits.Add(1)
			return errorfs.ErrInjected
		}
	}
	return nil
}

func (f *walFaults) String() string { return "wal faults" }

var walFaultKinds = map[string][]errorfs.OpKind{
	"sync":  {errorfs.OpFileSync, errorfs.OpFileSyncData, errorfs.OpFileSyncTo},
	"write": {errorfs.OpFileWrite, errorfs.OpFileWriteAt},
}

// fatalSignal is an OnFatal hook for tests: it counts the calls and hands
// over the first cause.
type fatalSignal struct {
	calls atomic.Int64
	ch    chan error
}

func newFatalSignal() *fatalSignal { return &fatalSignal{ch: make(chan error, 1)} }

func (f *fatalSignal) OnFatal(err error) {
	if f.calls.Add(1) == 1 {
		f.ch <- err
	}
}

// wait returns the cause the engine reported, waiting generously for it.
func (f *fatalSignal) wait(t *testing.T, what string) error {
	t.Helper()
	select {
	case err := <-f.ch:
		return err
	case <-time.After(30 * time.Second):
		t.Fatalf("%s: the engine never reported a failure", what)
		return nil
	}
}

// inFlight is a writer's operation in progress, so that the test can
// record one that never returns (the engine parks it) as of unknown
// outcome.
type inFlight struct {
	mu        sync.Mutex
	in        *linearizability.Input
	call      int64
	abandoned bool
}

// TestWALFailureNeverAcknowledged makes the WAL's writes or syncs fail while
// concurrent writers run. No write may be acknowledged unless it is durable:
// the engine reports the failure once, a write that meets it never returns
// success (it fails, or never returns: the engine parks it until the
// process ends), keys untouched by a failed write still read their
// acknowledged values or are refused, and reopening the synced state on a
// healthy file system finds every acknowledged write.
func TestWALFailureNeverAcknowledged(t *testing.T) {
	for _, name := range []string{"sync", "write"} {
		t.Run(name, func(t *testing.T) {
			for seed := range uint64(10) {
				walFailure(t, seed, walFaultKinds[name])
				if t.Failed() {
					t.Fatalf("seed %d failed", seed)
				}
			}
		})
	}
}

func walFailure(t *testing.T, seed uint64, kinds []errorfs.OpKind) {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 0))
	ctx := context.Background()
	mem := vfs.NewCrashableMem()
	faults := &walFaults{kinds: kinds}
	fatal := newFatalSignal()
	// The engine that meets the failure is never closed: it cannot be, and
	// its parked goroutines stay parked.
	db, err := pebble.Open(crashDir, pebble.Options{FS: errorfs.Wrap(mem, faults), Logger: quiet, OnFatal: fatal.OnFatal})
	if err != nil {
		t.Fatal(err)
	}
	live := newNS(t, db, "live", time.Now().UTC(), kv.StatusProvisionOK)
	rec := linearizability.NewRecorder()
	var acks atomic.Int64
	var seq atomic.Int64
	var mu sync.Mutex
	var failures []string
	const writers = 4
	var slots [writers]inFlight
	for w := range writers {
		wseed := rng.Uint64()
		go func() {
			r := rand.New(rand.NewPCG(wseed, 1))
			slot := &slots[w]
			// Each writer stops at its first failure: one is enough to
			// learn what the engine does, and a WAL failure is sticky.
			for {
				key := fmt.Sprintf("k%d", r.IntN(crashKeys))
				in := linearizability.Input{Key: key, Kind: linearizability.Put, Value: fmt.Sprintf("v%d", seq.Add(1))}
				del := r.IntN(4) == 0
				if del {
					in.Kind, in.Value = linearizability.Delete, ""
				}
				on := faults.on.Load()
				slot.mu.Lock()
				if slot.abandoned {
					slot.mu.Unlock()
					return
				}
				slot.in, slot.call = &in, rec.Now()
				slot.mu.Unlock()
				var out linearizability.Output
				var err error
				if del {
					_, err = db.DeleteKey(ctx, crashOrg, live.ID, key, time.Now())
				} else {
					var w store.Written
					w, err = db.PutKey(ctx, crashOrg, live.ID, key, store.PutValue{Data: []byte(in.Value), ContentType: "a/b"}, time.Now())
					out.Created = w.Created
				}
				ret := rec.Now()
				slot.mu.Lock()
				if slot.abandoned {
					slot.mu.Unlock()
					return
				}
				slot.in = nil
				if err != nil {
					rec.Record(w, in, linearizability.Output{Unknown: true}, slot.call, ret)
					slot.abandoned = true
					slot.mu.Unlock()
					mu.Lock()
					failures = append(failures, fmt.Sprintf("%s(%s): %v", in.Kind, key, err))
					if !on && !faults.on.Load() {
						t.Errorf("%s(%s) failed with no fault injected: %v", in.Kind, key, err)
					}
					mu.Unlock()
					return
				}
				rec.Record(w, in, out, slot.call, ret)
				slot.mu.Unlock()
				acks.Add(1)
			}
		}()
	}
	target := int64(rng.IntN(200))
	for acks.Load() < target {
		time.Sleep(100 * time.Microsecond)
	}
	faults.on.Store(true)
	cause := fatal.wait(t, fmt.Sprintf("seed %d", seed))
	if faults.hits.Load() == 0 || !errors.Is(cause, errorfs.ErrInjected) {
		t.Fatalf("seed %d: the engine reported %v (%d faults injected); want the injected fault", seed, cause, faults.hits.Load())
	}
	// What is still in flight is parked, or about to fail: of unknown
	// outcome either way.
	parked := 0
	for w := range slots {
		slot := &slots[w]
		slot.mu.Lock()
		if slot.in != nil {
			rec.Record(w, *slot.in, linearizability.Output{Unknown: true}, slot.call, rec.Now())
			parked++
		}
		slot.abandoned = true
		slot.mu.Unlock()
	}
	if seed == 0 {
		// A writer that failed just before its slot was abandoned may still
		// be adding its failure.
		mu.Lock()
		failed := slices.Clone(failures)
		mu.Unlock()
		t.Logf("a failed WAL %v: reported as %q; %d writes failed (%v), %d still in flight", kinds, cause, len(failed), failed, parked)
	}
	if n := fatal.calls.Load(); n != 1 {
		t.Errorf("seed %d: OnFatal called %d times, want once", seed, n)
	}

	// On the engine that met the failure, keys no failed write touched
	// still read their acknowledged values, or are refused.
	history := rec.Operations()
	touched := map[string]bool{}
	for _, op := range history {
		if op.Return == linearizability.Infinity {
			touched[op.Input.(linearizability.Input).Key] = true
		}
	}
	for i := range crashKeys {
		key := fmt.Sprintf("k%d", i)
		if touched[key] {
			continue
		}
		call := rec.Now()
		out, err := getOutput(db, live.ID, key)
		if err != nil {
			continue // refusing to serve is allowed
		}
		if err := linearizability.CheckRead(history, key, out, call, rec.Now()); err != nil {
			t.Errorf("seed %d: on the engine that met the WAL failure: %v", seed, err)
		}
	}

	// What was synced, reopened on a healthy file system, holds every
	// acknowledged write of the keys no failed write touched.
	db2, err := pebble.Open(crashDir, pebble.Options{FS: mem.CrashClone(vfs.CrashCloneCfg{}), Logger: quiet})
	if err != nil {
		t.Fatalf("seed %d: reopen: %v", seed, err)
	}
	defer db2.Close()
	for i := range crashKeys {
		key := fmt.Sprintf("k%d", i)
		if touched[key] {
			// A failed write's effect on reads is TestWALFailureStopsServing's.
			continue
		}
		call := rec.Now()
		out, err := getOutput(db2, live.ID, key)
		ret := rec.Now()
		if err != nil {
			t.Fatalf("seed %d: get %s after reopening: %v", seed, key, err)
		}
		if err := linearizability.CheckRead(history, key, out, call, ret); err != nil {
			t.Errorf("seed %d: after reopening: %v", seed, err)
		}
		history = append(history, porcupine.Operation{ClientId: 9, Input: linearizability.Input{Kind: linearizability.Get, Key: key}, Output: out, Call: call, Return: ret})
	}
	linearizability.Check(t, history)
}

// TestWALFailureStopsServing checks what the engine does once a WAL write
// or sync has failed. Pebble cannot continue after one: the failed write is
// already in the memtable, and its own reactions (a panic or Fatalf, made
// for a process that then dies) can leave a mutex released twice. So the
// engine never hands the error back to Pebble: it reports it once (OnFatal;
// kvd then exits 70 and restarts on the synced state) and parks the
// goroutine that met it, and every later call returns an error at once:
//
//   - the write that met the failure is never acknowledged;
//   - no reader sees the failed write (never acknowledged, not on disk);
//   - no delete is acknowledged from memory that disk does not match;
//   - later writes fail instead of blocking;
//   - what was acknowledged is on disk.
func TestWALFailureStopsServing(t *testing.T) {
	ctx := context.Background()
	mem := vfs.NewCrashableMem()
	faults := &walFaults{kinds: walFaultKinds["sync"]}
	fatal := newFatalSignal()
	db, err := pebble.Open(crashDir, pebble.Options{FS: errorfs.Wrap(mem, faults), Logger: quiet, OnFatal: fatal.OnFatal})
	if err != nil {
		t.Fatal(err)
	}
	live := newNS(t, db, "live", time.Now().UTC(), kv.StatusProvisionOK)
	put := func(key, value string) error {
		_, err := db.PutKey(ctx, crashOrg, live.ID, key, store.PutValue{Data: []byte(value), ContentType: "a/b"}, time.Now())
		return err
	}
	del := func(key string) error {
		_, err := db.DeleteKey(ctx, crashOrg, live.ID, key, time.Now())
		return err
	}
	if err := errors.Join(put("a", "acknowledged"), put("b", "acknowledged")); err != nil {
		t.Fatal(err)
	}
	faults.on.Store(true)
	failed := make(chan error, 1)
	go func() { failed <- put("a", "failed") }()
	if cause := fatal.wait(t, "a WAL sync that fails"); !errors.Is(cause, errorfs.ErrInjected) {
		t.Fatalf("the engine reported %v, want the injected fault", cause)
	}
	acknowledged := func() {
		select {
		case err := <-failed:
			if err == nil {
				t.Fatal("a write whose WAL sync failed was acknowledged")
			}
			failed <- err
		default: // parked: never acknowledged
		}
	}
	acknowledged()
	t.Run("no read of the failed write", func(t *testing.T) {
		out, err := getOutput(db, live.ID, "a")
		if err == nil && out.Value != "acknowledged" {
			t.Errorf("after its WAL sync failed, key a reads %q (not on disk, never acknowledged); want %q or an error", out.Value, "acknowledged")
		}
	})
	t.Run("no acknowledgement from unsynced state", func(t *testing.T) {
		if err := del("b"); err == nil {
			t.Fatal("a delete after the WAL failed was acknowledged")
		}
	})
	t.Run("later writes fail rather than block", func(t *testing.T) {
		done := make(chan struct{})
		go func() {
			defer close(done)
			for i := range 2000 {
				if err := put(fmt.Sprintf("x%d", i), "v"); err == nil {
					t.Errorf("write %d acknowledged after a WAL failure", i)
					return
				}
			}
		}()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Error("writes after a WAL failure block")
		}
	})
	t.Run("the synced state holds what was acknowledged", func(t *testing.T) {
		reopened, err := pebble.Open(crashDir, pebble.Options{FS: mem.CrashClone(vfs.CrashCloneCfg{}), Logger: quiet})
		if err != nil {
			t.Fatal(err)
		}
		defer reopened.Close()
		if out, err := getOutput(reopened, live.ID, "b"); err != nil || out.Value != "acknowledged" {
			t.Errorf("b after reopening: %+v, %v; want its acknowledged value", out, err)
		}
		if out, err := getOutput(reopened, live.ID, "a"); err != nil || (out.Value != "acknowledged" && out.Value != "failed") {
			t.Errorf("a after reopening: %+v, %v", out, err)
		}
	})
	acknowledged()
	if n := fatal.calls.Load(); n != 1 {
		t.Errorf("OnFatal called %d times, want once", n)
	}
}

// logCreateFaults fails the creation of log files (a new one, or an old one
// recycled) while on, with err.
type logCreateFaults struct {
	on   atomic.Bool
	err  error
	hits atomic.Int64
}

func (f *logCreateFaults) MaybeError(op errorfs.Op) error {
	if f.on.Load() && strings.HasSuffix(op.Path, ".log") && (op.Kind == errorfs.OpCreate || op.Kind == errorfs.OpReuseForWrite) {
		f.hits.Add(1)
		return f.err
	}
	return nil
}

func (f *logCreateFaults) String() string { return "log creation faults" }

// TestLogRotationFailure makes the creation of the next log file fail while
// writes fill memtables, which rotates the log. Pebble panics when that
// fails, with its DB.mu released; the deferred unlock above it then made the
// process die with "fatal error: sync: unlock of unlocked mutex", which
// nothing recovers. The engine must instead report the failure once and
// refuse every call, or, when the cause passes (descriptors or space
// running out, then freed), carry on.
func TestLogRotationFailure(t *testing.T) {
	ctx := context.Background()
	value := bytes.Repeat([]byte("v"), 64<<10) // a few writes fill the first, small memtables
	write := func(db *pebble.DB, ns kv.Namespace, i int) error {
		_, err := db.PutKey(ctx, crashOrg, ns.ID, fmt.Sprintf("k%d", i), store.PutValue{Data: value, ContentType: "a/b"}, time.Now())
		return err
	}
	t.Run("a lasting failure is reported", func(t *testing.T) {
		faults := &logCreateFaults{err: errorfs.ErrInjected}
		fatal := newFatalSignal()
		db, err := pebble.Open(crashDir, pebble.Options{FS: errorfs.Wrap(vfs.NewMem(), faults), Logger: quiet, OnFatal: fatal.OnFatal})
		if err != nil {
			t.Fatal(err)
		}
		live := newNS(t, db, "live", time.Now().UTC(), kv.StatusProvisionOK)
		faults.on.Store(true)
		go func() {
			for i := 0; ; i++ {
				if write(db, live, i) != nil {
					return
				}
			}
		}()
		cause := fatal.wait(t, "log files that cannot be created")
		if !errors.Is(cause, errorfs.ErrInjected) || !strings.Contains(cause.Error(), ".log") {
			t.Fatalf("the engine reported %v; want the failed creation of a log file", cause)
		}
		if err := write(db, live, -1); err == nil || !strings.Contains(err.Error(), "must be restarted") {
			t.Fatalf("a write after the failure: %v; want the engine's refusal", err)
		}
		if _, err := getOutput(db, live.ID, "k0"); err == nil {
			t.Fatal("a read after the failure was served")
		}
	})
	t.Run("a passing shortage is survived", func(t *testing.T) {
		faults := &logCreateFaults{err: syscall.EMFILE}
		fatal := newFatalSignal()
		db, err := pebble.Open(crashDir, pebble.Options{FS: errorfs.Wrap(vfs.NewMem(), faults), Logger: quiet, OnFatal: fatal.OnFatal})
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		live := newNS(t, db, "live", time.Now().UTC(), kv.StatusProvisionOK)
		faults.on.Store(true)
		done := make(chan error, 1)
		go func() {
			for i := range 200 {
				if err := write(db, live, i); err != nil {
					done <- err
					return
				}
			}
			done <- nil
		}()
		deadline := time.Now().Add(30 * time.Second)
		for faults.hits.Load() == 0 && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		if faults.hits.Load() == 0 {
			t.Fatal("no log file creation was attempted")
		}
		faults.on.Store(false) // descriptors are free again
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("a write failed: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("writes did not resume once log files could be created")
		}
		if n := fatal.calls.Load(); n != 0 {
			t.Fatalf("OnFatal called %d times for a shortage that passed", n)
		}
		if out, err := getOutput(db, live.ID, "k199"); err != nil || !out.Found {
			t.Fatalf("the last write reads %+v, %v", out, err)
		}
	})
}
