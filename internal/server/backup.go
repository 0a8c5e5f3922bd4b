package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/edgekv/kv/internal/store/pebble"
)

// Backups of the embedded engine: a checkpoint taken by the running kvd
// through its admin channel (or by this process on a store no kvd holds),
// written beside the destination, checked, then renamed into place, so a
// destination that exists is always a whole, checked backup.

// ErrBackupPostgres is returned for a PostgreSQL store, whose backups are
// the database's own (pg_dump, base backups with WAL archiving).
var ErrBackupPostgres = errors.New("the store is a PostgreSQL database: back it up with the database's tools (pg_dump, or base backups with WAL archiving; see the README)")

// Backup writes a checked point-in-time copy of the embedded store
// cfg.Store to dest, which must not exist or be an empty directory.
func Backup(ctx context.Context, cfg Config, dest string) (pebble.CheckReport, error) {
	var r pebble.CheckReport
	if isPostgresURL(cfg.Store) {
		return r, ErrBackupPostgres
	}
	partial, err := prepareTarget(cfg.Store, dest)
	if err != nil {
		return r, err
	}
	defer os.RemoveAll(partial)
	if err := checkpoint(ctx, cfg, partial); err != nil {
		return r, err
	}
	return checkAndPlace(partial, dest, "the backup")
}

// checkpoint has the store's checkpoint written to dir: by the kvd that
// runs on it, or here when none does.
func checkpoint(ctx context.Context, cfg Config, dir string) error {
	if c, err := dialAdmin(filepath.Join(cfg.Store, pebble.AdminSocket)); err == nil {
		defer c.Close()
		c.hc.Timeout = 0 // a copy to another disk takes as long as it takes; ctx bounds it
		return c.call(ctx, "POST", "/backup", adminBackup{Dir: dir}, &struct{}{})
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if _, err := os.Stat(cfg.Store); err != nil {
		return fmt.Errorf("no store at %s: %w", cfg.Store, err)
	}
	st, err := OpenStore(ctx, cfg)
	if errors.Is(err, ErrStoreLocked) {
		return fmt.Errorf("a kvd holds %s, but its admin channel (%s) does not answer: is it an older kvd, or run by another user?", cfg.Store, pebble.AdminSocket)
	}
	if err != nil {
		return err
	}
	defer st.Close()
	return st.(*pebble.DB).Checkpoint(ctx, dir)
}

// adminBackup asks a running kvd for a checkpoint in Dir (absolute, not
// existing).
type adminBackup struct {
	Dir string `json:"dir"`
}

// Restore copies the backup in from to the directory dir, which must not
// exist or be empty, once the backup has passed its check.
func Restore(from, dir string) (pebble.CheckReport, error) {
	r, err := pebble.Check(from)
	if err != nil {
		return r, err
	}
	if len(r.Problems) > 0 {
		return r, fmt.Errorf("%s failed its check, so it is not restored: %s", from, strings.Join(r.Problems, "; "))
	}
	partial, err := prepareTarget(from, dir)
	if err != nil {
		return r, err
	}
	defer os.RemoveAll(partial)
	if err := copyStore(from, partial); err != nil {
		return r, err
	}
	return checkAndPlace(partial, dir, "the restored copy")
}

// checkAndPlace checks the store built in partial and, if it is sound,
// renames it to dest.
func checkAndPlace(partial, dest, what string) (pebble.CheckReport, error) {
	r, err := pebble.Check(partial)
	if err != nil {
		return r, err
	}
	if len(r.Problems) > 0 {
		return r, fmt.Errorf("%s failed its check: %s", what, strings.Join(r.Problems, "; "))
	}
	return r, place(partial, dest)
}

// prepareTarget checks that target may be written (it does not exist, or
// is an empty directory, and is not inside src) and returns the path of
// the directory to build it in, beside it.
func prepareTarget(src, target string) (string, error) {
	absSrc, err := filepath.Abs(src)
	if err != nil {
		return "", err
	}
	abs, err := filepath.Abs(target)
	if err != nil {
		return "", err
	}
	if rel, err := filepath.Rel(absSrc, abs); err == nil && (rel == "." || !strings.HasPrefix(rel, "..")) {
		return "", fmt.Errorf("%s is inside %s; choose a directory outside it (on another disk, ideally)", target, src)
	}
	switch entries, err := os.ReadDir(abs); {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return "", err
	case len(entries) > 0:
		return "", fmt.Errorf("%s is not empty; choose a new directory", target)
	default:
		if err := os.Remove(abs); err != nil {
			return "", err
		}
	}
	if err := os.MkdirAll(filepath.Dir(abs), 0o700); err != nil {
		return "", err
	}
	partial := fmt.Sprintf("%s.partial-%d", abs, os.Getpid())
	os.RemoveAll(partial) // left by a run that died with this pid
	return partial, nil
}

// place renames the finished partial to dest and syncs their directory.
func place(partial, dest string) error {
	abs, err := filepath.Abs(dest)
	if err != nil {
		return err
	}
	if err := os.Rename(partial, abs); err != nil {
		return err
	}
	return syncDir(filepath.Dir(abs))
}

// copyStore copies the files of the store in from to the new directory to,
// each synced, skipping the lock and the admin socket.
func copyStore(from, to string) error {
	entries, err := os.ReadDir(from)
	if err != nil {
		return err
	}
	if err := os.Mkdir(to, 0o700); err != nil {
		return err
	}
	for _, e := range entries {
		name := e.Name()
		if name == "LOCK" || name == pebble.AdminSocket {
			continue
		}
		if !e.Type().IsRegular() {
			return fmt.Errorf("%s holds %s, which is not a regular file", from, name)
		}
		if err := copyFile(filepath.Join(from, name), filepath.Join(to, name)); err != nil {
			return err
		}
	}
	return syncDir(to)
}

func copyFile(from, to string) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	_, err = io.Copy(out, in)
	if err == nil {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	return err
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
