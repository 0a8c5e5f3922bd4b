package pebble

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"math"
	"sync"
	"time"

	"github.com/edgekv/kv"
	"github.com/edgekv/kv/internal/store"
)

// The layout of the engine's key space. Every record starts with a one-byte
// table tag; namespaces are named by their fixed-width 16-byte id, so one
// namespace's range can never overlap another's, whatever the keys:
//
//	0x00 "format"                         -> the layout's version (formatVersion)
//	0x00 "revisions"                      -> revision ceiling(8, BE) (revisions.go)
//	0x01 nsid(16)                         -> namespace record (JSON)
//	0x02 digest(32)                       -> organization of a token
//	0x03 nsid(16) key                     -> value record
//	0x04 nsid(16) expiry(8, BE) key       -> size(8): the namespace's expiry index
//	0x05 orglen(2) org month(4) nsid(16)  -> usage record (usage.go)
//	0x06 nsid(16) key                     -> key entry: what a listing shows
//	0x07 orglen(2) org month(4) day(1) nsid(16) -> usage record of a day (usage.go)
//	0x08 nsid(16)                         -> horizon(8, BE): the namespace's highest revision compacted
//	0x08 nsid(16) rev(8, BE)              -> change record: the change feed (changes.go)
//
// Every key has a value record and a key entry, written and removed in the
// same batch. Listings and the reads before a write use the small key
// entries, so a page of 1,000 keys reads tens of kilobytes, not the values.
//
// Every change of a key commits its change record in the batch of the
// change, under the revision it gave the key.
//
// Organizations are not part of any key: a namespace record names its owner,
// and every key operation checks it before touching the namespace's range.
const (
	tagFormat    byte = 0x00
	tagNamespace byte = 0x01
	tagToken     byte = 0x02
	tagKey       byte = 0x03
	tagExpiry    byte = 0x04
	tagEntry     byte = 0x06
	tagUsageDay  byte = 0x07
	tagChange    byte = 0x08
)

// formatVersion is the layout's version: 2 added the key entries (0x06),
// 3 the revisions (in value records of version 2, in key entries of
// entrySize, and the revision ceiling), 4 the change feed (0x08). A store
// without the format record is version 1. Records written before version 3
// stay as they are, with revision 0, until their key is written again.
//
// Layout 4 reads every record of layout 3 as it is, but a kvd of layout 3
// must not write to a store of layout 4: its writes would have no change
// records, a gap in the feed that no reader could notice. Hence the new
// version, which such a kvd refuses to open.
const formatVersion = 4

var formatKey = []byte{tagFormat, 'f', 'o', 'r', 'm', 'a', 't'}

func namespaceKey(id [16]byte) []byte {
	return append([]byte{tagNamespace}, id[:]...)
}

func tokenKey(d [32]byte) []byte {
	return append([]byte{tagToken}, d[:]...)
}

// appendValueKey appends the record key of key in namespace id to dst.
func appendValueKey(dst []byte, id [16]byte, key string) []byte {
	dst = append(dst, tagKey)
	dst = append(dst, id[:]...)
	return append(dst, key...)
}

// appendEntryKey appends the key entry's key of key in namespace id to dst.
func appendEntryKey(dst []byte, id [16]byte, key string) []byte {
	dst = append(dst, tagEntry)
	dst = append(dst, id[:]...)
	return append(dst, key...)
}

// A key entry: updated(8) expiry(8) size(4) revision(8), big-endian; size
// is the value's length. Entries of layout 2 lack the revision (0).
const (
	entrySize   = 8 + 8 + 4 + 8
	entrySizeV2 = 8 + 8 + 4
)

func encodeEntry(dst []byte, updated int64, expiry uint64, size int, rev store.Revision) []byte {
	dst = binary.BigEndian.AppendUint64(dst, uint64(updated))
	dst = binary.BigEndian.AppendUint64(dst, expiry)
	dst = binary.BigEndian.AppendUint32(dst, uint32(size))
	return binary.BigEndian.AppendUint64(dst, uint64(rev))
}

// keyEntry is a decoded key entry.
type keyEntry struct {
	updated int64
	expiry  uint64
	size    int
	rev     store.Revision
}

var errCorruptEntry = errors.New("kvd/pebble: corrupt key entry")

func decodeEntry(b []byte) (keyEntry, error) {
	if len(b) != entrySize && len(b) != entrySizeV2 {
		return keyEntry{}, errCorruptEntry
	}
	e := keyEntry{
		updated: int64(binary.BigEndian.Uint64(b[0:8])),
		expiry:  binary.BigEndian.Uint64(b[8:16]),
		size:    int(binary.BigEndian.Uint32(b[16:20])),
	}
	if len(b) == entrySize {
		e.rev = store.Revision(binary.BigEndian.Uint64(b[20:28]))
	}
	return e, nil
}

func appendExpiryKey(dst []byte, id [16]byte, expiry uint64, key string) []byte {
	dst = append(dst, tagExpiry)
	dst = append(dst, id[:]...)
	dst = binary.BigEndian.AppendUint64(dst, expiry)
	return append(dst, key...)
}

