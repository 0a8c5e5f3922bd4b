package service

import (
	"slices"
	"strings"

	"github.com/edgekv/kv"
	"github.com/edgekv/kv/internal/store"
)

// Principal is whom a request acts for: the organization of its token, and
// what the token may do. Every method of the Service checks it before it
// touches storage. A namespace outside the token's namespaces does not
// exist for it (404, as another organization's); a permission it lacks, or
// a key outside its prefixes, is a 403 (code kv.EForbidden) that names what
// is missing.
type Principal struct {
	Org string
	// TokenID is the token's id ("" for a static token, such as
	// TELNYX_API_KEY).
	TokenID string

	perms      permSet
	namespaces []kv.ID  // nil: every namespace of Org
	prefixes   []string // nil: every key
}

// permSet is a set of permissions, one bit each in kv.AllPermissions'
// order.
type permSet uint8

func permsOf(ps []kv.Permission) permSet {
	var s permSet
	for i, p := range kv.AllPermissions {
		if slices.Contains(ps, p) {
			s |= 1 << i
		}
	}
	return s
}

func (s permSet) has(p kv.Permission) bool {
	i := slices.Index(kv.AllPermissions, p)
	return i >= 0 && s&(1<<i) != 0
}

// FullPrincipal is a principal that may do everything in org: what a
// static token, or a token with every permission and no scope, is.
func FullPrincipal(org string) Principal {
	return Principal{Org: org, perms: permsOf(kv.AllPermissions)}
}

// principalOf is the principal of a stored token.
func principalOf(t store.Token) Principal {
	return Principal{Org: t.Org, TokenID: t.ID, perms: permsOf(t.Permissions), namespaces: t.Namespaces, prefixes: t.Prefixes}
}

// Scoped reports whether the principal is limited to some namespaces.
func (p Principal) Scoped() bool { return p.namespaces != nil }

// can is nil when the principal has perm, else the 403 naming it.
func (p Principal) can(perm kv.Permission) error {
	if p.perms.has(perm) {
		return nil
	}
	return kv.Errorf(kv.EForbidden, "this API key lacks the permission %s", perm)
}

// sees reports whether namespace id exists for the principal: it is in
// the token's namespaces, if it has any.
func (p Principal) sees(id kv.ID) bool {
	return p.namespaces == nil || slices.Contains(p.namespaces, id)
}

// namespace is the check of a call on namespace id that needs perm: 404
// when the namespace is out of scope (before anything else, as for a
// namespace of another organization), else the permission's.
func (p Principal) namespace(id kv.ID, perm kv.Permission) error {
	if !p.sees(id) {
		return kv.NamespaceNotFound()
	}
	return p.can(perm)
}

// key is the check of a key operation that needs perm: the namespace's,
// then the key's prefix.
func (p Principal) key(id kv.ID, key string, perm kv.Permission) error {
	if err := p.namespace(id, perm); err != nil {
		return err
	}
	return p.keyInScope(key)
}

// keyInScope is nil when key starts with one of the token's prefixes (or
// the token has none), else the 403 naming them.
func (p Principal) keyInScope(key string) error {
	if p.prefixes == nil {
		return nil
	}
	for _, pre := range p.prefixes {
		if strings.HasPrefix(key, pre) {
			return nil
		}
	}
	return kv.Errorf(kv.EForbidden, "the key %q is outside this API key's prefixes (%s)", truncate(key, 64), p.prefixList()).WithParam("key")
}

// listPrefix is nil when a listing (or a watch) with prefix stays within
// the token's prefixes: prefix must start with one of them.
func (p Principal) listPrefix(prefix string) error {
	if p.prefixes == nil {
		return nil
	}
	for _, pre := range p.prefixes {
		if strings.HasPrefix(prefix, pre) {
			return nil
		}
	}
	return kv.Errorf(kv.EForbidden, "this API key may list only keys under its prefixes (%s); pass a prefix that starts with one of them", p.prefixList()).WithParam("prefix")
}

func (p Principal) prefixList() string {
	q := make([]string, len(p.prefixes))
	for i, pre := range p.prefixes {
		q[i] = "\"" + pre + "\""
	}
	return strings.Join(q, ", ")
}
