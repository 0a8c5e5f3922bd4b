package pgtest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edgekv/kv/internal/pgserver"
	"github.com/jackc/pgx/v5"
)

// EnvRequireFailover set to 1 makes NewFormation fail, rather than skip,
// when pg_auto_failover is not installed.
const EnvRequireFailover = "KV_REQUIRE_FAILOVER"

// FormationDB is the database every node of a Formation serves, created by
// pg_autoctl on the first primary and replicated to the other node.
const FormationDB = "kv"

// socketDir is where Debian's PostgreSQL puts its Unix sockets by default.
const socketDir = "/var/run/postgresql"

// formationWait bounds every wait for a formation's state: generous, for a
// loaded machine; the waits end as soon as the state is reached.
const formationWait = 3 * time.Minute

// Formation is a pg_auto_failover formation on loopback, for tests of
// failover: a monitor and two PostgreSQL nodes, "a" and "b", one primary
// and one secondary with synchronous replication, each run by its own
// pg_autoctl process (as the postgres user when the tests run as root), in
// a throwaway directory, on free ports. pg_autoctl does what it would in
// production: it promotes the secondary when the primary is lost, rejoins
// a lost node as a secondary when it comes back, and switches over on
// request. Everything is stopped and removed when the test ends, failed or
// not.
//
// The monitor is tuned to notice a lost node within seconds rather than
// the default twenty or so (see tuneMonitor); everything else is
// pg_auto_failover's defaults. Its methods are meant for the test's
// goroutine.
type Formation struct {
	t       testing.TB
	dir     string
	bin     string // PostgreSQL's binaries, with pg_ctl
	autoctl string
	cred    *pgserver.RunAs
	env     []string

	monitor *autoctl
	monPort int
	nodes   []*Node
}

// Node is a PostgreSQL node of a Formation.
type Node struct {
	Name string
	Port int
	p    *autoctl
}

// autoctl is one pg_autoctl service (a monitor or a node's keeper), its
// data directory and its log.
type autoctl struct {
	pgdata string
	log    string
	cmd    *exec.Cmd
	exited chan struct{}
	killed bool // stopped or killed on purpose
}

// NodeState is one node as the monitor sees it (pg_autoctl show state).
type NodeState struct {
	Name     string `json:"nodename"`
	Port     int    `json:"nodeport"`
	Health   int    `json:"health"`
	Reported string `json:"current_group_state"`
	Assigned string `json:"assigned_group_state"`
	LSN      string `json:"reported_lsn"`
}

func (s NodeState) String() string {
	return fmt.Sprintf("%s:%s/%s", s.Name, s.Reported, s.Assigned)
}

// findAutoctl returns pg_autoctl and the PostgreSQL binaries whose server
// has the pgautofailover extension the monitor needs.
func findAutoctl() (autoctl, bin string, err error) {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return pgserver.VersionOf(dirs[i]) > pgserver.VersionOf(dirs[j]) })
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "..", "lib", "pgautofailover.so")); err != nil {
			continue
		}
		if _, err := os.Stat(filepath.Join(d, "pg_ctl")); err != nil {
			continue
		}
		bin = d
		break
	}
	if p, err := exec.LookPath("pg_autoctl"); err == nil {
		autoctl = p
	} else if bin != "" {
		if _, err := os.Stat(filepath.Join(bin, "pg_autoctl")); err == nil {
			autoctl = filepath.Join(bin, "pg_autoctl")
		}
	}
	switch {
	case autoctl == "":
		return "", "", errors.New("pg_auto_failover is not installed: no pg_autoctl on PATH or under /usr/lib/postgresql/*/bin")
	case bin == "":
		return "", "", errors.New("pg_auto_failover's PostgreSQL extension is not installed: no /usr/lib/postgresql/*/lib/pgautofailover.so")
	}
	return autoctl, bin, nil
}

