package pebble

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/edgekv/kv/internal/store"
)

// syncGate is a file system whose log (WAL) syncs block while the gate is
// shut: a log sync that takes as long as the test wants.
type syncGate struct {
	vfs.FS
	mu   sync.Mutex
	open chan struct{} // closed while syncs may run
}

func newSyncGate(fs vfs.FS) *syncGate {
	g := &syncGate{FS: fs, open: make(chan struct{})}
	close(g.open)
	return g
}

func (g *syncGate) shut() {
	g.mu.Lock()
	g.open = make(chan struct{})
	g.mu.Unlock()
}

// release opens the gate (if shut).
func (g *syncGate) release() {
	g.mu.Lock()
	select {
	case <-g.open:
	default:
		close(g.open)
	}
	g.mu.Unlock()
}

func (g *syncGate) wait() {
	g.mu.Lock()
	ch := g.open
	g.mu.Unlock()
	<-ch
}

func (g *syncGate) wrap(name string, f vfs.File, err error) (vfs.File, error) {
	if err != nil || !strings.HasSuffix(name, ".log") {
		return f, err
	}
	return gatedFile{File: f, g: g}, nil
}

func (g *syncGate) Create(name string, c vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := g.FS.Create(name, c)
	return g.wrap(name, f, err)
}

func (g *syncGate) ReuseForWrite(oldname, newname string, c vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := g.FS.ReuseForWrite(oldname, newname, c)
	return g.wrap(newname, f, err)
}

func (g *syncGate) OpenReadWrite(name string, c vfs.DiskWriteCategory, opts ...vfs.OpenOption) (vfs.File, error) {
	f, err := g.FS.OpenReadWrite(name, c, opts...)
	return g.wrap(name, f, err)
}

type gatedFile struct {
	vfs.File
	g *syncGate
}

func (f gatedFile) Sync() error {
	f.g.wait()
	return f.File.Sync()
}

func (f gatedFile) SyncData() error {
	f.g.wait()
	return f.File.SyncData()
}

func (f gatedFile) SyncTo(n int64) (bool, error) {
	f.g.wait()
	return f.File.SyncTo(n)
}

// TestWritesOfOneKeyShareLogSyncs: while a write's log sync runs, a second
// write of the same key goes into the memtable (it does not wait for the
// first one's sync under the key's lock), but no one answers with either
// before they are durable: not their writers, not a GET of the key, not a
// conditional write that fails against them, not a read-only batch, not a
// listing.
func TestWritesOfOneKeyShareLogSyncs(t *testing.T) {
	gate := newSyncGate(vfs.NewMem())
	d, err := Open("db", Options{FS: gate, Logger: quietLog})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	ctx := context.Background()
	now := time.Now()
	ns := readyNamespace(t, d, "acme", now)
	w1, err := d.PutKey(ctx, "acme", ns.ID, "k", store.PutValue{Data: []byte("v1")}, now)
	if err != nil {
		t.Fatal(err)
	}
	visible := func(want string) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			raw, closer, err := d.db.Get(appendValueKey(nil, ns.ID, "k"))
			if err == nil {
				rec, derr := decodeValue(raw)
				got := derr == nil && bytes.Equal(rec.data, []byte(want))
				closer.Close()
				if got {
					return
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s never reached the memtable while the log sync was held", want)
			}
			time.Sleep(time.Millisecond)
		}
	}

	gate.shut()
	defer gate.release() // before Close, when the test fails
	answered := make(chan string, 8)
	var wg sync.WaitGroup
	run := func(name string, f func() error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(); err != nil {
				answered <- name + ": " + err.Error()
				return
			}
			answered <- name
		}()
	}
	run("put v2", func() error {
		_, err := d.PutKey(ctx, "acme", ns.ID, "k", store.PutValue{Data: []byte("v2")}, now)
		return err
	})
	visible("v2")
	run("put v3", func() error {
		_, err := d.PutKey(ctx, "acme", ns.ID, "k", store.PutValue{Data: []byte("v3")}, now)
		return err
	})
	visible("v3") // the second write did not wait for the first one's sync
	run("get", func() error {
		v, err := d.GetKey(ctx, "acme", ns.ID, "k", now)
		if err != nil {
			return err
		}
		defer v.Close()
		if string(v.Data) != "v3" {
			t.Errorf("GET after the writes: %q", v.Data)
		}
		return nil
	})
	run("put if v1", func() error {
		_, err := d.PutKey(ctx, "acme", ns.ID, "k", store.PutValue{Data: []byte("x"), If: store.Condition{Revisions: []store.Revision{w1.Revision}}}, now)
		if err == nil {
			t.Errorf("a write conditional on an overwritten revision succeeded")
		}
		return nil
	})
	run("batch get", func() error {
		res, err := d.Apply(ctx, "acme", ns.ID, []store.Op{{Kind: store.OpGet, Key: "k"}}, now)
		if err == nil && string(res[0].Data) != "v3" {
			t.Errorf("a batch get after the writes: %q", res[0].Data)
		}
		return err
	})
	run("list", func() error {
		keys, _, err := d.ListKeys(ctx, "acme", ns.ID, "", "", 10, now)
		if err == nil && (len(keys) != 1 || keys[0].Key != "k") {
			t.Errorf("a listing after the writes: %+v", keys)
		}
		return err
	})
	other := "other"
	for d.stripe(ns.ID, other) == d.stripe(ns.ID, "k") {
		other += "+"
	}
	run("delete missing", func() error {
		_, err := d.DeleteKey(ctx, "acme", ns.ID, other, now)
		return err
	})
	// The last one shares no stripe with k: it may answer at once.
	if got := <-answered; got != "delete missing" {
		t.Fatalf("%q answered while the log sync was held", got)
	}
	time.Sleep(300 * time.Millisecond)
	select {
	case got := <-answered:
		t.Fatalf("%q answered while the log sync was held", got)
	default:
	}
	gate.release()
	wg.Wait()
	close(answered)
	var got []string
	for a := range answered {
		got = append(got, a)
	}
	if len(got) != 6 {
		t.Fatalf("answers after the sync: %q", got)
	}
	for _, a := range got {
		if strings.Contains(a, ":") {
			t.Errorf("after the sync: %s", a)
		}
	}
	v, err := d.GetKey(ctx, "acme", ns.ID, "k", now)
	if err != nil || string(v.Data) != "v3" {
		t.Fatalf("final value: %v %v", v, err)
	}
	v.Close()
}
