package pebble

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/batchrepr"
	"github.com/cockroachdb/pebble/v2/record"
	"github.com/cockroachdb/pebble/v2/sstable"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/wal"
)

// Telling a damaged store from one a crash interrupted.
//
// Pebble deletes, when it opens a store, every sstable its manifest does
// not list. After a crash that is right: a flush or compaction that was
// running left outputs its manifest never recorded, and a compaction that
// finished may not yet have deleted its inputs. After damage (a MANIFEST
// truncated or replaced by an older one) it destroys data: the sstables of
// the lost manifest records hold writes that are nowhere else.
//
// The difference is whether the writes in the unlisted file exist
// elsewhere. Each write has a sequence number. A leftover of an interrupted
// flush holds writes that are still in a log file (a log is removed only
// after its flush is recorded); a leftover of an interrupted compaction
// holds writes of its inputs, which are still listed; an input of a
// finished compaction is recorded as deleted in the manifest. Pebble flushes
// memtables in order, so the writes of a lost flush record are newer than
// every listed sstable, and their log is gone. So an unlisted sstable is
// accepted as a crash's leftover when the manifest records its deletion, or
// when every write in it is covered: its sequence number lies within a
// listed sstable's range, or a replayed log's; or, for the 0 a compaction
// into the last level gives every write older than any snapshot, its key
// lies within a listed sstable's key range (the compaction's inputs are
// listed until it is recorded). Anything else means the manifest has lost
// track of data.

// manifestHistory is what a MANIFEST's records say about sstables (every
// file number added, and every one deleted) and about logs: Pebble replays
// those numbered minLog and up.
type manifestHistory struct {
	added, deleted map[uint64]bool
	minLog         uint64
}

// readManifestHistory decodes the version edits of a MANIFEST, as Pebble
// reads them: up to the first record that is incomplete or invalid. It
// decodes only what it needs and fails on anything it does not know.
func readManifestHistory(fs vfs.FS, path string) (manifestHistory, error) {
	h := manifestHistory{added: map[uint64]bool{}, deleted: map[uint64]bool{}}
	f, err := fs.Open(path)
	if err != nil {
		return h, err
	}
	defer f.Close()
	rr := record.NewReader(f, 0)
	for {
		r, err := rr.Next()
		if err == io.EOF || record.IsInvalidRecord(err) {
			return h, nil
		}
		if err != nil {
			return h, err
		}
		if err := h.decodeEdit(bufio.NewReader(r)); err != nil {
			if record.IsInvalidRecord(err) {
				return h, nil // a torn last record, as Pebble treats it
			}
			return h, fmt.Errorf("decode %s: %w", path, err)
		}
	}
}

// The tags of a version edit (Pebble's internal/manifest/version_edit.go,
// the LevelDB and RocksDB format with Pebble's additions).
const (
	veComparator      = 1
	veLogNumber       = 2
	veNextFileNumber  = 3
	veLastSequence    = 4
	veCompactPointer  = 5
	veDeletedFile     = 6
	veNewFile         = 7
	vePrevLogNumber   = 9
	veNewFile2        = 100
	veNewFile3        = 102
	veNewFile4        = 103
	veNewFile5        = 104
	veCreatedBacking  = 105
	veRemovedBacking  = 106
	veNewBlobFile     = 107
	veDeletedBlobFile = 108
	veCustomTerminate = 1
	veCustomPathID    = 65
	veCustomNotSafe   = 1 << 6
	veCustomVirtual   = 66
	veCustomPrefix    = 67
	veCustomSuffix    = 68
	veCustomBlobRefs  = 69
	veBoundsPointKeys = 1 << 0
)

