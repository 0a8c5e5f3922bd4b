package server_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/edgekv/kv/client"
	"github.com/edgekv/kv/internal/kvdtest"
	"github.com/edgekv/kv/internal/server"
)

// TestWatchAccessLog: a watch stream runs on after its handler returns
// (it takes its connection over), and its access log line comes at its
// end: with the bytes it sent and the time it was open, not those of its
// headers.
func TestWatchAccessLog(t *testing.T) {
	var logs kvdtest.SyncBuffer
	s := kvdtest.Start(t, kvdtest.WithConfig(func(c *server.Config) { c.AccessLog = true }),
		kvdtest.WithLogger(slog.New(slog.NewJSONHandler(&logs, nil))))
	ctx := context.Background()
	c := client.New(client.WithBaseURL(s.URL), client.WithAPIKey(s.Token))
	id := readyNamespace(t, s)

	conn, err := net.Dial("tcp", strings.TrimPrefix(s.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET /v2/storage/kvs/%s/watch HTTP/1.1\r\nHost: kvd\r\nAuthorization: Bearer %s\r\n\r\n", id, s.Token)
	br := bufio.NewReader(conn)
	conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	for line := ""; !strings.HasPrefix(line, "event: ready"); {
		if line, err = br.ReadString('\n'); err != nil {
			t.Fatalf("before the ready event: %v", err)
		}
	}
	if _, err := c.Namespace(id).Put(ctx, "k", []byte("v"), nil); err != nil {
		t.Fatal(err)
	}
	for line := ""; !strings.HasPrefix(line, "event: put"); {
		if line, err = br.ReadString('\n'); err != nil {
			t.Fatalf("before the put event: %v", err)
		}
	}
	const open = 300 * time.Millisecond
	time.Sleep(open)
	if strings.Contains(logs.String(), "/watch") {
		t.Fatalf("the watch was logged while it was open:\n%s", logs.String())
	}
	conn.Close()

	var entry struct {
		Path     string
		Status   int
		Bytes    int64
		Duration time.Duration
	}
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		for _, line := range strings.Split(logs.String(), "\n") {
			if strings.Contains(line, `"msg":"request"`) && strings.Contains(line, "/watch") {
				if err := json.Unmarshal([]byte(line), &entry); err != nil {
					t.Fatalf("%s: %v", line, err)
				}
			}
		}
		if entry.Path != "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no access log line for the watch after its client left:\n%s", logs.String())
		}
	}
	if entry.Status != 200 || entry.Bytes < 100 || entry.Duration < open {
		t.Fatalf("the watch's access log line: %+v; want status 200, the ready and put events' bytes, at least %v", entry, open)
	}
}
