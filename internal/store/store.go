// Package store defines the storage engines behind kvd: the Store interface
// the service needs, made of one role interface per kind of consumer, and
// the errors engines return. Engines live in subpackages (pebble, postgres)
// and all pass the conformance suite in storetest.
//
// The contract of every method of every role:
//
//   - It is safe for concurrent use by many goroutines and, for an engine
//     that several kvd processes share, by many processes.
//   - It takes ctx first. Called with a ctx that is done, it changes
//     nothing and returns an error matching ctx.Err() (context.Canceled or
//     context.DeadlineExceeded). While it waits (for a lock, for the
//     database) it stops waiting when ctx ends. A call that ends with ctx's
//     error part way may have made its change or not, like one that ends
//     with ErrUnavailable.
//   - Its errors are the sentinels of this package (match them with
//     errors.Is), *NotReadyError (errors.As), ctx's errors, or an engine
//     failure. No error carries text meant for the API's clients: the
//     service alone turns them into what users read. An engine failure is
//     reported as an internal error and only logged.
//   - A method that changes state returns only after the change is durable
//     (synced to disk, or committed by the database): an acknowledged change
//     survives a crash of the process or the machine.
//   - Times come in as arguments (now), never from a clock of the engine's.
package store

import (
	"context"
	"crypto/sha256"
	"io"
	"math/big"
	"time"

	"github.com/edgekv/kv"
)

// TokenDigest is the SHA-256 digest of a bearer token. Stores never see or
// keep a token itself.
type TokenDigest [sha256.Size]byte

// DigestToken returns the digest under which a token is stored.
func DigestToken(token string) TokenDigest { return sha256.Sum256([]byte(token)) }

// Store is a whole storage engine: every role, and Close.
type Store interface {
	Tokens
	Namespaces
	Keys
	Lifecycle
	UsageAdder
	UsageReader
	Changes

	// Close releases the engine, after the calls in flight have returned.
	// Calls after Close return ErrClosed.
	Close() error
}

// Tokens stores bearer tokens: their records, under the SHA-256 digests of
// their secrets (a store never sees a secret).
type Tokens interface {
	// CreateToken stores t under digest d. An id or digest already stored
	// is ErrTokenTaken.
	CreateToken(ctx context.Context, t Token, d TokenDigest) error

	// TokenByDigest returns the token stored under d, whatever its status
	// (revoked and expired tokens included), or ErrTokenNotFound.
	TokenByDigest(ctx context.Context, d TokenDigest) (Token, error)

	// ListTokens returns org's tokens ("": every organization's), ordered
	// by CreatedAt, then ID.
	ListTokens(ctx context.Context, org string) ([]Token, error)

	// RevokeToken marks token id revoked at now and returns it as it now
	// is. A token revoked already stays as it was (its first revocation
	// time). An unknown id is ErrTokenNotFound.
	RevokeToken(ctx context.Context, id string, now time.Time) (Token, error)

	// TouchTokens records when tokens were last used: each id's LastUsedAt
	// becomes the later of its own and the time given. Unknown ids are
	// ignored. It is best effort, for display.
	TouchTokens(ctx context.Context, used map[string]time.Time) error

	// RevokedSince returns the digests of the tokens revoked after mark,
	// in every process sharing the engine, and the mark to pass next time.
	// Mark 0 is before every revocation. A process that caches tokens
	// calls it often, to refuse a revoked token at once everywhere.
	RevokedSince(ctx context.Context, mark uint64) (digests []TokenDigest, next uint64, err error)
}

// Token is a stored bearer token: everything about it but its secret.
type Token struct {
	ID          string
	Name        string
	Org         string
	Permissions []kv.Permission // in kv.AllPermissions' order
	Namespaces  []kv.ID         // nil: every namespace of Org
	Prefixes    []string        // nil: every key
	ExpiresAt   time.Time       // zero: never
	CreatedAt   time.Time
	LastUsedAt  time.Time // zero: not used, as far as recorded
	RevokedAt   time.Time // zero: not revoked
}

