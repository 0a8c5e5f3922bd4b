package pebble

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/edgekv/kv/internal/diskguard"
)

// Why the engine wraps Pebble's file system.
//
// Pebble cannot continue after a failed write or sync of its log (WAL) or
// manifest: it panics or calls Logger.Fatalf and assumes the process dies.
// Some of those panics happen while it has released a mutex that a deferred
// Unlock further up then releases again; when rotateWAL cannot create the
// next log file (too many open files, no space) it panics with DB.mu
// released, and the deferred d.mu.Unlock in commitWrite turns the panic
// into "fatal error: sync: unlock of unlocked mutex", which nothing can
// recover. A sticky log error has the same effect at the next rotation.
//
// So the error never reaches Pebble. engineFS sees every file operation
// first, and on a failed write, sync or creation of a log or manifest file
// (or a failed sync of the directory) it records the failure, reports it
// once (Options.OnFatal: kvd logs it and exits 70) and parks the goroutine
// for good instead of returning. Nothing that was not synced is
// acknowledged: writers waiting for that sync wait until the process ends,
// and every engine call after the failure fails at once.
//
// Creating the next log file is retried for a while when the cause can pass
// (descriptors or space running out), since connections close and space is
// freed; failed writes of sstables, which Pebble retries itself, are
// returned after a pause so that its retries do not spin. Every failed write
// asks the free-space guard to measure again.
//
// On the operating system's file system, the wrapper also keeps the store
// private: directories it creates are 0700 and files 0600.

// walCreateRetry bounds how long creating a log file is retried.
const walCreateRetry = 10 * time.Second

// tableErrorPause is how long a failed sstable write waits before Pebble
// sees it: Pebble retries a failed flush at once, in a loop.
const tableErrorPause = time.Second

// logEvery is how often a repeated error is logged.
const logEvery = 10 * time.Second

// health is the engine's failure state, shared by its file system, its
// Pebble logger and its event listener.
type health struct {
	log    *slog.Logger
	failed atomic.Bool
	done   chan struct{} // closed at the first failure

	mu       sync.Mutex
	cause    error
	notify   func(error) // set when Open returns
	notified bool

	guard   atomic.Pointer[diskguard.Guard]
	opening atomic.Bool
	openErr chan error // a background error while Open runs

	bgLog, errLog, walLog logLimiter
}

func newHealth(log *slog.Logger) *health {
	return &health{log: log, done: make(chan struct{}), openErr: make(chan error, 1)}
}

// fail records the first unsurvivable error and reports it.
func (h *health) fail(err error) {
	h.mu.Lock()
	if h.cause != nil {
		h.mu.Unlock()
		return
	}
	h.cause = err
	h.failed.Store(true)
	close(h.done)
	notify := h.notify
	h.notified = notify != nil
	h.mu.Unlock()
	if notify != nil {
		notify(err)
	}
}

// fatal records err and never returns: see the comment at the top.
func (h *health) fatal(err error) {
	h.fail(err)
	select {} // parked until the process ends
}

// setNotify installs the failure callback once Open has succeeded, and
// calls it if the engine failed in between.
func (h *health) setNotify(fn func(error)) {
	h.mu.Lock()
	h.notify = fn
	cause, late := h.cause, h.cause != nil && !h.notified
	h.notified = h.notified || late
	h.mu.Unlock()
	if late {
		fn(cause)
	}
}

// err is what every call returns once the engine has failed.
func (h *health) err() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return fmt.Errorf("%w (%v)", errFailed, h.cause)
}

// writeFailed tells the free-space guard that a write failed.
func (h *health) writeFailed() {
	if g := h.guard.Load(); g != nil {
		g.Check()
	}
}

// backgroundError is Pebble's report of a failed flush or compaction, which
// it retries.
func (h *health) backgroundError(err error) {
	h.writeFailed()
	if h.opening.Load() {
		select {
		case h.openErr <- err:
		default:
		}
	}
	h.bgLog.log(h.log, "pebble: background error; Pebble retries it", "err", err.Error())
}

