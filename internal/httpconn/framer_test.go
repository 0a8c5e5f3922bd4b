package httpconn

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"strings"
	"testing"
)

// feedAll feeds s to a framer in pieces of size step (every byte on its
// own when step is 1) and returns the framer.
func feedAll(s string, step int) *framer {
	f := &framer{}
	b := []byte(s)
	for len(b) > 0 {
		n := min(step, len(b))
		f.feed(b[:n])
		b = b[n:]
	}
	return f
}

func verdicts(f *framer) []Verdict {
	var out []Verdict
	for len(f.verdicts) > 0 {
		out = append(out, f.next())
	}
	return out
}

func TestFramer(t *testing.T) {
	known := Verdict{Known: true}
	both := Verdict{Known: true, ContentLengthAndChunked: true}
	longKey := strings.Repeat("k", 700)
	cases := []struct {
		name  string
		in    string
		want  []Verdict
		lost  bool
		state framerState
	}{
		{"get", "GET /a HTTP/1.1\r\nHost: x\r\n\r\n", []Verdict{known}, false, stHeader},
		{"bare LF", "GET /a HTTP/1.1\nHost: x\n\n", []Verdict{known}, false, stHeader},
		{"pipelined", "GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n", []Verdict{known, known}, false, stHeader},
		{"body then next", "PUT /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhelloGET /b HTTP/1.1\r\n\r\n", []Verdict{known, known}, false, stHeader},
		{"body that looks like a request", "PUT /a HTTP/1.1\r\ncontent-length: 40\r\n\r\nGET /x HTTP/1.1\r\nTransfer-Encoding: x\r\n\r\n", []Verdict{known}, false, stHeader},
		{"chunked", "PUT /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nGET /b HTTP/1.1\r\n\r\n", []Verdict{known, known}, false, stHeader},
		{"chunked with extension and trailer", "PUT /a HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n5;a=b\r\nhello\r\nA\r\n0123456789\r\n0\r\nX-T: 1\r\n\r\n", []Verdict{known}, false, stHeader},
		{"chunked in progress", "PUT /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel", []Verdict{known}, false, stChunkData},
		{"CL and TE", "PUT /a HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", []Verdict{both}, false, stHeader},
		{"TE and CL, odd case", "PUT /a HTTP/1.1\r\ntransfer-ENCODING: chunked\r\nCONTENT-length: 3\r\n\r\n", []Verdict{both}, false, stChunkSize},
		{"CL and TE on HTTP/1.0", "PUT /a HTTP/1.0\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\nhi", []Verdict{both}, false, stHeader},
		{"TE ignored on HTTP/1.0", "PUT /a HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\nGET / HTTP/1.0\r\n\r\n", []Verdict{known, known}, false, stHeader},
		{"long request line", "GET /v2/storage/kvs/id/keys/" + longKey + " HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", []Verdict{known}, false, stHeader},
		{"long other header", "GET / HTTP/1.1\r\nX-Long: " + longKey + "\r\n\r\n", []Verdict{known}, false, stHeader},
		{"duplicate equal CL", "PUT / HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nhi", []Verdict{known}, false, stHeader},
		{"differing CL", "PUT / HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nhi", []Verdict{known}, true, stHeader},
		{"bad CL", "PUT / HTTP/1.1\r\nContent-Length: +2\r\n\r\nhi", []Verdict{known}, true, stHeader},
		{"unsupported TE", "PUT / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", []Verdict{known}, true, stHeader},
		{"two TE", "PUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", []Verdict{known}, true, stHeader},
		{"folded CL", "PUT / HTTP/1.1\r\nContent-Length:\r\n 5\r\n\r\n", nil, true, stHeader},
		{"chunk line with bare LF", "PUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello", []Verdict{known}, true, stHeader},
		{"chunk data without CRLF", "PUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab\r\n", []Verdict{known}, true, stHeader},
		{"bad chunk size", "PUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", []Verdict{known}, true, stHeader},
	}
	for _, tc := range cases {
		for _, step := range []int{1, 3, 7, 1 << 20} {
			f := feedAll(tc.in, step)
			if f.lost != tc.lost {
				t.Errorf("%s (step %d): lost = %v, want %v", tc.name, step, f.lost, tc.lost)
				continue
			}
			got := verdicts(f)
			if len(got) != len(tc.want) {
				t.Errorf("%s (step %d): verdicts %+v, want %+v", tc.name, step, got, tc.want)
				continue
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Errorf("%s (step %d): verdict %d = %+v, want %+v", tc.name, step, i, got[i], tc.want[i])
				}
			}
			if !tc.lost && f.state != tc.state {
				t.Errorf("%s (step %d): state %d, want %d", tc.name, step, f.state, tc.state)
			}
		}
	}
}

