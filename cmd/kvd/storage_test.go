package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/edgekv/kv/internal/kvdtest"
)

// The tests here run the real kvd on stores that are damaged, on small
// file systems they fill, and with too few file descriptors. Mounting needs
// root (CI runs the tests as root); they skip where it is not allowed.

// mountTmpfs mounts a tmpfs of size bytes for the test and returns its
// path.
func mountTmpfs(t *testing.T, size int64) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a small file system (tmpfs) to fill")
	}
	dir := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%d,mode=0755", size), "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs here (%v: %s); these tests need root and permission to mount", err, bytes.TrimSpace(out))
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", "-l", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	return dir
}

func freeSpace(t *testing.T, dir string) int64 {
	t.Helper()
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	return int64(st.Bavail) * st.Bsize
}

// fillDisk allocates a file in dir that leaves about leave bytes free (as
// close to none as the file system allows for 0), and returns a function
// that removes it. It allocates in steps, since kvd may write meanwhile.
func fillDisk(t *testing.T, dir string, leave int64) (remove func()) {
	t.Helper()
	path := filepath.Join(dir, fmt.Sprintf("filler-%d", time.Now().UnixNano()))
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var size int64
	for {
		n := min(freeSpace(t, dir)-leave, 16<<20)
		if n <= 0 {
			break
		}
		if err := syscall.Fallocate(int(f.Fd()), 0, size, n); err != nil {
			if errors.Is(err, syscall.ENOSPC) {
				break
			}
			t.Fatalf("fallocate: %v", err)
		}
		size += n
	}
	return func() {
		if err := os.Remove(path); err != nil {
			t.Fatal(err)
		}
	}
}

// kvd is a kvd process for these tests, and its client.
type kvd struct {
	cmd    *exec.Cmd
	logs   *kvdtest.SyncBuffer
	addr   string
	client *http.Client
	exited chan struct{}
	err    error // set when exited is closed
}

const storageKey = "storage-key"

// runKVD starts kvd on store with args; it waits for /healthz when
// healthy is set.
func runKVD(t *testing.T, store string, healthy bool, args ...string) *kvd {
	t.Helper()
	k := &kvd{addr: kvdtest.FreeAddr(t), client: &http.Client{Timeout: 20 * time.Second}, exited: make(chan struct{})}
	args = append([]string{"--listen", k.addr, "--store", store, "--access-log=false", "--rate-limit=0", "--shutdown-timeout", "5s"}, args...)
	k.cmd = exec.Command(kvdBin, args...)
	k.cmd.Env = append(os.Environ(), "TELNYX_API_KEY="+storageKey)
	k.logs = &kvdtest.SyncBuffer{}
	k.cmd.Stderr = k.logs
	if err := k.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { k.err = k.cmd.Wait(); close(k.exited) }()
	t.Cleanup(func() { k.cmd.Process.Kill(); <-k.exited })
	if healthy {
		waitHealthy(t, k.addr)
	}
	return k
}

// wait waits (generously) for kvd to exit and returns its exit code.
func (k *kvd) wait(t *testing.T, within time.Duration) int {
	t.Helper()
	select {
	case <-k.exited:
	case <-time.After(within):
		t.Fatalf("kvd did not exit within %v\n%s", within, k.logs)
	}
	var ee *exec.ExitError
	if errors.As(k.err, &ee) {
		return ee.ExitCode()
	}
	if k.err != nil {
		t.Fatalf("kvd: %v", k.err)
	}
	return 0
}

func (k *kvd) running() bool {
	select {
	case <-k.exited:
		return false
	default:
		return true
	}
}

// stop sends SIGTERM and returns the exit code.
func (k *kvd) stop(t *testing.T) int {
	t.Helper()
	k.cmd.Process.Signal(syscall.SIGTERM)
	return k.wait(t, 30*time.Second)
}

