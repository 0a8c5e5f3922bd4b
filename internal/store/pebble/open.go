package pebble

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/edgekv/kv/internal/diskguard"
)

// Opening a store safely.
//
// Open never lets Pebble change a directory it has not checked. A missing
// or empty directory becomes a new store. Anything else must be a store kvd
// wrote, intact, before Pebble opens it for writing (which replays its log,
// rewrites its markers and deletes every file its manifest does not list):
//
//   - the directory holds only kvd's and Pebble's files;
//   - Pebble's manifest marker names a manifest that exists;
//   - opened read-only (which writes and deletes nothing), the manifest's
//     sstables are all on disk with their recorded sizes, and every other
//     sstable is a crash's leftover (see manifest.go);
//   - kvd's identity file and layout record agree, and name a layout this
//     kvd knows.
//
// A store that fails a check is refused with an error that names the
// problem, and nothing in it has changed.

// identityName is kvd's identity file: written (atomically) once a new
// store holds its layout record, it says that the directory is a kvd store
// and which layout it has, so that a store whose Pebble files are damaged
// is recognised as one.
const identityName = "KVDSTORE"

// AdminSocket is the name of the Unix socket a running kvd keeps in its
// store's directory for `kvd token` (not the engine's: Open ignores it).
const AdminSocket = "kvd.sock"

type identity struct {
	Store  string `json:"store"` // always "kvd"
	Layout int    `json:"layout"`
}

// minFreeToOpen is the free space a store needs to open: Pebble writes a
// new log, manifest and options file, and flushes the log it replays.
const minFreeToOpen = 4 << 20

// Open opens the engine in dir, or creates it there when dir is missing or
// empty. See the comment above for what it refuses.
func Open(dir string, o Options) (*DB, error) {
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	h := newHealth(log)
	fs := &engineFS{FS: o.FS, h: h}
	if fs.FS == nil {
		fs.FS, fs.private = vfs.Default, true
	}
	fresh, err := inspect(fs, dir)
	if err != nil {
		return nil, err
	}
	if du, err := fs.GetDiskUsage(dir); err == nil && du.AvailBytes < minFreeToOpen {
		return nil, fmt.Errorf("kvd/pebble: the disk holding %s has %s free; opening a store needs at least %s (for its log and the files it writes when it opens): free some space",
			dir, diskguard.Bytes(du.AvailBytes), diskguard.Bytes(minFreeToOpen))
	}
	lock, err := pebble.LockDirectory(dir, fs)
	if err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) { // the lock file could not be opened: permissions, a read-only file system
			return nil, fmt.Errorf("kvd/pebble: cannot write to the data directory %s: %w", dir, err)
		}
		return nil, fmt.Errorf("%w: %s: %v", ErrLocked, dir, err)
	}

	type result struct {
		d   *DB
		err error
	}
	done := make(chan result, 1)
	h.opening.Store(true)
	go func() {
		d, err := openLocked(dir, fs, lock, h, o, fresh)
		done <- result{d, err}
	}()
	select {
	case r := <-done:
		h.opening.Store(false)
		if r.err != nil {
			if !h.failed.Load() { // a failed engine still uses the directory
				lock.Close()
			}
			return nil, r.err
		}
		d := r.d
		if o.MinFreeSpace > 0 {
			d.guard = diskguard.New(diskguard.Config{Reserve: uint64(o.MinFreeSpace), Logger: log, Free: func() (uint64, error) {
				du, err := fs.GetDiskUsage(dir)
				return du.AvailBytes, err
			}})
			h.guard.Store(d.guard)
		}
		notify := o.OnFatal
		if notify == nil {
			notify = func(err error) {
				log.Error("kvd/pebble: the store failed and refuses every call from now on; restart the process", "err", err.Error())
			}
		}
		h.setNotify(notify)
		return d, nil
	case <-h.done:
		return nil, fmt.Errorf("kvd/pebble: open %s: %w", dir, h.cause)
	case err := <-h.openErr:
		// Pebble keeps retrying the flush it cannot write; it holds the
		// directory until it gives up, or the process ends.
		go func() {
			if r := <-done; r.d != nil {
				r.d.Close()
			} else if !h.failed.Load() {
				lock.Close()
			}
		}()
		return nil, fmt.Errorf("kvd/pebble: open %s: flushing its log to disk failed: %w", dir, err)
	}
}

