package servertest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edgekv/kv"
	"github.com/edgekv/kv/internal/kvdtest"
	"github.com/edgekv/kv/internal/server"
	"github.com/edgekv/kv/internal/service"
)

// testScopeMatrix sends every route and method with tokens of every single
// permission, a read-only token, a token scoped to one namespace and one
// scoped to a key prefix, and checks the exact status and code of each: a
// namespace out of scope is a 404 exactly as another organization's; a
// permission the token lacks, or a key out of its prefixes, is a 403
// (10036); anything else is what the full token gets.
func testScopeMatrix(t *testing.T, start StartFunc) {
	s := start(t)
	const org = "scoped"
	full := newClient(t, s, s.NewToken(t, org))
	in := full.readyNS("in-scope")
	out := full.readyNS("out-of-scope")
	for _, id := range []string{in, out} {
		for _, k := range []string{"flags/x", "other/y"} {
			wantStatus(t, full.do("PUT", "/v2/storage/kvs/"+id+"/keys/"+k, []byte("v")), http.StatusCreated)
		}
	}
	inID, _ := kv.ParseID(in)
	missing := kv.NewID().String()

	type token struct {
		name       string
		perms      []kv.Permission
		namespaces []kv.ID
		prefixes   []string
	}
	tokens := []token{
		{name: "full"},
		{name: "read-only", perms: kv.ReadOnlyPermissions},
		{name: "namespace-scoped", namespaces: []kv.ID{inID}},
		{name: "prefix-scoped", prefixes: []string{"flags/"}},
	}
	for _, p := range kv.AllPermissions {
		tokens = append(tokens, token{name: string(p), perms: []kv.Permission{p}})
	}

	type request struct {
		method, path string
		body         string
		perm         kv.Permission
		ns           string // the namespace it names ("" for none)
		key          string // the key it names (for a prefix scope)
		listPrefix   *string
		ok           int // the status a token that may do it gets
		createsNS    bool
		orgUsage     bool
	}
	str := func(s string) *string { return &s }
	keys := "/v2/storage/kvs/" + in + "/keys"
	requests := []request{
		{method: "POST", path: "/v2/storage/kvs", body: `{"name":"made-%d"}`, perm: kv.PermNamespacesWrite, ok: 201, createsNS: true},
		{method: "GET", path: "/v2/storage/kvs", perm: kv.PermNamespacesRead, ok: 200},
		{method: "GET", path: "/v2/storage/kvs/" + in, perm: kv.PermNamespacesRead, ns: in, ok: 200},
		{method: "GET", path: "/v2/storage/kvs/" + out, perm: kv.PermNamespacesRead, ns: out, ok: 200},
		{method: "DELETE", path: "/v2/storage/kvs/" + missing, perm: kv.PermNamespacesWrite, ns: missing, ok: 404},
		{method: "GET", path: keys + "?prefix=flags/", perm: kv.PermKeysList, ns: in, listPrefix: str("flags/"), ok: 200},
		{method: "GET", path: keys, perm: kv.PermKeysList, ns: in, listPrefix: str(""), ok: 200},
		{method: "GET", path: keys + "?prefix=other/", perm: kv.PermKeysList, ns: in, listPrefix: str("other/"), ok: 200},
		{method: "GET", path: "/v2/storage/kvs/" + out + "/keys?prefix=flags/", perm: kv.PermKeysList, ns: out, listPrefix: str("flags/"), ok: 200},
		{method: "GET", path: keys + "/flags/x", perm: kv.PermKeysRead, ns: in, key: "flags/x", ok: 200},
		{method: "HEAD", path: keys + "/flags/x", perm: kv.PermKeysRead, ns: in, key: "flags/x", ok: 200},
		{method: "GET", path: keys + "/other/y", perm: kv.PermKeysRead, ns: in, key: "other/y", ok: 200},
		{method: "GET", path: "/v2/storage/kvs/" + out + "/keys/flags/x", perm: kv.PermKeysRead, ns: out, key: "flags/x", ok: 200},
		{method: "PUT", path: keys + "/flags/x", body: "w", perm: kv.PermKeysWrite, ns: in, key: "flags/x", ok: 200},
		{method: "PUT", path: keys + "/other/y", body: "w", perm: kv.PermKeysWrite, ns: in, key: "other/y", ok: 200},
		{method: "DELETE", path: keys + "/flags/gone", perm: kv.PermKeysWrite, ns: in, key: "flags/gone", ok: 200},
		{method: "DELETE", path: keys + "/other/gone", perm: kv.PermKeysWrite, ns: in, key: "other/gone", ok: 200},
		{method: "POST", path: "/v2/storage/kvs/" + in + "/batch", body: `{"ops":[{"op":"get","key":"flags/x"},{"op":"check","key":"flags/x","etag":"*"}]}`, perm: kv.PermKeysRead, ns: in, key: "flags/x", ok: 200},
		{method: "POST", path: "/v2/storage/kvs/" + in + "/batch", body: `{"ops":[{"op":"get","key":"other/y"}]}`, perm: kv.PermKeysRead, ns: in, key: "other/y", ok: 200},
		{method: "POST", path: "/v2/storage/kvs/" + in + "/batch", body: `{"ops":[{"op":"incr","key":"flags/n"}]}`, perm: kv.PermKeysWrite, ns: in, key: "flags/n", ok: 200},
		{method: "POST", path: "/v2/storage/kvs/" + in + "/batch", body: `{"ops":[{"op":"put","key":"other/y","value":"b"}]}`, perm: kv.PermKeysWrite, ns: in, key: "other/y", ok: 200},
		{method: "POST", path: "/v2/storage/kvs/" + out + "/batch", body: `{"ops":[{"op":"delete","key":"flags/gone"}]}`, perm: kv.PermKeysWrite, ns: out, key: "flags/gone", ok: 200},
		{method: "GET", path: "/v2/storage/kvs/usage", perm: kv.PermUsageRead, ok: 200, orgUsage: true},
		{method: "GET", path: "/v2/storage/kvs/" + in + "/usage", perm: kv.PermUsageRead, ns: in, ok: 200},
		{method: "GET", path: "/v2/storage/kvs/" + out + "/usage", perm: kv.PermUsageRead, ns: out, ok: 200},
	}

	n := 0
	for _, tk := range tokens {
		secret := s.NewScopedToken(t, service.TokenSpec{Org: org, Name: tk.name, Permissions: tk.perms, Namespaces: tk.namespaces, Prefixes: tk.prefixes})
		c := newClient(t, s, secret)
		perms := tk.perms
		if perms == nil {
			perms = kv.AllPermissions
		}
		for _, rq := range requests {
			// What the contract says this token gets.
			wantStatus, wantCode := rq.ok, kv.ErrorCode("")
			switch {
			case rq.ns != "" && tk.namespaces != nil && rq.ns != in:
				wantStatus, wantCode = 404, kv.ENotFound
			case !slices.Contains(perms, rq.perm):
				wantStatus, wantCode = 403, kv.EForbidden
			case rq.createsNS && tk.namespaces != nil, rq.orgUsage && tk.namespaces != nil:
				wantStatus, wantCode = 403, kv.EForbidden
			case tk.prefixes != nil && rq.key != "" && !strings.HasPrefix(rq.key, "flags/"):
				wantStatus, wantCode = 403, kv.EForbidden
			case tk.prefixes != nil && rq.listPrefix != nil && !strings.HasPrefix(*rq.listPrefix, "flags/"):
				wantStatus, wantCode = 403, kv.EForbidden
			}
			if wantStatus == 404 && rq.ok == 404 {
				wantCode = kv.ENotFound
			}
			body := rq.body
			if rq.createsNS {
				n++
				body = fmt.Sprintf(rq.body, n)
			}
			var b []byte
			if rq.method == "POST" || rq.method == "PUT" {
				b = []byte(body)
			}
			r := c.do(rq.method, rq.path, b)
			what := fmt.Sprintf("token %s: %s %s", tk.name, rq.method, rq.path)
			if r.status != wantStatus {
				t.Errorf("%s: status %d, want %d: %s", what, r.status, wantStatus, r.body)
				continue
			}
			if wantCode != "" && rq.method != "HEAD" {
				code, detail := errorOf(t, r)
				if code != string(wantCode) {
					t.Errorf("%s: code %s, want %s: %s", what, code, wantCode, r.body)
				}
				if wantCode == kv.EForbidden && !strings.Contains(detail, string(rq.perm)) && !strings.Contains(detail, "prefix") && !strings.Contains(detail, "scoped") {
					t.Errorf("%s: the 403's detail %q names neither the permission nor the scope", what, detail)
				}
			}
		}
		// A namespace listing shows only what the token's scope holds.
		if slices.Contains(perms, kv.PermNamespacesRead) {
			var list struct {
				Data []nsJSON `json:"data"`
				Meta struct {
					TotalResults int `json:"total_results"`
				} `json:"meta"`
			}
			json.Unmarshal(c.do("GET", "/v2/storage/kvs?page[size]=250", nil).body, &list)
			if tk.namespaces != nil && (len(list.Data) != 1 || list.Data[0].ID != in || list.Meta.TotalResults != 1) {
				t.Errorf("token %s lists %+v (%d in all); want only its namespace", tk.name, list.Data, list.Meta.TotalResults)
			}
		}
	}
}

