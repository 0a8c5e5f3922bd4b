package service

import (
	"strings"
	"testing"

	"github.com/edgekv/kv"
)

func TestCursorRoundTrip(t *testing.T) {
	ns := kv.NewID()
	for _, tc := range []struct{ prefix, last string }{
		{"", "a"}, {"user/", "user/123"}, {"", strings.Repeat("k", kv.MaxKeyLen)}, {"a", "a//b"},
	} {
		c := EncodeCursor(ns, tc.prefix, tc.last)
		got, err := DecodeCursor(ns, tc.prefix, c)
		if err != nil || got != tc.last {
			t.Fatalf("DecodeCursor(EncodeCursor(%q)) = %q, %v", tc.last, got, err)
		}
		if _, err := DecodeCursor(kv.NewID(), tc.prefix, c); err == nil {
			t.Fatal("a cursor was accepted for another namespace")
		}
		if _, err := DecodeCursor(ns, tc.prefix+"x", c); err == nil {
			t.Fatal("a cursor was accepted for another prefix")
		}
	}
}

// FuzzDecodeCursor checks that no input panics, that anything accepted is a
// valid key with the listing's prefix, and that it re-encodes to itself.
func FuzzDecodeCursor(f *testing.F) {
	ns, _ := kv.ParseID("550e8400-e29b-41d4-a716-446655440000")
	f.Fuzz(func(t *testing.T, prefix, cursor string) {
		last, err := DecodeCursor(ns, prefix, cursor)
		if err != nil {
			if kv.ErrorCodeOf(err) != kv.EInvalid {
				t.Fatalf("error %v is not EInvalid", err)
			}
			return
		}
		if kv.ValidateKey(last) != nil || !strings.HasPrefix(last, prefix) {
			t.Fatalf("accepted cursor yields %q for prefix %q", last, prefix)
		}
		if EncodeCursor(ns, prefix, last) != cursor {
			t.Fatalf("cursor %q is not canonical", cursor)
		}
	})
}
