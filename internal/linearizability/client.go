package linearizability

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
)

// Client performs key operations on one namespace of a kvd through its
// HTTP API and records each in a Recorder. Several Clients (one per
// goroutine, or one per kvd process) may share a Recorder and an HTTP
// client.
type Client struct {
	HTTP      *http.Client
	BaseURL   string // e.g. http://127.0.0.1:8080, without /v2
	Token     string
	Namespace string
	Rec       *Recorder
	ID        int // porcupine client id, for the visualization
}

// Result is what became of one operation.
type Result struct {
	Out Output
	// NotSent: the connection could not be made, so the request never
	// reached a server and the operation is not in the history.
	NotSent bool
	// Err describes an outcome other than an HTTP answer the operation
	// expects (a transport error, or an unexpected status); such a Put or
	// Delete is recorded as unknown.
	Err error
	// Call and Return are the operation's times on the Recorder's clock.
	Call, Return int64
	// ETag is the key's ETag a Get read or a Put wrote.
	ETag string
}

// Get reads key.
func (c *Client) Get(ctx context.Context, key string) Result {
	return c.do(ctx, Input{Kind: Get, Key: key})
}

// Put writes value under key (without TTL).
func (c *Client) Put(ctx context.Context, key, value string) Result {
	return c.do(ctx, Input{Kind: Put, Key: key, Value: value})
}

// Delete removes key.
func (c *Client) Delete(ctx context.Context, key string) Result {
	return c.do(ctx, Input{Kind: Delete, Key: key})
}

// Do performs in (any kind, with its condition and group) and records it.
func (c *Client) Do(ctx context.Context, in Input) Result { return c.do(ctx, in) }

// PutIf writes value under key if the key holds expect, whose ETag is
// etag (If-Match), or, with cond IfAbsent, if it does not exist
// (If-None-Match: *).
func (c *Client) PutIf(ctx context.Context, key, value string, cond Cond, expect, etag string) Result {
	return c.do(ctx, Input{Kind: Put, Key: key, Value: value, Cond: cond, Expect: expect, ETag: etag})
}

// DeleteIf removes key if it holds expect, whose ETag is etag.
func (c *Client) DeleteIf(ctx context.Context, key, expect, etag string) Result {
	return c.do(ctx, Input{Kind: Delete, Key: key, Cond: IfValue, Expect: expect, ETag: etag})
}

// Batch runs ops (Get, Put, Delete and Precondition, on keys of group) as
// one atomic batch.
func (c *Client) Batch(ctx context.Context, group string, ops []Input) Result {
	return c.do(ctx, Input{Kind: Batch, Group: group, Ops: ops})
}

// KeyURL is the URL of key in the client's namespace.
func (c *Client) KeyURL(key string) string {
	return c.BaseURL + "/v2/storage/kvs/" + c.Namespace + "/keys/" + url.PathEscape(key)
}

func (c *Client) do(ctx context.Context, in Input) Result {
	method := map[Kind]string{Get: http.MethodGet, Put: http.MethodPut, Delete: http.MethodDelete, Batch: http.MethodPost}[in.Kind]
	var body io.Reader
	u := c.KeyURL(in.Key)
	switch in.Kind {
	case Put:
		body = strings.NewReader(in.Value)
	case Batch:
		u = c.BaseURL + "/v2/storage/kvs/" + c.Namespace + "/batch"
		body = bytes.NewReader(batchBody(in.Ops))
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return Result{NotSent: true, Err: err}
	}
	req.Header.Set("Authorization", "Bearer "+c.Token)
	switch in.Cond {
	case IfValue:
		req.Header.Set("If-Match", in.ETag)
	case IfAbsent:
		req.Header.Set("If-None-Match", "*")
	}
	call := c.Rec.Now()
	res := c.roundTrip(req, in)
	ret := c.Rec.Now()
	res.Call, res.Return = call, ret
	if !res.NotSent {
		c.Rec.Record(c.ID, in, res.Out, call, ret)
	}
	return res
}