// logLimiter logs a repeated message at most once per logEvery, with the
// number of repetitions it did not log.
type logLimiter struct {
	mu         sync.Mutex
	last       time.Time
	suppressed int
}

func (l *logLimiter) log(lg *slog.Logger, msg string, args ...any) {
	l.mu.Lock()
	now := time.Now()
	if !l.last.IsZero() && now.Sub(l.last) < logEvery {
		l.suppressed++
		l.mu.Unlock()
		return
	}
	n := l.suppressed
	l.last, l.suppressed = now, 0
	l.mu.Unlock()
	if n > 0 {
		args = append(args, "repeated", n)
	}
	lg.Error(msg, args...)
}

// fileKind is what a file is to Pebble, from its name.
type fileKind int

const (
	otherFile fileKind = iota // OPTIONS, temporary files, kvd's identity file
	walFile                   // NNNNNN.log
	metaFile                  // MANIFEST-NNNNNN, marker.*
	tableFile                 // NNNNNN.sst, NNNNNN.blob
	dirFile                   // a directory opened for syncing
)

func kindOf(fs vfs.FS, name string) fileKind {
	base := fs.PathBase(name)
	switch {
	case strings.HasSuffix(base, ".log"):
		return walFile
	case strings.HasPrefix(base, "MANIFEST-"), strings.HasPrefix(base, "marker."):
		return metaFile
	case strings.HasSuffix(base, ".sst"), strings.HasSuffix(base, ".blob"):
		return tableFile
	}
	return otherFile
}

// unsurvivable reports whether Pebble cannot continue after a failed write
// to a file of kind k.
func (k fileKind) unsurvivable() bool { return k == walFile || k == metaFile || k == dirFile }

