package httpconn

import (
	"bytes"
)

// framer follows the HTTP/1.x message framing of the bytes a client sends
// on one connection, as net/http reads them: where each header section
// starts and ends, and how long each body is, so that it can say of every
// request what net/http does not tell its handler (a request that carried
// both Content-Length and Transfer-Encoding, whose Content-Length net/http
// silently drops) and how many header bytes a request in progress holds.
//
// It never rejects input: net/http does that. On input it cannot follow
// (which net/http refuses too, or which is too odd to be worth following)
// it is lost, and every later request of the connection is reported as
// unknown, which the handler answers and then closes the connection on.
type framer struct {
	state framerState
	lost  bool

	// The line being read: its first bytes, its last bytes, its length.
	line    [lineKeep]byte
	tail    [tailKeep]byte
	lineLen int

	// The header section being read.
	section   sectionInfo
	inSection bool
	lineNo    int // of the current line within the section; 0 is the request line
	hdrBytes  int // bytes of the section so far

	remain int64 // body or chunk bytes still to skip

	// verdicts of header sections read but not yet taken by a handler,
	// in verdictBuf unless a client sends more than a few requests ahead
	// (so that a request costs no allocation).
	verdicts   []Verdict
	verdictBuf [4]Verdict
}

// lineKeep is how much of a line the framer keeps: enough for the fields
// it reads (Content-Length, Transfer-Encoding) with room for whitespace.
// A longer line of those fields makes the framer lost.
const lineKeep = 128

// tailKeep is how much of a line's end the framer keeps: enough for the
// request line's version (" HTTP/1.1\r\n").
const tailKeep = 16

// maxChunkLine is net/http's limit on a chunk-size line.
const maxChunkLine = 4096

// maxVerdicts bounds the requests a client may have sent ahead of the one
// being served; net/http reads at most a buffer's worth ahead.
const maxVerdicts = 512

type framerState uint8

const (
	stHeader    framerState = iota // a request line or header line
	stBody                         // remain bytes of a Content-Length body
	stChunkSize                    // a chunk-size line
	stChunkData                    // remain bytes of chunk data
	stChunkCR                      // the CR after chunk data
	stChunkLF                      // the LF after chunk data
	stTrailer                      // a trailer line
)

// sectionInfo is what the framer learns from one header section.
type sectionInfo struct {
	http11        bool
	contentLength int64 // -1: none
	clValues      int
	clBad         bool
	teValues      int
	teChunked     bool
	teOther       bool
	lastField     fieldKind // the previous line's field, for obsolete folding
}

type fieldKind uint8

const (
	fieldOther fieldKind = iota
	fieldCL
	fieldTE
)

// Verdict is what the framer saw of one request's header section.
type Verdict struct {
	// Known is false when the framer could not follow the connection.
	Known bool
	// ContentLengthAndChunked: the request carried both Content-Length and
	// Transfer-Encoding, which net/http resolves in favour of the latter;
	// a proxy in front may have done the opposite (request smuggling).
	ContentLengthAndChunked bool
}

// feed follows p, the next bytes read from the client.
func (f *framer) feed(p []byte) {
	for len(p) > 0 && !f.lost {
		switch f.state {
		case stHeader, stTrailer, stChunkSize:
			i := bytes.IndexByte(p, '\n')
			seg := p
			if i >= 0 {
				seg = p[:i+1]
			}
			f.takeLine(seg)
			if f.state == stHeader {
				f.hdrBytes += len(seg)
			}
			p = p[len(seg):]
			if i >= 0 {
				f.endLine()
			}
		case stBody, stChunkData:
			n := min(int64(len(p)), f.remain)
			f.remain -= n
			p = p[n:]
			if f.remain == 0 {
				if f.state == stBody {
					f.state = stHeader
				} else {
					f.state = stChunkCR
				}
			}
		case stChunkCR:
			if p[0] != '\r' {
				f.lose()
				return
			}
			f.state, p = stChunkLF, p[1:]
		case stChunkLF:
			if p[0] != '\n' {
				f.lose()
				return
			}
			f.state, p = stChunkSize, p[1:]
		}
	}
}

// takeLine adds seg, part of the current line, to it.
func (f *framer) takeLine(seg []byte) {
	if f.state == stHeader && !f.inSection {
		f.inSection = true
		f.section = sectionInfo{contentLength: -1}
		f.hdrBytes = 0
		f.lineNo = 0
	}
	if f.lineLen < lineKeep {
		copy(f.line[f.lineLen:], seg)
	}
	if len(seg) >= tailKeep {
		copy(f.tail[:], seg[len(seg)-tailKeep:])
	} else {
		copy(f.tail[:], f.tail[len(seg):])
		copy(f.tail[tailKeep-len(seg):], seg)
	}
	f.lineLen += len(seg)
	if f.state == stChunkSize && f.lineLen > maxChunkLine {
		f.lose()
	}
}