// testTokenLifecycle: revoked and expired tokens are refused (401) and
// logged; a new token works at once; x-should-retry is false on a 403.
func testTokenLifecycle(t *testing.T, start StartFunc) {
	clock := kvdtest.NewClock(time.Now())
	s := start(t, kvdtest.WithClock(clock.Now))
	secret, rec, err := s.Service.CreateToken(t.Context(), service.TokenSpec{Org: "acme", Name: "soon", ExpiresIn: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(secret, "kvd_") || len(secret) < 4+43 || rec.Status != "active" || rec.ExpiresAt == nil {
		t.Fatalf("created %q %+v", secret, rec)
	}
	c := newClient(t, s, secret)
	wantStatus(t, c.do("GET", "/v2/storage/kvs", nil), 200)
	clock.Advance(time.Hour)
	wantError(t, c.do("GET", "/v2/storage/kvs", nil), 401, kv.EUnauthorized, "expired")

	secret2, rec2, err := s.Service.CreateToken(t.Context(), service.TokenSpec{Org: "acme", Name: "revoked", Permissions: []kv.Permission{kv.PermNamespacesRead}})
	if err != nil {
		t.Fatal(err)
	}
	c2 := newClient(t, s, secret2)
	wantStatus(t, c2.do("GET", "/v2/storage/kvs", nil), 200)
	r := c2.do("POST", "/v2/storage/kvs", []byte(`{"name":"nope"}`))
	wantError(t, r, 403, kv.EForbidden, "namespaces:write")
	if r.header.Get("X-Should-Retry") != "false" {
		t.Fatalf("403: x-should-retry %q", r.header.Get("X-Should-Retry"))
	}
	if _, err := s.Service.RevokeToken(t.Context(), rec2.ID); err != nil {
		t.Fatal(err)
	}
	wantError(t, c2.do("GET", "/v2/storage/kvs", nil), 401, kv.EUnauthorized, "revoked")
	list, err := s.Service.ListTokens(t.Context(), "acme")
	if err != nil || len(list) != 2 {
		t.Fatalf("ListTokens = %+v, %v", list, err)
	}
	statuses := map[string]string{}
	for _, tr := range list {
		statuses[tr.Name] = tr.Status
	}
	if statuses["soon"] != "expired" || statuses["revoked"] != "revoked" {
		t.Fatalf("statuses %v", statuses)
	}
}

// testAuthFailureLimit: a flood of wrong tokens from one address is cut
// off with 429 (retryable) after the limit, while a token that works keeps
// working from the same address.
func testAuthFailureLimit(t *testing.T, start StartFunc) {
	s := start(t, kvdtest.WithConfig(func(c *server.Config) { c.AuthFailureLimit = 20 }))
	good := newClient(t, s, s.NewToken(t, "acme"))
	wantStatus(t, good.do("GET", "/v2/storage/kvs", nil), 200)
	limited := 0
	for i := range 200 {
		r := newClient(t, s, fmt.Sprintf("kvd_wrong-%d", i)).do("GET", "/v2/storage/kvs", nil)
		switch r.status {
		case 401:
		case 429:
			limited++
			if r.header.Get("Retry-After") == "" || r.header.Get("X-Should-Retry") != "true" {
				t.Fatalf("429 without Retry-After or x-should-retry: %v", r.header)
			}
		default:
			t.Fatalf("wrong token %d: %d %s", i, r.status, r.body)
		}
	}
	if limited < 150 {
		t.Fatalf("%d of 200 wrong tokens were limited; the limit is 20 a minute", limited)
	}
	wantStatus(t, good.do("GET", "/v2/storage/kvs", nil), 200)
}
