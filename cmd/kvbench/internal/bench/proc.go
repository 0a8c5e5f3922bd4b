package bench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// proc is a server running as a child process.
type proc struct {
	cmd     *exec.Cmd
	logPath string
	started time.Time     // just before the process was started
	done    chan struct{} // closed when the process has exited
	waitErr error
	// pid is the server's own process: the child itself, or the child's
	// child when the server runs under a tracer.
	pid int
}

// freeAddr returns a loopback address that was free a moment ago.
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr, nil
}

// startProc starts argv with extra environment variables; its output goes
// to logPath.
func startProc(argv []string, env []string, logPath string) (*proc, error) {
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own process group: a Ctrl-C in the terminal reaches kvbench,
	// which stops its children in order.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	started := time.Now()
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", argv[0], err)
	}
	p := &proc{cmd: cmd, logPath: logPath, started: started, done: make(chan struct{}), pid: cmd.Process.Pid}
	go func() {
		p.waitErr = cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	return p, nil
}

// exited reports whether the process has exited.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// logTail returns the end of the process's output, for error messages.
func (p *proc) logTail() string {
	b, _ := os.ReadFile(p.logPath)
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return strings.TrimSpace(string(b))
}

// waitReady polls url until it answers 200, the process exits, or the
// timeout passes. It polls every 5ms for the first second, so that a
// start-up time taken from its return is that precise, then every 50ms.
func (p *proc) waitReady(ctx context.Context, url string, timeout time.Duration) error {
	c := &http.Client{Timeout: time.Second}
	start := time.Now()
	deadline := start.Add(timeout)
	for time.Now().Before(deadline) {
		if p.exited() {
			return fmt.Errorf("exited before serving (%v): %s", p.waitErr, p.logTail())
		}
		resp, err := c.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		poll := 50 * time.Millisecond
		if time.Since(start) < time.Second {
			poll = 5 * time.Millisecond
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(poll):
		}
	}
	return fmt.Errorf("not ready after %s: %s", timeout, p.logTail())
}

// stop asks the process to stop (SIGINT to the server, so that kvd drains
// and closes its engine) and waits; after grace it is killed.
func (p *proc) stop(grace time.Duration) error { return p.stopWith(syscall.SIGINT, grace) }

// stopWith sends sig to the server and waits for the process to exit;
// after grace it is killed.
func (p *proc) stopWith(sig syscall.Signal, grace time.Duration) error {
	if p.exited() {
		return nil
	}
	syscall.Kill(p.pid, sig)
	select {
	case <-p.done:
		return nil
	case <-time.After(grace):
	}
	p.cmd.Process.Kill()
	if p.pid != p.cmd.Process.Pid {
		syscall.Kill(p.pid, syscall.SIGKILL)
	}
	<-p.done
	return errors.New("killed after " + grace.String())
}

// procStatus reads one field, in kB, of /proc/PID/status (VmHWM, VmRSS).
func procStatus(pid int, field string) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb * 1024, err
		}
	}
	return 0, fmt.Errorf("/proc/%d/status: no %s", pid, field)
}

// resetPeakRSS resets the process's VmHWM to its current RSS (Linux 4.0 and
// later); it reports whether the reset took effect.
func resetPeakRSS(pid int) bool {
	err := os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0)
	return err == nil
}

// clockTicks is USER_HZ, the unit of the CPU times in /proc/PID/stat; it
// is 100 on every Linux architecture Go supports.
const clockTicks = 100

// procCPU returns the user plus system CPU time the process has used.
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name, in parentheses, may hold spaces: fields count
	// from after its closing parenthesis.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: malformed", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	// After the name: state(0) ... utime(11) stime(12).
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: short", pid)
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	return time.Duration(ut+st) * time.Second / clockTicks, nil
}

// selfCPU returns the CPU time (user plus system) this process has used.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// childPID returns the first child of pid, waiting up to timeout for one
// to appear (a tracer starts its tracee a moment after it starts).
func childPID(pid int, timeout time.Duration) (int, error) {
	deadline := time.Now().Add(timeout)
	for {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
		if err == nil {
			if f := strings.Fields(string(b)); len(f) > 0 {
				return strconv.Atoi(f[0])
			}
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("process %d has no child after %s", pid, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// hostBusy returns the CPU time the whole machine has spent busy (user,
// nice, system, irq, softirq and steal time of /proc/stat), or -1 when it
// cannot be read.
func hostBusy() time.Duration {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return -1
	}
	line, _, _ := bytes.Cut(b, []byte("\n"))
	f := strings.Fields(string(line))
	// cpu user nice system idle iowait irq softirq steal ...
	if len(f) < 9 || f[0] != "cpu" {
		return -1
	}
	var ticks int64
	for _, i := range []int{1, 2, 3, 6, 7, 8} {
		n, err := strconv.ParseInt(f[i], 10, 64)
		if err != nil {
			return -1
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / clockTicks
}

// treeCPU returns the CPU time used by process pid, by its children that
// have exited and been waited for, and by its live children: for the
// PostgreSQL postmaster, the whole server.
func treeCPU(pid int) (time.Duration, error) {
	own, reaped, err := procCPUTimes(pid)
	if err != nil {
		return 0, err
	}
	total := own + reaped
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	if err != nil {
		return total, nil
	}
	for _, f := range strings.Fields(string(b)) {
		c, err := strconv.Atoi(f)
		if err != nil {
			continue
		}
		if own, _, err := procCPUTimes(c); err == nil {
			total += own
		}
	}
	return total, nil
}

// procCPUTimes returns the user plus system CPU time of process pid, and
// that of its children it has waited for.
func procCPUTimes(pid int) (own, reaped time.Duration, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, err
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("/proc/%d/stat: malformed", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	// After the name: state(0) ... utime(11) stime(12) cutime(13) cstime(14).
	if len(f) < 15 {
		return 0, 0, fmt.Errorf("/proc/%d/stat: short", pid)
	}
	var t [4]int64
	for j := range t {
		if t[j], err = strconv.ParseInt(f[11+j], 10, 64); err != nil {
			return 0, 0, err
		}
	}
	return time.Duration(t[0]+t[1]) * time.Second / clockTicks, time.Duration(t[2]+t[3]) * time.Second / clockTicks, nil
}
