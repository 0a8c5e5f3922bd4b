package api

import (
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"strconv"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"

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

// unquote appends what string s decodes to to dst, as encoding/json
// decodes it.
func (p *batchParser) unquote(dst []byte, s span) []byte {
	b := p.b[s.start:s.end]
	if s.plain {
		return append(dst, b...)
	}
	for r := 0; r < len(b); {
		switch c := b[r]; {
		case c == '\\':
			switch b[r+1] {
			case 'b':
				dst = append(dst, '\b')
			case 'f':
				dst = append(dst, '\f')
			case 'n':
				dst = append(dst, '\n')
			case 'r':
				dst = append(dst, '\r')
			case 't':
				dst = append(dst, '\t')
			case 'u':
				rr := hex4(b[r+2:])
				r += 6
				if utf16.IsSurrogate(rr) {
					if r+6 <= len(b) && b[r] == '\\' && b[r+1] == 'u' {
						if dec := utf16.DecodeRune(rr, hex4(b[r+2:])); dec != unicode.ReplacementChar {
							r += 6
							dst = utf8.AppendRune(dst, dec)
							continue
						}
					}
					rr = unicode.ReplacementChar
				}
				dst = utf8.AppendRune(dst, rr)
				continue
			default: // " \ /
				dst = append(dst, b[r+1])
			}
			r += 2
		case c < utf8.RuneSelf:
			dst = append(dst, c)
			r++
		default:
			rr, size := utf8.DecodeRune(b[r:])
			r += size
			dst = utf8.AppendRune(dst, rr)
		}
	}
	return dst
}

// unquotedLen is len(p.unquote(nil, s)), counted.
func (p *batchParser) unquotedLen(s span) int {
	b := p.b[s.start:s.end]
	if s.plain {
		return len(b)
	}
	n := 0
	for r := 0; r < len(b); {
		switch c := b[r]; {
		case c == '\\' && b[r+1] == 'u':
			rr := hex4(b[r+2:])
			r += 6
			if utf16.IsSurrogate(rr) {
				if r+6 <= len(b) && b[r] == '\\' && b[r+1] == 'u' && utf16.DecodeRune(rr, hex4(b[r+2:])) != unicode.ReplacementChar {
					r += 6
					n += 4 // every pair decodes past U+FFFF
					continue
				}
				rr = unicode.ReplacementChar
			}
			n += utf8.RuneLen(rr)
		case c == '\\':
			n++
			r += 2
		case c < utf8.RuneSelf:
			n++
			r++
		default:
			rr, size := utf8.DecodeRune(b[r:])
			r += size
			n += utf8.RuneLen(rr)
		}
	}
	return n
}

// hex4 is the value of four hex digits the scanner has checked.
func hex4(b []byte) rune {
	var r rune
	for _, c := range b[:4] {
		switch {
		case c <= '9':
			c -= '0'
		case c <= 'F':
			c -= 'A' - 10
		default:
			c -= 'a' - 10
		}
		r = r<<4 | rune(c)
	}
	return r
}

// The scanner. Each method starts at a value's first byte (white space
// skipped) and leaves the position after it; on anything that is not
// JSON it sets bad, and the caller stops.

func (p *batchParser) fail() bool {
	p.bad = true
	return false
}

func (p *batchParser) ws() {
	for p.pos < len(p.b) {
		switch p.b[p.pos] {
		case ' ', '\t', '\n', '\r':
			p.pos++
		default:
			return
		}
	}
}

// open enters the object or array at the position.
func (p *batchParser) open() bool {
	p.depth++
	if p.depth > maxDepth {
		return p.fail()
	}
	p.pos++
	return true
}

// member moves to the value of an object's next field and returns the
// field's name, or leaves the object (false) after its last field.
func (p *batchParser) member(first bool) (span, bool) {
	if p.bad {
		return span{}, false
	}
	p.ws()
	if p.pos == len(p.b) {
		return span{}, p.fail()
	}
	switch c := p.b[p.pos]; {
	case c == '}':
		p.pos++
		p.depth--
		return span{}, false
	case c == ',' && !first:
		p.pos++
		p.ws()
	case !first:
		return span{}, p.fail()
	}
	if p.pos == len(p.b) || p.b[p.pos] != '"' {
		return span{}, p.fail()
	}
	key := p.str()
	p.ws()
	if p.bad || p.pos == len(p.b) || p.b[p.pos] != ':' {
		return span{}, p.fail()
	}
	p.pos++
	p.ws()
	if p.pos == len(p.b) {
		return span{}, p.fail()
	}
	return key, true
}

// element moves to an array's next value, or leaves the array (false)
// after its last.
func (p *batchParser) element(first bool, end byte) bool {
	if p.bad {
		return false
	}
	p.ws()
	if p.pos == len(p.b) {
		return p.fail()
	}
	switch c := p.b[p.pos]; {
	case c == end:
		p.pos++
		p.depth--
		return false
	case c == ',' && !first:
		p.pos++
		p.ws()
	case !first:
		return p.fail()
	}
	if p.pos == len(p.b) {
		return p.fail()
	}
	return true
}

// plainByte: a byte of a string that needs no decoding.
var plainByte = func() (t [256]bool) {
	for c := 0x20; c < 0x80; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// plainWord reports whether eight bytes of a string all need no decoding
// (the usual test for a zero byte, on the word xor each special byte).
func plainWord(w uint64) bool {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	quote, backslash := w^(ones*'"'), w^(ones*'\\')
	return ((quote-ones)&^quote|(backslash-ones)&^backslash|(w-ones*0x20)&^w|w)&highs == 0
}

// str scans a string.
func (p *batchParser) str() span {
	b := p.b
	i := p.pos + 1
	s := span{start: i, set: true, plain: true}
	for {
		// Eight bytes at a time while none needs a look, then one by one.
		for i+8 <= len(b) && plainWord(binary.LittleEndian.Uint64(b[i:])) {
			i += 8
		}
		for i < len(b) && plainByte[b[i]] {
			i++
		}
		if i == len(b) {
			p.fail()
			return span{}
		}
		switch c := b[i]; {
		case c == '"':
			s.end = i
			p.pos = i + 1
			return s
		case c == '\\':
			s.plain = false
			if i+1 == len(b) {
				p.fail()
				return span{}
			}
			switch b[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if i+6 > len(b) {
					p.fail()
					return span{}
				}
				for _, h := range b[i+2 : i+6] {
					if !('0' <= h && h <= '9' || 'a' <= h && h <= 'f' || 'A' <= h && h <= 'F') {
						p.fail()
						return span{}
					}
				}
				i += 6
			default:
				p.fail()
				return span{}
			}
		case c < 0x20:
			p.fail()
			return span{}
		default: // 0x80 and above: encoding/json checks it is UTF-8
			s.plain = false
			i++
		}
	}
}

// number scans a number.
func (p *batchParser) number() span {
	b, i := p.b, p.pos
	digits := func() bool {
		j := i
		for i < len(b) && '0' <= b[i] && b[i] <= '9' {
			i++
		}
		return i > j
	}
	if i < len(b) && b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case !digits():
		p.fail()
		return span{}
	}
	if i < len(b) && b[i] == '.' {
		i++
		if !digits() {
			p.fail()
			return span{}
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if !digits() {
			p.fail()
			return span{}
		}
	}
	s := span{start: p.pos, end: i, set: true}
	p.pos = i
	return s
}

// literal scans true, false or null.
func (p *batchParser) literal() bool {
	var w string
	switch p.b[p.pos] {
	case 't':
		w = "true"
	case 'f':
		w = "false"
	default:
		w = "null"
	}
	if len(p.b)-p.pos < len(w) || string(p.b[p.pos:p.pos+len(w)]) != w {
		return p.fail()
	}
	p.pos += len(w)
	return true
}

// skip scans any value, without recursion: a stack holds the arrays and
// objects it is in.
func (p *batchParser) skip() {
	var buf [32]byte
	stack := buf[:0]
	for !p.bad {
		// A value.
		if p.pos == len(p.b) {
			p.fail()
			return
		}
		switch c := p.b[p.pos]; c {
		case '{', '[':
			if !p.open() {
				return
			}
			stack = append(stack, c)
			if c == '{' {
				if _, ok := p.member(true); !ok {
					stack = stack[:len(stack)-1]
					break
				}
			} else if !p.element(true, ']') {
				stack = stack[:len(stack)-1]
				break
			}
			continue
		case '"':
			p.str()
		case 't', 'f', 'n':
			p.literal()
		default:
			p.number()
		}
		// After a value: the next of its array or object, or their ends.
		for !p.bad {
			if len(stack) == 0 {
				return
			}
			if stack[len(stack)-1] == '{' {
				if _, ok := p.member(false); ok {
					break
				}
			} else if p.element(false, ']') {
				break
			}
			stack = stack[:len(stack)-1]
		}
	}
}