// do sends a request; a transport error is returned as status 0.
func (k *kvd) do(method, path string, body []byte) (int, []byte, error) {
	req, _ := http.NewRequest(method, "http://"+k.addr+"/v2/storage/kvs"+path, bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+storageKey)
	resp, err := k.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

func (k *kvd) must(t *testing.T, method, path string, body []byte, want int) []byte {
	t.Helper()
	code, b, err := k.do(method, path, body)
	if err != nil || code != want {
		t.Fatalf("%s %s: %d %s, %v; want %d\n%s", method, path, code, b, err, want, k.logs)
	}
	return b
}

// namespace creates a namespace and waits until it is provision_ok.
func (k *kvd) namespace(t *testing.T, name string) string {
	t.Helper()
	var ns struct{ Data struct{ ID, Status string } }
	json.Unmarshal(k.must(t, "POST", "", []byte(`{"name":"`+name+`"}`), 201), &ns)
	deadline := time.Now().Add(30 * time.Second)
	for ns.Data.Status != "provision_ok" {
		if time.Now().After(deadline) {
			t.Fatalf("namespace %s never became provision_ok\n%s", name, k.logs)
		}
		time.Sleep(20 * time.Millisecond)
		json.Unmarshal(k.must(t, "GET", "/"+ns.Data.ID, nil, 200), &ns)
	}
	return ns.Data.ID
}

// noRuntimeFatal fails the test if kvd's output shows a Go runtime fatal
// error or an unrecovered panic, or logs a stack trace (Pebble's errors
// print theirs with %+v).
func noRuntimeFatal(t *testing.T, k *kvd) {
	t.Helper()
	for _, bad := range []string{"fatal error:", "panic:", "goroutine ", "stack trace"} {
		if strings.Contains(k.logs.String(), bad) {
			t.Fatalf("kvd's output has %q:\n%s", bad, k.logs)
		}
	}
}

// acked is what kvd acknowledged: each key's last acknowledged value, or
// nil for a key whose delete was acknowledged last; and the writes sent
// after it whose outcome is unknown (kvd died or did not answer), any of
// which the key may read instead.
type acked struct {
	mu    sync.Mutex
	keys  map[string][]byte
	maybe map[string][][]byte
}

func (a *acked) set(k string, v []byte) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.keys == nil {
		a.keys, a.maybe = map[string][]byte{}, map[string][][]byte{}
	}
	a.keys[k] = v
	delete(a.maybe, k)
}

// unknown records a write of v to k that may or may not have taken effect.
func (a *acked) unknown(k string, v []byte) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.maybe == nil {
		a.keys, a.maybe = map[string][]byte{}, map[string][][]byte{}
	}
	a.maybe[k] = append(a.maybe[k], v)
}

// check reads back every acknowledged key.
func (a *acked) check(t *testing.T, k *kvd, ns string) {
	t.Helper()
	a.mu.Lock()
	defer a.mu.Unlock()
	for key, want := range a.keys {
		code, got, err := k.do("GET", "/"+ns+"/keys/"+key, nil)
		if err != nil {
			t.Fatalf("GET %s: %v", key, err)
		}
		if code == 200 && slices.ContainsFunc(a.maybe[key], func(v []byte) bool { return bytes.Equal(v, got) }) {
			continue // a write of unknown outcome took effect
		}
		switch {
		case want == nil && code != 404:
			t.Errorf("%s was deleted (acknowledged) but reads %d", key, code)
		case want != nil && (code != 200 || !bytes.Equal(got, want)):
			t.Errorf("%s: %d, %d bytes; want the %d acknowledged bytes", key, code, len(got), len(want))
		}
	}
	if len(a.keys) == 0 {
		t.Fatal("nothing was acknowledged")
	}
}

func value(i, size int) []byte {
	return bytes.Repeat([]byte{byte('a' + i%26)}, size)
}

