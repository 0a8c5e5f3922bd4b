package cli

import (
	"bufio"
	"errors"
	"fmt"
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
environment variables TELNYX_API_KEY and TELNYX_BASE_URL override them.`,
		Args: groupArgs,
		RunE: groupRun,
	}
	apiKey := &cobra.Command{Use: "api-key", Short: "Manage the stored API key", Args: groupArgs, RunE: groupRun}
	apiKey.AddCommand(a.newAPIKeySetCommand())
	cmd.AddCommand(apiKey, a.newAuthStatusCommand(), a.newAuthLogoutCommand())
	return cmd
}

func (a *app) newAPIKeySetCommand() *cobra.Command {
	var endpoint string
	cmd := &cobra.Command{
		Use:   "set [KEY | -] [--endpoint URL]",
		Short: "Store the API key (and optionally the API endpoint) in the config file",
		Long: `Store the API key in the config file, readable only by you (0600). With
"-" or no KEY the key is read from stdin, which keeps it out of the shell
history. --endpoint stores the API root as well, e.g. http://127.0.0.1:8080
for a local kvd.`,
		Args: argsRange(0, 1),
		RunE: func(cmd *cobra.Command, args []string) error {
			key := ""
			if len(args) == 1 && args[0] != "-" {
				key = args[0]
			} else {
				line, _ := bufio.NewReader(a.env.Stdin).ReadString('\n')
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
				cfg[configKeyEndpoint] = client.NormalizeBaseURL(endpoint)
			}
			if err := saveConfig(path, cfg); err != nil {
				return err
			}
			a.note("Saved the API key to %s", path)
			if endpoint != "" {
				a.note("API endpoint: %s", client.NormalizeBaseURL(endpoint))
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&endpoint, "endpoint", "", "API root to store as api_endpoint, e.g. http://127.0.0.1:8080")
	return cmd
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
		Args:  argsRange(0, 0),
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
			c := client.New(client.WithBaseURL(s.Endpoint), client.WithAPIKey(s.APIKey))
			page, checkErr := c.ListNamespaces(cmd.Context(), 1, 1)
			if a.json() {
				out := map[string]any{"endpoint": s.Endpoint, "config_path": s.ConfigPath, "logged_in": true,
					"api_key": maskKey(s.APIKey), "api_key_source": s.APIKeySource, "valid": checkErr == nil}
				if checkErr == nil {
					out["namespaces"] = page.TotalResults
				}
				if err := a.writeJSON(out); err != nil {
					return err
				}
			} else {
				tw := a.table()
				row(tw, "Endpoint:", s.Endpoint+" ("+s.EndpointSource+")")
				row(tw, "Config file:", s.ConfigPath)
				row(tw, "API key:", maskKey(s.APIKey)+" ("+s.APIKeySource+")")
				if checkErr == nil {
					row(tw, "Status:", fmt.Sprintf("valid (%d namespaces)", page.TotalResults))
				}
				tw.Flush()
			}
			if checkErr != nil {
				return fmt.Errorf("the API key does not work: %s", message(checkErr))
			}
			return nil
		},
	}
}

func (a *app) newAuthLogoutCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "logout",
		Short: "Remove the API key from the config file",
		Args:  argsRange(0, 0),
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
