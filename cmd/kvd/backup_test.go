package main

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// kvdCmd runs the kvd binary with args and returns its output and exit code.
func kvdCmd(t *testing.T, args ...string) (string, int) {
	t.Helper()
	out, err := exec.Command(kvdBin, args...).CombinedOutput()
	if ee, ok := err.(*exec.ExitError); ok {
		return string(out), ee.ExitCode()
	}
	if err != nil {
		t.Fatalf("kvd %v: %v", args, err)
	}
	return string(out), 0
}

// TestBackupWhileServing: `kvd backup` of a serving kvd, under 8 writers,
// holds every write acknowledged before it began, with the token, the
// namespaces and their states, content types and expiries; `kvd check`
// accepts it; `kvd restore` refuses a non-empty target and a damaged
// backup, and a restored store serves it all.
func TestBackupWhileServing(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "store")
	k := runKVD(t, dir, true)
	ns := k.namespace(t, "backed")
	k.namespace(t, "second")
	secret := lastLine(tokenCmd(t, "create", "--org", "acme", "--name", "backup-test", "--store", dir))
	put, _ := http.NewRequest("PUT", "http://"+k.addr+"/v2/storage/kvs/"+ns+"/keys/typed", strings.NewReader(`{"a":1}`))
	put.Header.Set("Authorization", "Bearer "+storageKey)
	put.Header.Set("Content-Type", "application/json")
	if resp, err := k.client.Do(put); err != nil || resp.StatusCode != 201 {
		t.Fatalf("PUT typed: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
	k.must(t, "PUT", "/"+ns+"/keys/expiring?ttl_secs=3600", []byte("soon"), 201)

	var stop atomic.Bool
	var wg sync.WaitGroup
	var mu sync.Mutex
	acked := map[string]time.Time{} // key -> when its PUT was answered
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; !stop.Load(); i++ {
				key := fmt.Sprintf("w%d-%06d", w, i)
				if code, _, err := k.do("PUT", "/"+ns+"/keys/"+key, []byte(key)); err == nil && code == 201 {
					mu.Lock()
					acked[key] = time.Now()
					mu.Unlock()
				}
			}
		}()
	}
	time.Sleep(300 * time.Millisecond)
	began := time.Now()
	backup := filepath.Join(root, "backups", "b1")
	out, code := kvdCmd(t, "backup", "--store", dir, "--out", backup)
	ended := time.Now()
	if code != 0 {
		t.Fatalf("kvd backup: exit %d\n%s", code, out)
	}
	time.Sleep(100 * time.Millisecond)
	stop.Store(true)
	wg.Wait()
	var before, during int
	mu.Lock()
	for _, at := range acked {
		switch {
		case at.Before(began):
			before++
		case at.Before(ended):
			during++
		}
	}
	mu.Unlock()
	t.Logf("%s; %d writes acknowledged before it began, %d while it ran (took %v)", strings.TrimSpace(out), before, during, ended.Sub(began).Round(time.Millisecond))
	if !strings.Contains(out, "checked") {
		t.Fatalf("kvd backup did not say it checked the backup:\n%s", out)
	}

	if out, code := kvdCmd(t, "check", "--store", backup); code != 0 || !strings.Contains(out, "is sound") {
		t.Fatalf("kvd check of the backup: exit %d\n%s", code, out)
	}
	if out, code := kvdCmd(t, "backup", "--store", dir, "--out", backup); code == 0 || !strings.Contains(out, "not empty") {
		t.Fatalf("a backup onto an existing backup: exit %d\n%s", code, out)
	}
	if out, code := kvdCmd(t, "backup", "--store", dir, "--out", filepath.Join(dir, "inside")); code == 0 || !strings.Contains(out, "inside") {
		t.Fatalf("a backup into the store: exit %d\n%s", code, out)
	}
	if out, code := kvdCmd(t, "restore", "--from", backup, "--store", dir); code == 0 || !strings.Contains(out, "not empty") {
		t.Fatalf("a restore onto the live store: exit %d\n%s", code, out)
	}

	// A damaged copy is refused by check and by restore, which writes nothing.
	damaged := filepath.Join(root, "damaged")
	copyTree(t, backup, damaged)
	entries, _ := os.ReadDir(damaged)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "marker.manifest") {
			os.Remove(filepath.Join(damaged, e.Name()))
		}
	}
	if out, code := kvdCmd(t, "check", "--store", damaged); code != 1 || !strings.Contains(out, "manifest marker") {
		t.Fatalf("kvd check of a damaged backup: exit %d\n%s", code, out)
	}
	if out, code := kvdCmd(t, "restore", "--from", damaged, "--store", filepath.Join(root, "never")); code == 0 {
		t.Fatalf("kvd restore of a damaged backup: exit 0\n%s", out)
	}
	if _, err := os.Stat(filepath.Join(root, "never")); !os.IsNotExist(err) {
		t.Fatalf("a refused restore left its target: %v", err)
	}

	restored := filepath.Join(root, "restored")
	if out, code := kvdCmd(t, "restore", "--from", backup, "--store", restored); code != 0 {
		t.Fatalf("kvd restore: exit %d\n%s", code, out)
	}
	k.stop(t)
	// With no kvd running, backup opens the store itself.
	if out, code := kvdCmd(t, "backup", "--store", dir, "--out", filepath.Join(root, "backups", "offline")); code != 0 || !strings.Contains(out, "checked") {
		t.Fatalf("kvd backup of a stopped store: exit %d\n%s", code, out)
	}
	r := runKVD(t, restored, true)
	mu.Lock()
	defer mu.Unlock()
	for key, at := range acked {
		if !at.Before(began) {
			continue
		}
		if code, b, err := r.do("GET", "/"+ns+"/keys/"+key, nil); err != nil || code != 200 || string(b) != key {
			t.Fatalf("%s, acknowledged before the backup began, reads %d %q %v from the restored store", key, code, b, err)
		}
	}
	if code, body, err := r.do("GET", "/"+ns+"/keys/typed", nil); err != nil || code != 200 || string(body) != `{"a":1}` {
		t.Fatalf("typed: %d %s %v", code, body, err)
	}
	if got := r.getWith(t, "/"+ns+"/keys/typed", "Content-Type"); got != "application/json" {
		t.Fatalf("the restored key's content type is %q", got)
	}
	if got := r.getWith(t, "/"+ns+"/keys/expiring", "Kv-Expires-At"); got == "" {
		t.Fatal("the restored key lost its expiry")
	}
	if code := get(t, "http://"+r.addr+"/v2/storage/kvs", secret); code != 200 {
		t.Fatalf("the token made before the backup: %d on the restored store", code)
	}
}

// getWith returns the header h of a GET of path.
func (k *kvd) getWith(t *testing.T, path, h string) string {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://"+k.addr+"/v2/storage/kvs"+path, nil)
	req.Header.Set("Authorization", "Bearer "+storageKey)
	resp, err := k.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.Header.Get(h)
}

func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	if out, err := exec.Command("cp", "-a", src, dst).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
}
