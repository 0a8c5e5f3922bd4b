package functoml

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// document is the line structure of a TOML file: enough to find table
// headers and key/value statements, and where each statement's value
// starts, without re-serializing anything.
type document struct {
	src     string
	nl      string // the file's line ending: "\n" or "\r\n"
	lines   []lineSpan
	headers []header
	stmts   []statement
}

// lineSpan locates one line: src[start:end] is its text without the line
// ending; next is where the following line starts.
type lineSpan struct{ start, end, next int }

type header struct {
	line  int
	path  []string
	array bool // [[array.of.tables]]
}

// statement is a key/value pair; path is the full key (table plus dotted
// key) and valueAt the offset in src where the value begins. A value may
// continue over lines (multi-line strings and arrays) up to lastLine.
type statement struct {
	line, lastLine int
	path           []string
	valueAt        int
}

// valueState tracks the constructs a value can stay open in across lines.
type valueState struct {
	mlBasic, mlLiteral bool
	depth              int // open [ and { of arrays and inline tables
}

func (v *valueState) open() bool { return v.mlBasic || v.mlLiteral || v.depth > 0 }

// scan reads the line structure of src, which should be valid TOML.
func scan(src string) (*document, error) {
	d := &document{src: src, nl: "\n"}
	if i := strings.IndexByte(src, '\n'); i > 0 && src[i-1] == '\r' {
		d.nl = "\r\n"
	}
	for pos := 0; pos < len(src); {
		i := strings.IndexByte(src[pos:], '\n')
		if i < 0 {
			d.lines = append(d.lines, lineSpan{pos, len(src), len(src)})
			break
		}
		end := pos + i
		next := end + 1
		if end > pos && src[end-1] == '\r' {
			end--
		}
		d.lines = append(d.lines, lineSpan{pos, end, next})
		pos = next
	}

	var state valueState
	var table []string
	for n, ls := range d.lines {
		text := d.src[ls.start:ls.end]
		if state.open() {
			state.scan(text)
			d.stmts[len(d.stmts)-1].lastLine = n
			continue
		}
		i := 0
		if n == 0 {
			i = len(text) - len(strings.TrimPrefix(text, "\uFEFF"))
		}
		i = skipSpace(text, i)
		if i == len(text) || text[i] == '#' {
			continue
		}
		fail := func(what string) error { return fmt.Errorf("func.toml line %d: %s", n+1, what) }
		if text[i] == '[' {
			array := strings.HasPrefix(text[i:], "[[")
			j := i + 1
			if array {
				j++
			}
			path, k, err := parseKey(text, j)
			if err != nil {
				return nil, fail(err.Error())
			}
			k = skipSpace(text, k)
			closing := "]"
			if array {
				closing = "]]"
			}
			if !strings.HasPrefix(text[k:], closing) {
				return nil, fail("unterminated table header")
			}
			k = skipSpace(text, k+len(closing))
			if k < len(text) && text[k] != '#' {
				return nil, fail("unexpected text after the table header")
			}
			d.headers = append(d.headers, header{line: n, path: path, array: array})
			table = path
			continue
		}
		path, k, err := parseKey(text, i)
		if err != nil {
			return nil, fail(err.Error())
		}
		k = skipSpace(text, k)
		if k == len(text) || text[k] != '=' {
			return nil, fail("expected '=' after the key")
		}
		k = skipSpace(text, k+1)
		full := append(slices.Clone(table), path...)
		d.stmts = append(d.stmts, statement{line: n, lastLine: n, path: full, valueAt: ls.start + k})
		state.scan(text[k:])
	}
	if state.open() {
		return nil, errors.New("func.toml: a value is not terminated")
	}
	return d, nil
}