// Namespaces stores namespace records.
type Namespaces interface {
	// CreateNamespace stores ns, which has a fresh ID, status pending and its
	// timestamps set. It returns ErrNameTaken when ns.Org already has a
	// namespace called ns.Name in any status (a name is freed only when its
	// namespace is purged), and ErrIDTaken when ns.ID is in use.
	CreateNamespace(ctx context.Context, ns kv.Namespace) error

	// GetNamespace returns namespace id of org. A namespace of another
	// organization, and one that was purged, is ErrNamespaceNotFound.
	GetNamespace(ctx context.Context, org string, id kv.ID) (kv.Namespace, error)

	// ListNamespaces returns org's namespaces ordered by CreatedAt, then ID,
	// skipping offset (>= 0) of them and returning at most limit (> 0), with
	// the total number org has. An offset past the end gives an empty page.
	// A negative offset or a limit below 1 is ErrInvalidArgument.
	ListNamespaces(ctx context.Context, org string, offset, limit int) (page []kv.Namespace, total int, err error)

	// MarkDeleting moves namespace id of org to status deleting, whatever
	// its status, and returns it as it now is. It is ErrNamespaceNotFound as
	// GetNamespace, and ErrAlreadyDeleting when the namespace is deleting
	// already. Once it returns, no key operation on the namespace succeeds,
	// in any process, and its stored bytes stop counting at now, in the
	// same commit as the status change.
	MarkDeleting(ctx context.Context, org string, id kv.ID, now time.Time) (kv.Namespace, error)
}

// Keys reads and writes the keys of a namespace. Every method checks the
// namespace in the same operation as the key: ErrNamespaceNotFound when
// org has no namespace ns, *NotReadyError when it is not provision_ok.
type Keys interface {
	// GetKey returns the value of key in namespace ns of org. A missing
	// key, or one whose expiry is at or before now, is ErrKeyNotFound. The
	// caller must Close the value.
	GetKey(ctx context.Context, org string, ns kv.ID, key string, now time.Time) (*Value, error)

	// PutKey stores v under key in namespace ns of org, replacing any
	// value, and reports whether the key was created (it did not exist, or
	// had expired by now) rather than replaced, and the key's new
	// revision. Of concurrent first writes of one key exactly one reports
	// created. When v.If is not empty the write happens only if the key
	// meets it, checked atomically with the write; otherwise PutKey
	// returns a *PreconditionError and writes nothing. On any error
	// nothing is written. In the same commit it counts one write and the
	// change of stored bytes (see Usage).
	PutKey(ctx context.Context, org string, ns kv.ID, key string, v PutValue, now time.Time) (Written, error)

	// DeleteKey removes key from namespace ns of org and reports whether
	// there was a key to remove (an expired one counts). Deleting a missing
	// key succeeds, changes nothing and counts nothing; a removal counts one
	// delete and the change of stored bytes in the same commit.
	DeleteKey(ctx context.Context, org string, ns kv.ID, key string, now time.Time) (deleted bool, err error)

	// ListKeys returns up to limit (> 0; less is ErrInvalidArgument) live
	// keys of namespace ns of org that start with prefix and sort after
	// `after` in byte order ("" is before every key), and whether more such
	// keys follow. Expired keys are skipped.
	ListKeys(ctx context.Context, org string, ns kv.ID, prefix, after string, limit int, now time.Time) (keys []kv.KeyInfo, more bool, err error)

	// Apply runs ops (1 to MaxBatchOps of them) on namespace ns of org as
	// one atomic step: each op sees the effects of the ops before it, and
	// either every change commits, in one commit, or none does. A check
	// that fails is a *PreconditionError naming it; an incr of a value
	// that is not an integer, or that overflows, is an *OpError; gets
	// whose values add up to more than MaxBatchReadBytes are
	// ErrBatchTooLarge. Nothing is written on any error. In the same
	// commit it counts one write per put and incr, one delete per delete
	// that removed a key, and the change of stored bytes; reads are the
	// caller's to count. Concurrent batches and single-key operations are
	// linearizable with each other.
	Apply(ctx context.Context, org string, ns kv.ID, ops []Op, now time.Time) ([]Result, error)
}

// Revision identifies one committed write of a key. An engine gives every
// write a revision it has never given before, greater than every revision
// it gave earlier in its process (and, for one key, than the key's
// previous one); 0 is the revision of a key written before the engine kept
// revisions. ETags are made of revisions.
type Revision uint64

