package crashtest

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edgekv/kv/internal/kvdtest"
	"github.com/edgekv/kv/internal/pgtest"
)

// kvdBin is the kvd binary the tests run, built once per test binary.
var kvdBin string

func TestMain(m *testing.M) {
	bin, err := buildKVD()
	if err != nil {
		fmt.Fprintln(os.Stderr, "crashtest:", err)
		os.Exit(1)
	}
	kvdBin = bin
	pgtest.Main(m)
}

// buildKVD builds cmd/kvd without the race detector (the child's speed
// decides how many operations a kill cycle sees). pgtest.Main exits the
// process, so the binary goes to one fixed place per user that every run
// replaces atomically, rather than to a new temporary directory each run.
func buildKVD() (string, error) {
	dir := filepath.Join(os.TempDir(), fmt.Sprintf("kvd-crashtest-%d", os.Getuid()))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	return kvdtest.BuildKVD(dir, false)
}

// envInt reads a positive integer from the environment, or def.
func envInt(t *testing.T, name string, def int) int {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		t.Fatalf("%s=%q: want a positive integer", name, v)
	}
	return n
}

// apiKey is the token of the default organization every kvd here accepts.
const apiKey = "crashtest-key"

// kvd is a kvd child process on a store and a loopback address. It can be
// killed and started again on the same store and address.
type kvd struct {
	t     *testing.T
	store string
	addr  string
	args  []string

	cmd    *exec.Cmd
	logs   *kvdtest.SyncBuffer
	exited chan struct{}
	starts int
}

// startKVD starts kvd on store and a free address and waits until it
// serves; it is killed when the test ends.
func startKVD(t *testing.T, store string, args ...string) *kvd {
	t.Helper()
	k := &kvd{t: t, store: store, addr: kvdtest.FreeAddr(t), args: args}
	k.start()
	t.Cleanup(func() {
		if k.running() {
			k.cmd.Process.Kill()
			<-k.exited
		}
	})
	return k
}

func (k *kvd) url() string { return "http://" + k.addr }

func (k *kvd) running() bool {
	if k.cmd == nil {
		return false
	}
	select {
	case <-k.exited:
		return false
	default:
		return true
	}
}

// start runs the process and waits until /healthz answers.
func (k *kvd) start() {
	k.t.Helper()
	args := append([]string{"--listen", k.addr, "--store", k.store, "--access-log=false", "--rate-limit=0", "--log-level", "warn"}, k.args...)
	cmd := exec.Command(kvdBin, args...)
	cmd.Env = append(os.Environ(), "TELNYX_API_KEY="+apiKey)
	k.logs = &kvdtest.SyncBuffer{}
	cmd.Stdout, cmd.Stderr = k.logs, k.logs
	if err := cmd.Start(); err != nil {
		k.t.Fatalf("start kvd: %v", err)
	}
	k.cmd, k.exited = cmd, make(chan struct{})
	go func(done chan struct{}) { cmd.Wait(); close(done) }(k.exited)
	k.starts++
	hc := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := hc.Get(k.url() + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		select {
		case <-k.exited:
			k.t.Fatalf("kvd exited before serving (%v):\n%s", cmd.ProcessState, k.logs)
		case <-time.After(5 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			k.t.Fatalf("kvd on %s did not serve within 30s: %v\n%s", k.addr, err, k.logs)
		}
	}
}

// kill ends the process with SIGKILL: no request in flight completes, no
// buffer is flushed, nothing is closed.
func (k *kvd) kill() {
	k.cmd.Process.Signal(syscall.SIGKILL)
	<-k.exited
}

// stop ends the process with SIGTERM and expects a clean exit.
func (k *kvd) stop() {
	k.t.Helper()
	k.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-k.exited:
	case <-time.After(30 * time.Second):
		k.cmd.Process.Kill()
		<-k.exited
		k.t.Fatalf("kvd did not stop within 30s of SIGTERM:\n%s", k.logs)
	}
	if !k.cmd.ProcessState.Success() {
		k.t.Errorf("kvd exit after SIGTERM: %v\n%s", k.cmd.ProcessState, k.logs)
	}
}

// newHTTPClient is a client with enough idle connections for the test's
// goroutines and a bound on every request.
func newHTTPClient() *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 64
	return &http.Client{Transport: tr, Timeout: 20 * time.Second}
}

// api makes the namespace calls the tests need.
type api struct {
	hc   *http.Client
	base string // without /v2
}

// call sends a request and returns the status and body; a transport error
// is returned as is.
func (a api) call(ctx context.Context, method, path string, body io.Reader) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, a.base+"/v2/storage/kvs"+path, body)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+apiKey)
	resp, err := a.hc.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// namespace returns the status code of GET /v2/storage/kvs/{id} and, when
// it is 200, the namespace's status.
func (a api) namespace(t *testing.T, id string) (int, string) {
	t.Helper()
	code, b, err := a.call(context.Background(), http.MethodGet, "/"+id, nil)
	if err != nil {
		t.Fatalf("get namespace %s: %v", id, err)
	}
	if code != http.StatusOK {
		return code, ""
	}
	var r struct {
		Data struct {
			Status string `json:"status"`
		} `json:"data"`
	}
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatalf("get namespace %s: %v: %s", id, err, b)
	}
	return code, r.Data.Status
}

// createNamespace creates a namespace and waits until it is provision_ok.
func (a api) createNamespace(t *testing.T, name string) string {
	t.Helper()
	code, b, err := a.call(context.Background(), http.MethodPost, "", strings.NewReader(fmt.Sprintf(`{"name":%q}`, name)))
	if err != nil || code != http.StatusCreated {
		t.Fatalf("create namespace %s: %d %v %s", name, code, err, b)
	}
	var r struct {
		Data struct {
			ID string `json:"id"`
		} `json:"data"`
	}
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	a.waitNamespace(t, r.Data.ID, func(code int, status string) bool { return status == "provision_ok" }, "provision_ok")
	return r.Data.ID
}

// waitNamespace polls namespace id until done says so, for at most 30s.
func (a api) waitNamespace(t *testing.T, id string, done func(code int, status string) bool, what string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, status := a.namespace(t, id)
		if done(code, status) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("namespace %s: still %d %q after 30s; want %s", id, code, status, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
