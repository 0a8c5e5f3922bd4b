// Package cli is the telnyx-edge command line: KV namespaces and keys,
// func.toml bindings, authentication, and running a function's command with
// its bindings in the environment. Commands are built with cobra by small
// newXCommand functions; Run executes one command line in-process, which is
// how both cmd/telnyx-edge and the tests run it.
//
// Exit codes: 0 success, 1 any other failure, 2 usage error (bad flags or
// arguments, a refused confirmation without a terminal), 3 not found
// (namespace, key or binding), 4 a condition (--if-match, --if-absent)
// failed and nothing was written, 130 interrupted (Ctrl-C). exec passes on
// its command's exit code.
package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/edgekv/kv"
	"github.com/edgekv/kv/client"
	"github.com/edgekv/kv/internal/version"
)

// Exit codes.
const (
	ExitOK       = 0
	ExitError    = 1
	ExitUsage    = 2
	ExitNotFound = 3
	// ExitPrecondition is the exit code of a conditional write or delete
	// whose condition failed: nothing was written.
	ExitPrecondition = 4
	// ExitInterrupted is the exit code of a command interrupted by Ctrl-C
	// (128 + SIGINT).
	ExitInterrupted = 130
)

// Environment variables read by the CLI, besides client.EnvAPIKey and
// client.EnvBaseURL.
const (
	EnvConfigPath        = "TELNYX_CONFIG_PATH"
	EnvSkipConfirmations = "TELNYX_EDGE_SKIP_CONFIRMATIONS"
)

// Env is the outside world of one run: streams, environment, working
// directory and whether stdin is a terminal.
type Env struct {
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
	// Getenv reads an environment variable; nil means os.Getenv.
	Getenv func(string) string
	// Environ is the environment exec passes on; nil means os.Environ.
	Environ func() []string
	// Dir is the working directory, where func.toml is; "" means ".".
	Dir string
	// IsTerminal reports whether stdin is an interactive terminal; nil
	// means a check of Stdin's file descriptor (false when it is not a
	// file).
	IsTerminal func() bool
	// StderrIsTerminal reports whether stderr is a terminal, where
	// progress may be shown on one rewritten line; nil means a check of
	// Stderr's file descriptor.
	StderrIsTerminal func() bool
	// Now is the clock of export and import (their timestamps, the
	// remaining TTLs, the elapsed time of summaries); nil means time.Now.
	Now func() time.Time
}

// Main runs the command line args (without the program name) in the
// process's own environment and returns the exit code. The first SIGINT or
// SIGTERM cancels the command, which then exits 128+N (130 for Ctrl-C)
// saying "interrupted"; a second one ends the process at once.
func Main(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	go func() {
		select {
		case s := <-sigs:
			signal.Stop(sigs) // a second signal has its default effect
			cancel(&Interrupted{Signal: s})
		case <-ctx.Done():
		}
	}()
	return Run(ctx, Env{Stdin: stdin, Stdout: stdout, Stderr: stderr}, args)
}

// Interrupted is the cause of a context canceled by a signal.
type Interrupted struct{ Signal os.Signal }

func (e *Interrupted) Error() string { return e.Signal.String() + " received" }

// Run runs the command line args in env and returns the exit code. Errors
// are reported as one line on env.Stderr: "Error: <what went wrong>".
func Run(ctx context.Context, env Env, args []string) int {
	if env.Getenv == nil {
		env.Getenv = os.Getenv
	}
	if env.Environ == nil {
		env.Environ = os.Environ
	}
	if env.Dir == "" {
		env.Dir = "."
	}
	if env.IsTerminal == nil {
		env.IsTerminal = func() bool { return isTerminal(env.Stdin) }
	}
	if env.StderrIsTerminal == nil {
		env.StderrIsTerminal = func() bool { return isTerminal(env.Stderr) }
	}
	if env.Now == nil {
		env.Now = time.Now
	}
	if env.Stdin == nil {
		env.Stdin = strings.NewReader("")
	}
	a := &app{env: env}
	root := a.newRootCommand()
	root.SetArgs(args)
	root.SetIn(env.Stdin)
	root.SetOut(env.Stdout)
	root.SetErr(env.Stderr)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return ExitOK
	}
	var ee *exitError
	if ctx.Err() != nil && !errors.As(err, &ee) {
		// Canceled, by Ctrl-C most likely: whatever failed after that is
		// its consequence, not news.
		fmt.Fprintln(env.Stderr, "interrupted")
		var in *Interrupted
		if errors.As(context.Cause(ctx), &in) {
			if s, ok := in.Signal.(syscall.Signal); ok {
				return 128 + int(s)
			}
		}
		return ExitInterrupted
	}
	code, msg := a.classify(err)
	if msg != "" {
		fmt.Fprintf(env.Stderr, "Error: %s\n", esc(oneLine(msg)))
	}
	return code
}

