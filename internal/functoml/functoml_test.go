package functoml

import (
	"errors"
	"flag"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden .out.toml files")

const newID = "7c9e6679-7425-40de-944b-e07fc1f90ae7"

func TestSetKVBindingGolden(t *testing.T) {
	cases := []struct {
		file, name string
	}{
		{"seed", "MY_CACHE"},            // replace the id, keep its comment
		{"add-second", "SESSION_STORE"}, // new table after the last binding
		{"missing-id", "MY_CACHE"},      // id added below the header
		{"empty", "MY_CACHE"},           // new file content
		{"no-final-newline", "MY_CACHE"},
		{"crlf", "SESSIONS"},   // CRLF kept, new lines in CRLF
		{"dotted", "MY_CACHE"}, // dotted key, literal string replaced
		{"tricky", "MY_CACHE"}, // brackets inside arrays and strings are not headers
		{"quoted-header", "MY_CACHE"},
	}
	for _, tc := range cases {
		t.Run(tc.file, func(t *testing.T) {
			in, err := os.ReadFile(filepath.Join("testdata", tc.file+".in.toml"))
			if err != nil {
				t.Fatal(err)
			}
			got, err := SetKVBinding(in, tc.name, newID)
			if err != nil {
				t.Fatalf("SetKVBinding: %v", err)
			}
			golden := filepath.Join("testdata", tc.file+".out.toml")
			if *update {
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != string(want) {
				t.Fatalf("SetKVBinding(%s, %s) =\n%s\nwant (%s)\n%s", tc.file, tc.name, got, golden, want)
			}
			bindings, err := Parse(got)
			if err != nil || !slices.Contains(bindings, Binding{Name: tc.name, ID: newID}) {
				t.Fatalf("Parse(result) = %v, %v; want %s = %s among them", bindings, err, tc.name, newID)
			}
			again, err := SetKVBinding(got, tc.name, newID)
			if err != nil || string(again) != string(got) {
				t.Fatalf("setting the same binding again changed the file:\n%s", again)
			}
			// Every line of the input survives, in order, except a replaced id.
			assertKeepsLines(t, string(in), string(got))
		})
	}
}

// assertKeepsLines checks that the lines of in appear in out in order,
// allowing only lines that mention an id to differ.
func assertKeepsLines(t *testing.T, in, out string) {
	t.Helper()
	outLines := strings.Split(out, "\n")
	j := 0
	for _, l := range strings.Split(in, "\n") {
		for j < len(outLines) && outLines[j] != l {
			j++
		}
		if j == len(outLines) {
			if strings.Contains(l, "id") {
				j = 0 // a replaced id line; look for the next line from the start
				continue
			}
			t.Fatalf("line %q of the input is missing from the output", l)
		}
	}
}

func TestSetKVBindingRefuses(t *testing.T) {
	cases := []struct {
		name, src, binding, want string
	}{
		{"bad name", "", "my_cache", "^[A-Z][A-Z0-9_]*$"},
		{"bad name digit", "", "1CACHE", "^[A-Z][A-Z0-9_]*$"},
		{"invalid toml", "[edge_compute\nx = 1\n", "MY_CACHE", "not valid TOML: line 1"},
		{"inline table", "[storage.kv]\nMY_CACHE = { id = \"x\" }\n", "MY_CACHE", "line 2"},
		{"storage is a string", "storage = \"s3\"\n", "MY_CACHE", "by hand"},
		{"kv is inline", "[storage]\nkv = { OTHER = { id = \"x\" } }\n", "MY_CACHE", "by hand"},
		{"multi-line id", "[storage.kv.MY_CACHE]\nid = \"\"\"\nx\"\"\"\n", "MY_CACHE", "multi-line"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out, err := SetKVBinding([]byte(tc.src), tc.binding, newID)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("SetKVBinding = %q, %v; want an error containing %q", out, err, tc.want)
			}
		})
	}
}

func TestParse(t *testing.T) {
	src := `
[edge_compute]
func_name = "f"

[storage.kv.SESSIONS]
id = "660F9500-F39C-41E5-B817-557766551111"

[storage.kv.MY_CACHE]
id = "550e8400-e29b-41d4-a716-446655440000"
`
	got, err := Parse([]byte(src))
	want := []Binding{{"MY_CACHE", "550e8400-e29b-41d4-a716-446655440000"}, {"SESSIONS", "660f9500-f39c-41e5-b817-557766551111"}}
	if err != nil || !slices.Equal(got, want) {
		t.Fatalf("Parse = %v, %v; want %v", got, err, want)
	}
	if got, err := Parse([]byte("[edge_compute]\nfunc_name = \"f\"\n")); err != nil || len(got) != 0 {
		t.Fatalf("Parse without bindings = %v, %v", got, err)
	}
	for _, bad := range []string{"[storage.kv.X]\nname = \"no id\"\n", "[storage.kv]\nX = 1\n", "[storage]\nkv = 1\n", "[x"} {
		if _, err := Parse([]byte(bad)); err == nil {
			t.Errorf("Parse(%q) succeeded; want an error", bad)
		}
	}
}