// openLocked opens the store in the locked directory dir: it checks an
// existing store read-only first, then opens it for writing, records its
// layout and identity, and reads the namespace and token tables.
func openLocked(dir string, fs *engineFS, lock *pebble.Lock, h *health, o Options, fresh bool) (_ *DB, err error) {
	defer func() {
		if v := recover(); v != nil { // Pebble panics on some damage it meets replaying a log
			err = fmt.Errorf("kvd/pebble: open %s: %v", dir, v)
		}
	}()
	blocks := o.CacheSize
	if blocks <= 0 {
		blocks = DefaultCacheSize
	}
	// Pebble reserves the memory of its memtables (the mutable one and
	// those being flushed) out of the block cache; without room for two
	// on top, a cache the size of the memtables caches no block at all.
	cache := pebble.NewCache(blocks + 2*memTableSize)
	defer cache.Unref()
	popts := &pebble.Options{
		FS:                 fs,
		Lock:               lock,
		Cache:              cache,
		Logger:             pebbleLogger{h},
		EventListener:      &pebble.EventListener{BackgroundError: h.backgroundError},
		Merger:             usageMerger,
		MemTableSize:       memTableSize,
		FormatMajorVersion: pebble.FormatNewest,
		MaxOpenFiles:       cmp.Or(o.MaxOpenFiles, maxOpenFiles()),
	}
	// Bloom filters spare a write's read of the old value, and a read of a
	// missing key, the sstable blocks of levels that cannot hold the key.
	popts.Levels[0].FilterPolicy = bloom.FilterPolicy(10) // inherited by the levels below

	var found storeCheck
	if !fresh {
		if found, err = verify(fs, dir, popts, h.log); err != nil {
			return nil, err
		}
	}
	pdb, err := pebble.Open(dir, popts)
	if err != nil {
		return nil, fmt.Errorf("kvd/pebble: open %s: %w", dir, err)
	}
	d := &DB{
		db:         pdb,
		h:          h,
		lock:       lock,
		seed:       maphash.MakeSeed(),
		byID:       map[[16]byte]*nsEntry{},
		byName:     map[orgName]*nsEntry{},
		byOrg:      map[string][]*nsEntry{},
		tokens:     newTokenTable(),
		compacting: make(chan struct{}, 1),
	}
	fail := func(err error) (*DB, error) {
		pdb.Close()
		return nil, err
	}
	if d.revs, err = loadRevisions(pdb, time.Now()); err != nil {
		return fail(err)
	}
	if err := d.upgrade(h.log); err != nil {
		return fail(err)
	}
	if found.identity == nil || found.identity.Layout != formatVersion {
		if err := writeIdentity(fs, dir); err != nil {
			return fail(fmt.Errorf("kvd/pebble: write %s: %w", fs.PathJoin(dir, identityName), err))
		}
	}
	if err := d.load(); err != nil {
		return fail(err)
	}
	if fs.private {
		keepPrivate(dir, h.log)
	}
	return d, nil
}

// maxOpenFiles keeps Pebble's table cache well inside the process's limit
// on open files, which connections share.
func maxOpenFiles() int {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil || lim.Cur == 0 {
		return 1000 // Pebble's default
	}
	return int(min(max(lim.Cur/4, 64), 1000))
}

// entryKind is what a directory entry is to Open.
type entryKind int

const (
	entryForeign  entryKind = iota
	entryIgnored            // lost+found, at the root of a file system
	entryPebble             // LOCK, MANIFEST-*, OPTIONS-*, marker.*, temporary files
	entryData               // sstables, blob files and logs: they hold writes
	entryMarker             // the manifest marker
	entryIdentity           // kvd's identity file and its temporary
)

