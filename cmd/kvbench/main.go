// Command kvbench benchmarks kvd against a bare net/http baseline. It starts
// both as child processes on loopback ports, fills them, drives each
// workload at each client count, and prints ops/s, latency percentiles,
// CPU, peak RSS, the kvd/baseline ratio, and kvd's fsyncs per acknowledged
// write (counted under strace in a separate pass). get-hit-slowloris is
// get-hit while --slow-conns slow connections are held open to the target,
// and is reported as a share of get-hit's throughput.
//
// With PostgreSQL (--postgres), kvd on PostgreSQL is measured too, and
// PostgreSQL itself on the same server (pg-select, pg-upsert, pg-range:
// one statement per operation through pgx), each kvd on PostgreSQL figure
// with its ratio to the database's own. --profile DIR writes a CPU profile
// of the server of every measured phase and, on PostgreSQL, its
// pg_stat_statements and sampled wait events.
//
// kvbench scale loads one namespace with --keys keys (10 million) and
// reports the load rate, disk bytes per key, kvd's RSS, its stop and
// start-up time on the loaded store, and the GET latency at that size
// against the same GET on a --small-keys store.
//
// kvbench watch opens --watchers watch streams (10,000) of one namespace,
// split over --prefixes parts of it (1,000; 1 for every watcher seeing
// every write), while a writer puts --write-rate keys a second (1,000)
// into it, and reports the delivery latency from each PUT to every watcher
// of its prefix, events
// missed, repeated or overflowed, kvd's peak RSS, and what the watchers
// cost get-hit and put-new at --clients clients; with --postgres, the same
// across two kvd on one database.
//
//	kvbench [--duration 10s] [--clients 1,64] [--workloads get-hit,put-new] [--slow-conns 1000] [--profile DIR] [--json FILE] ...
//	kvbench scale [--keys 10000000] [--small-keys 10000] [--clients 64] [--json FILE] ...
//	kvbench watch [--watchers 10000] [--prefixes 1000] [--write-rate 1000] [--duration 5s] [--postgres off|auto|URL] [--json FILE] ...
//	kvbench compare A.json B.json
//	kvbench baseline [--pprof ADDR] --listen ADDR
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/edgekv/kv/cmd/kvbench/internal/bench"
)

func main() {
	os.Exit(run(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
}

// run is kvbench's main; it returns the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if len(args) > 0 {
		switch args[0] {
		case "baseline":
			return runBaseline(ctx, args[1:], stderr)
		case "compare":
			return runCompare(args[1:], stdout, stderr)
		case "scale":
			return runScale(ctx, args[1:], stdout, stderr)
		case "watch":
			return runWatch(ctx, args[1:], stdout, stderr)
		case "watchers":
			// The watch mode's own child, driven over its input and
			// output; see bench.ServeWatchers.
			if err := bench.ServeWatchers(ctx, os.Stdin, stdout); err != nil {
				fmt.Fprintln(stderr, "kvbench watchers:", err)
				return 1
			}
			return 0
		}
	}
	cfg, jsonPath, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "kvbench:", err)
		return 2
	}
	rep, err := bench.Run(ctx, cfg)
	return report(rep, rep != nil && len(rep.Results) > 0, err, jsonPath, "kvbench", stdout, stderr)
}

// printable is a report of a run.
type printable interface {
	Print(w io.Writer)
	WriteJSON(path string) error
}

// report prints rep when show is set and writes it to jsonPath (unless
// empty), reports err, and returns the exit code.
func report(rep printable, show bool, err error, jsonPath, prog string, stdout, stderr io.Writer) int {
	if show {
		rep.Print(stdout)
		if jsonPath != "" {
			if werr := rep.WriteJSON(jsonPath); werr != nil {
				fmt.Fprintln(stderr, prog+":", werr)
				return 1
			}
		}
	}
	if err != nil {
		fmt.Fprintln(stderr, prog+":", err)
		return 1
	}
	return 0
}

