package api

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/edgekv/kv"
	"github.com/edgekv/kv/internal/service"
)

// TestAppendKeyList checks the hand-written listing against encoding/json
// on the same shape.
func TestAppendKeyList(t *testing.T) {
	type key struct {
		Key       string `json:"key"`
		SizeBytes int64  `json:"size_bytes"`
		UpdatedAt string `json:"updated_at"`
	}
	type meta struct {
		HasMore bool   `json:"has_more"`
		Cursor  string `json:"cursor,omitempty"`
	}
	type list struct {
		RecordType string `json:"record_type"`
		Data       []key  `json:"data"`
		Meta       meta   `json:"meta"`
	}
	at := time.Date(2026, 6, 18, 14, 48, 17, 475129983, time.FixedZone("x", 3600))
	for _, p := range []service.KeyPage{
		{},
		{Keys: []kv.KeyInfo{{Key: "user/123", Size: 21, UpdatedAt: at}}},
		{Keys: []kv.KeyInfo{{Key: "a//b", Size: 0, UpdatedAt: at.Truncate(time.Second)}, {Key: "./x=y-_", Size: 1 << 20, UpdatedAt: at}}, More: true, Cursor: "AZrI-_0"},
	} {
		want := list{RecordType: "storage_kv_key", Data: []key{}, Meta: meta{HasMore: p.More, Cursor: p.Cursor}}
		for _, k := range p.Keys {
			want.Data = append(want.Data, key{k.Key, k.Size, k.UpdatedAt.UTC().Format(kv.KeyTimeFormat)})
		}
		wb, _ := json.Marshal(want)
		if got := string(appendKeyList(nil, p)); got != string(wb) {
			t.Fatalf("appendKeyList = %s\nwant            %s", got, wb)
		}
	}
}
