package main

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestBatchMemory: batches are read within the memory bounds. 24 clients
// at once each stream a batch of 1,000 puts of 1 MiB values (a 1 GiB
// body, chunked): each is refused, with 413 once 16 MiB have arrived, or
// 503 while the body budget is taken (the connection is then closed, and a
// client still sending may see that instead of the answer); 8 more send
// legal batches of 15 values of 1 MiB, retrying on 503 or a closed
// connection as x-should-retry and the early close say, and 8 read 15 such
// values in one batch. kvd's peak RSS stays under 512 MiB, every legal
// batch is served, and no refused batch wrote anything.
func TestBatchMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("sends gigabytes of batch bodies")
	}
	cmd, _, base, token := startFloodKVD(t, 0, true)
	pid := cmd.Process.Pid
	h := newHonest(t, base, token)
	id := h.readyNamespace("batch-memory")
	value := strings.Repeat("v", 1<<20)
	var gets []string
	for i := range 15 {
		h.mustDo("PUT", fmt.Sprintf("/v2/storage/kvs/%s/keys/big/%d", id, i), []byte(value), 201)
		gets = append(gets, fmt.Sprintf(`{"op":"get","key":"big/%d"}`, i))
	}
	peakRSS(t, pid)
	url := base + "/v2/storage/kvs/" + id + "/batch"
	post := func(body io.Reader) (int, []byte, error) {
		req, _ := http.NewRequest("POST", url, body)
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, nil, err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp.StatusCode, b, err
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	statuses := map[string]map[int]int{"huge": {}, "legal": {}, "gets": {}}
	count := func(kind string, st int) { mu.Lock(); statuses[kind][st]++; mu.Unlock() }
	for i := range 24 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pr, pw := io.Pipe()
			go func() {
				pw.Write([]byte(`{"ops":[`))
				for j := range 1000 {
					if j > 0 {
						pw.Write([]byte(","))
					}
					if _, err := fmt.Fprintf(pw, `{"op":"put","key":"huge/%d/%d","value":"%s"}`, i, j, value); err != nil {
						return // kvd stopped reading
					}
				}
				pw.Write([]byte(`]}`))
				pw.Close()
			}()
			st, _, err := post(pr)
			pr.CloseWithError(io.EOF)
			if err != nil {
				st = -1 // kvd closed the connection after its answer
			}
			count("huge", st)
		}()
	}
	for i := range 8 {
		wg.Add(2)
		go func() {
			defer wg.Done()
			var ops []string
			for j := range 15 {
				ops = append(ops, fmt.Sprintf(`{"op":"put","key":"legal/%d/%d","value":"%s"}`, i, j, value))
			}
			for attempt := 0; ; attempt++ {
				st, b, err := post(strings.NewReader(`{"ops":[` + strings.Join(ops, ",") + `]}`))
				if (err != nil || st == 503) && attempt < 200 {
					time.Sleep(50 * time.Millisecond)
					continue // the body budget is busy: try again
				}
				if err != nil || st != 200 {
					t.Errorf("a legal batch of 15 MiB: %d %v %.200s", st, err, b)
				}
				count("legal", st)
				return
			}
		}()
		go func() {
			defer wg.Done()
			for {
				st, b, err := post(strings.NewReader(`{"ops":[` + strings.Join(gets, ",") + `]}`))
				if err == nil && st == 503 {
					continue
				}
				if err != nil || st != 200 || !bytes.Contains(b, []byte(value)) {
					t.Errorf("a batch reading 15 MiB: %d %v %.200s", st, err, b)
				}
				count("gets", st)
				return
			}
		}()
	}
	wg.Wait()
	rss := peakRSS(t, pid)
	t.Logf("statuses %v; kvd peak RSS %d MiB", statuses, rss>>20)
	if statuses["huge"][413]+statuses["huge"][503]+statuses["huge"][-1] != 24 {
		t.Errorf("1 GiB batch bodies: %v, want 413 or 503 (or the connection closed after either)", statuses["huge"])
	}
	if rss > floodRSSLimit {
		t.Errorf("kvd peak RSS %d MiB, over %d MiB", rss>>20, floodRSSLimit>>20)
	}
	if got := h.mustDo("GET", "/v2/storage/kvs/"+id+"/keys?prefix=huge/", nil, 200); bytes.Contains(got, []byte(`"key"`)) {
		t.Errorf("a refused batch wrote keys: %.200s", got)
	}
}
