package cli

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/pelletier/go-toml/v2"

	"github.com/edgekv/kv/client"
)

// The config file, ~/.telnyx-edge/config.toml unless TELNYX_CONFIG_PATH
// names another, holds
//
//	api_key = "KEY..."
//	api_endpoint = "http://127.0.0.1:8080"
//
// Other entries are kept when the CLI rewrites the file (comments are not).
const (
	configKeyAPIKey   = "api_key"
	configKeyEndpoint = "api_endpoint"
)

// settings are the effective connection settings and where each came from.
type settings struct {
	APIKey         string
	APIKeySource   string // "environment TELNYX_API_KEY", "config file" or ""
	Endpoint       string // API root
	EndpointSource string
	ConfigPath     string
}

// configPath returns the config file's path.
func (a *app) configPath() (string, error) {
	if p := a.env.Getenv(EnvConfigPath); p != "" {
		return p, nil
	}
	home := a.env.Getenv("HOME")
	if home == "" {
		var err error
		if home, err = os.UserHomeDir(); err != nil {
			return "", fmt.Errorf("cannot find the home directory for the config file (set %s): %v", EnvConfigPath, err)
		}
	}
	return filepath.Join(home, ".telnyx-edge", "config.toml"), nil
}

// loadConfig reads the config file; a missing file is an empty config.
func loadConfig(path string) (map[string]any, error) {
	cfg := map[string]any{}
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return cfg, nil
	}
	if err != nil {
		return nil, err
	}
	if err := toml.Unmarshal(data, &cfg); err != nil {
		return nil, fmt.Errorf("config file %s is not valid TOML: %v", path, err)
	}
	return cfg, nil
}

// saveConfig writes the config file readable by its owner only (0600), in
// a directory created 0700, replacing it atomically.
func saveConfig(path string, cfg map[string]any) error {
	data, err := toml.Marshal(cfg)
	if err != nil {
		return err
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, ".config.toml-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// settings resolves the API key and endpoint: the environment overrides the
// config file, which overrides the default endpoint.
func (a *app) settings() (settings, error) {
	var s settings
	path, err := a.configPath()
	if err != nil {
		return s, err
	}
	s.ConfigPath = path
	cfg, err := loadConfig(path)
	if err != nil {
		return s, err
	}
	fileKey, _ := cfg[configKeyAPIKey].(string)
	fileEndpoint, _ := cfg[configKeyEndpoint].(string)
	switch {
	case a.env.Getenv(client.EnvAPIKey) != "":
		s.APIKey, s.APIKeySource = a.env.Getenv(client.EnvAPIKey), "environment "+client.EnvAPIKey
	case fileKey != "":
		s.APIKey, s.APIKeySource = fileKey, "config file"
	}
	switch {
	case a.endpoint != "":
		s.Endpoint, s.EndpointSource = a.endpoint, "--endpoint"
	case a.env.Getenv(client.EnvBaseURL) != "":
		s.Endpoint, s.EndpointSource = a.env.Getenv(client.EnvBaseURL), "environment "+client.EnvBaseURL
	case fileEndpoint != "":
		s.Endpoint, s.EndpointSource = fileEndpoint, "config file "+path
	default:
		s.Endpoint, s.EndpointSource = client.DefaultBaseURL, "default"
	}
	endpoint, err := client.ParseBaseURL(s.Endpoint)
	if err != nil {
		return s, usagef("%v (from %s)", err, s.EndpointSource)
	}
	s.Endpoint = endpoint
	if strings.HasPrefix(s.EndpointSource, "config file") {
		s.EndpointSource = "config file"
	}
	return s, nil
}