func (c *Client) roundTrip(req *http.Request, in Input) Result {
	resp, err := c.HTTP.Do(req)
	if err != nil {
		if IsNotSent(err) {
			return Result{NotSent: true, Err: err}
		}
		return Result{Out: Output{Unknown: true}, Err: err}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		// The answer was cut off: its status stands for a write, but a
		// read saw nothing reliable.
		if in.Kind == Get || resp.StatusCode >= 300 {
			return Result{Out: Output{Unknown: true}, Err: err}
		}
	}
	etag := resp.Header.Get("ETag")
	switch {
	case resp.StatusCode == http.StatusPreconditionFailed && in.Kind != Get:
		return Result{Out: Output{Failed: true}}
	case in.Kind == Batch && resp.StatusCode == http.StatusOK:
		out, err := batchOutput(in.Ops, b)
		if err != nil {
			return Result{Out: Output{Unknown: true}, Err: err}
		}
		return Result{Out: out}
	case in.Kind == Get && resp.StatusCode == http.StatusOK:
		return Result{Out: Output{Found: true, Value: string(b)}, ETag: etag}
	case in.Kind == Get && resp.StatusCode == http.StatusNotFound && strings.Contains(string(b), "Key not found"):
		return Result{Out: Output{}}
	case in.Kind == Put && (resp.StatusCode == http.StatusCreated || resp.StatusCode == http.StatusOK):
		return Result{Out: Output{Created: resp.StatusCode == http.StatusCreated}, ETag: etag}
	case in.Kind == Delete && resp.StatusCode == http.StatusOK:
		return Result{Out: Output{}}
	}
	// Any other answer: a write may have happened (a 500 does not say
	// otherwise), and the caller decides whether the status is a failure.
	return Result{Out: Output{Unknown: true}, Err: &StatusError{Op: in, Status: resp.StatusCode, Body: string(b)}}
}

// batchBody is the JSON of an atomic batch of ops.
func batchBody(ops []Input) []byte {
	type op struct {
		Op     string  `json:"op"`
		Key    string  `json:"key"`
		Value  *string `json:"value,omitempty"`
		ETag   string  `json:"etag,omitempty"`
		Absent bool    `json:"absent,omitempty"`
	}
	body := struct {
		Atomic bool `json:"atomic"`
		Ops    []op `json:"ops"`
	}{Atomic: true}
	for _, in := range ops {
		o := op{Op: in.Kind.String(), Key: in.Key}
		switch in.Kind {
		case Put:
			v := in.Value
			o.Value = &v
		case Precondition:
			if in.Cond == IfAbsent {
				o.Absent = true
			} else {
				o.ETag = in.ETag
			}
		}
		body.Ops = append(body.Ops, o)
	}
	b, _ := json.Marshal(body)
	return b
}

// batchOutput reads a committed batch's answer.
func batchOutput(ops []Input, b []byte) (Output, error) {
	var ans struct {
		Data struct {
			Committed bool `json:"committed"`
			Results   []struct {
				Found   bool    `json:"found"`
				Value   *string `json:"value"`
				Created bool    `json:"created"`
			} `json:"results"`
		} `json:"data"`
	}
	if err := json.Unmarshal(b, &ans); err != nil || !ans.Data.Committed || len(ans.Data.Results) != len(ops) {
		return Output{}, fmt.Errorf("batch: an answer that is not a committed batch of %d results: %.200s", len(ops), b)
	}
	out := Output{Results: make([]Output, len(ops))}
	for i, r := range ans.Data.Results {
		out.Results[i] = Output{Found: r.Found, Created: r.Created}
		if r.Value != nil {
			out.Results[i].Value = *r.Value
		}
	}
	return out, nil
}

// StatusError is an HTTP answer an operation does not expect.
type StatusError struct {
	Op     Input
	Status int
	Body   string
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("%s(%s): status %d: %s", e.Op.Kind, e.Op.Key, e.Status, e.Body)
}

// IsNotSent reports whether err means that a request never reached a
// server: the connection could not be made.
func IsNotSent(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}