func classify(name string) entryKind {
	digits := func(s string) bool {
		_, err := strconv.ParseUint(s, 10, 64)
		return err == nil
	}
	switch {
	case name == "lost+found", name == AdminSocket:
		return entryIgnored
	case name == identityName, name == identityName+".tmp":
		return entryIdentity
	case strings.HasPrefix(name, "marker.manifest."):
		return entryMarker
	case name == "LOCK", strings.HasPrefix(name, "marker."):
		return entryPebble
	case strings.HasPrefix(name, "MANIFEST-") && digits(name[len("MANIFEST-"):]):
		return entryPebble
	case strings.HasPrefix(name, "OPTIONS-") && digits(name[len("OPTIONS-"):]):
		return entryData // written once the store is open: a store was here
	case strings.HasSuffix(name, ".dbtmp"):
		return entryPebble
	case name == "CURRENT":
		return entryData // a store of Pebble's oldest format
	}
	if i := strings.IndexByte(name, '.'); i > 0 {
		num, ext := name[:i], name[i+1:]
		if j := strings.IndexByte(num, '-'); j > 0 && ext == "log" { // a log's later segment
			num = num[:j]
		}
		if digits(num) && (ext == "sst" || ext == "blob" || ext == "log") {
			return entryData
		}
	}
	return entryForeign
}

// inspect looks at dir before anything is changed in it. It creates a
// missing dir (0700) and reports a new store for it, and for an empty one
// or one a crash left before the store was created (Pebble's lock file, an
// unfinished manifest, no marker, no data).
func inspect(fs *engineFS, dir string) (fresh bool, err error) {
	info, err := fs.Stat(dir)
	if errors.Is(err, os.ErrNotExist) {
		if err := fs.MkdirAll(dir, 0o700); err != nil {
			return false, fmt.Errorf("kvd/pebble: create the data directory %s: %w", dir, err)
		}
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("kvd/pebble: data directory %s: %w", dir, err)
	}
	if !info.IsDir() {
		return false, fmt.Errorf("kvd/pebble: %s is not a directory; --store names a directory of the embedded engine", dir)
	}
	names, err := fs.List(dir)
	if err != nil {
		return false, fmt.Errorf("kvd/pebble: read the data directory %s: %w", dir, err)
	}
	slices.Sort(names)
	var foreign []string
	store := false
	for _, name := range names {
		switch classify(name) {
		case entryForeign:
			foreign = append(foreign, name)
		case entryData, entryMarker, entryIdentity:
			store = true
		}
	}
	if len(foreign) > 0 {
		return false, fmt.Errorf("kvd/pebble: %s holds files that are not a kvd store's (%s); kvd keeps its data in a directory of its own and will not add to this one: give --store a new or empty directory",
			dir, list(foreign, 5))
	}
	return !store, nil
}

