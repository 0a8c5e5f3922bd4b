// Package kv is the vocabulary of the key-value service: namespaces, keys,
// their validation rules and the service's errors. It imports only the
// standard library so that every other package, the public client among
// them, can share it without pulling in a storage engine.
package kv

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strings"
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
	ID        string // lowercase canonical UUID
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

// NewID returns a random (version 4) UUID in canonical lowercase form.
func NewID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("kv: no randomness: " + err.Error())
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return FormatID(b)
}

// FormatID renders 16 bytes as a canonical lowercase UUID.
func FormatID(b [16]byte) string {
	var s [36]byte
	hex.Encode(s[0:8], b[0:4])
	s[8] = '-'
	hex.Encode(s[9:13], b[4:6])
	s[13] = '-'
	hex.Encode(s[14:18], b[6:8])
	s[18] = '-'
	hex.Encode(s[19:23], b[8:10])
	s[23] = '-'
	hex.Encode(s[24:], b[10:])
	return string(s[:])
}

// ParseID parses a UUID in its 36-character hyphenated form, in either case,
// and returns its 16 bytes.
func ParseID(s string) ([16]byte, error) {
	var b [16]byte
	if len(s) != 36 || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
		return b, Errorf(EInvalid, "namespace id %q is not a UUID (expected the form 550e8400-e29b-41d4-a716-446655440000)", truncate(s, 64)).WithParam("id")
	}
	hexs := s[0:8] + s[9:13] + s[14:18] + s[19:23] + s[24:]
	if _, err := hex.Decode(b[:], []byte(hexs)); err != nil {
		return b, Errorf(EInvalid, "namespace id %q is not a UUID (expected the form 550e8400-e29b-41d4-a716-446655440000)", truncate(s, 64)).WithParam("id")
	}
	return b, nil
}

// CanonicalID returns the canonical lowercase form of a UUID, or an EInvalid
// error.
func CanonicalID(s string) (string, error) {
	b, err := ParseID(s)
	if err != nil {
		return "", err
	}
	if isLowerCanonical(s) {
		return s, nil
	}
	return FormatID(b), nil
}

func isLowerCanonical(s string) bool {
	return strings.ToLower(s) == s
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
