package pebble

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/edgekv/kv"
	"github.com/edgekv/kv/internal/store"
)

// checkPrivate fails the test unless dir is 0700 and everything in it 0600.
// Files that Pebble removes meanwhile (it compacts in the background) are
// skipped.
func checkPrivate(t *testing.T, dir string) {
	t.Helper()
	n := 0
	filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			t.Fatal(err)
		}
		info, err := e.Info()
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			t.Fatal(err)
		}
		want := os.FileMode(0o600)
		if e.IsDir() {
			want = 0o700
		}
		if got := info.Mode().Perm(); got != want {
			t.Errorf("%s is %04o, want %04o", p, got, want)
		}
		n++
		return nil
	})
	if n < 8 {
		t.Fatalf("only %d entries checked under %s", n, dir)
	}
}

// TestStoreIsPrivate: the store's directory is 0700 and every file in it
// 0600, whatever the umask, after writes, flushes, compactions and log
// rotations, while open and after; a store written before kvd kept stores
// private is made private when it opens.
func TestStoreIsPrivate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "store")
	s := buildStore(t, dir, 300, false)
	checkPrivate(t, dir)

	d, err := Open(dir, Options{Logger: quietLog})
	if err != nil {
		t.Fatal(err)
	}
	s.put(t, d, "more", 500)
	if err := d.db.Compact(context.Background(), []byte{0}, []byte{0xff}, false); err != nil {
		t.Fatal(err)
	}
	checkPrivate(t, dir)
	d.Close()

	// As an earlier kvd left it: readable by everyone.
	filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		if e.IsDir() {
			return os.Chmod(p, 0o755)
		}
		return os.Chmod(p, 0o644)
	})
	s.check(t, dir)
	checkPrivate(t, dir)
}

