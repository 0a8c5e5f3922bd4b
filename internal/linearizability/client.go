package linearizability

import (
	"context"
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

// KeyURL is the URL of key in the client's namespace.
func (c *Client) KeyURL(key string) string {
	return c.BaseURL + "/v2/storage/kvs/" + c.Namespace + "/keys/" + url.PathEscape(key)
}

func (c *Client) do(ctx context.Context, in Input) Result {
	method := map[Kind]string{Get: http.MethodGet, Put: http.MethodPut, Delete: http.MethodDelete}[in.Kind]
	var body io.Reader
	if in.Kind == Put {
		body = strings.NewReader(in.Value)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.KeyURL(in.Key), body)
	if err != nil {
		return Result{NotSent: true, Err: err}
	}
	req.Header.Set("Authorization", "Bearer "+c.Token)
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
	switch {
	case in.Kind == Get && resp.StatusCode == http.StatusOK:
		return Result{Out: Output{Found: true, Value: string(b)}}
	case in.Kind == Get && resp.StatusCode == http.StatusNotFound && strings.Contains(string(b), "Key not found"):
		return Result{Out: Output{}}
	case in.Kind == Put && (resp.StatusCode == http.StatusCreated || resp.StatusCode == http.StatusOK):
		return Result{Out: Output{Created: resp.StatusCode == http.StatusCreated}}
	case in.Kind == Delete && resp.StatusCode == http.StatusOK:
		return Result{Out: Output{}}
	}
	// Any other answer: a write may have happened (a 500 does not say
	// otherwise), and the caller decides whether the status is a failure.
	return Result{Out: Output{Unknown: true}, Err: &StatusError{Op: in, Status: resp.StatusCode, Body: string(b)}}
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
