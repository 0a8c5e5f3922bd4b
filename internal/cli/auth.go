package cli

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/spf13/cobra"

	"github.com/edgekv/kv/client"
)

func (a *app) newAuthCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "auth",
		Short: "API key and endpoint",
		Long: `The API key and endpoint are kept in ~/.telnyx-edge/config.toml
(TELNYX_CONFIG_PATH names another file) as api_key and api_endpoint. The
environment variables TELNYX_API_KEY and TELNYX_BASE_URL override them,
and --endpoint overrides both.`,
		Example: `  telnyx-edge auth api-key set KEY123 --endpoint http://127.0.0.1:8080
  telnyx-edge auth status
  telnyx-edge auth logout`,
		Args: groupArgs,
		RunE: groupRun,
	}
	apiKey := &cobra.Command{Use: "api-key", Short: "Manage the stored API key", Args: groupArgs, RunE: groupRun,
		Example: "  telnyx-edge auth api-key set KEY123"}
	apiKey.AddCommand(a.newAPIKeySetCommand())
	cmd.AddCommand(apiKey, a.newAuthStatusCommand(), a.newAuthLogoutCommand())
	return cmd
}

func (a *app) newAPIKeySetCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "set [KEY | -] [--endpoint URL]",
		Short: "Store the API key (and optionally the API endpoint) in the config file",
		Long: `Store the API key in the config file, readable only by you (0600). With
"-" or no KEY the key is read from stdin, which keeps it out of the shell
history. --endpoint stores the API root as well, e.g. http://127.0.0.1:8080
for a local kvd (an http or https URL; a trailing /v2 or /v2/storage/kvs is
dropped).`,
		Example: `  telnyx-edge auth api-key set KEY123 --endpoint http://127.0.0.1:8080
  printf '%s\n' "$KEY" | telnyx-edge auth api-key set -`,
		Args: argsRange(0, 1),
		RunE: func(cmd *cobra.Command, args []string) error {
			endpoint := ""
			if a.endpoint != "" {
				e, err := client.ParseBaseURL(a.endpoint)
				if err != nil {
					return &usageError{msg: "--endpoint: " + err.Error()}
				}
				endpoint = e
			}
			key := ""
			if len(args) == 1 && args[0] != "-" {
				key = args[0]
			} else {
				if a.env.IsTerminal() {
					a.hint("Reading the API key from stdin; end with Enter")
				}
				line, err := a.readLine(cmd.Context())
				if err != nil && cmd.Context().Err() != nil {
					return err
				}
				key = line
			}
			key = strings.TrimSpace(key)
			if key == "" {
				return usagef("the API key is empty")
			}
			path, err := a.configPath()
			if err != nil {
				return err
			}
			cfg, err := loadConfig(path)
			if err != nil {
				return err
			}
			cfg[configKeyAPIKey] = key
			if endpoint != "" {
				cfg[configKeyEndpoint] = endpoint
			}
			if err := saveConfig(path, cfg); err != nil {
				return err
			}
			a.note("Saved the API key to %s", path)
			if endpoint != "" {
				a.note("API endpoint: %s", endpoint)
			}
			return nil
		},
	}
}

// maskKey shows only the ends of a key.
func maskKey(k string) string {
	if len(k) <= 8 {
		return strings.Repeat("*", len(k))
	}
	return k[:4] + "…" + k[len(k)-4:]
}

func (a *app) newAuthStatusCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show the endpoint and API key in use, and check the key",
		Long: `Show the endpoint and API key in use and where each comes from, and check
the key with one request. A key the service refuses (401) is reported as
not working; a service that cannot be reached, as that (exit 1 either way).`,
		Example: `  telnyx-edge auth status
  telnyx-edge auth status -o json`,
		Args: argsRange(0, 0),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := a.settings()
			if err != nil {
				return err
			}
			if s.APIKey == "" {
				if a.json() {
					a.writeJSON(map[string]any{"endpoint": s.Endpoint, "config_path": s.ConfigPath, "logged_in": false})
				} else {
					tw := a.table()
					row(tw, "Endpoint:", s.Endpoint+" ("+s.EndpointSource+")")
					row(tw, "Config file:", s.ConfigPath)
					tw.Flush()
				}
				return errors.New("not logged in: run 'telnyx-edge auth api-key set KEY' or set TELNYX_API_KEY")
			}
			c, err := a.newClient(s)
			if err != nil {
				return err
			}
			page, checkErr := c.ListNamespaces(cmd.Context(), 1, 1)
			if cmd.Context().Err() != nil {
				return cmd.Context().Err()
			}
			// A 401 says the key is wrong; no answer says nothing about it.
			status, verdict := "valid", ""
			var apiErr *client.APIError
			switch {
			case checkErr == nil:
				status = fmt.Sprintf("valid (%s)", plural(page.TotalResults, "namespace"))
			case errors.As(checkErr, &apiErr) && apiErr.StatusCode == http.StatusUnauthorized:
				status, verdict = "invalid", "the API key does not work: "+message(checkErr)
			case errors.As(checkErr, &apiErr):
				status, verdict = "unknown", fmt.Sprintf("could not check the API key: %s answered HTTP %d: %s", s.Endpoint, apiErr.StatusCode, message(checkErr))
			default:
				status, verdict = "unknown", fmt.Sprintf("cannot reach %s: %s", s.Endpoint, transportCause(checkErr))
			}
			if a.json() {
				out := map[string]any{"endpoint": s.Endpoint, "config_path": s.ConfigPath, "logged_in": true,
					"api_key": maskKey(s.APIKey), "api_key_source": s.APIKeySource, "valid": checkErr == nil}
				if checkErr == nil {
					out["namespaces"] = page.TotalResults
				} else if status == "unknown" {
					out["valid"] = nil
				}
				if err := a.writeJSON(out); err != nil {
					return err
				}
			} else {
				tw := a.table()
				row(tw, "Endpoint:", s.Endpoint+" ("+s.EndpointSource+")")
				row(tw, "Config file:", s.ConfigPath)
				row(tw, "API key:", maskKey(s.APIKey)+" ("+s.APIKeySource+")")
				row(tw, "Status:", status)
				tw.Flush()
			}
			if verdict != "" {
				return errors.New(verdict)
			}
			return nil
		},
	}
}

// transportCause is the reason a request got no answer, without the
// method and URL that net/http puts first.
func transportCause(err error) string {
	var urlErr *url.Error
	if errors.As(err, &urlErr) {
		return message(urlErr.Err)
	}
	return message(err)
}

func (a *app) newAuthLogoutCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "logout",
		Short:   "Remove the API key from the config file",
		Example: "  telnyx-edge auth logout",
		Args:    argsRange(0, 0),
		RunE: func(cmd *cobra.Command, args []string) error {
			path, err := a.configPath()
			if err != nil {
				return err
			}
			cfg, err := loadConfig(path)
			if err != nil {
				return err
			}
			if _, ok := cfg[configKeyAPIKey]; !ok {
				a.note("No API key stored in %s", path)
			} else {
				delete(cfg, configKeyAPIKey)
				if err := saveConfig(path, cfg); err != nil {
					return err
				}
				a.note("Removed the API key from %s", path)
			}
			if a.env.Getenv(client.EnvAPIKey) != "" {
				a.hint("Note: TELNYX_API_KEY is set in the environment and still applies")
			}
			return nil
		},
	}
}
