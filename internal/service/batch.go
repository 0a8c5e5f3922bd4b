package service

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/edgekv/kv"
	"github.com/edgekv/kv/internal/store"
)

// BatchOp is one op of a batch, as the API decoded it.
type BatchOp struct {
	Kind store.OpKind
	Key  string
	If   store.Condition // OpCheck
	Put  Put             // OpPut
	By   int64           // OpIncr
	// Err is what was wrong with the op as sent (a missing field, a value
	// that does not decode), with its pointer; the op is not run.
	Err error
}

// OpResult is what one op of a batch did, or why it failed (bulk mode
// only: an atomic batch fails as a whole).
type OpResult struct {
	store.Result
	Err error
}

// Batch runs ops on namespace id: atomically (every change in one commit,
// or none, each op seeing the ones before it), or, in bulk mode, each op
// on its own in order, as if sent alone. Errors of an atomic batch carry
// the pointer of the op at fault (/ops/N). Reads (checks and gets) are
// counted whenever the batch reached the storage.
func (s *Service) Batch(ctx context.Context, who Principal, id kv.ID, ops []BatchOp, atomic bool) ([]OpResult, error) {
	if err := who.namespace(id, kv.PermKeysRead); err != nil && !errors.Is(err, kv.ErrForbidden) {
		return nil, err // a namespace outside the token's scope
	}
	if len(ops) < 1 || len(ops) > store.MaxBatchOps {
		return nil, kv.Errorf(kv.EInvalid, "a batch holds 1 to %d ops; this one has %d", store.MaxBatchOps, len(ops)).WithPointer("/ops")
	}
	for i := range ops {
		if ops[i].Err == nil {
			ops[i].Err = s.validateOp(who, id, i, &ops[i])
		}
	}
	if atomic {
		return s.atomicBatch(ctx, who, id, ops)
	}
	return s.bulk(ctx, who, id, ops)
}

// opPointer returns err (a *kv.Error) pointing at op i, or at its field.
func opPointer(err error, i int, field string) error {
	var e *kv.Error
	if !errors.As(err, &e) {
		return err
	}
	c := *e
	c.Parameter = ""
	c.Pointer = fmt.Sprintf("/ops/%d", i)
	if field != "" {
		c.Pointer += "/" + field
	}
	return &c
}

// validateOp checks op i as the key routes check their requests.
func (s *Service) validateOp(who Principal, id kv.ID, i int, op *BatchOp) error {
	if err := kv.ValidateKey(op.Key); err != nil {
		return opPointer(err, i, "key")
	}
	perm := kv.PermKeysWrite
	if op.Kind == store.OpCheck || op.Kind == store.OpGet {
		perm = kv.PermKeysRead
	}
	if err := who.key(id, op.Key, perm); err != nil {
		return opPointer(err, i, "key")
	}
	if op.Kind == store.OpPut {
		ct, err := validatePut(&op.Put)
		if err != nil {
			field := "value"
			switch kv.ErrorCodeOf(err) {
			case kv.EUnprocessable:
				field = "ttl_secs"
			case kv.EInvalid:
				field = "content_type"
			}
			return opPointer(err, i, field)
		}
		op.Put.ContentType = ct
	}
	return nil
}

// storeOp is op as the store takes it, at now.
func storeOp(op BatchOp, now time.Time) store.Op {
	o := store.Op{Kind: op.Kind, Key: op.Key, If: op.If, By: op.By}
	if op.Kind == store.OpPut {
		o.Value = store.PutValue{Data: op.Put.Data, ContentType: op.Put.ContentType}
		if op.Put.TTL > 0 {
			o.Value.ExpiresAt = now.Add(op.Put.TTL)
		}
	}
	return o
}

// writeSize is what an op may add to the organization's stored bytes.
func writeSize(op BatchOp) int64 {
	switch op.Kind {
	case store.OpPut:
		return int64(len(op.Key) + len(op.Put.Data))
	case store.OpIncr:
		return int64(len(op.Key) + 20)
	}
	return 0
}

func (s *Service) atomicBatch(ctx context.Context, who Principal, id kv.ID, ops []BatchOp) ([]OpResult, error) {
	var size int64
	reads := int64(0)
	for _, op := range ops {
		if op.Err != nil {
			return nil, op.Err
		}
		size += writeSize(op)
		if op.Kind == store.OpCheck || op.Kind == store.OpGet {
			reads++
		}
	}
	if size > 0 {
		if err := s.spaceErr(); err != nil {
			return nil, err
		}
	}
	org := who.Org
	var fin func(bool)
	if s.storage != nil && size > 0 {
		o, err := s.storage.reserve(ctx, org, size)
		if err != nil {
			return nil, err
		}
		fin = func(ok bool) { o.finish(size, ok) }
	}
	now := s.now()
	sops := make([]store.Op, len(ops))
	for i, op := range ops {
		sops[i] = storeOp(op, now)
	}
	res, err := s.store.Apply(ctx, org, id, sops, now)
	if fin != nil {
		fin(err == nil)
	}
	if reads > 0 && (err == nil || reachedStore(err)) {
		s.meter.Add(org, id, now, store.UsageCounts{Reads: reads})
	}
	if err != nil {
		return nil, batchError(err, ops)
	}
	out := make([]OpResult, len(res))
	for i, r := range res {
		out[i].Result = r
	}
	return out, nil
}

