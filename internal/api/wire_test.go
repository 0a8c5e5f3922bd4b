package api

import (
	"encoding/json"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/edgekv/kv"
	"github.com/edgekv/kv/internal/service"
)

// TestAppendKeyList checks the hand-written listing against encoding/json
// on the shared wire shape that clients decode.
func TestAppendKeyList(t *testing.T) {
	at := time.Date(2026, 6, 18, 14, 48, 17, 475129983, time.FixedZone("x", 3600))
	for _, p := range []service.KeyPage{
		{},
		{Keys: []kv.KeyInfo{{Key: "user/123", Size: 21, UpdatedAt: at, Revision: 0x1234abcd5678}}},
		{Keys: []kv.KeyInfo{{Key: "a//b", Size: 0, UpdatedAt: at.Truncate(time.Second)}, {Key: "./x=y-_", Size: 1 << 20, UpdatedAt: at}}, More: true, Cursor: "AZrI-_0"},
	} {
		want := kv.KeyListRecord{RecordType: "storage_kv_key", Data: []kv.KeyRecord{}, Meta: kv.KeyListMeta{HasMore: p.More, Cursor: p.Cursor}}
		for _, k := range p.Keys {
			want.Data = append(want.Data, kv.KeyRecord{Key: k.Key, SizeBytes: k.Size, UpdatedAt: k.UpdatedAt.UTC().Format(kv.KeyTimeFormat), ETag: kv.FormatETag(k.Revision)})
		}
		wb, _ := json.Marshal(want)
		if got := string(appendKeyList(nil, p)); got != string(wb) {
			t.Fatalf("appendKeyList = %s\nwant            %s", got, wb)
		}
	}
}

func TestAppendKeyTime(t *testing.T) {
	times := []time.Time{
		time.Unix(0, 0), time.Unix(-1, 0), time.Unix(0, -1), time.Unix(1, 999999999),
		time.Date(2000, 2, 29, 23, 59, 59, 123456789, time.UTC),
		time.Date(1900, 3, 1, 0, 0, 0, 0, time.UTC),
		time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC),
		time.Date(2262, 4, 11, 23, 47, 16, 854775807, time.UTC), // kvd's latest expiry
		time.Date(2026, 11, 27, 3, 0, 0, 5, time.FixedZone("east", 5*3600)),
		time.Date(0, 6, 1, 0, 0, 0, 0, time.UTC),     // general path
		time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC), // general path
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range 100000 {
		times = append(times, time.Unix(r.Int64N(253402300800+62135596800)-62135596800, r.Int64N(1e9)))
	}
	for _, tm := range times {
		want := tm.UTC().AppendFormat([]byte("x"), kv.KeyTimeFormat)
		if got := appendKeyTime([]byte("x"), tm); string(got) != string(want) {
			t.Fatalf("appendKeyTime(%v) = %s, want %s", tm, got, want)
		}
	}
}

func BenchmarkAppendKeyTime(b *testing.B) {
	tm := time.Date(2026, 11, 27, 3, 0, 0, 123456789, time.UTC)
	buf := make([]byte, 0, 64)
	for b.Loop() {
		buf = appendKeyTime(buf[:0], tm)
	}
}

// appendKeyList writes keys into JSON strings without escaping them: that
// holds only if no byte a key may contain needs escaping in JSON. Every one
// of the 256 byte values is checked.
func TestKeyBytesNeedNoJSONEscaping(t *testing.T) {
	allowed := 0
	for c := 0; c < 256; c++ {
		key := "a" + string([]byte{byte(c)})
		if kv.ValidateKey(key) != nil {
			continue
		}
		allowed++
		b, err := json.Marshal(key)
		if err != nil || string(b) != `"`+key+`"` {
			t.Errorf("byte %#02x is allowed in keys but JSON writes %q as %s", c, key, b)
		}
	}
	if allowed != 26+26+10+5 {
		t.Fatalf("%d byte values are allowed in keys; the contract allows 67", allowed)
	}
}
