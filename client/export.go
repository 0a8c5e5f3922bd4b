package client

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/edgekv/kv"
)

// GetInfo returns the value of key with what the response says of it: its
// size and content type, and its update time, expiry and ETag as far as
// the service sends them (see KeyInfo; kvd sends all three, the hosted
// service none). A missing or expired key gives kv.ErrNotFound. The value
// is bounded as for Get.
func (ns *Namespace) GetInfo(ctx context.Context, key string) ([]byte, KeyInfo, error) {
	resp, err := ns.c.do(ctx, request{method: http.MethodGet, path: ns.keyPath(key), retry: true})
	if err != nil {
		return nil, KeyInfo{}, err
	}
	defer resp.Body.Close()
	value, err := readLimited(resp, valueLimit, valueWhat(key))
	if err != nil {
		return nil, KeyInfo{}, err
	}
	info, err := keyInfoOf(key, resp.Header)
	info.Size = int64(len(value))
	return value, info, err
}

// keyInfoOf reads a key's metadata from the headers of a GET or HEAD
// answer.
func keyInfoOf(key string, h http.Header) (KeyInfo, error) {
	info := KeyInfo{Key: key, ContentType: h.Get("Content-Type"), ETag: h.Get("ETag")}
	if t, err := time.Parse(time.RFC3339Nano, h.Get(HeaderUpdatedAt)); err == nil {
		info.UpdatedAt = t
	}
	if v := h.Get(HeaderExpiresAt); v != "" {
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			return info, fmt.Errorf("client: the service sent %s %.64q, which is not an RFC 3339 time", HeaderExpiresAt, v)
		}
		info.ExpiryKnown, info.ExpiresAt = true, t
	} else if !info.UpdatedAt.IsZero() {
		// A service that reports update times reports expiry too: none
		// means the key never expires.
		info.ExpiryKnown = true
	}
	return info, nil
}

// PutResult is what the service answered to a conditional write.
type PutResult struct {
	// Written reports that the value was stored; false means the
	// precondition failed (412) and nothing was written.
	Written bool
	// Created reports that the key did not exist before the write.
	Created bool
	// ETag is the key's new entity tag, when the service sends one. A
	// service that sends ETags honours conditional requests; one that
	// sends none may have ignored the condition.
	ETag string
}

// PutIfAbsent stores value under key only if the key does not exist, with
// "If-None-Match: *", and reports whether it did. A key that exists gives
// Written false and no error. opts may be nil.
//
// A service without conditional requests (the hosted service) ignores the
// header and replaces the key: PutResult.ETag is then empty. Callers that
// cannot tell in advance check the key with Info first until a response
// carries an ETag. The call is retried like Put: a write whose first
// attempt landed unseen is reported as not written.
func (ns *Namespace) PutIfAbsent(ctx context.Context, key string, value []byte, opts *PutOptions) (PutResult, error) {
	if opts != nil && opts.IfMatch != "" {
		return PutResult{}, kv.Errorf(kv.EInvalid, "PutIfAbsent with IfMatch: a key cannot both exist with an ETag and be absent")
	}
	r, err := ns.putRequest(key, opts)
	if err != nil {
		return PutResult{}, err
	}
	r.header.Set("If-None-Match", "*")
	// Retried like Put, unlike a write with PutOptions.IfAbsent: a write
	// whose first attempt landed unseen is reported as not written.
	r.unsafe = false
	r.body = func() (io.Reader, error) { return bytes.NewReader(value), nil }
	r.size = int64(len(value))
	r.retry = true
	resp, err := ns.c.do(ctx, r)
	var apiErr *APIError
	if errors.As(err, &apiErr) && apiErr.StatusCode == http.StatusPreconditionFailed {
		return PutResult{}, nil
	}
	if err != nil {
		return PutResult{}, err
	}
	drain(resp)
	return PutResult{Written: true, Created: resp.StatusCode == http.StatusCreated, ETag: resp.Header.Get("ETag")}, nil
}

// RemainingTTL is the TTL that makes a key written at now expire at
// expires, as an import sets it: the remaining whole seconds, at least one
// second. ok is false when expires is at or before now (the key has
// expired already).
func RemainingTTL(expires, now time.Time) (ttl time.Duration, ok bool) {
	left := expires.Sub(now)
	if left <= 0 {
		return 0, false
	}
	return max(left.Truncate(time.Second), time.Second), true
}