// reachedStore reports whether a batch that failed with err read the
// store's keys.
func reachedStore(err error) bool {
	var oe *store.OpError
	return errors.Is(err, store.ErrPrecondition) || errors.As(err, &oe) || errors.Is(err, store.ErrBatchTooLarge)
}

// batchError maps an error of Apply, naming the op at fault.
func batchError(err error, ops []BatchOp) error {
	var (
		failed *store.PreconditionError
		oe     *store.OpError
	)
	switch {
	case errors.As(err, &failed):
		key := ops[failed.Op].Key
		e := kv.Errorf(kv.EPrecondition, "the check of key %q failed: the key does not exist; nothing was written", truncate(key, 64))
		if failed.Exists {
			e = kv.Errorf(kv.EPrecondition, "the check of key %q failed: its current ETag is %s; nothing was written", truncate(key, 64), kv.FormatETag(uint64(failed.Revision)))
		}
		return e.WithPointer(fmt.Sprintf("/ops/%d", failed.Op))
	case errors.As(err, &oe):
		return opError(oe, ops[oe.Op].Key)
	case errors.Is(err, store.ErrBatchTooLarge):
		return kv.Errorf(kv.ETooLarge, "the gets of this batch would return more than %d bytes of values; split it", store.MaxBatchReadBytes).WithPointer("/ops")
	}
	return fromStore(err, "")
}

func opError(oe *store.OpError, key string) error {
	p := fmt.Sprintf("/ops/%d", oe.Op)
	if errors.Is(oe.Err, store.ErrOverflow) {
		return kv.Errorf(kv.EUnprocessable, "incr of key %q would overflow a signed 64-bit integer; nothing was written", truncate(key, 64)).WithPointer(p)
	}
	return kv.Errorf(kv.EUnprocessable, "incr of key %q: its value is not a decimal signed 64-bit integer; nothing was written", truncate(key, 64)).WithPointer(p)
}

// bulk runs each op on its own. A namespace that is missing or not ready
// fails the whole request, before any op runs.
func (s *Service) bulk(ctx context.Context, who Principal, id kv.ID, ops []BatchOp) ([]OpResult, error) {
	ns, err := s.store.GetNamespace(ctx, who.Org, id)
	if err != nil {
		return nil, fromStore(err, "")
	}
	if !ns.Ready() {
		return nil, kv.NotReady(ns.Status)
	}
	out := make([]OpResult, len(ops))
	var read int64
	for i, op := range ops {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if op.Err != nil {
			out[i].Err = op.Err
			continue
		}
		r, err := s.bulkOp(ctx, who, id, i, op, &read)
		out[i] = OpResult{Result: r, Err: err}
	}
	return out, nil
}

func (s *Service) bulkOp(ctx context.Context, who Principal, id kv.ID, i int, op BatchOp, read *int64) (store.Result, error) {
	org := who.Org
	switch op.Kind {
	case store.OpPut:
		w, err := s.PutKey(ctx, who, id, op.Key, op.Put)
		return store.Result{Created: w.Created, Revision: w.Revision}, opPointer(err, i, "")
	case store.OpDelete:
		now := s.now()
		deleted, err := s.store.DeleteKey(ctx, org, id, op.Key, now)
		if err == nil && !deleted {
			s.meter.Add(org, id, now, store.UsageCounts{Deletes: 1})
		}
		return store.Result{Deleted: deleted}, opPointer(fromStore(err, ""), i, "")
	case store.OpGet:
		v, err := s.GetKey(ctx, who, id, op.Key)
		if errors.Is(err, kv.ErrNotFound) && kv.IsKeyNotFound(err) {
			return store.Result{}, nil
		}
		if err != nil {
			return store.Result{}, opPointer(err, i, "")
		}
		defer v.Close()
		if *read += int64(len(v.Data)); *read > store.MaxBatchReadBytes {
			return store.Result{}, kv.Errorf(kv.ETooLarge, "the gets of this batch return more than %d bytes of values; this one was not run", store.MaxBatchReadBytes).WithPointer(fmt.Sprintf("/ops/%d", i))
		}
		return store.Result{Found: true, Data: append([]byte{}, v.Data...), ContentType: v.ContentType, UpdatedAt: v.UpdatedAt, ExpiresAt: v.ExpiresAt, Revision: v.Revision}, nil
	}
	// check and incr: a batch of one.
	one := []BatchOp{op}
	res, err := s.atomicBatch(ctx, who, id, one)
	if err != nil {
		return store.Result{}, opPointer(err, i, "")
	}
	return res[0].Result, nil
}
