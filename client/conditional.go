package client

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"time"

	"github.com/edgekv/kv"
)

// Conditional requests (API.md, "Versions and conditional requests"): every
// write gives a key a new ETag, never given to that key before; a write or
// delete can be made to happen only if the key still has the ETag the
// caller read, and a read can be answered "not modified".

// conditionHeaders sets If-Match or If-None-Match: * on a write.
func conditionHeaders(h http.Header, ifMatch string, ifAbsent bool) error {
	switch {
	case ifMatch != "" && ifAbsent:
		return kv.Errorf(kv.EInvalid, "IfMatch and IfAbsent cannot both be set: a key cannot both exist with an ETag and be absent")
	case ifMatch != "":
		if err := checkHeaderValue("IfMatch", ifMatch); err != nil {
			return err
		}
		h.Set("If-Match", ifMatch)
	case ifAbsent:
		h.Set("If-None-Match", "*")
	}
	return nil
}

// checkHeaderValue refuses what cannot be sent in a header: control
// characters (a line break would end the header).
func checkHeaderValue(name, v string) error {
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < 0x20 && c != '\t' || c == 0x7f {
			return kv.Errorf(kv.EInvalid, "%s %.80q holds a control character; an ETag is a quoted string such as \"abc\" (as the service sent it)", name, v)
		}
	}
	return nil
}

// GetOptions are the optional parts of a read.
type GetOptions struct {
	// IfNoneMatch makes the read conditional (If-None-Match): when the
	// key's current ETag is this one (a list "e1", "e2" names several),
	// the service answers "not modified" and sends no value: the result has
	// NotModified set, its ETag, and no Value. A missing key is still
	// kv.ErrNotFound.
	IfNoneMatch string
}

// GetResult is a value with what the service says of it.
type GetResult struct {
	// Value is the value (nil when NotModified). It belongs to the caller.
	Value []byte
	// KeyInfo holds the key's size, content type, update time, expiry and
	// ETag, as far as the service sends them (kvd sends all); Size is -1
	// when NotModified.
	KeyInfo
	// NotModified reports a 304 answer to GetOptions.IfNoneMatch: the
	// key's ETag is one of those given, and no value was sent.
	NotModified bool
}

