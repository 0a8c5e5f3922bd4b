// Package functoml reads the KV bindings of a function's func.toml and adds
// or updates them without disturbing the rest of the file.
//
// A binding is a table
//
//	[storage.kv.MY_CACHE]
//	id = "550e8400-e29b-41d4-a716-446655440000"
//
// that reaches the function as KV_MY_CACHE_ID. Reading parses the file with
// a TOML parser; editing is line-based (see SetKVBinding) so comments, blank
// lines, key order and formatting everywhere else stay byte for byte.
package functoml

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"

	"github.com/pelletier/go-toml/v2"

	"github.com/edgekv/kv"
)

// FileName is the name of the function configuration file.
const FileName = "func.toml"

var bindingNameRE = regexp.MustCompile(`^[A-Z][A-Z0-9_]*$`)

// ValidateBindingName checks a binding name: an uppercase letter followed
// by uppercase letters, digits and underscores (^[A-Z][A-Z0-9_]*$), so that
// KV_<NAME>_ID is a portable environment variable name.
func ValidateBindingName(name string) error {
	if !bindingNameRE.MatchString(name) {
		return fmt.Errorf("binding name %q is invalid: it must match ^[A-Z][A-Z0-9_]*$ (uppercase letters, digits and underscores, starting with a letter), e.g. MY_CACHE", name)
	}
	return nil
}

// EnvName is the environment variable that carries binding name's
// namespace id: KV_<name>_ID.
func EnvName(name string) string { return "KV_" + name + "_ID" }

// Binding is one KV binding of func.toml.
type Binding struct {
	Name string // e.g. MY_CACHE
	ID   string // the namespace id
}

// Parse returns the KV bindings of a func.toml, sorted by name, with their
// ids in canonical (lowercase) form. A file without [storage.kv] tables has
// none. A binding that is not a table with a string id, whose name is not a
// valid binding name, or whose id is not a namespace id (a UUID) is an
// error naming the binding.
func Parse(data []byte) ([]Binding, error) { return parse(data, FileName) }

// Read returns the KV bindings of the func.toml at path, as Parse does; an
// error names the file. A missing file gives an error matching
// fs.ErrNotExist.
func Read(path string) ([]Binding, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return parse(data, path)
}

