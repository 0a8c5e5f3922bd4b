// Package store defines the storage engine interface behind kvd. Engines
// live in subpackages (pebble, postgres) and all pass the conformance suite
// in storetest.
//
// Every method is safe for concurrent use by many goroutines and, for
// engines shared by several kvd processes, by many processes. Methods take
// ctx first and honour its deadline. Conditions a caller can act on are
// returned as *kv.Error values (match them with errors.Is against kv.ErrNotFound,
// kv.ErrConflict); any other error is an engine failure that the API reports
// as an internal error without showing it.
//
// Every method that changes state returns only after the change is durable
// (synced to disk, or committed by the database): an acknowledged change
// survives a crash of the process or the machine.
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

// Store is the storage engine of kvd.
type Store interface {
	// PutToken records that the token with digest d authenticates org. Putting
	// a digest again replaces its organization (other processes that share
	// the engine may keep the old one cached: tokens are random and kvd never
	// puts one twice).
	PutToken(ctx context.Context, d TokenDigest, org string) error

	// OrgForToken returns the organization of the token with digest d, or an
	// error matching kv.ErrNotFound when no such token is stored. Revocation
	// is not supported yet; an engine may cache digests it has seen.
	OrgForToken(ctx context.Context, d TokenDigest) (string, error)

	// CreateNamespace stores ns, which has a fresh ID, status pending and its
	// timestamps set. It returns an error matching kv.ErrConflict when ns.Org
	// already has a namespace called ns.Name in any status; a name is freed
	// only when its namespace is purged.
	CreateNamespace(ctx context.Context, ns kv.Namespace) error

	// GetNamespace returns namespace id of org. A namespace of another
	// organization, and one that was purged, is kv.NamespaceNotFound().
	GetNamespace(ctx context.Context, org, id string) (kv.Namespace, error)

	// ListNamespaces returns org's namespaces ordered by CreatedAt, then ID,
	// skipping offset of them and returning at most limit (limit > 0), with
	// the total number org has.
	ListNamespaces(ctx context.Context, org string, offset, limit int) (page []kv.Namespace, total int, err error)

	// MarkDeleting moves namespace id of org to status deleting, whatever
	// its status, and returns it as it now is. It is kv.NamespaceNotFound()
	// as GetNamespace, and an error matching kv.ErrConflict when the
	// namespace is already deleting. Once it returns, no key operation on the
	// namespace succeeds, and its stored bytes stop counting at now, in the
	// same commit as the status change.
	MarkDeleting(ctx context.Context, org, id string, now time.Time) (kv.Namespace, error)

	// ClaimLifecycleJob finds a namespace whose status is pending or deleting
	// and which no live lease holds, leases it to holder until now+lease, and
	// returns it with ok true. ok is false when there is no such namespace.
	// Across every process sharing the engine, a namespace is leased to at
	// most one holder at a time; a lease whose holder died expires.
	ClaimLifecycleJob(ctx context.Context, holder string, now time.Time, lease time.Duration) (ns kv.Namespace, ok bool, err error)

	// CompleteProvision moves namespace id from pending to status to
	// (provision_ok or provision_failed) and releases holder's lease. When
	// the namespace is no longer pending (it was marked deleting meanwhile)
	// it changes nothing and returns nil.
	CompleteProvision(ctx context.Context, id, holder string, to kv.Status, now time.Time) error

	// PurgeNamespace removes every key of namespace id, its expiry entries
	// and the namespace itself, freeing its name, as one range deletion. It
	// does so only while the namespace is deleting; it returns nil when the
	// namespace no longer exists.
	PurgeNamespace(ctx context.Context, id, holder string) error

	// GetKey returns the value of key in namespace nsID of org. Within the
	// same operation it checks the namespace: kv.NamespaceNotFound() when org
	// has no such namespace, kv.NotReady(status) when it is not provision_ok.
	// A missing key, or one whose expiry is at or before now, is
	// kv.KeyNotFound(). The caller must Close the value.
	GetKey(ctx context.Context, org, nsID, key string, now time.Time) (*Value, error)

	// PutKey stores v under key in namespace nsID of org, replacing any
	// value, and reports whether the key was created (it did not exist, or
	// had expired by now) rather than replaced. Of concurrent first writes
	// of one key exactly one reports created. The namespace is checked as
	// in GetKey; on any error nothing is written. In the same commit it
	// counts one write and the change of stored bytes (see Usage).
	PutKey(ctx context.Context, org, nsID, key string, v PutValue, now time.Time) (created bool, err error)

	// DeleteKey removes key from namespace nsID of org and reports whether
	// there was a key to remove (an expired one counts). Deleting a missing
	// key succeeds, changes nothing and counts nothing; a removal counts one
	// delete and the change of stored bytes in the same commit. The
	// namespace is checked as in GetKey.
	DeleteKey(ctx context.Context, org, nsID, key string, now time.Time) (deleted bool, err error)

	// ListKeys returns up to limit (> 0) live keys of namespace nsID of org
	// that start with prefix and sort after `after` in byte order ("" is
	// before every key), and whether more such keys follow. Expired keys
	// are skipped. The namespace is checked as in GetKey.
	ListKeys(ctx context.Context, org, nsID, prefix, after string, limit int, now time.Time) (keys []kv.KeyInfo, more bool, err error)

	// SweepExpired removes up to max keys whose expiry is at or before now
	// and returns how many it removed. Running it in several processes at
	// once is safe. A key's bytes stop counting at its expiry, whenever it
	// is swept.
	SweepExpired(ctx context.Context, now time.Time, max int) (int, error)

	// AddUsage adds counts kept in memory for a while (reads, lists, deletes
	// of missing keys) to the usage of their namespaces. It is durable when
	// it returns.
	AddUsage(ctx context.Context, counts []UsageDelta) error

	// Usage returns org's usage in the calendar month (UTC) that starts at
	// month, per namespace: nsID's only, or, when nsID is "", every
	// namespace that had counts or stored bytes in that month, deleted ones
	// included, in no particular order. Stored bytes are keys plus values,
	// integrated from the month's start up to the month's end or now,
	// whichever is first; a key stops counting at its expiry and a
	// namespace's keys when it is marked deleting. A month after now has no
	// usage.
	Usage(ctx context.Context, org, nsID string, month, now time.Time) ([]NamespaceUsage, error)

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
	UsageByDay(ctx context.Context, org, nsID string, month, now time.Time) ([]NamespaceUsage, error)

	// Close releases the engine. Methods called after Close return errors.
	Close() error
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
	Org, NamespaceID string
	Month            time.Time // the first instant of the month, UTC
	// Day is an instant of the day (UTC) the counts belong to, within
	// Month; zero, or a day outside Month, means Month's first day.
	Day time.Time
	UsageCounts
}

// NamespaceUsage is one namespace's usage in one month.
type NamespaceUsage struct {
	NamespaceID string
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
}

// Value is a stored value returned by GetKey. Data is valid until Close.
type Value struct {
	Data        []byte
	ContentType string
	UpdatedAt   time.Time
	ExpiresAt   time.Time // zero: never expires

	release io.Closer
}

// NewValue returns a Value whose Close closes release (which may be nil).
func NewValue(data []byte, contentType string, updated, expires time.Time, release io.Closer) *Value {
	return &Value{Data: data, ContentType: contentType, UpdatedAt: updated, ExpiresAt: expires, release: release}
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
