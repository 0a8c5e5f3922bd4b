package main

import (
	"context"
	"fmt"
	"net/http"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/edgekv/kv/internal/pgtest"
)

// getWith sends GET path with token and returns the status (0 for a
// transport error).
func (n *node) getWith(token string) int {
	req, _ := http.NewRequest("GET", n.base, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

func tokenCmd(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(kvdBin, append([]string{"token"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("kvd token %v: %v\n%s", args, err, out)
	}
	return string(out)
}

// TestRevocationReachesEveryNode: two kvd share a database; a token made
// with `kvd token create` works on both at once, and once `kvd token
// revoke` returns, both refuse it within a second (each reads the
// revocations every 250 ms).
func TestRevocationReachesEveryNode(t *testing.T) {
	url := pgtest.URL(t)
	a, b := startNode(t, url), startNode(t, url)
	secret := lastLine(tokenCmd(t, "create", "--org", "acme", "--name", "doomed", "--store", url))
	for _, n := range []*node{a, b} {
		if got := n.getWith(secret); got != 200 {
			t.Fatalf("a new token on a node: %d", got)
		}
	}
	out := tokenCmd(t, "list", "--org", "acme", "--store", url)
	id := ""
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) > 2 && f[2] == "doomed" {
			id = f[0]
		}
	}
	if id == "" {
		t.Fatalf("token list does not show the token:\n%s", out)
	}
	tokenCmd(t, "revoke", id, "--store", url)
	revoked := time.Now()
	var wg sync.WaitGroup
	for i, n := range []*node{a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			deadline := revoked.Add(10 * time.Second)
			for n.getWith(secret) != 401 {
				if time.Now().After(deadline) {
					t.Errorf("node %d still accepts the revoked token", i)
					return
				}
				time.Sleep(5 * time.Millisecond)
			}
			took := time.Since(revoked)
			t.Logf("node %d refuses the revoked token %v after the revocation", i, took.Round(time.Millisecond))
			if took > time.Second {
				t.Errorf("node %d took %v to refuse a revoked token; the contract says within a second", i, took)
			}
		}()
	}
	wg.Wait()
}

// TestWrongTokenFlood: 10,000 requests with wrong tokens from one address
// cost at most 100 lookups of the tokens table (counted by the database),
// and an honest client from the same address keeps being served.
func TestWrongTokenFlood(t *testing.T) {
	url := pgtest.URL(t)
	n := startNode(t, url)
	secret := lastLine(tokenCmd(t, "create", "--org", "acme", "--store", url))
	if got := n.getWith(secret); got != 200 {
		t.Fatalf("the honest token: %d", got)
	}
	conn, err := pgx.Connect(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	// A lookup by digest is a scan of the tokens table's primary key; the
	// revocation poller (every 250 ms) and the honest token's last-used
	// update use other indexes, so they are not counted.
	scans := func() int64 {
		var n int64
		if err := conn.QueryRow(context.Background(), `SELECT coalesce(sum(idx_scan), 0) FROM pg_stat_user_indexes WHERE relname = 'tokens' AND indexrelname = 'tokens_pkey'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	// A backend publishes its counts at most once a second, and one that
	// published less than a second ago and then goes idle waits up to
	// PGSTAT_IDLE_INTERVAL (10 s) before it publishes again. So a count is
	// read until it has stood still for longer than that.
	settled := func() int64 {
		const still = 11 * time.Second
		last, since := scans(), time.Now()
		for deadline := time.Now().Add(time.Minute); time.Since(since) < still; {
			if time.Now().After(deadline) {
				t.Fatalf("the tokens table's scan count still moves after a minute (now %d)", last)
			}
			time.Sleep(250 * time.Millisecond)
			if n := scans(); n != last {
				last, since = n, time.Now()
			}
		}
		return last
	}
	// The count must see a lookup: one token never sent before is one scan.
	before := settled()
	if got := n.getWith("kvd_never-seen-before"); got != 401 {
		t.Fatalf("a wrong token: %d", got)
	}
	probe := scans()
	for deadline := time.Now().Add(30 * time.Second); probe <= before && time.Now().Before(deadline); probe = scans() {
		time.Sleep(250 * time.Millisecond)
	}
	if probe <= before {
		t.Fatalf("one wrong token left the primary key's scan count at %d (was %d) for 30 s: the test cannot count lookups", probe, before)
	}
	before = probe
	var wg sync.WaitGroup
	var mu sync.Mutex
	statuses := map[int]int{}
	honest := 0
	for w := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 10000 / 16 {
				st := n.getWith(fmt.Sprintf("kvd_wrong-%d-%d", w, i))
				mu.Lock()
				statuses[st]++
				mu.Unlock()
				if i%100 == 0 && n.getWith(secret) == 200 {
					mu.Lock()
					honest++
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	after := settled()
	t.Logf("10,000 wrong tokens: statuses %v, %d lookups of the tokens table", statuses, after-before)
	if after-before > 100 {
		t.Fatalf("10,000 wrong tokens cost %d lookups of the tokens table; want at most 100", after-before)
	}
	if statuses[401]+statuses[429] != 16*(10000/16) {
		t.Fatalf("statuses %v: every wrong token must get 401 or 429", statuses)
	}
	if honest != 16*((10000/16+99)/100) {
		t.Fatalf("the honest client was served %d times of %d during the flood", honest, 16*((10000/16+99)/100))
	}
}