// Written is what a successful write reports.
type Written struct {
	Created  bool // the key did not exist, or had expired
	Revision Revision
}

// Condition is what a key must be for a conditional operation to proceed.
// The zero Condition always holds. A key that has expired does not exist.
type Condition struct {
	Exists    bool       // the key must exist
	Absent    bool       // the key must not exist
	Revisions []Revision // the key must exist with one of these revisions
}

// IsZero reports whether c always holds.
func (c Condition) IsZero() bool { return !c.Exists && !c.Absent && len(c.Revisions) == 0 }

// Holds reports whether a key that exists (or not) with revision rev meets c.
func (c Condition) Holds(exists bool, rev Revision) bool {
	switch {
	case c.Absent:
		return !exists
	case len(c.Revisions) > 0:
		if !exists {
			return false
		}
		for _, r := range c.Revisions {
			if r == rev {
				return true
			}
		}
		return false
	case c.Exists:
		return exists
	}
	return true
}

// The bounds of Apply.
const (
	MaxBatchOps       = 1000
	MaxBatchReadBytes = 16 << 20 // the values of a batch's gets, together
)

// OpKind is what an Op does.
type OpKind uint8

const (
	OpCheck  OpKind = iota + 1 // fail the batch unless the key meets If
	OpGet                      // read the key
	OpPut                      // write Value (Value.If is ignored: use a check)
	OpDelete                   // remove the key
	OpIncr                     // add By to the key's integer value
)

// Op is one operation of a batch.
type Op struct {
	Kind  OpKind
	Key   string
	If    Condition // OpCheck
	Value PutValue  // OpPut
	By    int64     // OpIncr
}

// Result is what one op of a committed batch did.
type Result struct {
	Found       bool   // OpGet: the key exists
	Data        []byte // OpGet: the value, owned by the caller
	ContentType string // OpGet
	UpdatedAt   time.Time
	ExpiresAt   time.Time
	Revision    Revision // OpGet (of the key found), OpPut, OpIncr (the new one)
	Created     bool     // OpPut, OpIncr: the key did not exist
	Deleted     bool     // OpDelete: there was a key to remove
	Int         int64    // OpIncr: the new value
}

// Lifecycle is the background work on namespaces and keys: provisioning,
// purging, sweeping. Its methods name namespaces by id alone; the worker
// acts for every organization.
type Lifecycle interface {
	// ClaimLifecycleJob finds a namespace whose status is pending or deleting
	// and which no live lease holds, leases it to holder until now+lease, and
	// returns it with ok true. ok is false when there is no such namespace.
	// Across every process sharing the engine, a namespace is leased to at
	// most one holder at a time; a lease whose holder died expires.
	ClaimLifecycleJob(ctx context.Context, holder string, now time.Time, lease time.Duration) (ns kv.Namespace, ok bool, err error)

	// CompleteProvision moves namespace id from pending to status to and
	// releases holder's lease; to must be provision_ok or provision_failed
	// (any other is ErrInvalidArgument, and changes nothing). A namespace
	// that is no longer pending (it was marked deleting meanwhile), or is
	// gone, is left as it is and the call returns nil.
	CompleteProvision(ctx context.Context, id kv.ID, holder string, to kv.Status, now time.Time) error

	// PurgeNamespace removes every key of namespace id, its expiry entries
	// and the namespace itself, freeing its name. It does so only while
	// the namespace is deleting: one that exists in another status is left
	// as it is and the call returns ErrNotDeleting. One that no longer
	// exists is not an error (nil): purging is idempotent.
	PurgeNamespace(ctx context.Context, id kv.ID, holder string) error

	// SweepExpired removes up to max keys whose expiry is at or before now
	// and returns how many it removed (max < 1: none). Running it in several
	// processes at once is safe. A key's bytes stop counting at its expiry,
	// whenever it is swept.
	SweepExpired(ctx context.Context, now time.Time, max int) (int, error)
}

// UsageAdder records counts kept in memory for a while (reads, lists,
// deletes of missing keys).
type UsageAdder interface {
	// AddUsage adds counts to the usage of their namespaces. It is durable
	// when it returns.
	AddUsage(ctx context.Context, counts []UsageDelta) error
}

