package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/edgekv/kv/internal/kvdtest"
	"github.com/edgekv/kv/internal/pgtest"
	"github.com/edgekv/kv/internal/store/postgres"
)

// node is one kvd process of a cluster on one PostgreSQL database.
type node struct {
	cmd  *exec.Cmd
	logs *kvdtest.SyncBuffer
	base string
}

func startNode(t *testing.T, url string, extra ...string) *node {
	t.Helper()
	addr := kvdtest.FreeAddr(t)
	args := append([]string{"--listen", addr, "--store", url, "--job-lease", "1s", "--access-log=false", "--rate-limit=0"}, extra...)
	cmd, logs := startKVD(t, []string{"TELNYX_API_KEY=cluster-key"}, args...)
	waitHealthy(t, addr)
	return &node{cmd: cmd, logs: logs, base: "http://" + addr + "/v2/storage/kvs"}
}

func (n *node) do(t *testing.T, method, path, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, n.base+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer cluster-key")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func (n *node) status(t *testing.T, id string) string {
	code, body := n.do(t, "GET", "/"+id, "")
	if code == 404 {
		return "gone"
	}
	var ns struct{ Data struct{ Status string } }
	json.Unmarshal([]byte(body), &ns)
	return ns.Data.Status
}

func (n *node) waitStatus(t *testing.T, id, want string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for n.status(t, id) != want {
		if time.Now().After(deadline) {
			t.Fatalf("namespace %s never became %s (is %s)\n%s", id, want, n.status(t, id), n.logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func createNS(t *testing.T, n *node, name string) string {
	t.Helper()
	code, body := n.do(t, "POST", "", `{"name":"`+name+`"}`)
	if code != 201 {
		t.Fatalf("create %s: %d %s", name, code, body)
	}
	var ns struct{ Data struct{ ID string } }
	json.Unmarshal([]byte(body), &ns)
	return ns.Data.ID
}

// fill writes n keys into namespace id through node, 16 at a time.
func fill(t *testing.T, nd *node, id string, n int) {
	t.Helper()
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if code, body := nd.do(t, "PUT", fmt.Sprintf("/%s/keys/k%06d", id, i), "v"); code != 201 {
				t.Errorf("fill: %d %s", code, body)
			}
		}()
	}
	wg.Wait()
}

func keysLeft(t *testing.T, url, id string) int {
	t.Helper()
	c, err := pgx.Connect(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	var n int
	if err := c.QueryRow(context.Background(), "SELECT count(*) FROM keys WHERE ns_id = $1", id).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestClusterActsAsOne runs two kvd processes on one database: what one
// does, the other sees; concurrent first writes through both get exactly
// one 201; a token made with `kvd token create` works on both.
func TestClusterActsAsOne(t *testing.T) {
	url := pgtest.URL(t)
	a, b := startNode(t, url), startNode(t, url)

	id := createNS(t, a, "shared")
	b.waitStatus(t, id, "provision_ok")
	if code, _ := b.do(t, "POST", "", `{"name":"shared"}`); code != 409 {
		t.Fatalf("name taken through A, create through B: %d", code)
	}
	if code, _ := a.do(t, "PUT", "/"+id+"/keys/from-a", "1"); code != 201 {
		t.Fatal("put through A")
	}
	if code, body := b.do(t, "GET", "/"+id+"/keys/from-a", ""); code != 200 || body != "1" {
		t.Fatalf("read through B: %d %q", code, body)
	}

	const keys, writers = 40, 8
	var mu sync.Mutex
	created := map[string]int{}
	var wg sync.WaitGroup
	for w := range writers {
		nd := a
		if w%2 == 1 {
			nd = b
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range keys {
				key := fmt.Sprintf("race/%d", k)
				code, body := nd.do(t, "PUT", "/"+id+"/keys/"+key, fmt.Sprint(w))
				mu.Lock()
				switch code {
				case 201:
					created[key]++
				case 200:
				default:
					t.Errorf("PUT %s: %d %s", key, code, body)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	for k := range keys {
		if n := created[fmt.Sprintf("race/%d", k)]; n != 1 {
			t.Fatalf("race/%d: %d writers got 201 across two processes, want 1", k, n)
		}
	}

	out, err := exec.Command(kvdBin, "token", "create", "--org", "acme", "--store", url).Output()
	if err != nil {
		t.Fatalf("token create against a running cluster: %v", err)
	}
	tok := lastLine(string(out))
	for _, nd := range []*node{a, b} {
		req, _ := http.NewRequest("GET", nd.base, nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("new token on a node: %v %v", resp, err)
		}
		resp.Body.Close()
	}

	// Deletion through B is seen by A at once: no write lands afterwards.
	if code, _ := b.do(t, "DELETE", "/"+id, ""); code != 200 {
		t.Fatal("delete through B")
	}
	if code, _ := a.do(t, "PUT", "/"+id+"/keys/late", "x"); code != 409 && code != 404 {
		t.Fatalf("write through A after delete through B: %d", code)
	}
	a.waitStatus(t, id, "gone")
	if n := keysLeft(t, url, id); n != 0 {
		t.Fatalf("%d keys left after deletion", n)
	}
}

// TestClusterTakesOverDeletion kills the process deleting a namespace of
// thousands of keys; another kvd finishes the job once the lease runs out.
func TestClusterTakesOverDeletion(t *testing.T) {
	url := pgtest.URL(t)
	a := startNode(t, url)
	id := createNS(t, a, "big")
	a.waitStatus(t, id, "provision_ok")
	fill(t, a, id, 3000)
	if code, _ := a.do(t, "DELETE", "/"+id, ""); code != 200 {
		t.Fatal("delete")
	}
	a.cmd.Process.Signal(syscall.SIGKILL) // wherever the purge is
	a.cmd.Wait()

	b := startNode(t, url)
	b.waitStatus(t, id, "gone")
	if n := keysLeft(t, url, id); n != 0 {
		t.Fatalf("%d keys left after B finished the deletion", n)
	}
	createNS(t, b, "big") // the name is free again
}

// TestClusterWaitsOutDeadHolder leases a deletion to a holder that never
// finishes (as a process killed right after claiming it would); a live kvd
// takes the job over when the lease expires.
func TestClusterWaitsOutDeadHolder(t *testing.T) {
	url := pgtest.URL(t)
	a := startNode(t, url, "--no-background")
	b := startNode(t, url)
	id := createNS(t, a, "orphan")
	b.waitStatus(t, id, "provision_ok")
	fill(t, a, id, 2000)

	st, err := postgres.Open(context.Background(), url, postgres.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	// Stop B so that the dead holder surely gets the job.
	b.cmd.Process.Signal(syscall.SIGTERM)
	b.cmd.Wait()
	if code, _ := a.do(t, "DELETE", "/"+id, ""); code != 200 {
		t.Fatal("delete")
	}
	ns, ok, err := st.ClaimLifecycleJob(context.Background(), "dead-holder", time.Now(), 2*time.Second)
	if err != nil || !ok || ns.ID.String() != id {
		t.Fatalf("claim: %+v %v %v", ns, ok, err)
	}
	c := startNode(t, url)
	c.waitStatus(t, id, "gone")
	if n := keysLeft(t, url, id); n != 0 {
		t.Fatalf("%d keys left", n)
	}
}

// TestClusterUsageAddsUp meters requests served by two kvd processes on
// one database: the counts of both add up exactly, whichever is asked.
func TestClusterUsageAddsUp(t *testing.T) {
	url := pgtest.URL(t)
	a, b := startNode(t, url), startNode(t, url)
	id := createNS(t, a, "metered")
	b.waitStatus(t, id, "provision_ok")
	var wg sync.WaitGroup
	for w, nd := range []*node{a, b, a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 25 {
				k := fmt.Sprintf("/%s/keys/w%d/k%d", id, w, i)
				if code, _ := nd.do(t, "PUT", k, "0123456789"); code != 201 {
					t.Errorf("PUT %s: %d", k, code)
				}
				nd.do(t, "GET", k, "")
				nd.do(t, "GET", k+"-missing", "")
			}
			nd.do(t, "DELETE", fmt.Sprintf("/%s/keys/w%d/k0", id, w), "")
			nd.do(t, "GET", fmt.Sprintf("/%s/keys?prefix=w%d/", id, w), "")
		}()
	}
	wg.Wait()
	// Reads and lists are stored within a second; ask until they show.
	want := `"reads":200,"writes":100,"deletes":4,"lists":4`
	deadline := time.Now().Add(10 * time.Second)
	for _, nd := range []*node{a, b} {
		for {
			code, body := nd.do(t, "GET", "/usage", "")
			if code == 200 && strings.Contains(body, want) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("usage through %s = %d %s; want %s", nd.base, code, body, want)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}
