package store

import (
	"errors"

	"github.com/edgekv/kv"
)

// The errors of the contract. They say what happened in the store's terms;
// the service maps them to what the API's clients read, in one table.
var (
	// ErrNamespaceNotFound: no such namespace for the organization (it
	// never existed, was purged, or is another organization's).
	ErrNamespaceNotFound = errors.New("store: namespace not found")
	// ErrKeyNotFound: no such key, or it has expired.
	ErrKeyNotFound = errors.New("store: key not found")
	// ErrTokenNotFound: no token has the digest, or the id.
	ErrTokenNotFound = errors.New("store: token not found")
	// ErrTokenTaken: a token has the id, or the digest, already.
	ErrTokenTaken = errors.New("store: token id or digest taken")
	// ErrNameTaken: the organization has a namespace of that name already.
	ErrNameTaken = errors.New("store: namespace name taken")
	// ErrIDTaken: a namespace has that id already.
	ErrIDTaken = errors.New("store: namespace id taken")
	// ErrAlreadyDeleting: the namespace is being deleted already.
	ErrAlreadyDeleting = errors.New("store: namespace already deleting")
	// ErrNotDeleting: PurgeNamespace of a namespace that is not deleting.
	ErrNotDeleting = errors.New("store: namespace not deleting")
	// ErrInvalidArgument: the caller broke the contract (a limit below 1, a
	// status a method does not move to). Nothing was changed.
	ErrInvalidArgument = errors.New("store: invalid argument")
	// ErrUnavailable: the storage could not be reached, or was lost in the
	// middle of the call, so a change may have been made or not; the call
	// may succeed if tried again. The engine's own error is kept in the
	// chain, for logs.
	ErrUnavailable = errors.New("store: storage unavailable")
	// ErrNotReached: the storage could not be reached at all (no
	// connection could be had), so the call did nothing. It matches
	// ErrUnavailable too.
	ErrNotReached error = notReached{}
	// ErrPrecondition: a condition did not hold. Engines return it as a
	// *PreconditionError, which matches it.
	ErrPrecondition = errors.New("store: precondition failed")
	// ErrBatchTooLarge: a batch's gets read more than MaxBatchReadBytes.
	ErrBatchTooLarge = errors.New("store: batch reads too much")
	// ErrNotInteger: an incr of a value that is not a decimal int64.
	ErrNotInteger = errors.New("store: value is not an integer")
	// ErrOverflow: an incr whose result does not fit an int64.
	ErrOverflow = errors.New("store: integer overflow")
	// ErrHistoryGone: a change feed read from before what the namespace's
	// feed keeps. Engines return it as a *HistoryGoneError, which matches
	// it.
	ErrHistoryGone = errors.New("store: change history compacted")
	// ErrClosed: the store was closed.
	ErrClosed = errors.New("store: closed")
)

// NotReadyError is a key operation on a namespace that is not
// provision_ok.
type NotReadyError struct {
	Status kv.Status
}

func (e *NotReadyError) Error() string { return "store: namespace not ready: " + string(e.Status) }

type notReached struct{}

func (notReached) Error() string { return "store: storage not reached" }

// Is makes ErrNotReached match ErrUnavailable: a call that reached no
// storage is unavailability whose outcome is known.
func (notReached) Is(target error) bool { return target == ErrUnavailable }

// PreconditionError is a condition that did not hold: of a conditional
// PutKey (Op is 0), or of the check at index Op of a batch. It tells what
// the key is now.
type PreconditionError struct {
	Op       int
	Exists   bool
	Revision Revision // when Exists
}

func (e *PreconditionError) Error() string { return "store: precondition failed" }

// Is makes a *PreconditionError match ErrPrecondition.
func (e *PreconditionError) Is(target error) bool { return target == ErrPrecondition }

// OpError is the failure of the op at index Op of a batch (ErrNotInteger,
// ErrOverflow).
type OpError struct {
	Op  int
	Err error
}

func (e *OpError) Error() string { return e.Err.Error() }
func (e *OpError) Unwrap() error { return e.Err }