func parseFlags(args []string, stderr io.Writer) (bench.Config, string, error) {
	cfg := bench.DefaultConfig()
	fs := flag.NewFlagSet("kvbench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: kvbench [flags]\n       kvbench scale [flags]\n       kvbench watch [flags]\n       kvbench compare A.json B.json\n       kvbench baseline [--pprof ADDR] --listen ADDR\n\n")
		fmt.Fprintf(stderr, "Workloads of kvd and the baseline: %s\n", strings.Join(bench.Workloads, ", "))
		fmt.Fprintf(stderr, "Workloads of PostgreSQL itself, on kvd's server (with --postgres): %s\n\nFlags:\n", strings.Join(bench.PGWorkloads, ", "))
		fs.PrintDefaults()
	}
	fs.StringVar(&cfg.KVD, "kvd", "", "kvd binary to run (default: build ./cmd/kvd with the go command)")
	kvdArgs := fs.String("kvd-args", "", "further flags for every kvd, separated by spaces, e.g. \"--pg-max-conns 32\"")
	fs.StringVar(&cfg.Postgres, "postgres", cfg.Postgres, "also benchmark kvd on PostgreSQL: a postgres:// URL of an empty database, \"auto\" to start a throwaway server from this machine's PostgreSQL binaries when there are any, or \"off\"")
	fs.BoolVar(&cfg.NoEmbedded, "no-embedded", false, "leave out kvd on the embedded engine (with --postgres)")
	fs.IntVar(&cfg.Keys, "keys", cfg.Keys, "keys filled with values before the key workloads")
	fs.IntVar(&cfg.ListKeys, "list-keys", cfg.ListKeys, "keys in list-1000's namespace")
	fs.IntVar(&cfg.ValueSize, "value-size", cfg.ValueSize, "bytes of each small value")
	fs.IntVar(&cfg.BigKeys, "big-keys", cfg.BigKeys, "distinct keys of put-1mib and get-1mib")
	fs.DurationVar(&cfg.Duration, "duration", cfg.Duration, "measured time of each workload at each client count")
	fs.DurationVar(&cfg.Warmup, "warmup", cfg.Warmup, "unmeasured time before each measurement")
	fs.IntVar(&cfg.Rounds, "rounds", cfg.Rounds, "times each phase runs on every target, in turns; each figure is its target's median round (profiles are the last round's)")
	fs.IntVar(&cfg.FillClients, "fill-clients", cfg.FillClients, "concurrent clients of the fills")
	fs.IntVar(&cfg.SlowConns, "slow-conns", cfg.SlowConns, "slow connections get-hit-slowloris holds open to each target (idle, trickled header, trickled 1 MiB PUT body, in thirds)")
	fs.DurationVar(&cfg.SlowInterval, "slow-interval", cfg.SlowInterval, "time between two trickled writes of one slow connection")
	fs.DurationVar(&cfg.FsyncDuration, "fsync-duration", cfg.FsyncDuration, "length of each strace pass counting kvd's fsyncs; 0 skips it")
	fs.DurationVar(&cfg.DiskSyncDuration, "disk-sync-duration", cfg.DiskSyncDuration, "how long to measure the disk's rate of 1 KiB writes each followed by fdatasync (appending, then overwriting), the ceiling of durable PUTs to one client; 0 skips it")
	fs.DurationVar(&cfg.Settle, "settle", cfg.Settle, "longest wait after each fill for the server (and PostgreSQL) to go quiet, its flushes, compactions and checkpoints done; 0 does not wait")
	fs.StringVar(&cfg.ProfileDir, "profile", "", "write into this directory, for every measured phase, a CPU profile of the server and, on PostgreSQL, pg_stat_statements and wait events sampled every 10ms")
	fs.StringVar(&cfg.WorkDir, "workdir", "", "keep binaries, stores and server logs here (default: a temporary directory, removed)")
	clients := fs.String("clients", joinInts(cfg.Clients), "comma-separated numbers of concurrent keep-alive clients")
	listClients := fs.String("list-clients", joinInts(cfg.ListClients), "further client counts for list-1000")
	workloads := fs.String("workloads", "", "comma-separated workloads to run (default: all)")
	jsonPath := fs.String("json", "", "write the results as JSON to this file")
	if err := parseArgs(fs, args); err != nil {
		return cfg, "", err
	}
	var err error
	if cfg.Clients, err = parseInts(*clients); err != nil {
		return cfg, "", fmt.Errorf("--clients: %w", err)
	}
	if cfg.ListClients, err = parseInts(*listClients); err != nil {
		return cfg, "", fmt.Errorf("--list-clients: %w", err)
	}
	if *workloads != "" {
		cfg.Workloads = strings.Split(*workloads, ",")
	}
	cfg.KVDArgs = strings.Fields(*kvdArgs)
	if cfg.Log == nil {
		cfg.Log = stderr
	}
	return cfg, *jsonPath, cfg.Validate()
}

// parseArgs parses args into fs, which takes no arguments besides its
// flags.
func parseArgs(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q (see %s -h)", fs.Arg(0), fs.Name())
	}
	return nil
}

func parseInts(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil {
			return nil, fmt.Errorf("%q is not a number", f)
		}
		out = append(out, n)
	}
	return out, nil
}

func joinInts(ns []int) string {
	s := make([]string, len(ns))
	for i, n := range ns {
		s[i] = strconv.Itoa(n)
	}
	return strings.Join(s, ",")
}

// runScale runs kvbench scale.
func runScale(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cfg, jsonPath, err := parseScaleFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "kvbench scale:", err)
		return 2
	}
	rep, err := bench.RunScale(ctx, cfg)
	return report(rep, rep != nil, err, jsonPath, "kvbench scale", stdout, stderr)
}