// UsageReader reports metered usage.
type UsageReader interface {
	// Usage returns org's usage in the calendar month (UTC) that starts at
	// month, per namespace: ns's only, or, when ns is the zero ID, every
	// namespace that had counts or stored bytes in that month, deleted ones
	// included, in no particular order. Stored bytes are keys plus values,
	// integrated from the month's start up to the month's end or now,
	// whichever is first; a key stops counting at its expiry and a
	// namespace's keys when it is marked deleting. A month after now has no
	// usage.
	Usage(ctx context.Context, org string, ns kv.ID, month, now time.Time) ([]NamespaceUsage, error)

	// UsageByDay is Usage with each namespace's usage also split by
	// calendar day (UTC): Days has one entry for each day of the month
	// from its first up to the one that holds the period's end (today, for
	// the current month), none for a month after now. The month's figures
	// are Usage's, read from the same snapshot as the days, and the days
	// add up to them: their counts and ByteNanos sum to the month's, and
	// the last day's Bytes are the month's. A day's Bytes are what the
	// namespace stores at the day's end (or now), its ByteNanos the stored
	// bytes integrated over the day (up to now). Operations from before
	// the engine kept daily figures count in their month only.
	UsageByDay(ctx context.Context, org string, ns kv.ID, month, now time.Time) ([]NamespaceUsage, error)
}

// UsageCounts counts billable operations.
type UsageCounts struct {
	Reads, Writes, Deletes, Lists int64
}

// Add adds o to c.
func (c *UsageCounts) Add(o UsageCounts) {
	c.Reads += o.Reads
	c.Writes += o.Writes
	c.Deletes += o.Deletes
	c.Lists += o.Lists
}

// UsageDelta is a count to add to one namespace's usage in one month, and
// in one day of it.
type UsageDelta struct {
	Org         string
	NamespaceID kv.ID
	Month       time.Time // the first instant of the month, UTC
	// Day is an instant of the day (UTC) the counts belong to, within
	// Month; zero, or a day outside Month, means Month's first day.
	Day time.Time
	UsageCounts
}

// NamespaceUsage is one namespace's usage in one month.
type NamespaceUsage struct {
	NamespaceID kv.ID
	UsageCounts
	// ByteNanos is stored bytes integrated over time, in byte-nanoseconds.
	ByteNanos *big.Int
	// Bytes is what the namespace stores at the end of the period.
	Bytes int64
	// Days is the usage by day; only UsageByDay sets it.
	Days []DayUsage
}

// DayUsage is one calendar day's (UTC) share of a namespace's usage.
type DayUsage struct {
	Day time.Time // the day's first instant, UTC
	UsageCounts
	// ByteNanos is stored bytes integrated over the day, up to now for
	// today, in byte-nanoseconds.
	ByteNanos *big.Int
	// Bytes is what the namespace stores at the day's end, or now for
	// today.
	Bytes int64
}

// PutValue is a value to store.
type PutValue struct {
	Data        []byte    // the value; the store does not keep the slice
	ContentType string    // stored and returned on read; never empty
	ExpiresAt   time.Time // zero: never expires
	If          Condition // PutKey writes only if the key meets it
}

// Value is a stored value returned by GetKey. Data is valid until Close.
type Value struct {
	Data        []byte
	ContentType string
	UpdatedAt   time.Time
	ExpiresAt   time.Time // zero: never expires
	Revision    Revision

	release io.Closer
}

// NewValue returns a Value whose Close closes release (which may be nil).
func NewValue(data []byte, contentType string, updated, expires time.Time, rev Revision, release io.Closer) *Value {
	return &Value{Data: data, ContentType: contentType, UpdatedAt: updated, ExpiresAt: expires, Revision: rev, release: release}
}

// Close releases the memory behind Data. It is safe to call more than once.
func (v *Value) Close() {
	if v.release != nil {
		v.release.Close()
		v.release = nil
	}
}

// PrefixEnd returns the smallest byte string greater than every string with
// prefix p, or nil when there is none (p is empty or all 0xff): the
// exclusive upper bound of a prefix scan.
func PrefixEnd(p []byte) []byte {
	end := append([]byte(nil), p...)
	for i := len(end) - 1; i >= 0; i-- {
		end[i]++
		if end[i] != 0 {
			return end[:i+1]
		}
	}
	return nil
}
