package crashtest

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// feedWatcher follows the main namespace's watch stream across every kill
// of kvd, as a client would: after a dropped connection it reconnects
// with Last-Event-ID, the last revision it received. At the end, every
// acknowledged PUT of the workload must have come through the stream
// exactly once, and the revisions it delivered only ever increase.
type feedWatcher struct {
	r      *crashRun
	cancel context.CancelFunc
	done   chan struct{}

	mu        sync.Mutex
	started   bool              // a first ready came through: last is a position
	last      uint64            // the last revision received (or ready's)
	seen      map[uint64]string // revision -> key, of every event received
	dups      []string
	backwards []string
	reconnect int
	acked     map[uint64]string // the acknowledged PUTs: revision -> key
}

func (r *crashRun) startFeedWatcher() *feedWatcher {
	ctx, cancel := context.WithCancel(context.Background())
	f := &feedWatcher{r: r, cancel: cancel, done: make(chan struct{}), seen: map[uint64]string{}, acked: map[uint64]string{}}
	ready := make(chan struct{})
	go f.run(ctx, ready)
	select {
	case <-ready:
	case <-time.After(30 * time.Second):
		r.t.Fatal("the watch stream never became ready")
	}
	return f
}

// ackedPut records an acknowledged PUT's ETag.
func (f *feedWatcher) ackedPut(key, etag string) {
	rev, err := strconv.ParseUint(strings.Trim(etag, `"`), 16, 64)
	if err != nil {
		f.r.problem("PUT %s answered the ETag %q", key, etag)
		return
	}
	f.mu.Lock()
	f.acked[rev] = key
	f.mu.Unlock()
}

func (f *feedWatcher) run(ctx context.Context, ready chan struct{}) {
	defer close(f.done)
	for ctx.Err() == nil {
		f.stream(ctx, ready)
		time.Sleep(20 * time.Millisecond) // kvd is down, or restarting
	}
}

// stream reads one connection until it drops.
func (f *feedWatcher) stream(ctx context.Context, ready chan struct{}) {
	req, _ := http.NewRequestWithContext(ctx, "GET", f.r.k.url()+"/v2/storage/kvs/"+f.r.ns+"/watch", nil)
	req.Header.Set("Authorization", "Bearer "+apiKey)
	f.mu.Lock()
	if f.started {
		req.Header.Set("Last-Event-ID", strconv.FormatUint(f.last, 10))
		f.reconnect++
	}
	f.mu.Unlock()
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		return
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		if resp.StatusCode != http.StatusServiceUnavailable {
			f.r.problem("watch: status %d", resp.StatusCode)
		}
		return
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	var event string
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "event: "):
			event = line[len("event: "):]
		case strings.HasPrefix(line, "data: "):
			var d struct {
				Key      string `json:"key"`
				Revision uint64 `json:"revision"`
			}
			if err := json.Unmarshal([]byte(line[len("data: "):]), &d); err != nil {
				f.r.problem("watch: data %q: %v", line, err)
				return
			}
			f.mu.Lock()
			switch {
			case event == "ready":
				// Only the first connection has no position: every later one
				// resumes with Last-Event-ID and is sent no ready. A fresh
				// namespace's ready may say revision 0, so started, not
				// last, says whether there was one.
				if !f.started {
					f.started = true
					f.last = d.Revision
					close(ready)
				}
			case f.seen[d.Revision] != "":
				f.dups = append(f.dups, fmt.Sprintf("%s %s at %d", event, d.Key, d.Revision))
			case d.Revision <= f.last:
				f.backwards = append(f.backwards, fmt.Sprintf("%s %s at %d after %d", event, d.Key, d.Revision, f.last))
			default:
				f.seen[d.Revision] = d.Key
				f.last = d.Revision
			}
			f.mu.Unlock()
		}
	}
}

// check waits until the stream has caught up with kvd (a final write comes
// through), stops the watcher and checks what it received.
func (f *feedWatcher) check() {
	t := f.r.t
	status, body, err := f.r.api.call(context.Background(), "PUT", "/"+f.r.ns+"/keys/feed-sentinel", strings.NewReader("end"))
	if err != nil || status != http.StatusCreated && status != http.StatusOK {
		t.Fatalf("PUT feed-sentinel: %d %s %v", status, body, err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		f.mu.Lock()
		var caught bool
		for _, k := range f.seen {
			if k == "feed-sentinel" {
				caught = true
				break
			}
		}
		f.mu.Unlock()
		if caught {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the watch stream never delivered the final write")
		}
		time.Sleep(20 * time.Millisecond)
	}
	f.cancel()
	<-f.done
	f.mu.Lock()
	defer f.mu.Unlock()
	missing := 0
	for rev, key := range f.acked {
		if f.seen[rev] != key {
			if missing < 10 {
				t.Errorf("the acknowledged PUT of %s at revision %d never came through the watch (it has %q there)", key, rev, f.seen[rev])
			}
			missing++
		}
	}
	for i, d := range f.dups {
		if i == 10 {
			break
		}
		t.Errorf("the watch delivered twice: %s", d)
	}
	for i, b := range f.backwards {
		if i == 10 {
			break
		}
		t.Errorf("the watch went back: %s", b)
	}
	if len(f.acked) == 0 {
		t.Error("no acknowledged PUT to look for in the watch")
	}
	t.Logf("watch: %d events over %d reconnections after kills; of the %d acknowledged PUTs, %d did not come through; %d events came twice, %d out of order",
		len(f.seen), f.reconnect, len(f.acked), missing, len(f.dups), len(f.backwards))
}
