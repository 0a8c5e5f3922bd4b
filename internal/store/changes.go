package store

import (
	"context"
	"fmt"
	"time"

	"github.com/edgekv/kv"
)

// The change feed.
//
// Every committed change of a key (a put, a delete that removed a key, an
// expiry swept, each mutation of a batch) is recorded, in the same commit
// as the change, as a Change under the revision the change gave the key
// (for a put, the key's new Revision, of which its ETag is made; for a
// delete or an expiry, a fresh revision). Revisions come from one
// allocator per engine, so within a namespace they increase strictly, and
// a change that was acknowledged before another was asked for has the
// lower revision.
//
// Changes commit in any order, but a reader sees them in revision order
// with no gap: ReadChanges returns only changes at or below the feed's
// head, the revision below which every change is final (committed, or
// abandoned and never to appear). A reader that goes on from the last
// revision it was given (or from the head, when nothing under its prefix
// was there) sees every change exactly once.
//
// Changes are kept at least until the retention the caller compacts with
// (CompactChanges); reading from before what was compacted of a namespace
// is a *HistoryGoneError.

// ChangeKind is what a change did to its key.
type ChangeKind uint8

const (
	ChangePut    ChangeKind = iota + 1 // the key was written (created or replaced)
	ChangeDelete                       // the key was deleted
	ChangeExpire                       // the key's expiry passed and it was swept
)

func (k ChangeKind) String() string {
	switch k {
	case ChangePut:
		return "put"
	case ChangeDelete:
		return "delete"
	case ChangeExpire:
		return "expire"
	}
	return fmt.Sprintf("ChangeKind(%d)", uint8(k))
}

// MaxChangeValue is the largest value a change carries: a put of a value
// up to this size keeps a copy of it in the change (HasValue), so a reader
// behind the key's current value still reads the value of that change.
const MaxChangeValue = 64 << 10

// Change is one committed change of a key, or, from Snapshot, one live
// key.
type Change struct {
	Revision Revision
	Kind     ChangeKind
	Key      string
	At       time.Time // when the change was made (the now of its call)

	// Of a put (and of every key of a snapshot):
	Size        int64 // the value's length
	ContentType string
	UpdatedAt   time.Time
	ExpiresAt   time.Time // zero: never
	// HasValue: Value is the value written; set when Size is at most
	// MaxChangeValue and the caller asked for values.
	HasValue bool
	Value    []byte // owned by the caller
}

// HistoryGoneError is ReadChanges' error for a revision older than what
// the namespace's feed keeps: the changes after it were compacted. It
// matches ErrHistoryGone.
type HistoryGoneError struct {
	// Oldest is the lowest revision ReadChanges accepts for the
	// namespace now.
	Oldest Revision
}

func (e *HistoryGoneError) Error() string {
	return fmt.Sprintf("store: history before revision %d is compacted", e.Oldest)
}

func (e *HistoryGoneError) Is(target error) bool { return target == ErrHistoryGone }

// ChangeHint is what an engine whose every writer is in this process may
// tell the readers of its feed: the highest revision taken for a change of
// a namespace, raised before the change commits, so that once WaitHead has
// returned h, a hint at or below a reader's position says the namespace
// has no change in (position, h] to read. Revisions are shared by every
// namespace: without it, a reader of a quiet namespace would read the
// store at every change of another. (ok: the namespace is known.)
type ChangeHint interface {
	LastRevisionTaken(org string, nsID kv.ID) (rev Revision, ok bool)
}

// Changes reads the change feed. Every engine keeps one.
type Changes interface {
	// ReadChanges returns up to limit (> 0; less is ErrInvalidArgument)
	// changes of namespace ns of org whose keys start with prefix and
	// whose revisions are above after and at or below the feed's head, in
	// revision order, and the head it read up to. A reader continues from
	// the last change's revision when limit changes came back, else from
	// the head. Values are set when withValues is true (see
	// Change.HasValue). An after below what the namespace's feed keeps
	// (0 included, once anything of it was compacted) is a
	// *HistoryGoneError. It checks the namespace as key operations do (ErrNamespaceNotFound,
	// *NotReadyError).
	ReadChanges(ctx context.Context, org string, ns kv.ID, prefix string, after Revision, limit int, withValues bool) (changes []Change, head Revision, err error)

	// Snapshot calls fn, in key order, for every live key (expiry after
	// now) of namespace ns of org that starts with prefix, as of one
	// revision, which it returns: every change at or below it is in what
	// fn was given, and no change above it. Each Change has Kind
	// ChangePut and the key's revision; values as ReadChanges. An error
	// of fn ends the call and is returned. fn may be slow (it may write
	// to a network client): the engine holds no lock that writers wait
	// on while it runs. It checks the namespace as ReadChanges.
	Snapshot(ctx context.Context, org string, ns kv.ID, prefix string, now time.Time, withValues bool, fn func(Change) error) (at Revision, err error)

	// Head returns the feed's head now: the revision below which every
	// change is final, in every namespace.
	Head(ctx context.Context) (Revision, error)

	// WaitHead returns the head once it is above after, or ctx's error
	// when ctx ends first. Changes committed in another process sharing
	// the engine raise the head too, within a fraction of a second.
	WaitHead(ctx context.Context, after Revision) (Revision, error)

	// CompactChanges removes up to max changes made before before, in
	// every namespace, and returns how many it removed; a namespace's
	// feed then keeps only the changes after the latest one it removed
	// (HistoryGoneError.Oldest). Running it in several processes at once
	// is safe.
	CompactChanges(ctx context.Context, before time.Time, max int) (int, error)
}
