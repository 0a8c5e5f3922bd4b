package client

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/edgekv/kv"
)

// Batches (API.md, "Atomic batches"): up to MaxBatchOps checks, gets,
// puts, deletes and incrs on one namespace in one request. An atomic batch
// (Namespace.Batch) sees one consistent state and commits all its writes
// or none; a bulk batch (Namespace.Bulk) applies each op on its own, in
// order, as if sent alone.

// Bounds of one batch request.
const (
	// MaxBatchOps is the most ops one batch may hold.
	MaxBatchOps = 1000
	// MaxBatchBody is the largest batch request body the service accepts:
	// 16 MiB of JSON.
	MaxBatchBody = 16 << 20
	// MaxBatchResponse bounds the answer to a batch the client reads: the
	// values a batch's gets return are at most 16 MiB together, which as
	// JSON text is at most six times that (a control character is six
	// bytes), with the ops' own fields besides. The client reads no more
	// than its ops can make the answer, within this bound.
	MaxBatchResponse = 100 << 20
)

// Batch builds one batch request. Its methods add an op and return the
// batch, so calls chain; Run sends it. A Batch is not safe for concurrent
// use, and is not reused after Run.
//
//	res, err := ns.Batch().
//		Check("user/1", etag).
//		Put("user/1", updated, nil).
//		Incr("stats/updates", 1).
//		Run(ctx)
type Batch struct {
	ns     *Namespace
	atomic bool
	ops    []batchOp
	size   int   // bytes of the encoded ops, with their separators
	err    error // the first op that could not be encoded
	gets   int
	// what the ops do, for the retry policy
	incr, check, write bool
}

type batchOp struct {
	op, key string
	raw     []byte // the op as JSON
}

// Batch returns an empty atomic batch of the namespace: its checks and gets
// see one consistent state, and its writes commit together or not at all.
// A failed check fails the whole batch with an error matching
// ErrPreconditionFailed (an *OpError naming the check).
func (ns *Namespace) Batch() *Batch { return &Batch{ns: ns, atomic: true} }

// Bulk returns an empty non-atomic batch: each op is applied on its own,
// in order, as if sent alone, and a failed op carries its own error in
// its OpResult.
func (ns *Namespace) Bulk() *Batch { return &Batch{ns: ns} }

// Atomic reports whether the batch is atomic (Namespace.Batch).
func (b *Batch) Atomic() bool { return b.atomic }

// Len returns the number of ops added.
func (b *Batch) Len() int { return len(b.ops) }

// Size returns the size in bytes of the request body Run would send, to
// keep a batch within MaxBatchBody.
func (b *Batch) Size() int { return len(`{"atomic":false,"ops":[]}`) + b.size }

// wireOp is one op of a batch request.
type wireOp struct {
	Op          string  `json:"op"`
	Key         string  `json:"key"`
	ETag        string  `json:"etag,omitempty"`
	Absent      bool    `json:"absent,omitempty"`
	Value       *string `json:"value,omitempty"`
	ValueBase64 *string `json:"value_base64,omitempty"`
	ContentType string  `json:"content_type,omitempty"`
	TTLSecs     int64   `json:"ttl_secs,omitempty"`
	By          *int64  `json:"by,omitempty"`
}

func (b *Batch) add(op wireOp) *Batch {
	// Without HTML escaping: "<" costs one byte of the body, not six.
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	err := enc.Encode(op)
	raw := bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
	if err != nil && b.err == nil {
		b.err = fmt.Errorf("client: batch op %d (%s %q): %w", len(b.ops), op.Op, op.Key, err)
	}
	if len(b.ops) > 0 {
		b.size++ // the comma
	}
	b.size += len(raw)
	b.ops = append(b.ops, batchOp{op: op.Op, key: op.Key, raw: raw})
	return b
}

// Check adds a check that key exists with the ETag etag (as Get, Info or a
// write returned it).
func (b *Batch) Check(key, etag string) *Batch {
	b.check = true
	return b.add(wireOp{Op: "check", Key: key, ETag: etag})
}

// CheckAbsent adds a check that key does not exist (or has expired).
func (b *Batch) CheckAbsent(key string) *Batch {
	b.check = true
	return b.add(wireOp{Op: "check", Key: key, Absent: true})
}