func TestFramerPending(t *testing.T) {
	f := &framer{}
	f.feed([]byte("GET / HTTP/1.1\r\nX-A: "))
	if got := f.pending(); got != len("GET / HTTP/1.1\r\nX-A: ") {
		t.Fatalf("pending = %d", got)
	}
	f.feed([]byte(strings.Repeat("a", 1000)))
	if got := f.pending(); got != len("GET / HTTP/1.1\r\nX-A: ")+1000 {
		t.Fatalf("pending = %d", got)
	}
	f.feed([]byte("\r\nContent-Length: 3\r\n\r\nab"))
	if got := f.pending(); got != 0 {
		t.Fatalf("pending in a body = %d, want 0", got)
	}
	f.feed([]byte("cGET"))
	if got := f.pending(); got != 3 {
		t.Fatalf("pending of the next request = %d, want 3", got)
	}
}

// FuzzFramer checks that the framer keeps in step with net/http: on any
// input net/http reads as a sequence of whole requests (bodies included),
// the framer is not lost and has one verdict per request.
func FuzzFramer(f *testing.F) {
	for _, s := range []string{
		"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
		"PUT /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhelloGET /b HTTP/1.1\r\nHost: x\r\n\r\n",
		"PUT /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n",
		"POST / HTTP/1.0\r\nContent-Length: 1\r\n\r\nx",
		"PUT / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n0\r\nT: v\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		br := bufio.NewReader(bytes.NewReader(in))
		requests := 0
		for {
			if _, err := br.Peek(1); err != nil {
				break // the input ended between requests
			}
			req, err := http.ReadRequest(br)
			if err != nil {
				return // net/http refuses it: the framer may be anything
			}
			if _, err := io.Copy(io.Discard, req.Body); err != nil {
				return
			}
			requests++
		}
		fr := feedAll(string(in), 5)
		if fr.lost {
			// The framer may give up on inputs that are legal but odd
			// (a long chunk extension); it must never on plain ones.
			if !bytes.Contains(in, []byte(";")) && !bytes.Contains(in, []byte("\n ")) && !bytes.Contains(in, []byte("\n\t")) {
				t.Fatalf("framer lost on input net/http reads as %d requests: %q", requests, in)
			}
			return
		}
		if got := len(fr.verdicts); got != requests {
			t.Fatalf("framer saw %d requests, net/http %d: %q", got, requests, in)
		}
	})
}

// TestFramerAllocations: following a keep-alive connection's requests
// costs no allocation, and neither does one a few requests ahead; the
// verdicts of a long burst come out in order.
func TestFramerAllocations(t *testing.T) {
	f := &framer{}
	req := []byte("PUT /v2/storage/kvs/id/keys/k HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
	if n := testing.AllocsPerRun(1000, func() {
		f.feed(req)
		if v := f.next(); !v.Known {
			t.Fatal("lost")
		}
	}); n != 0 {
		t.Errorf("%v allocations per request", n)
	}
	if n := testing.AllocsPerRun(100, func() {
		for range 3 {
			f.feed(req)
		}
		for range 3 {
			f.next()
		}
	}); n != 0 {
		t.Errorf("%v allocations per three pipelined requests", n)
	}
	both := []byte("PUT / HTTP/1.1\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
	for i := range 20 {
		if i%3 == 0 {
			f.feed(both)
		} else {
			f.feed(req)
		}
	}
	for i := range 20 {
		if v := f.next(); !v.Known || v.ContentLengthAndChunked != (i%3 == 0) {
			t.Fatalf("verdict %d of a burst: %+v", i, v)
		}
	}
}
