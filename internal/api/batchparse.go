package api

import (
	"encoding/base64"
	"fmt"
	"strconv"

	"github.com/edgekv/kv"
	"github.com/edgekv/kv/internal/service"
	"github.com/edgekv/kv/internal/store"
)

// A batch body is decoded in one pass over its bytes: values are copied
// (or base64-decoded) once, straight from the body into their ops, and
// nothing else is allocated per field. The rules are encoding/json's, as
// the first decoder of batches applied them (batch_reference_test.go),
// with one change: field names match exactly, not whatever their case.
//
//   - A body that is not one well-formed JSON value (nested at most
//     maxDepth deep), or that has anything but white space after it, is
//     no batch (errBatchShape). So is a body that is not an object, or that
//     has a field other than atomic and ops, unless a field of the wrong
//     type came first: the first such problem is the error.
//   - null is the same as an absent field; of a field given twice, the
//     last counts.
//   - An op's problems are its own: the first type error or unknown field
//     in it, unless a number field (ttl_secs, by) holds no number, which
//     is the error whatever came before; then what is missing or does not
//     fit the op.
//   - Strings decode as encoding/json decodes them: invalid UTF-8 and
//     lone surrogates become U+FFFD.

// maxDepth is how deeply arrays and objects may nest in a body, as in
// encoding/json.
const maxDepth = 10000

// opUsage starts the error of an op that is not an object of known fields.
const opUsage = "op %d must be an object with the fields op and key (and etag/absent, value/value_base64, content_type, ttl_secs, by as the op takes them): %s"

// span is a string's contents (between its quotes) or a number's text in
// the body; set is false for an absent field.
type span struct {
	start, end int
	set        bool
	plain      bool // a string with no escape and no byte of 0x80 or above
}

// opFields is an op's fields as sent.
type opFields struct {
	op, key, etag, value, valueBase64, contentType, ttl, by span
	absent, absentSet                                       bool
}

type batchParser struct {
	b     []byte
	pos   int
	depth int
	bad   bool // not well-formed JSON
}

// parseBatch decodes a batch body. A body that is no batch is an error;
// an op that is malformed has its error in its BatchOp (an atomic batch
// then fails with it; a bulk one reports it in the op's result).
func parseBatch(body []byte) ([]service.BatchOp, bool, error) {
	p := batchParser{b: body}
	var (
		atomic = true
		ops    []service.BatchOp
		opsSet bool
		count  int   // ops in the last "ops", decoded or not
		saved  error // the first field of the wrong type, or unknown
	)
	save := func(err error) {
		if saved == nil {
			saved = err
		}
	}
	p.ws()
	if p.pos == len(p.b) {
		return nil, false, errBatchShape
	}
	switch p.b[p.pos] {
	case '{':
		if !p.open() {
			return nil, false, errBatchShape
		}
		for first := true; ; first = false {
			key, ok := p.member(first)
			if !ok {
				break
			}
			switch name := p.name(key); name {
			case "atomic":
				switch p.b[p.pos] {
				case 't', 'f':
					v := p.b[p.pos] == 't'
					if p.literal() {
						atomic = v
					}
				case 'n':
					if p.literal() {
						atomic = true
					}
				default:
					save(kv.Errorf(kv.EInvalid, "atomic has the wrong type: %s", errBatchShape.Detail).WithPointer("/atomic"))
					p.skip()
				}
			case "ops":
				switch p.b[p.pos] {
				case 'n':
					if p.literal() {
						ops, opsSet, count = nil, false, 0
					}
				case '[':
					ops, opsSet, count = ops[:0], true, 0
					if !p.open() {
						break
					}
					for first := true; p.element(first, ']'); first = false {
						if count < store.MaxBatchOps {
							ops = append(ops, p.parseOp(count))
						} else {
							p.skip()
						}
						count++
					}
				default:
					save(kv.Errorf(kv.EInvalid, "ops has the wrong type: %s", errBatchShape.Detail).WithPointer("/ops"))
					p.skip()
				}
			default:
				save(fmt.Errorf("json: unknown field %q", name))
				p.skip()
			}
			if p.bad {
				break
			}
		}
	case 'n':
		p.literal()
	default:
		p.skip()
		return nil, false, errBatchShape
	}
	if p.bad {
		return nil, false, errBatchShape
	}
	if _, ok := saved.(*kv.Error); ok {
		return nil, false, saved
	}
	if saved != nil { // an unknown field
		return nil, false, errBatchShape
	}
	if p.ws(); p.pos != len(p.b) {
		return nil, false, errBatchShape
	}
	if !opsSet {
		return nil, false, kv.Errorf(kv.EInvalid, "ops is required: a list of 1 to %d ops", store.MaxBatchOps).WithPointer("/ops")
	}
	if count > store.MaxBatchOps || count == 0 {
		return nil, false, kv.Errorf(kv.EInvalid, "a batch holds 1 to %d ops; this one has %d", store.MaxBatchOps, count).WithPointer("/ops")
	}
	return ops, atomic, nil
}