// Get adds a read of key; its OpResult says whether it was found, and its
// value, content type and ETag.
func (b *Batch) Get(key string) *Batch {
	b.gets++
	return b.add(wireOp{Op: "get", Key: key})
}

// Put adds a write of value under key; opts (which may be nil) gives its
// TTL and content type. Conditions are separate ops in a batch (Check,
// CheckAbsent): opts.IfMatch and opts.IfAbsent are refused.
func (b *Batch) Put(key string, value []byte, opts *PutOptions) *Batch {
	b.write = true
	op := wireOp{Op: "put", Key: key}
	if utf8.Valid(value) {
		s := string(value)
		op.Value = &s
	} else {
		s := base64.StdEncoding.EncodeToString(value)
		op.ValueBase64 = &s
	}
	if opts != nil {
		secs, err := ttlSeconds(opts.TTL)
		if err != nil && b.err == nil {
			b.err = opFailed(len(b.ops), "put", key, err)
		}
		if (opts.IfMatch != "" || opts.IfAbsent) && b.err == nil {
			b.err = opFailed(len(b.ops), "put", key, kv.Errorf(kv.EInvalid, "a batch put takes no IfMatch or IfAbsent; add a Check or CheckAbsent op before it"))
		}
		op.TTLSecs, op.ContentType = secs, opts.ContentType
	}
	return b.add(op)
}

// Delete adds a delete of key; its OpResult says whether a key was removed.
func (b *Batch) Delete(key string) *Batch {
	b.write = true
	return b.add(wireOp{Op: "delete", Key: key})
}

// Incr adds by (which may be negative) to the integer stored under key: a
// missing or expired key counts as 0, and the result is stored as decimal
// text (text/plain); a live key keeps its expiry. A value that is not a decimal 64-bit integer, or an
// overflow, fails the op with kv.ErrUnprocessable.
func (b *Batch) Incr(key string, by int64) *Batch {
	b.incr, b.write = true, true
	return b.add(wireOp{Op: "incr", Key: key, By: &by})
}

// BatchResult is the answer to a batch.
type BatchResult struct {
	// Committed reports that the batch's writes were committed (an atomic
	// batch that ran; for a bulk batch, as the service says).
	Committed bool
	// Results holds one result per op, in the order they were added.
	Results []OpResult
}

// OpResult is the outcome of one op; which fields are set depends on Op.
type OpResult struct {
	Op  string // "check", "get", "put", "delete" or "incr"
	Key string
	// OK reports that a check held.
	OK bool
	// Found, Value and ContentType describe the key a get read (Value is
	// nil when it was not found).
	Found       bool
	Value       []byte
	ContentType string
	// ExpiresAt is when the key a get read expires; zero for never.
	ExpiresAt time.Time
	// ETag is the key's ETag after a get, put or incr.
	ETag string
	// Created reports that a put created the key.
	Created bool
	// Deleted reports that a delete removed a key.
	Deleted bool
	// Counter is the value an incr stored.
	Counter int64
	// Err is the failure of the op in a bulk batch (an *APIError, matching
	// the kv sentinels), nil when it succeeded. An atomic batch fails as a
	// whole instead.
	Err error
}

// Err returns the failures of the ops of a bulk batch, each an *OpError,
// joined (errors.Join), or nil when every op succeeded.
func (r *BatchResult) Err() error {
	var errs []error
	for i, res := range r.Results {
		if res.Err != nil {
			errs = append(errs, &OpError{Index: i, Op: res.Op, Key: res.Key, Err: res.Err})
		}
	}
	return errors.Join(errs...)
}

// OpError is the failure of one op of a batch: an atomic batch that failed
// because of it (a failed check: ErrPreconditionFailed; an invalid op:
// kv.ErrInvalid, kv.ErrUnprocessable, kv.ErrTooLarge), or a failed op of a
// bulk batch. It matches what Err matches.
type OpError struct {
	// Index is the op's position in the batch, from 0 (the N of the
	// service's pointer /ops/N).
	Index int
	Op    string
	Key   string
	Err   error
}

func (e *OpError) Error() string {
	return fmt.Sprintf("client: batch op %d (%s %q): %s", e.Index, e.Op, e.Key, strings.TrimPrefix(e.Err.Error(), "client: "))
}

func (e *OpError) Unwrap() error { return e.Err }

func opFailed(i int, op, key string, err error) *OpError {
	return &OpError{Index: i, Op: op, Key: key, Err: err}
}