// endLine handles the line just completed (it ends in '\n').
func (f *framer) endLine() {
	n := f.lineLen
	f.lineLen = 0
	if f.state == stHeader {
		defer func() { f.lineNo++ }()
	}
	if f.state == stHeader && f.lineNo == 0 {
		// The request line, however long: its last word is the version.
		f.section.http11 = bytes.HasSuffix(trimEOL(f.tail[tailKeep-min(n, tailKeep):]), []byte(" HTTP/1.1"))
		return
	}
	if n > lineKeep {
		// Too long to have been kept whole: harmless unless it is a field
		// the framer must read.
		switch f.state {
		case stChunkSize:
			f.lose()
		case stHeader:
			if f.section.lastField = fieldKindOf(f.line[:lineKeep]); f.section.lastField != fieldOther {
				f.lose()
			}
		}
		return
	}
	line := trimEOL(f.line[:n])
	switch f.state {
	case stHeader:
		f.headerLine(line)
	case stTrailer:
		if len(line) == 0 {
			f.state = stHeader
		}
	case stChunkSize:
		f.chunkSizeLine(f.line[:n])
	}
}

func trimEOL(b []byte) []byte {
	b = bytes.TrimSuffix(b, []byte{'\n'})
	return bytes.TrimSuffix(b, []byte{'\r'})
}

// headerLine handles a request line or a header field line.
func (f *framer) headerLine(line []byte) {
	s := &f.section
	if len(line) == 0 {
		f.endSection()
		return
	}
	if line[0] == ' ' || line[0] == '\t' {
		// Obsolete line folding continues the previous field.
		if s.lastField != fieldOther {
			f.lose()
		}
		return
	}
	s.lastField = fieldKindOf(line)
	colon := bytes.IndexByte(line, ':')
	if colon < 0 {
		return // net/http refuses it
	}
	value := bytes.Trim(line[colon+1:], " \t")
	switch s.lastField {
	case fieldCL:
		s.clValues++
		n, ok := parseDecimal(value)
		switch {
		case !ok:
			s.clBad = true
		case s.contentLength >= 0 && s.contentLength != n:
			s.clBad = true
		default:
			s.contentLength = n
		}
	case fieldTE:
		s.teValues++
		if bytes.EqualFold(value, []byte("chunked")) {
			s.teChunked = true
		} else {
			s.teOther = true
		}
	}
}

func fieldKindOf(line []byte) fieldKind {
	switch {
	case hasFieldName(line, "content-length"):
		return fieldCL
	case hasFieldName(line, "transfer-encoding"):
		return fieldTE
	}
	return fieldOther
}

func hasFieldName(line []byte, name string) bool {
	return len(line) > len(name) && line[len(name)] == ':' && bytes.EqualFold(line[:len(name)], []byte(name))
}

// parseDecimal parses a Content-Length as net/http does: digits only.
func parseDecimal(b []byte) (int64, bool) {
	if len(b) == 0 || len(b) > 18 {
		return 0, false
	}
	var n int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

// endSection decides the framing of the body that follows a header
// section and records the section's verdict.
func (f *framer) endSection() {
	s := f.section
	f.inSection = false
	f.hdrBytes = 0
	v := Verdict{Known: true, ContentLengthAndChunked: s.clValues > 0 && s.teValues > 0}
	if len(f.verdicts) >= maxVerdicts {
		f.lose()
		return
	}
	if f.verdicts == nil {
		f.verdicts = f.verdictBuf[:0]
	}
	f.verdicts = append(f.verdicts, v)
	switch {
	case s.http11 && s.teValues > 0:
		if s.teValues != 1 || !s.teChunked || s.teOther {
			f.lose() // net/http answers 501 and closes
			return
		}
		f.state = stChunkSize
	case s.clBad:
		f.lose() // net/http answers 400 and closes
	case s.contentLength > 0:
		f.state, f.remain = stBody, s.contentLength
	default:
		f.state = stHeader
	}
}

// chunkSizeLine handles a chunk-size line (which must end in CRLF).
func (f *framer) chunkSizeLine(raw []byte) {
	line, ok := bytes.CutSuffix(raw, []byte("\r\n"))
	if !ok || bytes.IndexByte(line, '\r') >= 0 {
		f.lose()
		return
	}
	if i := bytes.IndexByte(line, ';'); i >= 0 {
		line = line[:i]
	}
	line = bytes.TrimRight(line, " \t")
	if len(line) == 0 || len(line) > 16 {
		f.lose()
		return
	}
	var n int64
	for _, c := range line {
		var d byte
		switch {
		case c >= '0' && c <= '9':
			d = c - '0'
		case c >= 'a' && c <= 'f':
			d = c - 'a' + 10
		case c >= 'A' && c <= 'F':
			d = c - 'A' + 10
		default:
			f.lose()
			return
		}
		n = n<<4 | int64(d)
	}
	if n < 0 {
		f.lose()
		return
	}
	if n == 0 {
		f.state = stTrailer
		return
	}
	f.state, f.remain = stChunkData, n
}

// pending is the number of header bytes of the section being read (0
// between sections).
func (f *framer) pending() int {
	if !f.inSection || f.state != stHeader {
		return 0
	}
	return f.hdrBytes
}

func (f *framer) lose() {
	f.lost = true
	f.inSection = false
	f.hdrBytes = 0
}

// next returns the verdict of the oldest header section not yet taken.
func (f *framer) next() Verdict {
	if len(f.verdicts) == 0 {
		return Verdict{}
	}
	v := f.verdicts[0]
	f.verdicts = f.verdicts[1:]
	if len(f.verdicts) == 0 {
		f.verdicts = f.verdictBuf[:0] // and what a burst of requests grew goes
	}
	return v
}