// parseOp decodes op i, at the parser's position.
func (p *batchParser) parseOp(i int) service.BatchOp {
	fail := func(code kv.ErrorCode, field, format string, args ...any) service.BatchOp {
		return opError(i, code, field, format, args...)
	}
	switch p.b[p.pos] {
	case '{':
	case 'n':
		p.literal()
		return fail(kv.EInvalid, "op", "op is required: check, get, put, delete or incr")
	default:
		p.skip()
		return fail(kv.EInvalid, "", opUsage, i, "not an object")
	}
	var (
		f       opFields
		saved   service.BatchOp // the first type error or unknown field
		aborted bool            // a number field that holds no number
	)
	keep := func(op service.BatchOp) {
		if saved.Err == nil {
			saved = op
		}
	}
	if !p.open() {
		return saved
	}
	for first := true; ; first = false {
		key, ok := p.member(first)
		if !ok {
			break
		}
		name := p.name(key)
		if aborted {
			p.skip()
			continue
		}
		var str *span
		switch name {
		case "op":
			str = &f.op
		case "key":
			str = &f.key
		case "etag":
			str = &f.etag
		case "value":
			str = &f.value
		case "value_base64":
			str = &f.valueBase64
		case "content_type":
			str = &f.contentType
		case "absent":
			switch p.b[p.pos] {
			case 't', 'f':
				v := p.b[p.pos] == 't'
				if p.literal() {
					f.absent, f.absentSet = v, true
				}
			case 'n':
				if p.literal() {
					f.absentSet = false
				}
			default:
				keep(fail(kv.EInvalid, name, "%s must be a boolean", name))
				p.skip()
			}
			continue
		case "ttl_secs", "by":
			n := &f.ttl
			if name == "by" {
				n = &f.by
			}
			switch c := p.b[p.pos]; {
			case c == 'n':
				if p.literal() {
					*n = span{}
				}
			case c == '-' || '0' <= c && c <= '9':
				*n = p.number()
			default:
				saved = fail(kv.EInvalid, name, "%s must be a number", name)
				aborted = true
				p.skip()
			}
			continue
		default:
			msg := fmt.Sprintf("json: unknown field %q", name)
			if len(msg) >= 120 {
				msg = "not valid"
			}
			keep(fail(kv.EInvalid, "", opUsage, i, msg))
			p.skip()
			continue
		}
		switch p.b[p.pos] {
		case '"':
			*str = p.str()
		case 'n':
			if p.literal() {
				*str = span{}
			}
		default:
			keep(fail(kv.EInvalid, name, "%s must be a string", name))
			p.skip()
		}
	}
	if p.bad || saved.Err != nil {
		return saved
	}
	return p.buildOp(i, &f)
}

// opError is op i, failed with an error at its field.
func opError(i int, code kv.ErrorCode, field, format string, args ...any) service.BatchOp {
	at := "/ops/" + strconv.Itoa(i)
	if field != "" {
		at += "/" + field
	}
	return service.BatchOp{Err: kv.Errorf(code, format, args...).WithPointer(at)}
}

