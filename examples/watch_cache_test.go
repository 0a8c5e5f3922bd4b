package examples

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgekv/kv"
	"github.com/edgekv/kv/internal/kvdtest"
)

// TestWatchCacheJavaScript runs examples/watch_cache.mjs against kvd: its
// copy of a prefix, made from a snapshot and kept current from the
// stream while 4 writers put and delete keys (some over 64 KiB, whose
// values the stream leaves out) and kvd restarts midway, ends equal to
// what kvd holds.
func TestWatchCacheJavaScript(t *testing.T) {
	node := nodeOrSkip(t)
	s := kvdtest.Start(t)
	api := func(method, path string, body []byte) (int, []byte) {
		req, _ := http.NewRequest(method, s.URL+path, bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+s.Token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, nil // kvd is restarting
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	_, b := api("POST", "/v2/storage/kvs", []byte(`{"name":"flags"}`))
	var created struct{ Data struct{ ID string } }
	json.Unmarshal(b, &created)
	id := created.Data.ID
	s.Provision(t, kv.DefaultOrg, id)
	keyPath := func(k string) string { return "/v2/storage/kvs/" + id + "/keys/" + k }
	for i := range 20 {
		api("PUT", keyPath(fmt.Sprintf("flags/f%02d", i)), []byte(fmt.Sprintf("on-%d", i)))
		api("PUT", keyPath(fmt.Sprintf("other/o%02d", i)), []byte("not watched"))
	}

	cmd := exec.Command(node, "watch_cache.mjs", "flags/")
	cmd.Env = append(os.Environ(), "KV_MY_CACHE_ID="+id, "TELNYX_API_KEY="+s.Token, "TELNYX_BASE_URL="+s.URL)
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close()
		cmd.Process.Kill()
		cmd.Wait()
	})
	lines := bufio.NewScanner(stdout)
	lines.Buffer(nil, 64<<20)
	readLine := func() []byte {
		t.Helper()
		got := make(chan bool, 1)
		go func() { got <- lines.Scan() }()
		select {
		case ok := <-got:
			if !ok {
				t.Fatalf("watch_cache.mjs ended: %v\n%s", lines.Err(), stderr.String())
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("watch_cache.mjs said nothing for 30 s\n%s", stderr.String())
		}
		return lines.Bytes()
	}
	if l := readLine(); string(l) != `{"ready":true}` {
		t.Fatalf("first line %s", l)
	}

	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 3))
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				k := keyPath(fmt.Sprintf("flags/f%02d", rng.IntN(30)))
				switch x := rng.IntN(10); {
				case x < 6:
					api("PUT", k, []byte(fmt.Sprintf("w%d-%d", w, i)))
				case x < 7:
					api("PUT", k, bytes.Repeat([]byte{'b'}, 64<<10+1+rng.IntN(100)))
				default:
					api("DELETE", k, nil)
				}
				time.Sleep(time.Millisecond)
			}
		}()
	}
	time.Sleep(500 * time.Millisecond)
	s.Restart(t) // the stream drops; the cache resumes from its revision
	time.Sleep(500 * time.Millisecond)
	close(stop)
	wg.Wait()
	if st, _ := api("PUT", keyPath("flags/zz-done"), []byte("done")); st != http.StatusCreated {
		t.Fatalf("PUT flags/zz-done: %d", st)
	}

	want := map[string]string{}
	_, b = api("GET", "/v2/storage/kvs/"+id+"/keys?prefix=flags/&limit=1000", nil)
	var list kv.KeyListRecord
	if err := json.Unmarshal(b, &list); err != nil {
		t.Fatal(err)
	}
	for _, k := range list.Data {
		_, v := api("GET", keyPath(k.Key), nil)
		want[k.Key] = string(v)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		io.WriteString(stdin, "dump\n")
		var dump struct {
			Revision uint64
			Keys     map[string]string
		}
		if err := json.Unmarshal(readLine(), &dump); err != nil {
			t.Fatal(err)
		}
		if dump.Keys["flags/zz-done"] == "done" {
			var diff []string
			for k, v := range want {
				if dump.Keys[k] != v {
					diff = append(diff, fmt.Sprintf("%s: cache %.20q, kvd %.20q", k, dump.Keys[k], v))
				}
			}
			for k := range dump.Keys {
				if _, ok := want[k]; !ok {
					diff = append(diff, k+": in the cache, not in kvd")
				}
			}
			if len(diff) > 0 {
				t.Fatalf("the cache differs from kvd at revision %d:\n%s", dump.Revision, strings.Join(diff, "\n"))
			}
			t.Logf("the cache holds the %d keys kvd does, at revision %d", len(want), dump.Revision)
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the cache never saw flags/zz-done\n%s", stderr.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}
