package api

import (
	"strings"
	"testing"

	"github.com/edgekv/kv"
)

func TestParseRoute(t *testing.T) {
	const id = "550e8400-e29b-41d4-a716-446655440000"
	for _, tc := range []struct {
		path string
		want route
		ok   bool
	}{
		{"/v2/storage/kvs", route{kind: routeNamespaces}, true},
		{"/v2/storage/kvs/", route{kind: routeNamespaces}, true},
		{"/v2/storage/kvs/" + id, route{kind: routeNamespace, id: id}, true},
		{"/v2/storage/kvs/" + id + "/keys", route{kind: routeKeys, id: id}, true},
		{"/v2/storage/kvs/" + id + "/keys/user/123", route{kind: routeKey, id: id, key: "user/123"}, true},
		{"/v2/storage/kvs/" + id + "/keys/user%2F123", route{kind: routeKey, id: id, key: "user/123"}, true},
		{"/v2/storage/kvs/" + id + "/keys/a//b", route{kind: routeKey, id: id, key: "a//b"}, true},
		{"/v2/storage/kvs/" + id + "/keys/a/../b", route{kind: routeKey, id: id, key: "a/../b"}, true},
		{"/v2/storage/kvs/" + id + "/keys/./x", route{kind: routeKey, id: id, key: "./x"}, true},
		{"/v2/storage/kvs/" + id + "/keys/trailing/", route{kind: routeKey, id: id, key: "trailing/"}, true},
		{"/v2/storage/kvs/" + id + "/keys/a%252Fb", route{kind: routeKey, id: id, key: "a%2Fb"}, true},
		{"/v2/storage/kvs/" + id + "/keys/", route{kind: routeKey, id: id, key: ""}, true},
		{"/v2/storage/kvs/" + id + "/keys/bad%zz", route{kind: routeKey, id: id, key: "bad%zz"}, true},
		{"/v2/storage/kvs/" + id + "/other", route{id: id}, false},
		{"/v2/storage/kvsx", route{}, false},
		{"/v1/storage/kvs", route{}, false},
	} {
		got, ok := parseRoute(tc.path)
		if ok != tc.ok || (ok && got != tc.want) {
			t.Errorf("parseRoute(%q) = %+v, %v; want %+v, %v", tc.path, got, ok, tc.want, tc.ok)
		}
	}
}

// FuzzParseRoute checks that any path parses without panicking, that a key
// route's key is the remainder decoded at most once, and that whatever it
// yields as a key is either valid or refused by validation, never both.
func FuzzParseRoute(f *testing.F) {
	f.Fuzz(func(t *testing.T, path string) {
		rt, ok := parseRoute(path)
		if !ok {
			return
		}
		if !strings.HasPrefix(path, basePath) {
			t.Fatalf("parsed %q outside %s", path, basePath)
		}
		if rt.kind == routeKey {
			// The key is what follows the namespace segment and "/keys/"
			// (the namespace id itself may be "keys").
			rest := strings.TrimPrefix(path, basePath+"/")
			j := strings.IndexByte(rest, '/')
			if j < 0 || !strings.HasPrefix(rest[j:], "/keys/") {
				t.Fatalf("key route without /{id}/keys/: %q", path)
			}
			if raw := rest[j+len("/keys/"):]; unescape(raw) != rt.key {
				t.Fatalf("key %q is not the remainder %q decoded once", rt.key, raw)
			}
			if err := kv.ValidateKey(rt.key); err == nil && len(rt.key) > kv.MaxKeyLen {
				t.Fatalf("over-long key %q validated", rt.key)
			}
		}
	})
}
