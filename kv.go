// Package kv is the vocabulary of the key-value service: namespaces, keys,
// their validation rules and the service's errors. It imports only the
// standard library so that every other package, the public client among
// them, can share it without pulling in a storage engine.
package kv

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"time"
)

// Limits of the API contract.
const (
	// MaxKeyLen is the longest key, in bytes (keys are ASCII).
	MaxKeyLen = 256
	// MaxValueSize is the largest value, in bytes (1 MiB).
	MaxValueSize = 1 << 20
	// MaxNamespaceNameLen is the longest namespace name.
	MaxNamespaceNameLen = 255
	// MaxTTLSeconds is the largest ttl_secs accepted: the most seconds whose
	// nanoseconds still fit in an int64.
	MaxTTLSeconds = 9223372036
	// MaxContentTypeLen bounds the stored Content-Type of a value.
	MaxContentTypeLen = 255
	// DefaultContentType is stored when a write carries no Content-Type.
	DefaultContentType = "application/octet-stream"

	// DefaultPageSize and MaxPageSize govern namespace listing.
	DefaultPageSize = 20
	MaxPageSize     = 250
	// DefaultListLimit and MaxListLimit govern key listing.
	DefaultListLimit = 1000
	MaxListLimit     = 1000

	// DefaultOrg is the organization that owns TELNYX_API_KEY's namespaces.
	DefaultOrg = "default"
)

// Status is the lifecycle state of a namespace.
type Status string

// The namespace lifecycle: creation runs pending -> provision_ok (or
// provision_failed); deletion runs deleting -> gone (or delete_failed).
const (
	StatusPending         Status = "pending"
	StatusProvisionOK     Status = "provision_ok"
	StatusProvisionFailed Status = "provision_failed"
	StatusDeleting        Status = "deleting"
	StatusDeleteFailed    Status = "delete_failed"
)

// Namespace is a named, isolated set of keys owned by one organization.
type Namespace struct {
	ID        ID
	Org       string // owning organization
	Name      string
	Status    Status
	CreatedAt time.Time
	UpdatedAt time.Time
}

// Ready reports whether key operations are allowed on the namespace.
func (ns Namespace) Ready() bool { return ns.Status == StatusProvisionOK }

// KeyInfo describes one key in a listing.
type KeyInfo struct {
	Key       string
	Size      int64 // value size in bytes
	UpdatedAt time.Time
	Revision  uint64 // the write that made the value; see FormatETag
}

// Time formats of the wire contract.
const (
	// NamespaceTimeFormat is RFC 3339 UTC with milliseconds.
	NamespaceTimeFormat = "2006-01-02T15:04:05.000Z07:00"
	// KeyTimeFormat is RFC 3339 UTC with nanoseconds.
	KeyTimeFormat = "2006-01-02T15:04:05.000000000Z07:00"
)

// ValidateKey checks a key against the contract: 1 to MaxKeyLen characters
// from a-z A-Z 0-9 - _ / = . and not starting with '_' (reserved). Path-like
// forms such as "a//b", "./x" and "trailing/" are valid and distinct.
func ValidateKey(key string) error {
	if key == "" {
		return Errorf(EInvalid, "key is empty; a key is 1 to %d characters from a-z A-Z 0-9 - _ / = .", MaxKeyLen).WithParam("key")
	}
	if len(key) > MaxKeyLen {
		return Errorf(EInvalid, "key is %d characters long; the limit is %d", len(key), MaxKeyLen).WithParam("key")
	}
	if key[0] == '_' {
		return Errorf(EInvalid, "keys starting with '_' are reserved").WithParam("key")
	}
	for i := 0; i < len(key); i++ {
		if !keyByte[key[i]] {
			return Errorf(EInvalid, "key contains %s which is not allowed; allowed: a-z A-Z 0-9 - _ / = .", describeByte(key[i])).WithParam("key")
		}
	}
	return nil
}