// TestDiskFullRefusesWrites fills the file system under a running kvd to
// just above its reserve. Writes must then be refused with 507 (code
// 10038, naming the free space and the reserve) while reads, listings and
// deletes keep working; they must resume once space is freed; SIGTERM must
// stop kvd; and every acknowledged write must read back after a restart.
// The reserve is below the default but above what the engine takes at
// once without asking: a new log file (35 MiB, preallocated) and a flush.
func TestDiskFullRefusesWrites(t *testing.T) {
	mnt := mountTmpfs(t, 512<<20)
	store := filepath.Join(mnt, "data")
	k := runKVD(t, store, true, "--min-free-space", "96MiB")
	ns := k.namespace(t, "full")
	var a acked
	for i := range 20 {
		key := fmt.Sprintf("before-%d", i)
		k.must(t, "PUT", "/"+ns+"/keys/"+key, value(i, 1000), 201)
		a.set(key, value(i, 1000))
	}

	free := fillDisk(t, mnt, 104<<20) // 8 MiB above the reserve
	var refusal []byte
	for i := 0; refusal == nil; i++ {
		if i == 10000 {
			t.Fatalf("no write refused after %d writes of 64 KiB\n%s", i, k.logs)
		}
		key, v := fmt.Sprintf("fill-%d", i), value(i, 64<<10)
		code, body, err := k.do("PUT", "/"+ns+"/keys/"+key, v)
		switch {
		case err != nil:
			t.Fatalf("PUT %s: %v\n%s", key, err, k.logs)
		case code == 201 || code == 200:
			a.set(key, v)
		case code == 507:
			refusal = body
		default:
			t.Fatalf("PUT %s: %d %s; want 201 or 507\n%s", key, code, body, k.logs)
		}
	}
	var env struct {
		Errors []struct{ Code, Title, Detail string }
	}
	if err := json.Unmarshal(refusal, &env); err != nil || len(env.Errors) != 1 || env.Errors[0].Code != "10038" {
		t.Fatalf("507 body %s: want one error of code 10038", refusal)
	}
	// The free space is whatever it was when last measured: the engine's own
	// flushes may have used some of the reserve by then, so any unit goes.
	if d := env.Errors[0].Detail; !regexp.MustCompile(`has [0-9.]+ (B|KiB|MiB) free`).MatchString(d) || !strings.Contains(d, "96 MiB") {
		t.Errorf("507 detail %q does not name the free space and the 96 MiB reserve", d)
	}
	t.Logf("refused: %s", env.Errors[0].Detail)

	// Reads, listings and deletes work on the full disk; new namespaces do
	// not.
	k.must(t, "GET", "/"+ns+"/keys/before-3", nil, 200)
	k.must(t, "GET", "/"+ns+"/keys?limit=10", nil, 200)
	k.must(t, "DELETE", "/"+ns+"/keys/before-4", nil, 200)
	a.set("before-4", nil)
	k.must(t, "POST", "", []byte(`{"name":"another"}`), 507)
	k.must(t, "PUT", "/"+ns+"/keys/refused", []byte("x"), 507)

	// Space comes back: writes resume.
	free()
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, body, err := k.do("PUT", "/"+ns+"/keys/after", []byte("room again"))
		if err == nil && (code == 200 || code == 201) {
			a.set("after", []byte("room again"))
			break
		}
		if err != nil || code != 507 || time.Now().After(deadline) {
			t.Fatalf("PUT once space was freed: %d %s, %v\n%s", code, body, err, k.logs)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if code := k.stop(t); code != 0 {
		t.Fatalf("exit code %d after SIGTERM\n%s", code, k.logs)
	}
	if !strings.Contains(k.logs.String(), "writes are refused") || !strings.Contains(k.logs.String(), "writes are accepted") {
		t.Errorf("the log does not say when writes stopped and resumed:\n%s", k.logs)
	}
	noRuntimeFatal(t, k)

	k = runKVD(t, store, true)
	a.check(t, k, ns)
}

// TestDiskFullWithoutReserve fills the disk under kvd with the free-space
// check off, so that the engine itself meets ENOSPC: on a store that has
// run a while (its log files are recycled, so log writes still fit) the
// flushes fail and writes stall; otherwise a log write fails. Whatever
// happens, kvd must never die of a Go runtime fatal error, must exit 70
// with the cause logged if it exits by itself, SIGTERM must stop it within
// its shutdown timeout even with the engine stuck, and every acknowledged
// write must read back once there is space again.
func TestDiskFullWithoutReserve(t *testing.T) {
	mnt := mountTmpfs(t, 512<<20)
	store := filepath.Join(mnt, "data")
	k := runKVD(t, store, true, "--min-free-space", "0")
	ns := k.namespace(t, "full")
	var a acked
	codes := map[string]int{}
	writers := func(n int, until time.Time, size int) (failed int) {
		var wg sync.WaitGroup
		var mu sync.Mutex
		for w := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < n && time.Now().Before(until) && k.running(); i++ {
					key, v := fmt.Sprintf("w%d-%d-%d", w, size, i), value(i, size)
					code, _, err := k.do("PUT", "/"+ns+"/keys/"+key, v)
					if err == nil && (code == 200 || code == 201) {
						a.set(key, v)
						continue
					}
					a.unknown(key, v)
					mu.Lock()
					failed++
					if err != nil {
						codes["no answer"]++
					} else {
						codes[strconv.Itoa(code)]++
					}
					mu.Unlock()
					if err != nil {
						return // timed out: the engine is stuck
					}
				}
			}()
		}
		wg.Wait()
		return failed
	}
	// 150 MiB: several log files, flushed and recycled. The writes on the
	// full disk overwrite these keys.
	if failed := writers(300, time.Now().Add(5*time.Minute), 64<<10); failed > 0 {
		t.Fatalf("%d writes failed before the disk was full\n%s", failed, k.logs)
	}
	free := fillDisk(t, mnt, 0)
	k.client.Timeout = 3 * time.Second
	failed := writers(1000, time.Now().Add(5*time.Second), 64<<10)
	t.Logf("on the full disk: %d writes failed: %v", failed, codes)

	start := time.Now()
	if k.running() {
		k.cmd.Process.Signal(syscall.SIGTERM)
		code := k.wait(t, 30*time.Second)
		// --shutdown-timeout is 5s; the wait's margin is for a loaded machine.
		t.Logf("stopped by SIGTERM in %v with exit code %d: %s", time.Since(start).Round(time.Millisecond), code, lastLine(k.logs.String()))
		if code == exitStorage && !strings.Contains(k.logs.String(), "no space left on device") {
			t.Fatalf("exit code %d without the cause logged\n%s", code, k.logs)
		}
	} else {
		code := k.wait(t, time.Second)
		if code != exitStorage || !strings.Contains(k.logs.String(), "no space left on device") {
			t.Fatalf("kvd exited with code %d; want %d and the cause logged\n%s", code, exitStorage, k.logs)
		}
		t.Logf("kvd exited %d: %s", code, lastLine(k.logs.String()))
	}
	noRuntimeFatal(t, k)
	if n := strings.Count(k.logs.String(), "\n"); n > 200 {
		t.Errorf("%d lines of log in a few seconds", n)
	}
	free()
	k = runKVD(t, store, true)
	a.check(t, k, ns)
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// TestStartFailsCleanly: kvd cannot start on a full disk (a new store or
// an existing one), a read-only file system, or a directory it may not
// write; it exits non-zero within seconds, naming the cause, without a
// flood of log lines.
func TestStartFailsCleanly(t *testing.T) {
	mnt := mountTmpfs(t, 64<<20)
	existing := filepath.Join(mnt, "existing")
	k := runKVD(t, existing, true, "--min-free-space", "1MiB")
	ns := k.namespace(t, "n")
	k.must(t, "PUT", "/"+ns+"/keys/k", []byte("v"), 201)
	if code := k.stop(t); code != 0 {
		t.Fatalf("exit %d\n%s", code, k.logs)
	}
	refused := func(t *testing.T, store, want string) {
		t.Helper()
		k := runKVD(t, store, false)
		if code := k.wait(t, 30*time.Second); code == 0 {
			t.Fatalf("kvd exited 0 on %s\n%s", store, k.logs)
		}
		if !strings.Contains(k.logs.String(), want) {
			t.Fatalf("kvd's output does not say %q:\n%s", want, k.logs)
		}
		if n := strings.Count(k.logs.String(), "\n"); n > 5 {
			t.Fatalf("%d lines of output:\n%s", n, k.logs)
		}
		t.Logf("%s", strings.TrimSpace(k.logs.String()))
	}

	t.Run("full disk", func(t *testing.T) {
		free := fillDisk(t, mnt, 0)
		defer free()
		refused(t, filepath.Join(mnt, "new"), "0 B free")
		refused(t, existing, "0 B free")
	})
	t.Run("read-only file system", func(t *testing.T) {
		if out, err := exec.Command("mount", "-o", "remount,ro", mnt).CombinedOutput(); err != nil {
			t.Skipf("cannot remount read-only: %v: %s", err, out)
		}
		defer exec.Command("mount", "-o", "remount,rw", mnt).Run()
		refused(t, existing, "read-only file system")
	})
	t.Run("permission denied", func(t *testing.T) {
		// kvd runs as nobody, from a copy of the binary it may execute, on
		// root's store (0700) in directories it may enter.
		binDir, err := os.MkdirTemp("", "kvd-nobody")
		if err != nil {
			t.Fatal(err)
		}
		defer os.RemoveAll(binDir)
		bin := filepath.Join(binDir, "kvd")
		b, err := os.ReadFile(kvdBin)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(bin, b, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, d := range []string{binDir, filepath.Dir(mnt), filepath.Dir(filepath.Dir(mnt))} {
			if err := os.Chmod(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		cmd := exec.Command(bin, "--listen", kvdtest.FreeAddr(t), "--store", existing)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() == 0 || !strings.Contains(string(out), "permission denied") {
			t.Fatalf("kvd as nobody on root's store: %v\n%s", err, out)
		}
		if strings.Contains(string(out), "in use by another process") {
			t.Fatalf("a directory kvd may not write is reported as locked:\n%s", out)
		}
		t.Logf("%s", bytes.TrimSpace(out))
	})
}

// TestDamagedStoreRefused: kvd started on a store whose manifest marker
// is gone exits non-zero within seconds, saying so, and leaves every file
// as it was; before, it served an empty store and Pebble deleted the
// sstables.
func TestDamagedStoreRefused(t *testing.T) {
	store := filepath.Join(t.TempDir(), "data")
	k := runKVD(t, store, true)
	ns := k.namespace(t, "n")
	for i := range 100 {
		k.must(t, "PUT", fmt.Sprintf("/%s/keys/k%d", ns, i), value(i, 1000), 201)
	}
	if code := k.stop(t); code != 0 {
		t.Fatalf("exit %d\n%s", code, k.logs)
	}
	markers, _ := filepath.Glob(filepath.Join(store, "marker.manifest.*"))
	if len(markers) != 1 {
		t.Fatalf("manifest markers: %v", markers)
	}
	os.Remove(markers[0])
	before := hashFiles(t, store)

	k = runKVD(t, store, false)
	if code := k.wait(t, 30*time.Second); code == 0 {
		t.Fatalf("kvd exited 0 on a damaged store\n%s", k.logs)
	}
	if !strings.Contains(k.logs.String(), "is damaged: it has no manifest marker") {
		t.Fatalf("kvd's output does not name the problem:\n%s", k.logs)
	}
	after := hashFiles(t, store)
	if len(after) != len(before) {
		t.Fatalf("files before: %d, after: %d", len(before), len(after))
	}
	for name, h := range before {
		if after[name] != h {
			t.Errorf("%s changed", name)
		}
	}
	t.Logf("%s", strings.TrimSpace(k.logs.String()))
}

func hashFiles(t *testing.T, dir string) map[string][32]byte {
	t.Helper()
	out := map[string][32]byte{}
	filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		out[e.Name()] = sha256.Sum256(b)
		return nil
	})
	return out
}

// TestOutOfFileDescriptors lowers kvd's limit on open files to a little
// above what it uses, holds idle connections until it has none left, and
// writes meanwhile, so that the engine cannot open the files it needs
// (the next log file, new sstables). kvd must never die of a Go runtime
// fatal error (Pebble's panic in rotateWAL used to end in "sync: unlock of
// unlocked mutex"): it serves again once descriptors are free, or exits
// with code 70 and the cause logged.
func TestOutOfFileDescriptors(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to lower another process's RLIMIT_NOFILE")
	}
	store := filepath.Join(t.TempDir(), "data")
	k := runKVD(t, store, true)
	ns := k.namespace(t, "n")
	// Writers on connections opened before the descriptors run out.
	k.client.Transport = &http.Transport{MaxIdleConnsPerHost: 4}
	k.client.Timeout = 30 * time.Second
	var warm sync.WaitGroup
	for range 4 {
		warm.Add(1)
		go func() { defer warm.Done(); k.do("GET", "/"+ns, nil) }()
	}
	warm.Wait()

	pid := k.cmd.Process.Pid
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	limit := uint64(len(fds) + 8)
	if err := unix.Prlimit(pid, unix.RLIMIT_NOFILE, &unix.Rlimit{Cur: limit, Max: limit}, nil); err != nil {
		t.Fatalf("prlimit: %v", err)
	}
	var idle []net.Conn
	for range 64 {
		c, err := net.Dial("tcp", k.addr)
		if err != nil {
			break
		}
		idle = append(idle, c)
	}

	var a acked
	var mu sync.Mutex
	var failed []string
	stop := time.Now().Add(3 * time.Second)
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; time.Now().Before(stop) && k.running(); i++ {
				key, v := fmt.Sprintf("w%d-%d", w, i), value(i, 64<<10)
				code, _, err := k.do("PUT", "/"+ns+"/keys/"+key, v)
				if err == nil && (code == 200 || code == 201) {
					a.set(key, v)
					continue
				}
				a.unknown(key, v)
				mu.Lock()
				failed = append(failed, fmt.Sprintf("%d %v", code, err))
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	for _, c := range idle {
		c.Close()
	}
	t.Logf("%d idle connections held; %d writes acknowledged, %d failed (%v)", len(idle), len(a.keys), len(failed), first(failed, 3))
	for _, line := range strings.Split(k.logs.String(), "\n") {
		if strings.Contains(line, "too many open files") {
			t.Logf("kvd: %.300s", line)
		}
	}
	if n := strings.Count(k.logs.String(), "\n"); n > 300 {
		t.Errorf("%d lines of log in a few seconds", n)
	}

	if !k.running() {
		code := k.wait(t, time.Second)
		noRuntimeFatal(t, k)
		if code != exitStorage || !strings.Contains(k.logs.String(), "too many open files") {
			t.Fatalf("kvd exited with code %d; want %d with the cause logged\n%s", code, exitStorage, k.logs)
		}
		t.Logf("kvd exited %d: %s", code, lastLine(k.logs.String()))
	} else {
		// It must serve again, now that descriptors are free.
		deadline := time.Now().Add(30 * time.Second)
		for {
			code, _, err := k.do("PUT", "/"+ns+"/keys/after", []byte("x"))
			if err == nil && (code == 200 || code == 201) {
				a.set("after", []byte("x"))
				break
			}
			if time.Now().After(deadline) || !k.running() {
				t.Fatalf("kvd does not serve writes once descriptors are free: %d, %v\n%s", code, err, k.logs)
			}
			time.Sleep(50 * time.Millisecond)
		}
		a.check(t, k, ns)
		if code := k.stop(t); code != 0 {
			t.Fatalf("exit code %d after SIGTERM\n%s", code, k.logs)
		}
		noRuntimeFatal(t, k)
	}
	k = runKVD(t, store, true)
	a.check(t, k, ns)
}

func first(s []string, n int) []string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// TestKilledDuringFlushes kills kvd (SIGKILL) again and again while large
// writes keep its memtables flushing and its sstables compacting, so that
// it dies with flushes and compactions half done. Every restart must open
// the store (a crash's leftovers are not damage) and read back every
// acknowledged write. 8 cycles (KV_KILL_CYCLES).
func TestKilledDuringFlushes(t *testing.T) {
	store := filepath.Join(t.TempDir(), "data")
	k := runKVD(t, store, true)
	ns := k.namespace(t, "n")
	var a acked
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	cycles, leftovers := 8, 0
	if n, err := strconv.Atoi(os.Getenv("KV_KILL_CYCLES")); err == nil && n > 0 {
		cycles = n
	}
	for c := range cycles {
		k.client.Timeout = 5 * time.Second
		var wg sync.WaitGroup
		for w := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; k.running(); i++ {
					key := fmt.Sprintf("c%d-w%d-%d", c, w, i%40) // overwrites, so compactions drop data
					v := value(c+w+i, 64<<10)
					code, _, err := k.do("PUT", "/"+ns+"/keys/"+key, v)
					if err != nil {
						a.unknown(key, v)
						return
					}
					if code == 200 || code == 201 {
						a.set(key, v)
					}
				}
			}()
		}
		time.Sleep(time.Duration(300+rng.IntN(1500)) * time.Millisecond)
		k.cmd.Process.Kill()
		<-k.exited
		wg.Wait()
		k = runKVD(t, store, false)
		waitHealthyOrExit(t, k)
		leftovers += strings.Count(k.logs.String(), "Pebble removes it")
		a.check(t, k, ns)
	}
	noRuntimeFatal(t, k)
	t.Logf("%d cycles; %d sstables left by interrupted flushes and compactions were accepted and removed", cycles, leftovers)
}

// waitHealthyOrExit waits for kvd to serve, failing the test with its
// output if it exits first.
func waitHealthyOrExit(t *testing.T, k *kvd) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		if !k.running() {
			t.Fatalf("kvd exited instead of serving:\n%s", k.logs)
		}
		if resp, err := http.Get("http://" + k.addr + "/healthz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("kvd never became healthy\n%s", k.logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