// isTerminal reports whether f is a file on a terminal. /dev/null and
// pipes are not terminals.
func isTerminal(f any) bool {
	fd, ok := f.(interface{ Fd() uintptr })
	return ok && term.IsTerminal(int(fd.Fd()))
}

// app is the state of one run.
type app struct {
	env    Env
	output string // "text", "wide" or "json"
	// endpoint, caCert and insecure are the connection flags.
	endpoint string
	caCert   string
	insecure bool
	// names maps namespace ids to the name or binding they were given by.
	names map[string]string
	// started is set once cobra has parsed flags and arguments and a
	// command begins; an error before that is a usage error.
	started bool
}

// usageError is a mistake in the command line.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// exitError ends the run with a given code; err, if any, is reported.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit status %d", e.code)
	}
	return e.err.Error()
}

// classify maps an error to its exit code and message.
func (a *app) classify(err error) (int, string) {
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.err == nil {
			return ee.code, ""
		}
		return ee.code, message(ee.err)
	}
	var ue *usageError
	if errors.As(err, &ue) || !a.started {
		return ExitUsage, message(err)
	}
	if errors.Is(err, kv.ErrNotFound) {
		return ExitNotFound, message(err)
	}
	if errors.Is(err, client.ErrPreconditionFailed) {
		return ExitPrecondition, message(err)
	}
	return ExitError, message(err)
}

// message is the text of err for a person: the service's detail for an API
// error.
func message(err error) string {
	var nf *explained
	if errors.As(err, &nf) {
		return nf.msg
	}
	var apiErr *client.APIError
	if errors.As(err, &apiErr) {
		switch {
		case apiErr.Detail != "":
			return apiErr.Detail
		case apiErr.Title != "":
			return apiErr.Title
		}
		return fmt.Sprintf("the service answered HTTP %d", apiErr.StatusCode)
	}
	var kvErr *kv.Error
	if errors.As(err, &kvErr) && kvErr.Detail != "" {
		return kvErr.Detail
	}
	var re *client.RedirectError
	if errors.As(err, &re) {
		return strings.TrimPrefix(re.Error(), "client: ")
	}
	var urlErr *url.Error
	if errors.As(err, &urlErr) {
		return fmt.Sprintf("cannot reach %s: %v", hostOf(urlErr.URL), urlErr.Err)
	}
	return strings.TrimPrefix(err.Error(), "client: ")
}

func hostOf(u string) string {
	p, err := url.Parse(u)
	if err != nil {
		return u
	}
	return p.Scheme + "://" + p.Host
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(s, "\n", " ")), " ")
}

