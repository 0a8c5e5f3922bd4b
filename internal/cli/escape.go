package cli

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// esc makes s safe to show on a terminal: control characters (C0, DEL and
// C1), invalid UTF-8 and the invisible characters that reorder or break
// lines are shown as escapes (\x1b, \u009b, \u202e), so that a name, key
// or message from a server cannot move the cursor, retitle the window or
// disguise itself. Everything else is left as it is.
func esc(s string) string {
	i := 0
	for i < len(s) && s[i] >= 0x20 && s[i] < 0x7f {
		i++
	}
	if i == len(s) {
		return s
	}
	var b strings.Builder
	b.WriteString(s[:i])
	for i < len(s) {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case r == '\t':
			b.WriteString(`\t`)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, `\x%02x`, r)
		case r >= 0x80 && r < 0xa0, invisible(r):
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}

// invisible reports the format characters that change how the text around
// them is shown: bidirectional overrides and isolates, line and paragraph
// separators, the byte order mark.
func invisible(r rune) bool {
	switch {
	case r == 0x200e, r == 0x200f, r == 0x061c, r == 0xfeff:
		return true
	case r >= 0x202a && r <= 0x202e, r >= 0x2066 && r <= 0x2069:
		return true
	case r == 0x2028, r == 0x2029:
		return true
	}
	return false
}

// escArgs escapes the string, error and Stringer arguments of a message.
func escArgs(args []any) []any {
	out := make([]any, len(args))
	for i, a := range args {
		switch v := a.(type) {
		case string:
			out[i] = esc(v)
		case error:
			out[i] = esc(v.Error())
		case fmt.Stringer:
			out[i] = esc(v.String())
		default:
			out[i] = a
		}
	}
	return out
}

// escJSON escapes in JSON text the control characters that encoding/json
// leaves raw (DEL and C1, e.g. U+009B, a terminal's CSI) and the invisible
// ones esc escapes. It only ever sees them inside strings, where \uXXXX is
// the same character.
func escJSON(b []byte) []byte {
	clean := true
	for _, c := range b {
		if c == 0x7f || c >= 0x80 {
			clean = false
			break
		}
	}
	if clean {
		return b
	}
	out := make([]byte, 0, len(b)+16)
	for i := 0; i < len(b); {
		r, size := utf8.DecodeRune(b[i:])
		if r == 0x7f || r >= 0x80 && r < 0xa0 || invisible(r) {
			out = fmt.Appendf(out, `\u%04x`, r)
		} else {
			out = append(out, b[i:i+size]...)
		}
		i += size
	}
	return out
}