// wireResult is one result of a batch answer.
type wireResult struct {
	Op          string          `json:"op"`
	Key         string          `json:"key"`
	OK          *bool           `json:"ok"`
	Found       bool            `json:"found"`
	Value       json.RawMessage `json:"value"` // a string (get) or a number (incr)
	ValueBase64 *string         `json:"value_base64"`
	ContentType string          `json:"content_type"`
	ExpiresAt   *string         `json:"expires_at"`
	ETag        string          `json:"etag"`
	Created     bool            `json:"created"`
	Deleted     bool            `json:"deleted"`
	Error       *errorObject    `json:"error"`
}

// Run sends the batch and returns one result per op. An atomic batch that
// did not commit returns an error: an *OpError naming the op at fault when
// the service names one (a failed check matches ErrPreconditionFailed),
// an *APIError otherwise. A bulk batch returns its results, failed ops
// included (BatchResult.Err); its error is that of the request as a whole.
//
// A batch that holds an incr, or an atomic batch with a check and a
// write, is not applied twice: it is retried only when it cannot have been
// applied, and fails with ErrMaybeApplied when its outcome is unknown.
// Other batches are idempotent and retried as Put is.
func (b *Batch) Run(ctx context.Context) (*BatchResult, error) {
	switch {
	case b.err != nil:
		return nil, b.err
	case len(b.ops) == 0:
		return nil, kv.Errorf(kv.EInvalid, "the batch is empty; it must hold 1 to %d ops", MaxBatchOps).WithPointer("/ops")
	case len(b.ops) > MaxBatchOps:
		return nil, kv.Errorf(kv.EInvalid, "the batch holds %d ops; at most %d are allowed", len(b.ops), MaxBatchOps).WithPointer("/ops")
	}
	head := []byte(`{"atomic":false,"ops":[`)
	if b.atomic {
		head = []byte(`{"atomic":true,"ops":[`)
	}
	size := len(head) + b.size + 2
	r := request{
		method: http.MethodPost,
		path:   namespacePath(b.ns.id) + "/batch",
		header: http.Header{"Content-Type": {"application/json"}},
		body: func() (io.Reader, error) {
			parts := make([]io.Reader, 0, 2*len(b.ops)+2)
			parts = append(parts, bytes.NewReader(head))
			for i, op := range b.ops {
				if i > 0 {
					parts = append(parts, strings.NewReader(","))
				}
				parts = append(parts, bytes.NewReader(op.raw))
			}
			return io.MultiReader(append(parts, strings.NewReader("]}"))...), nil
		},
		size:   int64(size),
		retry:  true,
		unsafe: b.incr || (b.atomic && b.check && b.write),
		limit:  b.responseLimit(),
	}
	r.header.Set("Accept", "application/json")
	resp, err := b.ns.c.do(ctx, r)
	if err != nil {
		var apiErr *APIError
		if errors.As(err, &apiErr) && !errors.Is(err, ErrMaybeApplied) {
			if i, ok := opIndex(apiErr.Pointer); ok && i < len(b.ops) {
				return nil, opFailed(i, b.ops[i].op, b.ops[i].key, apiErr)
			}
		}
		return nil, err
	}
	defer drain(resp)
	var out struct {
		Data struct {
			Committed bool         `json:"committed"`
			Results   []wireResult `json:"results"`
		} `json:"data"`
	}
	body, err := readLimited(resp, int64(r.limit), "the answer to the batch")
	if err == nil {
		if err = json.Unmarshal(body, &out); err != nil {
			err = fmt.Errorf("client: decoding the answer to the batch: %w", err)
		}
	}
	if err != nil {
		if r.unsafe {
			// The batch was answered 200, so it ran, but what it did
			// cannot be read: it must not be sent again blindly.
			return nil, maybeApplied(err)
		}
		return nil, err
	}
	if n := len(out.Data.Results); n != len(b.ops) {
		err := fmt.Errorf("client: the service answered %d results to a batch of %d ops", n, len(b.ops))
		if r.unsafe {
			err = maybeApplied(err)
		}
		return nil, err
	}
	res := &BatchResult{Committed: out.Data.Committed, Results: make([]OpResult, len(b.ops))}
	for i, w := range out.Data.Results {
		o, err := b.result(i, w)
		if err != nil {
			return nil, err
		}
		res.Results[i] = o
	}
	return res, nil
}