// buildOp is op i from its fields as sent, or what is wrong with it.
func (p *batchParser) buildOp(i int, f *opFields) service.BatchOp {
	fail := func(code kv.ErrorCode, field, format string, args ...any) service.BatchOp {
		return opError(i, code, field, format, args...)
	}
	if !f.op.set {
		return fail(kv.EInvalid, "op", "op is required: check, get, put, delete or incr")
	}
	opName := p.text(f.op)
	kind, ok := opKinds[opName]
	if !ok {
		return fail(kv.EInvalid, "op", "op %.32q is not one of check, get, put, delete, incr", opName)
	}
	if !f.key.set {
		return fail(kv.EInvalid, "key", "key is required")
	}
	op := service.BatchOp{Kind: kind, Key: p.text(f.key)}
	// Fields an op does not take are refused, so a typo is not silently
	// ignored.
	for _, x := range [...]struct {
		name string
		set  bool
		of   store.OpKind
	}{
		{"etag", f.etag.set, store.OpCheck}, {"absent", f.absentSet, store.OpCheck},
		{"value", f.value.set, store.OpPut}, {"value_base64", f.valueBase64.set, store.OpPut},
		{"content_type", f.contentType.set, store.OpPut}, {"ttl_secs", f.ttl.set, store.OpPut},
		{"by", f.by.set, store.OpIncr},
	} {
		if x.set && x.of != kind {
			return fail(kv.EInvalid, x.name, "a %s op takes no %s", opName, x.name)
		}
	}
	switch kind {
	case store.OpCheck:
		switch {
		case f.etag.set && f.absentSet:
			return fail(kv.EInvalid, "absent", "a check takes etag or absent, not both")
		case f.etag.set:
			l, err := kv.ParseETags(p.text(f.etag), false)
			if err != nil {
				return fail(kv.EInvalid, "etag", `etag must be an entity tag such as "\"0000018c2f5e9a10\"" (with its quotes), as an ETag header or a result gave it, or "*" (the key exists)`)
			}
			op.If.Exists = l.Any
			for _, r := range l.Revisions {
				op.If.Revisions = append(op.If.Revisions, store.Revision(r))
			}
		case f.absentSet && f.absent:
			op.If.Absent = true
		case f.absentSet:
			op.If.Exists = true
		default:
			return fail(kv.EInvalid, "", "a check takes etag (the key has this ETag, or \"*\": it exists) or absent: true (it does not exist)")
		}
	case store.OpPut:
		switch {
		case f.value.set && f.valueBase64.set:
			return fail(kv.EInvalid, "value_base64", "a put takes value or value_base64, not both")
		case f.value.set:
			// A value over the limit is refused before it is decoded:
			// invalid UTF-8 decodes to three bytes a byte.
			n := p.unquotedLen(f.value)
			if n > kv.MaxValueSize {
				return fail(kv.ETooLarge, "value", "value is %d bytes; the limit is %d bytes (1 MiB)", n, kv.MaxValueSize)
			}
			op.Put.Data = p.unquote(make([]byte, 0, n), f.value)
		case f.valueBase64.set:
			src := p.b[f.valueBase64.start:f.valueBase64.end]
			if !f.valueBase64.plain {
				src = p.unquote(nil, f.valueBase64)
			}
			b := make([]byte, base64.StdEncoding.DecodedLen(len(src)))
			n, err := base64.StdEncoding.Decode(b, src)
			if err != nil {
				return fail(kv.EInvalid, "value_base64", "value_base64 must be standard base64 (RFC 4648, with padding)")
			}
			op.Put.Data = b[:n]
		default:
			return fail(kv.EInvalid, "value", "a put takes value (a string) or value_base64 (bytes, in base64)")
		}
		if len(op.Put.Data) > kv.MaxValueSize {
			return fail(kv.ETooLarge, "value", "value is %d bytes; the limit is %d bytes (1 MiB)", len(op.Put.Data), kv.MaxValueSize)
		}
		if f.contentType.set {
			op.Put.ContentType = p.text(f.contentType)
		}
		if f.ttl.set {
			secs, err := strconv.ParseInt(string(p.b[f.ttl.start:f.ttl.end]), 10, 64)
			if err != nil {
				secs = -1
			}
			ttl, err := service.ValidateTTL(secs)
			if err != nil {
				return fail(kv.EUnprocessable, "ttl_secs", "ttl_secs must be a whole number of seconds from 1 to %d", kv.MaxTTLSeconds)
			}
			op.Put.TTL = ttl
		}
	case store.OpIncr:
		op.By = 1
		if f.by.set {
			by, err := strconv.ParseInt(string(p.b[f.by.start:f.by.end]), 10, 64)
			if err != nil {
				return fail(kv.EUnprocessable, "by", "by must be a signed 64-bit integer")
			}
			op.By = by
		}
	}
	return op
}

// text is the string s decodes to.
func (p *batchParser) text(s span) string {
	if s.plain {
		return string(p.b[s.start:s.end])
	}
	return string(p.unquote(nil, s))
}

var fieldNames = [...]string{"atomic", "ops", "op", "key", "etag", "absent", "value", "value_base64", "content_type", "ttl_secs", "by"}

// name is a field name; most are plain, and compare without a copy.
func (p *batchParser) name(s span) string {
	if s.plain {
		for _, n := range fieldNames {
			if string(p.b[s.start:s.end]) == n {
				return n
			}
		}
	}
	return p.text(s)
}