// list names up to n items, and how many more there are.
func list(items []string, n int) string {
	if len(items) <= n {
		return strings.Join(items, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(items[:n], ", "), len(items)-n)
}

// storeCheck is what verify found in an existing store.
type storeCheck struct {
	identity *identity // nil without an identity file
}

// damaged is the error for a store that fails a check.
func damaged(dir, problem string) error {
	return fmt.Errorf("kvd/pebble: the store in %s is damaged: %s. kvd has not opened or changed it; restore it from a backup, or move it aside and start on an empty directory", dir, problem)
}

// verify checks an existing store read-only; see the comment at the top.
func verify(fs *engineFS, dir string, popts *pebble.Options, log *slog.Logger) (storeCheck, error) {
	var found storeCheck
	id, err := readIdentity(fs, dir)
	if err != nil {
		return found, damaged(dir, err.Error())
	}
	found.identity = id
	if id != nil && (id.Store != "kvd" || id.Layout < 2) {
		return found, damaged(dir, fmt.Sprintf("its identity file %s is not one kvd writes (%+v)", identityName, *id))
	}
	if id != nil && id.Layout > formatVersion {
		return found, fmt.Errorf("kvd/pebble: the store in %s has layout version %d; this kvd reads up to version %d (a newer kvd wrote it?)", dir, id.Layout, formatVersion)
	}
	desc, err := pebble.Peek(dir, fs)
	if err != nil {
		return found, damaged(dir, fmt.Sprintf("its markers cannot be read (%v)", err))
	}
	if !desc.Exists {
		return found, damaged(dir, "it has no manifest marker (marker.manifest.*), so nothing says which of its files hold the data")
	}
	if _, err := fs.Stat(desc.ManifestFilename); err != nil {
		return found, damaged(dir, fmt.Sprintf("its manifest marker names %s, which cannot be read (%v)", fs.PathBase(desc.ManifestFilename), err))
	}

	// Opening read-only, Pebble checks that every sstable its manifest
	// lists is on disk with its recorded size.
	ro := popts.Clone()
	ro.ReadOnly, ro.ErrorIfNotExists = true, true
	rdb, err := pebble.Open(dir, ro)
	if err != nil {
		return found, damaged(dir, fmt.Sprintf("Pebble cannot open it read-only: %v", err))
	}
	defer rdb.Close()
	if err := checkTables(fs, dir, desc.ManifestFilename, rdb, ro, log); err != nil {
		return found, damaged(dir, err.Error())
	}

	v, closer, err := rdb.Get(formatKey)
	var format []byte
	switch {
	case err == nil:
		format = bytes.Clone(v)
		closer.Close()
	case errors.Is(err, pebble.ErrNotFound):
	default:
		return found, damaged(dir, fmt.Sprintf("its layout record cannot be read (%v)", err))
	}
	switch {
	case len(format) == 1 && format[0] > formatVersion:
		return found, fmt.Errorf("kvd/pebble: the store in %s has layout version %d; this kvd reads up to version %d (a newer kvd wrote it?)", dir, format[0], formatVersion)
	case format != nil && (len(format) != 1 || format[0] < 2): // layout 1 had no record
		return found, damaged(dir, fmt.Sprintf("its layout record holds %x, which no kvd writes", format))
	case id != nil && format == nil:
		return found, damaged(dir, fmt.Sprintf("its identity file says layout %d, but its layout record is missing", id.Layout))
	case id != nil && int(format[0]) < id.Layout:
		// Ahead is an upgrade that a crash cut short before it rewrote
		// the identity file.
		return found, damaged(dir, fmt.Sprintf("its identity file says layout %d, its layout record %d", id.Layout, format[0]))
	}
	// No identity file: a store an earlier kvd wrote. With a layout record
	// it has layout 2; without one, layout 1 (upgraded at once) or, if it
	// holds no record at all, a new store whose creation a crash cut short.
	return found, nil
}

// checkTables looks at the sstables the manifest does not list: Pebble
// has checked, opening the store, that those it lists are all there with
// their recorded sizes.
func checkTables(fs *engineFS, dir, manifest string, rdb *pebble.DB, ro *pebble.Options, log *slog.Logger) error {
	levels, err := rdb.SSTables()
	if err != nil {
		return fmt.Errorf("its sstables cannot be listed (%v)", err)
	}
	listed := map[uint64]bool{}
	covered := &coverage{}
	for _, level := range levels {
		for _, t := range level {
			listed[uint64(t.BackingSSTNum)] = true
			covered.seqs.add(uint64(t.SmallestSeqNum), uint64(t.LargestSeqNum))
			covered.keys.add(t.Smallest.UserKey, t.Largest.UserKey)
		}
	}
	names, err := fs.List(dir)
	if err != nil {
		return fmt.Errorf("it cannot be listed (%v)", err)
	}
	slices.Sort(names)
	var problems, unlisted []string
	for _, name := range names {
		if strings.HasSuffix(name, ".blob") {
			problems = append(problems, name+" is a blob file, which kvd's stores never have")
			continue
		}
		num, ok := strings.CutSuffix(name, ".sst")
		if n, err := strconv.ParseUint(num, 10, 64); ok && err == nil && !listed[n] {
			unlisted = append(unlisted, name)
		}
	}
	if len(unlisted) > 0 && len(problems) == 0 {
		problems = checkUnlisted(fs, dir, manifest, unlisted, covered, ro, log)
	}
	if len(problems) > 0 {
		return errors.New(list(problems, 5))
	}
	return nil
}

// checkUnlisted accepts the sstables the manifest does not list that a
// crash leaves behind (see manifest.go), and returns a problem for each of
// the others.
func checkUnlisted(fs *engineFS, dir, manifest string, unlisted []string, covered *coverage, ro *pebble.Options, log *slog.Logger) []string {
	hist, err := readManifestHistory(fs, manifest)
	if err != nil {
		log.Warn("kvd/pebble: cannot read the manifest's history; judging unlisted sstables by the listed ones alone", "err", err.Error())
		hist.deleted, hist.minLog = nil, math.MaxUint64 // no log is known to be replayed
	}
	if err := logRanges(fs, dir, hist.minLog, &covered.seqs); err != nil {
		return []string{fmt.Sprintf("its logs cannot be listed (%v)", err)}
	}
	covered.merge()
	ropts := readerOptions(ro)
	var problems []string
	for _, name := range unlisted {
		n, _ := strconv.ParseUint(strings.TrimSuffix(name, ".sst"), 10, 64)
		if hist.deleted[n] {
			log.Info("kvd/pebble: an sstable a finished compaction replaced is still on disk (the process stopped before removing it); Pebble removes it", "file", name)
			continue
		}
		found, unreadable := uncoveredWrite(fs, fs.PathJoin(dir, name), ropts, covered)
		switch {
		case unreadable != nil:
			log.Info("kvd/pebble: an sstable that was being written when the process stopped is on disk; Pebble removes it", "file", name, "err", unreadable.Error())
		case !found:
			log.Info("kvd/pebble: an sstable of a flush or compaction the process did not finish is on disk; its writes are in the store's other files, and Pebble removes it", "file", name)
		default:
			problems = append(problems, fmt.Sprintf("%s is on disk but not in the manifest, and holds writes that neither the files the manifest lists nor the log hold", name))
		}
	}
	return problems
}

// readIdentity reads kvd's identity file in dir; nil when there is none.
func readIdentity(fs vfs.FS, dir string) (*identity, error) {
	f, err := fs.Open(fs.PathJoin(dir, identityName))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("its identity file %s cannot be read (%v)", identityName, err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, 4096))
	if err != nil {
		return nil, fmt.Errorf("its identity file %s cannot be read (%v)", identityName, err)
	}
	var id identity
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&id); err != nil || id.Store == "" {
		return nil, fmt.Errorf("its identity file %s is not one kvd writes (%q)", identityName, truncate(b, 64))
	}
	return &id, nil
}