func parseScaleFlags(args []string, stderr io.Writer) (bench.ScaleConfig, string, error) {
	cfg := bench.DefaultScaleConfig()
	fs := flag.NewFlagSet("kvbench scale", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: kvbench scale [flags]\n\n")
		fmt.Fprintf(stderr, "Loads --keys keys with --value-size values into one namespace of a new kvd store and\n")
		fmt.Fprintf(stderr, "reports the load rate, disk bytes per key, kvd's RSS, its stop time (SIGTERM) and\n")
		fmt.Fprintf(stderr, "start-up time on the loaded store, and GET of random keys at --clients clients after\n")
		fmt.Fprintf(stderr, "the load, after a restart, and on a new store of --small-keys keys. Targets: the GET p99\n")
		fmt.Fprintf(stderr, "within %.0fx of the small store's, kvd RSS at most %d MiB.\n\nFlags:\n", bench.ScaleP99Target, bench.ScaleRSSTarget>>20)
		fs.PrintDefaults()
	}
	fs.StringVar(&cfg.KVD, "kvd", "", "kvd binary to run (default: build ./cmd/kvd with the go command)")
	kvdArgs := fs.String("kvd-args", "", "further flags for kvd, separated by spaces, e.g. \"--metrics-listen 127.0.0.1:9090\" to profile it")
	fs.IntVar(&cfg.Keys, "keys", cfg.Keys, "keys loaded into the namespace")
	fs.IntVar(&cfg.SmallKeys, "small-keys", cfg.SmallKeys, "keys of the store the GET latency is compared with")
	fs.IntVar(&cfg.ValueSize, "value-size", cfg.ValueSize, "bytes of each value")
	fs.IntVar(&cfg.FillClients, "fill-clients", cfg.FillClients, "concurrent clients of the loads")
	fs.IntVar(&cfg.Clients, "clients", cfg.Clients, "concurrent keep-alive clients of the GET measurements")
	fs.DurationVar(&cfg.Duration, "duration", cfg.Duration, "measured time of each GET measurement")
	fs.DurationVar(&cfg.Warmup, "warmup", cfg.Warmup, "unmeasured time before each measurement")
	fs.DurationVar(&cfg.Settle, "settle", cfg.Settle, "longest wait after the load for kvd to go quiet (compactions) before GET; 0 does not wait")
	fs.StringVar(&cfg.WorkDir, "workdir", "", "keep the binary, stores and server logs here (default: a temporary directory, removed)")
	jsonPath := fs.String("json", "", "write the results as JSON to this file")
	if err := parseArgs(fs, args); err != nil {
		return cfg, "", err
	}
	cfg.KVDArgs = strings.Fields(*kvdArgs)
	if cfg.Log == nil {
		cfg.Log = stderr
	}
	return cfg, *jsonPath, cfg.Validate()
}

// runWatch runs kvbench watch.
func runWatch(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cfg, jsonPath, err := parseWatchFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "kvbench watch:", err)
		return 2
	}
	rep, err := bench.RunWatch(ctx, cfg)
	return report(rep, rep != nil && len(rep.Engines) > 0, err, jsonPath, "kvbench watch", stdout, stderr)
}

