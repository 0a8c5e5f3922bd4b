package kvdtest

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

// BuildKVD builds the kvd binary into dir/kvd (with the race detector when
// race is set) for tests that run it as a child process, and returns its
// path. The binary is written next to its final name and renamed, so a
// reader never sees half a file.
func BuildKVD(dir string, race bool) (string, error) {
	bin := filepath.Join(dir, "kvd")
	tmp := fmt.Sprintf("%s.%d", bin, os.Getpid())
	args := []string{"build", "-o", tmp}
	if race {
		args = append(args, "-race")
	}
	out, err := exec.Command("go", append(args, "github.com/edgekv/kv/cmd/kvd")...).CombinedOutput()
	if err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("go build ./cmd/kvd: %v\n%s", err, out)
	}
	return bin, os.Rename(tmp, bin)
}

// FreeAddr returns a loopback address with a port that was free a moment
// ago, for a child process to listen on.
func FreeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// SyncBuffer collects a child's output while the test reads it.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
