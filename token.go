package kv

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// Permission is something a token may be allowed to do.
type Permission string

// The permissions of the contract ("Tokens and scopes").
const (
	PermNamespacesRead  Permission = "namespaces:read"  // list and get namespaces
	PermNamespacesWrite Permission = "namespaces:write" // create and delete namespaces
	PermKeysRead        Permission = "keys:read"        // GET/HEAD a key, batch get and check, watch
	PermKeysWrite       Permission = "keys:write"       // PUT/DELETE a key, batch put, delete and incr
	PermKeysList        Permission = "keys:list"        // list keys
	PermUsageRead       Permission = "usage:read"       // read usage and the bill
)

// AllPermissions are every permission, in the contract's order: a token's
// default.
var AllPermissions = []Permission{PermNamespacesRead, PermNamespacesWrite, PermKeysRead, PermKeysWrite, PermKeysList, PermUsageRead}

// ReadOnlyPermissions are what a read-only token may do.
var ReadOnlyPermissions = []Permission{PermNamespacesRead, PermKeysRead, PermKeysList, PermUsageRead}

// ParsePermissions parses a comma-separated list of permissions, such as
// "keys:read,keys:list", into a sorted set without duplicates.
func ParsePermissions(s string) ([]Permission, error) {
	var out []Permission
	for p := range strings.SplitSeq(s, ",") {
		p = strings.TrimSpace(p)
		if p == "" {
			continue
		}
		if !slices.Contains(AllPermissions, Permission(p)) {
			return nil, fmt.Errorf("unknown permission %q; the permissions are %s", truncate(p, 40), joinPermissions(AllPermissions))
		}
		out = append(out, Permission(p))
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no permission given; the permissions are %s", joinPermissions(AllPermissions))
	}
	return NormalizePermissions(out), nil
}

// NormalizePermissions returns ps in the contract's order, without
// duplicates or unknown permissions.
func NormalizePermissions(ps []Permission) []Permission {
	var out []Permission
	for _, p := range AllPermissions {
		if slices.Contains(ps, p) {
			out = append(out, p)
		}
	}
	return out
}

func joinPermissions(ps []Permission) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = string(p)
	}
	return strings.Join(s, ", ")
}

// Limits of tokens.
const (
	// MaxTokenNameLen bounds a token's name.
	MaxTokenNameLen = 128
	// MaxOrgLen bounds an organization's name.
	MaxOrgLen = 255
	// MaxTokenScopes bounds the namespaces, and the prefixes, of a token's
	// scope.
	MaxTokenScopes = 100
)

// ValidateOrg checks an organization's name: 1 to MaxOrgLen printable
// ASCII characters.
func ValidateOrg(org string) error {
	if org == "" {
		return fmt.Errorf("the organization is empty")
	}
	if len(org) > MaxOrgLen {
		return fmt.Errorf("the organization is %d characters long; the limit is %d", len(org), MaxOrgLen)
	}
	for i := 0; i < len(org); i++ {
		if org[i] <= 0x20 || org[i] >= 0x7f {
			return fmt.Errorf("the organization contains %s; it may hold only printable ASCII without spaces", describeByte(org[i]))
		}
	}
	return nil
}

// ValidateTokenName checks a token's name: up to MaxTokenNameLen printable
// ASCII characters (empty is allowed).
func ValidateTokenName(name string) error {
	if len(name) > MaxTokenNameLen {
		return fmt.Errorf("the token name is %d characters long; the limit is %d", len(name), MaxTokenNameLen)
	}
	for i := 0; i < len(name); i++ {
		if name[i] < 0x20 || name[i] >= 0x7f {
			return fmt.Errorf("the token name contains %s; it may hold only printable ASCII", describeByte(name[i]))
		}
	}
	return nil
}

// ValidateScopePrefix checks a key prefix of a token's scope: a non-empty
// string that could begin a valid key.
func ValidateScopePrefix(p string) error {
	if p == "" {
		return fmt.Errorf("a scope prefix may not be empty (a token without prefixes may use every key)")
	}
	if !ValidKeyPrefix(p) {
		return fmt.Errorf("the scope prefix %q could begin no key; keys are 1 to %d characters from a-z A-Z 0-9 - _ / = . and do not start with '_'", truncate(p, 64), MaxKeyLen)
	}
	return nil
}

// TokenRecord is a token as kvd's token commands show it; never its
// secret.
type TokenRecord struct {
	ID          string       `json:"id"`
	Name        string       `json:"name"`
	Org         string       `json:"org"`
	Permissions []Permission `json:"permissions"`
	Namespaces  []ID         `json:"namespaces,omitempty"`
	Prefixes    []string     `json:"prefixes,omitempty"`
	ExpiresAt   *time.Time   `json:"expires_at"`
	CreatedAt   time.Time    `json:"created_at"`
	LastUsedAt  *time.Time   `json:"last_used_at"`
	RevokedAt   *time.Time   `json:"revoked_at,omitempty"`
	Status      string       `json:"status"` // active, revoked or expired
}
