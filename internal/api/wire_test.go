package api

import (
	"encoding/json"
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
		{Keys: []kv.KeyInfo{{Key: "user/123", Size: 21, UpdatedAt: at}}},
		{Keys: []kv.KeyInfo{{Key: "a//b", Size: 0, UpdatedAt: at.Truncate(time.Second)}, {Key: "./x=y-_", Size: 1 << 20, UpdatedAt: at}}, More: true, Cursor: "AZrI-_0"},
	} {
		want := kv.KeyListRecord{RecordType: "storage_kv_key", Data: []kv.KeyRecord{}, Meta: kv.KeyListMeta{HasMore: p.More, Cursor: p.Cursor}}
		for _, k := range p.Keys {
			want.Data = append(want.Data, kv.KeyRecord{Key: k.Key, SizeBytes: k.Size, UpdatedAt: k.UpdatedAt.UTC().Format(kv.KeyTimeFormat)})
		}
		wb, _ := json.Marshal(want)
		if got := string(appendKeyList(nil, p)); got != string(wb) {
			t.Fatalf("appendKeyList = %s\nwant            %s", got, wb)
		}
	}
}
