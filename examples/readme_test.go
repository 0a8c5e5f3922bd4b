package examples

import (
	"bufio"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/edgekv/kv/internal/kvdtest"
)

// readmeMarker precedes each shell block of README.md that TestREADME runs.
const readmeMarker = "<!-- readme-test: run -->"

// readmeBlocks returns the marked shell blocks of README.md, in order.
func readmeBlocks(t *testing.T) []string {
	t.Helper()
	f, err := os.Open("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var blocks []string
	var b *strings.Builder
	marked := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case b != nil && line == "```":
			blocks = append(blocks, b.String())
			b = nil
		case b != nil:
			b.WriteString(line + "\n")
		case line == readmeMarker:
			marked = true
		case marked && line == "```sh":
			b, marked = &strings.Builder{}, false
		case marked && strings.TrimSpace(line) != "":
			t.Fatalf("README.md: %s is not followed by a ```sh block but by %q", readmeMarker, line)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return blocks
}

// readmeRun runs block with bash -e -o pipefail in dir, as a user who
// pastes it runs it (but stopping at the first failure), with kvd's
// address in place of the README's. It reports the output, the exit code,
// and whether it had to be killed.
func readmeRun(t *testing.T, block, addr, dir string, env []string) (string, int, bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-e", "-o", "pipefail", "-c", strings.ReplaceAll(block, "127.0.0.1:8080", addr))
	cmd.Dir, cmd.Env = dir, env
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	switch {
	case ctx.Err() != nil:
		return string(out), -1, true
	case errors.As(err, &ee):
		return string(out), ee.ExitCode(), false
	case err != nil:
		t.Fatal(err)
	}
	return string(out), 0, false
}

// TestREADME runs the README's quick start, its JavaScript section and its
// CLI section against a real kvd, twice in a row, as a new user pasting
// them would: each must succeed both times. With a wrong token, or no kvd
// listening, each must stop with a clear message and a non-zero exit,
// never hang.
func TestREADME(t *testing.T) {
	blocks := readmeBlocks(t)
	if len(blocks) != 6 {
		t.Fatalf("README.md has %d blocks marked %s; want the quick start, the JavaScript section, the session counter, the CLI section, the conditional writes and the watch", len(blocks), readmeMarker)
	}
	quick, js, session, cli, cas, watch := blocks[0], blocks[1], blocks[2], blocks[3], blocks[4], blocks[5]
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("no bash")
	}
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("no curl; apt-get install curl to run the README's blocks")
	}
	node, nodeErr := exec.LookPath("node")
	if nodeErr != nil && os.Getenv("KV_REQUIRE_NODE") == "1" {
		t.Fatal("node is required (KV_REQUIRE_NODE=1) but not on PATH")
	}

	tmp := t.TempDir()
	bin, home, work := filepath.Join(tmp, "bin"), filepath.Join(tmp, "home"), filepath.Join(tmp, "work")
	for _, d := range []string{bin, home, work} {
		os.MkdirAll(d, 0o700)
	}
	if out, err := exec.Command("go", "build", "-o", bin, "../cmd/telnyx-edge").CombinedOutput(); err != nil {
		t.Fatalf("go build telnyx-edge: %v\n%s", err, out)
	}
	env := append(os.Environ(), "HOME="+home, "PATH="+bin+string(os.PathListSeparator)+os.Getenv("PATH"))
	env = append(env, "TELNYX_API_KEY=", "TELNYX_BASE_URL=")

	srv := kvdtest.Start(t, kvdtest.WithAPIKey("dev-key"))
	addr := strings.TrimPrefix(srv.URL, "http://")
	root, _ := filepath.Abs("..")
	for round := 1; round <= 2; round++ {
		for _, c := range []struct {
			name, block, dir string
			want             []string
		}{
			{"quick start", quick, work, []string{"namespace ", "201\n", `{"name": "Alice"}`, "200\n", `"deleting"`}},
			{"JavaScript", js, root, []string{`{"name":"Alice 👋"}` + "\nnull\n"}},
			{"session counter", session, root, []string{`"views":8}`}},
			{"CLI", cli, work, []string{"Alice 👋", "Created key user/avatar", "was not written: its ETag is", "exit 4\n", "Wrote 2 keys, ", "Deleted 1 key from ", "my function would read namespace "}},
			{"conditional writes", cas, work, []string{"201\n412\n200\n", `"code":"10035"`, "\n412\n200\n", `"committed":true`, `"op":"incr","key":"views/abc","value":1,`}},
			{"watch", watch, work, []string{`"key":"flags/beta"`, `"value":"on"`, "event: ready", `"key":"flags/dark-mode"`, "event: delete"}},
		} {
			if (c.name == "JavaScript" || c.name == "session counter") && nodeErr != nil {
				t.Logf("no node (%s): the JavaScript block is not run", node)
				continue
			}
			out, code, hung := readmeRun(t, c.block, addr, c.dir, env)
			if os.Getenv("KV_README_SHOW") == "1" {
				t.Logf("%s:\n%s", c.name, out)
			}
			if hung || code != 0 {
				t.Fatalf("round %d, the README's %s: exit %d (killed: %v)\n%s", round, c.name, code, hung, out)
			}
			for _, w := range c.want {
				if !strings.Contains(out, w) {
					t.Errorf("round %d, the README's %s: the output lacks %q\n%s", round, c.name, w, out)
				}
			}
		}
	}

	// A wrong token and a kvd that is not there: a clear stop, not a hang.
	down := kvdtest.FreeAddr(t)
	for _, c := range []struct {
		name, block, addr, want string
	}{
		{"quick start, wrong token", strings.ReplaceAll(quick, "dev-key", "wrong-key"), addr, "401"},
		{"quick start, no kvd", quick, down, "onnect"},
		{"CLI, wrong token", strings.ReplaceAll(cli, "dev-key", "wrong-key"), addr, "key"},
		{"CLI, no kvd", cli, down, "127.0.0.1"},
		{"conditional writes, wrong token", strings.ReplaceAll(cas, "dev-key", "wrong-key"), addr, "401"},
		{"watch, wrong token", strings.ReplaceAll(watch, "dev-key", "wrong-key"), addr, "401"},
	} {
		out, code, hung := readmeRun(t, c.block, c.addr, work, env)
		if hung || code == 0 {
			t.Errorf("the README's %s: exit %d (killed: %v); want a non-zero exit\n%s", c.name, code, hung, out)
		}
		if !strings.Contains(out, c.want) {
			t.Errorf("the README's %s does not say what is wrong (no %q):\n%s", c.name, c.want, out)
		}
		t.Logf("the README's %s stops with exit %d:\n%s", c.name, code, lastLines(out, 3))
	}
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// TestREADMELinks: every relative link of README.md and ARCHITECTURE.md
// names a file or directory of the repository.
func TestREADMELinks(t *testing.T) {
	link := regexp.MustCompile(`\]\(([^)\s]+)\)`)
	for _, doc := range []string{"../README.md", "../ARCHITECTURE.md"} {
		b, err := os.ReadFile(doc)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, m := range link.FindAllStringSubmatch(string(b), -1) {
			target := m[1]
			if strings.Contains(target, "://") || strings.HasPrefix(target, "#") || strings.HasPrefix(target, "mailto:") {
				continue
			}
			target, _, _ = strings.Cut(target, "#")
			n++
			if rel := filepath.Clean(target); strings.HasPrefix(rel, "..") || filepath.IsAbs(rel) {
				t.Errorf("%s links to %s, outside the repository", doc, m[1])
			} else if _, err := os.Stat(filepath.Join("..", target)); err != nil {
				t.Errorf("%s links to %s, which is not in the repository", doc, m[1])
			}
		}
		t.Logf("%s: %d relative links", doc, n)
	}
}