// transient reports whether err is a shortage that can pass.
func transient(err error) bool {
	for _, e := range []syscall.Errno{syscall.EMFILE, syscall.ENFILE, syscall.ENOSPC, syscall.EDQUOT, syscall.ENOMEM, syscall.EINTR} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

type engineFS struct {
	vfs.FS
	h       *health
	private bool // the operating system's file system: keep files 0600, directories 0700
}

var _ vfs.FS = (*engineFS)(nil)

func (fs *engineFS) Unwrap() vfs.FS { return fs.FS }

// failed handles a failed write-side operation op on name: it parks for an
// unsurvivable one, pauses for an sstable, and returns otherwise.
func (fs *engineFS) failed(k fileKind, op, name string, err error) {
	fs.h.writeFailed()
	switch {
	case k.unsurvivable():
		if !strings.Contains(err.Error(), name) { // an *os.PathError names it already
			err = fmt.Errorf("%s %s: %w", op, name, err)
		}
		fs.h.fatal(err)
	case k == tableFile:
		time.Sleep(tableErrorPause)
	}
}

func (fs *engineFS) wrap(f vfs.File, k fileKind, name string) vfs.File {
	if fs.private {
		if fd := f.Fd(); fd != vfs.InvalidFd {
			syscall.Fchmod(int(fd), 0o600) // best effort: the directory is 0700 anyway
		}
	}
	return &engineFile{File: f, fs: fs, kind: k, name: name}
}

// create runs a file creation, retrying a log file's for a while when the
// cause can pass.
func (fs *engineFS) create(k fileKind, name string, first error, again func() (vfs.File, error)) (vfs.File, error) {
	err := first
	if k == walFile {
		delay := 10 * time.Millisecond
		deadline := time.Now().Add(walCreateRetry)
		for transient(err) && time.Now().Before(deadline) {
			fs.h.writeFailed()
			fs.h.walLog.log(fs.h.log, "kvd/pebble: cannot create the next log file; retrying", "file", name, "err", err.Error())
			time.Sleep(delay)
			delay = min(2*delay, time.Second)
			var f vfs.File
			if f, err = again(); err == nil {
				return f, nil
			}
		}
	}
	fs.failed(k, "create", name, err)
	return nil, err
}

func (fs *engineFS) Create(name string, category vfs.DiskWriteCategory) (vfs.File, error) {
	k := kindOf(fs, name)
	f, err := fs.FS.Create(name, category)
	if err != nil {
		if f, err = fs.create(k, name, err, func() (vfs.File, error) { return fs.FS.Create(name, category) }); err != nil {
			return nil, err
		}
	}
	return fs.wrap(f, k, name), nil
}

func (fs *engineFS) OpenReadWrite(name string, category vfs.DiskWriteCategory, opts ...vfs.OpenOption) (vfs.File, error) {
	k := kindOf(fs, name)
	f, err := fs.FS.OpenReadWrite(name, category, opts...)
	if err != nil {
		if f, err = fs.create(k, name, err, func() (vfs.File, error) { return fs.FS.OpenReadWrite(name, category, opts...) }); err != nil {
			return nil, err
		}
	}
	return fs.wrap(f, k, name), nil
}

// ReuseForWrite recycles an old log file: a rename, then an open. A retry
// after the rename succeeded only opens.
func (fs *engineFS) ReuseForWrite(oldname, newname string, category vfs.DiskWriteCategory) (vfs.File, error) {
	k := kindOf(fs, newname)
	f, err := fs.FS.ReuseForWrite(oldname, newname, category)
	if err != nil {
		again := func() (vfs.File, error) {
			if _, serr := fs.FS.Stat(newname); serr == nil {
				return fs.FS.OpenReadWrite(newname, category)
			}
			return fs.FS.ReuseForWrite(oldname, newname, category)
		}
		if f, err = fs.create(k, newname, err, again); err != nil {
			return nil, err
		}
	}
	return fs.wrap(f, k, newname), nil
}

func (fs *engineFS) OpenDir(name string) (vfs.File, error) {
	f, err := fs.FS.OpenDir(name)
	if err != nil {
		return nil, err
	}
	return &engineFile{File: f, fs: fs, kind: dirFile, name: name}, nil
}

func (fs *engineFS) MkdirAll(dir string, perm os.FileMode) error {
	if fs.private {
		perm = 0o700
	}
	return fs.FS.MkdirAll(dir, perm)
}

func (fs *engineFS) Lock(name string) (io.Closer, error) {
	c, err := fs.FS.Lock(name)
	if err == nil && fs.private {
		os.Chmod(name, 0o600) // best effort, as in wrap
	}
	return c, err
}

// engineFile reports its failed writes and syncs to its engineFS.
type engineFile struct {
	vfs.File
	fs   *engineFS
	kind fileKind
	name string
}

func (f *engineFile) Write(p []byte) (int, error) {
	n, err := f.File.Write(p)
	if err != nil {
		f.fs.failed(f.kind, "write", f.name, err)
	}
	return n, err
}

func (f *engineFile) WriteAt(p []byte, off int64) (int, error) {
	n, err := f.File.WriteAt(p, off)
	if err != nil {
		f.fs.failed(f.kind, "write", f.name, err)
	}
	return n, err
}

func (f *engineFile) Sync() error {
	err := f.File.Sync()
	if err != nil {
		f.fs.failed(f.kind, "sync", f.name, err)
	}
	return err
}

func (f *engineFile) SyncData() error {
	err := f.File.SyncData()
	if err != nil {
		f.fs.failed(f.kind, "sync", f.name, err)
	}
	return err
}

func (f *engineFile) SyncTo(length int64) (bool, error) {
	full, err := f.File.SyncTo(length)
	if err != nil {
		f.fs.failed(f.kind, "sync", f.name, err)
	}
	return full, err
}

// Close of a log or manifest file writes what is buffered; a directory's
// Close writes nothing.
func (f *engineFile) Close() error {
	err := f.File.Close()
	if err != nil && f.kind != dirFile {
		f.fs.failed(f.kind, "close", f.name, err)
	}
	return err
}