// A hostile func.toml cannot smuggle a command or a terminal sequence
// through a binding: names and ids are checked, and the error names the
// binding and the file.
func TestParseRefusesBadBindings(t *testing.T) {
	cases := []struct{ name, src, want string }{
		{"id with a command", "[storage.kv.MY_CACHE]\nid = \"`touch pwned`\"\n", `binding MY_CACHE: id "` + "`touch pwned`" + `" is not a namespace id`},
		{"id with an escape", "[storage.kv.MY_CACHE]\nid = \"\\u001b]0;owned\\u0007\"\n", `id "\x1b]0;owned\a" is not a namespace id`},
		{"id almost a UUID", "[storage.kv.MY_CACHE]\nid = \"550e8400-e29b-41d4-a716-44665544000g\"\n", "MY_CACHE: id"},
		{"empty id", "[storage.kv.MY_CACHE]\nid = \"\"\n", "MY_CACHE: id"},
		{"name with a command", "[storage.kv.\"X;touch pwned\"]\nid = \"550e8400-e29b-41d4-a716-446655440000\"\n", `[storage.kv."X;touch pwned"]: binding name`},
		{"lowercase name", "[storage.kv.my_cache]\nid = \"550e8400-e29b-41d4-a716-446655440000\"\n", "binding name"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if b, err := Parse([]byte(tc.src)); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Parse = %v, %v; want an error containing %q", b, err, tc.want)
			}
			path := filepath.Join(t.TempDir(), FileName)
			if err := os.WriteFile(path, []byte(tc.src), 0o644); err != nil {
				t.Fatal(err)
			}
			if _, err := Read(path); err == nil || !strings.HasPrefix(err.Error(), path+": ") || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Read: err = %v; want it to name %s and say %q", err, path, tc.want)
			}
		})
	}
	if _, err := SetKVBinding(nil, "MY_CACHE", "$(touch pwned)"); err == nil || !strings.Contains(err.Error(), "not a namespace id") {
		t.Fatalf("SetKVBinding with a bad id: err = %v; want a refusal", err)
	}
	out, err := SetKVBinding(nil, "MY_CACHE", "550E8400-E29B-41D4-A716-446655440000")
	if err != nil || !strings.Contains(string(out), `"550e8400-e29b-41d4-a716-446655440000"`) {
		t.Fatalf("SetKVBinding with an uppercase UUID = %q, %v; want it written in lowercase", out, err)
	}
}

func TestWriteBinding(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, FileName)
	if _, err := Read(path); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Read of a missing file: err = %v; want fs.ErrNotExist", err)
	}
	const a, b = "550e8400-e29b-41d4-a716-446655440000", "660f9500-f39c-41e5-b817-557766551111"
	changed, err := WriteBinding(path, "MY_CACHE", a)
	if err != nil || !changed {
		t.Fatalf("WriteBinding on a missing file = %v, %v", changed, err)
	}
	if data, _ := os.ReadFile(path); string(data) != "[storage.kv.MY_CACHE]\nid = \""+a+"\"\n" {
		t.Fatalf("new func.toml = %q", data)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		t.Fatal(err)
	}
	if changed, err := WriteBinding(path, "MY_CACHE", a); err != nil || changed {
		t.Fatalf("rewriting the same binding = %v, %v; want unchanged", changed, err)
	}
	if changed, err := WriteBinding(path, "OTHER", b); err != nil || !changed {
		t.Fatalf("WriteBinding(OTHER) = %v, %v", changed, err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode after rewrite = %v, %v; want 0600 kept", fi.Mode(), err)
	}
	got, err := Read(path)
	if want := []Binding{{"MY_CACHE", a}, {"OTHER", b}}; err != nil || !slices.Equal(got, want) {
		t.Fatalf("Read = %v, %v; want %v", got, err, want)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("directory holds %d entries; want only func.toml (no temp files left)", len(entries))
	}
}

func FuzzSetKVBinding(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("testdata", "*.in.toml"))
	for _, name := range files {
		data, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(string(data))
	}
	f.Add("a = [\n  '''\n]'''\n]\n[storage.kv.X]\nid='y'")
	f.Fuzz(func(t *testing.T, src string) {
		out, err := SetKVBinding([]byte(src), "MY_CACHE", newID)
		if err != nil {
			return
		}
		if _, err := Parse([]byte(src)); err == nil {
			bindings, err := Parse(out)
			if err != nil || !slices.Contains(bindings, Binding{"MY_CACHE", newID}) {
				t.Fatalf("result lacks the binding: %v, %v\n%s", bindings, err, out)
			}
		}
		again, err := SetKVBinding(out, "MY_CACHE", newID)
		if err != nil || string(again) != string(out) {
			t.Fatalf("not idempotent: %v\n%s\n---\n%s", err, out, again)
		}
	})
}