// ValidKeyPrefix reports whether p could begin a valid key (an empty prefix
// matches every key).
func ValidKeyPrefix(p string) bool {
	if len(p) > MaxKeyLen || (p != "" && p[0] == '_') {
		return false
	}
	for i := 0; i < len(p); i++ {
		if !keyByte[p[i]] {
			return false
		}
	}
	return true
}

var keyByte = func() (t [256]bool) {
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
	}
	for c := 'A'; c <= 'Z'; c++ {
		t[c] = true
	}
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for _, c := range "-_/=." {
		t[c] = true
	}
	return t
}()

func describeByte(b byte) string {
	if b >= 0x20 && b < 0x7f {
		return fmt.Sprintf("'%c'", b)
	}
	return fmt.Sprintf("byte 0x%02x", b)
}

// ValidateNamespaceName checks a namespace name: 1 to 255 characters from
// a-z 0-9 and '-'.
func ValidateNamespaceName(name string) error {
	if name == "" {
		return Errorf(EInvalid, "name is required; it may contain only lowercase letters, numbers and hyphens").WithPointer("/name")
	}
	if len(name) > MaxNamespaceNameLen {
		return Errorf(EInvalid, "name is %d characters long; the limit is %d", len(name), MaxNamespaceNameLen).WithPointer("/name")
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return Errorf(EInvalid, "name contains %s; it may contain only lowercase letters, numbers and hyphens", describeByte(c)).WithPointer("/name")
		}
	}
	return nil
}

// ID is a namespace id: the 16 bytes of a UUID. It is parsed once, where
// it enters (a request path, a stored record), and travels as this type
// from then on. The zero ID names no namespace.
type ID [16]byte

// NewID returns a random (version 4) UUID.
func NewID() ID {
	var id ID
	if _, err := rand.Read(id[:]); err != nil {
		panic("kv: no randomness: " + err.Error())
	}
	id[6] = id[6]&0x0f | 0x40
	id[8] = id[8]&0x3f | 0x80
	return id
}

// String is the canonical lowercase form, 550e8400-e29b-41d4-a716-446655440000.
func (id ID) String() string { return string(id.appendText(make([]byte, 0, 36))) }

func (id ID) appendText(b []byte) []byte {
	var s [36]byte
	hex.Encode(s[0:8], id[0:4])
	s[8] = '-'
	hex.Encode(s[9:13], id[4:6])
	s[13] = '-'
	hex.Encode(s[14:18], id[6:8])
	s[18] = '-'
	hex.Encode(s[19:23], id[8:10])
	s[23] = '-'
	hex.Encode(s[24:], id[10:])
	return append(b, s[:]...)
}

// IsZero reports whether id is the zero ID.
func (id ID) IsZero() bool { return id == ID{} }

// MarshalText implements encoding.TextMarshaler with the canonical form.
func (id ID) MarshalText() ([]byte, error) { return id.appendText(nil), nil }

// UnmarshalText implements encoding.TextUnmarshaler, as ParseID.
func (id *ID) UnmarshalText(b []byte) error {
	p, err := ParseID(string(b))
	if err != nil {
		return err
	}
	*id = p
	return nil
}

// ParseID parses a UUID in its 36-character hyphenated form, in either
// case. The error is the API's 400 for a malformed id.
func ParseID(s string) (ID, error) {
	var id ID
	if len(s) != 36 || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
		return id, errBadID(s)
	}
	nibble := 0
	for i := 0; i < len(s); i++ {
		if i == 8 || i == 13 || i == 18 || i == 23 {
			continue // the hyphens, checked above
		}
		v, ok := fromHex(s[i])
		if !ok {
			return ID{}, errBadID(s)
		}
		if nibble%2 == 0 {
			id[nibble/2] = v << 4
		} else {
			id[nibble/2] |= v
		}
		nibble++
	}
	return id, nil
}

func fromHex(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

func errBadID(s string) *Error {
	return Errorf(EInvalid, "namespace id %q is not a UUID (expected the form 550e8400-e29b-41d4-a716-446655440000)", truncate(s, 64)).WithParam("id")
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
