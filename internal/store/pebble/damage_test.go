package pebble

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	pebbledb "github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/edgekv/kv"
	"github.com/edgekv/kv/internal/store"
)

var quietLog = slog.New(slog.NewTextHandler(io.Discard, nil))

var damageAt = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

// testStore is a store built through the engine, with its data spread over
// flushed and compacted sstables and the log, and what it holds.
type testStore struct {
	dir  string
	ns   kv.Namespace
	keys map[string]string
}

// buildStore writes a new store in dir through the engine: 12 MiB of
// values, compacted (into several sstables of Pebble's 4 MiB target size),
// then three rounds of per keys, each flushed, all compacted again when
// settle is set, and 50 keys left in the log only.
func buildStore(t *testing.T, dir string, per int, settle bool) testStore {
	t.Helper()
	ctx := context.Background()
	d, err := Open(dir, Options{Logger: quietLog})
	if err != nil {
		t.Fatal(err)
	}
	s := testStore{dir: dir, ns: readyNamespace(t, d, "org", damageAt), keys: map[string]string{}}
	rng := rand.New(rand.NewPCG(uint64(per), 1))
	put := func(k string, size int) {
		b := make([]byte, size)
		for i := range b {
			b[i] = byte('a' + rng.IntN(26)) // incompressible enough
		}
		if _, err := d.PutKey(ctx, "org", s.ns.ID, k, store.PutValue{Data: b, ContentType: kv.DefaultContentType}, damageAt); err != nil {
			t.Fatal(err)
		}
		s.keys[k] = string(b)
	}
	for i := range 1536 {
		put(fmt.Sprintf("a%05d", i), 8<<10)
	}
	for r := range 4 {
		if err := d.db.Flush(); err != nil {
			t.Fatal(err)
		}
		if r == 0 {
			if err := d.db.Compact(ctx, []byte{0}, []byte{0xff}, false); err != nil {
				t.Fatal(err)
			}
		}
		if r < 3 {
			for i := range per {
				put(fmt.Sprintf("r%d-%05d", r, i), 1<<10)
			}
		}
	}
	if settle {
		if err := d.db.Compact(ctx, []byte{0}, []byte{0xff}, false); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 50 {
		put(fmt.Sprintf("tail-%04d", i), 100)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if n := len(filesLike(t, dir, ".sst")); n < 4 {
		t.Fatalf("the store has %d sstables; the test wants several", n)
	}
	return s
}

// put writes n more keys through d, and flushes them.
func (s testStore) put(t *testing.T, d *DB, prefix string, n int) {
	t.Helper()
	for i := range n {
		k, v := fmt.Sprintf("%s-%05d", prefix, i), strings.Repeat(prefix, 100)
		if _, err := d.PutKey(context.Background(), "org", s.ns.ID, k, store.PutValue{Data: []byte(v), ContentType: kv.DefaultContentType}, damageAt); err != nil {
			t.Fatal(err)
		}
		s.keys[k] = v
	}
	if err := d.db.Flush(); err != nil {
		t.Fatal(err)
	}
}

// check opens the store and reads back every key it holds.
func (s testStore) check(t *testing.T, dir string) {
	t.Helper()
	ctx := context.Background()
	d, err := Open(dir, Options{Logger: quietLog})
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	defer d.Close()
	for k, want := range s.keys {
		v, err := d.GetKey(ctx, "org", s.ns.ID, k, damageAt)
		if err != nil {
			t.Fatalf("get %s: %v", k, err)
		}
		if got := string(v.Data); got != want {
			t.Fatalf("get %s: %q, want %q", k, got, want)
		}
		v.Close()
	}
}

func filesLike(t *testing.T, dir, suffix string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), suffix) {
			out = append(out, e.Name())
		}
	}
	slices.Sort(out)
	return out
}