// parse is Parse with errors naming file.
func parse(data []byte, file string) ([]Binding, error) {
	doc, err := decode(data)
	if err != nil {
		if file != FileName {
			return nil, fmt.Errorf("%s: %w", file, err)
		}
		return nil, err
	}
	storage, ok := doc["storage"]
	if !ok {
		return nil, nil
	}
	st, ok := storage.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("%s: storage must be a table", file)
	}
	kvAny, ok := st["kv"]
	if !ok {
		return nil, nil
	}
	kvs, ok := kvAny.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("%s: storage.kv must be a table of bindings like [storage.kv.MY_CACHE]", file)
	}
	var out []Binding
	for name, v := range kvs {
		if err := ValidateBindingName(name); err != nil {
			return nil, fmt.Errorf("%s: [storage.kv.%s]: %w", file, quoteKey(name), err)
		}
		t, ok := v.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("%s: storage.kv.%s must be a table with an id", file, name)
		}
		idAny, ok := t["id"].(string)
		if !ok {
			return nil, fmt.Errorf("%s: storage.kv.%s needs id = \"<namespace id>\"", file, name)
		}
		parsed, err := kv.ParseID(idAny)
		id := parsed.String()
		if err != nil {
			return nil, fmt.Errorf("%s: binding %s: id %.80q is not a namespace id (a UUID such as 550e8400-e29b-41d4-a716-446655440000)", file, name, idAny)
		}
		out = append(out, Binding{Name: name, ID: id})
	}
	slices.SortFunc(out, func(a, b Binding) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// quoteKey writes a table key for an error: bare when it is a valid binding
// name, else as a quoted TOML-like string with every control character
// escaped.
func quoteKey(k string) string {
	if bindingNameRE.MatchString(k) {
		return k
	}
	return fmt.Sprintf("%.80q", k)
}

func decode(data []byte) (map[string]any, error) {
	doc := map[string]any{}
	if err := toml.Unmarshal(data, &doc); err != nil {
		var de *toml.DecodeError
		if errors.As(err, &de) {
			row, col := de.Position()
			return nil, fmt.Errorf("func.toml is not valid TOML: line %d, column %d: %s", row, col, de.Error())
		}
		return nil, fmt.Errorf("func.toml is not valid TOML: %w", err)
	}
	return doc, nil
}

// WriteBinding sets binding name to id in the func.toml at path, creating
// the file if it does not exist, and reports whether the file changed. The
// file is replaced atomically (through a symlink, its target is), keeping
// its permissions.
func WriteBinding(path, name, id string) (changed bool, err error) {
	if resolved, err := filepath.EvalSymlinks(path); err == nil {
		path = resolved
	}
	mode := fs.FileMode(0o644)
	src, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		src = nil
	case err != nil:
		return false, err
	default:
		if fi, err := os.Stat(path); err == nil {
			mode = fi.Mode().Perm()
		}
	}
	out, err := SetKVBinding(src, name, id)
	if err != nil {
		return false, fmt.Errorf("%s: %w", path, err)
	}
	if src != nil && string(out) == string(src) {
		return false, nil
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".func.toml-*")
	if err != nil {
		return false, err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(out); err != nil {
		tmp.Close()
		return false, err
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return false, err
	}
	if err := tmp.Close(); err != nil {
		return false, err
	}
	return true, os.Rename(tmp.Name(), path)
}

// SetKVBinding returns src with the binding name set to id, which must be a
// namespace id (a UUID; written in canonical lowercase form):
//
//   - if storage.kv.<name>.id is set (in a [storage.kv.<name>] table or as a
//     dotted key), only its value is replaced, keeping the line's key,
//     spacing and comment;
//   - if the table [storage.kv.<name>] exists without an id, the line
//     id = "<id>" is added right below its header;
//   - otherwise a new table is added after the last table under
//     [storage.kv], or at the end of the file.
//
// Every other byte of src is kept, line endings included. src must be valid
// TOML; a binding written in a form this editor does not change (an inline
// table, for one) is refused with the line to edit by hand. The result is
// checked by parsing it: it must decode to src's document with exactly that
// one value set.
func SetKVBinding(src []byte, name, id string) ([]byte, error) {
	if err := ValidateBindingName(name); err != nil {
		return nil, err
	}
	parsed, err := kv.ParseID(id)
	if err != nil {
		return nil, fmt.Errorf("binding %s: id %.80q is not a namespace id (a UUID such as 550e8400-e29b-41d4-a716-446655440000)", name, id)
	}
	id = parsed.String()
	before, err := decode(src)
	if err != nil {
		return nil, err
	}
	doc, err := scan(string(src))
	if err != nil {
		return nil, err
	}
	out, err := doc.setBinding(name, id)
	if err != nil {
		return nil, err
	}
	after, err := decode([]byte(out))
	if err != nil {
		return nil, fmt.Errorf("editing func.toml would make it invalid (%v); add [storage.kv.%s] with id = %s by hand", err, name, quote(id))
	}
	if err := setPath(before, []string{"storage", "kv", name, "id"}, id); err != nil {
		return nil, err
	}
	if !reflect.DeepEqual(before, after) {
		return nil, fmt.Errorf("func.toml: could not set storage.kv.%s.id without changing other values; set it by hand", name)
	}
	return []byte(out), nil
}

// setPath sets doc[path...] = v, creating tables on the way.
func setPath(doc map[string]any, path []string, v any) error {
	for i, k := range path[:len(path)-1] {
		next, ok := doc[k]
		if !ok {
			m := map[string]any{}
			doc[k] = m
			doc = m
			continue
		}
		m, ok := next.(map[string]any)
		if !ok {
			return fmt.Errorf("func.toml: %s is not a table", strings.Join(path[:i+1], "."))
		}
		doc = m
	}
	doc[path[len(path)-1]] = v
	return nil
}

func (d *document) setBinding(name, id string) (string, error) {
	table := []string{"storage", "kv", name}
	idPath := append(slices.Clone(table), "id")
	src := d.src

	for _, st := range d.stmts {
		if slices.Equal(st.path, idPath) {
			start, end, err := valueToken(src, st.valueAt)
			if err != nil {
				return "", fmt.Errorf("func.toml line %d: %v; set storage.kv.%s.id by hand", st.line+1, err, name)
			}
			return src[:start] + quote(id) + src[end:], nil
		}
	}
	for _, h := range d.headers {
		if !h.array && slices.Equal(h.path, table) {
			at := d.lines[h.line].next
			insert := "id = " + quote(id) + d.nl
			if d.lines[h.line].next == d.lines[h.line].end { // header on the last line, no newline
				insert = d.nl + insert
			}
			return src[:at] + insert + src[at:], nil
		}
	}
	for _, st := range d.stmts {
		if hasPrefix(st.path, table) {
			return "", fmt.Errorf("func.toml line %d defines storage.kv.%s in a form this tool does not edit; set its id = %s by hand", st.line+1, name, quote(id))
		}
	}
	for _, h := range d.headers {
		if hasPrefix(h.path, table) {
			return "", fmt.Errorf("func.toml line %d defines a table under storage.kv.%s; add id = %s to [storage.kv.%s] by hand", h.line+1, name, quote(id), name)
		}
	}

	block := "[storage.kv." + name + "]" + d.nl + "id = " + quote(id) + d.nl
	// After the last table under storage.kv, so bindings stay together.
	last := -1
	for i, h := range d.headers {
		if hasPrefix(h.path, []string{"storage", "kv"}) {
			last = i
		}
	}
	if last >= 0 {
		endLine := d.sectionEnd(last)
		if endLine < len(d.lines)-1 || d.lines[endLine].next != d.lines[endLine].end {
			at := d.lines[endLine].next
			return src[:at] + d.nl + block + src[at:], nil
		}
	}
	// At the end of the file, after a blank line.
	out := src
	if out != "" && !strings.HasSuffix(out, "\n") {
		out += d.nl
	}
	if strings.TrimSpace(out) != "" && !endsWithBlankLine(out) {
		out += d.nl
	}
	return out + block, nil
}

// endsWithBlankLine reports whether s (ending in a newline) ends with an
// empty or whitespace-only line.
func endsWithBlankLine(s string) bool {
	s = strings.TrimSuffix(strings.TrimSuffix(s, "\n"), "\r")
	i := strings.LastIndexByte(s, '\n')
	return strings.TrimSpace(s[i+1:]) == ""
}

// sectionEnd returns the line after which a new table goes to follow the
// section of header number h: its last non-blank line, not counting a
// comment block attached to the next header (which describes that header).
func (d *document) sectionEnd(h int) int {
	start := d.headers[h].line
	stop := len(d.lines)
	if h+1 < len(d.headers) {
		stop = d.headers[h+1].line
	}
	inValue := make(map[int]bool) // continuation lines of multi-line values
	for _, st := range d.stmts {
		for l := st.line + 1; l <= st.lastLine; l++ {
			inValue[l] = true
		}
	}
	text := func(l int) string { return strings.TrimSpace(d.src[d.lines[l].start:d.lines[l].end]) }
	end := stop - 1
	if stop < len(d.lines) {
		for end > start && !inValue[end] && strings.HasPrefix(text(end), "#") {
			end--
		}
	}
	for end > start && !inValue[end] && text(end) == "" {
		end--
	}
	for _, st := range d.stmts {
		if st.line <= end && end < st.lastLine {
			end = st.lastLine
		}
	}
	return end
}

func hasPrefix(path, prefix []string) bool {
	return len(path) >= len(prefix) && slices.Equal(path[:len(prefix)], prefix)
}

// quote writes s as a TOML basic string.
func quote(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"':
			b.WriteString(`\"`)
		case r == '\\':
			b.WriteString(`\\`)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\t':
			b.WriteString(`\t`)
		case r == '\r':
			b.WriteString(`\r`)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, `\u%04X`, r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}