// scan advances the state over one line of a value.
func (v *valueState) scan(s string) {
	for i := 0; i < len(s); {
		switch {
		case v.mlBasic:
			if s[i] == '\\' {
				i += 2
				continue
			}
			if strings.HasPrefix(s[i:], `"""`) {
				v.mlBasic = false
				i += 3
				for extra := 0; extra < 2 && i < len(s) && s[i] == '"'; extra++ {
					i++
				}
				continue
			}
			i++
		case v.mlLiteral:
			if strings.HasPrefix(s[i:], `'''`) {
				v.mlLiteral = false
				i += 3
				for extra := 0; extra < 2 && i < len(s) && s[i] == '\''; extra++ {
					i++
				}
				continue
			}
			i++
		default:
			switch s[i] {
			case '#':
				return
			case '"':
				if strings.HasPrefix(s[i:], `"""`) {
					v.mlBasic = true
					i += 3
					continue
				}
				i = endOfBasic(s, i) + 1
				continue
			case '\'':
				if strings.HasPrefix(s[i:], `'''`) {
					v.mlLiteral = true
					i += 3
					continue
				}
				if j := strings.IndexByte(s[i+1:], '\''); j >= 0 {
					i += j + 2
				} else {
					i = len(s)
				}
				continue
			case '[', '{':
				v.depth++
			case ']', '}':
				v.depth--
			}
			i++
		}
	}
}

// endOfBasic returns the index of the quote closing the basic string that
// opens at s[i] (len(s) if it does not close on the line).
func endOfBasic(s string, i int) int {
	for j := i + 1; j < len(s); j++ {
		switch s[j] {
		case '\\':
			j++
		case '"':
			return j
		}
	}
	return len(s)
}

func skipSpace(s string, i int) int {
	for i < len(s) && (s[i] == ' ' || s[i] == '\t') {
		i++
	}
	return i
}

func isBare(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-'
}

// parseKey reads a possibly dotted, possibly quoted key starting at s[i]
// and returns its parts and the index after it.
func parseKey(s string, i int) ([]string, int, error) {
	var parts []string
	for {
		i = skipSpace(s, i)
		if i >= len(s) {
			return nil, i, errors.New("expected a key")
		}
		var part string
		switch s[i] {
		case '"':
			j := endOfBasic(s, i)
			if j >= len(s) {
				return nil, i, errors.New("unterminated quoted key")
			}
			p, err := strconv.Unquote(s[i : j+1])
			if err != nil {
				p = s[i+1 : j]
			}
			part, i = p, j+1
		case '\'':
			j := strings.IndexByte(s[i+1:], '\'')
			if j < 0 {
				return nil, i, errors.New("unterminated quoted key")
			}
			part, i = s[i+1:i+1+j], i+j+2
		default:
			j := i
			for j < len(s) && isBare(s[j]) {
				j++
			}
			if j == i {
				return nil, i, fmt.Errorf("unexpected %q where a key should be", s[i])
			}
			part, i = s[i:j], j
		}
		parts = append(parts, part)
		i = skipSpace(s, i)
		if i < len(s) && s[i] == '.' {
			i++
			continue
		}
		return parts, i, nil
	}
}

// valueToken returns the span of the single-line value starting at
// src[at]: a quoted string, or a bare token.
func valueToken(src string, at int) (start, end int, err error) {
	s := src[at:]
	switch {
	case s == "":
		return 0, 0, errors.New("the value is missing")
	case strings.HasPrefix(s, `"""`), strings.HasPrefix(s, `'''`):
		return 0, 0, errors.New("the id is a multi-line string")
	case s[0] == '"':
		j := endOfBasic(s, 0)
		if j >= len(s) || s[j] != '"' {
			return 0, 0, errors.New("the id string is not terminated")
		}
		return at, at + j + 1, nil
	case s[0] == '\'':
		j := strings.IndexByte(s[1:], '\'')
		if j < 0 {
			return 0, 0, errors.New("the id string is not terminated")
		}
		return at, at + j + 2, nil
	}
	j := 0
	for j < len(s) && !strings.ContainsRune(" \t#\r\n", rune(s[j])) {
		j++
	}
	return at, at + j, nil
}