// GetWithOptions returns the value of key with its ETag and metadata, as
// Get and GetInfo do, honouring opts (which may be nil). A missing or
// expired key gives kv.ErrNotFound.
func (ns *Namespace) GetWithOptions(ctx context.Context, key string, opts *GetOptions) (GetResult, error) {
	r := request{method: http.MethodGet, path: ns.keyPath(key), retry: true}
	if opts != nil && opts.IfNoneMatch != "" {
		if err := checkHeaderValue("IfNoneMatch", opts.IfNoneMatch); err != nil {
			return GetResult{}, err
		}
		r.header = http.Header{"If-None-Match": {opts.IfNoneMatch}}
		r.notModified = true
	}
	resp, err := ns.c.do(ctx, r)
	if err != nil {
		return GetResult{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotModified {
		drain(resp)
		info, err := keyInfoOf(key, resp.Header)
		info.Size = -1 // not sent
		return GetResult{KeyInfo: info, NotModified: true}, err
	}
	value, err := readLimited(resp, valueLimit, valueWhat(key))
	if err != nil {
		return GetResult{}, err
	}
	info, err := keyInfoOf(key, resp.Header)
	info.Size = int64(len(value))
	if value == nil {
		value = []byte{}
	}
	return GetResult{Value: value, KeyInfo: info}, err
}

// PutWithResult is Put, returning what the service answered: whether the
// key was created and its new ETag. A failed precondition (opts.IfMatch,
// opts.IfAbsent) is an error matching ErrPreconditionFailed, as for Put.
func (ns *Namespace) PutWithResult(ctx context.Context, key string, value []byte, opts *PutOptions) (PutResult, error) {
	r, err := ns.putRequest(key, opts)
	if err != nil {
		return PutResult{}, err
	}
	r.body = func() (io.Reader, error) { return bytes.NewReader(value), nil }
	r.size = int64(len(value))
	r.retry = true
	return ns.finishPut(ctx, r)
}

// DeleteOptions are the optional parts of a delete.
type DeleteOptions struct {
	// IfMatch makes the delete conditional (If-Match): it happens only if
	// the key exists and its current ETag is this one (or, for "*", if
	// the key exists at all); otherwise nothing is deleted and the error
	// matches ErrPreconditionFailed. A missing key fails any IfMatch.
	IfMatch string
}

// DeleteWithOptions removes key, honouring opts (which may be nil).
// Deleting a missing key succeeds, unless opts.IfMatch is set.
func (ns *Namespace) DeleteWithOptions(ctx context.Context, key string, opts *DeleteOptions) error {
	r := request{method: http.MethodDelete, path: ns.keyPath(key), retry: true}
	if opts != nil && opts.IfMatch != "" {
		r.header = http.Header{}
		if err := conditionHeaders(r.header, opts.IfMatch, false); err != nil {
			return err
		}
		r.unsafe = true
	}
	resp, err := ns.c.do(ctx, r)
	if err != nil {
		return err
	}
	drain(resp)
	return nil
}

// DefaultUpdateAttempts bounds the rounds of Update when
// UpdateOptions.MaxAttempts is 0.
const DefaultUpdateAttempts = 100

// Backoff between the rounds of Update: full jitter, up to eight times what
// the last round took (at least updateMinBackoff: a round against a
// loopback server takes well under a millisecond), doubling each round, at
// most updateMaxBackoff. Scaled by the round's time, the waits spread the
// contenders of one key over a few rounds' worth of time, near or far from
// the service.
const (
	updateMinBackoff = time.Millisecond
	updateMaxBackoff = time.Second
)

// UpdateOptions are the optional parts of Update.
type UpdateOptions struct {
	// ContentType is stored with the new value; "" keeps the current
	// value's (application/octet-stream for a new key).
	ContentType string
	// TTL makes the key expire TTL after the write, as PutOptions.TTL; 0
	// writes a permanent key, as every write without a TTL does.
	TTL time.Duration
	// MaxAttempts bounds the rounds of read, compute and conditional
	// write; 0 means DefaultUpdateAttempts.
	MaxAttempts int
}

// Update applies fn to the value of key atomically (compare-and-swap): it
// reads the value and its ETag, calls fn with the value (nil and found
// false when the key is missing or expired), and writes what fn returns
// only if the key has not been written since (If-Match the ETag read, or
// If-None-Match: * when it was missing). When another write came first it
// starts again, after a short jittered exponential backoff, up to
// DefaultUpdateAttempts rounds or the context's end. It returns the new
// ETag.
//
// fn may be called several times and must only compute: no side effects
// that must happen once. An error from fn ends Update and is returned
// unchanged, with nothing written. Each update is applied at most once: a
// write whose outcome is unknown (the connection broke after it was sent,
// a 5xx answer) is not retried, and its error matches ErrMaybeApplied.
// When every round conflicted the error matches ErrPreconditionFailed.
//
// The write makes the key permanent, as any write without a TTL; use
// UpdateWithOptions to give it a TTL. Update needs a service with
// conditional requests (kvd): against one that sends no ETag it fails,
// writing nothing when the key exists, and saying that the condition may
// have been ignored when it did not.
func (ns *Namespace) Update(ctx context.Context, key string, fn func(old []byte, found bool) ([]byte, error)) (etag string, err error) {
	return ns.UpdateWithOptions(ctx, key, fn, nil)
}

// UpdateWithOptions is Update with options (which may be nil).
func (ns *Namespace) UpdateWithOptions(ctx context.Context, key string, fn func(old []byte, found bool) ([]byte, error), opts *UpdateOptions) (etag string, err error) {
	var o UpdateOptions
	if opts != nil {
		o = *opts
	}
	if _, err := ttlSeconds(o.TTL); err != nil {
		return "", err
	}
	attempts := o.MaxAttempts
	if attempts <= 0 {
		attempts = DefaultUpdateAttempts
	}
	var conflict error
	var took time.Duration
	for round := 1; round <= attempts; round++ {
		if round > 1 {
			if err := ns.c.wait(ctx, updateBackoff(round-1, took)); err != nil {
				return "", err
			}
		}
		began := time.Now()
		cur, err := ns.GetWithOptions(ctx, key, nil)
		found := err == nil
		if err != nil && !errors.Is(err, ErrNotFound) {
			return "", err
		}
		if found && cur.ETag == "" {
			return "", fmt.Errorf("client: update of %q: the service sent no ETag, so it has no conditional writes and the update could overwrite another; nothing was written", key)
		}
		next, err := fn(cur.Value, found)
		if err != nil {
			return "", err
		}
		put := &PutOptions{TTL: o.TTL, ContentType: o.ContentType}
		if found {
			put.IfMatch = cur.ETag
			if put.ContentType == "" {
				put.ContentType = cur.ContentType
			}
		} else {
			put.IfAbsent = true
		}
		res, err := ns.PutWithResult(ctx, key, next, put)
		took = time.Since(began)
		switch {
		case err == nil && res.ETag == "":
			return "", fmt.Errorf("client: update of %q: the value was written, but the service sent no ETag, so it may have ignored the condition and overwritten another write", key)
		case err == nil:
			return res.ETag, nil
		case errors.Is(err, ErrPreconditionFailed) && !errors.Is(err, ErrMaybeApplied):
			conflict = err // another write came first; nothing was written
		default:
			return "", err
		}
	}
	return "", fmt.Errorf("client: update of %q: %d attempts in a row conflicted with other writes of the key: %w", key, attempts, conflict)
}

// updateBackoff is the full-jitter wait before round n+1 of Update, the
// last round having taken took.
func updateBackoff(n int, took time.Duration) time.Duration {
	ceiling := max(8*took, updateMinBackoff)
	for i := 1; i < n && ceiling < updateMaxBackoff; i++ {
		ceiling *= 2
	}
	return rand.N(min(ceiling, updateMaxBackoff) + 1)
}