// TestSpaceRefusesWritesBelowTheReserve: with MinFreeSpace, Space().Err()
// refuses writes while the file system has less free space than that, and
// lets them through again once there is room. The free space is the
// memory file system's, set by the test.
func TestSpaceRefusesWritesBelowTheReserve(t *testing.T) {
	mem := vfs.NewMem()
	mem.TestingSetDiskUsage(vfs.DiskUsage{AvailBytes: 1 << 30, TotalBytes: 2 << 30})
	d, err := Open("db", Options{FS: mem, Logger: quietLog, MinFreeSpace: 128 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if d.Space() == nil || d.Space().Err() != nil {
		t.Fatalf("1 GiB free, reserve 128 MiB: %v", d.Space().Err())
	}
	wait := func(what string, refused bool) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for (d.Space().Err() != nil) != refused {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	mem.TestingSetDiskUsage(vfs.DiskUsage{AvailBytes: 100 << 20, TotalBytes: 2 << 30})
	wait("writes to be refused", true)
	if e, ok := d.Space().Err().(*kv.Error); !ok || e.Code != kv.EInsufficientStorage {
		t.Fatalf("refusal %v: want code %s", d.Space().Err(), kv.EInsufficientStorage)
	}
	mem.TestingSetDiskUsage(vfs.DiskUsage{AvailBytes: 200 << 20, TotalBytes: 2 << 30})
	wait("writes to resume", false)

	d2, err := Open(t.TempDir(), Options{Logger: quietLog})
	if err != nil {
		t.Fatal(err)
	}
	defer d2.Close()
	if d2.Space() != nil {
		t.Error("a store without MinFreeSpace has a guard")
	}
}

// TestOpenNeedsRoom: a store is not opened on a file system with almost no
// free space; the error says how much there is.
func TestOpenNeedsRoom(t *testing.T) {
	mem := vfs.NewMem()
	mem.TestingSetDiskUsage(vfs.DiskUsage{AvailBytes: 1 << 20, TotalBytes: 2 << 30})
	_, err := Open("db", Options{FS: mem, Logger: quietLog})
	if err == nil || !strings.Contains(err.Error(), "has 1 MiB free") {
		t.Fatalf("open with 1 MiB free: %v", err)
	}
}

// TestCanceledContext: every method returns the context's error when it is
// done before the work starts, and changes nothing.
func TestCanceledContext(t *testing.T) {
	d, err := Open(t.TempDir(), Options{Logger: quietLog})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	ns := readyNamespace(t, d, "org", damageAt)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var dg store.TokenDigest
	v := store.PutValue{Data: []byte("v"), ContentType: kv.DefaultContentType}
	other := kv.Namespace{ID: kv.NewID(), Org: "org", Name: "other", Status: kv.StatusPending, CreatedAt: damageAt, UpdatedAt: damageAt}
	calls := map[string]func() error{
		"CreateToken": func() error {
			return d.CreateToken(ctx, store.Token{ID: "tok_x", Org: "org", Permissions: kv.AllPermissions}, dg)
		},
		"TokenByDigest":     func() error { _, err := d.TokenByDigest(ctx, dg); return err },
		"CreateNamespace":   func() error { return d.CreateNamespace(ctx, other) },
		"GetNamespace":      func() error { _, err := d.GetNamespace(ctx, "org", ns.ID); return err },
		"ListNamespaces":    func() error { _, _, err := d.ListNamespaces(ctx, "org", 0, 10); return err },
		"MarkDeleting":      func() error { _, err := d.MarkDeleting(ctx, "org", ns.ID, damageAt); return err },
		"ClaimLifecycleJob": func() error { _, _, err := d.ClaimLifecycleJob(ctx, "h", damageAt, time.Minute); return err },
		"CompleteProvision": func() error { return d.CompleteProvision(ctx, ns.ID, "h", kv.StatusProvisionOK, damageAt) },
		"PurgeNamespace":    func() error { return d.PurgeNamespace(ctx, ns.ID, "h") },
		"GetKey":            func() error { _, err := d.GetKey(ctx, "org", ns.ID, "k", damageAt); return err },
		"PutKey":            func() error { _, err := d.PutKey(ctx, "org", ns.ID, "k", v, damageAt); return err },
		"DeleteKey":         func() error { _, err := d.DeleteKey(ctx, "org", ns.ID, "k", damageAt); return err },
		"ListKeys":          func() error { _, _, err := d.ListKeys(ctx, "org", ns.ID, "", "", 10, damageAt); return err },
		"SweepExpired":      func() error { _, err := d.SweepExpired(ctx, damageAt, 10); return err },
		"AddUsage": func() error {
			return d.AddUsage(ctx, []store.UsageDelta{{Org: "org", NamespaceID: ns.ID, Month: damageAt}})
		},
		"Usage":          func() error { _, err := d.Usage(ctx, "org", ns.ID, damageAt, damageAt); return err },
		"ReadChanges":    func() error { _, _, err := d.ReadChanges(ctx, "org", ns.ID, "", 0, 10, false); return err },
		"Head":           func() error { _, err := d.Head(ctx); return err },
		"WaitHead":       func() error { _, err := d.WaitHead(ctx, 0); return err },
		"CompactChanges": func() error { _, err := d.CompactChanges(ctx, damageAt, 10); return err },
		"Snapshot": func() error {
			_, err := d.Snapshot(ctx, "org", ns.ID, "", damageAt, false, func(store.Change) error { return nil })
			return err
		},
	}
	for name, call := range calls {
		if err := call(); !errors.Is(err, context.Canceled) {
			t.Errorf("%s with a canceled context: %v, want context.Canceled", name, err)
		}
	}
	live := context.Background()
	if _, err := d.GetKey(live, "org", ns.ID, "k", damageAt); !errors.Is(err, store.ErrKeyNotFound) {
		t.Errorf("the canceled PutKey wrote: %v", err)
	}
	if got, err := d.GetNamespace(live, "org", ns.ID); err != nil || got.Status != kv.StatusProvisionOK {
		t.Errorf("the canceled MarkDeleting changed the namespace: %+v, %v", got, err)
	}
	if _, err := d.GetNamespace(live, "org", other.ID); !errors.Is(err, store.ErrNamespaceNotFound) {
		t.Errorf("the canceled CreateNamespace created it: %v", err)
	}
}
