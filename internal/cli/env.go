package cli

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/edgekv/kv/client"
	"github.com/edgekv/kv/internal/functoml"
)

// envVar is one variable a function receives.
type envVar struct{ Name, Value string }

// functionEnv returns what a function receives, sorted by name: KV_<NAME>_ID
// for each binding of ./func.toml, TELNYX_API_KEY (if known) and
// TELNYX_BASE_URL (the API root with /v2, as the official SDKs take it).
func (a *app) functionEnv() ([]envVar, error) {
	bindings, err := functoml.Read(a.path(functoml.FileName))
	if errors.Is(err, fs.ErrNotExist) {
		a.hint("Note: no ./func.toml, so no KV bindings")
	} else if err != nil {
		return nil, err
	}
	s, err := a.settings()
	if err != nil {
		return nil, err
	}
	vars := make([]envVar, 0, len(bindings)+2)
	for _, b := range bindings {
		vars = append(vars, envVar{functoml.EnvName(b.Name), b.ID})
	}
	if s.APIKey != "" {
		vars = append(vars, envVar{client.EnvAPIKey, s.APIKey})
	}
	vars = append(vars, envVar{client.EnvBaseURL, s.Endpoint + "/v2"})
	slices.SortFunc(vars, func(x, y envVar) int { return strings.Compare(x.Name, y.Name) })
	return vars, nil
}

func (a *app) newEnvCommand() *cobra.Command {
	var format string
	cmd := &cobra.Command{
		Use:   "env [--format shell|dotenv|json]",
		Short: "Print the variables a function receives: KV_<NAME>_ID, TELNYX_API_KEY, TELNYX_BASE_URL",
		Long: `Print the environment a function receives: KV_<NAME>_ID for each KV
binding in ./func.toml, TELNYX_API_KEY and TELNYX_BASE_URL.

  --format shell   export NAME='value' lines, for eval "$(telnyx-edge env)"
  --format dotenv  NAME='value' lines for a .env file, read back literally
                   by sh's "." and by dotenv parsers; a value holding a
                   newline, NUL, single quote or backslash is refused
  --format json    one JSON object

Every value is single-quoted, so nothing in it is expanded or run.`,
		Example: `  eval "$(telnyx-edge env)"
  telnyx-edge env --format dotenv > .env
  telnyx-edge env --format json`,
		Args: argsRange(0, 0),
		RunE: func(cmd *cobra.Command, args []string) error {
			switch format {
			case "shell", "dotenv", "json":
			default:
				return usagef("--format must be shell, dotenv or json; got %q", format)
			}
			vars, err := a.functionEnv()
			if err != nil {
				return err
			}
			w := a.env.Stdout
			switch format {
			case "json":
				m := make(map[string]string, len(vars))
				for _, v := range vars {
					m[v.Name] = v.Value
				}
				return a.writeJSON(m)
			case "dotenv":
				// Check every value before writing any, so a refusal
				// leaves no half-written file.
				lines := make([]string, len(vars))
				for i, v := range vars {
					q, err := dotenvQuote(v.Value)
					if err != nil {
						return fmt.Errorf("cannot write %s for a .env file: %v; use --format shell or json", v.Name, err)
					}
					lines[i] = v.Name + "=" + q + "\n"
				}
				for _, l := range lines {
					io.WriteString(w, l)
				}
			default:
				for _, v := range vars {
					fmt.Fprintf(w, "export %s=%s\n", v.Name, shellQuote(v.Value))
				}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&format, "format", "shell", "shell, dotenv or json")
	return cmd
}

// shellQuote quotes s for a POSIX shell: in single quotes, inside which
// nothing is special, with each ' written as '\” (close, an escaped quote,
// reopen).
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// dotenvQuote single-quotes s for a .env file, a form that sh's "." reads
// literally and that dotenv parsers (Node's dotenv, python-dotenv,
// godotenv, Ruby's dotenv) read literally too. No quoting carries a newline,
// CR or NUL through both, nor a single quote; and python-dotenv unescapes
// backslashes inside single quotes where sh does not: those are refused.
func dotenvQuote(s string) (string, error) {
	if i := strings.IndexAny(s, "\x00\n\r'\\"); i >= 0 {
		return "", fmt.Errorf("the value holds %s, which a .env file cannot carry so that both sh and dotenv parsers read it back", describe(s[i]))
	}
	return "'" + s + "'", nil
}

func describe(c byte) string {
	switch c {
	case 0:
		return "a NUL byte"
	case '\n':
		return "a newline"
	case '\r':
		return "a carriage return"
	case '\'':
		return "a single quote"
	}
	return "a backslash"
}

func (a *app) newExecCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "exec -- COMMAND [ARGS...]",
		Short: "Run a command with the function's variables in its environment",
		Long: `Run COMMAND with KV_<NAME>_ID for each binding of ./func.toml,
TELNYX_API_KEY and TELNYX_BASE_URL added to the current environment.
Stdin, stdout and stderr are the command's; the exit code is its exit code
(127 if it cannot be started, 128+N if killed by signal N).`,
		Example: `  telnyx-edge exec -- node server.mjs
  telnyx-edge exec -- sh -c 'echo $KV_MY_CACHE_ID'`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usagef("exec needs a command; usage: %s", cmd.UseLine())
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			vars, err := a.functionEnv()
			if err != nil {
				return err
			}
			c := exec.CommandContext(cmd.Context(), args[0], args[1:]...)
			// On cancellation (Ctrl-C reaches the command too), interrupt
			// the command rather than kill it, and give it time to exit.
			c.Cancel = func() error { return c.Process.Signal(os.Interrupt) }
			c.WaitDelay = 10 * time.Second
			c.Dir = a.env.Dir
			c.Stdin, c.Stdout, c.Stderr = a.env.Stdin, a.env.Stdout, a.env.Stderr
			c.Env = a.env.Environ()
			for _, v := range vars {
				c.Env = append(c.Env, v.Name+"="+v.Value)
			}
			err = c.Run()
			var ee *exec.ExitError
			switch {
			case err == nil:
				return nil
			case errors.As(err, &ee):
				if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
					return &exitError{code: 128 + int(ws.Signal())}
				}
				return &exitError{code: ee.ExitCode()}
			default:
				return &exitError{code: 127, err: err}
			}
		},
	}
	cmd.Flags().SetInterspersed(false)
	return cmd
}
