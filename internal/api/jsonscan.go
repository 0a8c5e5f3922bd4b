package api

import (
	"encoding/binary"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"
)

// The JSON scanner under the batch decoder (batchparse.go): it checks what
// encoding/json's scanner checks, and decodes strings as encoding/json
// does.

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
