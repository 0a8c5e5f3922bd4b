package servertest

import (
	"bytes"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgekv/kv"
	"github.com/edgekv/kv/internal/kvdtest"
	"github.com/edgekv/kv/internal/server"
)

// testStorageQuota checks --max-stored-bytes: writes that would take an
// organization's keys plus values over the limit get 403 code 10034 and
// write nothing; the limit counts every namespace of the organization and
// no other organization's; deletes free room once the figure is read again.
func testStorageQuota(t *testing.T, start StartFunc) {
	clock := kvdtest.NewClock(time.Date(2026, 6, 18, 14, 0, 0, 0, time.UTC))
	s := start(t, kvdtest.WithClock(clock.Now), kvdtest.WithConfig(func(c *server.Config) { c.MaxStoredBytes = 1000 }))
	c := newClient(t, s, s.Token)
	a, b := c.readyNS("quota-a"), c.readyNS("quota-b")
	key := func(ns, k string) string { return "/v2/storage/kvs/" + ns + "/keys/" + k }
	val := func(n int) []byte { return bytes.Repeat([]byte("v"), n) }

	wantStatus(t, c.do("PUT", key(a, "k1"), val(499)), http.StatusCreated) // 501 bytes
	wantStatus(t, c.do("PUT", key(b, "k2"), val(397)), http.StatusCreated) // 900 in all
	wantError(t, c.do("PUT", key(a, "k3"), val(99)), http.StatusForbidden, kv.EQuota, "limit is 1000 bytes")
	wantError(t, c.do("GET", key(a, "k3"), nil), http.StatusNotFound, kv.ENotFound, "Key not found")
	wantStatus(t, c.do("PUT", key(b, "k4"), val(98)), http.StatusCreated) // exactly 1000
	wantError(t, c.do("PUT", key(b, "k5"), nil), http.StatusForbidden, kv.EQuota, "")

	// Another organization has its own allowance.
	other := newClient(t, s, s.NewToken(t, "quota-other"))
	o := other.readyNS("quota-o")
	wantStatus(t, other.do("PUT", key(o, "big"), val(990)), http.StatusCreated) // 993 bytes

	// A refused write to a namespace that is not there is still a 404 for
	// a caller under its limit, and a failed write does not use the room.
	wantError(t, other.do("PUT", key(a, "x"), val(1)), http.StatusNotFound, kv.ENotFound, "")
	wantStatus(t, other.do("PUT", key(o, "y"), val(6)), http.StatusCreated) // exactly 1000

	// Deletes free room once the organization's figure is read again.
	wantStatus(t, c.do("DELETE", key(a, "k1"), nil), http.StatusOK)
	clock.Advance(2 * time.Second)
	wantStatus(t, c.do("PUT", key(a, "k3"), val(99)), http.StatusCreated)
	wantStatus(t, c.do("GET", key(a, "k3"), nil), http.StatusOK)

	// Deleting a namespace frees its bytes too.
	wantError(t, c.do("PUT", key(a, "k6"), val(500)), http.StatusForbidden, kv.EQuota, "")
	wantStatus(t, c.do("DELETE", "/v2/storage/kvs/"+b, nil), http.StatusOK)
	clock.Advance(2 * time.Second)
	wantStatus(t, c.do("PUT", key(a, "k6"), val(500)), http.StatusCreated)

	// Concurrent writes do not overshoot the limit together: of 40 writes
	// of 100 bytes each, exactly 10 fit.
	conc := newClient(t, s, s.NewToken(t, "quota-concurrent"))
	ns := conc.readyNS("quota-c")
	var wg sync.WaitGroup
	var created, refused atomic.Int32
	for i := range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			switch r := conc.do("PUT", key(ns, fmt.Sprintf("c%02d", i)), val(97)); r.status {
			case http.StatusCreated:
				created.Add(1)
			case http.StatusForbidden:
				refused.Add(1)
			default:
				t.Errorf("concurrent put: %d %s", r.status, r.body)
			}
		}()
	}
	wg.Wait()
	if created.Load() != 10 || refused.Load() != 30 {
		t.Fatalf("40 concurrent writes of 100 bytes under a 1000-byte limit: %d created, %d refused; want 10 and 30", created.Load(), refused.Load())
	}
	if n := len(conc.walk(ns, "", 1000)); n != 10 {
		t.Fatalf("%d keys stored; want 10", n)
	}
}