// NewFormation starts a monitor, then node a, which becomes the primary,
// then node b, which pg_autoctl clones from a and makes its synchronous
// secondary, and returns once the monitor reports a primary and b
// secondary. Without pg_auto_failover it skips t, or fails it when
// KV_REQUIRE_FAILOVER=1.
func NewFormation(t testing.TB) *Formation {
	t.Helper()
	autoctlBin, bin, err := findAutoctl()
	if err != nil {
		if os.Getenv(EnvRequireFailover) == "1" {
			t.Fatalf("pgtest: %v", err)
		}
		t.Skipf("pgtest: %v\n(install it, e.g. apt-get install postgresql-15-auto-failover; set %s=1 to fail instead of skip)", err, EnvRequireFailover)
	}
	f := &Formation{t: t, bin: bin, autoctl: autoctlBin}

	if f.cred, err = pgserver.PostgresUser(); err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	// The nodes' servers put their Unix sockets in Debian's default
	// directory (pg_autoctl starts them without -k); the package creates it,
	// but it lives under /run, which a reboot empties.
	if _, err := os.Stat(socketDir); err != nil && f.cred != nil {
		if err := os.MkdirAll(socketDir, 0o2775); err != nil {
			t.Fatalf("pgtest: %v", err)
		}
		os.Chown(socketDir, int(f.cred.UID), int(f.cred.GID))
	}
	if f.dir, err = os.MkdirTemp("", "kv-pgautofailover-"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.remove)
	for _, d := range []string{"run", "config", "share"} {
		if err := os.Mkdir(filepath.Join(f.dir, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if f.cred != nil {
		filepath.Walk(f.dir, func(p string, _ os.FileInfo, err error) error {
			if err == nil {
				err = os.Chown(p, int(f.cred.UID), int(f.cred.GID))
			}
			return err
		})
	}
	// pg_autoctl keeps its configuration and state under the XDG
	// directories of its user: here, under the formation's directory. It
	// talks to its local server over TCP (PGHOST), so no socket goes to
	// /var/run/postgresql.
	f.env = []string{
		"HOME=" + f.dir,
		"XDG_CONFIG_HOME=" + filepath.Join(f.dir, "config"),
		"XDG_DATA_HOME=" + filepath.Join(f.dir, "share"),
		"XDG_RUNTIME_DIR=" + filepath.Join(f.dir, "run"),
		"PATH=" + bin + ":/usr/bin:/bin",
		"PGHOST=127.0.0.1",
		"LANG=C.UTF-8",
		"LC_ALL=C.UTF-8",
	}

	ports := make([]int, 3)
	for i := range ports {
		if ports[i], err = pgserver.FreePort(); err != nil {
			t.Fatal(err)
		}
	}
	common := []string{"--hostname", "127.0.0.1", "--listen", "127.0.0.1", "--auth", "trust", "--no-ssl", "--ssl-mode", "disable", "--pgctl", filepath.Join(bin, "pg_ctl")}

	f.monitor, f.monPort = f.newAutoctl("monitor"), ports[0]
	f.monitor.start(t, f, append([]string{"create", "monitor", "--pgdata", f.monitor.pgdata, "--pgport", strconv.Itoa(ports[0]), "--run"}, common...)...)
	f.waitMonitor(t, ports[0])

	for i, name := range []string{"a", "b"} {
		n := &Node{Name: name, Port: ports[i+1], p: f.newAutoctl(name)}
		f.nodes = append(f.nodes, n)
		n.p.start(t, f, append([]string{"create", "postgres", "--pgdata", n.p.pgdata, "--pgport", strconv.Itoa(n.Port),
			"--name", name, "--dbname", FormationDB, "--monitor", f.monitorURL(), "--run"}, common...)...)
		if i == 0 {
			f.WaitFor(t, "node a alone, as primary", func(s []NodeState) bool {
				return len(s) == 1 && s[0].Reported == "single" && s[0].Assigned == "single"
			})
		}
	}
	f.WaitStable(t)
	return f
}

func (f *Formation) newAutoctl(name string) *autoctl {
	return &autoctl{pgdata: filepath.Join(f.dir, name), log: filepath.Join(f.dir, name+".log")}
}

// monitorURL is the URL the nodes register with.
func (f *Formation) monitorURL() string {
	return fmt.Sprintf("postgres://autoctl_node@127.0.0.1:%d/pg_auto_failover?sslmode=disable", f.monitorPort())
}

func (f *Formation) monitorPort() int { return f.monPort }

// start runs pg_autoctl with args in a process group of its own, with
// its output appended to its log.
func (p *autoctl) start(t testing.TB, f *Formation, args ...string) {
	t.Helper()
	logFile, err := os.OpenFile(p.log, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	cmd := exec.Command(f.autoctl, args...)
	cmd.Dir = f.dir
	cmd.Env = f.env
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// Its own process group, so that Kill reaches the supervisor, the
	// keeper, the postmaster and every backend at once (pg_autoctl runs
	// postgres without a session of its own). If the test binary dies, the
	// supervisor is told to stop.
	cmd.SysProcAttr = pgserver.GroupProcAttr(f.cred)
	if err := cmd.Start(); err != nil {
		t.Fatalf("pgtest: start pg_autoctl: %v", err)
	}
	exited := make(chan struct{})
	p.cmd, p.exited, p.killed = cmd, exited, false
	go func() { cmd.Wait(); close(exited) }()
}

// failed reports whether the service exited without being told to.
func (p *autoctl) failed() bool {
	return p.cmd != nil && !p.running() && !p.killed
}

func (p *autoctl) running() bool {
	if p.cmd == nil {
		return false
	}
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// kill ends the service's whole process group with SIGKILL.
func (p *autoctl) kill() {
	p.killed = true
	if !p.running() {
		return
	}
	syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.exited
}

// stop asks the service to stop (SIGTERM to the supervisor, which stops
// postgres cleanly) and kills its process group if it has not stopped
// within 30s.
func (p *autoctl) stop() {
	p.killed = true
	if !p.running() {
		return
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(30 * time.Second):
	}
	// Whatever is left of the group (nothing, after a clean stop).
	syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.exited
}

// remove stops every service and deletes the formation's directory; when
// the test failed it logs the end of each service's log first.
func (f *Formation) remove() {
	for _, n := range f.nodes {
		n.p.stop()
	}
	if f.monitor != nil {
		f.monitor.stop()
	}
	if f.t.Failed() {
		f.t.Logf("pg_auto_failover logs:\n%s", f.Logs())
	}
	// A server killed and not started again leaves its socket and lock
	// file behind; the ports were the formation's.
	ports := []int{f.monPort}
	for _, n := range f.nodes {
		ports = append(ports, n.Port)
	}
	for _, port := range ports {
		if port != 0 {
			sock := filepath.Join(socketDir, ".s.PGSQL."+strconv.Itoa(port))
			os.Remove(sock)
			os.Remove(sock + ".lock")
		}
	}
	os.RemoveAll(f.dir)
}

// Logs returns the last lines of every pg_autoctl service's log.
func (f *Formation) Logs() string {
	var b strings.Builder
	ps := []*autoctl{}
	if f.monitor != nil {
		ps = append(ps, f.monitor)
	}
	for _, n := range f.nodes {
		ps = append(ps, n.p)
	}
	for _, p := range ps {
		data, err := os.ReadFile(p.log)
		lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
		if len(lines) > 60 {
			lines = lines[len(lines)-60:]
		}
		fmt.Fprintf(&b, "==> %s (%v)\n%s\n", p.log, err, strings.Join(lines, "\n"))
	}
	return b.String()
}

// waitMonitor waits until the monitor serves with its extension installed,
// then tunes it.
func (f *Formation) waitMonitor(t testing.TB, port int) {
	t.Helper()
	u := fmt.Sprintf("postgres://postgres@127.0.0.1:%d/pg_auto_failover?sslmode=disable", port)
	deadline := time.Now().Add(formationWait)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		c, err := pgx.Connect(ctx, u)
		if err == nil {
			var n int
			err = c.QueryRow(ctx, "SELECT count(*) FROM pg_extension WHERE extname = 'pgautofailover'").Scan(&n)
			if err == nil && n == 1 {
				err = tuneMonitor(ctx, c)
				c.Close(ctx)
				cancel()
				if err != nil {
					t.Fatalf("pgtest: tune the monitor: %v", err)
				}
				return
			}
			c.Close(ctx)
		}
		cancel()
		if f.monitor.failed() {
			t.Fatalf("pgtest: the monitor's pg_autoctl exited (%v):\n%s", f.monitor.cmd.ProcessState, f.Logs())
		}
		if time.Now().After(deadline) {
			t.Fatalf("pgtest: the monitor did not come up within %v: %v\n%s", formationWait, err, f.Logs())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// tuneMonitor makes the monitor act within seconds of losing a node
// (pg_auto_failover's defaults take about 30s): it checks every node's
// health every second, and considers one that neither answers nor reports
// for 5s unhealthy; during a failover it waits 5s, not 30s, for the lost
// primary to report its demotion. These are for a test on one machine; a
// real deployment keeps the defaults or tunes them to its network.
func tuneMonitor(ctx context.Context, c *pgx.Conn) error {
	for _, set := range []string{
		"pgautofailover.health_check_period = 1000",
		"pgautofailover.health_check_timeout = 2000",
		"pgautofailover.health_check_max_retries = 2",
		"pgautofailover.health_check_retry_delay = 1000",
		"pgautofailover.node_considered_unhealthy_timeout = 5000",
		"pgautofailover.primary_demote_timeout = 5000",
	} {
		if _, err := c.Exec(ctx, "ALTER SYSTEM SET "+set); err != nil {
			return err
		}
	}
	_, err := c.Exec(ctx, "SELECT pg_reload_conf()")
	return err
}

// autoctlCmd runs pg_autoctl with args, as the formation's user and with
// its environment, and returns its standard output.
func (f *Formation) autoctlCmd(args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, f.autoctl, args...)
	cmd.Dir = f.dir
	cmd.Env = f.env
	cmd.SysProcAttr = pgserver.SysProcAttr(f.cred, false)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("pg_autoctl %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return out, nil
}

// State is the monitor's view of the nodes: pg_autoctl show state --json.
func (f *Formation) State() ([]NodeState, error) {
	out, err := f.autoctlCmd("show", "state", "--pgdata", f.monitor.pgdata, "--json")
	if err != nil {
		return nil, err
	}
	var s []NodeState
	if err := json.Unmarshal(out, &s); err != nil {
		return nil, fmt.Errorf("pg_autoctl show state --json: %v: %q", err, out)
	}
	sort.Slice(s, func(i, j int) bool { return s[i].Name < s[j].Name })
	return s, nil
}

// WaitFor polls the monitor's state until done says so, failing t if it
// does not within a few minutes. While a node is being cloned or catches up
// it asks the primary for a checkpoint every few seconds: pg_basebackup
// starts from one, and waits for the next one the server schedules
// otherwise, which can take minutes.
func (f *Formation) WaitFor(t testing.TB, what string, done func([]NodeState) bool) []NodeState {
	t.Helper()
	deadline := time.Now().Add(formationWait)
	var nudged time.Time
	var last []NodeState
	var err error
	for {
		last, err = f.State()
		if err == nil && done(last) {
			return last
		}
		for _, n := range f.nodes {
			if n.p.failed() {
				t.Fatalf("pgtest: node %s's pg_autoctl exited (%v) while waiting for %s:\n%s", n.Name, n.p.cmd.ProcessState, what, f.Logs())
			}
		}
		if time.Since(nudged) > 2*time.Second {
			for _, s := range last {
				if s.Reported == "wait_standby" || s.Reported == "catchingup" {
					f.checkpoint(last)
					nudged = time.Now()
					break
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("pgtest: no %s within %v; the monitor shows %v (%v)\n%s", what, formationWait, last, err, f.Logs())
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// checkpoint asks every node that is primary in s for a checkpoint.
func (f *Formation) checkpoint(s []NodeState) {
	for _, st := range s {
		if !writable(st.Reported) {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if c, err := pgx.Connect(ctx, nodeURL(st.Port, "postgres")); err == nil {
			c.Exec(ctx, "CHECKPOINT")
			c.Close(ctx)
		}
		cancel()
	}
}

// writable reports whether a node in state s serves writes.
func writable(s string) bool { return s == "single" || s == "primary" || s == "wait_primary" }

// WaitStable waits until the monitor reports one node primary and the
// other secondary, both as assigned, and returns them.
func (f *Formation) WaitStable(t testing.TB) (primary, secondary *Node) {
	t.Helper()
	s := f.WaitFor(t, "primary and secondary", func(s []NodeState) bool {
		if len(s) != 2 {
			return false
		}
		p, q := s[0], s[1]
		if p.Reported == "secondary" {
			p, q = q, p
		}
		return p.Reported == "primary" && p.Assigned == "primary" && q.Reported == "secondary" && q.Assigned == "secondary"
	})
	for _, st := range s {
		if st.Reported == "primary" {
			primary = f.Node(st.Name)
		} else {
			secondary = f.Node(st.Name)
		}
	}
	return primary, secondary
}

// WaitWritable waits until the monitor reports n as the node that serves
// writes (primary, or wait_primary while the other node is lost or
// catching up) and has assigned no other node such a state. (A lost node
// is shown with the last state it reported, which may be primary.)
func (f *Formation) WaitWritable(t testing.TB, n *Node) {
	t.Helper()
	f.WaitFor(t, "node "+n.Name+" as primary", func(s []NodeState) bool {
		ok := false
		for _, st := range s {
			switch {
			case st.Name == n.Name:
				ok = writable(st.Reported) && st.Assigned == st.Reported
			case writable(st.Assigned):
				return false
			}
		}
		return ok
	})
}

// Node returns the node named name ("a" or "b").
func (f *Formation) Node(name string) *Node {
	for _, n := range f.nodes {
		if n.Name == name {
			return n
		}
	}
	f.t.Fatalf("pgtest: no node %q", name)
	return nil
}

// Nodes returns the formation's nodes.
func (f *Formation) Nodes() []*Node { return append([]*Node(nil), f.nodes...) }

// URL is the URL of the formation's database for a client that must
// follow the primary: every node, with target_session_attrs=read-write,
// as pg_autoctl show uri gives it.
func (f *Formation) URL() string {
	hosts := make([]string, len(f.nodes))
	for i, n := range f.nodes {
		hosts[i] = net.JoinHostPort("127.0.0.1", strconv.Itoa(n.Port))
	}
	u := url.URL{Scheme: "postgres", User: url.User("postgres"), Host: strings.Join(hosts, ","), Path: "/" + FormationDB,
		RawQuery: "sslmode=disable&target_session_attrs=read-write"}
	return u.String()
}

// URL is the URL of database db on this node alone.
func (n *Node) URL(db string) string { return nodeURL(n.Port, db) }

func nodeURL(port int, db string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", port, db)
}

// Kill loses node n the way a machine is lost: its pg_autoctl supervisor
// and keeper, its postmaster and every backend get SIGKILL at once, so no
// one tells the monitor or the clients anything, and nothing restarts it.
// It returns once the node's port refuses connections.
func (f *Formation) Kill(t testing.TB, n *Node) {
	t.Helper()
	n.p.kill()
	deadline := time.Now().Add(formationWait)
	for {
		c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(n.Port)), time.Second)
		if err != nil {
			return
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatalf("pgtest: node %s still accepts connections %v after its processes were killed", n.Name, formationWait)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Start runs node n's pg_autoctl again (pg_autoctl run) after Kill: it
// rejoins the formation as the monitor sees fit, as a secondary of the new
// primary, rewinding its data first if need be.
func (f *Formation) Start(t testing.TB, n *Node) {
	t.Helper()
	if n.p.running() {
		t.Fatalf("pgtest: node %s is running", n.Name)
	}
	n.p.start(t, f, "run", "--pgdata", n.p.pgdata)
}

// Switchover asks the monitor for a planned switchover (pg_autoctl perform
// switchover): the primary is demoted cleanly and the secondary promoted.
// It returns when pg_autoctl does; call WaitStable to wait for the old
// primary to be a secondary again.
func (f *Formation) Switchover(t testing.TB) {
	t.Helper()
	if _, err := f.autoctlCmd("perform", "switchover", "--pgdata", f.monitor.pgdata, "--wait", "120"); err != nil {
		t.Fatalf("pgtest: %v\n%s", err, f.Logs())
	}
}

// Replication is what a primary says of its synchronous replication.
type Replication struct {
	SynchronousCommit       string // synchronous_commit
	SynchronousStandbyNames string // synchronous_standby_names
	NumberSyncStandbys      int    // the formation's number_sync_standbys, on the monitor
	// Standbys are pg_stat_replication's rows: application_name, state
	// and sync_state.
	Standbys [][3]string
}

// Synchronous reports whether a commit on the primary waits until a
// standby has the commit's WAL: synchronous_commit is on (or
// remote_apply), synchronous_standby_names names standbys, and a standby
// is streaming as synchronous (sync_state sync, or quorum under "ANY n
// (...)", which pg_auto_failover sets).
func (r Replication) Synchronous() bool {
	if r.SynchronousCommit != "on" && r.SynchronousCommit != "remote_apply" || strings.TrimSpace(r.SynchronousStandbyNames) == "" {
		return false
	}
	for _, s := range r.Standbys {
		if s[1] == "streaming" && (s[2] == "sync" || s[2] == "quorum") {
			return true
		}
	}
	return false
}

// ReplicationOf reads primary's replication settings, as a client of
// FormationDB sees them, and the formation's number_sync_standbys.
func (f *Formation) ReplicationOf(primary *Node) (Replication, error) {
	var r Replication
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, primary.URL(FormationDB))
	if err != nil {
		return r, err
	}
	defer c.Close(ctx)
	if err := c.QueryRow(ctx, "SELECT current_setting('synchronous_commit'), current_setting('synchronous_standby_names')").Scan(&r.SynchronousCommit, &r.SynchronousStandbyNames); err != nil {
		return r, err
	}
	rows, err := c.Query(ctx, "SELECT coalesce(application_name, ''), coalesce(state, ''), coalesce(sync_state, '') FROM pg_stat_replication")
	if err != nil {
		return r, err
	}
	for rows.Next() {
		var s [3]string
		if err := rows.Scan(&s[0], &s[1], &s[2]); err != nil {
			return r, err
		}
		r.Standbys = append(r.Standbys, s)
	}
	if err := rows.Err(); err != nil {
		return r, err
	}
	m, err := pgx.Connect(ctx, nodeURL(f.monitorPort(), "pg_auto_failover"))
	if err != nil {
		return r, err
	}
	defer m.Close(ctx)
	err = m.QueryRow(ctx, "SELECT number_sync_standbys FROM pgautofailover.formation WHERE formationid = 'default'").Scan(&r.NumberSyncStandbys)
	return r, err
}

// WaitSynchronous waits until primary replicates synchronously (see
// Replication.Synchronous) and returns what it says; after a node rejoins,
// the monitor turns synchronous replication back on once the standby has
// caught up.
func (f *Formation) WaitSynchronous(t testing.TB, primary *Node) Replication {
	t.Helper()
	deadline := time.Now().Add(formationWait)
	for {
		r, err := f.ReplicationOf(primary)
		if err == nil && r.Synchronous() {
			return r
		}
		if time.Now().After(deadline) {
			t.Fatalf("pgtest: node %s does not replicate synchronously after %v: %+v (%v)", primary.Name, formationWait, r, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
