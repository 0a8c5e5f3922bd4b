package kv

import (
	"errors"
	"strconv"
	"strings"
)

// An ETag is a strong entity tag (RFC 9110 §8.8.3) made of a revision: 16
// lower-case hex digits between double quotes. Clients treat it as opaque.

// FormatETag returns the entity tag of revision rev.
func FormatETag(rev uint64) string {
	var b [18]byte
	b[0], b[17] = '"', '"'
	const hex = "0123456789abcdef"
	for i := 16; i >= 1; i-- {
		b[i] = hex[rev&0xf]
		rev >>= 4
	}
	return string(b[:])
}

// NoRevision stands for an entity tag that is well formed but names no
// revision kvd gives (another server's, a weak one under strong
// comparison): it matches nothing.
const NoRevision = ^uint64(0)

// ETagList is a parsed If-Match or If-None-Match header.
type ETagList struct {
	Any       bool     // the header is "*"
	Revisions []uint64 // the tags, NoRevision for those that name none
}

// ErrBadETag is a header that is not "*" nor a list of entity tags.
var ErrBadETag = errors.New(`not "*" nor a comma-separated list of entity tags ("…" or W/"…")`)

// ParseETags parses the value of an If-Match (weak false: strong
// comparison, a weak tag never matches) or If-None-Match (weak true: weak
// comparison) header, as RFC 9110 §13.1.1 and §13.1.2 define them. An
// empty or malformed value is ErrBadETag.
func ParseETags(header string, weak bool) (ETagList, error) {
	h := strings.TrimSpace(header)
	if h == "*" {
		return ETagList{Any: true}, nil
	}
	var l ETagList
	for h != "" {
		isWeak := false
		if strings.HasPrefix(h, "W/") {
			isWeak, h = true, h[2:]
		}
		if len(h) < 2 || h[0] != '"' {
			return ETagList{}, ErrBadETag
		}
		end := strings.IndexByte(h[1:], '"')
		if end < 0 {
			return ETagList{}, ErrBadETag
		}
		tag := h[1 : 1+end]
		for i := 0; i < len(tag); i++ {
			// etagc: %x21 / %x23-7E / obs-text
			if c := tag[i]; c < 0x21 || c == 0x7f {
				return ETagList{}, ErrBadETag
			}
		}
		rev := NoRevision
		if !isWeak || weak {
			if n, err := strconv.ParseUint(tag, 16, 64); err == nil && len(tag) == 16 && strings.ToLower(tag) == tag && n != NoRevision {
				rev = n
			}
		}
		l.Revisions = append(l.Revisions, rev)
		h = strings.TrimLeft(h[2+end:], " \t")
		if h == "" {
			break
		}
		if h[0] != ',' {
			return ETagList{}, ErrBadETag
		}
		h = strings.TrimLeft(h[1:], " \t")
		if h == "" {
			return ETagList{}, ErrBadETag
		}
	}
	if len(l.Revisions) == 0 {
		return ETagList{}, ErrBadETag
	}
	return l, nil
}

// Matches reports whether l names revision rev of an existing key.
func (l ETagList) Matches(rev uint64) bool {
	if l.Any {
		return true
	}
	for _, r := range l.Revisions {
		if r == rev && r != NoRevision {
			return true
		}
	}
	return false
}