func (a *app) newRootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "telnyx-edge",
		Short: "Manage Telnyx Edge Compute KV namespaces, keys and func.toml bindings",
		Example: `  telnyx-edge auth api-key set KEY123 --endpoint http://127.0.0.1:8080
  telnyx-edge storage kv create --name my-cache --wait --bind MY_CACHE
  telnyx-edge storage kv key put user/123 '{"name":"Alice"}'
  telnyx-edge exec -- node server.mjs`,
		SilenceErrors: true,
		SilenceUsage:  true,
		Args:          groupArgs,
		RunE:          groupRun,
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			if a.output != "text" && a.output != "wide" && a.output != "json" {
				return usagef("--output must be text, wide or json; got %q", a.output)
			}
			a.started = true
			return nil
		},
	}
	root.Version = version.String("telnyx-edge")
	root.SetVersionTemplate("{{.Version}}\n")
	root.PersistentFlags().StringVarP(&a.output, "output", "o", "text", "output format: text (aligned tables), wide (more columns) or json")
	root.PersistentFlags().StringVar(&a.endpoint, "endpoint", "", "API root, e.g. http://127.0.0.1:8080 (overrides TELNYX_BASE_URL and the config file)")
	root.PersistentFlags().StringVar(&a.caCert, "cacert", "", "trust the CA certificates in this PEM file (instead of the system's) for HTTPS")
	root.PersistentFlags().BoolVar(&a.insecure, "insecure", false, "do not verify the server's TLS certificate (testing only)")
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error {
		return &usageError{msg: err.Error()}
	})
	root.AddCommand(a.newStorageCommand(), a.newAuthCommand(), a.newEnvCommand(), a.newExecCommand(), &cobra.Command{
		Use:     "version",
		Short:   "Print the version, the revision it was built from and the Go version",
		Example: "  telnyx-edge version\n  telnyx-edge --version",
		Args:    argsRange(0, 0),
		RunE: func(cmd *cobra.Command, args []string) error {
			_, err := fmt.Fprintln(a.env.Stdout, root.Version)
			return err
		},
	})
	return root
}

// groupArgs and groupRun make a command that only groups subcommands show
// its help when run alone and refuse an unknown subcommand.
func groupArgs(cmd *cobra.Command, args []string) error { return nil }

func groupRun(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		if cmd.SuggestionsMinimumDistance <= 0 {
			cmd.SuggestionsMinimumDistance = 2
		}
		if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
			return usagef("unknown command %q for %q; did you mean %q? Run '%s --help'", args[0], cmd.CommandPath(), s[0], cmd.CommandPath())
		}
		return usagef("unknown command %q for %q; run '%s --help'", args[0], cmd.CommandPath(), cmd.CommandPath())
	}
	return cmd.Help()
}

// argsRange validates the number of positional arguments.
func argsRange(min, max int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) < min || len(args) > max {
			return usagef("%s takes %s; usage: %s", cmd.CommandPath(), countArgs(min, max), cmd.UseLine())
		}
		return nil
	}
}

func countArgs(min, max int) string {
	plural := func(n int) string {
		if n == 1 {
			return "1 argument"
		}
		return fmt.Sprintf("%d arguments", n)
	}
	if min == max {
		return plural(min)
	}
	return fmt.Sprintf("%d to %s", min, plural(max))
}

// json reports whether output is JSON.
func (a *app) json() bool { return a.output == "json" }

// writeJSON prints v as indented JSON on stdout.
func (a *app) writeJSON(v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(a.env.Stdout, "%s\n", escJSON(b))
	return err
}

// note prints a confirmation for a person: on stdout in text mode, on
// stderr in JSON mode (where stdout holds only JSON).
func (a *app) note(format string, args ...any) {
	w := a.env.Stdout
	if a.json() {
		w = a.env.Stderr
	}
	fmt.Fprintf(w, format+"\n", escArgs(args)...)
}

// hint prints advice on stderr, so it never mixes with data on stdout.
func (a *app) hint(format string, args ...any) {
	fmt.Fprintf(a.env.Stderr, format+"\n", escArgs(args)...)
}

// table returns a writer that aligns tab-separated columns on stdout; the
// caller writes rows with row and flushes it.
func (a *app) table() *tabwriter.Writer {
	return tabwriter.NewWriter(a.env.Stdout, 0, 4, 2, ' ', 0)
}

// row writes one table row, every cell escaped for the terminal.
func row(tw io.Writer, cells ...string) {
	for i, c := range cells {
		if i > 0 {
			io.WriteString(tw, "\t")
		}
		io.WriteString(tw, esc(c))
	}
	io.WriteString(tw, "\n")
}

// path resolves name against the working directory.
func (a *app) path(name string) string {
	if filepath.IsAbs(name) {
		return name
	}
	return filepath.Join(a.env.Dir, name)
}