// responseLimit bounds the answer to the batch: what its ops can make the
// service send, within MaxBatchResponse.
func (b *Batch) responseLimit() int {
	limit := int64(64<<10) + int64(len(b.ops))*(2<<10) + int64(b.gets)*(6*kv.MaxValueSize)
	return int(min(limit, MaxBatchResponse))
}

// opIndex reads N from a pointer /ops/N or /ops/N/...
func opIndex(pointer string) (int, bool) {
	rest, ok := strings.CutPrefix(pointer, "/ops/")
	if !ok {
		return 0, false
	}
	if i := strings.IndexByte(rest, '/'); i >= 0 {
		rest = rest[:i]
	}
	n, err := strconv.Atoi(rest)
	return n, err == nil && n >= 0
}

// result turns result i of the answer into an OpResult.
func (b *Batch) result(i int, w wireResult) (OpResult, error) {
	op := b.ops[i]
	o := OpResult{Op: op.op, Key: op.key, Found: w.Found, ContentType: w.ContentType, ETag: w.ETag, Created: w.Created, Deleted: w.Deleted}
	bad := func(format string, args ...any) (OpResult, error) {
		return OpResult{}, fmt.Errorf("client: result %d of the batch (%s %q): %s", i, op.op, op.key, fmt.Sprintf(format, args...))
	}
	if w.Error == nil && w.Op != "" && w.Op != op.op {
		return bad("the service answered for a %.20q op", w.Op)
	}
	if w.Error != nil {
		e := &APIError{StatusCode: kv.ErrorCode(w.Error.Code).HTTPStatus()}
		if kv.ErrorCode(w.Error.Code) == codePreconditionFailed {
			e.StatusCode = http.StatusPreconditionFailed
		}
		e.fill(*w.Error)
		e.settleCode()
		o.Err = e
		return o, nil
	}
	switch op.op {
	case "check":
		o.OK = w.OK == nil || *w.OK
		if !o.OK {
			o.Err = &APIError{StatusCode: http.StatusPreconditionFailed, Code: codePreconditionFailed, Title: "Precondition failed", Detail: fmt.Sprintf("the check of key %s failed", op.key)}
		}
	case "get":
		if !w.Found {
			break
		}
		switch {
		case w.ValueBase64 != nil:
			v, err := base64.StdEncoding.DecodeString(*w.ValueBase64)
			if err != nil {
				return bad("value_base64 is not base64: %v", err)
			}
			o.Value = v
		case len(w.Value) > 0:
			var s string
			if err := json.Unmarshal(w.Value, &s); err != nil {
				return bad("the value is not a JSON string")
			}
			o.Value = []byte(s)
		default:
			o.Value = []byte{}
		}
		if w.ExpiresAt != nil {
			t, err := time.Parse(time.RFC3339Nano, *w.ExpiresAt)
			if err != nil {
				return bad("expires_at %.64q is not an RFC 3339 time", *w.ExpiresAt)
			}
			o.ExpiresAt = t
		}
		if len(o.Value) > kv.MaxValueSize {
			return OpResult{}, fmt.Errorf("%w: the value of %q in the batch answer is %d bytes; at most %d are accepted", ErrResponseTooLarge, op.key, len(o.Value), kv.MaxValueSize)
		}
	case "incr":
		n, err := strconv.ParseInt(string(w.Value), 10, 64)
		if err != nil {
			return bad("the value %.40q is not a 64-bit integer", w.Value)
		}
		o.Counter = n
	}
	return o, nil
}

// Incr adds by (which may be negative) to the integer stored under key, in
// one atomic step, and returns the new value: a missing or expired key
// counts as 0, and the result is stored as decimal text (text/plain); a
// live key keeps its expiry. A value that is not a decimal 64-bit integer,
// or an overflow, gives kv.ErrUnprocessable and changes nothing. Incr is never applied twice:
// when its outcome is unknown the error matches ErrMaybeApplied.
func (ns *Namespace) Incr(ctx context.Context, key string, by int64) (int64, error) {
	res, err := ns.Batch().Incr(key, by).Run(ctx)
	if err != nil {
		var opErr *OpError
		if errors.As(err, &opErr) {
			return 0, opErr.Err
		}
		return 0, err
	}
	return res.Results[0].Counter, nil
}