func copyDir(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		to := filepath.Join(dst, rel)
		if e.IsDir() {
			return os.MkdirAll(to, 0o700)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(to, b, 0o600)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// snapshot is every file under dir with a hash of its contents.
func snapshot(t *testing.T, dir string) map[string][32]byte {
	t.Helper()
	out := map[string][32]byte{}
	err := filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		out[rel] = sha256.Sum256(b)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func diffSnapshots(before, after map[string][32]byte) []string {
	var d []string
	for name, h := range before {
		switch g, ok := after[name]; {
		case !ok:
			d = append(d, name+" removed")
		case g != h:
			d = append(d, name+" changed")
		}
	}
	for name := range after {
		if _, ok := before[name]; !ok {
			d = append(d, name+" added")
		}
	}
	slices.Sort(d)
	return d
}

// rawPebble opens the store with Pebble alone, bypassing the engine's
// checks, to damage what only Pebble can reach.
func rawPebble(t *testing.T, dir string, f func(db *pebbledb.DB)) {
	t.Helper()
	db, err := pebbledb.Open(dir, &pebbledb.Options{Merger: usageMerger, FormatMajorVersion: pebbledb.FormatNewest, Logger: pebbleLogger{newHealth(quietLog)}})
	if err != nil {
		t.Fatal(err)
	}
	f(db)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
}

// newestTable names the sstable of the store in dir with the newest
// writes.
func newestTable(t *testing.T, dir string) string {
	t.Helper()
	db, err := pebbledb.Open(dir, &pebbledb.Options{Merger: usageMerger, ReadOnly: true, Logger: pebbleLogger{newHealth(quietLog)}})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	levels, err := db.SSTables()
	if err != nil {
		t.Fatal(err)
	}
	var name string
	var newest uint64
	for _, level := range levels {
		for _, tb := range level {
			if uint64(tb.LargestSeqNum) > newest {
				newest, name = uint64(tb.LargestSeqNum), fmt.Sprintf("%06d.sst", uint64(tb.BackingSSTNum))
			}
		}
	}
	if name == "" {
		t.Fatal("no sstable holds a write above sequence number 0")
	}
	return name
}

func truncateFile(t *testing.T, path string, size func(n int64) int64) {
	t.Helper()
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, size(info.Size())); err != nil {
		t.Fatal(err)
	}
}

func manifestOf(t *testing.T, dir string) string {
	t.Helper()
	desc, err := pebbledb.Peek(dir, vfs.Default)
	if err != nil || !desc.Exists {
		t.Fatalf("peek %s: %v, %+v", dir, err, desc)
	}
	return desc.ManifestFilename
}

// TestOpenRefusesDamagedStores damages copies of a store one way each and
// checks that Open refuses every one with an error naming the problem,
// and changes nothing: every file is byte for byte what it was, and no
// file is added or removed.
func TestOpenRefusesDamagedStores(t *testing.T) {
	base := buildStore(t, filepath.Join(t.TempDir(), "base"), 300, true)
	// Another store, with more writes than base holds: its newest sstable
	// holds writes base has no trace of.
	other := buildStore(t, filepath.Join(t.TempDir(), "other"), 1500, false)
	newest := newestTable(t, other.dir)

	for _, tc := range []struct {
		name   string
		damage func(t *testing.T, dir string)
		want   string
	}{
		{"manifest marker removed", func(t *testing.T, dir string) {
			for _, m := range filesLike(t, dir, "") {
				if strings.HasPrefix(m, "marker.manifest.") {
					os.Remove(filepath.Join(dir, m))
				}
			}
		}, "no manifest marker"},
		{"manifest removed", func(t *testing.T, dir string) {
			os.Remove(manifestOf(t, dir))
		}, "cannot be read"},
		{"manifest emptied", func(t *testing.T, dir string) {
			truncateFile(t, manifestOf(t, dir), func(int64) int64 { return 0 })
		}, "damaged"},
		{"manifest truncated to 10 bytes", func(t *testing.T, dir string) {
			truncateFile(t, manifestOf(t, dir), func(int64) int64 { return 10 })
		}, "damaged"},
		{"manifest truncated to a third", func(t *testing.T, dir string) {
			truncateFile(t, manifestOf(t, dir), func(n int64) int64 { return n / 3 })
		}, "damaged"},
		{"manifest truncated to half", func(t *testing.T, dir string) {
			truncateFile(t, manifestOf(t, dir), func(n int64) int64 { return n / 2 })
		}, "damaged"},
		{"an sstable deleted", func(t *testing.T, dir string) {
			os.Remove(filepath.Join(dir, filesLike(t, dir, ".sst")[0]))
		}, "file does not exist"},
		{"an sstable truncated", func(t *testing.T, dir string) {
			truncateFile(t, filepath.Join(dir, filesLike(t, dir, ".sst")[0]), func(n int64) int64 { return n - 100 })
		}, "object size mismatch"},
		{"a stray sstable with writes the store does not hold", func(t *testing.T, dir string) {
			b, err := os.ReadFile(filepath.Join(other.dir, newest))
			if err != nil {
				t.Fatal(err)
			}
			os.WriteFile(filepath.Join(dir, "999999.sst"), b, 0o600)
		}, "999999.sst is on disk but not in the manifest, and holds writes"},
		{"a blob file", func(t *testing.T, dir string) {
			os.WriteFile(filepath.Join(dir, "999999.blob"), []byte("x"), 0o600)
		}, "blob file"},
		{"layout record removed", func(t *testing.T, dir string) {
			rawPebble(t, dir, func(db *pebbledb.DB) { db.Delete(formatKey, pebbledb.Sync) })
		}, "layout record is missing"},
		{"layout record corrupted", func(t *testing.T, dir string) {
			rawPebble(t, dir, func(db *pebbledb.DB) { db.Set(formatKey, []byte{7, 7}, pebbledb.Sync) })
		}, "layout record holds 0707"},
		{"layout record from the future", func(t *testing.T, dir string) {
			rawPebble(t, dir, func(db *pebbledb.DB) { db.Set(formatKey, []byte{formatVersion + 1}, pebbledb.Sync) })
		}, fmt.Sprintf("layout version %d; this kvd reads up to version %d", formatVersion+1, formatVersion)},
		{"identity file from the future", func(t *testing.T, dir string) {
			os.WriteFile(filepath.Join(dir, identityName), fmt.Appendf(nil, `{"store":"kvd","layout":%d}`, formatVersion+1), 0o600)
		}, fmt.Sprintf("layout version %d; this kvd reads up to version %d", formatVersion+1, formatVersion)},
		{"identity file corrupted", func(t *testing.T, dir string) {
			os.WriteFile(filepath.Join(dir, identityName), []byte("\x00garbage"), 0o600)
		}, "identity file KVDSTORE is not one kvd writes"},
		{"identity file with a layout no kvd writes", func(t *testing.T, dir string) {
			os.WriteFile(filepath.Join(dir, identityName), []byte(`{"store":"kvd","layout":1}`), 0o600)
		}, "identity file KVDSTORE is not one kvd writes"},
		{"only the identity and lock files are left", func(t *testing.T, dir string) {
			for _, f := range filesLike(t, dir, "") {
				if f != identityName && f != "LOCK" {
					os.Remove(filepath.Join(dir, f))
				}
			}
		}, "no manifest marker"},
		{"a file that is not the store's", func(t *testing.T, dir string) {
			os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("mine"), 0o600)
		}, "holds files that are not a kvd store's (notes.txt)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "store")
			copyDir(t, base.dir, dir)
			tc.damage(t, dir)
			before := snapshot(t, dir)
			d, err := Open(dir, Options{Logger: quietLog})
			if err == nil {
				d.Close()
				t.Fatal("a damaged store was opened")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not say %q", err, tc.want)
			}
			t.Logf("refused: %v", err)
			if diff := diffSnapshots(before, snapshot(t, dir)); len(diff) > 0 {
				t.Errorf("Open changed the damaged store: %v", diff)
			}
		})
	}

	t.Run("a directory that is not a store", func(t *testing.T) {
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, "photo.jpg"), []byte("jpeg"), 0o644)
		os.Mkdir(filepath.Join(dir, "projects"), 0o755)
		before := snapshot(t, dir)
		if d, err := Open(dir, Options{Logger: quietLog}); err == nil || !strings.Contains(err.Error(), "not a kvd store's (photo.jpg, projects)") {
			if err == nil {
				d.Close()
			}
			t.Fatalf("open a directory of other files: %v", err)
		}
		if diff := diffSnapshots(before, snapshot(t, dir)); len(diff) > 0 {
			t.Errorf("Open changed the directory: %v", diff)
		}
	})
	t.Run("the intact store opens with all its keys", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "store")
		copyDir(t, base.dir, dir)
		base.check(t, dir)
	})
}

