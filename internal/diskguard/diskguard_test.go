package diskguard

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgekv/kv"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// freeSpace is a file system's free space as a test sets it: the fault the
// guard exists for, injected.
type freeSpace struct {
	n     atomic.Uint64
	fail  atomic.Bool
	calls atomic.Int64
}

func (f *freeSpace) Free() (uint64, error) {
	f.calls.Add(1)
	if f.fail.Load() {
		return 0, errors.New("statfs: input/output error")
	}
	return f.n.Load(), nil
}

// waitFor polls cond with a generous deadline; the guard measures in the
// background.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestGuardRefusesBelowReserveAndResumes(t *testing.T) {
	fs := &freeSpace{}
	fs.n.Store(200 << 20)
	var logs syncBuffer
	g := New(Config{Reserve: 128 << 20, Free: fs.Free, Interval: time.Hour, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	defer g.Close()
	if err := g.Err(); err != nil {
		t.Fatalf("200 MiB free, reserve 128 MiB: %v", err)
	}

	fs.n.Store(3<<20 + 512<<10)
	g.Check() // the interval is an hour: only Check measures again
	waitFor(t, "writes to be refused", func() bool { return g.Err() != nil })
	err := g.Err()
	var e *kv.Error
	if !errors.As(err, &e) || e.Code != kv.EInsufficientStorage || !errors.Is(err, kv.ErrInsufficientStorage) {
		t.Fatalf("error %v: want code %s", err, kv.EInsufficientStorage)
	}
	if e.Code.HTTPStatus() != 507 {
		t.Fatalf("code %s maps to %d, want 507", e.Code, e.Code.HTTPStatus())
	}
	for _, want := range []string{"3.5 MiB free", "128 MiB"} {
		if !strings.Contains(e.Detail, want) {
			t.Errorf("detail %q does not name %q", e.Detail, want)
		}
	}

	fs.n.Store(128 << 20) // exactly the reserve is enough
	g.Check()
	waitFor(t, "writes to resume", func() bool { return g.Err() == nil })
	// The line is logged just after the verdict changes.
	waitFor(t, "the log of the resumption", func() bool { return strings.Contains(logs.String(), "writes are accepted") })
	if l := logs.String(); strings.Count(l, "writes are refused") != 1 || strings.Count(l, "writes are accepted") != 1 {
		t.Errorf("want one line when writes stop and one when they resume:\n%s", l)
	}
}

func TestGuardMeasuresEveryInterval(t *testing.T) {
	fs := &freeSpace{}
	fs.n.Store(1 << 30)
	g := New(Config{Reserve: 1 << 20, Free: fs.Free, Interval: 10 * time.Millisecond, Logger: quiet})
	defer g.Close()
	fs.n.Store(0)
	waitFor(t, "the periodic measurement to see a full disk", func() bool { return g.Err() != nil })
	fs.n.Store(1 << 30)
	waitFor(t, "the periodic measurement to see room", func() bool { return g.Err() == nil })
}

func TestGuardKeepsVerdictWhenStatFails(t *testing.T) {
	fs := &freeSpace{}
	var logs syncBuffer
	g := New(Config{Reserve: 1 << 20, Free: fs.Free, Interval: time.Hour, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	defer g.Close()
	if g.Err() == nil {
		t.Fatal("0 bytes free: writes are not refused")
	}
	fs.fail.Store(true)
	for range 3 {
		n := fs.calls.Load()
		g.Check()
		waitFor(t, "a measurement", func() bool { return fs.calls.Load() > n })
	}
	if g.Err() == nil {
		t.Error("a failed measurement cleared the verdict")
	}
	if c := strings.Count(logs.String(), "cannot measure"); c != 1 {
		t.Errorf("failed measurements logged %d times, want once:\n%s", c, logs.String())
	}
}

func TestGuardClose(t *testing.T) {
	fs := &freeSpace{}
	g := New(Config{Reserve: 1, Free: fs.Free, Interval: time.Millisecond, Logger: quiet})
	g.Close()
	n := fs.calls.Load()
	g.Check()
	time.Sleep(20 * time.Millisecond)
	if fs.calls.Load() != n {
		t.Error("the guard measured after Close")
	}
	if g.Err() == nil {
		t.Error("Close cleared the verdict")
	}
	g.Close() // a second Close is harmless
}

func TestBytes(t *testing.T) {
	for n, want := range map[uint64]string{0: "0 B", 1023: "1023 B", 1024: "1 KiB", 1536: "1.5 KiB", 128 << 20: "128 MiB", 5 << 30: "5 GiB", 1<<40 + 1<<39: "1.5 TiB"} {
		if got := Bytes(n); got != want {
			t.Errorf("Bytes(%d) = %q, want %q", n, got, want)
		}
	}
}

// BenchmarkErr is the guard's cost on every write.
func BenchmarkErr(b *testing.B) {
	fs := &freeSpace{}
	fs.n.Store(1 << 40)
	g := New(Config{Reserve: 1, Free: fs.Free, Logger: quiet})
	defer g.Close()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if g.Err() != nil {
				b.Fatal("refused")
			}
		}
	})
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
