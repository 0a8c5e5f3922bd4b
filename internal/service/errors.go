package service

import (
	"context"
	"errors"
	"fmt"

	"github.com/edgekv/kv"
	"github.com/edgekv/kv/internal/store"
)

// The one table from the store's errors to what the API's clients read.
// Engines say what happened in their own terms (store.ErrNameTaken); only
// here does that become a code, a detail and a pointer into the request,
// so the text is the same whatever the engine.

// errStorageUnavailable is what a client reads when the storage could not
// be reached; the engine's error stays in the chain, for the log.
var (
	errStorageUnavailable = kv.Errorf(kv.EUnavailable, "The storage is unavailable; try again later")
	errStorageNotReached  = kv.Errorf(kv.EUnavailable, "The storage could not be reached; nothing was done; try again shortly")
)

// fromStore maps err, an error of a store call, to the service's
// vocabulary. name is the namespace name of the request, for the details
// that quote it. Context errors pass through, for the API to tell a client
// that went away from one that ran out of time; engine failures pass
// through too, and are reported as internal errors.
func fromStore(err error, name string) error {
	var (
		notReady *store.NotReadyError
		failed   *store.PreconditionError
	)
	switch {
	case err == nil:
		return nil
	case errors.As(err, &failed):
		e := kv.Errorf(kv.EPrecondition, "the key does not exist, so the precondition failed; nothing was written")
		if failed.Exists {
			e = kv.Errorf(kv.EPrecondition, "the key's current ETag is %s, which the precondition does not allow; nothing was written", kv.FormatETag(uint64(failed.Revision)))
			e.ETag = kv.FormatETag(uint64(failed.Revision))
		}
		return e
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return err
	case errors.Is(err, store.ErrNamespaceNotFound):
		return kv.NamespaceNotFound()
	case errors.Is(err, store.ErrKeyNotFound):
		return kv.KeyNotFound()
	case errors.As(err, &notReady):
		return kv.NotReady(notReady.Status)
	case errors.Is(err, store.ErrNameTaken):
		return kv.Errorf(kv.EConflict, "namespace name %q is already in use", name).WithPointer("/name")
	case errors.Is(err, store.ErrAlreadyDeleting):
		return kv.Errorf(kv.EConflict, "Namespace is already being deleted")
	case errors.Is(err, store.ErrTokenNotFound):
		return kv.Errorf(kv.EUnauthorized, "invalid API key")
	case errors.Is(err, store.ErrNotReached):
		return fmt.Errorf("%w: %w", errStorageNotReached, err)
	case errors.Is(err, store.ErrUnavailable):
		return fmt.Errorf("%w: %w", errStorageUnavailable, err)
	}
	return err
}