func parseWatchFlags(args []string, stderr io.Writer) (bench.WatchConfig, string, error) {
	cfg := bench.DefaultWatchConfig()
	fs := flag.NewFlagSet("kvbench watch", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: kvbench watch [flags]\n\n")
		fmt.Fprintf(stderr, "Starts kvd on a new store, fills --keys keys into a namespace, and measures get-hit (of them) and\n")
		fmt.Fprintf(stderr, "put-new (into another namespace) at --clients clients. Then opens --watchers watch streams of the\n")
		fmt.Fprintf(stderr, "namespace, each on its own connection, and while a writer puts --write-rate new keys a second into\n")
		fmt.Fprintf(stderr, "it, measures the delivery latency from each PUT to every watcher and get-hit and put-new again.\n")
		fmt.Fprintf(stderr, "Every watcher must receive every write once; a missed, repeated or overflowed one fails the run.\n")
		fmt.Fprintf(stderr, "With --postgres, the same on two kvd on one database: the watchers split between them, the writes\n")
		fmt.Fprintf(stderr, "through the first. Targets: delivery p99 under %s (%s across two kvd on PostgreSQL), kvd peak RSS\n",
			bench.WatchP99Target, bench.WatchP99TargetPostgres)
		fmt.Fprintf(stderr, "under %d MiB, a cost to get-hit and put-new under %.0f%%.\n\nFlags:\n", bench.WatchRSSTarget>>20, 100*bench.WatchCostTarget)
		fs.PrintDefaults()
	}
	fs.StringVar(&cfg.KVD, "kvd", "", "kvd binary to run (default: build ./cmd/kvd with the go command)")
	kvdArgs := fs.String("kvd-args", "", "further flags for every kvd, separated by spaces, e.g. \"--metrics-listen 127.0.0.1:9090\" to profile it")
	fs.StringVar(&cfg.Postgres, "postgres", cfg.Postgres, "also run two kvd on PostgreSQL: a postgres:// URL of an empty database, \"auto\" to start a throwaway server from this machine's PostgreSQL binaries when there are any, or \"off\"")
	fs.BoolVar(&cfg.NoEmbedded, "no-embedded", false, "leave out kvd on the embedded engine (with --postgres)")
	fs.IntVar(&cfg.Watchers, "watchers", cfg.Watchers, "watch streams open at once, each on its own connection")
	fs.IntVar(&cfg.Prefixes, "prefixes", cfg.Prefixes, "parts of the namespace the watchers split over: 1, every watcher watches every write; N, watcher i watches the prefix w/(i mod N)/ and each write reaches watchers/N of them")
	fs.IntVar(&cfg.WriteRate, "write-rate", cfg.WriteRate, "PUTs of new keys per second into the watched namespace")
	fs.IntVar(&cfg.Writers, "writers", cfg.Writers, "connections the writer spreads its PUTs over")
	fs.IntVar(&cfg.Keys, "keys", cfg.Keys, "keys filled into the watched namespace, which get-hit reads")
	fs.IntVar(&cfg.ValueSize, "value-size", cfg.ValueSize, "bytes of each value")
	fs.IntVar(&cfg.Clients, "clients", cfg.Clients, "concurrent keep-alive clients of get-hit and put-new")
	fs.IntVar(&cfg.FillClients, "fill-clients", cfg.FillClients, "concurrent clients of the fill")
	fs.DurationVar(&cfg.Duration, "duration", cfg.Duration, "measured time of the delivery and of each get-hit and put-new")
	fs.DurationVar(&cfg.Warmup, "warmup", cfg.Warmup, "unmeasured time before each measurement")
	fs.DurationVar(&cfg.Settle, "settle", cfg.Settle, "longest wait after the fill for kvd to go quiet; 0 does not wait")
	fs.DurationVar(&cfg.Open, "open-timeout", cfg.Open, "longest time for every watcher to open its stream and receive its ready event")
	fs.DurationVar(&cfg.Drain, "drain", cfg.Drain, "longest wait, once the writer stops, for every watcher to receive every write")
	fs.StringVar(&cfg.WorkDir, "workdir", "", "keep the binary, stores and server logs here (default: a temporary directory, removed)")
	jsonPath := fs.String("json", "", "write the results as JSON to this file")
	if err := parseArgs(fs, args); err != nil {
		return cfg, "", err
	}
	cfg.KVDArgs = strings.Fields(*kvdArgs)
	if cfg.Log == nil {
		cfg.Log = stderr
	}
	return cfg, *jsonPath, cfg.Validate()
}

// runBaseline serves the baseline until it is interrupted.
func runBaseline(ctx context.Context, args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("kvbench baseline", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:8081", "address to serve on")
	pprofAddr := fs.String("pprof", "", "serve Go's profiles (/debug/pprof/) on this address too")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "kvbench baseline: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintln(stderr, "kvbench baseline:", err)
		return 1
	}
	srv := &http.Server{Handler: bench.NewBaseline(), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 120 * time.Second}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	if *pprofAddr != "" {
		pln, err := net.Listen("tcp", *pprofAddr)
		if err != nil {
			fmt.Fprintln(stderr, "kvbench baseline:", err)
			return 1
		}
		psrv := &http.Server{Handler: pprofMux(), ReadHeaderTimeout: 10 * time.Second}
		go psrv.Serve(pln)
		defer psrv.Close()
	}
	select {
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			fmt.Fprintln(stderr, "kvbench baseline:", err)
			return 1
		}
		return 0
	case err := <-done:
		fmt.Fprintln(stderr, "kvbench baseline:", err)
		return 1
	}
}

// pprofMux serves Go's profiles under /debug/pprof/.
func pprofMux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}

// runCompare prints two reports side by side.
func runCompare(args []string, stdout, stderr io.Writer) int {
	if len(args) != 2 {
		fmt.Fprintln(stderr, "Usage: kvbench compare A.json B.json")
		return 2
	}
	a, err := bench.ReadJSON(args[0])
	if err != nil {
		fmt.Fprintln(stderr, "kvbench:", err)
		return 1
	}
	b, err := bench.ReadJSON(args[1])
	if err != nil {
		fmt.Fprintln(stderr, "kvbench:", err)
		return 1
	}
	bench.Compare(stdout, a, b, args[0], args[1])
	return 0
}