func (h *manifestHistory) decodeEdit(r *bufio.Reader) error {
	uv := func() (uint64, error) { return binary.ReadUvarint(r) }
	skipBytes := func() error {
		n, err := uv()
		if err != nil {
			return err
		}
		_, err = r.Discard(int(n))
		return err
	}
	skip := func(uvarints, byteFields int) error {
		for range uvarints {
			if _, err := uv(); err != nil {
				return err
			}
		}
		for range byteFields {
			if err := skipBytes(); err != nil {
				return err
			}
		}
		return nil
	}
	for {
		tag, err := uv()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		switch tag {
		case veComparator:
			err = skip(0, 1)
		case veLogNumber:
			var n uint64
			if n, err = uv(); err == nil && n != 0 {
				h.minLog = n
			}
		case veNextFileNumber, veLastSequence, vePrevLogNumber, veRemovedBacking:
			err = skip(1, 0)
		case veCompactPointer:
			err = skip(1, 1)
		case veCreatedBacking, veDeletedBlobFile:
			err = skip(2, 0)
		case veNewBlobFile:
			err = skip(5, 0)
		case veDeletedFile:
			if _, err = uv(); err == nil { // level
				var n uint64
				if n, err = uv(); err == nil {
					h.deleted[n] = true
				}
			}
		case veNewFile, veNewFile2, veNewFile3, veNewFile4, veNewFile5:
			err = h.decodeNewFile(r, tag, uv, skip)
		default:
			return fmt.Errorf("unknown version edit tag %d", tag)
		}
		if err != nil {
			if err == io.EOF {
				return io.ErrUnexpectedEOF
			}
			return err
		}
	}
}

func (h *manifestHistory) decodeNewFile(r *bufio.Reader, tag uint64, uv func() (uint64, error), skip func(int, int) error) error {
	if _, err := uv(); err != nil { // level
		return err
	}
	n, err := uv()
	if err != nil {
		return err
	}
	h.added[n] = true
	if tag == veNewFile3 {
		if err := skip(1, 0); err != nil { // path id
			return err
		}
	}
	if err := skip(1, 0); err != nil { // size
		return err
	}
	if tag != veNewFile5 {
		err = skip(0, 2) // smallest and largest point keys
	} else {
		var marker byte
		if marker, err = r.ReadByte(); err != nil {
			return err
		}
		if marker&veBoundsPointKeys != 0 {
			if err := skip(0, 2); err != nil {
				return err
			}
		}
		err = skip(0, 2) // range key bounds
	}
	if err != nil {
		return err
	}
	if tag != veNewFile {
		if err := skip(2, 0); err != nil { // smallest and largest sequence numbers
			return err
		}
	}
	if tag != veNewFile4 && tag != veNewFile5 {
		return nil
	}
	for {
		ct, err := uv()
		if err != nil {
			return err
		}
		switch {
		case ct == veCustomTerminate:
			return nil
		case ct == veCustomVirtual:
			err = skip(1, 0)
		case ct == veCustomPrefix || ct == veCustomSuffix:
			err = skip(0, 1)
		case ct == veCustomBlobRefs:
			if err = skip(1, 0); err == nil { // depth
				var refs uint64
				if refs, err = uv(); err == nil {
					err = skip(int(2*min(refs, 1<<20)), 0)
				}
			}
		case ct == veCustomPathID || ct&veCustomNotSafe != 0:
			return fmt.Errorf("unsupported custom field %d of a new table", ct)
		default:
			err = skip(0, 1)
		}
		if err != nil {
			return err
		}
	}
}

// seqRanges is a set of sequence numbers: sorted, disjoint, inclusive
// ranges.
type seqRanges [][2]uint64

func (s *seqRanges) add(lo, hi uint64) { *s = append(*s, [2]uint64{lo, hi}) }

// merge sorts and merges the ranges; add may not be called afterwards.
func (s *seqRanges) merge() {
	r := *s
	slices.SortFunc(r, func(a, b [2]uint64) int {
		switch {
		case a[0] < b[0]:
			return -1
		case a[0] > b[0]:
			return 1
		}
		return 0
	})
	out := r[:0]
	for _, x := range r {
		if n := len(out); n > 0 && x[0] <= out[n-1][1]+1 {
			out[n-1][1] = max(out[n-1][1], x[1])
			continue
		}
		out = append(out, x)
	}
	*s = out
}

func (s seqRanges) covers(seq uint64) bool {
	i, _ := slices.BinarySearchFunc(s, seq, func(r [2]uint64, seq uint64) int {
		switch {
		case r[1] < seq:
			return -1
		case r[0] > seq:
			return 1
		}
		return 0
	})
	return i < len(s) && s[i][0] <= seq && seq <= s[i][1]
}

// keyRanges is a set of user keys: sorted, disjoint, inclusive ranges.
type keyRanges [][2][]byte

func (k *keyRanges) add(lo, hi []byte) {
	*k = append(*k, [2][]byte{bytes.Clone(lo), bytes.Clone(hi)})
}

