package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Application-level expiry, compatible with the kvPutWithExpiry and
// kvGetWithExpiry helpers of the service's documentation. The value is
// wrapped in the JSON envelope
//
//	{"value":"<the value>","expires_at":<milliseconds since the Unix epoch>}
//
// written byte for byte as JavaScript's JSON.stringify writes it, so Go and
// JavaScript functions can share keys. This predates the service's own TTL
// (PutOptions.TTL), which needs no envelope and no sweeping; use these
// helpers to interoperate with code that uses the envelope.

// ErrNotEnvelope is wrapped by the errors of GetWithExpiry for a value that
// is not an expiry envelope with a string value and a numeric expires_at.
var ErrNotEnvelope = errors.New("client: value is not an expiry envelope")

// PutWithExpiry stores value under key in the expiry envelope, expiring ttl
// from now (the client's clock, truncated to milliseconds). A ttl of zero or
// less writes an envelope that has already expired, as the JavaScript helper
// does. Invalid UTF-8 in value is stored as U+FFFD, since the envelope is
// JSON text.
func (ns *Namespace) PutWithExpiry(ctx context.Context, key, value string, ttl time.Duration) error {
	expiresAt := ns.c.cfg.Now().UnixMilli() + ttl.Milliseconds()
	_, err := ns.Put(ctx, key, EncodeExpiryEnvelope(value, expiresAt), nil)
	return err
}

// GetWithExpiry returns the value stored by PutWithExpiry (or by the
// JavaScript kvPutWithExpiry). ok is false when the key is missing or its
// envelope has expired (now > expires_at, in milliseconds); an expired key
// is deleted, as the JavaScript helper does. A value that is not an envelope
// gives an error wrapping ErrNotEnvelope.
//
// The lazy delete can race with a concurrent fresh write of the key and
// remove it: the service has no compare-and-swap.
func (ns *Namespace) GetWithExpiry(ctx context.Context, key string) (value string, ok bool, err error) {
	raw, _, err := ns.Get(ctx, key)
	if errors.Is(err, ErrNotFound) {
		return "", false, nil
	}
	if err != nil {
		return "", false, err
	}
	value, expiresAt, err := DecodeExpiryEnvelope(raw)
	if err != nil {
		return "", false, fmt.Errorf("client: key %q: %w", key, err)
	}
	if expired(ns.c.cfg.Now(), expiresAt) {
		if err := ns.Delete(ctx, key); err != nil {
			return "", false, fmt.Errorf("client: deleting expired key %q: %w", key, err)
		}
		return "", false, nil
	}
	return value, true, nil
}

// SweepExpired deletes every key starting with prefix whose value is an
// expired envelope, and returns how many it deleted. Keys whose values are
// not envelopes are left alone. Each key costs a read; each expired key a
// delete. Like GetWithExpiry, it can race with a concurrent fresh write.
func (ns *Namespace) SweepExpired(ctx context.Context, prefix string) (deleted int, err error) {
	for info, err := range ns.Keys(ctx, prefix) {
		if err != nil {
			return deleted, err
		}
		raw, _, err := ns.Get(ctx, info.Key)
		if errors.Is(err, ErrNotFound) {
			continue // removed since it was listed
		}
		if err != nil {
			return deleted, err
		}
		_, expiresAt, err := DecodeExpiryEnvelope(raw)
		if err != nil || !expired(ns.c.cfg.Now(), expiresAt) {
			continue
		}
		if err := ns.Delete(ctx, info.Key); err != nil {
			return deleted, err
		}
		deleted++
	}
	return deleted, nil
}

// expired is the JavaScript helper's test, Date.now() > expires_at.
func expired(now time.Time, expiresAt float64) bool {
	return float64(now.UnixMilli()) > expiresAt
}

// EncodeExpiryEnvelope returns the envelope of value expiring at expiresAt
// (milliseconds since the Unix epoch), exactly as JavaScript's
// JSON.stringify({value, expires_at}) writes it.
func EncodeExpiryEnvelope(value string, expiresAt int64) []byte {
	b := make([]byte, 0, len(value)+40)
	b = append(b, `{"value":`...)
	b = appendJSString(b, value)
	b = append(b, `,"expires_at":`...)
	b = strconv.AppendInt(b, expiresAt, 10)
	return append(b, '}')
}

// appendJSString appends s as JSON.stringify quotes a string: only '"',
// '\\' and control characters are escaped, with the short escapes \b \t \n
// \f \r and otherwise \u00xx in lowercase hex. Unlike encoding/json, it
// leaves '<', '>', '&', U+2028 and U+2029 as they are.
func appendJSString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c >= utf8.RuneSelf {
			r, size := utf8.DecodeRuneInString(s[i:])
			if r == utf8.RuneError && size == 1 {
				b = utf8.AppendRune(b, utf8.RuneError)
			} else {
				b = append(b, s[i:i+size]...)
			}
			i += size
			continue
		}
		switch c {
		case '"':
			b = append(b, '\\', '"')
		case '\\':
			b = append(b, '\\', '\\')
		case '\b':
			b = append(b, '\\', 'b')
		case '\t':
			b = append(b, '\\', 't')
		case '\n':
			b = append(b, '\\', 'n')
		case '\f':
			b = append(b, '\\', 'f')
		case '\r':
			b = append(b, '\\', 'r')
		default:
			if c < 0x20 {
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			} else {
				b = append(b, c)
			}
		}
		i++
	}
	return append(b, '"')
}

// DecodeExpiryEnvelope parses an envelope written by EncodeExpiryEnvelope or
// by JSON.stringify: a JSON object whose "value" is a string and whose
// "expires_at" is a number of milliseconds since the Unix epoch. Other
// members are ignored. Anything else gives an error wrapping ErrNotEnvelope.
func DecodeExpiryEnvelope(raw []byte) (value string, expiresAt float64, err error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil || fields == nil {
		return "", 0, fmt.Errorf("%w: not a JSON object", ErrNotEnvelope)
	}
	v, ok := fields["value"]
	if !ok || json.Unmarshal(v, &value) != nil || strings.TrimSpace(string(v)) == "null" {
		return "", 0, fmt.Errorf("%w: \"value\" is missing or not a string", ErrNotEnvelope)
	}
	e, ok := fields["expires_at"]
	if !ok || json.Unmarshal(e, &expiresAt) != nil || strings.TrimSpace(string(e)) == "null" {
		return "", 0, fmt.Errorf("%w: \"expires_at\" is missing or not a number", ErrNotEnvelope)
	}
	return value, expiresAt, nil
}
