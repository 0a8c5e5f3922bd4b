package cli

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"os"

	"github.com/edgekv/kv/client"
)

// client returns an API client configured by the flags, the environment and
// the config file.
func (a *app) client() (*client.Client, error) {
	s, err := a.settings()
	if err != nil {
		return nil, err
	}
	if s.APIKey == "" {
		return nil, errors.New("no API key: run 'telnyx-edge auth api-key set KEY' or set TELNYX_API_KEY")
	}
	return a.newClient(s)
}

// newClient returns a client of the endpoint and key in s, trusting the
// certificates --cacert names or, with --insecure, none at all.
func (a *app) newClient(s settings) (*client.Client, error) {
	opts := []client.Option{client.WithBaseURL(s.Endpoint), client.WithAPIKey(s.APIKey)}
	if a.caCert != "" || a.insecure {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
		if a.caCert != "" {
			pem, err := os.ReadFile(a.path(a.caCert))
			if err != nil {
				return nil, fmt.Errorf("--cacert: %v", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, usagef("--cacert %s holds no PEM certificate", a.caCert)
			}
			tr.TLSClientConfig.RootCAs = pool
		}
		if a.insecure {
			a.hint("Warning: --insecure: the server's certificate is not verified; anyone on the path can read the API key")
			tr.TLSClientConfig.InsecureSkipVerify = true
		}
		opts = append(opts, client.WithHTTPClient(&http.Client{Transport: tr}))
	}
	return client.New(opts...), nil
}