// merge sorts and merges the ranges; add may not be called afterwards.
func (k *keyRanges) merge() {
	r := *k
	slices.SortFunc(r, func(a, b [2][]byte) int { return bytes.Compare(a[0], b[0]) })
	out := r[:0]
	for _, x := range r {
		if n := len(out); n > 0 && bytes.Compare(x[0], out[n-1][1]) <= 0 {
			if bytes.Compare(x[1], out[n-1][1]) > 0 {
				out[n-1][1] = x[1]
			}
			continue
		}
		out = append(out, x)
	}
	*k = out
}

func (k keyRanges) contains(key []byte) bool {
	// The last range starting at or before key.
	i := sort.Search(len(k), func(i int) bool { return bytes.Compare(k[i][0], key) > 0 }) - 1
	return i >= 0 && bytes.Compare(key, k[i][1]) <= 0
}

// coverage is where the writes of a store are: the sequence numbers of its
// listed sstables and replayed logs, and the key ranges of its listed
// sstables.
type coverage struct {
	seqs seqRanges
	keys keyRanges
}

func (c *coverage) merge() { c.seqs.merge(); c.keys.merge() }

func (c *coverage) covers(key []byte, seq uint64) bool {
	if seq == 0 {
		return c.keys.contains(key)
	}
	return c.seqs.covers(seq)
}

// logRanges adds to s the sequence numbers of every log file in dir
// numbered minLog or more (those Pebble replays), as far as each can be
// read.
func logRanges(fs vfs.FS, dir string, minLog uint64, s *seqRanges) error {
	logs, err := wal.Scan(wal.Dir{FS: fs, Dirname: dir})
	if err != nil {
		return err
	}
	for _, ll := range logs {
		if uint64(ll.Num) < minLog {
			continue
		}
		r := ll.OpenForRead()
		var lo, hi uint64
		for {
			rec, _, err := r.NextRecord()
			if err != nil {
				break // the end, or a torn tail: what Pebble replays stops here too
			}
			var hdr [batchrepr.HeaderLen]byte
			if _, err := io.ReadFull(rec, hdr[:]); err != nil {
				break
			}
			h, ok := batchrepr.ReadHeader(hdr[:])
			if !ok || h.Count == 0 {
				continue
			}
			first, last := uint64(h.SeqNum), uint64(h.SeqNum)+uint64(h.Count)-1
			if lo == 0 || first < lo {
				lo = first
			}
			hi = max(hi, last)
		}
		r.Close()
		if lo != 0 {
			s.add(lo, hi)
		}
	}
	return nil
}

// uncoveredWrite reports whether the sstable at path holds a write that
// covered does not. An sstable that cannot be read is a file a crash cut
// short: unreadable reports it.
func uncoveredWrite(fs vfs.FS, path string, ropts sstable.ReaderOptions, covered *coverage) (found bool, unreadable error) {
	defer func() {
		if v := recover(); v != nil {
			found, unreadable = false, fmt.Errorf("reading it panicked: %v", v)
		}
	}()
	f, err := fs.Open(path)
	if err != nil {
		return false, err
	}
	readable, err := sstable.NewSimpleReadable(f)
	if err != nil {
		f.Close()
		return false, err
	}
	r, err := sstable.NewReader(context.Background(), readable, ropts)
	if err != nil {
		readable.Close()
		return false, err
	}
	defer r.Close()
	it, err := r.NewIter(sstable.NoTransforms, nil, nil, sstable.AssertNoBlobHandles)
	if err != nil {
		return false, err
	}
	for kv := it.First(); kv != nil; kv = it.Next() {
		if !covered.covers(kv.K.UserKey, uint64(kv.K.SeqNum())) {
			it.Close()
			return true, nil
		}
	}
	if err := errors.Join(it.Error(), it.Close()); err != nil {
		return false, err
	}
	rd, err := r.NewRawRangeDelIter(context.Background(), sstable.NoFragmentTransforms, sstable.NoReadEnv)
	if err != nil || rd == nil {
		return false, err
	}
	defer rd.Close()
	span, err := rd.First()
	for ; span != nil && err == nil; span, err = rd.Next() {
		for _, k := range span.Keys {
			if !covered.covers(span.Start, uint64(k.SeqNum())) {
				return true, nil
			}
		}
	}
	return false, err
}

// readerOptions returns the sstable reader options of opts, with Pebble's
// defaults filled in.
func readerOptions(opts *pebble.Options) sstable.ReaderOptions {
	o := opts.Clone()
	o.EnsureDefaults()
	return o.MakeReaderOptions()
}