// TestOpenAcceptsCrashLeftovers builds the states a crash leaves and checks
// that they open, with every key, and that Pebble then removes the
// leftovers: sstables the manifest does not list whose writes are in the
// log (a flush the crash interrupted) or in the listed sstables (a
// compaction it interrupted), and the inputs of a compaction whose deletion
// the manifest records.
func TestOpenAcceptsCrashLeftovers(t *testing.T) {
	ctx := context.Background()
	reopen := func(t *testing.T, dir string, f func(d *DB)) {
		t.Helper()
		d, err := Open(dir, Options{Logger: quietLog})
		if err != nil {
			t.Fatal(err)
		}
		f(d)
		if err := d.Close(); err != nil {
			t.Fatal(err)
		}
	}
	compact := func(d *DB) {
		if err := d.db.Compact(ctx, []byte{0}, []byte{0xff}, false); err != nil {
			t.Fatal(err)
		}
	}
	// fresh gives the store a flushed sstable of new keys, for a compaction
	// to merge.
	n := 0
	fresh := func(s testStore) func(d *DB) {
		return func(d *DB) { n++; s.put(t, d, fmt.Sprintf("new%d", n), 200) }
	}
	// leftovers copies the sstables dir gained since before into before.
	leftovers := func(t *testing.T, dir, before string, had map[string]bool) []string {
		t.Helper()
		var added []string
		for _, f := range filesLike(t, dir, ".sst") {
			if !had[f] {
				added = append(added, f)
				b, _ := os.ReadFile(filepath.Join(dir, f))
				os.WriteFile(filepath.Join(before, f), b, 0o600)
			}
		}
		if len(added) == 0 {
			t.Fatal("the step created no sstable")
		}
		return added
	}
	tables := func(t *testing.T, dir string) map[string]bool {
		m := map[string]bool{}
		for _, f := range filesLike(t, dir, ".sst") {
			m[f] = true
		}
		return m
	}
	gone := func(t *testing.T, dir string, files []string) {
		t.Helper()
		for _, f := range files {
			if _, err := os.Stat(filepath.Join(dir, f)); err == nil {
				t.Errorf("the leftover %s is still there after opening", f)
			}
		}
	}

	t.Run("output of an interrupted flush", func(t *testing.T) {
		s := buildStore(t, filepath.Join(t.TempDir(), "store"), 300, true)
		before := filepath.Join(t.TempDir(), "before")
		copyDir(t, s.dir, before)
		had := tables(t, s.dir)
		reopen(t, s.dir, func(*DB) {}) // opening flushes the log
		added := leftovers(t, s.dir, before, had)
		s.check(t, before)
		gone(t, before, added)
	})
	// A compaction has something to do once level 0 has an sstable; one
	// that Pebble's own compactions got to first leaves nothing, and the
	// step is tried again on a new one.
	t.Run("output of an interrupted compaction", func(t *testing.T) {
		s := buildStore(t, filepath.Join(t.TempDir(), "store"), 300, true)
		for attempt := 0; ; attempt++ {
			reopen(t, s.dir, fresh(s)) // an sstable of new keys in level 0
			before := filepath.Join(t.TempDir(), "before")
			copyDir(t, s.dir, before)
			had := tables(t, s.dir)
			reopen(t, s.dir, compact)
			if maps.Equal(had, tables(t, s.dir)) && attempt < 5 {
				continue
			}
			added := leftovers(t, s.dir, before, had)
			s.check(t, before)
			gone(t, before, added)
			return
		}
	})
	t.Run("inputs of a finished compaction", func(t *testing.T) {
		s := buildStore(t, filepath.Join(t.TempDir(), "store"), 300, true)
		for attempt := 0; ; attempt++ {
			inputs := map[string][]byte{}
			reopen(t, s.dir, func(d *DB) {
				s.put(t, d, fmt.Sprintf("new%d", attempt), 200)
				for f := range tables(t, s.dir) {
					inputs[f], _ = os.ReadFile(filepath.Join(s.dir, f))
				}
				compact(d)
			})
			var restored []string
			for f, b := range inputs {
				if _, err := os.Stat(filepath.Join(s.dir, f)); errors.Is(err, os.ErrNotExist) {
					os.WriteFile(filepath.Join(s.dir, f), b, 0o600)
					restored = append(restored, f)
				}
			}
			if len(restored) == 0 && attempt < 5 {
				continue
			}
			if len(restored) == 0 {
				t.Fatal("no compaction removed an sstable")
			}
			s.check(t, s.dir)
			gone(t, s.dir, restored)
			return
		}
	})
}

