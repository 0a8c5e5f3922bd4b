package cli

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgekv/kv/internal/kvdtest"
	"github.com/edgekv/kv/internal/pgtest"
)

// The built telnyx-edge, for tests of what only a real process shows: the
// terminal check on its own stdin, signals, exit codes.
var built struct {
	once sync.Once
	path string
	err  error
}

func telnyxEdge(t *testing.T) string {
	t.Helper()
	built.once.Do(func() {
		dir, err := os.MkdirTemp("", "telnyx-edge-test-")
		if err != nil {
			built.err = err
			return
		}
		built.path = filepath.Join(dir, "telnyx-edge")
		out, err := exec.Command("go", "build", "-o", built.path, "github.com/edgekv/kv/cmd/telnyx-edge").CombinedOutput()
		if err != nil {
			built.err = fmt.Errorf("go build ./cmd/telnyx-edge: %v\n%s", err, out)
		}
	})
	if built.err != nil {
		t.Fatal(built.err)
	}
	return built.path
}

func TestMain(m *testing.M) {
	code := pgtest.Run(m) // stops the PostgreSQL server the export tests start
	if built.path != "" {
		os.RemoveAll(filepath.Dir(built.path))
	}
	os.Exit(code)
}

// process runs the built binary in the harness's directory and
// environment, and records it in the transcript.
func (h *harness) process(stdin *os.File, args ...string) (*exec.Cmd, *bytes.Buffer, *bytes.Buffer) {
	h.t.Helper()
	cmd := exec.Command(telnyxEdge(h.t), args...)
	cmd.Dir = h.dir
	cmd.Env = h.environ()
	cmd.Stdin = stdin
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	return cmd, &stdout, &stderr
}

// record adds a finished process to the transcript.
func (h *harness) record(note string, args []string, code int, stdout, stderr string) {
	fmt.Fprintf(&h.log, "$ telnyx-edge %s%s\n", quoteArgs(args), note)
	if stdout != "" {
		fmt.Fprintf(&h.log, "%s", withNewline(stdout))
	}
	if stderr != "" {
		fmt.Fprintf(&h.log, "[stderr]\n%s", withNewline(stderr))
	}
	fmt.Fprintf(&h.log, "[exit %d]\n\n", code)
}

func exitCode(err error) int {
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}

// stdin from /dev/null is not a terminal: a deletion is refused (exit 2),
// not asked about.
func TestBinaryStdinDevNull(t *testing.T) {
	h := newHarness(t)
	h.must("", "storage", "kv", "create", "--name", "devnull", "--wait", "--bind", "DEVNULL")
	h.must("", "storage", "kv", "key", "put", "k", "v")
	null, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer null.Close()
	for _, args := range [][]string{{"storage", "kv", "key", "delete", "k"}, {"storage", "kv", "delete", "DEVNULL"}} {
		cmd, stdout, stderr := h.process(null, args...)
		code := exitCode(cmd.Run())
		h.record(" < /dev/null", args, code, stdout.String(), stderr.String())
		if code != ExitUsage || !strings.Contains(stderr.String(), "refusing to delete without confirmation: stdin is not a terminal") || strings.Contains(stderr.String(), "[y/N]") {
			t.Fatalf("%v < /dev/null: exit %d, stderr %q; want the refusal and exit 2", args, code, stderr.String())
		}
	}
	h.must("", "storage", "kv", "key", "get", "k")
	h.checkGolden("devnull.golden")
}

// Ctrl-C during create --wait: exit 130 with "interrupted", after the id of
// the namespace left pending.
func TestBinaryInterrupt(t *testing.T) {
	h := newHarness(t, kvdtest.WithoutBackground())
	args := []string{"storage", "kv", "create", "--name", "left-pending", "--wait"}
	cmd, stdout, _ := h.process(nil, args...)
	var stderr kvdtest.SyncBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(time.Minute)
	for !strings.Contains(stderr.String(), "waiting") {
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatalf("no waiting line after a minute: %q", stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	code := exitCode(cmd.Wait())
	h.record(" # then Ctrl-C (SIGINT)", args, code, stdout.String(), stderr.String())
	if code != ExitInterrupted || !strings.HasSuffix(stderr.String(), "\ninterrupted\n") || strings.Contains(stderr.String(), "Error:") {
		t.Fatalf("after SIGINT: exit %d, stderr %q; want 130 and \"interrupted\"", code, stderr.String())
	}
	if id := uuidRE.FindString(stderr.String()); id == "" {
		t.Fatalf("stderr %q does not name the namespace left pending", stderr.String())
	}
	h.checkGolden("interrupt.golden")
}

// A read of the value from stdin ends when the command is canceled.
func TestInterruptWhileReadingStdin(t *testing.T) {
	h := newHarness(t)
	h.must("", "storage", "kv", "create", "--name", "stdin", "--wait", "--bind", "STDIN")
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	defer r.Close()
	ctx, cancel := context.WithCancel(t.Context())
	reading := &notifyingReader{r: r, first: make(chan struct{})}
	go func() {
		<-reading.first
		cancel()
	}()
	var stdout, stderr bytes.Buffer
	env := Env{Stdin: reading, Stdout: &stdout, Stderr: &stderr, Getenv: func(k string) string { return h.env[k] }, Dir: h.dir}
	code := Run(ctx, env, []string{"storage", "kv", "key", "put", "k", "-"})
	if code != ExitInterrupted || stderr.String() != "interrupted\n" {
		t.Fatalf("exit %d, stderr %q; want 130 and interrupted", code, stderr.String())
	}
	if r := h.run("", "storage", "kv", "key", "get", "k"); r.code != ExitNotFound {
		t.Fatalf("after the interrupted put: key get exit %d; want not found", r.code)
	}
}

// notifyingReader closes first when its first Read begins.
type notifyingReader struct {
	r     io.Reader
	once  sync.Once
	first chan struct{}
}

func (n *notifyingReader) Read(p []byte) (int, error) {
	n.once.Do(func() { close(n.first) })
	return n.r.Read(p)
}

func TestBinaryVersion(t *testing.T) {
	for _, args := range [][]string{{"version"}, {"--version"}} {
		out, err := exec.Command(telnyxEdge(t), args...).Output()
		if err != nil || !strings.HasPrefix(string(out), "telnyx-edge ") || !strings.Contains(string(out), runtime.Version()) || strings.Count(string(out), "\n") != 1 {
			t.Errorf("telnyx-edge %v = %q, %v; want one version line with the Go version", args, out, err)
		}
	}
}