// namespaceRange returns the bounds of every record of table tag that belongs
// to namespace id.
func namespaceRange(tag byte, id [16]byte) (lo, hi []byte) {
	lo = append([]byte{tag}, id[:]...)
	return lo, store.PrefixEnd(lo)
}

// Expiry times are stored as Unix nanoseconds in a uint64; 0 means the key
// never expires. A time past the year 2262 (beyond int64 nanoseconds) is
// stored as the last representable instant.
func encodeExpiry(t time.Time) uint64 {
	if t.IsZero() {
		return 0
	}
	if t.After(maxTime) {
		return math.MaxInt64
	}
	n := t.UnixNano()
	if n < 1 {
		return 1
	}
	return uint64(n)
}

var maxTime = time.Unix(0, math.MaxInt64)

func decodeExpiry(e uint64) time.Time {
	if e == 0 {
		return time.Time{}
	}
	return time.Unix(0, int64(e)).UTC()
}

// expired reports whether an encoded expiry is at or before now.
func expired(e uint64, now time.Time) bool {
	return e != 0 && e <= encodeExpiry(now)
}

// A value record: version(1) updated(8) expiry(8) revision(8) ctlen(1)
// contenttype data. Version 1 (before layout 3) has no revision.
const (
	valueVersion      = 2
	valueHeaderSize   = 1 + 8 + 8 + 8 + 1
	valueHeaderSizeV1 = 1 + 8 + 8 + 1
)

func encodeValue(dst []byte, updated time.Time, expiry uint64, rev store.Revision, contentType string, data []byte) []byte {
	dst = append(dst, valueVersion)
	dst = binary.BigEndian.AppendUint64(dst, uint64(updated.UnixNano()))
	dst = binary.BigEndian.AppendUint64(dst, expiry)
	dst = binary.BigEndian.AppendUint64(dst, uint64(rev))
	dst = append(dst, byte(len(contentType)))
	dst = append(dst, contentType...)
	return append(dst, data...)
}

// valueRecord is a decoded value record; data aliases the encoded bytes.
type valueRecord struct {
	updated     int64
	expiry      uint64
	rev         store.Revision
	contentType []byte
	data        []byte
}

var errCorrupt = errors.New("kvd/pebble: corrupt value record")

func decodeValue(b []byte) (valueRecord, error) {
	if len(b) < valueHeaderSizeV1 {
		return valueRecord{}, errCorrupt
	}
	var r valueRecord
	r.updated = int64(binary.BigEndian.Uint64(b[1:9]))
	r.expiry = binary.BigEndian.Uint64(b[9:17])
	head := valueHeaderSizeV1
	switch b[0] {
	case 1:
	case valueVersion:
		if len(b) < valueHeaderSize {
			return valueRecord{}, errCorrupt
		}
		r.rev = store.Revision(binary.BigEndian.Uint64(b[17:25]))
		head = valueHeaderSize
	default:
		return valueRecord{}, errCorrupt
	}
	ctLen := int(b[head-1])
	if len(b) < head+ctLen {
		return valueRecord{}, errCorrupt
	}
	r.contentType = b[head : head+ctLen]
	r.data = b[head+ctLen:]
	return r, nil
}

// namespaceRecord is the stored form of a namespace.
type namespaceRecord struct {
	Org       string    `json:"org"`
	Name      string    `json:"name"`
	Status    kv.Status `json:"status"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

func encodeNamespace(ns kv.Namespace) []byte {
	b, err := json.Marshal(namespaceRecord{ns.Org, ns.Name, ns.Status, ns.CreatedAt, ns.UpdatedAt})
	if err != nil {
		panic(err) // plain strings and times always marshal
	}
	return b
}

func decodeNamespace(id [16]byte, b []byte) (kv.Namespace, error) {
	var r namespaceRecord
	if err := json.Unmarshal(b, &r); err != nil {
		return kv.Namespace{}, errors.New("kvd/pebble: corrupt namespace record")
	}
	return kv.Namespace{ID: kv.ID(id), Org: r.Org, Name: r.Name, Status: r.Status, CreatedAt: r.CreatedAt, UpdatedAt: r.UpdatedAt}, nil
}

// keyBufs holds buffers for record keys, so that a read does not allocate
// one (Pebble's Get keeps no reference to the key).
var keyBufs = sync.Pool{New: func() any { b := make([]byte, 0, 1+16+kv.MaxKeyLen); return &b }}

// internContentType returns b as a string without allocating for the
// common types.
func internContentType(b []byte) string {
	switch string(b) { // no allocation: the compiler compares in place
	case kv.DefaultContentType:
		return kv.DefaultContentType
	case "application/json":
		return "application/json"
	case "text/plain":
		return "text/plain"
	case "text/plain; charset=utf-8":
		return "text/plain; charset=utf-8"
	case "application/x-www-form-urlencoded":
		return "application/x-www-form-urlencoded"
	}
	return string(b)
}
