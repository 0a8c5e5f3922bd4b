package api_test

import (
	"bufio"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestWatchOverHTTP2: a stream whose connection cannot be taken over (an
// HTTP/2 stream shares its connection) runs on the response instead, with
// the same events; and a stop of the handler ends it.
func TestWatchOverHTTP2(t *testing.T) {
	h, id := readyHandler(t)
	srv := httptest.NewUnstartedServer(h)
	srv.EnableHTTP2 = true
	srv.StartTLS()
	defer srv.Close()

	c := srv.Client()
	req, _ := http.NewRequest("GET", srv.URL+"/v2/storage/kvs/"+id+"/watch", nil)
	req.Header.Set("Authorization", "Bearer tok")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.ProtoMajor != 2 || resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("watch over %s: %d %q", resp.Proto, resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	lines := make(chan string, 100)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	want := func(prefix string) {
		t.Helper()
		timeout := time.After(10 * time.Second)
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("the stream ended before %q", prefix)
				}
				if strings.HasPrefix(l, prefix) {
					return
				}
			case <-timeout:
				t.Fatalf("no %q within 10 s", prefix)
			}
		}
	}
	want("event: ready")
	put, _ := http.NewRequest("PUT", srv.URL+"/v2/storage/kvs/"+id+"/keys/k", strings.NewReader("v"))
	put.Header.Set("Authorization", "Bearer tok")
	pr, err := c.Do(put)
	if err != nil || pr.StatusCode != http.StatusCreated {
		t.Fatalf("PUT: %v %v", pr, err)
	}
	pr.Body.Close()
	want("event: put")
	want(`data: {"key":"k"`)

	h.Close() // as a stop of the server does
	timeout := time.After(10 * time.Second)
	for {
		select {
		case _, ok := <-lines:
			if !ok {
				return
			}
		case <-timeout:
			t.Fatal("the HTTP/2 stream went on after the handler was closed")
		}
	}
}