func truncate(b []byte, n int) []byte {
	if len(b) > n {
		return b[:n]
	}
	return b
}

// writeIdentity writes kvd's identity file in dir, atomically: a
// temporary file, synced, renamed, and the directory synced.
func writeIdentity(fs vfs.FS, dir string) error {
	b, _ := json.Marshal(identity{Store: "kvd", Layout: formatVersion})
	tmp := fs.PathJoin(dir, identityName+".tmp")
	f, err := fs.Create(tmp, vfs.WriteCategoryUnspecified)
	if err != nil {
		return err
	}
	_, err = f.Write(append(b, '\n'))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = fs.Rename(tmp, fs.PathJoin(dir, identityName))
	}
	if err != nil {
		return err
	}
	d, err := fs.OpenDir(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// keepPrivate makes dir 0700 and its files 0600: stores written before kvd
// kept them private are made so once they have been checked.
func keepPrivate(dir string, log *slog.Logger) {
	var failed []string
	if err := os.Chmod(dir, 0o700); err != nil {
		failed = append(failed, dir)
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		info, err := e.Info()
		if err != nil || !info.Mode().IsRegular() || info.Mode().Perm() == 0o600 {
			continue
		}
		if err := os.Chmod(filepath.Join(dir, e.Name()), 0o600); err != nil {
			failed = append(failed, e.Name())
		}
	}
	if len(failed) > 0 {
		log.Warn("kvd/pebble: cannot make the store private to its user (directory 0700, files 0600)", "paths", list(failed, 5))
	}
}