// TestOpenCreates: a missing directory, an empty one, one holding only
// lost+found, and one a crash left while creating a store (a lock file
// and an empty manifest) become new stores.
func TestOpenCreates(t *testing.T) {
	for name, prepare := range map[string]func(dir string){
		"missing":    func(dir string) {},
		"empty":      func(dir string) { os.Mkdir(dir, 0o755) },
		"lost+found": func(dir string) { os.MkdirAll(filepath.Join(dir, "lost+found"), 0o700) },
		"cut creation": func(dir string) {
			os.Mkdir(dir, 0o755)
			os.WriteFile(filepath.Join(dir, "LOCK"), nil, 0o644)
			os.WriteFile(filepath.Join(dir, "MANIFEST-000001"), nil, 0o644)
		},
	} {
		t.Run(name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "parent", "store")
			prepare(dir)
			d, err := Open(dir, Options{Logger: quietLog})
			if err != nil {
				t.Fatal(err)
			}
			ns := readyNamespace(t, d, "org", damageAt)
			d.Close()
			id, err := os.ReadFile(filepath.Join(dir, identityName))
			if err != nil || !bytes.Contains(id, fmt.Appendf(nil, `"layout":%d`, formatVersion)) {
				t.Fatalf("identity file %q, %v", id, err)
			}
			d, err = Open(dir, Options{Logger: quietLog})
			if err != nil {
				t.Fatalf("reopen: %v", err)
			}
			defer d.Close()
			if _, err := d.GetNamespace(context.Background(), "org", ns.ID); err != nil {
				t.Fatalf("namespace after reopening: %v", err)
			}
		})
	}
}

// TestOpenRecordsIdentityOfEarlierStores: a store an earlier kvd wrote
// (a layout record, no identity file) opens and gets its identity file,
// after which losing its layout record is noticed.
func TestOpenRecordsIdentityOfEarlierStores(t *testing.T) {
	s := buildStore(t, filepath.Join(t.TempDir(), "store"), 100, true)
	if err := os.Remove(filepath.Join(s.dir, identityName)); err != nil {
		t.Fatal(err)
	}
	s.check(t, s.dir)
	if _, err := os.Stat(filepath.Join(s.dir, identityName)); err != nil {
		t.Fatalf("no identity file after opening: %v", err)
	}
	rawPebble(t, s.dir, func(db *pebbledb.DB) { db.Delete(formatKey, pebbledb.Sync) })
	if d, err := Open(s.dir, Options{Logger: quietLog}); err == nil || !strings.Contains(err.Error(), "layout record is missing") {
		if err == nil {
			d.Close()
		}
		t.Fatalf("open without the layout record: %v", err)
	}
}
